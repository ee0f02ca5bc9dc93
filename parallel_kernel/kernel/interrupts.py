"""Interrupts that name their request: they stop that request or nothing.

An ``interrupt_request`` whose content names a ``msg_id`` is answered on the
control thread while the main thread may be anywhere: in that request, in a
later one, between requests.  A plain SIGINT cannot say which request it was
meant for, so a request that arrives late (the control thread waited for the
GIL while the request ran) would interrupt whatever runs then.

:class:`InterruptGate` closes that gap.  The main thread records which
request's user code runs (:meth:`enter`, :meth:`leave`, with the interrupting
SIGINT handler installed in between); the control thread signals the process
only if the named request is the one running (:meth:`aim`), and records it as
the signal's target.  The SIGINT handler raises ``KeyboardInterrupt`` for a
signal with no target (a frontend's interrupt, a SIGINT from a terminal or a
pool) or one aimed at the running request, and drops one aimed at a request
that has ended since.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class InterruptGate:
    """Which request's user code runs, and which request the pending SIGINT is for."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: msg_id of the request whose user code runs on the main thread, if any.
        self.running: str | None = None
        #: msg_id named by the interrupt_request whose SIGINT has not been handled yet.
        self.target: str | None = None

    def enter(self, msg_id: str | None) -> None:
        """The main thread is about to run ``msg_id``'s user code (its handler is in)."""
        with self._lock:
            self.running = msg_id
            self.target = None

    def leave(self) -> None:
        """The user code has returned (after the handler came out)."""
        with self._lock:
            self.running = None
            self.target = None

    def aim(self, msg_id: str, signal: Callable[[], None]) -> bool:
        """Call ``signal`` (which sends SIGINT) if ``msg_id`` runs now; return whether it did."""
        with self._lock:
            if self.running is None or self.running != msg_id:
                return False
            self.target = msg_id
            signal()
            return True

    def wanted(self) -> bool:
        """In the SIGINT handler: whether this signal is meant for the running request."""
        target, self.target = self.target, None
        return target is None or target == self.running

    def handler(self, signum: int, frame: Any) -> None:
        """The SIGINT handler while user code runs: ``KeyboardInterrupt`` unless it is stale."""
        if self.wanted():
            raise KeyboardInterrupt
