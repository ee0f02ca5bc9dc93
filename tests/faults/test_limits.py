"""Huge inputs and where engines listen: no truncation, no crash, loopback only by default."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from parallel_kernel import Pool

#: Just past 2 GiB, where 32-bit lengths would overflow.
HUGE = 2**31 + 4096


def describe(array) -> tuple[int, int, int, int]:
    return array.nbytes, int(array[0]), int(array[HUGE // 2]), int(array[-1])


@pytest.mark.timeout(300)
def test_a_2_gib_argument_arrives_whole() -> None:
    array = np.zeros(HUGE, dtype=np.uint8)
    array[0], array[HUGE // 2], array[-1] = 7, 8, 9
    with Pool(1) as pool:
        assert pool.submit(describe, array).result(240) == (HUGE, 7, 8, 9)
        del array
        # and the engine serves on, its memory given back
        assert pool.submit(abs, -1).result(60) == 1


def listening_addresses(pid: int) -> list[str]:
    """The IPv4 address of each TCP socket that process ``pid`` listens on."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    addresses = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and inode in inodes:  # LISTEN
            host = bytes.fromhex(local.split(":")[0])[::-1]
            addresses.append(".".join(str(b) for b in host))
    return addresses


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_engines_listen_on_loopback_only() -> None:
    with Pool(1, transport="tcp") as pool:
        pid = pool.submit(os.getpid).result(60)
        addresses = listening_addresses(pid)
    # shell, iopub, stdin, control, heartbeat, the task channel (and any other of ipykernel's)
    assert len(addresses) >= 6
    assert set(addresses) == {"127.0.0.1"}
