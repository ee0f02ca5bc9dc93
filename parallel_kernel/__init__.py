"""parallel_kernel: a Jupyter kernel that is also an engine of a parallel task queue.

The client side (``Pool`` and friends) is imported on first use, so the kernel,
which imports ``parallel_kernel.errors``, does not load it.
"""

from typing import Any

from ._version import __version__
from .errors import (
    DependencyError,
    EngineDied,
    EngineStartError,
    EngineTimeout,
    ParallelCellError,
    ParallelError,
    PoolBroken,
    RemoteError,
    RemoteTraceback,
    TaskAborted,
    TaskInterrupted,
    TaskTimeout,
    UnmetDependency,
)

_LAZY = {
    "Pool": "pool",
    "Engine": "pool",
    "TaskFuture": "pool.futures",
    "as_completed": "pool.futures",
    "wait": "pool.futures",
    "Dependency": "pool.scheduler",
    "require": "remote",
}

__all__ = [
    "Dependency",
    "DependencyError",
    "Engine",
    "EngineDied",
    "EngineStartError",
    "EngineTimeout",
    "ParallelCellError",
    "ParallelError",
    "Pool",
    "PoolBroken",
    "RemoteError",
    "RemoteTraceback",
    "TaskAborted",
    "TaskFuture",
    "TaskInterrupted",
    "TaskTimeout",
    "UnmetDependency",
    "__version__",
    "as_completed",
    "require",
    "wait",
]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext parallel_kernel``: the parallel magics (``%px``, ``%%px``, ``%autopx``,
    ``%pxresult``, ``%pxconfig``, ``%pool``); see ``docs/notebooks.md``."""
    from .magics import register

    register(ipython)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
