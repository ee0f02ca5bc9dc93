"""The kernel as Jupyter tools use it: nbclient, jupyter execute/console/run, lifecycle."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from conftest import EXAMPLES, Driver, outputs_of
from jupyter_client import BlockingKernelClient
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from parallel_kernel import serialize

JUPYTER = [sys.executable, "-m", "jupyter"]


def test_nbclient_widgets_and_errors(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata.kernelspec = {"name": "parallel", "display_name": "x", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("import ipywidgets as w\nslider = w.IntSlider(value=7)\nslider"),
        nbformat.v4.new_code_cell("slider.value * 6"),
        nbformat.v4.new_code_cell("1/0"),
    ]
    client = NotebookClient(nb, timeout=60, allow_errors=True)
    client.execute()
    widget_output = nb.cells[0].outputs[0]
    model_id = widget_output.data["application/vnd.jupyter.widget-view+json"]["model_id"]
    state = nb.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]
    assert state[model_id]["state"]["value"] == 7
    assert outputs_of(nb.cells[1]) == "42"
    assert nb.cells[2].outputs[0].ename == "ZeroDivisionError"


def test_jupyter_execute_command(tmp_path: Path) -> None:
    notebook = tmp_path / "nb.ipynb"
    shutil.copy(EXAMPLES / "getting-started.ipynb", notebook)
    subprocess.run(
        [*JUPYTER, "execute", "--kernel_name=parallel", "--inplace", str(notebook)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    nb = nbformat.read(notebook, as_version=4)
    assert outputs_of([c for c in nb.cells if c.cell_type == "code"][1]) == "285"


def test_jupyter_console() -> None:
    """A person at ``jupyter console --kernel parallel``, through a pseudo-terminal."""
    import pexpect

    console = pexpect.spawn(
        sys.executable,
        ["-m", "jupyter", "console", "--kernel", "parallel", "--simple-prompt"],
        encoding="utf-8",
        timeout=60,
    )
    try:
        console.expect(r"In \[1\]: ")
        # jupyter_console shows its prompt once the shell channel answers, without
        # waiting for its IOPub subscription; a line typed within the next ~100 ms can
        # lose its output with any kernel.  A person never types that fast.
        time.sleep(0.5)
        console.sendline("print(6 * 7)")
        console.expect("42")
        console.expect(r"In \[2\]: ")
        console.sendline("type(get_ipython().kernel).__name__")
        console.expect(r"Out\[2\]: 'ParallelKernel'")
        console.expect(r"In \[3\]: ")
        console.sendline("exit")
        console.expect(pexpect.EOF)
    finally:
        console.terminate(force=True)


def test_jupyter_run(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text("import sys\nprint('ran in', type(get_ipython().kernel).__name__)\n")
    result = subprocess.run(
        [*JUPYTER, "run", "--kernel", "parallel", str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "ran in ParallelKernel" in result.stdout


def test_interrupt_a_cell(kernel: Driver) -> None:
    msg_id = kernel.client.execute("print('cell started', flush=True); import time; time.sleep(30)")
    kernel.wait_for_output(msg_id, "cell started")
    kernel.manager.interrupt_kernel()
    reply = kernel.reply(msg_id, timeout=10)
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    # after an error ipykernel aborts the requests that reach it before it stops
    # aborting (stop_on_error): on a busy machine the next one may be among them
    status = kernel.execute("1")["content"]["status"]
    if status == "aborted":
        status = kernel.execute("1")["content"]["status"]
    assert status == "ok"


def test_interrupt_request_in_message_mode(kernel: Driver) -> None:
    msg_id = kernel.start_busy_task(30)
    assert kernel.control("interrupt_request")["content"]["status"] == "ok"
    assert kernel.reply(msg_id, timeout=10)["content"]["ename"] == "KeyboardInterrupt"


def test_kernel_info_is_answered_while_the_main_shell_is_busy(kernel: Driver) -> None:
    """A frontend connecting to a busy kernel (JupyterLab's subshell console does, and
    waits for this reply before creating its subshell) is not kept waiting for the cell."""
    msg_id = kernel.start_busy_task(30)
    client = BlockingKernelClient()  # a second frontend, with a session of its own
    client.load_connection_file(kernel.manager.connection_file)
    client.start_channels()
    try:
        started = time.monotonic()
        reply = client.kernel_info(reply=True, timeout=10)
        assert reply["content"]["status"] == "ok"
        assert "kernel subshells" in reply["content"]["supported_features"]
        assert time.monotonic() - started < 10
        statuses = []
        while "idle" not in statuses:
            msg = client.get_iopub_msg(timeout=10)
            if msg["parent_header"].get("msg_id") == reply["parent_header"]["msg_id"]:
                statuses.append(msg["content"]["execution_state"])
        assert statuses == ["busy", "idle"]
    finally:
        client.stop_channels()
    # the client that is waiting for the busy request gets its replies in order
    info_id = kernel.send("kernel_info_request")
    assert kernel.no_reply(wait=1.0) == []
    kernel.control("interrupt_request")
    first = kernel.client.get_shell_msg(timeout=10)
    assert first["parent_header"]["msg_id"] == msg_id
    assert first["content"]["ename"] == "KeyboardInterrupt"
    assert kernel.reply(info_id)["content"]["status"] == "ok"


def test_restart_gives_a_fresh_engine(fresh_kernel: Driver) -> None:
    fresh_kernel.execute("before_restart = 1")
    old_uuid = fresh_kernel.apply(lambda: None)["metadata"]["engine"]
    fresh_kernel.manager.restart_kernel(now=False)
    fresh_kernel.client.wait_for_ready(timeout=60)
    fresh_kernel.flush()
    reply = fresh_kernel.apply(lambda: "before_restart" in globals())
    assert reply["result"] is False
    assert reply["metadata"]["engine"] != old_uuid


def test_shutdown_request() -> None:
    manager = KernelManager(kernel_name="parallel")
    manager.start_kernel()
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        client.shutdown()
        reply = client.get_control_msg(timeout=10)
        assert reply["msg_type"] == "shutdown_reply"
        assert reply["content"]["status"] == "ok"
        deadline = time.monotonic() + 15
        while manager.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not manager.is_alive()
    finally:
        client.stop_channels()
        manager.cleanup_resources()


def test_debugger_stops_at_a_breakpoint(fresh_kernel: Driver) -> None:
    """The Debug Adapter Protocol flow a frontend's debugger panel runs."""
    kernel = fresh_kernel
    sequence = iter(range(1, 1000))

    def debug(command: str, arguments: dict | None = None) -> dict:
        request = {"type": "request", "seq": next(sequence), "command": command}
        content = kernel.control("debug_request", {**request, "arguments": arguments or {}})
        assert content["content"]["success"] is True, content["content"]
        return content["content"]

    info = kernel.client.kernel_info(reply=True, timeout=10)["content"]
    assert "debugger" in info["supported_features"]
    debug("initialize", {"clientID": "test", "adapterID": "python", "pathFormat": "path"})
    debug("attach")
    code = "def f(x):\n    y = x + 1\n    return y\n"
    path = debug("dumpCell", {"code": code})["body"]["sourcePath"]
    breakpoints = debug("setBreakpoints", {"source": {"path": path}, "breakpoints": [{"line": 2}]})[
        "body"
    ]["breakpoints"]
    assert breakpoints[0]["verified"] is True
    debug("configurationDone")
    assert kernel.execute(code)["content"]["status"] == "ok"
    msg_id = kernel.client.execute("f(41)")
    deadline = time.monotonic() + 30
    thread_id = None
    while thread_id is None:
        event = kernel.client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if event["msg_type"] == "debug_event" and event["content"]["event"] == "stopped":
            thread_id = event["content"]["body"]["threadId"]
    frame = debug("stackTrace", {"threadId": thread_id})["body"]["stackFrames"][0]
    assert (frame["source"]["path"], frame["line"]) == (path, 2)
    debug("continue", {"threadId": thread_id})
    assert kernel.reply(msg_id)["content"]["status"] == "ok"


