"""apply_request against a real kernel: results, namespace, output, metadata, errors."""

from __future__ import annotations

import asyncio
import functools
import sys
import threading
from datetime import datetime

import numpy as np
import pytest
from conftest import Driver

from parallel_kernel import UnmetDependency, serialize

CARRIED = "value from the client"
counter = 0


def _iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_result_and_reply_metadata(kernel: Driver) -> None:
    info = kernel.client.kernel_info(reply=True, timeout=10)["content"]
    reply = kernel.apply(lambda a, b=1: a * 10 + b, 4, b=2)
    assert reply["msg_type"] == "apply_reply"
    assert reply["content"]["status"] == "ok"
    assert reply["result"] == 42
    meta = reply["metadata"]
    assert meta["status"] == "ok"
    assert meta["engine"] == info["parallel"]["engine_uuid"]
    assert meta["engine_id"] == 3
    assert meta["dependencies_met"] is True
    assert _iso(meta["started"]) <= _iso(meta["completed"])
    assert _iso(meta["started"]).utcoffset().total_seconds() == 0
    for key in ("original_msg_id", "is_broadcast", "is_coalescing", "label"):
        assert key not in meta


def test_scheduler_metadata_is_echoed(kernel: Driver) -> None:
    sent = {"original_msg_id": "abc", "is_broadcast": True, "is_coalescing": False, "label": "L"}
    reply = kernel.apply(lambda: None, _metadata={**sent, "unrelated": 1})
    assert {k: reply["metadata"][k] for k in sent} == sent
    assert "unrelated" not in reply["metadata"]


def test_lambda_closure_and_partial(kernel: Driver) -> None:
    def make_adder(n):
        def add(x):
            return x + n

        return add

    assert kernel.call(make_adder(5), 1) == 6
    assert kernel.call(functools.partial(pow, 2), 10) == 1024
    assert kernel.call(lambda *a, **k: (a, k), 1, 2, z=3) == ((1, 2), {"z": 3})


def test_function_from_module_runs_by_reference(kernel: Driver) -> None:
    import math

    assert kernel.call(math.factorial, 5) == 120


def test_globals_are_the_engine_namespace(kernel: Driver) -> None:
    assert kernel.execute("engine_value = 41")["content"]["status"] == "ok"
    assert kernel.call(lambda: engine_value + 1) == 42  # noqa: F821

    def write():
        global written_by_task
        written_by_task = "yes"

    kernel.call(write)
    reply = kernel.execute("assert written_by_task == 'yes'")
    assert reply["content"]["status"] == "ok"


def test_engine_state_wins_over_values_carried_from_the_client(kernel: Driver) -> None:
    kernel.execute("CARRIED = 'engine value'; counter = 10")

    def read_and_increment():
        global counter
        counter += 1
        return CARRIED, counter

    # the client has counter == 0 and CARRIED == "value from the client"
    assert kernel.call(read_and_increment) == ("engine value", 11)
    assert kernel.call(lambda: counter) == 11


def test_names_the_engine_lacks_are_carried_for_the_call_only(kernel: Driver) -> None:
    kernel.call(lambda: globals().pop("CARRIED", None))

    def read():
        return CARRIED, sorted(["b", "a"], key=lambda s: CARRIED and s)

    assert kernel.call(read) == ("value from the client", ["a", "b"])
    assert kernel.call(lambda: "CARRIED" in globals()) is False

    def assign():
        global CARRIED
        CARRIED = CARRIED + " then assigned"

    kernel.call(assign)
    assert kernel.call(lambda: globals()["CARRIED"]) == "value from the client then assigned"


def test_decorated_functions_methods_and_callables_see_the_engine(kernel: Driver) -> None:
    kernel.execute("engine_name = 'from engine'")

    def logged(f):
        @functools.wraps(f)
        def wrapper(*args):
            return f(*args)

        return wrapper

    @logged
    def decorated():
        return engine_name  # noqa: F821

    class Task:
        factor = 2

        def __call__(self):
            return engine_name  # noqa: F821

        def method(self):
            return engine_name  # noqa: F821

        @staticmethod
        def static():
            return engine_name  # noqa: F821

    assert kernel.call(decorated) == "from engine"
    assert kernel.call(Task()) == "from engine"
    assert kernel.call(Task().method) == "from engine"
    assert kernel.call(Task.static) == "from engine"
    assert kernel.call(functools.partial(decorated)) == "from engine"


