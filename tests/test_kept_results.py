"""Large results stay on the engine that computed them until someone needs them."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from conftest import Driver, wait_until

from parallel_kernel import DependencyError, EngineDied, Pool, TaskInterrupted
from parallel_kernel.serialize import SerializationError

pytestmark = pytest.mark.timeout(180)

WAIT = 60
MiB = 1 << 20


@pytest.fixture(scope="module")
def pool() -> Iterator[Pool]:
    with Pool(2) as pool:
        yield pool


def kept_here() -> dict:
    """Runs on an engine: what it keeps."""
    return get_ipython().kernel.kept.summary()  # noqa: F821


def kept(pool: Pool) -> list[dict]:
    return pool.broadcast(kept_here)


def settled(pool: Pool, values: int) -> None:
    """Wait until the engines keep ``values`` values in all (releases are not awaited)."""
    gc.collect()
    wait_until(lambda: sum(k["values"] for k in kept(pool)) == values)


def test_a_large_result_stays_on_its_engine_until_result_is_called(pool: Pool) -> None:
    settled(pool, 0)
    future = pool.submit(np.arange, 2 * MiB, dtype=np.float64)  # 16 MiB
    future.exception(WAIT)
    assert future.kept is not None
    assert future.kept.engine_id == future.engine_id
    assert "ndarray of 16,777," in repr(future.kept)
    on_engine = kept(pool)[future.engine_id]
    assert on_engine["values"] == 1
    assert on_engine["nbytes"] >= 16 * MiB
    fetches = on_engine["fetches"]
    value = future.result(WAIT)
    assert value[-1] == 2 * MiB - 1
    assert future.result(WAIT) is value  # fetched once
    assert kept(pool)[future.engine_id]["fetches"] == fetches + 1
    del future, value
    settled(pool, 0)  # the engine dropped it with the last reference


def test_small_results_come_back_with_their_reply(pool: Pool) -> None:
    future = pool.submit(np.arange, 1000)
    assert future.result(WAIT)[-1] == 999
    assert future.kept is None


def test_a_chain_on_one_engine_never_sends_its_intermediates_here(pool: Pool) -> None:
    settled(pool, 0)
    before = [k["fetches"] for k in kept(pool)]
    value = pool.submit(np.ones, 4 * MiB)  # 32 MiB
    for _ in range(5):
        value = pool.submit(np.add, value, 1)
    total = pool.submit(np.sum, value)
    assert total.result(WAIT) == 6 * 4 * MiB
    assert [k["fetches"] for k in kept(pool)] == before  # nothing came here
    del value, total
    settled(pool, 0)


def test_a_task_on_another_engine_gets_the_value_from_the_engine_that_keeps_it(
    pool: Pool,
) -> None:
    settled(pool, 0)
    source = pool.submit(np.full, MiB, 3.0, engine=0)
    source.exception(WAIT)
    assert source.kept.engine_id == 0
    before = kept(pool)[0]["fetches"]
    total = pool.submit(lambda a: (os.getpid(), float(a.sum())), source, engine=1)
    pid, value = total.result(WAIT)
    assert value == 3.0 * MiB
    assert pid == pool.broadcast(os.getpid)[1]
    assert kept(pool)[0]["fetches"] == before + 1  # engine 1 fetched it from engine 0
    del source
    settled(pool, 0)


def test_a_long_chain_of_large_intermediates_keeps_engine_memory_bounded() -> None:
    step = 8 * MiB  # 64 MiB of float64
    with Pool(1) as pool:
        value = pool.submit(np.zeros, step)
        for _ in range(200):
            value = pool.submit(np.add, value, 1.0)
        assert pool.submit(lambda a: float(a[-1]), value).result(300) == 200.0
        [peak] = pool.broadcast(_peak_rss)
    assert peak < 6 * 64 * MiB, f"the engine's peak RSS was {peak / MiB:.0f} MiB"


def _peak_rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def test_threads_asking_for_one_kept_value_share_one_fetch(pool: Pool) -> None:
    future = pool.submit(np.arange, 4 * MiB)
    future.exception(WAIT)
    assert future.kept is not None
    fetches = kept(pool)[future.engine_id]["fetches"]
    got: list = []
    threads = [threading.Thread(target=lambda: got.append(future.result(WAIT))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert len(got) == 4
    assert all(value is got[0] for value in got)  # one value, fetched once
    assert kept(pool)[future.engine_id]["fetches"] == fetches + 1


def test_a_fetch_from_an_engine_that_does_not_answer_holds_up_no_other() -> None:
    with Pool(2) as pool:
        pids = pool.broadcast(os.getpid)
        stuck = pool.submit(np.ones, MiB, engine=0)
        fine = pool.submit(np.ones, MiB, engine=1)
        for future in (stuck, fine):
            assert future.exception(WAIT) is None
            assert future.kept is not None
        ended: dict[str, float] = {}

        def wait_for_stuck() -> None:
            with contextlib.suppress(Exception):  # its engine may be found lost while stopped
                stuck.result(WAIT)
            ended["stuck"] = time.monotonic()

        os.kill(pids[0], signal.SIGSTOP)
        try:
            waiting = threading.Thread(target=wait_for_stuck)
            waiting.start()
            wait_until(lambda: stuck.kept.fetching is not None)
            assert fine.result(WAIT)[0] == 1.0
            ended["fine"] = time.monotonic()
        finally:
            os.kill(pids[0], signal.SIGCONT)
        waiting.join(WAIT)
        assert ended["fine"] < ended["stuck"]  # not after the stuck fetch ended


def hog_the_interpreter(seconds: float) -> None:
    """Runs on an engine: keep its other threads (the control thread too) from running."""
    import sys

    interval = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass
    finally:
        sys.setswitchinterval(interval)


def test_a_task_waiting_for_an_input_from_another_engine_can_be_interrupted() -> None:
    with Pool(2) as pool:
        value = pool.submit(np.ones, MiB, engine=0)
        assert value.exception(WAIT) is None
        assert value.kept is not None
        hog = pool.submit(hog_the_interpreter, 20, engine=0)  # engine 0 cannot answer fetches
        wait_until(hog.running)
        task = pool.submit(np.sum, value, engine=1)
        wait_until(task.running)
        time.sleep(0.5)  # engine 1 is waiting for engine 0's answer
        assert not task.done()
        task.interrupt()
        with pytest.raises(TaskInterrupted, match="interrupted while fetching input 0"):
            task.result(10)
        assert not hog.done()  # the interrupt ended the wait, not an answer from engine 0
        hog.interrupt()
        hog.exception(WAIT)
        assert pool.submit(np.sum, value, engine=1).result(WAIT) == MiB  # engine 0 answers again


def test_values_still_referred_to_are_fetched_before_the_pool_stops() -> None:
    with Pool(1) as pool:
        future = pool.submit(np.full, MiB, 7.0)
        future.exception(WAIT)
        assert future.kept is not None
    assert future.result()[0] == 7.0  # after shutdown, as with any Executor


def test_a_value_lost_with_its_engine_fails_result_and_dependent_tasks_clearly() -> None:
    with Pool(1) as pool:
        future = pool.submit(np.ones, MiB)
        future.exception(WAIT)
        [pid] = pool.broadcast(os.getpid)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: pool.engines[0].state == "idle" and pool.broadcast(os.getpid) != [pid])
        with pytest.raises(EngineDied, match="kept on engine 0, which has died or restarted"):
            future.result(WAIT)
        dependent = pool.submit(np.sum, future)
        with pytest.raises(DependencyError, match=r"its input args\[0\] was kept on engine 0"):
            dependent.result(WAIT)
        assert pool.submit(abs, -1).result(WAIT) == 1


def _restart_engine(pool: Pool) -> None:
    [pid] = pool.broadcast(os.getpid)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: pool.engines[0].state == "idle" and pool.broadcast(os.getpid) != [pid])


def test_a_lost_value_is_made_again_by_its_task_while_it_has_retries() -> None:
    with Pool(1) as pool:
        base = pool.submit(np.arange, MiB, retries=1)
        doubled = pool.submit(np.multiply, base, 2, retries=1)
        doubled.exception(WAIT)
        lost_with = doubled.kept.uuid
        _restart_engine(pool)
        # both values are lost: doubled is made again, and base before it
        total = pool.submit(np.sum, doubled)
        assert total.result(WAIT) == 2 * (MiB * (MiB - 1) // 2)
        assert doubled.kept.uuid != lost_with
        assert doubled.result(WAIT)[-1] == 2 * (MiB - 1)
        _restart_engine(pool)
        # each used its one retry: lost again, it fails the task that needs it
        with pytest.raises(DependencyError, match=r"its input args\[0\] was kept on engine 0"):
            pool.submit(np.sum, doubled).result(WAIT)


def test_keep_over_none_brings_every_result_back() -> None:
    with Pool(1, keep_over=None) as pool:
        assert pool.keep_over is None
        future = pool.submit(np.ones, 4 * MiB)
        future.exception(WAIT)
        assert future.kept is None
    with pytest.raises(ValueError, match="keep_over must be 0 or more"):
        Pool(1, keep_over=-1)


def test_fetch_and_release_requests_say_what_is_wrong(kernel: Driver) -> None:
    reply = kernel.reply(
        kernel.send("fetch_request", {"key": "nothing"}, channel="control"), "control"
    )
    assert reply["content"]["ename"] == "KeyError"
    assert "no value is kept here under 'nothing'" in reply["content"]["evalue"]
    reply = kernel.reply(kernel.send("fetch_request", {"key": 3}, channel="control"), "control")
    assert reply["content"]["ename"] == "TypeError"
    reply = kernel.reply(
        kernel.send("release_request", {"keys": "a"}, channel="control"), "control"
    )
    assert reply["content"]["ename"] == "TypeError"
    reply = kernel.reply(
        kernel.send("release_request", {"keys": ["a"]}, channel="control"), "control"
    )
    assert reply["content"]["status"] == "ok"
    assert reply["content"]["released"] == []


def test_awaiting_a_kept_result_gives_its_value(pool: Pool) -> None:
    async def main() -> float:
        future = pool.submit(np.full, 4 * MiB, 5.0)
        value = await future
        assert future.kept is not None
        return float(value[0])

    assert asyncio.run(main()) == 5.0


def test_cancelling_the_await_cancels_a_queued_task(pool: Pool) -> None:
    async def main() -> bool:
        blockers = [pool.submit(time.sleep, 1) for _ in range(6)]
        queued = pool.submit(abs, -1)
        waiting = asyncio.ensure_future(asyncio.wait_for(queued, 0.1))
        with pytest.raises(asyncio.TimeoutError):
            await waiting
        await asyncio.gather(*blockers)
        return queued.cancelled()

    assert asyncio.run(main()) is True


def test_scatter_places_values_on_the_engines_and_tasks_use_them_there(pool: Pool) -> None:
    settled(pool, 0)
    before = [k["fetches"] for k in kept(pool)]
    parts = pool.scatter([np.full(10, float(i)) for i in range(4)])
    assert [f.result(WAIT)[0] for f in parts] == [0.0, 1.0, 2.0, 3.0]  # fetched here
    assert sorted({f.kept.engine_id for f in parts}) == [0, 1]  # spread over both
    after_gather = [k["fetches"] for k in kept(pool)]
    assert sum(after_gather) - sum(before) == 4
    sums = [pool.submit(np.sum, part) for part in parts]
    assert pool.gather(sums, timeout=WAIT) == [0.0, 10.0, 20.0, 30.0]
    assert [s.engine_id for s in sums] == [p.kept.engine_id for p in parts]  # ran where it was
    assert [k["fetches"] for k in kept(pool)] == after_gather  # nothing fetched to run them
    named = pool.scatter({"a": 1, "b": "two"})
    assert pool.gather(named) == {"a": 1, "b": "two"}
    one = pool.scatter(b"x" * 10)
    one.exception(WAIT)
    assert one.kept is not None  # kept, however small
    assert pool.gather(one) == b"x" * 10
    assert pool.scatter([]) == []
    del parts, sums, named, one
    settled(pool, 0)


def test_scatter_and_gather_refuse_what_they_cannot_take(pool: Pool) -> None:
    with pytest.raises(TypeError, match=r"scatter\(\) places values, not futures"):
        pool.scatter([pool.submit(abs, -1)])
    with pytest.raises(TypeError, match=r"gather\(\): item \[1\] is not a future"):
        pool.gather([pool.submit(abs, -1), 5])
    with pytest.raises(TypeError, match=r"gather\(\) takes a future"):
        pool.gather(5)
    with pytest.raises(SerializationError, match=r"scatter\(\): cannot serialize lock .*pickle"):
        pool.scatter([threading.Lock()])
