"""How much of an engine slot a task takes, learned from its function's measured run times.

Tasks of a function not seen yet, or longer than :data:`QUEUED_WORK_PER_SLOT`,
take a whole slot; short ones a fraction, so an engine gets several at a
time (sent as one message) and never waits for the client between them.
"""

from __future__ import annotations

from typing import Any

#: Seconds of known-short work an engine may have queued per slot of ``hwm``.
QUEUED_WORK_PER_SLOT = 0.002
#: Most tasks that share one slot (and so, about the most sent in one message).
MAX_TASKS_PER_SLOT = 32
#: Most functions whose run time is remembered (the oldest is forgotten first).
REMEMBERED_KINDS = 1000


class Costs:
    """Moving averages of run time per kind of task, and the slot share they give."""

    def __init__(self) -> None:
        self._runtimes: dict[str, float] = {}

    def cost(self, kind: str | None) -> float:
        """The share of an engine slot a task of ``kind`` takes: 1, or less if known short."""
        runtime = self._runtimes.get(kind) if kind is not None else None
        if runtime is None:
            return 1.0
        share = int(QUEUED_WORK_PER_SLOT / max(runtime, 1e-6))
        return 1.0 / min(MAX_TASKS_PER_SLOT, max(1, share))

    def learn(self, kind: str | None, runtime: Any) -> None:
        """Fold a measured run time (seconds, from reply metadata) into ``kind``'s average."""
        if kind is None or not isinstance(runtime, float):
            return
        previous = self._runtimes.get(kind)
        self._runtimes[kind] = runtime if previous is None else 0.7 * previous + 0.3 * runtime
        if len(self._runtimes) > REMEMBERED_KINDS:
            self._runtimes.pop(next(iter(self._runtimes)))
