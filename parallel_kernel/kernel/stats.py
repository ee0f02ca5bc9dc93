"""An engine's process figures for ``stats_request``: resident memory, CPU time, threads.

Read from ``/proc/self`` where there is one (Linux), else from ``getrusage``
(whose memory figure is the peak, not the current size: the reply says which).
"""

from __future__ import annotations

import os
import resource
import threading
import time
from typing import Any

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def stats_content() -> dict[str, Any]:
    """The ``stats_reply`` content (see ``docs/protocol.md``)."""
    times = os.times()
    content: dict[str, Any] = {
        "status": "ok",
        "pid": os.getpid(),
        "cpu_seconds": times.user + times.system,
        "wall_seconds": time.monotonic(),
        "threads": threading.active_count(),
    }
    try:
        with open("/proc/self/statm") as statm:
            content["rss"] = int(statm.read().split()[1]) * _PAGE
        content["rss_kind"] = "current"
    except (OSError, ValueError, IndexError):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        scale = 1 if os.uname().sysname == "Darwin" else 1024
        content["rss"] = usage.ru_maxrss * scale
        content["rss_kind"] = "peak"
    return content
