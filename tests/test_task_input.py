"""``input()`` in a task, answered by its caller: a terminal, a notebook cell, a client.

Driven as people drive it: a script in a terminal (a pty, with pexpect), a
script with its standard input piped or closed, a notebook kernel whose
frontend answers ``input_request`` on the stdin channel (as JupyterLab does)
or allows no input (as papermill and nbclient run), and a bare
``jupyter_client`` client that sends ``apply_request`` itself.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path
from queue import Empty
from typing import Any

import pexpect
import pytest
from conftest import Driver, run, script_in_a_terminal, wait_until
from IPython.core.error import StdinNotImplementedError
from jupyter_client import BlockingKernelClient
from jupyter_client.manager import start_new_kernel

from parallel_kernel import Pool, serialize

pytestmark = pytest.mark.timeout(180)

WAIT = 60
ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import getpass
from parallel_kernel import Pool, TaskTimeout


def greet():
    print("a line before the question")
    name = input("your name? ")
    return f"hello {{name}}"


def unanswered():
    return input("nobody answers this? ")


with Pool(2, forward_output=True) as pool:
    print(pool.submit(greet{options}).result(), flush=True)
    print("secret has", len(pool.submit(getpass.getpass, "secret? ").result()), "characters")
    try:
        pool.submit(greet).result()
    except EOFError:
        print("end of input in the task", flush=True)
    try:
        pool.submit(unanswered, timeout=1).result()
    except TaskTimeout:
        print("the unanswered question timed out", flush=True)
    print(pool.submit(abs, -5).result(), flush=True)
"""


@pytest.mark.parametrize("channel", ["task", "shell"])
def test_input_in_a_task_is_asked_at_the_caller_s_terminal(tmp_path: Path, channel: str) -> None:
    with script_in_a_terminal(tmp_path, SCRIPT, channel) as child:
        # the task's own output comes first, then its question, named by engine
        child.expect(r"\[engine \d\] a line before the question\r\n\[engine \d\] your name\? ")
        child.sendline("Ada")
        child.expect("hello Ada")
        child.expect(r"\[engine \d\] secret\? ")
        child.sendline("sesame")
        child.expect("secret has 6 characters")
        assert "sesame" not in child.before  # a password is not echoed
        child.expect(r"your name\? ")
        child.sendeof()
        child.expect("end of input in the task")
        child.expect(r"nobody answers this\? ")
        child.expect("the unanswered question timed out")
        child.expect("5")
        child.expect(pexpect.EOF)


PIPED = """
from parallel_kernel import Pool

with Pool(1) as pool:
    for _ in range(3):
        try:
            print(pool.submit(input, "next? ").result())
        except EOFError:
            print("no more lines")
"""


