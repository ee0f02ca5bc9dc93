"""The kernel ends when the process that started it is gone, leaving nothing behind.

A kernel manager names itself as the kernel's parent (``JPY_PARENT_PID``), and
ipykernel then ends the kernel with ``os._exit`` a moment after that process
dies, which skips every ``atexit`` cleanup.  This watch does the same, after
removing what would outlive the kernel: its shared memory segments and those
of the dead parent (see :mod:`parallel_kernel.shared_memory`).
"""

from __future__ import annotations

import os
import threading
import time

from .. import shared_memory

#: Seconds between two looks at the parent.
POLL_INTERVAL = 0.5


class ParentWatch(threading.Thread):
    """A daemon thread that ends the process once ``parent_pid`` is no longer its parent."""

    def __init__(self, parent_pid: int) -> None:
        super().__init__(name="parent-watch", daemon=True)
        # a parent that is already not ours (the kernel was re-parented before this
        # started) is watched as "until we are adopted by init", as ipykernel does
        self.parent_pid = parent_pid if os.getppid() == parent_pid else 0

    def run(self) -> None:
        """Look at the parent until it is gone, then clean up and end the process."""
        while not self._orphaned():
            time.sleep(POLL_INTERVAL)
        try:
            shared_memory.sweep(ending=True)
        finally:
            os._exit(1)

    def _orphaned(self) -> bool:
        parent = os.getppid()
        return parent != self.parent_pid if self.parent_pid else parent == 1
