"""CPython's own concurrent.futures tests pass on Pool, as on ProcessPoolExecutor.

The suite is ``Lib/test/test_concurrent_futures.py`` of the running
interpreter's version, taken at test time from where the interpreter or the
system provides it: the interpreter's ``test`` package when it has the module,
otherwise Debian's ``libpython3.X-testsuite`` (``/usr/lib/python3.X/test``),
which ``.ci/run`` installs with apt-get.  Nothing of it is copied into this
repository.  Without it the test fails in CI and skips elsewhere.

``tests/cpython_futures_adapter.py`` combines the suite's process-pool test
classes (initializer, shutdown, wait, as_completed, executor and deadlock
tests) with ``Pool`` as the executor, and a child pytest runs them.  The
engines import ``test.test_concurrent_futures`` for the suite's functions: a
``test`` package written at test time into a temporary directory on
``PYTHONPATH`` spans the interpreter's own ``test`` directory (for
``test.support``) and the one holding the suite.

Every test runs and passes, except the ones named below: :data:`INTERNALS`
only inspect ProcessPoolExecutor's machinery (they are deselected, with the
reason), and :data:`DIFFERENCES` check a behaviour in which ``Pool``
deliberately differs, each listed by name with its reason in the
"Differences from ProcessPoolExecutor" section of ``docs/pool.md``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from collections import Counter
from pathlib import Path

import pytest
from conftest import junit_outcomes

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
ADAPTER = TESTS / "cpython_futures_adapter.py"
DOCS = ROOT / "docs" / "pool.md"
SUITE = "test_concurrent_futures.py"
VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"

#: Tests that only inspect ProcessPoolExecutor's machinery, not deselected by accident.
INTERNALS = {
    "PoolProcessPoolShutdownTest::test_processes_terminate": (
        "counts executor._processes and blocks them on a multiprocessing Semaphore"
    ),
    "PoolProcessPoolShutdownTest::test_context_manager_shutdown": (
        "builds a ProcessPoolExecutor itself and joins its _processes"
    ),
    "PoolProcessPoolShutdownTest::test_del_shutdown": (
        "builds a ProcessPoolExecutor itself and joins its _executor_manager_thread, "
        "_processes and _call_queue"
    ),
    "PoolProcessPoolShutdownTest::test_shutdown_no_wait": (
        "builds a ProcessPoolExecutor itself and joins its _executor_manager_thread, "
        "_processes and _call_queue"
    ),
    "PoolProcessPoolExecutorTest::test_killed_child": (
        "terminates a process taken from executor._processes"
    ),
    "PoolProcessPoolExecutorTest::test_ressources_gced_in_workers": (
        "needs a multiprocessing context's Manager (mp_context)"
    ),
    "PoolProcessPoolExecutorTest::test_saturation": (
        "counts executor._processes, blocked on an mp_context Semaphore"
    ),
    "PoolProcessPoolExecutorTest::test_idle_process_reuse_one": "counts executor._processes",
    "PoolProcessPoolExecutorTest::test_idle_process_reuse_multiple": "counts executor._processes",
    "PoolProcessPoolExecutorTest::test_max_tasks_per_child": (
        "max_tasks_per_child and executor._processes"
    ),
    "PoolProcessPoolExecutorTest::test_max_tasks_per_child_defaults_to_spawn_context": (
        "max_tasks_per_child and executor._mp_context"
    ),
    "PoolProcessPoolExecutorTest::test_max_tasks_early_shutdown": "max_tasks_per_child",
}

#: The suite skips it off Windows.
SKIPPED_BY_SUITE = "PoolProcessPoolExecutorTest::test_max_workers_too_large"

#: Tests of behaviours in which Pool deliberately differs (docs/pool.md gives the reasons).
DIFFERENCES = {
    "PoolFailingInitializerTest::test_initializer": (
        "polls the private executor._broken and expects the log on logger concurrent.futures; "
        "a failing initializer leaves out its engine, Pool.broken and logger parallel_kernel"
    ),
    "PoolProcessPoolShutdownTest::test_interpreter_shutdown": (
        "expects the task's print on the script's stdout; a kernel captures task output"
    ),
    "PoolProcessPoolShutdownTest::test_hang_gh83386": (
        "expects the task's print on the script's stdout; a kernel captures task output"
    ),
    "PoolProcessPoolExecutorTest::test_traceback": (
        "requires the private concurrent.futures.process._RemoteTraceback as the cause"
    ),
    "PoolExecutorDeadlockTest::test_error_at_task_pickle": (
        "an unpicklable argument raises at submit(), not from result()"
    ),
    "PoolExecutorDeadlockTest::test_shutdown_deadlock_pickle": (
        "an unpicklable argument raises at submit(), not from result()"
    ),
    "PoolExecutorDeadlockTest::test_error_at_task_unpickle": (
        "arguments that fail to unpickle on an engine raise DeserializationError; "
        "the engine keeps serving"
    ),
    "PoolExecutorDeadlockTest::test_exit_at_task_unpickle": (
        "arguments that fail to unpickle on an engine raise DeserializationError; "
        "the engine keeps serving"
    ),
    "PoolExecutorDeadlockTest::test_error_during_result_unpickle_in_result_handler": (
        "a result that fails to unpickle here raises DeserializationError; the pool keeps serving"
    ),
    "PoolExecutorDeadlockTest::test_exit_during_result_unpickle_in_result_handler": (
        "a result that fails to unpickle here raises DeserializationError; the pool keeps serving"
    ),
}


def unavailable(message: str) -> None:
    """Fail in CI, skip elsewhere: the suite cannot be had."""
    if "CI" in os.environ:
        pytest.fail(message)
    pytest.skip(message)


def find_suite() -> Path | None:
    """The directory holding this interpreter version's ``test_concurrent_futures.py``."""
    candidates = [
        Path(sysconfig.get_paths()["stdlib"]) / "test",
        Path(f"/usr/lib/python{VERSION}/test"),
    ]
    return next((where for where in candidates if (where / SUITE).is_file()), None)


