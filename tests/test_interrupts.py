"""Interrupts and cancels that meet an engine whose control thread cannot answer.

A task that calls C code holding the GIL (libc ``sleep`` through
``ctypes.PyDLL``, as mpi4py's pickle-based collectives do) keeps the engine's
control thread from reading anything until it returns.  An interrupt must hit
the task it was meant for or nothing, and neither ``interrupt()`` nor
``cancel()`` may wait for such an engine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

import pytest
from conftest import KERNEL_ARGS, TIMEOUT, Driver
from jupyter_client import KernelManager

from parallel_kernel import EngineTimeout, Pool, TaskInterrupted


def hold_the_gil(seconds: int) -> str:
    """Sleep in C without releasing the GIL."""
    import ctypes

    ctypes.PyDLL(None).sleep(seconds)
    return "a done"


def quick() -> str:
    return "b done"


def wait_holding(future) -> None:
    """Return once the engine has started ``future``'s task and is surely inside its C call.

    (What the task prints cannot tell: the kernel's IOPub thread needs the GIL too.)
    """
    deadline = time.monotonic() + TIMEOUT
    while not future.running():
        assert time.monotonic() < deadline, "the task did not start"
        time.sleep(0.01)
    time.sleep(0.5)


@pytest.fixture
def connected_kernel():
    manager = KernelManager(kernel_name="parallel")
    manager.start_kernel(extra_arguments=KERNEL_ARGS)
    try:
        yield manager
    finally:
        manager.shutdown_kernel(now=True)


def test_a_late_interrupt_of_a_connected_engine_never_hits_the_next_task(
    connected_kernel,
) -> None:
    with Pool.connect([connected_kernel.connection_file]) as pool:
        a = pool.submit(hold_the_gil, 6)
        b = pool.submit(quick)
        wait_holding(a)
        assert a.interrupt() is True  # sent, naming a
        assert not a.done()  # answered while the engine could not read anything
        # read once the C call returned: a, if it still runs then, or nothing
        with contextlib.suppress(TaskInterrupted):
            assert a.result(TIMEOUT) == "a done"
        assert b.result(TIMEOUT) == "b done"
        assert pool.submit(quick).result(TIMEOUT) == "b done"


def test_an_interrupt_of_an_owned_engine_hits_its_task_while_it_holds_the_gil() -> None:
    with Pool(1) as pool:
        a = pool.submit(hold_the_gil, 20)
        b = pool.submit(quick)
        wait_holding(a)
        assert a.interrupt() is True
        with pytest.raises(TaskInterrupted):
            a.result(TIMEOUT)
        assert b.result(TIMEOUT) == "b done"


def test_cancel_does_not_wait_for_an_engine_that_cannot_answer() -> None:
    with Pool(1) as pool:
        a = pool.submit(hold_the_gil, 6)
        b = pool.submit(quick)  # queued at the engine, behind a
        wait_holding(a)
        assert b.cancel() is False  # the engine could not say it had not started b
        assert not a.done()
        assert not b.cancelled()
        # cancel() said False, so b runs (even if the abort lands before it)
        assert b.result(TIMEOUT) == "b done"
        assert a.result(TIMEOUT) == "a done"


def test_a_cancel_that_lands_late_reruns_the_task(tmp_path) -> None:
    with Pool(1) as pool:
        pid = pool.submit(os.getpid).result(TIMEOUT)
        a = pool.submit(time.sleep, 2)
        b = pool.submit(quick)
        deadline = time.monotonic() + TIMEOUT
        while not a.running():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(pid, signal.SIGSTOP)
        try:
            assert b.cancel() is False
        finally:
            os.kill(pid, signal.SIGCONT)
        assert not b.cancelled()
        assert b.result(TIMEOUT) == "b done"
        assert a.result(TIMEOUT) is None


def test_interrupting_a_connected_engine_that_cannot_answer_says_so(connected_kernel) -> None:
    with Pool.connect([connected_kernel.connection_file]) as pool:
        a = pool.submit(hold_the_gil, 4)
        wait_holding(a)
        with pytest.raises(EngineTimeout, match="engine\\(s\\) 0 within") as caught:
            pool.interrupt()
        assert caught.value.engine_ids == [0]
        assert not a.done()


# -- the kernel's side: interrupt_request naming its target


def test_an_interrupt_request_naming_a_request_that_does_not_run_interrupts_nothing(
    kernel: Driver,
) -> None:
    busy = kernel.start_busy_task(3)
    reply = kernel.control("interrupt_request", {"msg_id": "not-running"})
    assert reply["content"] == {"status": "ok", "interrupted": False}
    assert kernel.reply(busy)["content"]["status"] == "ok"


def test_an_interrupt_request_naming_the_running_request_interrupts_it(kernel: Driver) -> None:
    busy = kernel.start_busy_task(30)
    reply = kernel.control("interrupt_request", {"msg_id": busy})
    assert reply["content"] == {"status": "ok", "interrupted": True}
    content = kernel.reply(busy)["content"]
    assert content["status"] == "error"
    assert content["ename"] == "KeyboardInterrupt"


def test_a_malformed_interrupt_target_gets_a_clear_error(kernel: Driver) -> None:
    reply = kernel.control("interrupt_request", {"msg_id": 7})
    assert reply["content"]["status"] == "error"
    assert "msg_id" in reply["content"]["evalue"]


def _sleeps_in_user_code() -> None:
    import time

    time.sleep(60)


def test_an_interrupted_tasks_traceback_ends_in_the_users_code() -> None:
    with Pool(1) as pool:
        task = pool.submit(_sleeps_in_user_code)
        deadline = time.monotonic() + TIMEOUT
        while not task.running():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        task.interrupt()
        with pytest.raises(TaskInterrupted) as caught:
            task.result(TIMEOUT)
    text = caught.value.render_traceback()
    assert "time.sleep(60)" in text
    assert "InterruptGate" not in text  # the kernel's SIGINT handler is not the user's code
