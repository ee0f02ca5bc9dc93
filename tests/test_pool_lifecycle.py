"""A pool's life as ProcessPoolExecutor code expects it: its constructor, a failing
initializer, shutdown, a dropped pool, the interpreter's exit, bad submit arguments,
and the files it keeps in the Jupyter runtime directory."""

from __future__ import annotations

import concurrent.futures
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import weakref
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest
from conftest import cli, wait_until
from jupyter_client.manager import KernelManager

from parallel_kernel import EngineDied, Pool, PoolBroken

WAIT = 60


def engine_pid() -> int:
    return os.getpid()


def process_ends(pid: int, timeout: float = 30) -> bool:
    """Whether process ``pid`` is gone within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def nap(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


@pytest.fixture
def runtime_dir(monkeypatch) -> Iterator[Path]:
    """A Jupyter runtime directory of the test's own, short enough for ipc socket paths."""
    path = Path(tempfile.mkdtemp(prefix="pk-"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(path))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_script(code: str, runtime_dir: Path, **options) -> subprocess.CompletedProcess:
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime_dir)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        **options,
    )


# -- the constructor


def set_value(value: int) -> None:
    import builtins

    builtins.initialized_value = value


def read_value() -> int:
    import builtins

    return builtins.initialized_value


def test_max_workers_and_n_are_the_same_argument() -> None:
    with Pool(max_workers=1) as pool:
        assert len(pool.engines) == 1
    with Pool(1, None) as pool:  # ProcessPoolExecutor(max_workers, mp_context)
        assert len(pool.engines) == 1
    with Pool(n=1, mp_context=None) as pool:
        assert len(pool.engines) == 1
    with pytest.raises(TypeError, match="both max_workers and n"):
        Pool(max_workers=1, n=1)


@pytest.mark.parametrize("count", [0, -1])
def test_max_workers_must_be_positive(count: int) -> None:
    with pytest.raises(ValueError, match=r"^max_workers must be greater than 0$"):
        Pool(count)


@pytest.mark.parametrize("count", ["2", 2.0, True])
def test_max_workers_must_be_an_int(count) -> None:
    with pytest.raises(TypeError, match="max_workers must be an int"):
        Pool(count)


def test_a_multiprocessing_context_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="engines are Jupyter kernels"):
        Pool(1, mp_context=multiprocessing.get_context("spawn"))


def test_the_initializer_runs_on_every_engine_and_on_restarted_ones() -> None:
    with Pool(2, initializer=set_value, initargs=(7,)) as pool:
        assert pool.broadcast(read_value) == [7, 7]
        pid = pool.submit(engine_pid, engine=0).result(WAIT)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: pool.engines[0].state == "restarting")
        wait_until(lambda: pool.engines[0].state == "idle")
        assert pool.submit(read_value, engine=0).result(WAIT) == 7
        assert pool.broken is False


def failing_initializer() -> None:
    raise ValueError("error in initializer")


def test_a_failing_initializer_breaks_the_pool(caplog) -> None:
    with caplog.at_level(logging.CRITICAL, logger="parallel_kernel"):
        pool = Pool(2, initializer=failing_initializer)
    try:
        assert pool.broken == "the initializer failed on every engine"
        with pytest.raises(PoolBroken, match="initializer failed") as raised:
            pool.submit(abs, 1)
        assert isinstance(raised.value, concurrent.futures.BrokenExecutor)
        assert [e.state for e in pool.engines] == ["stopped", "stopped"]
    finally:
        pool.shutdown()
    logged = [r for r in caplog.records if r.name == "parallel_kernel"]
    assert len(logged) == 2
    assert all(r.levelno == logging.CRITICAL for r in logged)
    assert all("ValueError: error in initializer" in r.getMessage() for r in logged)
    assert all("failing_initializer" in r.getMessage() for r in logged)


def fail_on_engine_zero() -> None:
    if get_ipython().kernel.engine_id == 0:  # noqa: F821  (the engine's IPython)
        raise RuntimeError("not here")


def test_an_engine_whose_initializer_fails_is_left_out() -> None:
    with Pool(2, initializer=fail_on_engine_zero) as pool:
        assert pool.broken is False
        assert [e.state for e in pool.engines] == ["stopped", "idle"]
        assert {f.result(WAIT) for f in [pool.submit(abs, -i) for i in range(10)]} == set(range(10))


