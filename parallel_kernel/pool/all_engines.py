"""Calls that go to every engine at once: ``broadcast``, ``push``, ``pull``, ``execute``, ``clear``.

Each is one request per engine still taking part (dead and stopped engines
are left out), and each has the ``timeout`` that ``submit`` has: past it,
:class:`~parallel_kernel.EngineTimeout` names the engines that did not
answer; requests not started yet are cancelled, the others run on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .. import protocol, remote, serialize
from ..errors import EngineTimeout, RemoteError
from . import arguments
from .engine_state import EngineState
from .futures import TaskFuture
from .scheduler import Job

if TYPE_CHECKING:
    from .core import PoolCore

#: Submits one packed request: ``submit(msg_type, content, buffers, job)``.
SubmitMessage = Callable[[str, dict[str, Any], list[Any], Job], TaskFuture]

#: Engines that no longer take part: all-engine calls leave them out.
_GONE = (EngineState.DEAD, EngineState.STOPPED)


class AllEngines:
    """The all-engine calls of one pool (from user threads); ``Pool`` documents each."""

    def __init__(self, core: PoolCore, submit: SubmitMessage) -> None:
        self._core = core
        self._submit = submit

    def broadcast(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], timeout: Any
    ) -> list[Any]:
        """``fn(*args, **kwargs)`` once on every engine; results in engine order."""
        arguments.check_timeout(timeout)
        return self._apply(fn, args, kwargs, timeout, "broadcast")

    def push(self, values: dict[str, Any], timeout: Any) -> None:
        """Set these names in every engine's namespace."""
        arguments.check_timeout(timeout)
        self._apply(remote.push, (dict(values),), {}, timeout, "push")

    def pull(self, names: str | Iterable[str], timeout: Any) -> list[Any]:
        """A name's value (or a list of names' values) in every engine's namespace."""
        arguments.check_timeout(timeout)
        wanted = names if isinstance(names, str) else list(names)
        return self._apply(remote.pull, (wanted,), {}, timeout, "pull")

    def execute(self, code: str, timeout: Any) -> list[TaskFuture]:
        """``code`` as a cell on every engine; the finished futures."""
        arguments.check_timeout(timeout)
        content = {"code": code, "silent": False, "store_history": False, "allow_stdin": False}
        futures = _answered(self._on_each("execute_request", content, []), timeout, "execute")
        for future in futures:
            future.result()
        return futures

    def clear(self, timeout: Any) -> None:
        """Reset every engine's namespace, on the control channel."""
        arguments.check_timeout(timeout)
        core = self._core

        async def clear_all() -> tuple[list[dict[str, Any]], list[int]]:
            waiters = {
                e.id: core.requests.send(e, "control", protocol.CLEAR_REQUEST, {})
                for e in core.records.values()
                if e.connection is not None
            }
            if waiters:
                await asyncio.wait(waiters.values(), timeout=timeout)
            replies = [w.result() for w in waiters.values() if w.done()]
            late = [engine_id for engine_id, w in waiters.items() if not w.done()]
            for engine_id in late:
                core.requests.forget(waiters[engine_id])
            return replies, late

        replies, late = core.bridge.run(clear_all(), timeout=None)
        if late:
            raise EngineTimeout(_no_answer("clear", late, timeout), late)
        for reply in replies:
            content = reply["content"]
            if content.get("status") != "ok":
                raise RemoteError(
                    content.get("ename", "Error"),
                    content.get("evalue", ""),
                    content.get("traceback", []),
                )

    def _apply(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
        what: str,
    ) -> list[Any]:
        """Apply ``fn`` on every engine; results in engine order."""
        content, buffers = serialize.pack_apply(fn, args, kwargs)
        futures = self._on_each(protocol.APPLY_REQUEST, content, buffers)
        return [future.result() for future in _answered(futures, timeout, what)]

    def _on_each(
        self, msg_type: str, content: dict[str, Any], buffers: list[Any]
    ) -> dict[int, TaskFuture]:
        """Submit one request to each engine still taking part; futures by engine id, in order."""
        records = self._core.in_order()
        return {
            e.id: self._submit(msg_type, content, buffers, Job(target=e.id))
            for e in records
            if e.state not in _GONE
        }


def _no_answer(what: str, engine_ids: list[int], timeout: float | None) -> str:
    """The message of an all-engine call some engines did not answer in time."""
    names = ", ".join(str(i) for i in engine_ids)
    plural = "s" if len(engine_ids) > 1 else ""
    return f"{what}: no answer from engine{plural} {names} within {timeout:g} s"


def _answered(futures: dict[int, TaskFuture], timeout: float | None, what: str) -> list[TaskFuture]:
    """The futures of an all-engine call once all are done; ``EngineTimeout`` if some are
    not within ``timeout`` (those not started yet are cancelled, the others run on)."""
    concurrent.futures.wait(futures.values(), timeout=timeout)
    late = [engine_id for engine_id, future in futures.items() if not future.done()]
    if late:
        for engine_id in late:
            futures[engine_id].cancel()
        raise EngineTimeout(_no_answer(what, late, timeout), late)
    return list(futures.values())
