"""A client that dies mid-map, or shuts down with work queued: the engines serve the next one."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest
from jupyter_client.manager import KernelManager

from parallel_kernel import Pool

WAIT = 60

CLIENT = textwrap.dedent(
    """
    import sys, time
    from parallel_kernel import Pool

    def slow(x):
        import time
        time.sleep(0.01)
        return x

    with Pool.connect(sys.argv[1:]) as pool:
        results = pool.map(slow, range(100_000), chunksize=5)
        print("mapping", flush=True)
        for _ in results:
            pass
    """
)


@pytest.fixture
def engines() -> Iterator[list[KernelManager]]:
    managers = [KernelManager(kernel_name="parallel") for _ in range(2)]
    for manager in managers:
        manager.start_kernel()
    yield managers
    for manager in managers:
        manager.shutdown_kernel(now=True)


def engine_pid() -> int:
    return os.getpid()


@pytest.mark.timeout(200)
def test_a_client_killed_mid_map_leaves_the_engines_serving(
    engines: list[KernelManager],
) -> None:
    files = [m.connection_file for m in engines]
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, *files], stdout=subprocess.PIPE, text=True
    )
    try:
        assert client.stdout.readline().strip() == "mapping"
        time.sleep(1)  # well into the map: the engines have its tasks queued
        client.send_signal(signal.SIGKILL)
        client.wait(WAIT)
    finally:
        client.kill()
    started = time.monotonic()
    with Pool.connect(files) as pool:
        pids = pool.broadcast(engine_pid)
        assert sorted(pids) == sorted(m.provisioner.process.pid for m in engines)
        assert list(pool.map(abs, range(-50, 0))) == list(range(50, 0, -1))
    # at most the dead client's few in-flight chunks ran before the new client's tasks
    assert time.monotonic() - started < 20
    assert all(m.is_alive() for m in engines)


def nap(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


@pytest.mark.parametrize("cancel_futures", [False, True])
def test_shutdown_with_tasks_queued(cancel_futures: bool) -> None:
    pool = Pool(2)
    futures = [pool.submit(nap, 0.02) for _ in range(200)]
    time.sleep(0.2)
    pool.shutdown(wait=True, cancel_futures=cancel_futures)
    states = {"done": 0, "cancelled": 0}
    for future in futures:
        assert future.done()  # nothing is left hanging after shutdown(wait=True)
        if future.cancelled():
            states["cancelled"] += 1
        else:
            assert future.result(0) == 0.02
            states["done"] += 1
    if cancel_futures:
        assert states["cancelled"] > 0
        assert states["done"] > 0  # the ones already running or queued at an engine finished
    else:
        assert states == {"done": 200, "cancelled": 0}
    assert concurrent.futures.wait(futures, timeout=1).not_done == set()
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(nap, 0)
