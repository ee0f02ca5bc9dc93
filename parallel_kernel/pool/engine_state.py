"""One engine as the pool knows it: the engine state machine.  No I/O.

The life of an engine, one method per move::

    STARTING --ready--> IDLE <--busy/idle--> BUSY
                         |                    |
                         +------- lose -------+--> DEAD --restart--> RESTARTING --ready--> IDLE
                                                   (RESTARTING --lose--> DEAD)
    (any state) --stop--> STOPPED

Every move also tells the scheduler whether the engine takes tasks, so the
two can never disagree.
"""

from __future__ import annotations

import asyncio
import enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import protocol
from .tasks import StateError

if TYPE_CHECKING:
    from jupyter_client.manager import AsyncKernelManager

    from .connection import EngineConnection
    from .death import Clues
    from .scheduler import Scheduler
    from .tasks import Attempt


class EngineState(enum.StrEnum):
    """Where an engine is in its life."""

    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    DEAD = "dead"
    RESTARTING = "restarting"
    STOPPED = "stopped"


#: States in which an engine takes tasks.
SERVING = frozenset({EngineState.IDLE, EngineState.BUSY})
#: States from which an engine may still serve (now or once started).
LIVING = frozenset({*SERVING, EngineState.STARTING, EngineState.RESTARTING})


_REPORT_START = {protocol.REPORT_START: True}


class EngineRecord:
    """The pool's live record of one engine (loop thread only)."""

    def __init__(
        self,
        engine_id: int,
        scheduler: Scheduler,
        hwm: int,
        manager: AsyncKernelManager | None,
        connection_file: str,
    ) -> None:
        self.id = engine_id
        self._scheduler = scheduler
        #: The kernel manager of an engine the pool started; ``None`` for connected ones.
        self.manager = manager
        self.connection_file = connection_file
        self.connection: EngineConnection | None = None
        self.state = EngineState.STARTING
        self.uuid: str | None = None
        #: Attempts sent to it and not answered yet, in the order sent.
        self.inflight: dict[str, Attempt] = {}
        self.stderr_path: Path | None = None
        #: What will explain its process's death (taken at each start; see :mod:`.death`).
        self.clues: Clues | None = None
        self.stderr: Any = None
        self.iopub_seen = asyncio.Event()
        self.watcher: asyncio.Task[None] | None = None
        #: The engine as a holder of shared memory segments, if it shares this host's.
        self.shared: str | None = None
        #: The engine says when it starts a task-channel request (``apply_started``).
        self.reports_start = False
        #: It takes ``interrupt_request`` naming the task to interrupt (never another one).
        self.aims_interrupts = False
        scheduler.add_engine(engine_id, hwm)
        scheduler.set_available(engine_id, False)

    @property
    def owned(self) -> bool:
        """Whether the pool started this engine (and so stops and restarts it)."""
        return self.manager is not None

    @property
    def serving(self) -> bool:
        """Whether it takes tasks now."""
        return self.state in SERVING

    @property
    def living(self) -> bool:
        """Whether it serves, or may serve once started."""
        return self.state in LIVING

    @property
    def start_metadata(self) -> dict[str, Any] | None:
        """Metadata of task-channel requests: ask the engine to say when it starts them."""
        return _REPORT_START if self.reports_start else None

    # -- transitions

    def _move(self, allowed: frozenset[EngineState], to: EngineState) -> None:
        if self.state not in allowed:
            raise StateError(f"engine {self.id} cannot go from {self.state} to {to}")
        self.state = to
        self._scheduler.set_available(self.id, to in SERVING)

    def ready(self) -> None:
        """STARTING or RESTARTING -> IDLE: it answered; it takes tasks."""
        self._move(frozenset({EngineState.STARTING, EngineState.RESTARTING}), EngineState.IDLE)

    def busy(self) -> None:
        """IDLE -> BUSY: it runs a task."""
        if self.state is EngineState.IDLE:
            self._move(SERVING, EngineState.BUSY)

    def idle(self) -> None:
        """BUSY -> IDLE: nothing of the pool's is running or queued there."""
        if self.state is EngineState.BUSY and not self.inflight:
            self._move(SERVING, EngineState.IDLE)

    def lose(self, by_itself: bool = False) -> list[Attempt]:
        """-> DEAD: it stopped answering.  Returns the attempts that were in flight there.

        An attempt counts as started if the engine said so.  The task channel
        runs requests in the order sent, so its oldest unanswered one (with the
        rest of its batch) may have been running when the engine does not
        report starts, and the oldest of each channel may have been running
        when its process ended ``by_itself`` (a task that exits or crashes at
        once can end the process before its start report leaves it).
        """
        self._move(LIVING, EngineState.DEAD)
        self._scheduler.forget_outstanding(self.id)
        lost = list(self.inflight.values())
        self.inflight.clear()
        # shell requests report their start by IOPub status, which a process that
        # ends by itself may not have sent either
        channels = ("task", "shell") if by_itself else ("task",) if not self.reports_start else ()
        for channel in channels:
            head = next((a for a in lost if a.channel == channel), None)
            if head is None:
                continue
            head.started = True
            if head.batched:
                for attempt in lost:
                    if attempt.batch == head.batch:
                        attempt.started = True
        return lost

    def restart(self) -> None:
        """DEAD -> RESTARTING: the pool starts its process again."""
        self._move(frozenset({EngineState.DEAD}), EngineState.RESTARTING)

    def retire(self) -> None:
        """It stays DEAD: tasks that only it could run fail instead of waiting for it."""
        self._scheduler.retire(self.id)

    def stop(self) -> None:
        """-> STOPPED: the pool is done with it (from any state)."""
        self._move(frozenset(EngineState), EngineState.STOPPED)
        self._scheduler.forget_outstanding(self.id)
        self._scheduler.retire(self.id)

    def __repr__(self) -> str:
        return f"<EngineRecord {self.id} {self.state}>"
