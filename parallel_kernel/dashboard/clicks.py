"""Dashboard buttons that work while a cell runs: their clicks go to a subshell.

A button's click reaches the kernel as a ``comm_msg`` on the shell channel;
the main shell handles it only once the running cell is done, too late to
interrupt an engine for that cell.  ipykernel 7 routes a comm's messages to
the subshell its comm's ``_reply_subshell_for(data, default)`` names (checked
against ipykernel 7.4), so the dashboard makes one subshell for its clicks
and gives its buttons' comms a ``_reply_subshell_for`` that always names it.
Where that is not available (another kernel, or no kernel) clicks are
handled when the main shell is free.
"""

from __future__ import annotations

import threading
from typing import Any

#: Seconds to wait for the shell channel's thread to make the subshell.
CREATE_WAIT = 5.0

_made: dict[int, str] = {}
_lock = threading.Lock()


def subshell() -> str | None:
    """The id of this kernel's subshell for dashboard clicks (made once), or ``None``."""
    kernel = _kernel()
    thread = getattr(kernel, "shell_channel_thread", None)
    if thread is None or not getattr(kernel, "_supports_kernel_subshells", False):
        return None
    with _lock:
        if id(kernel) in _made:
            return _made[id(kernel)]
        made: list[str] = []
        done = threading.Event()

        def create() -> None:
            try:
                made.append(thread.manager._create_subshell())
            finally:
                done.set()

        thread.io_loop.add_callback(create)
        if not done.wait(CREATE_WAIT) or not made:
            return None
        _made[id(kernel)] = made[0]
        return made[0]


def route(widget: Any, subshell_id: str | None) -> None:
    """Send ``widget``'s messages from the frontend to ``subshell_id``."""
    comm = getattr(widget, "comm", None)
    if subshell_id is not None and comm is not None and hasattr(comm, "_reply_subshell_for"):
        comm._reply_subshell_for = lambda _data, _default: subshell_id


def _kernel() -> Any:
    import sys

    if "ipykernel" not in sys.modules:
        return None
    from IPython import get_ipython

    return getattr(get_ipython(), "kernel", None)
