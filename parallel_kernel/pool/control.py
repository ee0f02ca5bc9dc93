"""Stopping tasks: cancel, interrupt and run-time timeouts.

A task still in the pool's queue is cancelled there.  One already sent is
aborted at its engine (``abort_request`` on control), which answers whether
the engine had not started it yet: only then is the cancel a success, so a
cancelled task never runs.  An engine that does not answer within
:data:`CANCEL_WAIT` gets a False (the task will run: if the abort lands
late, the task is sent again).  A running task is interrupted with an
``interrupt_request`` that names it, so the engine interrupts that task or
nothing; an engine the pool started that does not answer within
:data:`INTERRUPT_WAIT` gets SIGINT.  A task that runs past its ``timeout``
is interrupted, and failed with ``TaskTimeout`` if it has not stopped
:data:`INTERRUPT_GRACE` seconds later.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
from typing import TYPE_CHECKING

from .. import protocol
from ..errors import EngineDied, EngineTimeout, TaskTimeout
from . import futures
from .tasks import Attempt, Task, TaskState

if TYPE_CHECKING:
    from .core import PoolCore
    from .engine_state import EngineRecord

#: Seconds ``cancel()`` waits for an engine's answer to its abort before it says False.
CANCEL_WAIT = 0.25
#: Seconds an interrupt waits for an engine's answer (then SIGINT, for an engine the pool
#: started, or the request is left to arrive).
INTERRUPT_WAIT = 0.3
#: Seconds a timed-out task gets to stop after its interrupt before it is failed anyway.
INTERRUPT_GRACE = 5.0


class Abort(enum.Enum):
    """An engine's answer to the abort of one request."""

    #: It had not started the request: it never will (it answers it ``aborted``).
    PENDING = "pending"
    #: It had started (or finished) it, or cannot be asked.
    STARTED = "started"
    #: No answer in time: the abort may still take effect.
    UNANSWERED = "unanswered"


class TaskHandle:
    """What a future may ask of its task: cancel it, interrupt it, its stack (any thread)."""

    __slots__ = ("control", "task")

    def __init__(self, control: Control, task: Task) -> None:
        self.control = control
        self.task: Task | None = task

    def cancel(self) -> bool:
        """Cancel the task if it has not started; return whether it was."""
        task = self.task
        return task is not None and self.control.cancel(task)

    def interrupt(self) -> bool:
        """Interrupt the task if it is running now; return whether an interrupt was sent."""
        task = self.task
        return task is not None and self.control.interrupt(task)

    def stack(self) -> str:
        """The task's live stack (see :mod:`.stacks`)."""
        task = self.task
        if task is None:
            raise RuntimeError("the task is not running (it has finished)")
        return self.control.core.stacks.of_task(task, "the task")