def write_test_package(root: Path, suite: Path) -> Path:
    """Write a ``test`` package under ``root`` that spans the interpreter's and the suite's."""
    own = Path(sysconfig.get_paths()["stdlib"]) / "test"
    package = root / "test"
    package.mkdir(parents=True)
    directories = list(dict.fromkeys([str(own), str(suite)]))
    (package / "__init__.py").write_text(f"__path__ = {directories!r}\n")
    return root


def child_pytest(python_path: Path, *options: str) -> subprocess.CompletedProcess:
    path = [str(python_path), str(TESTS)]
    if os.environ.get("PYTHONPATH"):
        path.append(os.environ["PYTHONPATH"])
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(ADAPTER),
            "-p",
            "no:cacheprovider",
            "--color=no",
            *options,
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(path)},
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )


def node(name: str) -> str:
    """A test's pytest node id in the child run."""
    return f"{ADAPTER.relative_to(ROOT)}::{name}"


def test_every_difference_is_documented() -> None:
    section = DOCS.read_text().split("## Differences from ProcessPoolExecutor", 1)
    assert len(section) == 2, "docs/pool.md has no 'Differences from ProcessPoolExecutor' section"
    text = section[1].split("\n## ", 1)[0]
    assert [name for name in DIFFERENCES if name.split("::")[1] not in text] == []


@pytest.mark.timeout(1600)
def test_cpython_concurrent_futures_suite_passes_on_pool(tmp_path: Path) -> None:
    suite = find_suite()
    if suite is None:
        unavailable(
            f"CPython {VERSION}'s {SUITE} is neither in this interpreter's test package nor in "
            f"/usr/lib/python{VERSION}/test (Debian: apt-get install libpython{VERSION}-testsuite)"
        )
    python_path = write_test_package(tmp_path / "path", suite)

    collected = child_pytest(python_path, "--collect-only", "-q")
    names = {line.split("::", 1)[1] for line in collected.stdout.splitlines() if "::" in line}
    assert len(names) >= 50, collected.stdout + collected.stderr
    assert sorted((set(INTERNALS) | set(DIFFERENCES)) - names) == []

    report = tmp_path / "suite.xml"
    deselected = [
        option for name in {**INTERNALS, **DIFFERENCES} for option in ("--deselect", node(name))
    ]
    result = child_pytest(python_path, "-q", f"--junitxml={report}", *deselected)
    (tmp_path / "suite.log").write_text(result.stdout + result.stderr)
    outcomes = junit_outcomes(report)
    counts = Counter(outcomes.values())
    print(f"CPython {VERSION}'s concurrent.futures tests on Pool: {dict(counts)}")
    failed = sorted(name for name, outcome in outcomes.items() if outcome in ("failure", "error"))
    assert failed == [], result.stdout[-20000:]
    assert len(outcomes) == len(names) - len(INTERNALS) - len(DIFFERENCES)
    skipped = sorted(
        name.rsplit(".", 1)[-1] for name, outcome in outcomes.items() if outcome == "skipped"
    )
    assert skipped in ([], [SKIPPED_BY_SUITE])
