"""The task channel: a socket beside the shell that the main thread serves directly.

A standard ``apply_request`` travels shell ROUTER → shell-channel thread →
main thread → shell-channel thread, with ``busy``/``idle`` published through
the IOPub thread and stdout/stderr flushed after every message: three Python
threads per task.  The task channel is one more ROUTER socket, read by the
main thread's own event loop, that accepts the same signed ``apply_request``
messages and answers ``apply_reply`` on the same socket:

* tasks never interleave with a cell: they run only while the main shell's
  lock is free, and take it when they have to wait (async tasks, large
  replies still being sent); a clear sent on control while a task runs
  comes before the tasks that arrive after it;
* output is parented to the task's request as on the shell channel; no
  ``busy``/``idle`` is published for a task that printed nothing, and a task
  that did publish output gets an ``idle`` after it, so a client knows when
  its output is complete (reply metadata ``outputs`` says how many messages);
* aborts (``abort_request`` on control), interrupts and clears behave as for
  shell requests.

The port is advertised in ``kernel_info_reply["parallel"]["task_port"]`` and
in the connection files that this package's own commands write (``parallel-kernel
engine``); a connection file written by a kernel manager is left as it is.

The channel runs tasks with the kernel's :class:`~.apply.ApplyRunner`, as the
shell channel does, and needs nothing else of the kernel than
:class:`TaskHost` says.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

import zmq

from .. import wire
from ..protocol import (
    APPLY_BATCH_REPLY,
    APPLY_BATCH_REQUEST,
    APPLY_REPLY,
    APPLY_REQUEST,
    APPLY_STARTED,
    LARGE_BUFFER,
    REPORT_START,
    BatchEntry,
    BatchError,
    pack_batch,
    unpack_batch,
)
from .apply import ApplyCall, ApplyRunner
from .compat import OutputCounter, lock_wanted
from .replies import error_content, reply_type

if TYPE_CHECKING:
    pass


class TaskHost(Protocol):
    """All the task channel uses of the kernel (``ParallelKernel`` is one)."""

    #: The kernel's session: its key signs the channel's messages too.
    session: Any
    log: logging.Logger
    engine_id: int

    @property
    def shell_lock(self) -> asyncio.Lock:
        """The lock the main shell holds while it runs a request (a cell, a clear)."""
        ...

    def clear_on_the_way(self) -> bool:
        """Whether a clear from the control channel is on its way to the main shell's lock."""
        ...

    def admit(self, stream: Any, idents: list[bytes], msg: dict[str, Any]) -> bool:
        """Parent the kernel's output to ``msg``; ``False`` if it was aborted (and answered)."""
        ...

    def publish_idle(self, parent: dict[str, Any]) -> None:
        """Publish the ``idle`` status that tells a request's output is complete."""
        ...


#: Seconds a finished task's reply may wait for the rest of its batch before it is sent.
BATCH_FLUSH_INTERVAL = 0.002
#: Seconds of tasks run in one go before the loop serves other messages.
DRAIN_SLICE = 0.005


class _ReplyBatch:
    """The replies to the tasks of one ``apply_batch_request``, sent together."""

    __slots__ = (
        "compact",
        "entries",
        "first",
        "idents",
        "last_runtime",
        "parent",
        "remaining",
        "unreported",
    )

    def __init__(self, idents: list[bytes], parent: bytes, count: int, compact: bool) -> None:
        self.idents = idents
        self.parent = parent
        self.compact = compact
        self.remaining = count
        self.entries: list[BatchEntry] = []
        self.first = 0.0
        self.last_runtime = 0.0
        #: msg_ids of its tasks to report started when the first one starts, if asked.
        self.unreported: list[str] = []


class _Member:
    """One task of a batch, decoded and waiting in the queue."""

    __slots__ = ("batch", "idents", "msg")

    def __init__(self, idents: list[bytes], msg: dict[str, Any], batch: _ReplyBatch) -> None:
        self.idents = idents
        self.msg = msg
        self.batch = batch


