"""How a pool ends: ``shutdown()``, a dropped pool, and the interpreter's exit.

Each way ends alike, as for ``ProcessPoolExecutor``: no new tasks are
accepted, the submitted ones run to completion, then the engines stop and the
pool's files are removed (:func:`wind_down`).  At the interpreter's exit every
pool still running winds down before the ``atexit`` handlers run (through
:func:`threading._register_atexit`, as ``concurrent.futures`` does), so a
script that submits work and ends runs that work, and a submit from an
``atexit`` handler is refused.  A Ctrl-C while the exit waits stops the
remaining engines at once (:func:`kill_all`), and so does a last ``atexit``
handler for whatever an interrupted exit left running.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import os
import threading
from typing import TYPE_CHECKING

from .. import shared_memory

if TYPE_CHECKING:
    from .core import PoolCore

#: Seconds between checks, while waiting for a pool to wind down, that its loop thread lives.
WAIT_STEP = 1.0
#: Seconds the last-resort stop at exit waits for one pool's engines to be killed.
KILL_TIMEOUT = 30.0

#: Pools whose engines are not stopped yet (a dropped pool stays here while it winds down).
_live: set[PoolCore] = set()
_lock = threading.Lock()
_exiting = False


def exiting() -> bool:
    """Whether the interpreter is shutting down (no pool takes new tasks then)."""
    return _exiting


def register(core: PoolCore) -> None:
    """A pool started: it winds down at the interpreter's exit unless it ends before."""
    with _lock:
        _live.add(core)


def forget(core: PoolCore) -> None:
    """A pool ended (its engines are stopped)."""
    with _lock:
        _live.discard(core)


def wind_down(core: PoolCore) -> concurrent.futures.Future[None]:
    """Close the pool, let its submitted tasks finish, then stop its engines; from any
    thread, once (later calls return the same future), without blocking.

    The returned future is done when the engines are stopped.
    """
    with _lock:
        core.closed = True
        if core.winding is None:
            if core.bridge.thread.is_alive():
                core.winding = asyncio.run_coroutine_threadsafe(_wind_down(core), core.bridge.loop)
            else:  # a forked child: the loop and the engines are its parent's
                core.winding = concurrent.futures.Future()
                core.winding.set_result(None)
                _live.discard(core)
        return core.winding


def wait(core: PoolCore, future: concurrent.futures.Future[None]) -> None:
    """Wait until the pool has wound down (or its loop thread is gone, which then never will)."""
    while core.bridge.thread.is_alive():
        try:
            future.result(timeout=WAIT_STEP)
        except concurrent.futures.TimeoutError:
            continue
        return


async def _wind_down(core: PoolCore) -> None:
    """Let the submitted work finish, stop the engines, then remove the pool's files."""
    try:
        await core.work_done()
        if not core.stopped:
            core.stopped = True
            await core.stop()
    finally:
        core.cleanup()
        forget(core)


def dropped(core: PoolCore) -> None:
    """The finalizer of a pool the user dropped without ``shutdown()``: it winds down.

    The garbage collector may run this on the loop thread, which it must not
    block; it blocks no thread.
    """
    if core.bridge.thread.is_alive():
        wind_down(core)


def kill_all() -> None:
    """Stop every pool still running at once: kill its engines, remove its files."""
    with _lock:
        cores = list(_live)
        _live.clear()
    for core in cores:
        if not core.bridge.thread.is_alive() or (core.stopped and core.winding is None):
            continue
        with contextlib.suppress(Exception):
            core.bridge.run(core.kill(), timeout=KILL_TIMEOUT)
        core.cleanup()


def _at_exit() -> None:
    """The interpreter is exiting: refuse new tasks, let every pool finish its work, stop it."""
    global _exiting
    _exiting = True
    with _lock:
        cores = list(_live)
    try:
        for core, future in [(core, wind_down(core)) for core in cores]:
            with contextlib.suppress(Exception):
                wait(core, future)
    except KeyboardInterrupt:
        kill_all()


def _forget_all() -> None:
    """A forked child: its parent's pools are not its own to wind down."""
    _live.clear()


os.register_at_fork(after_in_child=_forget_all)
threading._register_atexit(_at_exit)  # type: ignore[attr-defined]  # runs before atexit's
atexit.register(shared_memory.sweep, True)  # last: after the engines are gone
atexit.register(kill_all)
