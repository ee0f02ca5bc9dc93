"""The functions every system runs: the same code, shipped the same way.

This module is registered with cloudpickle "by value", so engines that do not
have the ``benchmarks`` package on their path (kernels, ipyparallel engines,
dask workers) receive the functions themselves.
"""

from __future__ import annotations

import os


def noop(*_: object) -> int:
    """The empty task (ignoring any argument): measures the system, not the work."""
    return 0


def echo(x: object) -> object:
    """Return the argument: a round trip of its bytes, in both directions."""
    return x


def worker_pid() -> int:
    """The process id of the worker that runs this task."""
    return os.getpid()
