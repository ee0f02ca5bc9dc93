"""Engines on SSH hosts: ``Pool(n, kernel_name=...)`` with gateway_provisioners' SSH provisioner.

The kernelspec is ``examples/ssh-provisioner/kernel.json``, installed the way
its README says (``jupyter-ssh-spec install`` for the launcher scripts, then
the example's kernel.json with its paths filled in).  The "remote host" is a
private sshd, from Debian's openssh-server, listening on 127.0.0.2: a loopback
address that jupyter_client does not count as one of this machine's, so the
provisioner goes through SSH (paramiko) instead of starting the kernel itself.
The sshd's configuration, host key, pid file and authorized keys, the client
key and ``known_hosts`` (in a temporary ``HOME``) all live in temporary
directories; nothing of the system's SSH setup is used or changed.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from queue import Empty
from typing import Any

import pytest
import zmq
from conftest import require_installed
from gateway_provisioners import distributed, remote_provisioner, response_manager
from jupyter_client import BlockingKernelClient

from parallel_kernel import Pool
from parallel_kernel.errors import TaskInterrupted

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "ssh-provisioner" / "kernel.json"
SSHD = Path("/usr/sbin/sshd")
HOST = "127.0.0.2"
KERNEL_NAME = "parallel-ssh"
USER = getpass.getuser()
#: Seconds the engines of a pool may take to exit after its shutdown.  (The launcher's
#: listener child exits first and nothing reaps it; the kernel does not wait for the zombie.)
ENGINE_EXIT = 10

pytestmark = pytest.mark.timeout(240)


@pytest.mark.timeout(10)
def test_sshd_is_installed() -> None:
    """In CI a missing sshd fails the run; elsewhere the SSH tests are skipped."""
    require_installed(SSHD, "openssh-server")


# ---------------------------------------------------------------- the SSH host


@dataclass
class Sshd:
    port: int
    home: Path
    log: Path
    process: subprocess.Popen[bytes]

    def accepted_logins(self) -> int:
        return self.log.read_text().count(f"Accepted publickey for {USER} ")


def _keygen(path: Path) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "parallel-kernel-test", "-f", path],
        check=True,
    )
    kind, key = path.with_suffix(".pub").read_text().split()[:2]
    return f"{kind} {key}"


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _wait_for_banner(sshd: Sshd, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if sshd.process.poll() is not None:
            pytest.fail(
                f"sshd exited with status {sshd.process.returncode}:\n{sshd.log.read_text()}"
            )
        with contextlib.suppress(OSError), socket.create_connection((HOST, sshd.port), 1) as conn:
            conn.settimeout(5)
            if conn.recv(64).startswith(b"SSH-2.0-"):
                return
        if time.monotonic() > deadline:
            pytest.fail(f"sshd did not answer within {timeout} s:\n{sshd.log.read_text()}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    require_installed(SSHD, "openssh-server")
    if os.geteuid() == 0:
        # run as root, sshd wants its privilege separation directory (the service makes it)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    state = tmp_path_factory.mktemp("sshd")
    home = tmp_path_factory.mktemp("home")
    (home / ".ssh").mkdir(mode=0o700)
    host_key = _keygen(state / "ssh_host_ed25519_key")
    (state / "authorized_keys").write_text(_keygen(home / ".ssh" / "id_ed25519") + "\n")
    port = _free_port(HOST)
    # paramiko's RejectPolicy: the host must be in ~/.ssh/known_hosts
    (home / ".ssh" / "known_hosts").write_text(f"[{HOST}]:{port} {host_key}\n")
    config = state / "sshd_config"
    config.write_text(
        f"ListenAddress {HOST}:{port}\n"
        f"HostKey {state / 'ssh_host_ed25519_key'}\n"
        f"PidFile {state / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {state / 'authorized_keys'}\n"
        "StrictModes no\n"
        "UsePAM no\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\n"
        f"AllowUsers {USER}\n"
    )
    log = state / "sshd.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(config)], stdout=log_file, stderr=log_file
        )
    server = Sshd(port=port, home=home, log=log, process=process)
    try:
        _wait_for_banner(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


# ---------------------------------------------------------------- the kernelspec


@pytest.fixture(scope="module")
def ssh_kernelspec(sshd: Sshd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Install the example kernelspec in a private JUPYTER_PATH; yield the engines' log dir."""
    prefix = tmp_path_factory.mktemp("prefix")
    logs = tmp_path_factory.mktemp("kernel-logs")
    scratch = tmp_path_factory.mktemp("engine-scratch")
    # the launcher scripts, as the example's README says
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway_provisioners.cli.ssh_specapp",
            "install",
            f"--prefix={prefix}",
            f"--kernel-name={KERNEL_NAME}",
            "--ipykernel-subclass-name=parallel_kernel.kernel.ParallelKernel",
        ],
        check=True,
        capture_output=True,
    )
    spec_dir = prefix / "share" / "jupyter" / "kernels" / KERNEL_NAME
    assert (spec_dir / "scripts" / "launch_ipykernel.py").is_file()
    # ... then the example's kernel.json with its paths filled in
    text = EXAMPLE.read_text()
    text = text.replace("/path/to/python", sys.executable)
    text = text.replace("/path/to/parallel-ssh", str(spec_dir))
    spec = json.loads(text)
    assert "/path/to" not in text
    # the engines' IPython history and the launcher's connection file stay out of ~ and /tmp
    spec["env"].update(IPYTHONDIR=str(scratch / "ipython"), TMPDIR=str(scratch))
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=2))

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
        # paramiko finds the key (~/.ssh/id_ed25519) and the host (~/.ssh/known_hosts) in HOME
        mp.setenv("HOME", str(sshd.home))
        mp.delenv("SSH_AUTH_SOCK", raising=False)
        mp.setenv("GP_REMOTE_HOSTS", HOST)
        mp.setenv("GP_REMOTE_USER", USER)
        # its default, "root", would refuse to start kernels for root (as CI runs)
        mp.setenv("GP_UNAUTHORIZED_USERS", "")
        # gateway_provisioners reads these once, when it is imported: set both
        for name, module, attribute, value in [
            ("GP_SSH_PORT", distributed, "ssh_port", sshd.port),
            ("GP_KERNEL_LOG_DIR", distributed, "kernel_log_dir", str(logs)),
            ("GP_SOCKET_TIMEOUT", remote_provisioner, "socket_timeout", 1.0),
            ("GP_RESPONSE_IP", response_manager, "response_ip", "127.0.0.1"),
        ]:
            mp.setenv(name, str(value))
            mp.setattr(module, attribute, value)
        yield logs


