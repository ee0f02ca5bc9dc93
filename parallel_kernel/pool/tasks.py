"""Tasks and their attempts: the task state machine and the one retry policy.  No I/O.

A :class:`Task` is what a future stands for; every time the pool sends it to
an engine it makes a new :class:`Attempt`.  Replies, output and timers carry
the attempt they belong to, so an event of an earlier attempt (the task was
since retried elsewhere) is recognised by identity and ignored.

The life of a task, one method per move::

    PENDING --send--> SENT --start--> RUNNING --answer--> ANSWERED --finish--> DONE
       ^               |                 |                    |
       +----retry------+-----------------+--------------------+
    (any state but DONE) --finish--> DONE

``retry`` and the outcome of a failed attempt are decided in one place,
:func:`decide`: an attempt that provably never started (the engine died
before saying it started it, or the send failed) is sent elsewhere without
using a retry; only an attempt that may have run consumes one.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from typing import Any

from . import futures
from .output import OutputCallback


class TaskState(enum.StrEnum):
    """Where a task is, as the pool knows it."""

    #: Submitted, waiting in the pool for an engine (or for its dependencies).
    PENDING = "pending"
    #: Sent to an engine, which has not said it started it.
    SENT = "sent"
    #: The engine said it started it.
    RUNNING = "running"
    #: Its reply is in; waiting for the rest of its output.
    ANSWERED = "answered"
    #: Its future is resolved (result, error or cancelled).
    DONE = "done"


class StateError(RuntimeError):
    """A move the state machine does not allow (a bug in the pool)."""


class Attempt:
    """One send of a task to an engine: the request's msg_id and what became of it."""

    __slots__ = (
        "abort",
        "batch",
        "channel",
        "engine_id",
        "msg_id",
        "output_done",
        "reply",
        "started",
        "task",
        "timed_out",
        "timer",
    )

    def __init__(self, task: Task, engine_id: int, channel: str, msg_id: str) -> None:
        self.task = task
        self.engine_id = engine_id
        #: ``"task"`` (the engine's task channel) or ``"shell"``.
        self.channel = channel
        self.msg_id = msg_id
        #: The msg_id of the first task of the message it was sent in with other tasks
        #: (its reply may wait for theirs), or ``None`` if it was sent alone.
        self.batch: str | None = None
        #: The engine said it started this attempt (or answered it).
        self.started = False
        self.reply: dict[str, Any] | None = None
        #: The engine's ``idle`` status (or reply metadata) says all output is in.
        self.output_done = False
        #: Why an abort of this attempt was asked: ``"cancel"``, ``"interrupt"``, ``"rerun"``
        #: (a cancel the engine did not answer in time: if it aborts, send the task again),
        #: ``"stop"`` (an abandoned map: if it aborts, the future is cancelled) or ``None``.
        self.abort: str | None = None
        self.timed_out = False
        self.timer: Any = None

    @property
    def batched(self) -> bool:
        """Whether it was sent in one message with other tasks."""
        return self.batch is not None

    @property
    def current(self) -> bool:
        """Whether this is still the task's live attempt (not an earlier one)."""
        return self.task.attempt is self

    def cancel_timer(self) -> None:
        """Stop this attempt's timeout timer, if it has one."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def __repr__(self) -> str:
        return f"<Attempt {self.msg_id} of {self.task!r} on engine {self.engine_id}>"


class Task:
    """One request the pool runs on behalf of a future, across its attempts."""

    __slots__ = (
        "attempt",
        "attempts",
        "buffers",
        "content",
        "future",
        "job",
        "kind",
        "msg_type",
        "name",
        "origin",
        "request",
        "retries",
        "retry_on_error",
        "sink",
        "state",
        "timeout",
    )

    def __init__(
        self,
        future: Any,
        msg_type: str,
        content: dict[str, Any],
        buffers: list[Any],
        job: Any,
        retries: int = 0,
        retry_on_error: bool = False,
        timeout: float | None = None,
        kind: str | None = None,
        sink: OutputCallback | None = None,
        name: str | None = None,
    ) -> None:
        self.future = future
        self.msg_type = msg_type
        self.content = content
        self.buffers = buffers
        self.job = job
        #: Attempts that may have run that it may still use up.
        self.retries = retries
        self.retry_on_error = retry_on_error
        self.timeout = timeout
        #: What its function's tasks have in common, for run-time estimates.
        self.kind = kind
        #: Where output should be shown when forwarded (the submitting cell).
        self.origin: dict[str, Any] | None = None
        #: Called with ``(engine_id, msg_type, content)`` for each output as it arrives
        #: (the parallel magics), from the pool's loop thread.
        self.sink = sink
        #: What it is called where people look (the dashboard), if not its function's name.
        self.name = name
        self.state = TaskState.PENDING
        #: ``(content, buffers)`` of the current attempt's request (inputs added).
        self.request: tuple[dict[str, Any], list[Any]] = (content, buffers)
        self.attempt: Attempt | None = None
        #: How many times it was sent.
        self.attempts = 0

    # -- transitions: each checks where it comes from

    def _move(self, allowed: tuple[TaskState, ...], to: TaskState) -> None:
        if self.state not in allowed:
            raise StateError(f"a {self.state} task cannot become {to}")
        self.state = to

    def send(self, engine_id: int, channel: str, msg_id: str) -> Attempt:
        """PENDING -> SENT: a new attempt on ``engine_id``."""
        self._move((TaskState.PENDING,), TaskState.SENT)
        attempt = Attempt(self, engine_id, channel, msg_id)
        self.attempt = attempt
        self.attempts += 1
        self.future.engine_id = engine_id
        self.future.msg_id = msg_id
        return attempt

    def start(self, attempt: Attempt) -> bool:
        """SENT -> RUNNING, when the engine says it started ``attempt``; False if it is stale."""
        attempt.started = True
        if not attempt.current or self.state is not TaskState.SENT:
            return False
        self._move((TaskState.SENT,), TaskState.RUNNING)
        futures.notify_running(self.future)
        return True

    def answer(self, attempt: Attempt, reply: dict[str, Any]) -> bool:
        """SENT or RUNNING -> ANSWERED with ``reply``; False if the attempt is stale."""
        if not attempt.current or self.state not in (TaskState.SENT, TaskState.RUNNING):
            return False
        attempt.started = True
        attempt.reply = reply
        attempt.cancel_timer()
        self.state = TaskState.ANSWERED
        return True

    def retry(self) -> None:
        """Back to PENDING for a new attempt; what the last one printed is forgotten."""
        self._move((TaskState.SENT, TaskState.RUNNING, TaskState.ANSWERED), TaskState.PENDING)
        if self.attempt is not None:
            self.attempt.cancel_timer()
        self.attempt = None
        future = self.future
        future.stdout = future.stderr = ""
        future.outputs = []

    def finish(self) -> bool:
        """Any state -> DONE; False if it was done already.  The caller resolves the future."""
        if self.state is TaskState.DONE:
            return False
        self.state = TaskState.DONE
        if self.attempt is not None:
            self.attempt.cancel_timer()
        return True

    def __repr__(self) -> str:
        return f"<Task {self.msg_type} {self.state}>"


# -- the retry policy


class Setback(enum.Enum):
    """What went wrong with an attempt."""

    #: The engine died or could not be reached before the attempt started.
    NEVER_STARTED = "never started"
    #: The engine died while the attempt may have been running.
    ENGINE_LOST = "engine lost"
    #: The engine lacks what the task requires (``@require``): it did not run there.
    UNMET_DEPENDENCY = "unmet dependency"
    #: The task raised.
    TASK_ERROR = "task error"


@dataclass(frozen=True)
class Decision:
    """What to do with a task after a setback."""

    retry: bool
    #: The retry uses up one of the task's ``retries``.
    consumes: bool = False
    #: Run the retry elsewhere than on this engine, if another one can take it.
    avoid: int | None = None
    #: Never run it on ``avoid`` again, even if no other engine can take it.
    ban: bool = False


def decide(task: Task, setback: Setback, engine_id: int | None) -> Decision:
    """The one retry rule of the pool.

    Work that provably never ran is never lost and never counted: it runs
    elsewhere.  An attempt that may have run consumes one of ``retries`` (so
    a task with ``retries=0`` runs at most once); a task's own exception is
    retried only with ``retry_on_error``, and never after its timeout.
    """
    if task.future.done():
        return Decision(retry=False)
    if setback is Setback.NEVER_STARTED:
        return Decision(retry=True, avoid=engine_id)
    if setback is Setback.UNMET_DEPENDENCY:
        return Decision(retry=True, avoid=engine_id, ban=True)
    if setback is Setback.TASK_ERROR:
        timed_out = task.attempt is not None and task.attempt.timed_out
        if not task.retry_on_error or timed_out:
            return Decision(retry=False)
    if task.retries > 0:
        return Decision(retry=True, consumes=True, avoid=engine_id)
    return Decision(retry=False)


def chunk_name(fn: Any) -> str | None:
    """The name under which a chunk of ``map`` items shows: its function's, and "(map)"."""
    inner = fn.args[0] if isinstance(fn, functools.partial) and fn.args else fn
    name = getattr(inner, "__qualname__", None)
    return f"{name} (map)" if isinstance(name, str) else None


def kind_of(fn: Any) -> str | None:
    """What tasks of ``fn`` have in common, for run-time estimates: its name and code.

    (Every lambda has the same name; its code object tells them apart.)
    """
    target = fn.func if isinstance(fn, functools.partial) else fn
    name = getattr(target, "__qualname__", None)
    if not isinstance(name, str):
        return None
    code = getattr(target, "__code__", None)
    return f"{getattr(target, '__module__', None)}.{name}:{id(code) if code else ''}"
