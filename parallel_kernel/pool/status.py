"""A pool at a glance: each engine's state, task counts, running task, memory and CPU.

:meth:`Pool.status() <parallel_kernel.Pool.status>` takes a :class:`PoolStatus`
on the pool's loop thread (so its numbers agree with each other), with each
serving engine's memory and CPU from a ``stats_request`` on its control
channel (answered at once, even while a task runs).  ``print(pool.status())``
shows it as a table; the dashboard draws the same snapshot.  CPU use is the
share of one core the engine used since the previous sample of it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import TYPE_CHECKING

from .. import protocol
from .activity import Span

if TYPE_CHECKING:
    from .core import PoolCore
    from .engine_state import EngineRecord

#: Seconds an engine has to send its figures.
STATS_WAIT = 1.0
#: Seconds between the two samples of a first look (CPU use needs two).
FIRST_LOOK_GAP = 0.25


@dataclasses.dataclass(frozen=True)
class Engine:
    """What the pool knows about one engine (a snapshot).

    ``connection_file`` lets a person attach to the engine and look at the
    namespace its tasks left: ``jupyter console --existing <connection_file>``.
    """

    id: int
    state: str
    connection_file: str
    owned: bool
    uuid: str | None
    outstanding: int


def engine_of(record: EngineRecord) -> Engine:
    """The snapshot of one engine record (loop thread, or a user thread reading it once)."""
    return Engine(
        id=record.id,
        state=str(record.state),
        connection_file=record.connection_file,
        owned=record.owned,
        uuid=record.uuid,
        outstanding=len(record.inflight),
    )


@dataclasses.dataclass(frozen=True)
class EngineStatus(Engine):
    """One engine in a :class:`PoolStatus`: its :class:`Engine` snapshot, and its activity."""

    done: int
    failed: int
    #: Tasks sent to it and not started yet.
    queued: int
    #: The running task's function name, and for how many seconds it has run.
    running: str | None
    running_for: float | None
    #: Resident memory in bytes, and CPU use in percent of one core (``None``: unknown).
    rss: int | None
    cpu_percent: float | None


@dataclasses.dataclass
class PoolStatus:
    """A snapshot of a pool; ``str()`` is a table for terminals."""

    engines: list[EngineStatus]
    #: Tasks in the pool not sent to an engine yet (waiting for one, or for their inputs).
    pending: int
    recent: list[Span]
    taken_at: float

    @property
    def done(self) -> int:
        return sum(e.done for e in self.engines)

    @property
    def failed(self) -> int:
        return sum(e.failed for e in self.engines)

    @property
    def running(self) -> int:
        return sum(1 for e in self.engines if e.running is not None)

    @property
    def queued(self) -> int:
        return self.pending + sum(e.queued for e in self.engines)

    def summary(self) -> str:
        """One line: engines by state and the task totals."""
        states: dict[str, int] = {}
        for engine in self.engines:
            states[engine.state] = states.get(engine.state, 0) + 1
        engines = ", ".join(f"{n} {state}" for state, n in states.items()) or "none"
        return (
            f"{len(self.engines)} engines ({engines}); tasks: {self.running} running, "
            f"{self.queued} queued, {self.done} done, {self.failed} failed"
        )

    def __str__(self) -> str:
        header = ["engine", "state", "running", "for", "done", "failed", "queued", "RSS", "CPU"]
        rows = [header]
        for e in self.engines:
            rows.append(
                [
                    str(e.id),
                    e.state,
                    e.running or "-",
                    f"{e.running_for:.1f} s" if e.running_for is not None else "-",
                    str(e.done),
                    str(e.failed),
                    str(e.queued),
                    _megabytes(e.rss),
                    f"{e.cpu_percent:.0f} %" if e.cpu_percent is not None else "-",
                ]
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [
            "  ".join(
                cell.rjust(w) if i >= 3 else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
            for row in rows
        ]
        return "\n".join([self.summary(), *lines])


def _megabytes(value: int | None) -> str:
    return f"{value / 1e6:.0f} MB" if value is not None else "-"


class Stats:
    """The last figures of each engine, to turn CPU time into CPU use (loop thread)."""

    def __init__(self, core: PoolCore) -> None:
        self.core = core
        #: engine id -> (cpu seconds, engine's clock, rss)
        self._last: dict[int, tuple[float, float, int | None]] = {}
        #: engine id -> percent of one core, between its last two samples
        self.cpu: dict[int, float] = {}

    async def sample(self) -> None:
        """Ask every serving engine for its figures; those that do not answer keep theirs."""
        core = self.core
        waiters = {
            e.id: core.requests.send(e, "control", protocol.STATS_REQUEST, {})
            for e in core.records.values()
            if e.serving and e.connection is not None
        }
        if not waiters:
            return
        await asyncio.wait(waiters.values(), timeout=STATS_WAIT)
        for engine_id, waiter in waiters.items():
            if not waiter.done():
                core.requests.forget(waiter)
                continue
            content = waiter.result()["content"]
            if content.get("status") != "ok":
                continue
            cpu, clock = float(content["cpu_seconds"]), float(content["wall_seconds"])
            last = self._last.get(engine_id)
            if last is not None and clock > last[1]:
                self.cpu[engine_id] = max(0.0, 100.0 * (cpu - last[0]) / (clock - last[1]))
            self._last[engine_id] = (cpu, clock, content.get("rss"))

    def first_look(self) -> bool:
        """Whether some serving engine has fewer than two samples."""
        return any(e.serving and e.id not in self.cpu for e in self.core.records.values())

    def rss(self, engine_id: int) -> int | None:
        last = self._last.get(engine_id)
        return last[2] if last is not None else None

    def forget(self, engine_id: int) -> None:
        """An engine restarted: its figures start again."""
        self._last.pop(engine_id, None)
        self.cpu.pop(engine_id, None)


def snapshot(core: PoolCore) -> PoolStatus:
    """The pool as it is now (loop thread; the stats as last sampled)."""
    now = time.time()
    engines = []
    for record in core.in_order():
        activity = core.activity.engines[record.id]
        running = activity.running
        engines.append(
            EngineStatus(
                **dataclasses.asdict(engine_of(record)),
                done=activity.done,
                failed=activity.failed,
                queued=max(0, len(record.inflight) - (1 if running else 0)),
                running=running[0] if running else None,
                running_for=now - running[1] if running else None,
                rss=core.stats.rss(record.id),
                cpu_percent=core.stats.cpu.get(record.id),
            )
        )
    return PoolStatus(
        engines=engines,
        pending=len(core.scheduler.queue),
        recent=list(core.activity.recent),
        taken_at=now,
    )


async def measured(core: PoolCore) -> PoolStatus:
    """A snapshot with fresh figures (two samples apart on a first look, for CPU use)."""
    await core.stats.sample()
    if core.stats.first_look():
        await asyncio.sleep(FIRST_LOOK_GAP)
        await core.stats.sample()
    return snapshot(core)