def test_annotations_survive(kernel: Driver) -> None:
    def annotated(x: int) -> str:
        return annotated.__annotations__

    assert kernel.call(annotated, 1) == {"x": "int", "return": "str"}  # postponed annotations


def test_async_function_is_awaited(kernel: Driver) -> None:
    async def slow_double(x):
        await asyncio.sleep(0.01)
        return 2 * x

    assert kernel.call(slow_double, 21) == 42


def test_output_is_parented_to_the_request(kernel: Driver) -> None:
    def noisy():
        from IPython.display import HTML, display

        print("to stdout")
        print("to stderr", file=sys.stderr)
        display(HTML("<b>rich</b>"))
        return "done"

    msg_id = kernel.send_apply(noisy)
    assert kernel.reply(msg_id)["content"]["status"] == "ok"
    messages = kernel.iopub(msg_id)
    kinds = [m["msg_type"] for m in messages]
    assert kinds[0] == "status"
    assert messages[0]["content"]["execution_state"] == "busy"
    assert kinds[-1] == "status"
    assert messages[-1]["content"]["execution_state"] == "idle"
    streams = {
        m["content"]["name"]: m["content"]["text"] for m in messages if m["msg_type"] == "stream"
    }
    assert streams == {"stdout": "to stdout\n", "stderr": "to stderr\n"}
    [display] = [m for m in messages if m["msg_type"] == "display_data"]
    assert display["content"]["data"]["text/html"] == "<b>rich</b>"
    assert "execute_input" not in kinds


def test_a_matplotlib_figure_shown_by_a_task_is_an_inline_image_of_that_request(
    kernel: Driver,
) -> None:
    def plot():
        import matplotlib.pyplot as plt

        plt.plot([1, 4, 9])
        plt.show()
        return "plotted"

    reply = kernel.apply(plot)
    assert reply["result"] == "plotted"
    msg_id = reply["parent_header"]["msg_id"]
    [figure] = [m for m in kernel.iopub(msg_id) if m["msg_type"] == "display_data"]
    assert figure["parent_header"]["msg_id"] == msg_id
    assert figure["content"]["data"]["image/png"]
    assert figure["content"]["data"]["text/plain"].startswith("<Figure size")


def test_a_widget_created_by_a_task_reaches_the_client_that_asked_and_stays_live(
    kernel: Driver,
) -> None:
    def make_slider():
        import ipywidgets
        from IPython.display import display

        global slider
        slider = ipywidgets.IntSlider(value=3)
        display(slider)
        return slider.model_id

    reply = kernel.apply(make_slider)
    model_id = reply["result"]
    msg_id = reply["parent_header"]["msg_id"]
    messages = kernel.iopub(msg_id)
    assert all(m["parent_header"]["msg_id"] == msg_id for m in messages)
    opened = {
        m["content"]["comm_id"]: m["content"] for m in messages if m["msg_type"] == "comm_open"
    }
    assert opened[model_id]["target_name"] == "jupyter.widget"
    assert opened[model_id]["data"]["state"]["value"] == 3
    [view] = [m for m in messages if m["msg_type"] == "display_data"]
    assert (
        view["content"]["data"]["application/vnd.jupyter.widget-view+json"]["model_id"] == model_id
    )

    # the frontend moves the slider: the engine's widget follows
    update = {"method": "update", "state": {"value": 9}, "buffer_paths": []}
    kernel.send("comm_msg", {"comm_id": model_id, "data": update})
    assert kernel.call(lambda: slider.value) == 9


