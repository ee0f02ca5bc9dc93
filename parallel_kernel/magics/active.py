"""The pool the parallel magics run on: one per process, set by ``Pool.activate()``."""

from __future__ import annotations

import sys
import threading
from typing import Any


class NoActivePool(RuntimeError):
    """A parallel magic ran before any pool was made its target."""


_lock = threading.Lock()
_pool: Any = None


def activate(pool: Any) -> None:
    """Make ``pool`` the magics' target; say so when it replaces another one."""
    global _pool
    with _lock:
        previous, _pool = _pool, pool
    if previous is not None and previous is not pool and not _closed(previous):
        print(
            f"parallel_kernel: the parallel magics now run on {pool!r} (instead of {previous!r})",
            file=sys.stderr,
        )


def deactivate(pool: Any) -> None:
    """Forget ``pool`` if it is the target (it shut down)."""
    global _pool
    with _lock:
        if _pool is pool:
            _pool = None


def current() -> Any:
    """The active pool; :class:`NoActivePool` says how to get one when there is none."""
    with _lock:
        pool = _pool
    if pool is None or _closed(pool):
        raise NoActivePool(
            "no pool is active for the parallel magics: run pool.activate() on a Pool, "
            "or %pool start N to start one (%pool connect FILE... to attach to engines)"
        )
    return pool


def _closed(pool: Any) -> bool:
    return bool(pool._core.closed)