class TaskChannel:
    """Serves ``apply_request`` on the task socket from the main thread's loop."""

    def __init__(
        self,
        host: TaskHost,
        runner: ApplyRunner,
        socket: zmq.Socket[Any],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.host = host
        self.runner = runner
        self.socket = socket
        self.log = host.log
        self.codec = wire.Codec(host.session)
        self.outputs = OutputCounter(host.session)
        self.shell_lock = host.shell_lock
        self.queue: deque[Any] = deque()
        self.draining = False
        self._drainer: asyncio.Future[None] | None = None
        self.loop = loop
        loop.add_reader(socket.getsockopt(zmq.FD), self._readable)

    def close(self) -> None:
        """Stop reading the socket (the application closes it)."""
        if not self.socket.closed:
            self.loop.remove_reader(self.socket.getsockopt(zmq.FD))

    # The socket's file descriptor is edge-triggered: it signals that the
    # socket's state may have changed, and is re-armed only by reading
    # ZMQ_EVENTS.  Every path that sends or stops therefore reads the events
    # (``_receive``) before it lets the loop sleep.

    def _readable(self) -> None:
        """The loop's reader callback: drain now, or let the running drain take the messages."""
        if self.draining:
            self._receive()  # re-arms the descriptor; the running drain takes the messages
        else:
            self._drain()

    def _receive(self) -> None:
        """Queue every message the socket holds (and so re-arm its descriptor)."""
        socket = self.socket
        while wire.readable(socket):
            self.queue.append(wire.receive(socket))

    def _drain(self) -> None:
        """Run queued tasks right here while nothing else wants the main shell.

        After ``DRAIN_SLICE`` seconds the rest waits for the next loop turn, so
        shell and control messages queued meanwhile are served between tasks,
        as they are between shell requests.
        """
        self.draining = True
        deadline = time.perf_counter() + DRAIN_SLICE
        while True:
            self._receive()
            if not self.queue:
                self.draining = False
                return
            if self.host.clear_on_the_way():  # let it reach the lock first
                self.loop.call_soon(self._drain)
                return
            if lock_wanted(self.shell_lock):  # a cell (or a clear) holds or awaits the shell
                self._drainer = asyncio.ensure_future(self._drain_holding_lock())
                return
            if time.perf_counter() > deadline:
                self.loop.call_soon(self._drain)
                return
            waiting = self._serve_logged(self.queue.popleft())
            if waiting is not None:
                self._drainer = asyncio.ensure_future(self._drain_holding_lock(waiting))
                return

    async def _drain_holding_lock(self, waiting: Any = None) -> None:
        """Take the main shell's lock (after any cell), finish one task, and go on draining."""
        try:
            async with self.shell_lock:
                if waiting is None:
                    self._receive()
                    if self.queue:
                        waiting = self._serve_logged(self.queue.popleft())
                if waiting is not None:
                    await waiting
        except Exception:
            self.log.exception("Task channel failure")
        self.loop.call_soon(self._drain)

    def _serve_logged(self, item: Any) -> Any:
        """:meth:`_serve`, logging a failure to decode or to answer at all."""
        try:
            return self._serve(item)
        except Exception:
            # a failure to decode or to answer at all (a task's own failures are answered)
            self.log.exception("Task channel failure")
            return None

    def _serve(self, item: Any) -> Any:
        """Answer one message; return an awaitable if the answer is not complete yet."""
        batch = None
        if isinstance(item, _Member):
            idents, msg, batch = item.idents, item.msg, item.batch
        else:
            try:
                idents, msg = self.codec.decode(item)
            except wire.WireError as exc:
                return self._answer_undecodable(exc)
            msg_type = msg["header"].get("msg_type")
            if msg_type == APPLY_BATCH_REQUEST:
                self._expand(idents, msg)
                return None
            if msg_type != APPLY_REQUEST:
                self._send(
                    reply_type(str(msg_type)),
                    error_content(
                        "UnknownMessageType",
                        "the task channel handles only apply_request and apply_batch_request, "
                        f"not {msg_type!r}",
                    ),
                    msg,
                    idents,
                )
                return None
        try:
            return self._run(idents, msg, batch)
        except BaseException as exc:
            self._fail(idents, msg, batch, exc)
            return None

    def _run(self, idents: list[bytes], msg: dict[str, Any], batch: _ReplyBatch | None) -> Any:
        """Run one task with the kernel's runner; return what is left to await, if anything."""
        if (
            batch is not None
            and batch.entries
            and (
                batch.last_runtime >= BATCH_FLUSH_INTERVAL / 2
                or time.perf_counter() - batch.first >= BATCH_FLUSH_INTERVAL
            )
        ):
            # results already collected must not wait behind a task that may be long
            self._flush(batch)
        runner = self.runner
        call = None
        try:
            # The interrupting handler goes in before the abort check records the
            # task as started: a client told "started" by an abort_request then
            # interrupts it, and that interrupt must not be ignored (the gate keeps
            # it for the task's code).  A SIGINT with no target is dropped until
            # the client has been told that the task starts.
            runner.sigint_interrupts(msg["header"].get("msg_id"))
            if self.host.admit(self.socket, idents, msg):
                msg_id = msg["header"]["msg_id"]
                if batch is not None:
                    if batch.unreported:
                        # this one first: it starts now; the rest of its batch may follow
                        others = [i for i in batch.unreported if i != msg_id]
                        self._report_start([msg_id, *others], batch.parent, batch.compact, idents)
                        batch.unreported = []
                elif msg["metadata"].get(REPORT_START):
                    self._report_start([msg_id], msg["raw_header"], msg["compact"], idents)
                runner.gate.started()
                self.outputs.watch(msg_id)
                call = runner.start(msg, (idents, batch))
        finally:
            runner.sigint_restore()
        if call is None:  # aborted: admit answered it
            if batch is not None:
                batch.remaining -= 1
                if msg["header"]["msg_id"] in batch.unreported:
                    batch.unreported.remove(msg["header"]["msg_id"])
                self._flush_if_due(batch)
            self._receive()
            return None
        if call.pending is not None and batch is not None:
            self._flush(batch)
        return runner.complete(call, self._send_reply, self._fail_call)

    def _expand(self, idents: list[bytes], msg: dict[str, Any]) -> None:
        """Queue the tasks of a batch, first in line, each as its own apply_request."""
        try:
            tasks = unpack_batch(msg["content"], msg["buffers"], "tasks")
        except BatchError as exc:
            self._send(
                APPLY_BATCH_REPLY,
                error_content("MalformedMessage", f"{APPLY_BATCH_REQUEST}: {exc}"),
                msg,
                idents,
            )
            return
        batch = _ReplyBatch(idents, msg["raw_header"], len(tasks), msg["compact"])
        if msg["metadata"].get(REPORT_START):
            batch.unreported = [task.msg_id for task in tasks]
        header = msg["header"]
        compact = msg["compact"]
        members = []
        for task in tasks:
            member = {
                "header": {**header, "msg_id": task.msg_id, "msg_type": APPLY_REQUEST},
                "msg_id": task.msg_id,
                "msg_type": APPLY_REQUEST,
                "parent_header": {},
                "metadata": task.metadata,
                "content": task.content,
                "buffers": task.buffers,
                "compact": compact,
            }
            members.append(_Member(idents, member, batch))
        self.queue.extendleft(reversed(members))

    def _fail_call(self, call: ApplyCall, exc: BaseException) -> None:
        """Answer a started call whose handling failed (the runner's ``fail``)."""
        idents, batch = call.route
        self._fail(idents, call.parent, batch, exc)

    def _fail(
        self,
        idents: list[bytes],
        msg: dict[str, Any],
        batch: _ReplyBatch | None,
        exc: BaseException,
    ) -> None:
        """Answer a task whose handling failed outside the user's code (it must not hang)."""
        self.outputs.stop()
        self.log.error("A task-channel request failed: %r", exc, exc_info=exc)
        try:
            content = error_content(
                type(exc).__name__, f"the kernel failed to handle this apply_request: {exc!r}"
            )
            metadata = {"status": "error", "outputs": 0, "engine_id": self.host.engine_id}
            if batch is not None:
                batch.entries.append(BatchEntry(msg["header"]["msg_id"], content, metadata, []))
                batch.remaining -= 1
                self._flush(batch)
                return
            _, frames = self.codec.encode(
                APPLY_REPLY,
                content,
                parent=msg.get("raw_header") or msg["header"],
                metadata=metadata,
                idents=idents,
                compact=msg.get("compact", False),
            )
            self.codec.send(self.socket, frames)
            self._receive()
        except Exception:
            self.log.exception("Could not answer a failed task-channel request")

    def _send_reply(
        self,
        call: ApplyCall,
        content: dict[str, Any],
        metadata: dict[str, Any],
        buffers: list[Any],
    ) -> Any:
        """Send a task's reply (the runner's ``send``): alone, or with its batch.

        Returns the ZMQ tracker of a reply sent alone, whose zero-copy buffers
        the runner waits for; small replies of a batch are collected instead.
        """
        idents, batch = call.route
        outputs = self.outputs.stop()
        metadata["outputs"] = outputs
        metadata["runtime"] = call.runtime
        parent = call.parent
        large = any(memoryview(b).nbytes >= LARGE_BUFFER for b in buffers)
        if batch is not None and not large:
            if not batch.entries:
                batch.first = time.perf_counter()
            batch.entries.append(BatchEntry(parent["header"]["msg_id"], content, metadata, buffers))
            batch.remaining -= 1
            batch.last_runtime = call.runtime
            self._flush_if_due(batch)
            if outputs:
                self.host.publish_idle(parent)
            return None
        if batch is not None:
            batch.remaining -= 1
            self._flush(batch)
        _, frames = self.codec.encode(
            APPLY_REPLY,
            content,
            parent=parent.get("raw_header") or parent["header"],
            metadata=metadata,
            idents=idents,
            buffers=buffers,
            compact=parent.get("compact", False),
        )
        tracker = self.codec.send(self.socket, frames, track=True)
        if outputs:
            self.host.publish_idle(parent)
        self._receive()
        return tracker

    def _flush_if_due(self, batch: _ReplyBatch) -> None:
        """Send a batch's collected replies once all are in, or once the first has waited long."""
        if batch.remaining <= 0 or (
            batch.entries and time.perf_counter() - batch.first >= BATCH_FLUSH_INTERVAL
        ):
            self._flush(batch)

    def _flush(self, batch: _ReplyBatch) -> None:
        """Send the replies a batch has collected, as one ``apply_batch_reply``."""
        if not batch.entries:
            return
        content, buffers = pack_batch(batch.entries, "replies")
        _, frames = self.codec.encode(
            APPLY_BATCH_REPLY,
            content,
            parent=batch.parent,
            idents=batch.idents,
            buffers=buffers,
            compact=batch.compact,
        )
        self.codec.send(self.socket, frames)
        batch.entries = []
        self._receive()

    def _send(
        self,
        msg_type: str,
        content: dict[str, Any],
        request: dict[str, Any],
        idents: list[Any],
    ) -> None:
        """Answer ``request`` (a decoded message) in its framing."""
        _, frames = self.codec.encode(
            msg_type,
            content,
            parent=request["raw_header"],
            idents=idents,
            compact=request["compact"],
        )
        self.codec.send(self.socket, frames)
        self._receive()

    def _report_start(
        self, msg_ids: list[str], parent: bytes, compact: bool, idents: list[Any]
    ) -> None:
        """Tell the client that these requests start now (``apply_started``), as it asked.

        Sent before the first of them runs, so a client that never got it
        knows that they never started (and may run them elsewhere).
        """
        _, frames = self.codec.encode(
            APPLY_STARTED, {"msg_ids": msg_ids}, parent=parent, idents=idents, compact=compact
        )
        self.codec.send(self.socket, frames)
        self._receive()

    def _answer_undecodable(self, error: wire.WireError) -> None:
        """A signed message whose JSON is broken gets an error reply; others are dropped."""
        header = None
        if error.signed and error.header is not None:
            try:
                header = json.loads(error.header)
            except ValueError:
                header = None
        if not isinstance(header, dict) or not isinstance(header.get("msg_type"), str):
            self.log.warning("Dropped a task-channel message: %s", error)
            return
        self.log.error("Malformed task-channel message %s: %s", header.get("msg_id"), error)
        self._send(
            reply_type(header["msg_type"]),
            error_content(
                "MalformedMessage",
                f"{header['msg_type']} {header.get('msg_id')!r} cannot be decoded: {error}",
            ),
            {"raw_header": error.header, "compact": error.compact},
            error.idents,
        )