def test_pending_tasks_fail_with_pool_broken_when_the_last_engine_is_gone() -> None:
    manager = KernelManager(kernel_name="parallel")
    manager.start_kernel()
    try:
        with Pool.connect([manager.connection_file], hwm=1) as pool:
            pid = pool.submit(engine_pid).result(WAIT)
            running = pool.submit(nap, 30)
            queued = pool.submit(abs, -1)  # waits in the pool's queue: the engine is full
            time.sleep(0.5)
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(EngineDied) as died:
                running.result(WAIT)
            assert isinstance(died.value, BrokenProcessPool)
            with pytest.raises(PoolBroken, match="every engine of the pool is dead"):
                queued.result(WAIT)
            assert pool.broken == "every engine of the pool is dead"
            with pytest.raises(PoolBroken):
                pool.submit(abs, 1)
    finally:
        manager.shutdown_kernel(now=True)


# -- shutdown


def test_shutdown_without_waiting_lets_the_running_task_finish() -> None:
    pool = Pool(1)
    pid = pool.submit(engine_pid).result(WAIT)
    running = pool.submit(nap, 2)
    wait_until(running.running)
    pool.shutdown(wait=False)
    # it returned while the task runs: nothing waited for it, nothing killed it
    assert not running.done()
    with pytest.raises(RuntimeError, match=r"^cannot schedule new futures after shutdown$"):
        pool.submit(abs, 1)
    assert running.result(WAIT) == 2
    assert process_ends(pid), "the engine outlived the work"


def test_shutdown_without_waiting_can_cancel_the_queued_tasks() -> None:
    pool = Pool(1, hwm=1)
    running = pool.submit(nap, 1)
    queued = [pool.submit(abs, -i) for i in range(5)]
    wait_until(running.running)
    pool.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    assert running.result(WAIT) == 1
    pool.shutdown(wait=True)  # a second call waits for the engines to stop
    assert [e.state for e in pool.engines] == ["stopped"]


def test_shutdown_cancels_the_tasks_waiting_at_the_engine_too() -> None:
    """With the default hwm a task waits at the engine behind the running one; the cancel
    aborts it there (one abort per engine, not one wait per task), and it never runs."""
    pool = Pool(1)
    running = pool.submit(nap, 1)
    queued = [pool.submit(nap, 0.01 * i) for i in range(6)]
    wait_until(running.running)
    pool.shutdown(wait=False, cancel_futures=True)
    assert not running.done()
    concurrent.futures.wait(queued, timeout=WAIT)
    assert all(f.cancelled() for f in queued)
    assert running.result(WAIT) == 1
    pool.shutdown(wait=True)


# -- a dropped pool


def test_a_dropped_pool_is_collected_and_its_engines_stop_after_its_work() -> None:
    pool = Pool(2)
    pids = pool.broadcast(engine_pid)
    work = pool.submit(nap, 1)
    later = pool.submit(abs, -3, after=[work])
    collected = weakref.ref(pool)
    del pool
    gc.collect()
    assert collected() is None
    assert work.result(WAIT) == 1
    assert later.result(WAIT) == 3
    assert all(process_ends(pid) for pid in pids), "a dropped pool's engine outlived it"


# -- the interpreter's exit


def test_a_script_that_submits_and_ends_runs_its_work(runtime_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "done.txt"
    result = run_script(
        f"""
        from parallel_kernel import Pool

        def work(path):
            import time
            time.sleep(1)
            print("work finished", flush=True)
            open(path, "w").write("done")

        p = Pool(2, forward_output=True)
        p.submit(work, {str(out)!r})
        """,
        runtime_dir,
    )
    assert result.returncode == 0, result.stderr
    assert out.read_text() == "done"
    assert "work finished" in result.stdout
    assert list(runtime_dir.iterdir()) == []


def test_a_submit_from_an_atexit_handler_is_refused(runtime_dir: Path) -> None:
    result = run_script(
        """
        import atexit
        from parallel_kernel import Pool

        pool = Pool(1)

        def late():
            try:
                pool.submit(abs, 1)
            except RuntimeError as exc:
                print("refused:", exc, flush=True)

        atexit.register(late)
        """,
        runtime_dir,
    )
    assert result.returncode == 0, result.stderr
    assert "refused: cannot schedule new futures after interpreter shutdown" in result.stdout
    assert list(runtime_dir.iterdir()) == []


# -- bad arguments leave the pool as it was


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"after": [1]}, TypeError, "after must hold futures"),
        ({"after": [None]}, TypeError, "after must hold futures"),
        ({"after": 5}, TypeError, "after must be a future"),
        ({"follow": ["x"]}, TypeError, "follow must hold futures"),
        ({"retries": -1}, ValueError, "retries must be 0 or more"),
        ({"retries": "1"}, TypeError, "retries must be an int"),
        ({"timeout": -1}, ValueError, "timeout must be positive"),
        ({"timeout": "1"}, TypeError, "timeout must be a number"),
        ({"engine": "0"}, TypeError, "engine must be an engine id"),
    ],
)
def test_bad_submit_options_raise_and_register_nothing(options, error, message) -> None:
    pool = Pool(1)
    with pytest.raises(error, match=message):
        pool.submit(abs, -1, **options)
    assert pool.futures() == []
    assert pool.submit(abs, -2).result(WAIT) == 2
    pool.shutdown()  # would hang on a task left registered


