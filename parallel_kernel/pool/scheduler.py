"""Choosing engines for tasks: load, targets, dependencies, blacklists.  No I/O.

The pool owns the sockets and the event loop; this module decides.  Each
call says what to do next and the pool does it, so the rules can be tested
without engines.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import DependencyError, EngineDied, ParallelError


@dataclass(eq=False)
class Dependency:
    """Futures a task depends on, and which outcomes count.

    ``all=True`` waits for every future, ``all=False`` for any one;
    ``success`` and ``failure`` say which outcomes satisfy the dependency
    (by default only success).  Passed as ``after=`` it orders tasks in
    time; as ``follow=`` it also places the task on the engine where those
    futures ran.
    """

    futures: list[Any]
    all: bool = True
    success: bool = True
    failure: bool = False

    def __post_init__(self) -> None:
        self.futures = list(self.futures)
        if not (self.success or self.failure):
            raise ValueError("a dependency must accept success, failure or both")

    @classmethod
    def coerce(cls, value: Dependency | Iterable[Any] | Any | None) -> Dependency | None:
        """Accept a Dependency, a future, or an iterable of futures."""
        if value is None or isinstance(value, Dependency):
            return value
        if hasattr(value, "done") and hasattr(value, "result"):
            return cls([value])
        return cls(list(value))

    def _counts(self, future: Any) -> bool:
        failed = future.cancelled() or future.exception() is not None
        return self.failure if failed else self.success

    def state(self) -> str:
        """``"met"``, ``"waiting"`` or ``"impossible"``."""
        if not self.futures:
            return "met"
        done = [f for f in self.futures if f.done()]
        good = [f for f in done if self._counts(f)]
        if self.all:
            if len(good) < len(done):
                return "impossible"
            return "met" if len(done) == len(self.futures) else "waiting"
        if good:
            return "met"
        return "impossible" if len(done) == len(self.futures) else "waiting"


@dataclass(eq=False)
class EngineSlot:
    """The scheduler's view of one engine."""

    engine_id: int
    hwm: int
    available: bool = True
    #: Sum of the costs of the engine's unanswered jobs (a job costs 1 or less).
    outstanding: float = 0.0
    last_used: int = 0


@dataclass(eq=False)
class Job:
    """The scheduler's view of one task."""

    target: int | None = None
    after: Dependency | None = None
    follow: Dependency | None = None
    blacklist: set[int] = field(default_factory=set)
    #: ``(name, future)`` of each future passed as an argument, whose value the task needs.
    inputs: list[tuple[str, Any]] = field(default_factory=list)
    task: Any = None
    #: Share of an engine slot the job takes: 1, or less for tasks known to be short,
    #: so that an engine gets several of them at once (and the pool sends them together).
    cost: float = 1.0


def _preference(slot: EngineSlot) -> tuple[float, int]:
    """Least loaded first.  Between busy engines as loaded as each other, the one
    used longest ago (turns); between idle ones, the one used last: it is the
    most likely to be awake, which saves a wake-up per task when tasks come one
    at a time."""
    recency = -slot.last_used if slot.outstanding == 0 else slot.last_used
    return slot.outstanding, recency


