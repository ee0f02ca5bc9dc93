"""Requests that are not tasks (kernel_info, abort, clear, interrupt): sent, then awaited.

Each gets an ``asyncio`` future for its reply message; an engine that dies
fails the futures of the requests it still owed.
"""

from __future__ import annotations

import asyncio
from typing import Any


class Requests:
    """The non-task requests awaiting a reply, by msg_id (loop thread only)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiting: dict[str, tuple[asyncio.Future[dict[str, Any]], int]] = {}

    def send(
        self,
        engine: Any,
        channel: str,
        msg_type: str,
        content: dict[str, Any],
        buffers: list[Any] | None = None,
    ) -> asyncio.Future[dict[str, Any]]:
        """Send a request to ``engine`` and return a future for its reply message."""
        if engine.connection is None:
            raise ConnectionError(f"engine {engine.id} has no connection")
        msg_id = engine.connection.send(channel, msg_type, content, buffers)
        waiter: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._waiting[msg_id] = (waiter, engine.id)
        return waiter

    def answer(self, msg: dict[str, Any]) -> bool:
        """Resolve the request ``msg`` replies to; False if it is not one of these requests."""
        request = self._waiting.pop(msg["parent_header"].get("msg_id"), None)
        if request is None:
            return False
        if not request[0].done():
            request[0].set_result(msg)
        return True

    def forget(self, waiter: asyncio.Future[dict[str, Any]]) -> None:
        """Stop waiting for the answer ``waiter`` stands for (a late answer is then dropped)."""
        for msg_id, (other, _owner) in list(self._waiting.items()):
            if other is waiter:
                del self._waiting[msg_id]
                waiter.cancel()
                return

    def fail(self, engine_id: int, error: BaseException) -> None:
        """Fail every request still waiting for an answer from ``engine_id``."""
        for msg_id, (waiter, owner) in list(self._waiting.items()):
            if owner == engine_id:
                del self._waiting[msg_id]
                if not waiter.done():
                    waiter.set_exception(error)
