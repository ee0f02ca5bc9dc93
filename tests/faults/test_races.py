"""Aborts, interrupts and clears fired at random moments: exactly one outcome per task, no hang."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from parallel_kernel import Pool, TaskInterrupted

WAIT = 60


def record(i: int, seconds: float) -> int:
    import time

    globals().setdefault("ran", set()).add(i)
    if seconds:
        time.sleep(seconds)
    return i


def take_ran() -> set[int]:
    return globals().pop("ran", set())


def abort_sizes() -> dict[str, int]:
    return get_ipython().kernel.aborts.sizes()  # noqa: F821


def engine_pid() -> int:
    return os.getpid()


@contextlib.contextmanager
def repeatedly(action: Callable[[], object], pause: Callable[[], float]) -> Iterator[None]:
    """Call ``action()`` again and again on another thread, ``pause()`` seconds apart,
    while the ``with`` block runs."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            action()
            time.sleep(pause())

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(WAIT)


def ran_or_interrupted(futures: list) -> dict[str, int]:
    """How many of ``record``'s futures returned their own index, and how many were
    interrupted; any other outcome fails the test."""
    outcomes = {"ok": 0, "interrupted": 0}
    for i, future in enumerate(futures):
        try:
            assert future.result() == i
            outcomes["ok"] += 1
        except TaskInterrupted:
            outcomes["interrupted"] += 1
    return outcomes


@pytest.mark.timeout(300)
def test_thousands_of_cancels_at_random_moments() -> None:
    """Cancel before sending, while queued at the engine, while running, after: one outcome each."""
    rng = random.Random(20261124)
    with Pool(2) as pool:
        pids = pool.broadcast(engine_pid)
        futures, attempts = [], {}
        for i in range(3000):
            futures.append(pool.submit(record, i, rng.choice([0, 0, 0.0005, 0.002])))
            if rng.random() < 0.5:
                victim = rng.choice(futures[-30:])
                if rng.random() < 0.3:
                    time.sleep(rng.random() * 0.002)
                sent = victim.msg_id is not None
                attempts.setdefault(victim, []).append((sent, victim.cancel()))
        pending = concurrent.futures.wait(futures, timeout=WAIT).not_done
        assert not pending
        ran = set().union(*pool.broadcast(take_ran))
        kinds = {"local": 0, "at engine": 0, "too late": 0}
        for i, future in enumerate(futures):
            if future.cancelled():
                assert i not in ran, f"task {i} was cancelled yet ran"
                assert any(ok for _, ok in attempts[future])
                kinds["at engine" if any(s and ok for s, ok in attempts[future]) else "local"] += 1
            else:
                assert future.result() == i
                assert i in ran
                if future in attempts:
                    kinds["too late"] += 1
        assert all(kinds.values()), kinds  # every kind of race happened
        # every abort was consumed by its request or answered "started": nothing left pending
        for sizes in pool.broadcast(abort_sizes):
            assert sizes["pending"] == 0, sizes
        assert pool.broadcast(engine_pid) == pids  # no engine died on the way


@pytest.mark.timeout(300)
def test_an_interrupt_storm() -> None:
    """Interrupts at random moments hit tasks or idle engines; every task ends exactly once."""
    rng = random.Random(7)
    with Pool(2) as pool:
        pids = pool.broadcast(engine_pid)
        futures = []
        with repeatedly(pool.interrupt, lambda: rng.random() * 0.01):
            for i in range(600):
                seconds = rng.choice([0, 0.001, 0.005])
                if i % 3 == 0:
                    futures.append(pool.submit(record, i, seconds, timeout=5))  # by shell
                else:
                    futures.append(pool.submit(record, i, seconds))  # by the task channel
                if i % 50 == 0:
                    time.sleep(0.05)
            pending = concurrent.futures.wait(futures, timeout=WAIT).not_done
        assert not pending
        outcomes = ran_or_interrupted(futures)
        assert outcomes["ok"] > 0, outcomes
        assert outcomes["interrupted"] > 0, outcomes
        # the engines survived: same processes, still serving, idle interrupts ignored
        assert pool.broadcast(engine_pid) == pids
        pool.interrupt()
        assert list(pool.map(abs, range(-20, 0))) == list(range(20, 0, -1))


@pytest.mark.timeout(300)
def test_a_sigint_flood_never_costs_a_reply_or_an_engine() -> None:
    """SIGINTs sent straight to an engine, every millisecond or so, while tasks come by both
    channels: each lands in a task's code or is dropped, never in the kernel's own steps
    around a task (its abort check, start report or reply), so every task is answered."""
    rng = random.Random(11)
    with Pool(1) as pool:
        [pid] = pool.broadcast(engine_pid)
        futures = []
        with repeatedly(lambda: os.kill(pid, signal.SIGINT), lambda: rng.random() * 0.002):
            for i in range(900):
                by_shell = i % 3 == 0  # a timeout sends a task on the shell channel
                options = {"timeout": 30} if by_shell else {}
                futures.append(pool.submit(record, i, rng.choice([0, 0, 0.001]), **options))
            pending = concurrent.futures.wait(futures, timeout=WAIT).not_done
        assert not pending
        outcomes = ran_or_interrupted(futures)
        assert outcomes["interrupted"] > 0, outcomes
        assert pool.broadcast(engine_pid) == [pid]


@pytest.mark.timeout(200)
def test_clears_during_a_queue_of_tasks() -> None:
    """A clear runs between tasks: each task sees the namespace whole, before or after it."""
    with Pool(2) as pool:
        pool.execute("marker = 'set'")

        def read_marker(i: int) -> str:
            import time

            time.sleep(0.002)
            return globals().get("marker", "cleared")

        futures = [pool.submit(read_marker, i) for i in range(400)]
        time.sleep(0.1)
        pool.clear()
        results = [f.result(WAIT) for f in futures]
        assert set(results) <= {"set", "cleared"}
        assert "cleared" in results
        # per engine, a cleared namespace never comes back
        for engine in (0, 1):
            seen = [r for f, r in zip(futures, results, strict=True) if f.engine_id == engine]
            assert seen == sorted(seen, key=lambda r: r == "cleared")