def test_a_piped_standard_input_answers_line_by_line(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(PIPED)
    result = run([sys.executable, str(script)], input="first\nsecond\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.replace("[engine 0] next? ", "").splitlines() == [
        "first",
        "second",
        "no more lines",
    ]


NO_STDIN = """
import sys
from parallel_kernel import Pool

sys.stdin.close()
with Pool(1) as pool:
    try:
        pool.submit(input, "your name? ").result()
    except Exception as exc:
        print(type(exc).__name__, exc)
"""


def test_where_nothing_can_be_typed_input_fails_at_once(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(NO_STDIN)
    started = time.monotonic()
    result = run([sys.executable, str(script)], cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        "StdinNotImplementedError input('your name? ') was called in a task, "
        "but its caller cannot answer"
    )
    assert time.monotonic() - started < WAIT


def test_an_input_that_fails_at_the_caller_fails_the_task_s_input_with_why() -> None:
    # under pytest's capture, reading sys.stdin raises OSError
    with Pool(1) as pool:
        with pytest.raises(StdinNotImplementedError, match="could not read an answer: OSError"):
            pool.submit(input, "your name? ").result(WAIT)
        assert pool.submit(abs, -1).result(WAIT) == 1


# ---------------------------------------------------------------- in a notebook


def run_cell(client: Any, code: str, allow_stdin: bool, answers: list[str]) -> dict[str, Any]:
    """Execute a cell as a notebook frontend does, typing ``answers`` at its prompts."""
    msg_id = client.execute(code, allow_stdin=allow_stdin)
    typed = iter(answers)
    seen: dict[str, Any] = {"prompts": [], "stdout": "", "error": None}
    while True:
        try:
            request = client.get_stdin_msg(timeout=0.1)
        except Empty:
            pass
        else:
            seen["prompts"].append(request["content"]["prompt"])
            assert request["parent_header"]["msg_id"] == msg_id  # asked in this cell
            client.input(next(typed))
            continue
        try:
            msg = client.get_iopub_msg(timeout=0.1)
        except Empty:
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            seen["stdout"] += msg["content"]["text"]
        elif msg["msg_type"] == "error":
            seen["error"] = f"{msg['content']['ename']}: {msg['content']['evalue']}"
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return seen


@pytest.fixture
def notebook():
    """A stock python3 kernel, as a notebook's, with a pool of one engine in it."""
    manager, client = start_new_kernel(kernel_name="python3", cwd=str(ROOT))
    try:
        setup = run_cell(
            client,
            "from parallel_kernel import Pool\npool = Pool(1)\n"
            "def greet():\n    return 'hello ' + input('your name? ')\n",
            False,
            [],
        )
        assert setup["error"] is None, setup["error"]
        yield client
        run_cell(client, "pool.shutdown()", False, [])
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def test_in_a_notebook_the_cell_asks_through_the_stdin_channel(notebook) -> None:
    seen = run_cell(notebook, "print(pool.submit(greet).result())", True, ["Grace"])
    assert seen["error"] is None, seen["error"]
    assert seen["prompts"] == ["[engine 0] your name? "]
    assert seen["stdout"] == "hello Grace\n"


def test_a_notebook_run_that_allows_no_input_fails_at_once(notebook) -> None:
    # papermill and nbclient execute cells with allow_stdin=False
    seen = run_cell(notebook, "pool.submit(greet).result()", False, [])
    assert seen["prompts"] == []
    assert seen["error"].startswith(
        "StdinNotImplementedError: input('your name? ') was called in a task, "
        "but its caller cannot answer"
    )


def test_a_question_after_its_cell_ended_says_where_to_wait(notebook) -> None:
    cell = textwrap.dedent(
        """
        import time

        def later():
            time.sleep(1)
            return input("too late? ")

        future = pool.submit(later)
        """
    )
    assert run_cell(notebook, cell, True, [])["error"] is None
    # no cell runs when the question comes
    wait_until(lambda: run_cell(notebook, "print(future.done())", False, [])["stdout"] == "True\n")
    seen = run_cell(notebook, "print(repr(future.exception()))", False, [])
    assert "the notebook cell that could answer has finished" in seen["stdout"]
    assert "future.result()" in seen["stdout"]


# ---------------------------------------------------------------- the protocol


def test_a_jupyter_client_that_allows_stdin_answers_an_apply_request_s_input(
    kernel: Driver,
) -> None:
    """What a pool does, done by hand: ``allow_stdin`` in the request, the answer on stdin."""
    content, buffers = serialize.pack_apply(input, ("your name? ",))
    msg_id = kernel.send("apply_request", {**content, "allow_stdin": True}, buffers=buffers)
    request = kernel.client.get_stdin_msg(timeout=WAIT)
    assert request["content"] == {"prompt": "your name? ", "password": False}
    assert request["parent_header"]["msg_id"] == msg_id
    kernel.client.input("Linus")
    reply = kernel.reply(msg_id)
    assert reply["content"]["status"] == "ok"
    assert serialize.unpack_result(reply["content"], reply["buffers"]) == "Linus"
    # without allow_stdin, the same request is refused at once
    reply = kernel.reply(kernel.send("apply_request", content, buffers=buffers))
    assert reply["content"]["ename"] == "StdinNotImplementedError"


def test_a_client_that_allows_stdin_but_has_no_stdin_channel_gets_a_clear_error(
    kernel: Driver,
) -> None:
    client = BlockingKernelClient()  # a session, and so an identity, of its own
    client.load_connection_file(kernel.manager.connection_file)
    client.start_channels(stdin=False, hb=False)
    try:
        content, buffers = serialize.pack_apply(input, ("your name? ",))
        msg = client.session.msg("apply_request", {**content, "allow_stdin": True})
        msg["buffers"] = buffers
        client.shell_channel.send(msg)
        reply = client.get_shell_msg(timeout=WAIT)
        assert reply["content"]["ename"] == "StdinNotImplementedError"
        assert "its caller has no stdin channel connected" in reply["content"]["evalue"]
        assert kernel.reply(kernel.send_apply(abs, -2))["content"]["status"] == "ok"
    finally:
        client.stop_channels()