def test_comms_reach_the_client(kernel: Driver) -> None:
    kernel.execute(
        "def _echo_target(comm, open_msg):\n"
        "    @comm.on_msg\n"
        "    def _(msg):\n"
        "        comm.send({'echo': msg['content']['data']})\n"
        "get_ipython().kernel.comm_manager.register_target('echo', _echo_target)"
    )
    kernel.send("comm_open", {"comm_id": "c1", "target_name": "echo", "data": {}})
    msg_id = kernel.send("comm_msg", {"comm_id": "c1", "data": {"x": 1}})
    messages = kernel.iopub(msg_id)
    echoes = [m["content"]["data"] for m in messages if m["msg_type"] == "comm_msg"]
    assert echoes == [{"echo": {"x": 1}}]
    info = kernel.reply(kernel.send("comm_info_request", {"target_name": "echo"}))
    assert info["content"]["comms"] == {"c1": {"target_name": "echo"}}


def test_curve_encryption(tmp_path: Path) -> None:
    manager = KernelManager(kernel_name="parallel")
    manager.start_kernel(transport_encryption="required")
    client = manager.client()
    client.start_channels()
    try:
        assert manager.get_connection_info().get("curve_publickey")
        client.wait_for_ready(timeout=60)
        content, buffers = serialize.pack_apply(lambda: "sealed", ())
        msg = client.session.msg("apply_request", content)
        msg["buffers"] = buffers
        client.shell_channel.send(msg)
        reply = client.get_shell_msg(timeout=30)
        assert serialize.unpack_result(reply["content"], reply["buffers"]) == "sealed"
    finally:
        client.stop_channels()
        manager.shutdown_kernel()


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_connection_file_is_private(kernel: Driver) -> None:
    mode = Path(kernel.manager.connection_file).stat().st_mode & 0o777
    assert mode == 0o600


def test_papermill_runs_a_parameterized_notebook(tmp_path: Path) -> None:
    import papermill

    nb = nbformat.v4.new_notebook()
    nb.metadata.kernelspec = {"name": "parallel", "display_name": "x", "language": "python"}
    parameters = nbformat.v4.new_code_cell("alpha = 1")
    parameters.metadata.tags = ["parameters"]
    nb.cells = [parameters, nbformat.v4.new_code_cell("print(alpha * 6)")]
    source, output = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nbformat.write(nb, source)
    papermill.execute_notebook(
        str(source),
        str(output),
        parameters={"alpha": 7},
        kernel_name="parallel",
        progress_bar=False,
    )
    result = nbformat.read(output, as_version=4)
    assert outputs_of(result.cells[-1]) == "42\n"
    assert result.metadata.papermill.parameters == {"alpha": 7}
