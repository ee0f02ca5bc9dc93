"""``TaskFuture.debug()``: a post-mortem debugger on the engine where a task failed.

The caller becomes one more frontend of that engine: a kernel client on its
connection file sends the cell ``get_ipython().kernel.post_mortem(msg_id)``
with stdin allowed (see :mod:`parallel_kernel.kernel.postmortem`), shows
what the debugger prints, and answers its prompts with what is typed here:
in a terminal, on standard input; in a notebook, through the cell's input
box (``input()`` there goes through the notebook's stdin channel).
"""

from __future__ import annotations

import concurrent.futures
import queue
import sys
from typing import Any

from ..errors import EngineDied, ParallelError, RemoteError
from .connection import kernel_client
from .futures import _in_a_kernel

#: What the debugger is told when nothing can be typed here: quit.
QUIT = "q"
#: Seconds without output after which a prompt is shown (output may trail the prompt).
OUTPUT_GAP = 0.05


class _Prompts:
    """Answers the engine's ``input_request`` messages with ``input()`` here."""

    def __init__(self, client: Any) -> None:
        self.client = client
        #: Why input could not be read here (the session was then quit), if it could not.
        self.unavailable: str | None = None

    def __call__(self, msg: dict[str, Any]) -> None:
        self._show_output(msg["parent_header"].get("msg_id"))
        prompt = msg["content"].get("prompt", "")
        try:
            answer = input(prompt)
        except EOFError:
            answer, self.unavailable = QUIT, "standard input is closed"
        except KeyboardInterrupt:
            answer = QUIT
        except Exception as exc:  # a kernel whose frontend takes no input
            answer, self.unavailable = QUIT, f"{type(exc).__name__}: {exc}"
        self.client.input(answer)

    def _show_output(self, msg_id: str | None) -> None:
        """Show the session's output that is on its way before prompting: IOPub and
        stdin are separate sockets, so a prompt may overtake what precedes it."""
        while True:
            try:
                msg = self.client.get_iopub_msg(timeout=OUTPUT_GAP)
            except queue.Empty:
                return
            if msg["parent_header"].get("msg_id") == msg_id:
                _show(msg)


def _show(msg: dict[str, Any]) -> None:
    """Show the debugger's output here: streams as they are, displays in a notebook as
    displays (elsewhere as text).  A failure of the session is raised, not shown."""
    msg_type, content = msg["header"]["msg_type"], msg["content"]
    if msg_type == "stream":
        stream = sys.stderr if content.get("name") == "stderr" else sys.stdout
        stream.write(content.get("text", ""))
        stream.flush()
    elif msg_type in ("display_data", "execute_result"):
        data = content.get("data", {})
        if _in_a_kernel():
            from IPython.display import publish_display_data

            publish_display_data(data, content.get("metadata", {}))
        else:
            print(data.get("text/plain", ""))


def debug(future: Any) -> None:
    """Run the post-mortem session of ``future``'s failed task (see ``TaskFuture.debug``)."""
    if not future.done():
        raise RuntimeError("the task has not failed: it is not done yet")
    if future.cancelled():
        raise RuntimeError("the task was cancelled: it never ran, there is nothing to debug")
    error = future.exception()
    if error is None:
        raise RuntimeError("the task did not fail: there is nothing to debug")
    if isinstance(error, EngineDied):
        raise RuntimeError(f"the task's engine died, and its state with it: {error}")
    if isinstance(error, ParallelError) and not isinstance(error, RemoteError):
        raise RuntimeError(f"the task did not raise on its engine ({type(error).__name__})")
    if future.connection_file is None or future.msg_id is None:
        raise RuntimeError("the task never reached an engine")
    client = kernel_client(future.connection_file)
    client.start_channels()
    prompts = _Prompts(client)
    try:
        if not _ready(client, 30):
            raise RuntimeError(f"the engine ({future.connection_file}) does not answer")
        reply = client.execute_interactive(
            f"get_ipython().kernel.post_mortem({future.msg_id!r})",
            store_history=False,
            allow_stdin=True,
            stdin_hook=prompts,
            output_hook=_show,
        )
    finally:
        client.stop_channels()
    content = reply["content"]
    if content.get("status") != "ok":
        raise RuntimeError(f"{content.get('ename')}: {content.get('evalue')}")
    if prompts.unavailable is not None:
        raise RuntimeError(
            "debug() needs to read the debugger's commands here, and cannot: "
            f"{prompts.unavailable}; the session was quit"
        )


def _ready(client: Any, timeout: float) -> bool:
    """Whether the engine answers ``kernel_info`` within ``timeout`` seconds."""
    try:
        client.wait_for_ready(timeout=timeout)
    except (RuntimeError, concurrent.futures.TimeoutError):
        return False
    return True
