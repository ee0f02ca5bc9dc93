"""The environment the pool starts its engines with: large buffers on transparent huge pages."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from parallel_kernel import Pool
from parallel_kernel.pool import HUGE_PAGES_TUNABLE, engine_environment

THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")
MiB = 2**20


def _huge_pages_holding(array: np.ndarray) -> tuple[str, int]:
    """On an engine: its GLIBC_TUNABLES and the KiB on huge pages while ``array`` is held."""
    import os

    with open("/proc/self/smaps_rollup") as rollup:
        kib = next(int(line.split()[1]) for line in rollup if line.startswith("AnonHugePages:"))
    return os.environ.get("GLIBC_TUNABLES", ""), kib


def _thp_mode() -> str:
    if not sys.platform.startswith("linux") or not THP_MODE.exists():
        return "unsupported"
    text = THP_MODE.read_text()
    return text[text.index("[") + 1 : text.index("]")]


def test_the_tunable_is_added_to_the_users_own() -> None:
    if sys.platform != "linux":
        assert "GLIBC_TUNABLES" not in engine_environment({})
        return
    assert engine_environment({})["GLIBC_TUNABLES"] == HUGE_PAGES_TUNABLE
    mine = "glibc.malloc.arena_max=2"
    assert engine_environment({"GLIBC_TUNABLES": mine})["GLIBC_TUNABLES"] == (
        f"{mine}:{HUGE_PAGES_TUNABLE}"
    )
    # the user's own choice wins, including turning it off
    off = "glibc.malloc.hugetlb=0"
    assert engine_environment({"GLIBC_TUNABLES": off})["GLIBC_TUNABLES"] == off
    assert engine_environment({"PATH": "/bin"})["PATH"] == "/bin"


@pytest.mark.skipif(
    _thp_mode() in ("never", "unsupported"),
    reason="transparent huge pages are not available on this system",
)
def test_engines_receive_large_arrays_on_huge_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    array = np.arange(64 * MiB, dtype=np.uint8)
    # over the socket, as from a client on another host (on this one it would be shared memory)
    with Pool(1, shared_memory=False) as pool:
        tunables, huge_kib = pool.submit(_huge_pages_holding, array).result(60)
    assert HUGE_PAGES_TUNABLE in tunables
    # the received 64 MiB buffer sits (nearly) all on 2 MiB pages
    assert huge_kib >= 60 * 1024

    if _thp_mode() == "madvise":  # only asked-for memory gets huge pages: the opt-out shows
        monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=0")
        with Pool(1, shared_memory=False) as pool:
            tunables, huge_kib = pool.submit(_huge_pages_holding, array).result(60)
        assert tunables == "glibc.malloc.hugetlb=0"
        assert huge_kib < 8 * 1024
