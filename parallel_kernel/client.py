"""One engine's connection: sends requests, routes replies and output by msg_id.

An :class:`EngineClient` lives on the pool's event-loop thread.  It opens the
engine's shell, control, IOPub and heartbeat sockets with jupyter_client's
kernel client (so CurveZMQ keys and message signing come from the
connection info) and drives them with pyzmq's ``ZMQStream`` on that loop:
one reader and writer per socket, messages received with ``copy=False`` so
result buffers arrive as views of the ZMQ frames.  (``ZMQStream`` owns each
socket's sends and receives together, which avoids the lost wake-ups of
edge-triggered ZMQ file descriptors that mixing direct sends with pending
receives can cause.)

Engines that advertise a task channel (``kernel_info_reply["parallel"]["task_port"]``)
get a fourth stream, ``task``, a DEALER on that port: apply requests go there,
past the kernel's shell machinery (see :mod:`parallel_kernel.taskchannel`).

Everything a message means for a task is passed to the ``Listener`` (the
pool); this module only moves messages.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

import zmq
from jupyter_client import BlockingKernelClient
from tornado.ioloop import IOLoop, PeriodicCallback
from zmq.eventloop.zmqstream import ZMQStream

from . import wire

HEARTBEAT_INTERVAL = 1.0
HEARTBEAT_MISSES = 3


class Listener(Protocol):
    """What an engine client reports to its owner."""

    def on_reply(self, engine: EngineClient, channel: str, msg: dict[str, Any]) -> None: ...

    def on_iopub(self, engine: EngineClient, msg: dict[str, Any]) -> None: ...

    def on_heartbeat_lost(self, engine: EngineClient) -> None: ...


def kernel_client(connection_file: str) -> BlockingKernelClient:
    """A jupyter_client kernel client configured from a connection file (sockets only)."""
    client = BlockingKernelClient()
    client.load_connection_file(connection_file)
    return client


class EngineClient:
    """The sockets of one engine, read and written on the pool's loop."""

    def __init__(self, client: BlockingKernelClient, listener: Listener, heartbeat: bool) -> None:
        self.kernel_client = client
        self.session = client.session
        self.listener = listener
        self._heartbeat = heartbeat
        self._streams: dict[str, ZMQStream] = {}
        self._hb: ZMQStream | None = None
        self._hb_timer: Any = None
        self._hb_answered = True
        self._hb_misses = 0
        self._task: zmq.Socket[Any] | None = None
        self._codec = wire.Codec(self.session)
        self._task_read_scheduled = False
        self._loop: Any = None

    def open(self) -> None:
        """Connect the sockets and start reading them (on the running loop)."""
        client = self.kernel_client
        loop = IOLoop.current()
        for channel, connect in (
            ("shell", client.connect_shell),
            ("control", client.connect_control),
            ("iopub", client.connect_iopub),
        ):
            stream = ZMQStream(connect(), loop)
            stream.on_recv(lambda frames, channel=channel: self._received(channel, frames), False)
            self._streams[channel] = stream
        if self._heartbeat:
            self._start_heartbeat(loop)

    def connect_task(self, port: int) -> None:
        """Open the ``task`` stream to the engine's task channel on ``port``."""
        client = self.kernel_client
        socket = client.context.socket(zmq.DEALER)
        socket.linger = 1000
        if client.curve_publickey is not None:
            socket.curve_secretkey = client.curve_secretkey
            socket.curve_publickey = client.curve_publickey
            socket.curve_serverkey = client.curve_publickey
        if client.transport == "tcp":
            socket.connect(f"tcp://{client.ip}:{port}")
        else:
            socket.connect(f"{client.transport}://{client.ip}-{port}")
        self._task = socket
        self._loop = IOLoop.current().asyncio_loop
        self._loop.add_reader(socket.getsockopt(zmq.FD), self._read_task)

    @property
    def has_task_channel(self) -> bool:
        return self._task is not None

    # The task socket is read and written directly, without ZMQStream's send
    # queue, to save a loop iteration per message.  Its file descriptor is
    # edge-triggered and re-armed only by reading ZMQ_EVENTS, so every send
    # checks the events and schedules a read when a message is waiting.

    def _read_task(self) -> None:
        self._task_read_scheduled = False
        socket = self._task
        while socket is not None and wire.readable(socket):
            frames = wire.receive(socket)
            try:
                _, msg = self._codec.decode(frames)
            except wire.WireError as exc:
                self.session.log.warning("Dropped an undecodable task reply: %s", exc)
            else:
                try:
                    if msg["msg_type"] == "apply_batch_reply":
                        self._unbatch(msg)
                    else:
                        self.listener.on_reply(self, "task", msg)
                except Exception:
                    self.session.log.exception("Error handling a task reply")
            socket = self._task

    def _unbatch(self, msg: dict[str, Any]) -> None:
        """Hand each reply of an ``apply_batch_reply`` to the listener as an ``apply_reply``."""
        replies = msg["content"].get("replies")
        if not isinstance(replies, list):
            self.session.log.error("A batch of tasks was refused: %s", msg["content"])
            return
        buffers = msg["buffers"]
        start = 0
        for reply in replies:
            end = start + reply["buffers"]
            self.listener.on_reply(
                self,
                "task",
                {
                    "header": msg["header"],
                    "msg_id": msg["msg_id"],
                    "msg_type": "apply_reply",
                    "parent_header": {"msg_id": reply["msg_id"]},
                    "metadata": reply["metadata"],
                    "content": reply["content"],
                    "buffers": buffers[start:end],
                },
            )
            start = end

    def send_batch(self, tasks: list[tuple[dict[str, Any], list[Any]]]) -> list[str]:
        """Send several ``apply_request`` contents and buffers in one message; return their ids."""
        msg_ids = [os.urandom(16).hex() for _ in tasks]
        entries = []
        buffers: list[Any] = []
        for msg_id, (content, task_buffers) in zip(msg_ids, tasks, strict=True):
            entries.append({"msg_id": msg_id, "content": content, "buffers": len(task_buffers)})
            buffers.extend(task_buffers)
        self._send_task("apply_batch_request", {"tasks": entries}, buffers, None)
        return msg_ids

    def _send_task(
        self,
        msg_type: str,
        content: dict[str, Any],
        buffers: list[Any],
        metadata: dict[str, Any] | None,
    ) -> str:
        socket = self._task
        if socket is None:
            raise ConnectionError("the engine's sockets are closed")
        msg_id, frames = self._codec.encode(
            msg_type, content, metadata=metadata, buffers=buffers, compact=True
        )
        self._codec.send(socket, frames)
        if not self._task_read_scheduled and wire.readable(socket):
            self._task_read_scheduled = True
            self._loop.call_soon(self._read_task)
        return msg_id

    def close(self) -> None:
        """Stop reading and close the sockets; unsent requests are dropped."""
        if self._hb_timer is not None:
            self._hb_timer.stop()
            self._hb_timer = None
        for stream in [*self._streams.values(), self._hb]:
            if stream is not None and not stream.closed():
                stream.close(linger=0)
        self._streams = {}
        self._hb = None
        if self._task is not None:
            self._loop.remove_reader(self._task.getsockopt(zmq.FD))
            self._task.close(linger=0)
            self._task = None

    def send(
        self,
        channel: str,
        msg_type: str,
        content: dict[str, Any],
        buffers: list[Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """Send a request on ``shell``, ``control`` or ``task``; return its msg_id."""
        if channel == "task":
            return self._send_task(msg_type, content, buffers or [], metadata)
        msg = self.session.msg(msg_type, content, metadata=metadata)
        stream = self._streams.get(channel)
        if stream is None or stream.closed():
            raise ConnectionError("the engine's sockets are closed")
        self.session.send(stream, msg, buffers=buffers or [])
        return msg["header"]["msg_id"]

    def _received(self, channel: str, frames: list[Any]) -> None:
        session = self.session
        try:
            _, parts = session.feed_identities(frames, copy=False)
            msg = session.deserialize(parts, content=True, copy=False)
        except Exception:
            session.log.warning("Dropped an undecodable %s message", channel, exc_info=True)
            return
        try:
            if channel == "iopub":
                self.listener.on_iopub(self, msg)
            else:
                self.listener.on_reply(self, channel, msg)
        except Exception:
            session.log.exception("Error handling a %s message", channel)

    # -- heartbeat: a ping every interval; too many unanswered ones in a row is a loss

    def _start_heartbeat(self, loop: IOLoop) -> None:
        self._connect_hb(loop)
        self._hb_timer = PeriodicCallback(self._beat, HEARTBEAT_INTERVAL * 1000)
        self._hb_timer.start()

    def _connect_hb(self, loop: IOLoop) -> None:
        self._hb = ZMQStream(self.kernel_client.connect_hb(), loop)
        self._hb.on_recv(self._pong)
        self._hb_answered = True

    def _pong(self, frames: list[Any]) -> None:
        self._hb_answered = True
        self._hb_misses = 0

    def _beat(self) -> None:
        if self._hb is None:
            return
        if not self._hb_answered:
            self._hb_misses += 1
            # a REQ socket cannot send again before its reply: start a new one
            self._hb.close(linger=0)
            self._connect_hb(IOLoop.current())
            if self._hb_misses >= HEARTBEAT_MISSES:
                self._hb_misses = 0
                self.listener.on_heartbeat_lost(self)
                return
        self._hb_answered = False
        self._hb.send(b"ping")
