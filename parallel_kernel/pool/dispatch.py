"""Dispatch: tasks from the queue to engines, and replies and output back to futures.

Submitted tasks wait in an inbox that the loop thread empties in one go (a
burst of submits costs one wake-up), then in the scheduler's queue.  Tasks
sent to one engine's task channel together go out as one
``apply_batch_request``.  Replies are matched to their :class:`Attempt` by
msg_id; a task's future is resolved once its reply and all its output are
in (or once :data:`OUTPUT_GRACE` has passed since the reply).  Whatever goes
wrong with an attempt goes through :func:`tasks.decide`, the one retry rule.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .. import protocol, serialize, shared_memory
from ..errors import (
    DependencyError,
    DeserializationError,
    EngineDied,
    PoolBroken,
    RemoteError,
    TaskAborted,
    TaskInterrupted,
    TaskTimeout,
    rebuilt,
)
from . import futures, output
from .costs import Costs
from .death import Cause, engine_died
from .kept import kept_of
from .recompute import recipe_of
from .tasks import Attempt, Setback, Task, TaskState, decide

if TYPE_CHECKING:
    from .core import PoolCore
    from .engine_state import EngineRecord

#: Seconds a finished task waits for the rest of its output (IOPub ``idle``).
OUTPUT_GRACE = 2.0

log = logging.getLogger(__name__)

#: What a resolved task keeps of its reply: that there was one.
_ANSWERED: dict[str, Any] = {"content": {}, "metadata": {}, "buffers": []}


class Dispatcher:
    """Moves tasks between the pool's queue, the engines and the futures (loop thread only)."""

    def __init__(self, core: PoolCore) -> None:
        self.core = core
        self.scheduler = core.scheduler
        self.costs = Costs()
        #: Attempts awaiting their reply or output, by msg_id.
        self.attempts: dict[str, Attempt] = {}
        #: Tasks submitted from other threads, waiting for the loop to take them.
        self._inbox: collections.deque[Task] = collections.deque()
        self._inbox_wakeup = False
        self._schedule_pending = False

    # -- intake

    def submit(self, task: Task) -> None:
        """Hand a new task to the loop (from any thread)."""
        self._inbox.append(task)
        if not self._inbox_wakeup:
            self._inbox_wakeup = True
            self.core.bridge.call_soon(self._take_inbox)

    def _take_inbox(self) -> None:
        """Queue every task submitted since the last wake-up, then schedule once."""
        self._inbox_wakeup = False
        inbox = self._inbox
        while inbox:
            self._enqueue(inbox.popleft())
        self.fail_if_no_engines()
        self.schedule()

    def _enqueue(self, task: Task) -> None:
        """Put a task in the scheduler's queue with the slot share it takes."""
        if task.state is TaskState.DONE or task.future.done():
            self.release(task)
            return
        task.job.task = task
        # a task with a timeout is timed from its own busy status, which only the
        # shell channel publishes: it goes there, alone
        task.job.cost = 1.0 if task.timeout is not None else self.costs.cost(task.kind)
        self.scheduler.queue.append(task.job)

    def queued_tasks(self) -> Iterator[Task]:
        """The tasks waiting in the pool's queue (not sent anywhere)."""
        for job in self.scheduler.queue:
            if job.task is not None:
                yield job.task

    # -- sending

    def schedule_soon(self) -> None:
        """Schedule once this loop iteration's replies are all in (they may free many slots)."""
        if not self._schedule_pending and self.scheduler.queue:
            self._schedule_pending = True
            self.core.bridge.loop.call_soon(self._scheduled)

    def _scheduled(self) -> None:
        self._schedule_pending = False
        self.schedule()

    def schedule(self) -> None:
        """Send every queued task that an engine can take now."""
        batches: dict[int, list[Task]] = {}
        records = self.core.records
        for job, engine_id in self.scheduler.assignments():
            task: Task | None = job.task
            if task is None or task.state is TaskState.DONE:  # resolved while queued
                if engine_id >= 0:
                    self.scheduler.finished(engine_id, job.cost)
                if task is not None:
                    self.release(task)
                continue
            if engine_id < 0:
                self.resolve(task, error=self.scheduler.reason(job))
                continue
            engine = records[engine_id]
            if not self._prepare(task, engine):
                self.scheduler.finished(engine_id, job.cost)
                continue
            connection = engine.connection
            if connection is None:
                self._unsent(engine, [task], ConnectionError("its sockets are closed"))
                continue
            if (
                task.msg_type == protocol.APPLY_REQUEST
                and task.timeout is None
                and connection.has_task_channel
            ):
                if job.cost < 1.0:
                    batches.setdefault(engine_id, []).append(task)
                    continue
                channel = "task"
            else:
                channel = "shell"
            metadata = engine.start_metadata if channel == "task" else None
            try:
                msg_id = connection.send(channel, task.msg_type, *task.request, metadata)
            except Exception as exc:
                self._unsent(engine, [task], exc)
                continue
            self._sent(engine, task, channel, msg_id)
        for engine_id, tasks in batches.items():
            self._send_batch(records[engine_id], tasks)

    def _prepare(self, task: Task, engine: EngineRecord) -> bool:
        """Make the request of the task's attempt on ``engine``: with its inputs (all
        done), each carried or, if kept on an engine, referred to, and its large buffers
        in shared memory if the engine is on this host.  False if an input cannot be
        had (the task then fails, saying which)."""
        inputs = task.job.inputs
        if not inputs:
            task.request = task.content, task.buffers
        elif not self._with_inputs(task, engine):
            return False
        if engine.shared is not None:
            task.request = shared_memory.offload(*task.request, engine.shared)
        return True

    def _with_inputs(self, task: Task, engine: EngineRecord) -> bool:
        """Set the task's request with its inputs; False if one cannot be had now
        (the task then fails, or waits for a lost input to be made again)."""
        kept = self.core.kept
        inputs = task.job.inputs
        values = []
        try:
            for index, (name, future) in enumerate(inputs):
                if kept_of(future) is None:
                    values.append(future.result())
                    continue
                try:
                    values.append(kept.input_for(name, future, engine))
                except DependencyError:
                    again = self.core.recompute.redo(future)
                    if again is None:
                        raise
                    inputs[index] = (name, again)
                    self._enqueue(task)  # it waits for the value made again
                    return False
            task.request = serialize.with_inputs(task.content, task.buffers, values)
        except (serialize.SerializationError, DependencyError) as exc:
            self.resolve(task, error=exc)
            return False
        return True

    def _send_batch(self, engine: EngineRecord, tasks: list[Task]) -> None:
        """Send tasks of one engine's task channel together, as one message if several."""
        connection = engine.connection
        try:
            if len(tasks) == 1:
                [task] = tasks
                msg_ids = [
                    connection.send("task", task.msg_type, *task.request, engine.start_metadata)
                ]
            else:
                msg_ids = connection.send_batch([t.request for t in tasks], engine.start_metadata)
        except Exception as exc:
            self._unsent(engine, tasks, exc)
            return
        batch = msg_ids[0] if len(msg_ids) > 1 else None
        for task, msg_id in zip(tasks, msg_ids, strict=True):
            self._sent(engine, task, "task", msg_id).batch = batch

    def _sent(self, engine: EngineRecord, task: Task, channel: str, msg_id: str) -> Attempt:
        """Record that ``task`` went to ``engine`` as request ``msg_id``: its new attempt."""
        attempt = task.send(engine.id, channel, msg_id)
        task.future.connection_file = engine.connection_file
        self.attempts[msg_id] = attempt
        engine.inflight[msg_id] = attempt
        engine.busy()
        return attempt

    def _unsent(self, engine: EngineRecord, tasks: list[Task], exc: Exception) -> None:
        """A send failed: nothing reached the engine, so the tasks go elsewhere, free."""
        log.warning("Engine %d is unreachable: %s", engine.id, exc)
        for task in tasks:
            shared_memory.discard(task.request[0])
            self.scheduler.finished(engine.id, task.job.cost)
            self._apply(
                task,
                Setback.NEVER_STARTED,
                engine.id,
                EngineDied(f"engine {engine.id} is unreachable: {exc}"),
            )

    # -- what engines report

    def on_reply(self, engine: EngineRecord, channel: str, msg: dict[str, Any]) -> None:
        """A reply on shell, control or task: a request's, or an attempt's."""
        if self.core.requests.answer(msg):
            return
        msg_id = msg["parent_header"].get("msg_id")
        attempt = self.attempts.get(msg_id)
        if attempt is None or attempt.reply is not None:
            return
        engine.inflight.pop(msg_id, None)
        # the task's idle status may have come first (IOPub and shell are not ordered)
        engine.idle()
        self.scheduler.finished(engine.id, attempt.task.job.cost)
        if not attempt.task.answer(attempt, msg):
            self.attempts.pop(msg_id, None)
            self.schedule_soon()
            return
        metadata = msg.get("metadata", {})
        if channel == "task":
            if metadata.get("outputs") == 0:
                attempt.output_done = True
            self.costs.learn(attempt.task.kind, metadata.get("runtime"))
        if attempt.output_done or msg["content"].get("status") == "aborted":
            self.finish(attempt)
        else:
            self.core.bridge.loop.call_later(OUTPUT_GRACE, self.finish, attempt)
        self.schedule_soon()

    def on_started(self, engine: EngineRecord, msg_ids: list[str]) -> None:
        """The engine starts the first of these requests; the rest (its batch) may start
        without another word, so they count as possibly run, though not running yet."""
        for position, msg_id in enumerate(msg_ids):
            attempt = self.attempts.get(msg_id)
            if attempt is None:
                continue
            if position == 0:
                if attempt.task.start(attempt):
                    self.core.activity.started(engine.id, attempt.task)
            else:
                attempt.started = True

    def on_iopub(self, engine: EngineRecord, msg: dict[str, Any]) -> None:
        """Status and output of the engine's requests."""
        engine.iopub_seen.set()
        attempt = self.attempts.get(msg["parent_header"].get("msg_id"))
        msg_type = msg["msg_type"]
        content = msg["content"]
        if msg_type == "status":
            if attempt is None:
                return
            state = content.get("execution_state")
            if state == "busy" and attempt.reply is None and attempt.abort in (None, "rerun"):
                # (a request being aborted is answered after a busy status too)
                if attempt.task.start(attempt):
                    self.core.activity.started(engine.id, attempt.task)
                self.core.control.started(attempt)
            elif state == "idle":
                attempt.output_done = True
                self.finish(attempt)
            return
        if attempt is None or not attempt.current:
            return
        future = attempt.task.future
        forward = self.core.options.forward_output
        if msg_type == "stream":
            text = content.get("text", "")
            name = content.get("name") or "stdout"
            if name == "stderr":
                future.stderr += text
            else:
                future.stdout += text
            if forward:
                self.core.output.stream(engine.id, name, text, attempt.task.origin)
        elif msg_type in output.RICH_TYPES:
            future.outputs.append(content)
            if forward:
                self.core.output.rich(engine.id, msg_type, content, attempt.task.origin)
        sink = attempt.task.sink
        if sink is not None and msg_type in output.SINK_TYPES:
            try:
                sink(engine.id, msg_type, content)
            except Exception:  # the sink shows output: its failure is not the task's
                log.exception("Showing the output of engine %s failed", engine.id)

    # -- outcomes

    def finish(self, attempt: Attempt) -> None:
        """Turn an answered attempt's reply into its future's outcome (once)."""
        task = attempt.task
        if not attempt.current or task.state is not TaskState.ANSWERED:
            return
        if self.attempts.pop(attempt.msg_id, None) is None:
            return
        msg = attempt.reply
        content = msg["content"]
        metadata = msg.get("metadata", {})
        task.future.metadata = metadata
        status = content.get("status")
        if status == "ok":
            try:
                if task.msg_type != protocol.APPLY_REQUEST:
                    value = None
                elif "kept" in content:
                    engine = self.core.records[attempt.engine_id]
                    value = self.core.kept.record(
                        task.future, engine, content["kept"], recipe_of(task)
                    )
                else:
                    value = serialize.unpack_result(content, msg["buffers"])
            except BaseException as exc:  # user code (a __setstate__): never the loop's end
                self.resolve(task, error=_unpickling_failed(attempt, exc))
            else:
                self.resolve(task, result=value)
        elif status == "aborted":
            if attempt.abort == "interrupt":
                error = TaskInterrupted(
                    "KeyboardInterrupt",
                    "interrupted before it started",
                    [],
                    engine_id=attempt.engine_id,
                )
                self.resolve(task, error=error)
            elif attempt.abort == "stop":
                self.resolve(task, cancelled=True)
            elif attempt.abort == "rerun":
                # a cancel that got no answer in time said False: the task must run
                self._apply(task, Setback.NEVER_STARTED, None, None)
            elif attempt.abort != "cancel":
                self.resolve(task, error=TaskAborted("the engine aborted this task"))
        elif metadata.get("dependencies_met") is False:
            self._apply(task, Setback.UNMET_DEPENDENCY, attempt.engine_id, None)
        else:
            error = self._remote_error(attempt, content, msg["buffers"])
            self._apply(task, Setback.TASK_ERROR, attempt.engine_id, error)

    def _apply(
        self, task: Task, setback: Setback, engine_id: int | None, error: BaseException | None
    ) -> None:
        """Do what the retry policy decides after ``setback``: retry, or fail with ``error``."""
        decision = decide(task, setback, engine_id)
        if not decision.retry:
            if error is not None:
                self.resolve(task, error=error)
            return
        if decision.consumes:
            task.retries -= 1
        job = task.job
        avoid = decision.avoid
        if avoid is not None and (decision.ban or self.scheduler.eligible(job) - {avoid}):
            job.blacklist.add(avoid)
        if task.attempt is not None:
            self.attempts.pop(task.attempt.msg_id, None)
        if task.state is not TaskState.PENDING:
            task.retry()
        self._enqueue(task)
        self.fail_if_no_engines()
        self.schedule()

    def lost(
        self, engine: EngineRecord, attempts: list[Attempt], why: str, cause: Cause | None = None
    ) -> None:
        """An engine died with these attempts in flight: finish, retry or fail each."""
        for attempt in attempts:
            if attempt.reply is not None:
                self.finish(attempt)
            elif attempt.current:
                setback = Setback.ENGINE_LOST if attempt.started else Setback.NEVER_STARTED
                error = engine_died(engine.id, why, cause)
                self._apply(attempt.task, setback, engine.id, error)

    def _remote_error(
        self, attempt: Attempt, content: dict[str, Any], buffers: list[Any]
    ) -> BaseException:
        """The exception a failed reply stands for.

        The task's own exception, rebuilt here with the remote traceback as
        its cause; a :class:`RemoteError` when it cannot be rebuilt (or the
        pool wraps every error), a :class:`TaskInterrupted` for an interrupt.
        """
        task = attempt.task
        ename = content.get("ename", "Error")
        if attempt.timed_out and ename == "KeyboardInterrupt":
            return TaskTimeout(f"the task ran longer than its timeout of {task.timeout:g} s")
        original = None
        if buffers and serialize.is_native_apply(content):
            try:
                original = serialize.unpack_result(content, buffers)
            except BaseException:  # user code (a __setstate__): the error says it without
                original = None
        if not isinstance(original, BaseException):
            original = None
        kind = TaskInterrupted if ename == "KeyboardInterrupt" else RemoteError
        remote = kind(
            ename,
            content.get("evalue", ""),
            content.get("traceback", []),
            engine_id=attempt.engine_id,
            original=original,
        )
        if original is None or kind is TaskInterrupted or self.core.options.wrap_errors:
            return remote
        plain = content.get("plain_traceback")
        return rebuilt(remote, original, plain if isinstance(plain, str) else None)

    def resolve(
        self,
        task: Task,
        result: Any = None,
        error: BaseException | None = None,
        cancelled: bool = False,
    ) -> None:
        """Give the task's future its outcome (once), then let go of the task's data."""
        attempt = task.attempt
        if attempt is not None:
            self.attempts.pop(attempt.msg_id, None)
        if task.finish():
            if attempt is not None and attempt.started:
                ok = error is None and not cancelled
                self.core.activity.ended(attempt.engine_id, task, ok)
            if cancelled:
                futures.cancelled_by_pool(task.future)
            else:
                futures.resolve(task.future, result, error)
        self.release(task)

    @staticmethod
    def release(task: Task) -> None:
        """Let a resolved task's request, reply and future be freed once the user drops them.

        Task, job and future refer to each other; without this, a large argument
        or result would live until the cyclic garbage collector happens to run.
        """
        task.content = {}
        task.buffers = []
        attempt = task.attempt
        if attempt is not None:
            if attempt.reply is not None:
                attempt.reply = _ANSWERED
            # its late events (a timer, the rest of its output) now count as stale
            task.attempt = None
        task.job.task = None
        futures.release(task.future)

    def fail_if_no_engines(self) -> None:
        """With every engine dead for good, the pool is broken: fail the queued tasks
        instead of holding them (and, from then on, every submit)."""
        core = self.core
        if core.stopped or any(e.living for e in core.records.values()):
            return
        if core.broken is None:
            rejected = core.engines.rejected
            if rejected and len(rejected) == len(core.records):
                core.broken = "the initializer failed on every engine"
            elif rejected:
                core.broken = "every engine of the pool is dead or failed its initializer"
            else:
                core.broken = "every engine of the pool is dead"
        for task in list(self.queued_tasks()):
            self.resolve(task, error=PoolBroken(core.broken))
        self.scheduler.queue.clear()


def _unpickling_failed(attempt: Attempt, exc: BaseException) -> DeserializationError:
    """The error of a result that cannot be unpickled here, naming the task and its engine."""
    name = (attempt.task.kind or "").rpartition(":")[0] or "the task"
    reason = exc.__cause__ if isinstance(exc, DeserializationError) and exc.__cause__ else exc
    error = DeserializationError(
        f"the result of {name} (engine {attempt.engine_id}) cannot be unpickled here: "
        f"{type(reason).__name__}: {reason}",
        "result",
    )
    error.__cause__ = reason
    return error
