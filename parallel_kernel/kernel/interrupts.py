"""Interrupts that name their request: they stop that request or nothing.

An ``interrupt_request`` whose content names a ``msg_id`` is answered on the
control thread while the main thread may be anywhere: in that request, in a
later one, between requests.  A plain SIGINT cannot say which request it was
meant for, so a request that arrives late (the control thread waited for the
GIL while the request ran) would interrupt whatever runs then.

:class:`InterruptGate` closes that gap.  The main thread records which
request it serves and where it is in it (:class:`Phase`, one method per
move); the control thread signals the process only if the named request is
the one being served (:meth:`InterruptGate.aim`), and records it as the
signal's target.  The SIGINT handler then decides by the phase:

* ``ADMITTING`` (the request is being checked for an abort, its start not yet
  reported to the client): a signal aimed at this request waits for its user
  code; a signal with no target (a pool's SIGINT fallback, a frontend's
  interrupt) is dropped, since whoever sent it cannot know of this request;
* ``STARTED`` (between the start and the user code, or after the code has
  returned while the reply is built): a signal for this request waits for
  its user code, or is dropped when the code has run;
* ``USER_CODE``: ``KeyboardInterrupt`` is raised in the user's code;
* ``IDLE``: no request; every signal is dropped.

A signal aimed at a request that has ended since is always dropped.  So
``KeyboardInterrupt`` never surfaces in the kernel's own bookkeeping (the
abort check, the start report, the reply), only in a request's user code.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from typing import Any


class Phase(enum.Enum):
    """Where the main thread is in serving a request."""

    IDLE = "idle"
    ADMITTING = "admitting"
    STARTED = "started"
    USER_CODE = "user code"


class InterruptGate:
    """Which request the main thread serves, how far it is, and which request a SIGINT is for."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.phase = Phase.IDLE
        #: msg_id of the request the main thread serves, if any.
        self.running: str | None = None
        #: msg_id named by the interrupt_request whose SIGINT has not been handled yet.
        self.target: str | None = None
        #: A signal for the running request arrived before its user code: raise it there.
        self.pending = False

    # -- the main thread's moves

    def enter(self, msg_id: str | None, phase: Phase = Phase.ADMITTING) -> None:
        """IDLE -> ``phase``: the main thread takes request ``msg_id`` (its handler is in).

        A shell request has started when its handler runs (ipykernel has
        published ``busy``): an apply request enters in ``STARTED``, any other
        (a cell, whose code may be anywhere in its handler) in ``USER_CODE``.
        """
        with self._lock:
            self.running = msg_id
            self.target = None
            self.pending = False
            self.phase = phase

    def started(self) -> None:
        """ADMITTING -> STARTED: the request runs (and the client may have been told so)."""
        if self.phase is Phase.ADMITTING:
            self.phase = Phase.STARTED

    def arm(self) -> bool:
        """STARTED -> USER_CODE; ``False`` (and no move) when an interrupt came before the code,
        which then counts as the code's interruption."""
        self.phase = Phase.USER_CODE
        if self.pending:
            # a signal that came before the move above set this flag and raised nothing
            self.phase = Phase.STARTED
            self.pending = False
            return False
        return True

    def disarm(self) -> None:
        """USER_CODE -> STARTED: the user's code has returned; later signals are dropped."""
        self.phase = Phase.STARTED
        self.pending = False

    def leave(self) -> None:
        """Any phase -> IDLE: the request is done with (before its handler comes out)."""
        with self._lock:
            self.phase = Phase.IDLE
            self.running = None
            self.target = None
            self.pending = False

    # -- the control thread's move

    def aim(self, msg_id: str, signal: Callable[[], None]) -> bool:
        """Call ``signal`` (which sends SIGINT) if ``msg_id`` runs now; return whether it did."""
        with self._lock:
            if self.running is None or self.running != msg_id:
                return False
            self.target = msg_id
            signal()
            return True

    # -- the signal

    def wanted(self) -> bool:
        """In a SIGINT handler: whether this signal is meant for the request being served."""
        target, self.target = self.target, None
        if self.phase is Phase.IDLE:
            return False
        if target is None:
            return self.phase is not Phase.ADMITTING
        return target == self.running

    def handler(self, signum: int, frame: Any) -> None:
        """The SIGINT handler while a request is served: see the module's docstring."""
        if not self.wanted():
            return
        if self.phase is Phase.USER_CODE:
            raise KeyboardInterrupt
        self.pending = True
