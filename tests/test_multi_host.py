"""Engines on other hosts, made on this machine: Linux network namespaces joined by veth pairs.

Each "host" is a network namespace with its own address (10.X.N.2), reached
from the root namespace, where the pool runs, through a veth pair (10.X.N.1
on this side).  Engines run inside the namespaces with ``parallel-kernel
engine --ip 10.X.N.2`` (CurveZMQ on), and the pool attaches with
``Pool.connect`` over TCP, as it would to engines on other machines.  Creating
namespaces needs root; elsewhere the tests skip and say so.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from jupyter_client.blocking import BlockingKernelClient

from parallel_kernel import EngineDied, Pool, TaskInterrupted

TIMEOUT = 30
HOSTS = 2


def _ip(*arguments: str) -> None:
    subprocess.run(["ip", *arguments], check=True, capture_output=True, text=True, timeout=30)


class Host:
    """A network namespace with one veth link to the root namespace, and its engine."""

    def __init__(self, name: str, index: int, subnet: int, directory: Path) -> None:
        self.name = name
        self.outside = f"{name}h"  # interface names are at most 15 characters
        self.inside = f"{name}n"
        self.address = f"10.{subnet}.{index}.2"
        self.gateway = f"10.{subnet}.{index}.1"
        self.connection_file = directory / f"{name}.json"
        self.engine: subprocess.Popen | None = None

    def create(self) -> None:
        _ip("netns", "add", self.name)
        _ip("link", "add", self.outside, "type", "veth", "peer", "name", self.inside)
        _ip("link", "set", self.inside, "netns", self.name)
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.outside)
        _ip("link", "set", self.outside, "up")
        _ip("-n", self.name, "addr", "add", f"{self.address}/24", "dev", self.inside)
        _ip("-n", self.name, "link", "set", self.inside, "up")
        _ip("-n", self.name, "link", "set", "lo", "up")

    def start_engine(self, engine_id: int) -> None:
        """``parallel-kernel engine`` inside the namespace; returns once its file is complete."""
        self.connection_file.unlink(missing_ok=True)
        self.engine = subprocess.Popen(
            ["ip", "netns", "exec", self.name, sys.executable, "-m", "parallel_kernel",
             "engine", "--ip", self.address, "--connection-file", str(self.connection_file),
             "--engine-id", str(engine_id)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        deadline = time.monotonic() + TIMEOUT
        while not self.connection_file.exists():  # it appears complete, once the engine listens
            assert self.engine.poll() is None, self.engine.stderr.read()
            assert time.monotonic() < deadline, f"no engine started in {self.name}"
            time.sleep(0.05)

    def pids(self) -> list[int]:
        listed = subprocess.run(
            ["ip", "netns", "pids", self.name], capture_output=True, text=True, timeout=30
        )
        return [int(pid) for pid in listed.stdout.split()]

    def kill_everything(self) -> None:
        """Every process of the host dies at once, as when a machine goes down."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def cut_off(self) -> None:
        """Take the host's link down: its engine keeps running, but nothing reaches it."""
        _ip("link", "set", self.outside, "down")

    def destroy(self) -> None:
        self.kill_everything()
        if self.engine is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.engine.wait(10)
        for command in (("link", "del", self.outside), ("netns", "del", self.name)):
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip(*command)


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[list[Host]]:
    """Two hosts with an engine each (engine ids 0 and 1)."""
    if sys.platform != "linux" or shutil.which("ip") is None:
        pytest.skip("network namespaces need Linux and iproute2's 'ip' command")
    if os.geteuid() != 0:
        pytest.skip("creating network namespaces needs root (ip netns add)")
    tag = uuid.uuid4().hex[:6]
    subnet = random.randint(100, 250)
    made = [Host(f"pk{tag}{i}", i, subnet, tmp_path) for i in range(HOSTS)]
    try:
        for host in made:
            try:
                host.create()
            except subprocess.CalledProcessError as exc:
                pytest.skip(f"network namespaces are not permitted here: {exc.stderr.strip()}")
        for engine_id, host in enumerate(made):
            host.start_engine(engine_id)
        yield made
    finally:
        for host in made:
            host.destroy()


def where_am_i() -> tuple[int, str]:
    """On an engine: the inode of its network namespace and its engine's address."""
    import os

    return os.stat("/proc/self/ns/net").st_ino, get_ipython().kernel.parent.ip  # noqa: F821


def nap(seconds: float) -> float:
    import time

    print("started", flush=True)
    time.sleep(seconds)
    return seconds


def slow_square(x: int) -> int:
    import time

    time.sleep(0.05)
    return x * x