def test_numpy_arrays_travel_out_of_band_without_copies(kernel: Driver) -> None:
    big = np.arange(1_000_000, dtype=np.float64)

    def inspect_arg(a):
        return {
            "owndata": a.flags.owndata,
            "writeable": a.flags.writeable,
            "base": type(a.base).__name__,
            "sum": float(a.sum()),
            "double": a * 2,
        }

    msg_id = kernel.send_apply(inspect_arg, big)
    reply = kernel.reply(msg_id)
    # the array argument travelled as its own frame after the two pickles
    assert reply["content"]["status"] == "ok"
    out = serialize.unpack_result(reply["content"], reply["buffers"])
    assert out["owndata"] is False  # rebuilt on the received frame, not copied
    assert out["writeable"] is True
    assert out["sum"] == float(big.sum())
    assert len(reply["buffers"]) == 2  # result pickle + the doubled array
    np.testing.assert_array_equal(out["double"], big * 2)


def test_large_result(kernel: Driver) -> None:
    """A result of several hundred MB comes back intact."""
    size = 400 * 2**20

    def make():
        a = np.ones(size, dtype=np.uint8)
        a[-1] = 7
        return a

    result = kernel.call(make)
    assert result.nbytes == size
    assert result[-1] == 7
    assert result[0] == 1


def test_error_reply_and_iopub_error(kernel: Driver) -> None:
    def inner(x):
        return 1 / x

    def user_function():
        return inner(0)

    msg_id = kernel.send_apply(user_function)
    reply = kernel.reply(msg_id)
    content = reply["content"]
    assert content["status"] == "error"
    assert content["ename"] == "ZeroDivisionError"
    assert content["evalue"] == "division by zero"
    assert content["engine_info"]["engine_id"] == 3
    assert content["engine_info"]["method"] == "apply"
    assert content["engine_info"]["engine_uuid"] == reply["metadata"]["engine"]
    text = "\n".join(content["traceback"])
    assert "user_function" in text
    assert "inner" in text
    assert "parallel_kernel" not in text
    assert "ipykernel" not in text
    # the first frame shown is the user's function
    frames = [line for line in content["traceback"] if "in " in line and "File" in line]
    assert "user_function" in frames[0]
    assert reply["metadata"]["status"] == "error"
    assert reply["metadata"]["dependencies_met"] is True
    [error] = [m for m in kernel.iopub(msg_id) if m["msg_type"] == "error"]
    assert error["content"]["ename"] == "ZeroDivisionError"
    assert error["content"]["traceback"] == content["traceback"]


def test_unmet_dependency(kernel: Driver) -> None:
    def not_here():
        raise UnmetDependency("needs a GPU")

    reply = kernel.apply(not_here)
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "UnmetDependency"
    assert reply["metadata"]["dependencies_met"] is False


def test_system_exit_is_an_error_not_a_dead_kernel(kernel: Driver) -> None:
    reply = kernel.apply(sys.exit, 3)
    assert reply["content"]["ename"] == "SystemExit"
    assert kernel.call(lambda: "alive") == "alive"


def test_apply_error_does_not_abort_queued_requests(kernel: Driver) -> None:
    first = kernel.send_apply(lambda: 1 / 0)
    second = kernel.send_apply(lambda: "ran")
    third = kernel.client.execute("after = 'ran'")
    assert kernel.reply(first)["content"]["status"] == "error"
    assert kernel.reply(second)["content"]["status"] == "ok"
    assert kernel.reply(third)["content"]["status"] == "ok"


def test_execute_keeps_stop_on_error(kernel: Driver) -> None:
    """An execute error aborts the executes queued behind it, not the applies.

    The failing cell waits a moment first, so that the requests sent after it
    are queued in the kernel when it fails (ipykernel aborts what is queued
    then; a request still on its way on a loaded machine is not "behind" it).
    """
    failing = kernel.client.execute("import time; time.sleep(1); raise RuntimeError('cell fails')")
    apply_id = kernel.send_apply(lambda: "apply ran")
    queued = kernel.client.execute("should_not_run = True")
    assert kernel.reply(failing)["content"]["status"] == "error"
    assert kernel.reply(apply_id)["content"]["status"] == "ok"
    assert kernel.reply(queued)["content"]["status"] == "aborted"
    assert kernel.call(lambda: "should_not_run" in globals()) is False


def test_interrupt_stops_a_running_task(kernel: Driver) -> None:
    msg_id = kernel.start_busy_task(30)
    kernel.manager.interrupt_kernel()
    reply = kernel.reply(msg_id, timeout=10)
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    assert kernel.call(lambda: "next task runs") == "next task runs"


