"""The Pool when engines die, fail to start, or belong to someone else."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import wait_until
from jupyter_client.manager import KernelManager

from parallel_kernel import (
    EngineDied,
    EngineStartError,
    Pool,
    PoolBroken,
    TaskInterrupted,
    TaskTimeout,
)


def slow_identity(x):
    import time

    time.sleep(0.05)
    return x


def engine_pid() -> int:
    return os.getpid()


def process_ends(pid: int, timeout: float) -> bool:
    """Whether process ``pid`` is gone within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def wait_for_state(pool: Pool, engine_id: int, state: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while pool.engines[engine_id].state != state:
        assert time.monotonic() < deadline, f"engine {engine_id} never became {state}: {pool}"
        time.sleep(0.05)


@pytest.mark.parametrize("retries", [0, 2])
def test_kill_an_engine_mid_map(retries: int) -> None:
    with Pool(2) as pool:
        victim = pool.submit(engine_pid, engine=1).result(30)
        futures = [pool.submit(slow_identity, i, retries=retries) for i in range(60)]
        while sum(f.done() for f in futures) < 10:
            time.sleep(0.01)
        done_before = {i for i, f in enumerate(futures) if f.done()}
        os.kill(victim, signal.SIGKILL)
        outcomes = []
        for i, future in enumerate(futures):
            try:
                outcomes.append(("ok", future.result(timeout=60), i))
            except EngineDied:
                outcomes.append(("died", future.engine_id, i))
        died = [o for o in outcomes if o[0] == "died"]
        if retries:
            assert died == []
            assert [value for _, value, _ in outcomes] == list(range(60))
        else:
            assert died, "some task was in flight on the killed engine"
            assert len(died) <= pool.hwm
            assert all(engine == 1 for _, engine, _ in died)
            assert not {i for _, _, i in died} & done_before  # only tasks still in flight
            assert all(value == i for kind, value, i in outcomes if kind == "ok")
        wait_for_state(pool, 1, "idle")
        assert pool.submit(engine_pid, engine=1).result(30) != victim


def test_an_engine_that_exits_is_restarted_and_the_pool_keeps_serving() -> None:
    with Pool(2) as pool:
        future = pool.submit(os._exit, 3, engine=0)
        with pytest.raises(EngineDied, match="engine 0 died"):
            future.result(timeout=30)
        assert list(pool.map(abs, range(-20, 0))) == list(range(20, 0, -1))
        wait_for_state(pool, 0, "idle")
        assert pool.submit(lambda: "back", engine=0).result(30) == "back"


def test_an_engine_that_cannot_start_says_why(tmp_path: Path, monkeypatch) -> None:
    spec_dir = tmp_path / "kernels" / "broken"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [
                    sys.executable,
                    "-c",
                    "import sys; sys.stderr.write('this engine is broken on purpose'); sys.exit(3)",
                    "{connection_file}",
                ],
                "display_name": "broken",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    with pytest.raises(EngineStartError) as info:
        Pool(1, kernel_name="broken", startup_timeout=20)
    message = str(info.value)
    assert "engine 0 (kernelspec 'broken') failed to start: its process exited" in message
    assert "this engine is broken on purpose" in message


def test_connect_to_a_kernel_started_separately_and_leave_it_running() -> None:
    manager = KernelManager(kernel_name="parallel")
    manager.start_kernel()
    try:
        with Pool.connect([manager.connection_file]) as pool:
            assert pool.engines[0].owned is False
            assert pool.submit(lambda: 6 * 7).result(30) == 42
            pool.push({"from_pool": "kept"})
        assert manager.is_alive()
        client = manager.client()
        client.start_channels()
        try:
            reply = client.execute_interactive("assert from_pool == 'kept'", timeout=30)
            assert reply["content"]["status"] == "ok"
        finally:
            client.stop_channels()
    finally:
        manager.shutdown_kernel(now=True)


def test_a_connected_kernel_that_dies_fails_its_tasks() -> None:
    manager = KernelManager(kernel_name="parallel")
    manager.start_kernel()
    try:
        with Pool.connect([manager.connection_file]) as pool:
            pid = pool.submit(engine_pid).result(30)
            future = pool.submit(time.sleep, 30)
            time.sleep(0.5)
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(EngineDied, match="heartbeat"):
                future.result(timeout=20)
            assert pool.engines[0].state == "dead"
            with pytest.raises(PoolBroken, match="every engine of the pool is dead"):
                pool.submit(abs, 1)
    finally:
        manager.shutdown_kernel(now=True)


def test_forward_output_prefixes_engine_lines(capfd) -> None:
    with Pool(1, forward_output=True) as pool:
        pool.submit(lambda: print("line one\nline two")).result(30)
        time.sleep(0.2)
    out = capfd.readouterr().out
    assert "[engine 0] line one\n[engine 0] line two\n" in out


def test_shutdown_cancels_pending_futures_when_asked() -> None:
    pool = Pool(1, hwm=1)
    running = pool.submit(_nap, 1)
    waiting = [pool.submit(abs, -i) for i in range(5)]
    deadline = time.monotonic() + 30
    while "started" not in running.stdout:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    pool.shutdown(wait=True, cancel_futures=True)
    assert running.result() is None
    assert all(f.cancelled() for f in waiting)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(abs, 1)


def test_kill_an_engine_mid_map_with_retries_gives_every_result() -> None:
    with Pool(2) as pool:
        victim = pool.submit(engine_pid, engine=1).result(30)
        results = pool.map(slow_identity, range(200), chunksize=5, retries=1)
        first = [next(results) for _ in range(20)]
        os.kill(victim, signal.SIGKILL)
        assert first + list(results) == list(range(200))


@pytest.mark.parametrize(
    "crash",
    [
        "import os; os._exit(3)",
        "import ctypes; ctypes.string_at(0)",
    ],
    ids=["os._exit", "segfault"],
)
def test_crashing_engines_are_reported_and_restarted(crash: str) -> None:
    with Pool(1) as pool:
        future = pool.submit(exec, crash)
        with pytest.raises(EngineDied, match="engine 0 died"):
            future.result(timeout=30)
        wait_for_state(pool, 0, "idle")
        assert pool.submit(lambda: "back").result(30) == "back"


def test_retry_on_error_reruns_a_failing_task_elsewhere() -> None:
    with Pool(2) as pool:
        pool.push({"fail_here": False})
        pool.submit(lambda: globals().update(fail_here=True), engine=0).result(30)

        def flaky():
            if fail_here:  # noqa: F821
                raise RuntimeError("this engine is bad")
            return "ok"

        futures = [pool.submit(flaky, retries=1, retry_on_error=True) for _ in range(6)]
        assert [f.result(30) for f in futures] == ["ok"] * 6
        assert {f.engine_id for f in futures} == {1}
        with pytest.raises(RuntimeError, match="this engine is bad"):
            pool.submit(flaky, engine=0, retries=1, retry_on_error=True).result(30)


def _nap(seconds: float) -> None:
    print("started", flush=True)
    time.sleep(seconds)


def test_interrupt_every_engine() -> None:
    with Pool(2) as pool:
        futures = [pool.submit(_nap, 30, engine=i) for i in (0, 1)]
        # "busy" only means tasks are in flight; a SIGINT that reaches an engine
        # before its task starts is ignored, as by any idle Jupyter kernel
        deadline = time.monotonic() + 10
        while not all("started" in f.stdout for f in futures):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        pool.interrupt()
        for future in futures:
            with pytest.raises(TaskInterrupted):
                future.result(timeout=15)


def test_an_engine_started_by_hand_joins_a_pool(tmp_path: Path) -> None:
    from jupyter_client.connect import write_connection_file

    connection_file, _ = write_connection_file(str(tmp_path / "engine.json"), ip="127.0.0.1")
    process = subprocess.Popen(
        [sys.executable, "-m", "parallel_kernel", "kernel", "-f", connection_file],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with Pool.connect([connection_file]) as pool:
            assert pool.submit(os.getpid).result(60) == process.pid
        assert process.poll() is None
    finally:
        process.kill()
        process.wait(10)


def test_a_retried_task_gets_a_fresh_attempt_with_its_own_timeout() -> None:
    with Pool(2) as pool:
        pool.push({"attempts": 0})

        def first_fails_then_sleeps():
            global attempts
            attempts += 1
            print("attempt", flush=True)
            if pool_first_attempt_marker():  # noqa: F821
                raise RuntimeError("first attempt fails")
            time.sleep(8)
            return "finished without timeout"

        pool.submit(
            lambda: globals().update(pool_first_attempt_marker=lambda: False), engine=1
        ).result(30)
        # engine 0 ran last, so the idle pool gives it the first attempt, which fails
        pool.submit(
            lambda: globals().update(pool_first_attempt_marker=lambda: True), engine=0
        ).result(30)
        future = pool.submit(
            first_fails_then_sleeps, engine=None, retries=1, retry_on_error=True, timeout=1
        )
        with pytest.raises(TaskTimeout):
            future.result(timeout=30)
        # one attempt on each engine: the retry ran, and was timed from its own start
        assert pool.pull("attempts") == [1, 1]


def test_engines_stop_when_the_client_exits_without_shutdown(tmp_path: Path) -> None:
    script = tmp_path / "forgetful.py"
    script.write_text(
        "import os\n"
        "from parallel_kernel import Pool\n"
        "pool = Pool(1)\n"
        "print(pool.submit(os.getpid).result(60), flush=True)\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True
    )
    pid = int(result.stdout.split()[-1])
    assert process_ends(pid, 20), "the engine outlived its client"


def test_a_pool_finalized_on_the_loop_thread_blocks_nothing() -> None:
    """All pools of a process share one loop thread, and the garbage collector may
    finalize a pool there (its finalizer is what ``del pool`` + a collection runs)."""
    finished = Pool(1)
    assert finished.submit(abs, -1).result(60) == 1
    finished.shutdown()
    dropped = Pool(1)
    pid = dropped.submit(os.getpid).result(60)
    with Pool(1) as pool:
        collected = pool.submit(abs, -2)
        collected.add_done_callback(lambda _: (finished._finalizer(), dropped._finalizer()))
        assert collected.result(30) == 2
        # the loop did not stop to wait for itself: the pool answers at once
        assert pool.submit(abs, -3).result(5) == 3
        # and the dropped pool's engine was stopped
        assert process_ends(pid, 20), "the dropped pool's engine outlived it"


# -- the task channel under stress: found in review, kept fixed


def break_stdout():
    import builtins
    import sys

    builtins._kept_stdout = sys.stdout
    closed = open(os.devnull, "w")  # noqa: SIM115
    closed.close()
    sys.stdout = closed
    return "broke"


def restore_stdout():
    import builtins
    import sys

    sys.stdout = builtins._kept_stdout
    return "restored"


def test_a_task_that_breaks_the_kernels_stdout_still_gets_replies() -> None:
    with Pool(1) as pool:
        assert pool.submit(break_stdout).result(30) == "broke"
        assert pool.submit(abs, -3).result(30) == 3  # answered, not left hanging
        assert pool.submit(restore_stdout).result(30) == "restored"
        assert pool.submit(abs, -4).result(30) == 4


async def cpu_while_awaiting(seconds):
    import asyncio
    import time

    start = time.process_time()
    await asyncio.sleep(seconds)
    return time.process_time() - start


def test_an_engine_awaiting_a_task_does_not_spin_on_queued_messages() -> None:
    with Pool(1) as pool:
        awaiting = pool.submit(cpu_while_awaiting, 2)
        time.sleep(0.3)
        queued = pool.submit(abs, -1)
        assert awaiting.result(30) < 0.5  # seconds of CPU in 2 s; a busy loop uses ~2
        assert queued.result(30) == 1


def sleep_for(seconds):
    import time

    time.sleep(seconds)
    return seconds


def test_a_timeout_holds_for_a_function_known_to_be_short() -> None:
    with Pool(1) as pool:
        for future in [pool.submit(sleep_for, 0) for _ in range(50)]:
            future.result(30)
        neighbour = pool.submit(sleep_for, 0)
        slow = pool.submit(sleep_for, 30, timeout=1)
        with pytest.raises(TaskTimeout):
            slow.result(20)
        assert neighbour.result(5) == 0


def test_control_requests_are_served_during_a_long_backlog_of_short_tasks() -> None:
    with Pool(1) as pool:
        pool.push({"marker": 1})
        futures = [pool.submit(sleep_for, 0.005) for _ in range(600)]
        while not futures[50].done():
            time.sleep(0.01)
        pool.clear()  # on control: answered between tasks, not after the backlog
        assert not futures[-1].done()
        assert [f.result(60) for f in futures] == [0.005] * 600


def test_a_pool_connects_to_an_engine_on_ipc_sockets(tmp_path, monkeypatch) -> None:
    """ipc "ports" are file suffixes; the task channel must not take the heartbeat's."""
    monkeypatch.chdir(tmp_path)
    manager = KernelManager(kernel_name="parallel", transport="ipc")
    manager.start_kernel()
    try:
        with Pool.connect([manager.connection_file]) as pool:
            assert pool.submit(abs, -5).result(30) == 5
            assert pool.engines[0].state == "idle"
        info = json.loads(Path(manager.connection_file).read_text())
        ports = {info[k] for k in ("shell_port", "iopub_port", "stdin_port", "control_port")}
        client = manager.client()
        client.start_channels()
        parallel = client.kernel_info(reply=True, timeout=30)["content"]["parallel"]
        client.stop_channels()
        assert parallel["task_port"] not in ports | {info["hb_port"]}
    finally:
        manager.shutdown_kernel(now=True)


def test_tasks_submitted_right_after_an_engine_is_killed_all_run() -> None:
    """The pool has not noticed the death yet and sends some of them to the dead engine:
    they never started there, so they run elsewhere, though they have no retries."""
    with Pool(2) as pool:
        pids = pool.broadcast(engine_pid)
        os.kill(pids[0], signal.SIGKILL)
        futures = [pool.submit(pow, 2, i) for i in range(10)]
        assert [f.result(60) for f in futures] == [2**i for i in range(10)]


def test_tasks_queued_behind_a_running_task_at_a_dying_engine_run_elsewhere() -> None:
    """Only the task that was running when its engine died fails; those queued behind it
    at that engine never started, and run elsewhere without using a retry."""
    with Pool(2, hwm=3) as pool:
        pids = pool.broadcast(engine_pid)
        running = pool.submit(time.sleep, 60, engine=0)
        wait_until(running.running)
        queued = [pool.submit(slow_identity, i, engine=0) for i in range(2)]
        wait_until(lambda: pool.engines[0].outstanding == 3)
        assert not any(f.running() for f in queued)
        os.kill(pids[0], signal.SIGKILL)
        with pytest.raises(EngineDied):
            running.result(30)
        assert [f.result(60) for f in queued] == [0, 1]
        assert all(f.engine_id == 0 for f in queued)  # on engine 0 once it is restarted


def test_running_is_true_once_the_engine_has_started_the_task() -> None:
    with Pool(1) as pool:
        first = pool.submit(time.sleep, 1)
        second = pool.submit(time.sleep, 0)
        wait_until(first.running, 10)
        assert not second.running()
        assert not first.cancel()  # a running task cannot be cancelled
        wait_until(lambda: second.running() or second.done(), 10)
        assert second.result(10) is None
        assert first.done()