def _wait_started(future, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while "started" not in future.stdout:
        assert time.monotonic() < deadline, "the task did not start"
        time.sleep(0.05)


def test_a_pool_runs_on_engines_in_two_hosts_over_encrypted_tcp(hosts: list[Host]) -> None:
    files = [str(host.connection_file) for host in hosts]
    for host in hosts:
        info = json.loads(host.connection_file.read_text())
        assert (info["ip"], info["transport"]) == (host.address, "tcp")
        assert all((info["curve_publickey"], info["curve_secretkey"]))
    with Pool.connect(files) as pool:
        placed = pool.broadcast(where_am_i)
        assert placed == [
            (os.stat(f"/run/netns/{host.name}").st_ino, host.address) for host in hosts
        ]
        assert os.stat("/proc/self/ns/net").st_ino not in {inode for inode, _ in placed}
        assert list(pool.map(slow_square, range(100))) == [x * x for x in range(100)]
        assert {pool.submit(where_am_i).result(TIMEOUT)[1] for _ in range(20)} <= {
            host.address for host in hosts
        }


def test_a_client_without_the_curve_keys_gets_no_answer(hosts: list[Host]) -> None:
    """The engines' sockets are CurveZMQ servers: signing keys alone are not enough."""
    info = json.loads(hosts[0].connection_file.read_text())
    client = BlockingKernelClient()
    client.load_connection_info({k: v for k, v in info.items() if not k.startswith("curve")})
    client.start_channels()
    try:
        with pytest.raises(TimeoutError):
            client.kernel_info(reply=True, timeout=2)
    finally:
        client.stop_channels()
    keyed = BlockingKernelClient()
    keyed.load_connection_info(info)
    keyed.start_channels()
    try:
        reply = keyed.kernel_info(reply=True, timeout=TIMEOUT)
        assert reply["content"]["parallel"]["engine_id"] == 0
    finally:
        keyed.stop_channels()


def test_abort_and_interrupt_across_hosts(hosts: list[Host]) -> None:
    with Pool.connect([str(host.connection_file) for host in hosts]) as pool:
        running = pool.submit(nap, 60, engine=1)
        queued = pool.submit(nap, 0, engine=1)
        _wait_started(running)
        assert queued.cancel()
        assert running.interrupt()
        with pytest.raises(TaskInterrupted):
            running.result(TIMEOUT)
        assert queued.cancelled()
        assert pool.submit(where_am_i, engine=1).result(TIMEOUT)[1] == hosts[1].address
        # the other host was never disturbed
        assert pool.submit(nap, 0, engine=0).result(TIMEOUT) == 0


def test_a_host_that_dies_mid_task_fails_or_retries_its_tasks(hosts: list[Host]) -> None:
    with Pool.connect([str(host.connection_file) for host in hosts]) as pool:
        doomed = pool.submit(nap, 60, engine=1)
        retried = [pool.submit(nap, 0.5, retries=1) for _ in range(6)]
        _wait_started(doomed)
        time.sleep(0.2)
        # tasks that were sent to the doomed host are in flight there when it dies
        assert 1 in {f.engine_id for f in retried}
        hosts[1].kill_everything()
        with pytest.raises(EngineDied, match="engine 1"):
            doomed.result(TIMEOUT)
        assert [f.result(TIMEOUT) for f in retried] == [0.5] * 6
        assert {f.engine_id for f in retried} == {0}
        assert [engine.state for engine in pool.engines] == ["idle", "dead"]
        assert pool.submit(where_am_i).result(TIMEOUT)[1] == hosts[0].address


def test_a_host_cut_off_from_the_network_fails_or_retries_its_tasks(hosts: list[Host]) -> None:
    with Pool.connect([str(host.connection_file) for host in hosts]) as pool:
        stranded = pool.submit(nap, 60, engine=0)
        moved = pool.submit(nap, 1, engine=None, retries=1)
        _wait_started(stranded)
        hosts[0].cut_off()
        with pytest.raises(EngineDied, match="heartbeat"):
            stranded.result(TIMEOUT)
        assert moved.result(TIMEOUT) == 1
        assert [engine.state for engine in pool.engines] == ["dead", "idle"]
        assert hosts[0].engine.poll() is None  # still running, only unreachable


@pytest.fixture
def routed(hosts: list[Host]) -> Iterator[list[Host]]:
    """The two hosts, routed to each other through the root namespace (as machines of
    one network are): a default route in each, and IPv4 forwarding on meanwhile."""
    forwarding = Path("/proc/sys/net/ipv4/ip_forward")
    before = forwarding.read_text().strip()
    for host in hosts:
        _ip("-n", host.name, "route", "add", "default", "via", host.gateway)
    forwarding.write_text("1\n")
    try:
        yield hosts
    finally:
        forwarding.write_text(f"{before}\n")


def kept_here() -> dict:
    """On an engine: what it keeps."""
    return get_ipython().kernel.kept.summary()  # noqa: F821


def test_a_value_kept_on_one_host_goes_straight_to_a_task_on_the_other(
    routed: list[Host],
) -> None:
    import numpy as np

    with Pool.connect([str(host.connection_file) for host in routed]) as pool:
        source = pool.submit(np.full, 1 << 20, 2.0, engine=0)  # 8 MiB, kept on host 0
        source.exception(TIMEOUT)
        assert source.kept is not None
        assert source.kept.engine_id == 0
        total = pool.submit(lambda a: (where_am_i()[1], float(a.sum())), source, engine=1)
        assert total.result(TIMEOUT) == (routed[1].address, 2.0 * (1 << 20))
        # host 1's engine fetched it from host 0's, over CurveZMQ; nothing came here
        assert pool.broadcast(kept_here)[0]["fetches"] == 1
