"""Engines that die or freeze: each task gets its exact outcome; the pool restarts and serves."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator

import pytest

from parallel_kernel import EngineDied, Pool, TaskInterrupted

#: Seconds any single wait in these tests may take: nothing may hang past it.
WAIT = 60


def engine_pid() -> int:
    return os.getpid()


def nap(seconds: float) -> str:
    print("started", flush=True)
    time.sleep(seconds)
    return "slept"


def exit_now() -> None:
    os._exit(3)


def segfault() -> None:
    import ctypes

    ctypes.string_at(0)


@pytest.fixture
def pool() -> Iterator[Pool]:
    with Pool(2) as pool:
        yield pool


def wait_until(condition, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def wait_started(future) -> None:
    wait_until(lambda: "started" in future.stdout, "the task started")


def restarted(pool: Pool, engine_id: int, old_pid: int) -> int:
    """Wait until the engine runs again under a new process; return its pid."""
    wait_until(lambda: pool.engines[engine_id].state == "idle", f"engine {engine_id} is back")
    pid = pool.submit(engine_pid, engine=engine_id).result(WAIT)
    assert pid != old_pid
    return pid


def test_sigkill_mid_task(pool: Pool) -> None:
    victim = pool.submit(engine_pid, engine=1).result(WAIT)
    doomed = pool.submit(nap, 30, engine=1)
    survivor = pool.submit(nap, 0.5, engine=0)
    wait_started(doomed)
    os.kill(victim, signal.SIGKILL)
    with pytest.raises(EngineDied, match=r"engine 1 died .*killed by SIGKILL"):
        doomed.result(WAIT)
    assert survivor.result(WAIT) == "slept"
    restarted(pool, 1, victim)


def test_sigkill_while_idle(pool: Pool) -> None:
    victim = pool.submit(engine_pid, engine=0).result(WAIT)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: pool.engines[0].state != "idle", "the death is noticed", timeout=10)
    restarted(pool, 0, victim)
    assert sorted(pool.map(abs, range(-10, 0))) == list(range(1, 11))


def test_an_engine_that_calls_os_exit(pool: Pool) -> None:
    victim = pool.submit(engine_pid, engine=0).result(WAIT)
    with pytest.raises(EngineDied, match="exited with status 3"):
        pool.submit(exit_now, engine=0).result(WAIT)
    restarted(pool, 0, victim)


def test_an_engine_that_segfaults(pool: Pool) -> None:
    victim = pool.submit(engine_pid, engine=1).result(WAIT)
    with pytest.raises(EngineDied, match="killed by SIGSEGV"):
        pool.submit(segfault, engine=1).result(WAIT)
    restarted(pool, 1, victim)
    # a retried task that crashes every engine it reaches still ends, with EngineDied
    with pytest.raises(EngineDied):
        pool.submit(segfault, retries=1).result(WAIT)
    assert pool.submit(abs, -1).result(WAIT) == 1


def test_a_frozen_engine_is_detected_by_its_heartbeat_and_replaced(pool: Pool) -> None:
    victim = pool.submit(engine_pid, engine=1).result(WAIT)
    frozen = pool.submit(nap, 30, engine=1)
    retried = pool.submit(nap, 30, engine=1, retries=1)  # queued behind it
    wait_started(frozen)
    started = time.monotonic()
    os.kill(victim, signal.SIGSTOP)
    try:
        with pytest.raises(EngineDied, match="heartbeat stopped"):
            frozen.result(WAIT)
        assert time.monotonic() - started < 15
        # the retried task runs again, on the replacement or on the other engine
        wait_started(retried)
        assert retried.interrupt() is True
        with pytest.raises(TaskInterrupted):
            retried.result(WAIT)
        restarted(pool, 1, victim)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the pool killed it; never leave it stopped
            os.kill(victim, signal.SIGKILL)


def test_a_frozen_idle_engine_is_replaced(pool: Pool) -> None:
    victim = pool.submit(engine_pid, engine=0).result(WAIT)
    os.kill(victim, signal.SIGSTOP)
    try:
        wait_until(lambda: pool.engines[0].state != "idle", "the freeze is noticed", timeout=15)
        restarted(pool, 0, victim)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    assert list(pool.map(abs, [-1, -2, -3])) == [1, 2, 3]
