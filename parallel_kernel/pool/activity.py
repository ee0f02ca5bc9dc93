"""What a pool's engines did and are doing: counts, running tasks, a timeline.

The dispatcher tells it when a task starts on an engine and when a task that
went to an engine ends (loop thread); :meth:`Pool.status()
<parallel_kernel.Pool.status>` and the dashboard read it.  Keeping it costs a
few dictionary operations per task; watchers (a dashboard shown somewhere)
are told that something changed, and nobody is told anything when none is
registered.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable
from typing import Any

#: Finished tasks kept for the timeline.
RECENT = 500


@dataclasses.dataclass
class Span:
    """One finished task on the timeline (wall-clock seconds)."""

    engine_id: int
    label: str
    start: float
    end: float
    ok: bool


@dataclasses.dataclass
class EngineActivity:
    """One engine's counts, and what runs there now."""

    done: int = 0
    failed: int = 0
    #: ``(label, wall-clock start)`` of the task running there, if the pool knows of one.
    running: tuple[str, float] | None = None
    #: When its last task ended (the start of a batched task that did not report its own).
    last_end: float | None = None


def label(task: Any) -> str:
    """A task as a person reads it: its function's name, or the kind of request."""
    if task.name:
        return task.name
    kind = task.kind
    if kind:
        return kind.rsplit(":", 1)[0].rsplit(".", 1)[-1]
    return str(task.msg_type).removesuffix("_request")


class Activity:
    """The activity record of one pool (loop thread)."""

    def __init__(self, keep: int = RECENT) -> None:
        self.engines: collections.defaultdict[int, EngineActivity] = collections.defaultdict(
            EngineActivity
        )
        self.recent: collections.deque[Span] = collections.deque(maxlen=keep)
        self.watchers: list[Callable[[], None]] = []

    def started(self, engine_id: int, task: Any) -> None:
        """``task`` starts on ``engine_id``."""
        self.engines[engine_id].running = (label(task), time.time())
        self._changed()

    def ended(self, engine_id: int, task: Any, ok: bool) -> None:
        """``task``, sent to ``engine_id``, has its outcome (``ok``: a result)."""
        now = time.time()
        engine = self.engines[engine_id]
        name = label(task)
        if engine.running is not None and engine.running[0] == name:
            start = engine.running[1]
        else:
            start = engine.last_end if engine.last_end is not None else now
        engine.running = None
        engine.last_end = now
        if ok:
            engine.done += 1
        else:
            engine.failed += 1
        self.recent.append(Span(engine_id, name, min(start, now), now, ok))
        self._changed()

    def _changed(self) -> None:
        for watcher in self.watchers:
            watcher()
