"""Liveness by heartbeat: a ping every interval; too many unanswered in a row is a loss.

The kernel's heartbeat is answered by a thread of its own, so it keeps
answering while a task runs and stops only when the process (or the network
to it) is gone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tornado.ioloop import IOLoop, PeriodicCallback
from zmq.eventloop.zmqstream import ZMQStream

#: Seconds between pings.
HEARTBEAT_INTERVAL = 1.0
#: Unanswered pings in a row after which the engine counts as lost.
HEARTBEAT_MISSES = 3


class Heartbeat:
    """Pings one engine's heartbeat socket and reports when it stops answering."""

    def __init__(self, connect: Callable[[], Any], lost: Callable[[], None]) -> None:
        self._connect = connect
        self._lost = lost
        self._stream: ZMQStream | None = None
        self._timer: PeriodicCallback | None = None
        self._answered = True
        self._misses = 0

    def start(self, loop: IOLoop) -> None:
        """Start pinging on ``loop``."""
        self._open(loop)
        self._timer = PeriodicCallback(self._beat, HEARTBEAT_INTERVAL * 1000)
        self._timer.start()

    def stop(self) -> None:
        """Stop pinging and close the socket."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if self._stream is not None and not self._stream.closed():
            self._stream.close(linger=0)
        self._stream = None

    def _open(self, loop: IOLoop) -> None:
        self._stream = ZMQStream(self._connect(), loop)
        self._stream.on_recv(self._pong)
        self._answered = True

    def _pong(self, frames: list[Any]) -> None:
        self._answered = True
        self._misses = 0

    def _beat(self) -> None:
        """One interval: count a miss if the last ping is unanswered, then ping again."""
        if self._stream is None:
            return
        if not self._answered:
            self._misses += 1
            # a REQ socket cannot send again before its reply: start a new one
            self._stream.close(linger=0)
            self._open(IOLoop.current())
            if self._misses >= HEARTBEAT_MISSES:
                self._misses = 0
                self._lost()
                return
        self._answered = False
        self._stream.send(b"ping")
