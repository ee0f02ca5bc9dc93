"""Post-mortem debugging of a failed task on the engine where it failed.

Driven as people drive it: ``future.debug()`` in a script in a terminal (a pty,
with pexpect), in a notebook kernel whose frontend answers ``input_request``
on the stdin channel (as JupyterLab does), and ``%debug`` in ``jupyter
console --existing`` attached to the engine.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from queue import Empty

import pexpect
import pytest
from conftest import run, script_in_a_terminal, wait_until
from jupyter_client.manager import start_new_kernel

from parallel_kernel import Pool

pytestmark = pytest.mark.timeout(180)

WAIT = 60
ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")

JOB = """
from parallel_kernel import Pool


def compute(values):
    secret = sum(values) * 7
    return values[secret]  # fails: no such index


with Pool(1) as pool:
    future = pool.submit(compute, [1, 2]{options})
    try:
        future.result()
    except IndexError:
        print("failed as expected", flush=True)
    future.debug()
    print("after the session:", pool.submit(abs, -5).result(), flush=True)
"""


def compute(values):
    secret = sum(values) * 7
    return values[secret]  # fails: no such index


def plain(text: str) -> str:
    return ANSI.sub("", text)


@pytest.mark.parametrize("channel", ["task", "shell"])
def test_debug_from_a_terminal(tmp_path: Path, channel: str) -> None:
    with script_in_a_terminal(tmp_path, JOB, channel) as child:
        child.expect("failed as expected")
        child.expect("ipdb> ")
        assert "return values[secret]  # fails: no such index" in plain(child.before)
        child.sendline("p secret")
        child.expect("ipdb> ")
        assert "21" in child.before.splitlines()[1:][0]
        child.sendline("p values")
        child.expect("ipdb> ")
        assert "[1, 2]" in child.before
        child.sendline("l")
        child.expect("ipdb> ")
        assert "secret = sum(values) * 7" in plain(child.before)  # the source, listed
        child.sendline("q")
        child.expect("after the session: 5")  # the engine serves on
        child.expect(pexpect.EOF)


def test_debug_where_nothing_can_be_typed_quits_and_says_why(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(JOB.format(options=""))
    result = run([sys.executable, str(script)], stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert result.returncode == 1
    assert "debug() needs to read the debugger's commands here" in result.stderr
    assert "standard input is closed" in result.stderr


def test_what_cannot_be_debugged_says_why() -> None:
    with Pool(1) as pool:
        fine = pool.submit(abs, -1)
        fine.result(WAIT)
        with pytest.raises(RuntimeError, match="did not fail"):
            fine.debug()
        first = pool.submit(compute, [1])
        second = pool.submit(compute, [2])
        for future in (first, second):
            with pytest.raises(IndexError):
                future.result(WAIT)
        with pytest.raises(RuntimeError, match="another task has failed on this engine since"):
            first.debug()
        [pid] = pool.broadcast(os.getpid)
        os.kill(pid, 9)
        wait_until(lambda: pool.engines[0].state == "idle")
        assert pool.submit(abs, -1).result(WAIT) == 1  # the restarted engine
        with pytest.raises(RuntimeError, match="was the engine restarted"):
            second.debug()


def test_debug_from_a_notebook_answers_through_the_stdin_channel() -> None:
    """A stock python3 kernel runs the cell; its frontend (here this test) answers the
    debugger's prompts as input_reply messages, as JupyterLab does for input()."""
    manager, client = start_new_kernel(kernel_name="python3", cwd=str(ROOT))
    try:
        cell = textwrap.dedent(
            """
            from parallel_kernel import Pool

            def compute(values):
                secret = sum(values) * 7
                return values[secret]

            with Pool(1) as pool:
                future = pool.submit(compute, [1, 2])
                future.exception()
                future.debug()
                print("after the session:", pool.submit(abs, -5).result())
            """
        )
        msg_id = client.execute(cell, allow_stdin=True)
        answers = iter(["p secret", "q"])
        shown = []
        prompts = 0
        while True:
            try:
                request = client.get_stdin_msg(timeout=0.2)
            except Empty:
                pass
            else:
                prompts += 1
                client.input(next(answers))
                continue
            try:
                msg = client.get_iopub_msg(timeout=0.2)
            except Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                shown.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                pytest.fail("\n".join(msg["content"]["traceback"]))
            elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        output = plain("".join(shown))
        assert prompts == 2
        assert request["content"]["prompt"].strip().endswith("ipdb>")
        assert "return values[secret]" in output  # where it stopped, shown in the cell
        assert "21" in output.splitlines()
        assert "after the session: 5" in output
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def test_debug_magic_in_a_console_attached_to_the_engine() -> None:
    """The failure stays the engine's last traceback, which %debug in a console opens."""
    with Pool(1) as pool:
        future = pool.submit(compute, [1, 2])
        with pytest.raises(IndexError):
            future.result(WAIT)
        console = pexpect.spawn(
            "jupyter",
            ["console", "--existing", future.connection_file, "--simple-prompt"],
            encoding="utf-8",
            timeout=WAIT,
        )
        try:
            console.expect(r"In \[\d+\]: ")
            console.sendline("%debug")
            console.expect("ipdb> ")
            console.sendline("p secret")
            console.expect("ipdb> ")
            assert "21" in console.before
            console.sendline("q")
            console.expect(r"In \[\d+\]: ")
            console.sendline("exit(keep_kernel=True)")  # the engine is the pool's
            console.expect(pexpect.EOF)
        finally:
            console.close(force=True)
        assert pool.submit(abs, -5).result(WAIT) == 5