class Scheduler:
    """Least-loaded placement with a high-water mark of outstanding tasks per engine."""

    def __init__(self) -> None:
        self.engines: dict[int, EngineSlot] = {}
        self.queue: deque[Job] = deque()
        #: Engines that will never take a task again (dead for good, or stopped).
        self.retired: set[int] = set()
        #: Bytes of a job's inputs each engine already holds (a job goes where most are).
        self.affinity: Callable[[Job], dict[int, int]] = lambda job: {}
        self._clock = itertools.count(1)

    def add_engine(self, engine_id: int, hwm: int) -> None:
        """Make room for an engine that takes up to ``hwm`` slots (not available yet)."""
        self.engines[engine_id] = EngineSlot(engine_id, hwm)

    def set_available(self, engine_id: int, available: bool) -> None:
        """Whether the engine takes tasks now (the engine state machine keeps this in step)."""
        self.engines[engine_id].available = available

    def finished(self, engine_id: int, cost: float = 1.0) -> None:
        """A job of ``cost`` on ``engine_id`` got its reply (or was lost)."""
        slot = self.engines[engine_id]
        slot.outstanding = max(0.0, slot.outstanding - cost)
        if slot.outstanding < 1e-9:
            slot.outstanding = 0.0

    def retire(self, engine_id: int) -> None:
        """The engine will never take a task again: jobs only it could run can never run."""
        self.retired.add(engine_id)
        self.engines[engine_id].available = False

    def forget_outstanding(self, engine_id: int) -> None:
        """The engine died: none of its tasks are outstanding any more."""
        self.engines[engine_id].outstanding = 0.0

    def eligible(self, job: Job, *, retired: bool = False) -> set[int]:
        """Engines that may ever run ``job`` (ignoring load), given targets and blacklist.

        With ``retired=True``, also the engines that are gone for good.
        """
        candidates = set(self.engines)
        if job.target is not None:
            candidates &= {job.target}
        if job.follow is not None and job.follow.state() == "met":
            places = {f.engine_id for f in job.follow.futures if f.engine_id is not None}
            if job.follow.all and len(places) > 1:
                return set()
            candidates &= places
        candidates -= job.blacklist
        return candidates if retired else candidates - self.retired

    def check(self, job: Job) -> str | None:
        """Why ``job`` can never run, or ``None``."""
        if (failed := failed_input(job)) is not None:
            name, future = failed
            if future.cancelled():
                return f"its input {name} was cancelled"
            error = future.exception()
            return f"its input {name} failed: {type(error).__name__}: {error}"
        for name, dependency in (("after", job.after), ("follow", job.follow)):
            if dependency is not None and dependency.state() == "impossible":
                return f"its {name} dependency can no longer be met"
        if job.target is not None and job.target not in self.engines:
            return f"there is no engine {job.target}"
        if job.target is not None and job.target in self.retired:
            return f"its engine {job.target} is dead"
        ready = all(d is None or d.state() == "met" for d in (job.after, job.follow)) and all(
            future.done() for _, future in job.inputs
        )
        if ready and not self.eligible(job):
            if self.eligible(job, retired=True):
                return "every engine that could run it is dead"
            if job.follow is not None and job.follow.all:
                places = {f.engine_id for f in job.follow.futures}
                if len(places) > 1:
                    return f"follow=all needs one engine, but its futures ran on {sorted(places)}"
            return "no engine is eligible to run it"
        return None

    def assignments(self) -> Iterator[tuple[Job, int]]:
        """Yield ``(job, engine_id)`` for every queued job that can start now, in order.

        Jobs whose dependencies are impossible are yielded with engine ``-1``;
        the caller fails them.
        """
        queue = self.queue
        waiting: list[Job] = []
        try:
            while queue:
                job = queue.popleft()
                if self.check(job) is not None:
                    yield job, -1
                    continue
                if any(
                    d is not None and d.state() != "met" for d in (job.after, job.follow)
                ) or not all(future.done() for _, future in job.inputs):
                    waiting.append(job)
                    continue
                engine_id = self._pick(job)
                if engine_id is None:
                    waiting.append(job)
                    if job.target is None and job.follow is None and not job.blacklist:
                        # later untargeted jobs could not do better: keep submission order,
                        # and leave the rest of the queue untouched (no O(queue) work per call)
                        break
                    continue
                slot = self.engines[engine_id]
                slot.outstanding += job.cost
                slot.last_used = next(self._clock)
                yield job, engine_id
        finally:
            queue.extendleft(reversed(waiting))

    def _pick(self, job: Job) -> int | None:
        """The preferred eligible engine with room for ``job`` now, or ``None``."""
        held = self.affinity(job) if job.inputs else {}
        best: EngineSlot | None = None
        best_key: tuple[float, ...] = ()
        for engine_id in self.eligible(job):
            slot = self.engines[engine_id]
            if not slot.available or slot.outstanding + job.cost > slot.hwm + 1e-9:
                continue
            key = (-held.get(engine_id, 0), *_preference(slot))
            if best is None or key < best_key:
                best, best_key = slot, key
        return None if best is None else best.engine_id

    def reason(self, job: Job) -> ParallelError:
        """The error of a job that can never run (``EngineDied`` when its engine is gone)."""
        why = self.check(job)
        failed = failed_input(job)
        if failed is not None:
            error = DependencyError(f"the task cannot run: {why}")
            if not failed[1].cancelled():
                error.__cause__ = failed[1].exception()
            return error
        places = self.eligible(job, retired=True)
        if places and places <= self.retired:
            return EngineDied(f"the task cannot run: {why}")
        return DependencyError(f"the task cannot run: {why}")


def failed_input(job: Job) -> tuple[str, Any] | None:
    """The first input of ``job`` that failed or was cancelled, as ``(name, future)``."""
    for name, future in job.inputs:
        if future.done() and (future.cancelled() or future.exception() is not None):
            return name, future
    return None
