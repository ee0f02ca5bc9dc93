"""The Pool when engines die, fail to start, or belong to someone else."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from jupyter_client.manager import KernelManager

from parallel_kernel import EngineDied, EngineStartError, Pool


def slow_identity(x):
    import time

    time.sleep(0.05)
    return x


def engine_pid() -> int:
    return os.getpid()


def wait_for_state(pool: Pool, engine_id: int, state: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while pool.engines[engine_id].state != state:
        assert time.monotonic() < deadline, f"engine {engine_id} never became {state}"
        time.sleep(0.05)


@pytest.mark.parametrize("retries", [0, 2])
def test_kill_an_engine_mid_map(retries: int) -> None:
    with Pool(2) as pool:
        victim = pool.submit(engine_pid, engine=1).result(30)
        futures = [pool.submit(slow_identity, i, retries=retries) for i in range(60)]
        while sum(f.done() for f in futures) < 10:
            time.sleep(0.01)
        on_victim_before = {id(f) for f in futures if f.engine_id == 1 and not f.done()}
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
            lost = {id(futures[i]) for _, _, i in died}
            assert lost <= on_victim_before | lost
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
            with pytest.raises(EngineDied, match="every engine of the pool is dead"):
                pool.submit(abs, 1).result(timeout=10)
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
    running = pool.submit(time.sleep, 1)
    waiting = [pool.submit(abs, -i) for i in range(5)]
    time.sleep(0.2)
    pool.shutdown(wait=True, cancel_futures=True)
    assert running.result() is None
    assert all(f.cancelled() for f in waiting)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(abs, 1)
