"""Live stacks: what a running task is doing, read on its engine without stopping it.

The engine answers ``stack_request`` on its control thread (see
``docs/protocol.md``): the user frames of what its main thread runs, taken
while it runs.  :meth:`TaskFuture.stack() <parallel_kernel.TaskFuture.stack>`
asks for one task's, :meth:`Pool.stacks() <parallel_kernel.Pool.stacks>` for
every engine's, and ``parallel-kernel stacks`` for engines given by their
connection files.  :func:`format_stack` writes them the way Python writes a
traceback, innermost frame last.
"""

from __future__ import annotations

import asyncio
import queue
import time
import traceback
from typing import TYPE_CHECKING, Any

from .. import protocol
from ..errors import EngineDied, EngineTimeout
from .arguments import connection_file_path
from .connection import kernel_client
from .engine_state import EngineRecord
from .tasks import Task, TaskState

if TYPE_CHECKING:
    from .core import PoolCore

#: Seconds an engine has to answer: its control thread answers at once, unless the
#: running task holds the GIL (C code that does not release it).
STACK_WAIT = 5.0


def format_stack(content: dict[str, Any], header: str) -> str:
    """A ``stack_reply``'s frames as Python formats a traceback, under ``header``."""
    frames = content.get("frames") or []
    if not frames:
        return f"{header}: no Python frames of its own (it is between its steps)\n"
    summary = traceback.StackSummary.from_list(
        [(f["filename"], f["lineno"], f["name"], f.get("line") or None) for f in frames]
    )
    how = "awaiting" if content.get("awaiting") else "running"
    return f"{header}, {how} (most recent call last):\n" + "".join(summary.format())


def describe_engine(content: dict[str, Any], engine_id: Any) -> str:
    """One engine's answer as text: idle, or the stack of what it runs."""
    running = content.get("running")
    if running is None:
        return f"engine {engine_id}: idle\n"
    return format_stack(content, f"engine {engine_id}: request {running}")


def stacks_of_files(paths: list[str], timeout: float = STACK_WAIT) -> list[str]:
    """``describe_engine`` for the kernels behind these connection files (bare names are
    looked up as ``jupyter console --existing`` does); a kernel that does not answer
    within ``timeout`` seconds, or cannot show stacks, says so."""
    texts = []
    for name in paths:
        path = connection_file_path(name)
        client = kernel_client(path)
        client.start_channels(shell=False, iopub=False, stdin=False, hb=False, control=True)
        try:
            request = client.session.msg(protocol.STACK_REQUEST, {})
            client.control_channel.send(request)
            content = _reply_to(client, request["header"]["msg_id"], timeout)
        finally:
            client.stop_channels()
        if content is None:
            texts.append(f"{path}: no answer within {timeout:g} s\n")
        elif content.get("status") != "ok":
            texts.append(f"{path}: {content.get('ename')}: {content.get('evalue')}\n")
        else:
            texts.append(f"{path}\n" + describe_engine(content, content.get("engine_id")))
    return texts


def _reply_to(client: Any, msg_id: str, timeout: float) -> dict[str, Any] | None:
    """The content of the control reply to ``msg_id``, or ``None`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            reply = client.control_channel.get_msg(timeout=remaining)
        except queue.Empty:
            return None
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply["content"]
    return None


class Stacks:
    """The stacks of one pool's tasks and engines (from user threads)."""

    def __init__(self, core: PoolCore) -> None:
        self.core = core

    def of_task(self, task: Task, name: str) -> str:
        """The stack of ``task`` if it runs now; ``RuntimeError`` saying where it is if not."""
        attempt = task.attempt
        if task.state not in (TaskState.SENT, TaskState.RUNNING) or attempt is None:
            raise RuntimeError(f"{name} is not running (it is {task.state})")
        engine = self.core.records[attempt.engine_id]
        content = self.core.bridge.run(self._ask(engine, attempt.msg_id), timeout=STACK_WAIT + 5)
        if content.get("running") != attempt.msg_id or not attempt.current:
            if attempt.reply is not None or task.state is TaskState.DONE or not attempt.current:
                raise RuntimeError(f"{name} is not running (it has finished)")
            raise RuntimeError(
                f"{name} is not running yet: it waits at engine {engine.id} behind the "
                "request that runs there"
            )
        return format_stack(content, f"{name} on engine {engine.id}")

    def of_engines(self) -> list[str]:
        """One text per engine, in engine order: idle, its stack, or why there is none."""
        records = self.core.in_order()

        async def ask_all() -> list[Any]:
            return await asyncio.gather(
                *(self._ask(e, None) for e in records), return_exceptions=True
            )

        answers = self.core.bridge.run(ask_all(), timeout=STACK_WAIT + 5)
        texts = []
        for engine, answer in zip(records, answers, strict=True):
            if isinstance(answer, BaseException):
                texts.append(f"engine {engine.id}: {answer}\n")
            else:
                texts.append(describe_engine(answer, engine.id))
        return texts

    async def _ask(self, engine: EngineRecord, msg_id: str | None) -> dict[str, Any]:
        """The content of ``engine``'s ``stack_reply`` (on the loop)."""
        if not engine.serving or engine.connection is None:
            raise EngineDied(f"engine {engine.id} is {engine.state}")
        content = {} if msg_id is None else {"msg_id": msg_id}
        waiter = self.core.requests.send(engine, "control", protocol.STACK_REQUEST, content)
        try:
            reply = await asyncio.wait_for(waiter, STACK_WAIT)
        except TimeoutError:
            self.core.requests.forget(waiter)
            raise EngineTimeout(
                f"engine {engine.id} did not answer within {STACK_WAIT:g} s (its task may "
                "hold the GIL in C code that does not release it)",
                [engine.id],
            ) from None
        answer = reply["content"]
        if answer.get("status") != "ok":
            raise RuntimeError(
                f"engine {engine.id} cannot show stacks: {answer.get('ename')}: "
                f"{answer.get('evalue')}"
            )
        return answer
