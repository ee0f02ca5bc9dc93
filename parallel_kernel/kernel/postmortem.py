"""Post-mortem debugging of a failed task on the engine where it failed.

The engine keeps its last task failure (``ApplyRunner.last_failure``), and
IPython keeps it as the kernel's last traceback (``sys.last_traceback``, what
``%debug`` and ``%tb`` in a console attached to the engine use), until the
next task fails there.  :func:`post_mortem` opens the debugger in the frame
that raised; it runs as a cell (an ``execute_request`` that allows stdin), so
the debugger's prompt reaches whoever sent that cell as ``input_request``
messages, and its output as IOPub streams: that is how
``TaskFuture.debug()`` drives it from a terminal or a notebook.
"""

from __future__ import annotations

from typing import Any


class NoFailureHere(LookupError):
    """The engine has no failure of the named task to debug (any more)."""


def post_mortem(runner: Any, shell: Any, msg_id: str) -> None:
    """Open the debugger in the frame where task ``msg_id`` raised; return when it quits."""
    failure = runner.last_failure
    if failure is None:
        raise NoFailureHere(
            f"no task has failed on this engine since it started, so task {msg_id} cannot be "
            "debugged here (was the engine restarted?)"
        )
    failed, (_, _, tb) = failure
    if failed != msg_id:
        raise NoFailureHere(
            f"task {msg_id} cannot be debugged any more: another task has failed on this "
            f"engine since ({failed}), and only the last failure is kept"
        )
    if tb is None:
        raise NoFailureHere(f"task {msg_id} failed without a traceback of its own to debug")
    debugger = shell.debugger_cls()
    debugger.reset()
    debugger.interaction(None, tb)
