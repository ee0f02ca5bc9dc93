"""``parallel-kernel console``: a console in a subshell answers while the engine is busy."""

from __future__ import annotations

import sys
import time

import pexpect
import pytest
from conftest import channel_options, cli, wait_until
from jupyter_client import BlockingKernelClient

from parallel_kernel import Pool
from parallel_kernel.subshell_console import control_request

pytestmark = pytest.mark.timeout(120)

WAIT = 60


def work() -> int:
    import time

    global progress
    for progress in range(1, 801):  # noqa: B007 (read from the console)
        time.sleep(0.01)
    return progress


def subshells(connection_file: str) -> list[str]:
    client = BlockingKernelClient(connection_file=connection_file)
    client.load_connection_file()
    client.start_channels(shell=False, iopub=False, stdin=False, hb=False)
    try:
        return control_request(client, "list_subshell_request", {})["subshell_id"]
    finally:
        client.stop_channels()


@pytest.mark.parametrize("channel", ["task", "shell"])
def test_a_console_reads_globals_while_a_task_runs(channel: str) -> None:
    options = channel_options(channel)
    with Pool(1) as pool:
        future = pool.submit(work, **options)
        wait_until(future.running)
        time.sleep(0.3)
        console = pexpect.spawn(
            sys.executable,
            ["-m", "parallel_kernel", "console", future.connection_file, "--", "--simple-prompt"],
            encoding="utf-8",
            timeout=WAIT,
        )
        try:
            console.expect(r"In \[\d+\]: ")
            console.sendline("progress")
            console.expect(r"Out\[\d+\]: (\d+)")
            seen = int(console.match.group(1))
            assert not future.done()  # answered while the task runs
            assert 1 <= seen < 800
            assert len(subshells(future.connection_file)) == 1
            console.expect(r"In \[\d+\]: ")
            console.sendline("exit")  # leaves the console, not the engine
            console.expect(pexpect.EOF)
        finally:
            console.close(force=True)
        assert future.result(WAIT) == 800
        assert subshells(future.connection_file) == []  # the console's subshell is gone
        assert pool.submit(abs, -4).result(WAIT) == 4


def test_the_console_names_a_missing_connection_file() -> None:
    result = cli("console", "kernel-no-such.json")
    assert result.returncode == 1
    assert "parallel-kernel console: error:" in result.stderr
    assert "kernel-no-such.json" in result.stderr
