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

import asyncio
import concurrent.futures
import tempfile
import weakref
from dataclasses import dataclass, field
from typing import Any

from .. import shared_memory
from ..errors import EngineDied
from . import output
from .activity import Activity
from .control import Control
from .dispatch import Dispatcher
from .engine_state import EngineRecord
from .engines import EngineSet
from .kept import KEEP_OVER, KeptResults
from .launch import Launcher
from .loop import Bridge
from .prompts import Prompts
from .recompute import Recomputer
from .requests import Requests
from .scheduler import Scheduler
from .stacks import Stacks
from .status import Stats

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
    #: Results of at least this many bytes stay on their engine until needed (None: never).
    keep_over: int | None = KEEP_OVER
    #: Large buffers to and from engines on this host go through shared memory
    #: (True, False or "auto": see :mod:`parallel_kernel.shared_memory`).
    shared_memory: bool | str = "auto"
    #: The packed ``initializer(*initargs)`` call every engine runs before it takes
    #: tasks (an ``apply_request``'s content and buffers), or ``None``.
    initializer: tuple[dict[str, Any], list[Any]] | None = None


class PoolCore:
    """Everything of one pool that lives on the loop thread."""

    def __init__(self, options: PoolOptions) -> None:
        self.options = options
        #: Where this process reads shared memory, told to engines (None: not used).
        self.place = shared_memory.place() if options.shared_memory else None
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
        self.stacks = Stacks(self)
        self.activity = Activity()
        self.stats = Stats(self)
        self.prompts = Prompts(self._settle)
        self.kept = KeptResults(self)
        self.recompute = Recomputer(self)
        self.scheduler.affinity = lambda job: self.kept.holders(job.inputs)
        #: What this pool's futures carry to say whose they are (a token: a done
        #: future keeps nothing of the pool alive).
        self.token = object()
        #: No new tasks are accepted (shutdown began).
        self.closed = False
        #: The engines were stopped.
        self.stopped = False
        #: Why the pool can no longer run tasks (no engine can be started), or ``None``.
        self.broken: str | None = None
        #: The futures of the pool's tasks (a task holds its future until it is done).
        self.futures: weakref.WeakSet[Any] = weakref.WeakSet()
        #: Done once the pool has wound down (see :mod:`.lifecycle`); ``None`` before.
        self.winding: concurrent.futures.Future[None] | None = None

    @property
    def records(self) -> dict[int, EngineRecord]:
        """The engine records, by engine id."""
        return self.engines.records

    def in_order(self) -> list[EngineRecord]:
        """The engine records in engine id order (as every per-engine listing shows them)."""
        return sorted(self.records.values(), key=lambda e: e.id)

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

    def on_input_request(self, engine: EngineRecord, msg: dict[str, Any]) -> None:
        """A task on ``engine`` calls ``input()``: ask here, answer on the loop."""
        connection = engine.connection
        content = msg["content"]
        task_id = msg["parent_header"].get("msg_id")
        if connection is None:
            return
        if task_id not in self.dispatch.attempts:
            connection.answer_input(msg, {"value": "", "error": "no task of this pool asks"})
            return
        self.prompts.ask(
            f"[engine {engine.id}] {content.get('prompt', '')}",
            bool(content.get("password")),
            lambda reply: self.bridge.call_soon(connection.answer_input, msg, reply),
            lambda: task_id in self.dispatch.attempts,
        )

    def _settle(self, callback: Any) -> None:
        """Run ``callback`` on the loop once it has handled the messages already read."""
        self.bridge.call_soon(self.bridge.loop.call_soon, callback)

    def on_heartbeat_lost(self, engine: EngineRecord) -> None:
        """``engine``'s heartbeat stopped answering."""
        self.engines.heartbeat_lost(engine)

    # -- the end

    async def work_done(self) -> None:
        """Return once every task submitted to the pool is done (no new ones come: it is closed)."""
        loop = asyncio.get_running_loop()
        while pending := [f for f in list(self.futures) if not f.done()]:
            for future in pending:
                waiter = loop.create_future()
                future.add_done_callback(
                    lambda _f, waiter=waiter: loop.call_soon_threadsafe(_wake, waiter)
                )
                await waiter

    async def stop(self) -> None:
        """Stop the engines and fail whatever is left undone (the pool is shut down)."""
        dispatch = self.dispatch
        for attempt in list(dispatch.attempts.values()):
            dispatch.finish(attempt)
        await self.kept.fetch_all()
        self.kept.release_all()
        await self.engines.stop()
        left = [a.task for a in dispatch.attempts.values()] + list(dispatch.queued_tasks())
        for task in left:
            dispatch.resolve(task, error=EngineDied("the pool was shut down"))
        self.prompts.close()
        self.bridge.cancel_background()

    async def kill(self) -> None:
        """Stop at once: kill the engines the pool started and fail what is left undone."""
        self.closed = self.stopped = True
        await self.engines.abandon()
        dispatch = self.dispatch
        left = [a.task for a in dispatch.attempts.values()] + list(dispatch.queued_tasks())
        for task in left:
            dispatch.resolve(task, error=EngineDied("the pool was stopped at once"))
        self.prompts.close()
        self.bridge.cancel_background()

    def cleanup(self) -> None:
        """Remove the pool's files (engines' stderr), once the engines are stopped."""
        self._stderr_dir.cleanup()
        shared_memory.sweep()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
