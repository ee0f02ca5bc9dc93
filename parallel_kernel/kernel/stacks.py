"""The Python stack of the request the main thread runs, read from another thread.

``stack_request`` is answered on the control thread, so a busy engine
answers at once and its task goes on undisturbed: the main thread's frames
are read with ``sys._current_frames()``, which neither stops nor slows it.  A
task blocked in C code (``time.sleep``, a numpy call) still shows the Python
line it is on.

Only the user's frames are shown: those below the call of the task's function
(:meth:`ApplyRunner._call <parallel_kernel.kernel.apply.ApplyRunner._call>`),
or below IPython's ``run_code`` for a cell, or, for a task awaiting a
coroutine, the chain of coroutines it awaits.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from collections.abc import Iterable
from types import FrameType
from typing import Any

from . import compat
from .interrupts import Phase

#: Frames of this package's own helpers (``remote.run_chunk`` ...) are not the user's.
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def stack_content(runner: Any, wanted: str | None) -> dict[str, Any]:
    """The ``stack_reply`` content: what the main thread runs and its user frames.

    ``wanted``: a request's msg_id; its frames are given only if it is the one
    running (``running`` tells which one is).
    """
    awaited = runner.awaiting
    gate = runner.gate
    if awaited is not None:
        running, coroutine = awaited
    elif gate.phase is Phase.IDLE or gate.running is None:
        return {"status": "ok", "running": None, "frames": []}
    else:
        running, coroutine = gate.running, None
    content: dict[str, Any] = {"status": "ok", "running": running, "frames": []}
    if wanted is not None and wanted != running:
        return content
    if coroutine is not None:
        content["awaiting"] = True
        frames = _coroutine_frames(coroutine)
    else:
        main = sys._current_frames().get(threading.main_thread().ident)
        frames = _user_frames(_outermost_first(main), runner.call_code)
    content["frames"] = _summary(frames)
    return content


def _outermost_first(frame: FrameType | None) -> list[FrameType]:
    frames = []
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    frames.reverse()
    return frames


def _user_frames(frames: list[FrameType], call_code: Any) -> list[FrameType]:
    """The frames below the last call into user code (a task's function, a cell)."""
    entries = (call_code, *compat.cell_runner_codes())
    start = None
    for index, frame in enumerate(frames):
        if frame.f_code in entries:
            start = index + 1
    if start is None:
        return []
    user = frames[start:]
    while user and user[0].f_code.co_filename.startswith(_PACKAGE_DIR):
        user = user[1:]
    return user


def _coroutine_frames(coroutine: Any) -> list[FrameType]:
    """The frames of a coroutine and of the coroutines it awaits, outermost first."""
    frames = []
    while coroutine is not None:
        frame = getattr(coroutine, "cr_frame", None) or getattr(coroutine, "gi_frame", None)
        if frame is None:
            break
        if not frame.f_code.co_filename.startswith(_PACKAGE_DIR):
            frames.append(frame)
        coroutine = getattr(coroutine, "cr_await", None) or getattr(coroutine, "gi_yieldfrom", None)
    return frames


def _summary(frames: Iterable[FrameType]) -> list[dict[str, Any]]:
    """JSON-able frames: file, line number, function name, source line."""
    summary = traceback.StackSummary.extract(
        ((frame, frame.f_lineno) for frame in frames), lookup_lines=True
    )
    return [
        {"filename": f.filename, "lineno": f.lineno, "name": f.name, "line": f.line or ""}
        for f in summary
    ]
