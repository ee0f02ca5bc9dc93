"""CPython's concurrent.futures process-pool tests, with ``Pool`` as the executor.

``tests/test_cpython_futures.py`` runs this module in a child pytest, where
``test.test_concurrent_futures`` (CPython's own test module, found at test time)
is importable by the child and by the engines it starts.  Nothing of that
module is copied: its test mixins are combined with :class:`PoolMixin` here
exactly as the suite's ``create_executor_tests`` combines them with its
``ProcessPool*Mixin`` classes, so every test calls ``Pool`` where it would call
``ProcessPoolExecutor``.

Two things stand in for what the suite's process-pool mixins provide:

* ``get_context()`` returns ``None``: engines are kernels, not
  ``multiprocessing`` processes, so ``mp_context=self.get_context()`` passes
  ``mp_context=None``, which ``Pool`` accepts as ProcessPoolExecutor does.
* The tests that run a script in a fresh interpreter write ``from
  concurrent.futures import {executor_type}``; for ``Pool`` that name is made
  importable there (``concurrent.futures.Pool``) before the script runs, and
  the script runs with this environment's ``PYTHONPATH`` (not isolated) so that
  it can import ``test.test_concurrent_futures`` as the suite's own scripts do.

The module is named so that the project's own test run does not collect it.
"""

from __future__ import annotations

import os
from typing import Any

import test.test_concurrent_futures as suite

from parallel_kernel import Pool

#: The suite's tests of process pools: each is combined with PoolMixin.
SUITE_MIXINS = (
    suite.InitializerMixin,
    suite.FailingInitializerMixin,
    suite.ProcessPoolShutdownTest,
    suite.WaitTests,
    suite.AsCompletedTests,
    suite.ProcessPoolExecutorTest,
    suite.ExecutorDeadlockTest,
)

#: Makes ``from concurrent.futures import Pool`` work in the suite's scripts.
POOL_IMPORT = (
    "import concurrent.futures, parallel_kernel; concurrent.futures.Pool = parallel_kernel.Pool\n"
)


class PoolMixin(suite.ExecutorMixin):
    """The suite's executor set-up, with ``Pool`` as the executor type."""

    executor_type = Pool

    def get_context(self) -> None:
        """Engines are kernels: there is no multiprocessing context to pass."""
        return None


def _assert_python_ok_with_pool(*args: str, **env_vars: Any) -> Any:
    """The suite's ``assert_python_ok``, for scripts that import ``Pool`` by name."""
    if args[:1] == ("-c",):
        args = ("-c", POOL_IMPORT + args[1], *args[2:])
    # an environment variable given makes the script run neither isolated nor with -E
    env_vars.setdefault("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    return _assert_python_ok(*args, **env_vars)


_assert_python_ok = suite.assert_python_ok
suite.assert_python_ok = _assert_python_ok_with_pool

#: The suite's module set-up (multiprocessing and thread clean-up checks) runs here too.
setUpModule = suite.setUpModule


def _test_class_name(mixin: type) -> str:
    """``Pool<Name>Test`` for the suite's ``<Name>Mixin``/``<Name>Tests``/``<Name>Test``."""
    name = mixin.__name__
    for suffix in ("Mixin", "Tests", "Test"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return f"Pool{name}Test"


for _mixin in SUITE_MIXINS:
    _name = _test_class_name(_mixin)
    globals()[_name] = type(_name, (_mixin, PoolMixin, suite.BaseTestCase), {})
