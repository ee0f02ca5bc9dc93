"""Which clients have requests waiting for the main shell, so their replies keep their order.

The kernel answers ``kernel_info_request`` on the shell channel's thread, at
once, even while the main shell runs a long cell: a frontend that connects to
a busy kernel (JupyterLab's subshell console) waits for that reply before it
does anything else.  A client that sent other requests first, though, expects
their replies first (jupyter_client's blocking calls read replies in order,
and so do ipykernel's own tests): its ``kernel_info_request`` then queues
behind them in the main shell, as in ipykernel.  A client is a session
(``header["session"]``); a request counts while it is routed to the main
shell and until the main shell has handled it.
"""

from __future__ import annotations

import collections
import threading


class MainShellQueue:
    """Requests routed to the main shell and not handled yet, counted by client session."""

    def __init__(self) -> None:
        self._waiting: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def routed(self, session: str) -> None:
        """A request of ``session`` goes to the main shell (the shell channel's thread)."""
        with self._lock:
            self._waiting[session] += 1

    def handled(self, session: str) -> None:
        """The main shell is done with a request of ``session`` (the main thread)."""
        with self._lock:
            if self._waiting[session] <= 1:
                del self._waiting[session]
            else:
                self._waiting[session] -= 1

    def waiting(self, session: str) -> bool:
        """Whether requests of ``session`` wait for the main shell."""
        with self._lock:
            return self._waiting.get(session, 0) > 0


class ClearsOnTheWay:
    """Clears handed from the control thread to the main thread that have not asked for the
    main shell's lock yet.

    A clear on the control channel waits for running code by taking the main
    shell's lock in the main thread, a loop turn or two after the control
    thread hands it over.  Tasks on the task channel that arrive meanwhile
    must not overtake it: the task channel holds back while this is true.
    """

    def __init__(self) -> None:
        self._count = 0
        self._lock = threading.Lock()

    def handed_over(self) -> None:
        """A clear leaves the control thread for the main thread."""
        with self._lock:
            self._count += 1

    def arrived(self) -> None:
        """A clear takes the main shell's lock or waits for it (the main thread, in the
        same step: from then on the lock is seen wanted)."""
        with self._lock:
            self._count -= 1

    def __bool__(self) -> bool:
        with self._lock:
            return self._count > 0
