"""clear_request on shell and control, with start-up code from exec_lines and exec_files."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import Driver

STARTUP_FILE = Path(__file__).with_name("startup_file.py")

STARTUP = [
    "--ParallelKernel.exec_lines=['from_lines = 42', 'import math']",
    f"--ParallelKernel.exec_files=['{STARTUP_FILE}']",
]


def names(kernel: Driver, *wanted: str) -> dict:
    return kernel.call(lambda w: {n: globals().get(n, "<missing>") for n in w}, wanted)


@pytest.mark.kernel_args(STARTUP)
def test_startup_code_runs_at_start_and_after_clear_on_shell(fresh_kernel: Driver) -> None:
    k = fresh_kernel
    assert names(k, "from_lines", "from_file") == {"from_lines": 42, "from_file": "file ran"}
    assert k.call(lambda: math.pi) == pytest.approx(3.14159, abs=1e-5)  # noqa: F821
    k.execute("from_lines = 0; user_var = 'mine'")
    reply = k.reply(k.send("clear_request"))
    assert reply["msg_type"] == "clear_reply"
    assert reply["content"] == {"status": "ok"}
    assert names(k, "from_lines", "from_file", "user_var") == {
        "from_lines": 42,
        "from_file": "file ran",
        "user_var": "<missing>",
    }


def test_clear_on_shell_runs_in_queue_order(kernel: Driver) -> None:
    kernel.execute("before = 1")
    setter = kernel.client.execute("queued = 1")
    clear = kernel.send("clear_request")
    reader = kernel.send_apply(lambda: ("before" in globals(), "queued" in globals()))
    assert kernel.reply(setter)["content"]["status"] == "ok"
    assert kernel.reply(clear)["content"]["status"] == "ok"
    reply = kernel.reply(reader)
    assert reply["content"]["status"] == "ok"
    from parallel_kernel import serialize

    assert serialize.unpack_result(reply["content"], reply["buffers"]) == (False, False)


def set_then_read_after_a_sleep(name):
    """Set a global, sleep, read it back: a KeyError if a clear ran in the middle."""
    globals()[name] = "set"
    print("busy task started", flush=True)
    time.sleep(3)
    return globals()[name]


def clear_on_control_while_running(kernel: Driver, name: str, header=None) -> tuple[str, str]:
    """Start the task above (optionally in a subshell), then send a clear on control."""
    task = kernel.send_apply(set_then_read_after_a_sleep, name, _header=header)
    kernel.wait_for_output(task, "busy task started")
    return task, kernel.send("clear_request", channel="control")


def assert_cleared_after_the_task(kernel: Driver, task: str, clear: str, name: str) -> None:
    task_reply = kernel.reply(task)
    assert task_reply["content"]["status"] == "ok", task_reply["content"]
    clear_reply = kernel.reply(clear, channel="control")
    assert clear_reply["content"] == {"status": "ok"}
    assert clear_reply["header"]["date"] >= task_reply["header"]["date"]
    assert kernel.call(lambda n: n in globals(), name) is False


def test_clear_on_control_waits_for_the_running_task(kernel: Driver) -> None:
    task, clear = clear_on_control_while_running(kernel, "marker")
    # control keeps serving while the clear waits for the task
    assert kernel.control("abort_request", {"msg_ids": ["nothing"]})["content"]["status"] == "ok"
    assert not kernel.client.shell_channel.msg_ready()  # the task is still running
    assert_cleared_after_the_task(kernel, task, clear, "marker")


@pytest.mark.kernel_args(["--ParallelKernel.exec_lines=['ok_line = 1', '1/0', 'after_bad = 2']"])
def test_failing_startup_line_is_reported_and_the_rest_still_runs(fresh_kernel: Driver) -> None:
    k = fresh_kernel
    assert names(k, "ok_line", "after_bad") == {"ok_line": 1, "after_bad": 2}
    reply = k.reply(k.send("clear_request"))
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "StartupError"
    assert "1/0" in reply["content"]["evalue"]
    assert names(k, "ok_line", "after_bad") == {"ok_line": 1, "after_bad": 2}
    assert k.call(lambda: "serving") == "serving"


def test_clear_in_a_subshell_is_refused(kernel: Driver) -> None:
    subshell = kernel.control("create_subshell_request")["content"]["subshell_id"]
    try:
        kernel.execute("kept = 1")
        reply = kernel.reply(kernel.send("clear_request", header={"subshell_id": subshell}))
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "SubshellError"
        assert kernel.call(lambda: kept) == 1  # noqa: F821
    finally:
        kernel.control("delete_subshell_request", {"subshell_id": subshell})


def test_clear_waits_for_code_running_in_a_subshell(kernel: Driver) -> None:
    subshell = kernel.control("create_subshell_request")["content"]["subshell_id"]
    try:
        header = {"subshell_id": subshell}
        task, clear = clear_on_control_while_running(kernel, "in_subshell", header)
        assert_cleared_after_the_task(kernel, task, clear, "in_subshell")
    finally:
        kernel.control("delete_subshell_request", {"subshell_id": subshell})
