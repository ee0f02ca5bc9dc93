"""Live stacks of running tasks, read on their engines without stopping them."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from conftest import channel_options, cli, wait_until

from parallel_kernel import Pool

pytestmark = pytest.mark.timeout(120)

WAIT = 60


def waits_in_c(seconds: float) -> str:
    time.sleep(seconds)  # the line a stack must show
    return "slept"


def calls_a_helper(seconds: float) -> str:
    return waits_in_c(seconds)


def multiplies(seconds: float) -> int:
    import time

    import numpy

    a = numpy.ones((800, 800))
    deadline = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < deadline:
        a = numpy.dot(a, a) / 800  # a numpy call, in C most of the time
        rounds += 1
    return rounds


async def awaits(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "awaited"


def running(future) -> bool:
    return future.running()


@pytest.fixture(scope="module")
def pool():
    with Pool(2) as pool:
        yield pool


def user_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("File")]


@pytest.mark.parametrize("channel", ["task", "shell"])
def test_a_running_task_shows_its_own_frames_innermost_last(pool: Pool, channel: str) -> None:
    options = channel_options(channel)
    future = pool.submit(calls_a_helper, 4, **options)
    wait_until(lambda: running(future))
    text = future.stack()
    frames = user_lines(text)
    assert "most recent call last" in text
    assert [line.rsplit(" in ", 1)[1] for line in frames] == ["calls_a_helper", "waits_in_c"]
    assert "time.sleep(seconds)  # the line a stack must show" in text
    assert "parallel_kernel" not in text
    assert "ipykernel" not in text
    assert future.result(WAIT) == "slept"


def test_taking_stacks_neither_stops_nor_interrupts_the_task(pool: Pool) -> None:
    future = pool.submit(multiplies, 4)
    wait_until(lambda: running(future))
    seen = [future.stack() for _ in range(20)]
    wait_until(lambda: "numpy.dot(a, a)" in seen[-1] or seen.append(future.stack()))
    assert all("multiplies" in text for text in seen)
    assert future.result(WAIT) > 0  # it ran to its end, not interrupted


def test_a_task_awaiting_a_coroutine_shows_the_coroutines(pool: Pool) -> None:
    future = pool.submit(awaits, 3)
    wait_until(lambda: running(future))
    wait_until(lambda: "awaits" in future.stack())
    text = future.stack()
    assert "awaiting" in text
    assert "await asyncio.sleep(seconds)" in text
    assert future.result(WAIT) == "awaited"


def test_a_task_that_does_not_run_says_where_it_is() -> None:
    with Pool(1, hwm=1) as pool:
        first = pool.submit(waits_in_c, 3)
        queued = pool.submit(abs, -1)
        wait_until(lambda: running(first))
        with pytest.raises(RuntimeError, match="not running"):
            queued.stack()
        assert first.result(WAIT) == "slept"
        assert queued.result(WAIT) == 1
        with pytest.raises(RuntimeError, match=r"not running \(it is finished\)"):
            first.stack()


def test_pool_stacks_has_one_per_engine_and_idle_engines_say_so(pool: Pool) -> None:
    wait_until(lambda: all(e.outstanding == 0 for e in pool.engines))
    busy = pool.submit(waits_in_c, 4, engine=1)
    wait_until(lambda: running(busy))
    idle, working = pool.stacks()
    assert idle == "engine 0: idle\n"
    assert working.startswith("engine 1: request ")
    assert "waits_in_c" in working
    assert "time.sleep" in working
    busy.result(WAIT)


def test_the_stacks_command_reads_an_engine_from_its_connection_file(pool: Pool) -> None:
    wait_until(lambda: all(e.outstanding == 0 for e in pool.engines))
    files = [e.connection_file for e in pool.engines]
    busy = pool.submit(calls_a_helper, 5, engine=0)
    wait_until(lambda: running(busy))
    result = cli("stacks", *files)
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.split("\n\n")
    assert first.startswith(files[0])
    assert "engine 0: request" in first
    assert "waits_in_c" in first
    assert second.strip().endswith("engine 1: idle")
    busy.result(WAIT)


def test_the_stacks_command_names_a_missing_file() -> None:
    result = cli("stacks", "kernel-no-such.json")
    assert result.returncode == 1
    assert "kernel-no-such.json" in result.stderr


def test_a_cell_running_on_an_engine_shows_its_frames(pool: Pool) -> None:
    done = threading.Event()

    def run_cell() -> None:
        pool.execute("import time\ndef napping():\n    time.sleep(3)\nnapping()")
        done.set()

    threading.Thread(target=run_cell, daemon=True).start()
    wait_until(lambda: any("napping" in text for text in pool.stacks()))
    text = next(text for text in pool.stacks() if "napping" in text)
    assert "time.sleep(3)" in text
    assert "site-packages" not in text  # IPython's and ipykernel's frames are left out
    assert done.wait(WAIT)
