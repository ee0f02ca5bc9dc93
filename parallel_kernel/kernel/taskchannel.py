"""The task channel: a socket beside the shell that the main thread serves directly.

A standard ``apply_request`` travels shell ROUTER → shell-channel thread →
main thread → shell-channel thread, with ``busy``/``idle`` published through
the IOPub thread and stdout/stderr flushed after every message: three Python
threads per task.  The task channel is one more ROUTER socket, read by the
main thread's own event loop, that accepts the same signed ``apply_request``
messages and answers ``apply_reply`` on the same socket:

* tasks never interleave with a cell: they run only while the main shell's
  lock is free, and take it when they have to wait (async tasks, large
  replies still being sent);
* output is parented to the task's request as on the shell channel; no
  ``busy``/``idle`` is published for a task that printed nothing, and a task
  that did publish output gets an ``idle`` after it, so a client knows when
  its output is complete (reply metadata ``outputs`` says how many messages);
* aborts (``abort_request`` on control), interrupts and clears behave as for
  shell requests.

The port is advertised in ``kernel_info_reply["parallel"]["task_port"]`` and in
the connection file (``task_port``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import zmq

from .. import wire
from .compat import (
    OutputCounter,
    apply_curve_server_options,
    bind_socket,
    lock_wanted,
    main_shell_lock,
    publish_status,
)
from .replies import error_content, reply_type

if TYPE_CHECKING:
    from ipykernel.kernelapp import IPKernelApp

    from .parallelkernel import ParallelKernel


def bind_task_socket(app: IPKernelApp, port: int = 0) -> tuple[zmq.Socket, int]:
    """Open the task channel's ROUTER as ``app`` opens its shell socket; return it and its port.

    Same context, address, transport and CurveZMQ keys as the application's
    Jupyter channels; ``port`` 0 picks a free one.
    """
    socket = app.context.socket(zmq.ROUTER)
    socket.linger = 1000
    socket.router_handover = 1
    apply_curve_server_options(app, socket)
    return socket, bind_socket(app, socket, port)


#: Seconds a finished task's reply may wait for the rest of its batch before it is sent.
BATCH_FLUSH_INTERVAL = 0.002
#: Seconds of tasks run in one go before the loop serves other messages.
DRAIN_SLICE = 0.005


class _ReplyBatch:
    """The replies to the tasks of one ``apply_batch_request``, sent together."""

    __slots__ = (
        "buffers",
        "compact",
        "entries",
        "first",
        "idents",
        "last_runtime",
        "parent",
        "remaining",
    )

    def __init__(self, idents: list[bytes], parent: bytes, count: int, compact: bool) -> None:
        self.idents = idents
        self.parent = parent
        self.compact = compact
        self.remaining = count
        self.entries: list[dict[str, Any]] = []
        self.buffers: list[Any] = []
        self.first = 0.0
        self.last_runtime = 0.0


class _Member:
    """One task of a batch, decoded and waiting in the queue."""

    __slots__ = ("batch", "idents", "msg")

    def __init__(self, idents: list[bytes], msg: dict[str, Any], batch: _ReplyBatch) -> None:
        self.idents = idents
        self.msg = msg
        self.batch = batch


class TaskChannel:
    """Serves ``apply_request`` on the task socket from the main thread's loop."""

    def __init__(self, kernel: ParallelKernel, socket: zmq.Socket[Any], port: int) -> None:
        self.kernel = kernel
        self.socket = socket
        self.port = port
        self.session = kernel.session
        self.codec = wire.Codec(kernel.session)
        self.outputs = OutputCounter(kernel.session)
        self.shell_lock = main_shell_lock(kernel)
        self.queue: deque[Any] = deque()
        self.draining = False
        self._drainer: asyncio.Future[None] | None = None
        self.loop = kernel.io_loop.asyncio_loop
        self.loop.add_reader(socket.getsockopt(zmq.FD), self._readable)

    def close(self) -> None:
        """Stop reading the socket (the application closes it)."""
        if not self.socket.closed:
            self.loop.remove_reader(self.socket.getsockopt(zmq.FD))

    # The socket's file descriptor is edge-triggered: it signals that the
    # socket's state may have changed, and is re-armed only by reading
    # ZMQ_EVENTS.  Every path that sends or stops therefore reads the events
    # (``_receive``) before it lets the loop sleep.

    def _readable(self) -> None:
        if self.draining:
            self._receive()  # re-arms the descriptor; the running drain takes the messages
        else:
            self._drain()

    def _receive(self) -> None:
        socket = self.socket
        while wire.readable(socket):
            self.queue.append(wire.receive(socket))

    def _shell_wanted(self) -> bool:
        """Whether a cell (or a clear) holds or waits for the main shell's lock."""
        return lock_wanted(self.shell_lock)

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
            if self._shell_wanted():
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
            self.kernel.log.exception("Task channel failure")
        self.loop.call_soon(self._drain)

    def _serve_logged(self, item: Any) -> Any:
        try:
            return self._serve(item)
        except Exception:
            # a failure to decode or to answer at all (a task's own failures are answered)
            self.kernel.log.exception("Task channel failure")
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
            if msg_type == "apply_batch_request":
                self._expand(idents, msg)
                return None
            if msg_type != "apply_request":
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
        kernel = self.kernel
        kernel.set_parent(idents, msg, channel="shell")
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
        call = None
        try:
            # The interrupting handler goes in before should_handle records the
            # task as started: a client told "started" by an abort_request then
            # interrupts it, and that interrupt must not be ignored.  Inside the
            # try, so an interrupt right after the hook still restores the handler.
            kernel.pre_handler_hook()
            if kernel.should_handle(self.socket, msg, idents):
                self.outputs.watch(msg["header"]["msg_id"])
                started = time.perf_counter()
                call = kernel.start_apply(msg)
        finally:
            kernel.post_handler_hook()
        if call is None:  # aborted: should_handle answered it
            if batch is not None:
                batch.remaining -= 1
                self._flush_if_due(batch)
            self._receive()
            return None
        if call.pending is not None:
            if batch is not None:
                self._flush(batch)
            return self._finish_later(call, idents, batch, started)
        return self._reply(call, idents, batch, time.perf_counter() - started)

    def _expand(self, idents: list[bytes], msg: dict[str, Any]) -> None:
        """Queue the tasks of a batch, first in line, each as its own apply_request."""
        content = msg["content"]
        tasks = content.get("tasks") if isinstance(content, dict) else None
        valid = isinstance(tasks, list) and all(
            isinstance(t, dict)
            and isinstance(t.get("msg_id"), str)
            and isinstance(t.get("content"), dict)
            and isinstance(t.get("buffers"), int)
            and t["buffers"] >= 0
            and isinstance(t.get("metadata", {}), dict)
            for t in tasks
        )
        if not valid or sum(t["buffers"] for t in tasks) != len(msg["buffers"]):
            self._send(
                "apply_batch_reply",
                error_content(
                    "MalformedMessage",
                    "apply_batch_request content must be {'tasks': [{'msg_id': str, 'content': "
                    "{...}, 'buffers': int, 'metadata': {...}}, ...]} with the buffer counts "
                    "adding up to the message's buffers",
                ),
                msg,
                idents,
            )
            return
        batch = _ReplyBatch(idents, msg["raw_header"], len(tasks), msg["compact"])
        header = msg["header"]
        members = []
        start = 0
        for task in tasks:
            end = start + task["buffers"]
            task_header = {**header, "msg_id": task["msg_id"], "msg_type": "apply_request"}
            member = {
                "header": task_header,
                "msg_id": task["msg_id"],
                "msg_type": "apply_request",
                "parent_header": {},
                "metadata": task.get("metadata", {}),
                "content": task["content"],
                "buffers": msg["buffers"][start:end],
                "compact": msg["compact"],
            }
            members.append(_Member(idents, member, batch))
            start = end
        self.queue.extendleft(reversed(members))

    async def _finish_later(
        self, call: Any, idents: list[bytes], batch: _ReplyBatch | None, started: float
    ) -> None:
        try:
            call.result, call.error = await self.kernel._await_interruptibly(
                call.pending, call.name
            )
            waiting = self._reply(call, idents, batch, time.perf_counter() - started)
        except BaseException as exc:
            self._fail(idents, call.parent, batch, exc)
            return
        if waiting is not None:
            await waiting

    def _fail(
        self,
        idents: list[bytes],
        msg: dict[str, Any],
        batch: _ReplyBatch | None,
        exc: BaseException,
    ) -> None:
        """Answer a task whose handling failed outside the user's code (it must not hang)."""
        self.outputs.stop()
        self.kernel.log.error("A task-channel request failed: %r", exc, exc_info=exc)
        try:
            content = error_content(
                type(exc).__name__, f"the kernel failed to handle this apply_request: {exc!r}"
            )
            metadata = {"status": "error", "outputs": 0, "engine_id": self.kernel.engine_id}
            if batch is not None:
                batch.entries.append(
                    {
                        "msg_id": msg["header"]["msg_id"],
                        "content": content,
                        "metadata": metadata,
                        "buffers": 0,
                    }
                )
                batch.remaining -= 1
                self._flush(batch)
                return
            _, frames = self.codec.encode(
                "apply_reply",
                content,
                parent=msg.get("raw_header") or msg["header"],
                metadata=metadata,
                idents=idents,
                compact=msg.get("compact", False),
            )
            self.codec.send(self.socket, frames)
            self._receive()
        except Exception:
            self.kernel.log.exception("Could not answer a failed task-channel request")

    def _reply(
        self, call: Any, idents: list[bytes], batch: _ReplyBatch | None, runtime: float
    ) -> Any:
        kernel = self.kernel
        reply, buffers = kernel.finish_apply(call)
        outputs = self.outputs.stop()
        metadata = reply["metadata"]
        metadata["outputs"] = outputs
        metadata["runtime"] = runtime
        parent = call.parent
        large = any(memoryview(b).nbytes >= wire.COPY_THRESHOLD for b in buffers)
        if batch is not None and not large:
            if not batch.entries:
                batch.first = time.perf_counter()
            batch.entries.append(
                {
                    "msg_id": parent["header"]["msg_id"],
                    "content": reply["content"],
                    "metadata": metadata,
                    "buffers": len(buffers),
                }
            )
            batch.buffers.extend(buffers)
            batch.remaining -= 1
            batch.last_runtime = runtime
            self._flush_if_due(batch)
            if outputs:
                publish_status(kernel, "idle", "shell", parent)
            return None
        if batch is not None:
            batch.remaining -= 1
            self._flush(batch)
        _, frames = self.codec.encode(
            "apply_reply",
            reply["content"],
            parent=parent.get("raw_header") or parent["header"],
            metadata=metadata,
            idents=idents,
            buffers=buffers,
            compact=parent.get("compact", False),
        )
        tracker = self.codec.send(self.socket, frames, track=True)
        if outputs:
            publish_status(kernel, "idle", "shell", parent)
        self._receive()
        if tracker is not None and not tracker.done:
            return kernel._wait_until_sent(tracker)
        return None

    def _flush_if_due(self, batch: _ReplyBatch) -> None:
        """Send a batch's collected replies once all are in, or once the first has waited long."""
        if batch.remaining <= 0 or (
            batch.entries and time.perf_counter() - batch.first >= BATCH_FLUSH_INTERVAL
        ):
            self._flush(batch)

    def _flush(self, batch: _ReplyBatch) -> None:
        if not batch.entries:
            return
        _, frames = self.codec.encode(
            "apply_batch_reply",
            {"replies": batch.entries},
            parent=batch.parent,
            idents=batch.idents,
            buffers=batch.buffers,
            compact=batch.compact,
        )
        self.codec.send(self.socket, frames)
        batch.entries = []
        batch.buffers = []
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

    def _answer_undecodable(self, error: wire.WireError) -> None:
        """A signed message whose JSON is broken gets an error reply; others are dropped."""
        header = None
        if error.signed and error.header is not None:
            try:
                header = json.loads(error.header)
            except ValueError:
                header = None
        if not isinstance(header, dict) or not isinstance(header.get("msg_type"), str):
            self.kernel.log.warning("Dropped a task-channel message: %s", error)
            return
        self.kernel.log.error("Malformed task-channel message %s: %s", header.get("msg_id"), error)
        self._send(
            reply_type(header["msg_type"]),
            error_content(
                "MalformedMessage",
                f"{header['msg_type']} {header.get('msg_id')!r} cannot be decoded: {error}",
            ),
            {"raw_header": error.header, "compact": error.compact},
            error.idents,
        )
