"""``broadcast``, ``push``, ``pull``, ``execute`` and ``clear``: their own ``timeout``."""

from __future__ import annotations

import functools
import time

import pytest
from conftest import TIMEOUT

from parallel_kernel import EngineTimeout, Pool


@pytest.fixture(scope="module")
def pool():
    with Pool(2) as pool:
        yield pool


def takes_timeout(timeout=None):
    return timeout


def nap_on_engine_one(seconds):
    from IPython import get_ipython

    if get_ipython().kernel.engine_id == 1:
        import time

        time.sleep(seconds)
    return "ok"


def busy(seconds):
    import time

    time.sleep(seconds)


def test_broadcast_keeps_timeout_for_itself(pool: Pool) -> None:
    assert pool.broadcast(takes_timeout, timeout=60) == [None, None]
    assert pool.broadcast(functools.partial(takes_timeout, timeout=5)) == [5, 5]


def test_broadcast_past_its_timeout_names_the_engines_and_the_pool_keeps_serving(
    pool: Pool,
) -> None:
    expected = r"broadcast: no answer from engine 1 within 0\.5 s"
    with pytest.raises(EngineTimeout, match=expected) as e:
        pool.broadcast(nap_on_engine_one, 3, timeout=0.5)
    assert isinstance(e.value, TimeoutError)
    assert e.value.engine_ids == [1]
    assert pool.broadcast(nap_on_engine_one, 0) == ["ok", "ok"]


@pytest.mark.parametrize(
    "call",
    [
        lambda p: p.push({"x": 1}, timeout=0.5),
        lambda p: p.pull("__name__", timeout=0.5),
        lambda p: p.execute("1", timeout=0.5),
        lambda p: p.clear(timeout=0.5),
    ],
    ids=["push", "pull", "execute", "clear"],
)
def test_every_all_engine_call_has_a_timeout(pool: Pool, call) -> None:
    blockers = [pool.submit(busy, 3, engine=e) for e in (0, 1)]
    deadline = time.monotonic() + TIMEOUT
    while not all(f.running() for f in blockers):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(EngineTimeout, match=r"no answer from engines 0, 1 within 0\.5 s") as e:
        call(pool)
    assert e.value.engine_ids == [0, 1]
    for blocker in blockers:
        blocker.result(TIMEOUT)
    pool.push({"after": 2}, timeout=TIMEOUT)
    assert pool.pull("after", timeout=TIMEOUT) == [2, 2]


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        (0, ValueError, "timeout must be positive"),
        (-1, ValueError, "timeout must be positive"),
        ("5", TypeError, "timeout must be a number of seconds"),
        (True, TypeError, "timeout must be a number of seconds"),
    ],
)
def test_a_bad_timeout_is_refused_and_nothing_runs(pool: Pool, bad, error, message) -> None:
    with pytest.raises(error, match=message):
        pool.broadcast(takes_timeout, timeout=bad)
    assert pool.futures() == []


def test_a_clear_that_waits_for_a_task_comes_before_the_calls_made_after_it(pool: Pool) -> None:
    blocker = pool.submit(busy, 2, engine=1)
    deadline = time.monotonic() + TIMEOUT
    while not blocker.running():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(EngineTimeout, match=r"clear: no answer from engine 1 within 0\.5 s"):
        pool.clear(timeout=0.5)
    pool.push({"after": 3}, timeout=TIMEOUT)
    assert pool.pull("after", timeout=TIMEOUT) == [3, 3]
    blocker.result(TIMEOUT)
