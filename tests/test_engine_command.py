"""``parallel-kernel engine``: a kernel started by hand on an address, for ``Pool.connect``."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from parallel_kernel import Pool
from parallel_kernel.engine import prepare_connection_file

TIMEOUT = 30


def _has_task_port(connection_file: Path) -> bool:
    try:
        return "task_port" in json.loads(connection_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # a given file, being rewritten
        return False


def start_engine(connection_file: Path, *arguments: str) -> subprocess.Popen:
    """Run the command and return once the kernel has bound its task channel.

    A file the command writes appears complete, in one step, once the kernel
    listens: seeing it is enough.  A given file is used as it is: it names
    the task port the kernel binds.
    """
    fresh = not connection_file.exists()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "parallel_kernel",
            "engine",
            "--connection-file",
            str(connection_file),
            *arguments,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + TIMEOUT
    while not (connection_file.exists() if fresh else _has_task_port(connection_file)):
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "the engine did not start"
        time.sleep(0.01)
    assert _has_task_port(connection_file)
    # nothing but the final file is left in the directory
    assert sorted(p.name for p in connection_file.parent.iterdir()) == [connection_file.name]
    return process


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(TIMEOUT)


def test_an_engine_on_an_address_serves_a_pool_over_curve(tmp_path: Path) -> None:
    connection_file = tmp_path / "engine.json"
    process = start_engine(
        connection_file,
        "--ip",
        "127.0.0.1",
        "--engine-id",
        "7",
        "--",
        "--ParallelKernel.exec_lines=offset = 100",
    )
    try:
        info = json.loads(connection_file.read_text())
        assert (info["ip"], info["transport"]) == ("127.0.0.1", "tcp")
        assert all((info["curve_publickey"], info["curve_secretkey"]))
        assert stat.S_IMODE(connection_file.stat().st_mode) == 0o600
        with Pool.connect([str(connection_file)]) as pool:
            assert pool.submit(lambda: offset + 1).result(TIMEOUT) == 101  # noqa: F821
            assert pool.broadcast(lambda: get_ipython().kernel.engine_id) == [7]  # noqa: F821
            assert list(pool.map(abs, range(-50, 0))) == list(range(50, 0, -1))
        assert process.poll() is None  # attached, not owned: left running
    finally:
        stop(process)
    assert not connection_file.exists()  # it held the engine's keys


def test_without_encryption_messages_are_only_signed(tmp_path: Path) -> None:
    connection_file = tmp_path / "engine.json"
    process = start_engine(connection_file, "--ip", "127.0.0.1", "--encryption", "none")
    try:
        info = json.loads(connection_file.read_text())
        assert "curve_publickey" not in info
        assert info["key"]
        with Pool.connect([str(connection_file)]) as pool:
            assert pool.submit(os.getpid).result(TIMEOUT) != os.getpid()
    finally:
        stop(process)


def _sigterm_to_a_thread_other_than_main_soon() -> None:
    """Runs on the engine: SIGTERM, once the task has returned, to a thread that is not main."""
    import signal
    import threading

    def send() -> None:
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

    threading.Timer(0.2, send).start()


def test_sigterm_stops_an_idle_engine_whichever_thread_takes_it(tmp_path: Path) -> None:
    # The kernel delivers a signal sent to a process to any of its threads
    # that does not block it; an idle engine's main thread sleeps in its event
    # loop, so the engine must not rely on that thread being woken by the signal.
    connection_file = tmp_path / "engine.json"
    process = start_engine(connection_file, "--ip", "127.0.0.1", "--encryption", "none")
    try:
        with Pool.connect([str(connection_file)]) as pool:
            pool.submit(_sigterm_to_a_thread_other_than_main_soon).result(TIMEOUT)
        assert process.wait(TIMEOUT) == -signal.SIGTERM
    finally:
        if process.poll() is None:
            process.kill()
    assert not connection_file.exists()


def test_a_given_connection_file_is_used_and_kept(tmp_path: Path) -> None:
    connection_file = tmp_path / "engine.json"
    assert prepare_connection_file(connection_file, "127.0.0.1") is True
    written = json.loads(connection_file.read_text())
    assert prepare_connection_file(connection_file, "127.0.0.1", "none") is False
    process = start_engine(connection_file, "--ip", "127.0.0.1")
    try:
        info = json.loads(connection_file.read_text())
        assert {k: info[k] for k in written} == written  # same ports and keys
        with Pool.connect([str(connection_file)]) as pool:
            assert pool.submit(sum, [1, 2, 3]).result(TIMEOUT) == 6
    finally:
        stop(process)
    assert connection_file.exists()


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("example.org", "--ip must be an IP address of this host, got 'example.org'"),
        ("192.0.2.1", "cannot listen on 192.0.2.1"),
    ],
)
def test_an_address_the_host_does_not_have_is_refused(
    tmp_path: Path, address: str, message: str
) -> None:
    connection_file = tmp_path / "engine.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "parallel_kernel",
            "engine",
            "--ip",
            address,
            "--connection-file",
            str(connection_file),
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 1
    assert f"parallel-kernel engine: error: {message}" in result.stderr
    assert not connection_file.exists()
