"""A task's arguments may be other tasks' futures: the task waits for them and gets their values."""

from __future__ import annotations

import concurrent.futures
import gc
import os
import time
import weakref
from collections.abc import Iterator

import numpy as np
import pytest
from conftest import wait_until

from parallel_kernel import DependencyError, Pool
from parallel_kernel.serialize import SerializationError

pytestmark = pytest.mark.timeout(120)

WAIT = 60


@pytest.fixture(scope="module")
def pool() -> Iterator[Pool]:
    with Pool(2) as pool:
        yield pool


def slow(value, seconds=0.5):
    time.sleep(seconds)
    return value


def fails(message):
    raise ValueError(message)


def describe(*args, **kwargs):
    return repr(args), repr(sorted(kwargs.items()))


def test_a_future_as_an_argument_is_its_value(pool: Pool) -> None:
    first = pool.submit(slow, 20)
    second = pool.submit(lambda x, y: x + y, first, 1)
    assert second.result(WAIT) == 21
    assert first.done()  # the second waited for the first


def test_futures_inside_lists_tuples_and_dicts_of_the_arguments(pool: Pool) -> None:
    a, b, c = (pool.submit(abs, -n) for n in (1, 2, 3))
    result = pool.submit(describe, [a, "x", b], (c,), key={"k": a, "other": 5}, direct=b)
    assert result.result(WAIT) == (
        "([1, 'x', 2], (3,))",
        "[('direct', 2), ('key', {'k': 1, 'other': 5})]",
    )


def test_a_chain_of_tasks_passes_arrays_along(pool: Pool) -> None:
    value = pool.submit(np.arange, 1_000_000, dtype=np.float64)
    for _ in range(5):
        value = pool.submit(lambda a: a + 1, value)
    assert value.result(WAIT)[-1] == 999_999 + 5


def test_a_failed_input_fails_the_task_naming_the_input(pool: Pool) -> None:
    bad = pool.submit(fails, "no such file")
    dependent = pool.submit(describe, 1, [2, bad])
    with pytest.raises(DependencyError) as caught:
        dependent.result(WAIT)
    message = str(caught.value)
    assert "its input args[1][1] failed: ValueError: no such file" in message
    assert isinstance(caught.value.__cause__, ValueError)
    assert pool.submit(abs, -4).result(WAIT) == 4  # the pool serves on


def test_a_cancelled_input_fails_the_task(pool: Pool) -> None:
    blockers = [pool.submit(slow, None, 2) for _ in range(6)]
    queued = pool.submit(abs, -1)
    assert queued.cancel()
    dependent = pool.submit(abs, queued)
    with pytest.raises(DependencyError, match=r"its input args\[0\] was cancelled"):
        dependent.result(WAIT)
    concurrent.futures.wait(blockers, WAIT)


def test_map_takes_futures_as_items(pool: Pool) -> None:
    squares = [pool.submit(lambda n: n * n, n) for n in range(10)]
    assert list(pool.map(lambda x, y: x + y, squares, range(10), timeout=WAIT)) == [
        n * n + n for n in range(10)
    ]


def test_a_future_of_another_pool_is_refused_at_submit(pool: Pool) -> None:
    with Pool(1) as other:
        theirs = other.submit(abs, -1)
        theirs.result(WAIT)
        with pytest.raises(TypeError, match=r"args\[0\] is a future of another pool"):
            pool.submit(abs, theirs)
    with (
        concurrent.futures.ThreadPoolExecutor(1) as executor,
        pytest.raises(TypeError, match=r"kwargs\['x'\] is a future of another pool"),
    ):
        pool.submit(describe, x=executor.submit(abs, -1))


def test_an_input_that_cannot_be_pickled_fails_the_task_saying_which(pool: Pool) -> None:
    producer = pool.submit(lambda: Unsendable())
    value = producer.result(WAIT)
    assert isinstance(value, Unsendable)
    dependent = pool.submit(repr, producer)
    with pytest.raises(SerializationError, match="input 0: cannot serialize"):
        dependent.result(WAIT)


CLIENT = os.getpid()


class Unsendable:
    """Comes back from an engine, but refuses to be pickled again here."""

    def __reduce__(self):
        if os.getpid() == CLIENT:
            raise TypeError("refuses to leave the client")
        return Unsendable, ()


def test_an_input_is_let_go_without_waiting_for_the_cycle_collector(pool: Pool) -> None:
    """Nothing of the pool's keeps a future that was an argument in a reference cycle:
    with the cyclic collector off, the future (and a value it keeps on an engine)
    goes as soon as the caller and the task that took it are done with it."""
    gc.collect()
    gc.disable()
    try:
        first = pool.submit(lambda: 1)
        second = pool.submit(lambda x: x + 1, first)
        assert second.result(60) == 2
        gone = weakref.ref(first)
        del first
        wait_until(lambda: gone() is None, timeout=10)
    finally:
        gc.enable()
