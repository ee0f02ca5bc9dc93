"""The event-loop thread every pool of a process runs on, and the bridge to it.

One thread owns all sockets and all task state; user threads only hand it
work (:meth:`Bridge.call_soon`) or wait for it with a timeout
(:meth:`Bridge.run`), so a pool works the same from a script, a notebook
(whose own loop is never touched) and asyncio code.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

_shared: tuple[int, asyncio.AbstractEventLoop, threading.Thread] | None = None
_shared_lock = threading.Lock()


def shared_loop() -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    """The event loop, on a daemon thread, that every pool of this process runs on.

    Kernel provisioners may keep process-wide state tied to the loop they
    first ran on (gateway_provisioners' listener for engines' connection
    info does), so pools share one loop that lasts as long as the process
    instead of each stopping its own.  A forked child gets a loop of its own.
    """
    global _shared
    with _shared_lock:
        if _shared is None or _shared[0] != os.getpid() or not _shared[2].is_alive():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=_serve, args=(loop,), name="parallel-kernel-pools", daemon=True
            )
            thread.start()
            _shared = (os.getpid(), loop, thread)
        return _shared[1], _shared[2]


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    """Run ``loop`` until it is stopped, whatever escapes its callbacks.

    asyncio lets ``SystemExit`` and ``KeyboardInterrupt`` out of a callback,
    which would end the thread and leave every pool's futures pending; user
    code runs here (done callbacks, unpickling), so those are logged and the
    loop goes on.
    """
    while True:
        try:
            loop.run_forever()
            return
        except BaseException:
            log.exception("A callback on the pools' loop thread raised; the loop goes on")


class Bridge:
    """Hands work from user threads to the pools' loop thread, and keeps its background tasks."""

    def __init__(self) -> None:
        self.loop, self.thread = shared_loop()
        self._background: set[asyncio.Future[Any]] = set()

    @property
    def on_loop(self) -> bool:
        """Whether the caller runs on the loop thread (where blocking would deadlock)."""
        return threading.current_thread() is self.thread

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float | None) -> Any:
        """Run a coroutine on the loop and wait for its result (never from the loop)."""
        if self.on_loop:
            coro.close()
            raise RuntimeError("this pool method blocks; it cannot be called from a pool callback")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback(*args)`` on the loop thread soon (from any thread)."""
        self.loop.call_soon_threadsafe(callback, *args)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a coroutine in the background on the loop (from the loop), keeping it referenced."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def cancel_background(self) -> None:
        """Cancel every background coroutine of this pool (the loop outlives the pool)."""
        for task in list(self._background):
            task.cancel()