# ---------------------------------------------------------------- engine processes


def engine_facts() -> dict[str, Any]:
    """What an engine says about itself (runs on the engine)."""
    import os

    from IPython import get_ipython

    kernel = get_ipython().kernel
    return {
        "pid": os.getpid(),
        "kernel_id": os.environ.get("KERNEL_ID"),
        "kernel_class": type(kernel).__name__,
        "engine_id": kernel.engine_id,
        "task_port": kernel.task_port,
        "task_channel": kernel.task_channel is not None,
    }


def _status(pid: int) -> dict[str, str] | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


#: A process: its pid and its start time (in clock ticks since boot), as pids are reused.
Proc = tuple[int, str]


def identify(pid: int) -> Proc:
    return pid, Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]


def alive(proc: Proc) -> bool:
    """Whether the process runs (a zombie has exited: only its parent has not reaped it)."""
    status = _status(proc[0])
    if status is None or status["State"].startswith("Z"):
        return False
    try:
        return identify(proc[0]) == proc
    except OSError:
        return False


def ancestors(pid: int) -> list[int]:
    chain = []
    while (status := _status(pid)) is not None and pid > 1:
        pid = int(status["PPid"])
        chain.append(pid)
    return chain


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        status = _status(int(entry.name)) if entry.name.isdigit() else None
        if status is not None and int(status["PPid"]) == pid:
            found.append(int(entry.name))
    return found


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def wait_gone(procs: list[Proc], timeout: float) -> list[Proc]:
    """Wait until none of ``procs`` runs; return those still running after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := [proc for proc in procs if alive(proc)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.fixture(scope="module")
def spawned(ssh_kernelspec: Path) -> Iterator[list[Proc]]:
    """The engine processes (and their launchers' listeners) the tests start.

    The module ends with none of them left running.
    """
    procs: list[Proc] = []
    yield procs
    left = wait_gone(procs, ENGINE_EXIT)
    for pid, _ in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"engine processes still running {ENGINE_EXIT} s after their pool: {left}"


@contextlib.contextmanager
def ssh_pool(
    n: int, spawned: list[Proc], **options: Any
) -> Iterator[tuple[Pool, list[dict[str, Any]]]]:
    """A pool of ``n`` engines started over SSH, and what each engine says about itself."""
    pool = Pool(n, kernel_name=KERNEL_NAME, **options)
    try:
        facts = pool.broadcast(engine_facts)
        for fact in facts:
            spawned.extend(identify(pid) for pid in [fact["pid"], *children(fact["pid"])])
        yield pool, facts
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


@pytest.fixture(scope="module")
def pool(spawned: list[Proc]) -> Iterator[tuple[Pool, list[dict[str, Any]]]]:
    with ssh_pool(2, spawned) as started:
        yield started


def kernel_info(connection_file: str | Path, timeout: float = 30) -> dict[str, Any]:
    client = BlockingKernelClient()
    client.load_connection_file(str(connection_file))
    client.start_channels()
    try:
        return client.kernel_info(reply=True, timeout=timeout)["content"]
    finally:
        client.stop_channels()


# ---------------------------------------------------------------- the tests


def started_marker(seconds: float) -> str:
    print("started", flush=True)
    time.sleep(seconds)
    return "slept"


def started_holding_the_gil(seconds: int) -> str:
    """Sleep in C without releasing the GIL: the kernel's control thread cannot answer."""
    import ctypes

    print("started", flush=True)
    time.sleep(0.5)  # lets the kernel's IOPub thread send the line
    ctypes.PyDLL(None).sleep(seconds)
    return "slept"


@pytest.mark.timeout(180)
def test_engines_started_through_sshd_run_a_map(sshd: Sshd, pool: tuple[Pool, list]) -> None:
    started, facts = pool
    assert list(started.map(lambda x: x * x, range(100))) == [x * x for x in range(100)]

    # full-speed engines: a ParallelKernel with its task channel, started by the launcher
    assert [f["kernel_class"] for f in facts] == ["ParallelKernel"] * 2
    # the launcher drops the pool's arguments; the pool gave each engine its id anyway
    assert [f["engine_id"] for f in facts] == [0, 1]
    assert all(f["task_channel"] and f["task_port"] > 0 for f in facts)
    for engine in started.engines:
        connection = json.loads(Path(engine.connection_file).read_text())
        assert connection["transport"] == "tcp"
        assert connection["ip"] == HOST
        parallel = kernel_info(engine.connection_file)["parallel"]
        assert parallel["task_port"] in {f["task_port"] for f in facts}

    # ... and through sshd: the launcher runs the kernel in the background (nohup ... &)
    # of an SSH session that ends right away, so the engine is re-parented to init and
    # no sshd shows in its ancestry; the environment sshd gave the session remains
    assert sshd.accepted_logins() >= 2
    for fact in facts:
        assert os.getpid() not in ancestors(fact["pid"])  # not started from this process
        ssh_connection = environ_of(fact["pid"]).get("SSH_CONNECTION", "")
        assert re.fullmatch(rf"\S+ \d+ {re.escape(HOST)} {sshd.port}", ssh_connection)


@pytest.mark.timeout(120)
def test_interrupt_reaches_a_task_through_the_launchers_listener(
    ssh_kernelspec: Path, pool: tuple[Pool, list]
) -> None:
    started, facts = pool
    # the engine cannot answer the interrupt request, so the pool asks the
    # provisioner, whose launcher signals the kernel
    future = started.submit(started_holding_the_gil, 20)
    deadline = time.monotonic() + 30
    while "started" not in future.stdout:
        assert time.monotonic() < deadline, "the task did not start"
        time.sleep(0.01)
    time.sleep(1.5)  # past the task's half second: it is in the C call
    t0 = time.monotonic()
    assert future.interrupt() is True
    with pytest.raises(TaskInterrupted) as info:
        future.result(timeout=15)
    assert info.value.ename == "KeyboardInterrupt"
    assert time.monotonic() - t0 < 10
    assert started.submit(lambda: "usable", engine=future.engine_id).result(30) == "usable"
    # the SIGINT came from the launcher's listener, asked by the provisioner over TCP
    log = ssh_kernelspec / f"kernel-{facts[future.engine_id]['kernel_id']}.log"
    assert "server_listener got request: {'signum': 2}" in log.read_text()


@pytest.mark.timeout(180)
def test_required_transport_encryption_gives_curve_encrypted_engines(
    tmp_path: Path, spawned: list[Proc]
) -> None:
    with ssh_pool(1, spawned, transport_encryption="required") as (started, facts):
        connection_file = started.engines[0].connection_file
        connection = json.loads(Path(connection_file).read_text())
        assert len(connection["curve_publickey"]) == len(connection["curve_secretkey"]) == 40
        assert sum(started.map(abs, range(-50, 50))) == 2500
        assert kernel_info(connection_file)["parallel"]["task_port"] == facts[0]["task_port"]

        # a client without the keys gets no answer: its request is either never sent (the
        # failed handshake took the connection down, so the send would block) or unanswered
        plain = tmp_path / "plain.json"
        plain.write_text(json.dumps({k: v for k, v in connection.items() if "curve" not in k}))
        client = BlockingKernelClient()
        client.load_connection_file(str(plain))
        client.start_channels()
        try:
            client.shell_channel.socket.setsockopt(zmq.SNDTIMEO, 3000)
            try:
                client.kernel_info()
            except zmq.Again:
                pass
            else:
                with pytest.raises(Empty):
                    client.get_shell_msg(timeout=3)
        finally:
            client.stop_channels()


@pytest.mark.timeout(ENGINE_EXIT + 120)
def test_shutdown_leaves_no_engine_processes(spawned: list[Proc]) -> None:
    with ssh_pool(2, spawned) as (started, facts):
        engines = [identify(f["pid"]) for f in facts]
        listeners = [identify(child) for pid, _ in engines for child in children(pid)]
        assert len(listeners) == 2  # each launcher's listener, a child of its kernel
        assert all(alive(proc) for proc in engines + listeners)
        started.shutdown()
    left = wait_gone(engines + listeners, ENGINE_EXIT)
    assert not left, f"still running {ENGINE_EXIT} s after shutdown: {left}"


@pytest.mark.timeout(120)
def test_a_host_that_is_this_machine_is_started_without_ssh(
    sshd: Sshd, spawned: list[Proc], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provisioner starts kernels for its own host directly, with its own stderr."""
    logins = sshd.accepted_logins()
    monkeypatch.setenv("GP_REMOTE_HOSTS", "localhost")
    with ssh_pool(1, spawned) as (started, facts):
        assert started.submit(sum, [1, 2, 3]).result(30) == 6
        assert facts[0]["task_channel"]
        assert "SSH_CONNECTION" not in environ_of(facts[0]["pid"])
    assert sshd.accepted_logins() == logins
