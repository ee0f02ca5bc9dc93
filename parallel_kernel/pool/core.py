"""The loop-thread side of one pool: its options, its state and the parts that act on it.

:class:`PoolCore` holds what the parts share (the scheduler, the engine
records, the non-task requests, the loop bridge) and wires the parts
together: :class:`~.engines.EngineSet` (engines' lives),
:class:`~.dispatch.Dispatcher` (tasks to engines, replies to futures) and
:class:`~.control.Control` (cancel, interrupt, timeouts).  It is also what
every engine connection reports to.  It never refers to the public
:class:`~.api.Pool`, so a pool the user drops can be collected and its
finalizer can still stop the engines.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from typing import Any

from ..errors import EngineDied
from . import output
from .control import Control
from .dispatch import Dispatcher
from .engine_state import EngineRecord
from .engines import EngineSet
from .launch import Launcher
from .loop import Bridge
from .requests import Requests
from .scheduler import Scheduler

#: Seconds to wait for an engine to start and answer kernel_info.
STARTUP_TIMEOUT = 60.0


@dataclass
class PoolOptions:
    """How a pool runs its engines and tasks (see :class:`~.api.Pool` for each)."""

    kernel_name: str = "parallel"
    hwm: int = 2
    forward_output: bool = False
    restart: bool = True
    extra_arguments: list[str] = field(default_factory=list)
    startup_timeout: float = STARTUP_TIMEOUT
    transport: str = "auto"
    transport_encryption: str = "auto"
    task_channel: bool = True
    wrap_errors: bool = False


class PoolCore:
    """Everything of one pool that lives on the loop thread."""

    def __init__(self, options: PoolOptions) -> None:
        self.options = options
        self.bridge = Bridge()
        self.scheduler = Scheduler()
        self.output = output.OutputForwarder()
        self.requests = Requests(self.bridge.loop)
        self._stderr_dir = tempfile.TemporaryDirectory(prefix="parallel-kernel-")
        self.launcher = Launcher(
            options.kernel_name,
            options.transport,
            options.transport_encryption,
            options.extra_arguments,
            self._stderr_dir.name,
        )
        self.engines = EngineSet(self)
        self.dispatch = Dispatcher(self)
        self.control = Control(self)
        #: No new tasks are accepted (shutdown began).
        self.closed = False
        #: The engines were stopped.
        self.stopped = False

    @property
    def records(self) -> dict[int, EngineRecord]:
        """The engine records, by engine id."""
        return self.engines.records

    # -- what engine connections report

    def on_reply(self, engine: EngineRecord, channel: str, msg: dict[str, Any]) -> None:
        """A reply on one of ``engine``'s sockets."""
        self.dispatch.on_reply(engine, channel, msg)

    def on_iopub(self, engine: EngineRecord, msg: dict[str, Any]) -> None:
        """An IOPub message of ``engine``."""
        self.dispatch.on_iopub(engine, msg)

    def on_started(self, engine: EngineRecord, msg_ids: list[str]) -> None:
        """``engine`` starts running these task-channel requests."""
        self.dispatch.on_started(engine, msg_ids)

    def on_heartbeat_lost(self, engine: EngineRecord) -> None:
        """``engine``'s heartbeat stopped answering."""
        self.engines.heartbeat_lost(engine)

    # -- the end

    async def stop(self) -> None:
        """Stop the engines and fail whatever is left undone (the pool is shut down)."""
        dispatch = self.dispatch
        for attempt in list(dispatch.attempts.values()):
            dispatch.finish(attempt)
        await self.engines.stop()
        left = [a.task for a in dispatch.attempts.values()] + list(dispatch.queued_tasks())
        for task in left:
            dispatch.resolve(task, error=EngineDied("the pool was shut down"))
        self.bridge.cancel_background()

    def cleanup(self) -> None:
        """Remove the pool's files (engines' stderr), once the engines are stopped."""
        self._stderr_dir.cleanup()