class Control:
    """Cancel, interrupt and timeouts of one pool's tasks."""

    def __init__(self, core: PoolCore) -> None:
        self.core = core

    # -- cancel

    def cancel(self, task: Task) -> bool:
        """Cancel ``task``: locally if it is queued, else by aborting it at its engine."""
        bridge = self.core.bridge
        if bridge.on_loop:
            return self._cancel_queued(task)
        try:
            return bridge.run(self._cancel(task), timeout=CANCEL_WAIT + 5)
        except (concurrent.futures.TimeoutError, RuntimeError):
            return False

    def _cancel_queued(self, task: Task) -> bool:
        """Take a task out of the pool's queue; True if it was there (or not queued yet)."""
        queue = self.core.scheduler.queue
        if task.job in queue:
            queue.remove(task.job)
            self._cancelled(task)
            return True
        if task.state is TaskState.PENDING:  # still in the inbox
            self._cancelled(task)
            return True
        return False

    def _cancelled(self, task: Task) -> None:
        task.finish()
        self.core.dispatch.release(task)

    async def _cancel(self, task: Task) -> bool:
        """Cancel on the loop: dequeue it, or abort its attempt if the engine has not started it.

        The engine gets :data:`CANCEL_WAIT` to answer.  Silence means "not
        cancelled": the abort may still reach the engine before the task, which
        then answers it ``aborted`` without running it, and the task is sent
        again (``Dispatcher.finish``), so a task whose cancel said False runs.
        """
        if self._cancel_queued(task):
            return True
        attempt = task.attempt
        if attempt is None or task.state is not TaskState.SENT:
            return False
        engine = self.core.records[attempt.engine_id]
        if engine.connection is None or attempt.msg_id not in engine.inflight:
            return False
        attempt.abort = "cancel"
        answer = await self._abort(engine, attempt, CANCEL_WAIT)
        if answer is Abort.PENDING:
            self._cancelled(task)
            return True
        if answer is Abort.UNANSWERED:
            attempt.abort = "rerun"
            return False
        attempt.abort = None
        attempt.started = True
        if attempt.reply is not None:
            self.core.dispatch.finish(attempt)
        return False

    async def _abort(self, engine: EngineRecord, attempt: Attempt, wait: float) -> Abort:
        """Ask the engine to abort ``attempt`` and wait up to ``wait`` seconds for its answer."""
        requests = self.core.requests
        try:
            waiter = requests.send(
                engine, "control", protocol.ABORT_REQUEST, {"msg_ids": [attempt.msg_id]}
            )
        except ConnectionError:
            return Abort.STARTED
        try:
            reply = await asyncio.wait_for(waiter, wait)
        except TimeoutError:
            requests.forget(waiter)
            return Abort.UNANSWERED
        except (EngineDied, ConnectionError):
            return Abort.STARTED
        if attempt.msg_id in reply["content"].get("pending", []):
            return Abort.PENDING
        return Abort.STARTED

    # -- stop many (an abandoned map)

    def stop(self, tasks: list[Task], *, interrupt: bool) -> None:
        """Cancel these tasks where they wait and, with ``interrupt``, interrupt those running;
        at most about :data:`CANCEL_WAIT` + :data:`INTERRUPT_WAIT` seconds (from a user thread).

        A queued task, or one its engine agrees to abort, ends cancelled (an
        abort the engine reads late cancels it then); an interrupted one fails
        with ``TaskInterrupted``; without ``interrupt`` a running one finishes.
        """
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            self.core.bridge.run(
                self._stop(tasks, interrupt), timeout=CANCEL_WAIT + INTERRUPT_WAIT + 5
            )

    async def _stop(self, tasks: list[Task], interrupt: bool) -> None:
        """Stop ``tasks`` on the loop: cancel the queued ones here, abort those sent and
        not started (per engine, in one request), and interrupt those running if asked."""
        waiting: dict[int, list[Attempt]] = {}
        running: list[Attempt] = []
        for task in tasks:
            if self._cancel_queued(task):
                futures.cancelled_by_pool(task.future)
                continue
            attempt = task.attempt
            if attempt is None or attempt.reply is not None:
                continue
            if attempt.started:
                running.append(attempt)
            elif self.core.records[attempt.engine_id].connection is not None:
                attempt.abort = "stop"
                waiting.setdefault(attempt.engine_id, []).append(attempt)
        answers = await asyncio.gather(
            *(self._abort_many(self.core.records[e], a) for e, a in waiting.items())
        )
        running += [attempt for started in answers for attempt in started]
        if interrupt and running:
            await asyncio.gather(
                *(self.interrupt_attempt(self.core.records[a.engine_id], a) for a in running),
                return_exceptions=True,
            )

    async def _abort_many(self, engine: EngineRecord, attempts: list[Attempt]) -> list[Attempt]:
        """Abort these attempts at ``engine`` in one request; return those that had started."""
        requests = self.core.requests
        waiter = requests.send(
            engine, "control", protocol.ABORT_REQUEST, {"msg_ids": [a.msg_id for a in attempts]}
        )
        try:
            reply = await asyncio.wait_for(waiter, CANCEL_WAIT)
        except TimeoutError:
            requests.forget(waiter)
            return []
        except (EngineDied, ConnectionError):
            return []
        started = set(reply["content"].get("started", []))
        for attempt in attempts:
            if attempt.msg_id in started:
                attempt.abort = None
                attempt.started = True
        return [a for a in attempts if a.msg_id in started and a.reply is None]

    # -- interrupt

    def interrupt(self, task: Task) -> bool:
        """Interrupt ``task`` if it is running now (from a user thread)."""
        return self.core.bridge.run(self._interrupt(task), timeout=INTERRUPT_WAIT * 2 + 5)

    async def _interrupt(self, task: Task) -> bool:
        """Interrupt on the loop, only if the task is what its engine runs (never another one)."""
        attempt = task.attempt
        if attempt is None or task.state not in (TaskState.SENT, TaskState.RUNNING):
            return False
        engine = self.core.records[attempt.engine_id]
        if not self._at_head(engine, attempt):
            return False
        if attempt.batched and len(engine.inflight) > 1:
            # its reply may be waiting for the rest of its batch while the next task runs
            return False
        if attempt.channel == "task" and not attempt.started:
            # the task channel may still be carrying it, and a SIGINT that reaches an
            # engine between tasks is ignored: an abort settles whether it started
            attempt.abort = "interrupt"
            answer = await self._abort(engine, attempt, INTERRUPT_WAIT)
            if answer is Abort.PENDING:
                return True
            if answer is Abort.STARTED:
                attempt.abort = None
            # unanswered: if the abort lands first, the task fails as interrupted
        if attempt.reply is not None or not attempt.current:
            return False
        return await self.interrupt_attempt(engine, attempt)

    @staticmethod
    def _at_head(engine: EngineRecord, attempt: Attempt) -> bool:
        """Whether ``attempt`` is what its engine runs (or runs next) of the pool's requests."""
        if attempt.msg_id not in engine.inflight:
            return False
        if attempt.channel == "shell":
            return attempt.started
        head = next((a for a in engine.inflight.values() if a.channel == "task"), None)
        return head is attempt

    async def interrupt_attempt(self, engine: EngineRecord, attempt: Attempt) -> bool:
        """Interrupt ``attempt`` and nothing else; return whether an interrupt went out.

        An engine that takes targeted interrupts is asked to interrupt that
        request only if it runs.  If it does not answer within
        :data:`INTERRUPT_WAIT` (its control thread waits for the GIL, which the
        task holds) and the pool started it, the pool sends SIGINT itself, if
        the attempt has started, is still unanswered and no later request of
        that engine has reported its start; the request, read late, then
        interrupts nothing.  Otherwise the request is left on its
        way (it interrupts this task, or nothing).
        """
        if not engine.aims_interrupts:
            await self.interrupt_engine(engine)
            return True
        try:
            waiter = self.core.requests.send(
                engine, "control", "interrupt_request", {"msg_id": attempt.msg_id}
            )
        except ConnectionError:
            return False
        try:
            reply = await asyncio.wait_for(waiter, INTERRUPT_WAIT)
        except TimeoutError:
            self.core.requests.forget(waiter)
        except EngineDied:
            return False
        else:
            return bool(reply["content"].get("interrupted", False))
        if attempt.reply is not None or not attempt.current:
            return False
        later_started = any(a.started for a in engine.inflight.values() if a is not attempt)
        if engine.manager is not None and engine.serving and attempt.started and not later_started:
            await engine.manager.interrupt_kernel()
        return True  # else on its way: it interrupts this task, or nothing

    async def interrupt_engine(self, engine: EngineRecord) -> None:
        """Interrupt whatever runs on ``engine``; ``EngineTimeout`` if it does not answer."""
        if engine.manager is not None:
            await engine.manager.interrupt_kernel()
        elif engine.connection is not None:
            waiter = self.core.requests.send(engine, "control", "interrupt_request", {})
            try:
                await asyncio.wait_for(waiter, INTERRUPT_WAIT)
            except TimeoutError:
                self.core.requests.forget(waiter)
                raise EngineTimeout(
                    f"engine {engine.id} did not answer its interrupt within "
                    f"{INTERRUPT_WAIT:g} s (it interrupts what runs once the engine reads it)",
                    [engine.id],
                ) from None

    # -- timeouts

    def started(self, attempt: Attempt) -> None:
        """An attempt started: time it, if its task has a timeout."""
        timeout = attempt.task.timeout
        if timeout is not None and attempt.timer is None:
            attempt.timer = self.core.bridge.loop.call_later(timeout, self._timed_out, attempt)

    def _timed_out(self, attempt: Attempt) -> None:
        """The attempt ran past its timeout: interrupt it, and give it INTERRUPT_GRACE to stop."""
        attempt.timer = None
        if not attempt.current or attempt.reply is not None:
            return
        engine = self.core.records[attempt.engine_id]
        if attempt.msg_id not in engine.inflight:
            return
        attempt.timed_out = True
        self.core.bridge.spawn(self.interrupt_attempt(engine, attempt))
        self.core.bridge.loop.call_later(INTERRUPT_GRACE, self._give_up, attempt)

    def _give_up(self, attempt: Attempt) -> None:
        """The engine ignored the interrupt: fail the future; the engine's reply is dropped."""
        if attempt.current and attempt.reply is None:
            task = attempt.task
            self.core.dispatch.resolve(
                task,
                error=TaskTimeout(
                    f"the task ran longer than its timeout of {task.timeout:g} s and did not "
                    f"stop within {INTERRUPT_GRACE:g} s of its interrupt; engine "
                    f"{attempt.engine_id} is still running it"
                ),
            )

    def interrupt_all(self, engine_id: int | None) -> None:
        """Interrupt whatever runs on one engine, or on all of them (from a user thread);
        ``EngineTimeout`` names engines that did not answer within :data:`INTERRUPT_WAIT`."""
        records = self.core.records
        targets = [records[engine_id]] if engine_id is not None else list(records.values())

        async def interrupt() -> list[BaseException | None]:
            # an engine still starting runs no task, and a SIGINT before its kernel
            # has set up its handlers would end its process
            return await asyncio.gather(
                *(self.interrupt_engine(e) for e in targets if e.serving and e.connection),
                return_exceptions=True,
            )

        outcomes = self.core.bridge.run(interrupt(), timeout=INTERRUPT_WAIT + 5)
        late = [i for e in outcomes if isinstance(e, EngineTimeout) for i in e.engine_ids]
        if late:
            names = ", ".join(map(str, late))
            raise EngineTimeout(
                f"interrupt: no answer from engine(s) {names} within {INTERRUPT_WAIT:g} s; "
                "each interrupts what runs there once it reads the request",
                late,
            )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
