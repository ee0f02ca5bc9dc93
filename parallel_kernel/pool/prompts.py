"""A task's ``input()`` answered where the pool runs: a terminal, or a notebook cell.

A task asks its caller through its engine's stdin channel (see
:mod:`parallel_kernel.kernel.task_input`).  A pool says, for each task when
it is submitted, whether it can answer (:func:`can_answer`): in a script, if
the process has a standard input; in a notebook, if the cell that submits
allows input (a notebook in JupyterLab does; papermill and nbclient runs do
not).  Otherwise the task's ``input()`` fails at once on the engine.

Questions are asked one at a time, in the order they come, on a thread of
their own (the pools' loop thread never blocks): the prompt, prefixed with
the engine id as forwarded output is, goes through this process's
``input()``, so in a notebook it is asked in the cell that is running then.
An answer that cannot be had is sent as an error that the task's
``input()`` raises: end of input becomes ``EOFError`` there; no cell running
to ask in, or an ``input()`` that fails here, a ``StdinNotImplementedError``
saying why.
"""

from __future__ import annotations

import builtins
import getpass
import queue
import sys
import threading
import types
from collections.abc import Callable
from typing import Any

from .output import kernel_shell

#: The reply value that means end of input (as ipykernel reads it).
END_OF_INPUT = "\x04"
#: Seconds a question waits for the loop to handle the messages that came with it.
SETTLE_TIMEOUT = 1.0


def can_answer() -> bool:
    """Whether a task submitted from here now can have its ``input()`` answered here."""
    shell = kernel_shell()
    if shell is not None:
        return bool(getattr(shell.kernel, "_allow_stdin", False))
    return sys.stdin is not None and not sys.stdin.closed


def read_answer(prompt: str, password: bool) -> dict[str, Any]:
    """Ask ``prompt`` here; the ``input_reply`` content to send back."""
    if kernel_shell() is not None and isinstance(builtins.input, types.BuiltinFunctionType):
        # the kernel forwards input() to its frontend only while a cell runs
        return {
            "value": "",
            "error": "the notebook cell that could answer has finished: wait for the task "
            "in a cell (future.result()) so that its input() is asked there",
        }
    try:
        value = getpass.getpass(prompt) if password else builtins.input(prompt)
    except EOFError:
        return {"value": END_OF_INPUT}
    except KeyboardInterrupt:
        return {"value": "", "error": "the caller interrupted the question"}
    except Exception as exc:
        return {
            "value": "",
            "error": f"the caller could not read an answer: {type(exc).__name__}: {exc}",
        }
    return {"value": value}


#: ``(prompt, password, answer, wanted)``, see :meth:`Prompts.ask`.
_Question = tuple[str, bool, Callable[[dict[str, Any]], None], Callable[[], bool]]


class Prompts:
    """Asks the questions of a pool's tasks, one at a time, on a thread of their own."""

    def __init__(self, settle: Callable[[Callable[[], None]], None]) -> None:
        """``settle(callback)`` runs ``callback`` on the loop thread once it has
        handled what is already there (the output a task printed before asking)."""
        self._settle = settle
        self._questions: queue.SimpleQueue[_Question | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def ask(
        self,
        prompt: str,
        password: bool,
        answer: Callable[[dict[str, Any]], None],
        wanted: Callable[[], bool],
    ) -> None:
        """Queue a question; ``answer(content)`` is called with its reply (from any thread).

        ``wanted()`` says whether the task still waits: a question whose task
        ended (interrupted, timed out) while it waited its turn is not asked.
        """
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="parallel-kernel-prompts", daemon=True
                )
                self._thread.start()
        self._questions.put((prompt, password, answer, wanted))

    def close(self) -> None:
        """Let the thread end once the questions already asked are answered."""
        with self._lock:
            if self._thread is not None:
                self._questions.put(None)
                self._thread = None

    def _serve(self) -> None:
        while (question := self._questions.get()) is not None:
            prompt, password, answer, wanted = question
            settled = threading.Event()
            self._settle(settled.set)
            settled.wait(SETTLE_TIMEOUT)
            if wanted():
                answer(read_answer(prompt, password))
