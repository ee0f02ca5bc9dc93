"""One engine's connection: its sockets, read and written on the pool's loop thread.

An :class:`EngineConnection` opens the engine's shell, control and IOPub
sockets with jupyter_client's kernel client (so CurveZMQ keys and message
signing come from the connection info) and drives them with pyzmq's
``ZMQStream`` on that loop: one reader and writer per socket, messages
received with ``copy=False`` so result buffers arrive as views of the ZMQ
frames.  (``ZMQStream`` owns each socket's sends and receives together,
which avoids the lost wake-ups of edge-triggered ZMQ file descriptors that
mixing direct sends with pending receives can cause.)

The shell, task and stdin sockets carry one identity (the session's, as
jupyter_client gives them): an engine asks for a task's ``input()`` on its
stdin channel by the identity the task came from (see
:mod:`parallel_kernel.kernel.task_input`).

Engines that advertise a task channel (``kernel_info_reply["parallel"]["task_port"]``)
get a fourth socket, ``task``, a DEALER on that port: apply requests go there,
past the kernel's shell machinery (see :mod:`parallel_kernel.kernel.taskchannel`).

Everything a message means for a task is passed to the :class:`Listener`;
this module only moves messages.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

import zmq
from jupyter_client import BlockingKernelClient
from tornado.ioloop import IOLoop
from zmq.eventloop.zmqstream import ZMQStream

from .. import protocol, shared_memory, wire
from .heartbeat import Heartbeat


class Listener(Protocol):
    """What a connection reports to the pool, naming the engine record it belongs to."""

    def on_reply(self, engine: Any, channel: str, msg: dict[str, Any]) -> None: ...

    def on_iopub(self, engine: Any, msg: dict[str, Any]) -> None: ...

    def on_started(self, engine: Any, msg_ids: list[str]) -> None: ...

    def on_input_request(self, engine: Any, msg: dict[str, Any]) -> None: ...

    def on_heartbeat_lost(self, engine: Any) -> None: ...


def kernel_client(connection_file: str) -> BlockingKernelClient:
    """A jupyter_client kernel client configured from a connection file (sockets only)."""
    client = BlockingKernelClient()
    client.load_connection_file(connection_file)
    return client


class EngineConnection:
    """The sockets of one engine, read and written on the pool's loop."""

    def __init__(
        self, client: BlockingKernelClient, listener: Listener, owner: Any, heartbeat: bool
    ) -> None:
        self.kernel_client = client
        self.session = client.session
        self.listener = listener
        #: The engine record this connection reports for.
        self.owner = owner
        self._heartbeat_wanted = heartbeat
        self._heartbeat: Heartbeat | None = None
        self._streams: dict[str, ZMQStream] = {}
        self._task: zmq.Socket[Any] | None = None
        self._codec = wire.Codec(self.session)
        self._task_read_scheduled = False
        self._loop: Any = None

    def open(self) -> None:
        """Connect the sockets and start reading them (on the running loop)."""
        client = self.kernel_client
        loop = IOLoop.current()
        identity = self.session.bsession
        for channel, connect in (
            ("shell", lambda: client.connect_shell(identity=identity)),
            ("control", client.connect_control),
            ("iopub", client.connect_iopub),
            ("stdin", lambda: client.connect_stdin(identity=identity)),
        ):
            stream = ZMQStream(connect(), loop)
            stream.on_recv(lambda frames, channel=channel: self._received(channel, frames), False)
            self._streams[channel] = stream
        if self._heartbeat_wanted:
            self._heartbeat = Heartbeat(
                client.connect_hb, lambda: self.listener.on_heartbeat_lost(self.owner)
            )
            self._heartbeat.start(loop)

    def connect_task(self, port: int) -> None:
        """Open the ``task`` socket to the engine's task channel on ``port``."""
        client = self.kernel_client
        socket = client.context.socket(zmq.DEALER)
        socket.linger = 1000
        socket.identity = self.session.bsession
        if client.curve_publickey is not None:
            socket.curve_secretkey = client.curve_secretkey
            socket.curve_publickey = client.curve_publickey
            socket.curve_serverkey = client.curve_publickey
        socket.connect(protocol.socket_url(client.transport, client.ip, port))
        self._task = socket
        self._loop = IOLoop.current().asyncio_loop
        self._loop.add_reader(socket.getsockopt(zmq.FD), self._read_task)

    @property
    def has_task_channel(self) -> bool:
        """Whether apply requests can go to the engine's task channel."""
        return self._task is not None

    # The task socket is read and written directly, without ZMQStream's send
    # queue, to save a loop iteration per message.  Its file descriptor is
    # edge-triggered and re-armed only by reading ZMQ_EVENTS, so every send
    # checks the events and schedules a read when a message is waiting.

    def _read_task(self) -> None:
        """Read every message waiting on the task socket and hand it to the listener."""
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
                    msg_type = msg["msg_type"]
                    if msg_type == protocol.APPLY_BATCH_REPLY:
                        self._unbatch(msg)
                    elif msg_type == protocol.APPLY_STARTED:
                        self.listener.on_started(self.owner, msg["content"].get("msg_ids", []))
                    else:
                        _hold(msg)
                        self.listener.on_reply(self.owner, "task", msg)
                except Exception:
                    self.session.log.exception("Error handling a task reply")
            socket = self._task

    def _unbatch(self, msg: dict[str, Any]) -> None:
        """Hand each reply of an ``apply_batch_reply`` to the listener as an ``apply_reply``."""
        try:
            entries = protocol.unpack_batch(msg["content"], msg["buffers"], "replies")
        except protocol.BatchError:
            self.session.log.error("A batch of tasks was refused: %s", msg["content"])
            return
        for entry in entries:
            content, buffers = shared_memory.receive(entry.content, entry.buffers)
            self.listener.on_reply(
                self.owner,
                "task",
                {
                    "header": msg["header"],
                    "msg_id": msg["msg_id"],
                    "msg_type": protocol.APPLY_REPLY,
                    "parent_header": {"msg_id": entry.msg_id},
                    "metadata": entry.metadata,
                    "content": content,
                    "buffers": buffers,
                },
            )

    def send_batch(
        self, tasks: list[tuple[dict[str, Any], list[Any]]], metadata: dict[str, Any] | None
    ) -> list[str]:
        """Send several ``apply_request`` contents and buffers in one message; return their ids."""
        msg_ids = [os.urandom(16).hex() for _ in tasks]
        content, buffers = protocol.pack_batch(
            [protocol.BatchEntry(i, c, {}, b) for i, (c, b) in zip(msg_ids, tasks, strict=True)],
            "tasks",
        )
        self._send_task(protocol.APPLY_BATCH_REQUEST, content, buffers, metadata)
        return msg_ids

    def _send_task(
        self,
        msg_type: str,
        content: dict[str, Any],
        buffers: list[Any],
        metadata: dict[str, Any] | None,
    ) -> str:
        """Send one message on the task socket, in the compact framing; return its msg_id."""
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
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
        for stream in self._streams.values():
            if not stream.closed():
                stream.close(linger=0)
        self._streams = {}
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

    def answer_input(self, request: dict[str, Any], content: dict[str, Any]) -> None:
        """Send the ``input_reply`` to an engine's ``input_request``."""
        stream = self._streams.get("stdin")
        if stream is None or stream.closed():
            return  # the engine is gone, and its question with it
        self.session.send(stream, "input_reply", content, parent=request)

    def _received(self, channel: str, frames: list[Any]) -> None:
        """Decode a message of a ZMQStream socket and hand it to the listener."""
        session = self.session
        try:
            _, parts = session.feed_identities(frames, copy=False)
            msg = session.deserialize(parts, content=True, copy=False)
        except Exception:
            session.log.warning("Dropped an undecodable %s message", channel, exc_info=True)
            return
        try:
            if channel == "iopub":
                self.listener.on_iopub(self.owner, msg)
            elif channel == "stdin":
                if msg["msg_type"] == "input_request":
                    self.listener.on_input_request(self.owner, msg)
            else:
                _hold(msg)
                self.listener.on_reply(self.owner, channel, msg)
        except Exception:
            session.log.exception("Error handling a %s message", channel)


def _hold(msg: dict[str, Any]) -> None:
    """Map the shared memory a reply refers to as it arrives (see
    :func:`parallel_kernel.shared_memory.receive`)."""
    msg["content"], msg["buffers"] = shared_memory.receive(msg["content"], msg["buffers"])