@pytest.mark.parametrize(
    ("options", "error"),
    [({"retries": -1}, ValueError), ({"timeout": "1"}, TypeError), ({"chunksize": 0}, ValueError)],
)
def test_bad_map_options_raise_and_register_nothing(options, error) -> None:
    with Pool(1) as pool:
        with pytest.raises(error):
            pool.map(abs, range(10), **options)
        assert pool.futures() == []


# -- files in the runtime directory


def sleeper_script(seconds: float) -> str:
    return f"""
        import os, sys
        from parallel_kernel import Pool

        def nap(seconds):
            import time
            time.sleep(seconds)

        pool = Pool(1)
        print(pool.submit(os.getpid).result(60), flush=True)
        future = pool.submit(nap, {seconds})
        print("ready", flush=True)
        future.result()
        """


def start_script(code: str, runtime_dir: Path) -> tuple[subprocess.Popen, int]:
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime_dir)}
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    pid = int(process.stdout.readline())
    assert process.stdout.readline().strip() == "ready"
    return process, pid


def test_a_ctrl_c_waits_for_the_running_task_and_leaves_no_file(runtime_dir: Path) -> None:
    process, engine = start_script(sleeper_script(2), runtime_dir)
    assert any(runtime_dir.iterdir())
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=WAIT)
    assert "KeyboardInterrupt" in stderr
    assert process_ends(engine)
    assert list(runtime_dir.iterdir()) == []


def test_a_second_ctrl_c_stops_at_once_and_leaves_no_file(runtime_dir: Path) -> None:
    process, engine = start_script(sleeper_script(300), runtime_dir)
    process.send_signal(signal.SIGINT)
    time.sleep(1)  # the exit now waits for the running task
    assert process.poll() is None
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=WAIT)
    assert process_ends(engine)
    assert list(runtime_dir.iterdir()) == []


def kill_a_client(runtime_dir: Path) -> set[Path]:
    """Start a client with an engine, SIGKILL it; return the files its engine left."""
    before = set(runtime_dir.iterdir())
    process, engine = start_script(sleeper_script(300), runtime_dir)
    process.kill()
    process.wait(WAIT)
    assert process_ends(engine), "the engine outlived its killed client"
    left = set(runtime_dir.iterdir()) - before
    assert any(p.suffix == ".json" for p in left)
    assert any(p.name.endswith("-ipc-6") for p in left)  # the task channel's
    return left


@pytest.fixture
def live_kernel(runtime_dir: Path) -> Iterator[set[Path]]:
    """A kernel started on its own (not by a pool), its files in the runtime directory."""
    manager = KernelManager(kernel_name="parallel", transport="ipc")
    manager.connection_file = str(runtime_dir / "kernel-independent.json")
    manager.ip = str(runtime_dir / "kernel-independent-ipc")
    manager.start_kernel()
    try:
        client = manager.client()
        client.wait_for_ready(timeout=WAIT)
        yield set(runtime_dir.iterdir())
    finally:
        manager.shutdown_kernel(now=True)


def test_clean_removes_what_killed_clients_left_and_nothing_of_a_live_kernel(
    runtime_dir: Path, live_kernel: set[Path]
) -> None:
    left = kill_a_client(runtime_dir)
    listed = cli("clean", "--dry-run")
    assert listed.returncode == 0, listed.stderr
    assert {Path(line.split(" ", 2)[2]) for line in listed.stdout.splitlines()} == left
    assert left <= set(runtime_dir.iterdir())
    assert cli("clean").returncode == 0
    assert set(runtime_dir.iterdir()) == live_kernel


def test_a_new_pool_removes_what_a_killed_client_left(
    runtime_dir: Path, live_kernel: set[Path]
) -> None:
    kill_a_client(runtime_dir)
    with Pool(1) as pool:
        files = set(runtime_dir.iterdir())
        own = {p for p in files if p.name.startswith(Path(pool.engines[0].connection_file).stem)}
        assert files - own == live_kernel
    assert set(runtime_dir.iterdir()) == live_kernel


def test_clean_says_what_it_removes() -> None:
    result = cli("clean", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "that process is gone and nothing accepts a connection" in text
    assert "Files of live kernels, and of kernels not started by a pool, are never touched" in text
    assert "clean" in cli("--help").stdout