def test_apply_in_a_subshell_runs_beside_the_main_shell(kernel: Driver) -> None:
    subshell = kernel.control("create_subshell_request")["content"]["subshell_id"]
    try:
        busy = kernel.start_busy_task(60)
        quick = kernel.send_apply(
            lambda: threading.current_thread().name, _header={"subshell_id": subshell}
        )
        reply = kernel.reply(quick)  # while the main shell is still busy
        name = serialize.unpack_result(reply["content"], reply["buffers"])
        assert name.startswith("subshell")
        kernel.manager.interrupt_kernel()
        assert kernel.reply(busy)["content"]["ename"] == "KeyboardInterrupt"
    finally:
        kernel.control("delete_subshell_request", {"subshell_id": subshell})


@pytest.mark.kernel_args(["--ParallelKernel.engine_id=7"])
def test_engine_id_is_configurable(fresh_kernel: Driver) -> None:
    info = fresh_kernel.client.kernel_info(reply=True, timeout=10)["content"]
    assert "parallel" in info["supported_features"]
    assert info["parallel"]["engine_id"] == 7
    assert info["parallel"]["format"] == "parallel_kernel"
    assert fresh_kernel.apply(lambda: None)["metadata"]["engine_id"] == 7


def test_a_result_being_sent_is_not_modified_by_the_next_task(kernel: Driver) -> None:
    """The reply's buffers are views of the result; the next task waits until they are sent."""
    kernel.execute("import numpy as np; shared = np.ones(200 * 2**20, dtype=np.uint8)")
    first = kernel.send_apply(lambda: shared)  # noqa: F821
    second = kernel.send_apply(lambda: shared.fill(7))  # noqa: F821
    reply = kernel.reply(first, timeout=60)
    result = serialize.unpack_result(reply["content"], reply["buffers"])
    assert kernel.reply(second)["content"]["status"] == "ok"
    assert int(np.count_nonzero(result != 1)) == 0
    kernel.execute("del shared")


def test_interrupt_stops_an_async_task_and_the_kernel_survives(kernel: Driver) -> None:
    async def slow():
        print("busy task started", flush=True)
        await asyncio.sleep(30)

    msg_id = kernel.send_apply(slow)
    kernel.wait_for_output(msg_id, "busy task started")
    kernel.manager.interrupt_kernel()
    reply = kernel.reply(msg_id, timeout=10)
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    assert "interrupted while awaiting" in reply["content"]["evalue"]
    assert kernel.manager.is_alive()
    assert kernel.call(lambda: "next task runs") == "next task runs"


def test_async_task_errors_start_at_the_user_coroutine(kernel: Driver) -> None:
    async def failing_coroutine():
        await asyncio.sleep(0)
        raise LookupError("inside the coroutine")

    reply = kernel.apply(failing_coroutine)
    assert reply["content"]["ename"] == "LookupError"
    text = "\n".join(reply["content"]["traceback"])
    assert "failing_coroutine" in text
    assert "parallel_kernel" not in text


def test_exception_groups_are_reported_on_iopub(kernel: Driver) -> None:
    def several_failures():
        raise ExceptionGroup("two things", [ValueError("one"), KeyError("two")])

    msg_id = kernel.send_apply(several_failures)
    content = kernel.reply(msg_id)["content"]
    assert content["ename"] == "ExceptionGroup"
    text = "".join(content["traceback"])
    assert "ValueError: one" in text
    assert "several_failures" in text
    messages = kernel.iopub(msg_id)
    [error] = [m for m in messages if m["msg_type"] == "error"]
    assert error["content"]["traceback"] == content["traceback"]
    assert not [m for m in messages if m["msg_type"] == "stream"]


@pytest.mark.kernel_args(["--ParallelKernel.engine_id=3"])
def test_errors_name_the_engine_that_raised_them(fresh_kernel: Driver) -> None:
    executed = fresh_kernel.execute("1 / 0")["content"]
    applied = fresh_kernel.apply(lambda: 1 / 0)["content"]
    for content, method in ((executed, "execute"), (applied, "apply")):
        assert content["ename"] == "ZeroDivisionError"
        assert content["engine_info"]["engine_id"] == 3
        assert content["engine_info"]["method"] == method
