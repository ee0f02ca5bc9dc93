"""``input()`` in a task: a clear error at once, not a read of the engine's own stdin."""

from __future__ import annotations

import builtins
import getpass
from typing import Any

from IPython.core.error import StdinNotImplementedError


class NoInput:
    """``input()`` and ``getpass()`` fail at once with a clear error while a task runs.

    Python's own ``input()`` would read the engine process's standard input:
    end-of-file for an engine a pool started, and a terminal nobody watches
    for one started by hand.  (A cell sent by ``execute_request`` with
    ``allow_stdin`` does ask its frontend, as in any kernel.)
    """

    __slots__ = ("saved",)

    def __enter__(self) -> None:
        self.saved = builtins.input, getpass.getpass
        builtins.input = getpass.getpass = refuse_input

    def __exit__(self, *exc_info: object) -> None:
        builtins.input, getpass.getpass = self.saved


def refuse_input(prompt: object = "", *args: Any, **kwargs: Any) -> str:
    """What ``input()`` does in a task."""
    raise StdinNotImplementedError(
        f"input({prompt!r}) was called in a task, but nobody can answer it: a task's "
        "caller is not its engine's terminal. Pass what the task needs as an argument "
        "(or send the code as a cell from a frontend that allows input)."
    )
