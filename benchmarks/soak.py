"""A soak run: hours of use squeezed into minutes, with engines killed under it.

``python -m benchmarks.soak [--minutes 10] [--engines 2] [--small 1000000] [--json F]``
keeps a pool busy with a mixed workload until both the time is up and the
number of small tasks is reached:

* small tasks through ``map`` (2,000 at a time, ``retries=2``) and through
  single ``submit`` calls (``retries=2``);
* sequential round trips, timed, for latency percentiles over the whole run;
* medium tasks (5 to 20 ms) of which a random tenth are cancelled at a random
  moment; tasks that raise; tasks that print; 4 MiB numpy arrays echoed;
* one engine killed with SIGKILL every ``--kill-every`` seconds (default 60),
  which the pool must notice and restart.

Every future's outcome is checked: the right result, or the specific error
its situation calls for (the task's own exception for a task that raises,
``EngineDied`` for one on an engine that was killed, a cancellation that was
acknowledged).  A wrong result or an unexpected exception counts as *lost*; a
result still missing after ``RESULT_TIMEOUT`` as a *hung wait*.  Both must be 0.
Client and engine RSS are reported at the start and the end.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import json
import os
import random
import signal
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import workloads
from .memory import rss_bytes

#: Seconds any one result may take before it counts as a hung wait.
RESULT_TIMEOUT = 120


def square(x: int) -> int:
    return x * x


def medium(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


def fails(x: int) -> None:
    raise ValueError(f"soak failure {x}")


def chatty(x: int) -> int:
    print(f"line {x}")
    return x


def echo(value: Any) -> Any:
    return value


def engine_pid() -> int:
    return os.getpid()


@dataclass
class Report:
    """What the soak run found."""

    minutes: float = 0.0
    engines: int = 0
    small_tasks: int = 0
    other_tasks: int = 0
    completed: int = 0
    expected_errors: dict[str, int] = field(default_factory=dict)
    cancelled: int = 0
    lost: int = 0
    hung_waits: int = 0
    engine_kills: int = 0
    latency_us: dict[str, float] = field(default_factory=dict)
    client_rss_mb: dict[str, float] = field(default_factory=dict)
    engine_rss_mb: dict[str, list[float]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def table(self) -> str:
        client = self.client_rss_mb
        rows = [
            ("duration", f"{self.minutes:.1f} min on {self.engines} engines"),
            ("small tasks (map + submit)", f"{self.small_tasks:,}"),
            ("other tasks (mixed)", f"{self.other_tasks:,}"),
            ("completed with the right result", f"{self.completed:,}"),
            (
                "expected errors",
                ", ".join(f"{k} {v:,}" for k, v in sorted(self.expected_errors.items())) or "none",
            ),
            ("cancelled (acknowledged)", f"{self.cancelled:,}"),
            ("engines killed (SIGKILL)", f"{self.engine_kills}"),
            ("**lost**", f"**{self.lost}**"),
            ("**hung waits**", f"**{self.hung_waits}**"),
            (
                "latency p50 / p99 / max",
                " / ".join(f"{self.latency_us.get(k, 0):,.0f} µs" for k in ("p50", "p99", "max")),
            ),
            (
                "client RSS start → each minute → end",
                " → ".join(f"{v:.0f}" for v in client.values()) + " MB",
            ),
            (
                "engine RSS start → end",
                " → ".join(
                    ", ".join(f"{v:.0f}" for v in self.engine_rss_mb.get(k, []))
                    for k in ("start", "end")
                )
                + " MB",
            ),
        ]
        lines = ["| measure | value |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in rows]
        return "\n".join(lines)


class Soak:
    def __init__(self, pool: Any, report: Report, rng: random.Random) -> None:
        self.pool = pool
        self.report = report
        self.rng = rng
        self.latencies: list[float] = []
        self.pids: list[int] = []

    def check(self, future: Any, expected: Any, kind: str, error: type | None = None) -> None:
        """Wait for one future and classify its outcome."""
        from parallel_kernel import EngineDied, RemoteTraceback

        report = self.report
        try:
            value = future.result(RESULT_TIMEOUT)
        except concurrent.futures.CancelledError:
            report.cancelled += 1
            return
        except concurrent.futures.TimeoutError:
            report.hung_waits += 1
            report.problems.append(f"{kind}: no result within {RESULT_TIMEOUT} s")
            return
        except EngineDied:
            report.expected_errors["EngineDied"] = report.expected_errors.get("EngineDied", 0) + 1
            return
        except Exception as exc:
            raised_by_task = isinstance(exc.__cause__, RemoteTraceback)
            if error is not None and isinstance(exc, error) and raised_by_task:
                name = f"{error.__name__} raised by the task"
                report.expected_errors[name] = report.expected_errors.get(name, 0) + 1
                return
            report.lost += 1
            report.problems.append(f"{kind}: unexpected {exc!r}")
            return
        if error is not None or not _same(value, expected):
            report.lost += 1
            report.problems.append(f"{kind}: wrong result {value!r:.80}")
            return
        report.completed += 1

    def round(self) -> None:
        """One round of the mixed workload (about a second)."""
        import numpy as np

        pool, rng, report = self.pool, self.rng, self.report
        self.pids = self.broadcast(engine_pid)
        # sequential round trips while the pool has nothing else to do
        for _ in range(20):
            began = time.perf_counter()
            try:
                pool.submit(square, 3, retries=2).result(RESULT_TIMEOUT)
                self.latencies.append(time.perf_counter() - began)
                report.completed += 1
            except concurrent.futures.TimeoutError:
                report.hung_waits += 1
            except Exception as exc:
                report.lost += 1
                report.problems.append(f"latency probe: {exc!r}")
            report.small_tasks += 1
        start = rng.randrange(1_000_000)
        items = range(start, start + 2000)
        results = pool.map(square, items, retries=2, timeout=RESULT_TIMEOUT)
        try:
            if list(results) == [square(i) for i in items]:
                report.completed += len(items)
            else:
                report.lost += len(items)
                report.problems.append("map: wrong results")
        except Exception as exc:
            report.lost += len(items)
            report.problems.append(f"map: {exc!r}")
        report.small_tasks += len(items)

        small = [(pool.submit(square, i, retries=2), square(i)) for i in range(200)]
        report.small_tasks += len(small)
        mixed = []
        for _ in range(20):
            seconds = rng.choice([0.005, 0.01, 0.02])
            mixed.append((pool.submit(medium, seconds), seconds, "medium", None))
        for i in range(2):
            mixed.append((pool.submit(fails, i), None, "fails", ValueError))
            mixed.append((pool.submit(chatty, i), i, "chatty", None))
            array = np.full(4 * 2**20, i, dtype=np.uint8)
            mixed.append((pool.submit(echo, array), array, "echo", None))
        report.other_tasks += len(mixed)
        for future, *_ in rng.sample(mixed[:20], 2):
            time.sleep(rng.random() * 0.01)
            future.cancel()
        for future, expected in small:
            self.check(future, expected, "submit")
        for future, expected, kind, error in mixed:
            self.check(future, expected, kind, error)
            finished = future.done() and not future.cancelled() and future.exception() is None
            if kind == "chatty" and finished and future.stdout != f"line {expected}\n":
                report.lost += 1
                report.problems.append(f"chatty: stdout {future.stdout!r}")

    def broadcast(self, fn: Any) -> list[Any]:
        """``pool.broadcast``, again if an engine was killed under it (an expected error)."""
        from parallel_kernel import EngineDied

        for _ in range(10):
            try:
                return self.pool.broadcast(fn)
            except EngineDied:
                errors = self.report.expected_errors
                errors["EngineDied"] = errors.get("EngineDied", 0) + 1
        raise RuntimeError("ten broadcasts in a row lost an engine")

    def kill_an_engine(self) -> None:
        """SIGKILL one engine, whatever it is doing (called from the killer thread)."""
        try:
            os.kill(self.rng.choice(self.pids), signal.SIGKILL)
        except ProcessLookupError:
            return  # it is being restarted already
        self.report.engine_kills += 1

    def sample_memory(self, minute: int) -> None:
        self.report.client_rss_mb[f"minute {minute}"] = _client_rss()


def rss_mb(pid: int) -> float:
    return rss_bytes(pid) / 2**20


def _same(value: Any, expected: Any) -> bool:
    if hasattr(expected, "shape"):
        return bool(value.shape == expected.shape and (value == expected).all())
    return value == expected


def _client_rss() -> float:
    """This process's RSS after a garbage collection.

    A task that raised leaves a reference cycle here (its future holds the
    exception, whose traceback holds this harness's frames and their arrays)
    that only the cyclic collector frees; without a collection the samples
    swing by a hundred MB with the collector's timing, which hides any trend.
    """
    gc.collect()
    return round(rss_mb(os.getpid()), 1)


def _engine_rss(soak: Soak) -> list[float]:
    return [round(rss_mb(pid), 1) for pid in soak.broadcast(engine_pid)]


def run(minutes: float, engines: int, small: int, kill_every: float, seed: int) -> Report:
    import cloudpickle

    from parallel_kernel import Pool

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cloudpickle.register_pickle_by_value(workloads)
    report = Report(engines=engines)
    rng = random.Random(seed)
    started = time.monotonic()
    with Pool(engines) as pool:
        soak = Soak(pool, report, rng)
        soak.round()  # warm-up: the start figures are those of a pool in use
        report.client_rss_mb["start"] = _client_rss()
        report.engine_rss_mb["start"] = _engine_rss(soak)
        stop = threading.Event()

        def killer() -> None:
            # at random moments of the rounds: mid-map, mid-task, between tasks
            while not stop.wait(kill_every * rng.uniform(0.75, 1.25)):
                soak.kill_an_engine()

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        deadline = started + minutes * 60
        next_sample = time.monotonic() + 60
        try:
            while time.monotonic() < deadline or report.small_tasks < small:
                soak.round()
                if time.monotonic() >= next_sample:
                    soak.sample_memory(round((time.monotonic() - started) / 60))
                    next_sample += 60
        finally:
            stop.set()
            thread.join()
        _wait_all_idle(pool)
        report.client_rss_mb["end"] = _client_rss()
        report.engine_rss_mb["end"] = _engine_rss(soak)
    report.minutes = round((time.monotonic() - started) / 60, 2)
    lat = sorted(soak.latencies)
    if lat:
        report.latency_us = {
            "p50": round(statistics.median(lat) * 1e6, 1),
            "p99": round(lat[int(0.99 * (len(lat) - 1))] * 1e6, 1),
            "max": round(lat[-1] * 1e6, 1),
        }
    return report


def _wait_all_idle(pool: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while any(e.state != "idle" for e in pool.engines) and time.monotonic() < deadline:
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0, help="least run time (10)")
    parser.add_argument("--engines", type=int, default=2, help="engines in the pool (2)")
    parser.add_argument("--small", type=int, default=1_000_000, help="least small tasks (1e6)")
    parser.add_argument("--kill-every", type=float, default=60.0, help="seconds between kills")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--json", type=Path, help="also write the report as JSON")
    args = parser.parse_args(argv)
    report = run(args.minutes, args.engines, args.small, args.kill_every, args.seed)
    print(report.table())
    for problem in report.problems[:20]:
        print("problem:", problem)
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=1))
    return 0 if report.lost == 0 and report.hung_waits == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
