"""Resident memory of processes, read from ``/proc`` (Linux) or psutil."""

from __future__ import annotations

import os


def rss_bytes(pid: int | None = None) -> int:
    """Current resident set size of ``pid`` (default: this process)."""
    return _status_field(pid, "VmRSS")


def peak_rss_bytes(pid: int | None = None) -> int:
    """Highest resident set size ``pid`` has reached since it started."""
    return _status_field(pid, "VmHWM")


def _status_field(pid: int | None, field: str) -> int:
    path = f"/proc/{pid or os.getpid()}/status"
    try:
        with open(path) as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    import psutil

    info = psutil.Process(pid).memory_info()
    return info.peak_wset if field == "VmHWM" and hasattr(info, "peak_wset") else info.rss
