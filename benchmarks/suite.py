"""The measurements, identical for every system."""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .memory import peak_rss_bytes, rss_bytes
from .systems import System
from .workloads import echo, noop

MiB = 2**20


@dataclass
class Settings:
    """How much work each measurement does."""

    workers: int = 2
    latency_rounds: int = 1000
    throughput_sizes: tuple[int, ...] = (2_000, 20_000)
    echo_sizes_mib: tuple[int, ...] = (64, 512)
    echo_rounds: int = 5
    client_memory_tasks: int = 100_000
    quick: bool = False

    @classmethod
    def quick_settings(cls, workers: int) -> Settings:
        return cls(
            workers=workers,
            latency_rounds=300,
            throughput_sizes=(2_000,),
            echo_sizes_mib=(64,),
            echo_rounds=4,
            client_memory_tasks=20_000,
            quick=True,
        )


@dataclass
class Result:
    """Everything measured for one system (absent keys were not measured)."""

    system: str
    label: str
    startup_s: float | None = None
    latency_us: dict[str, float] = field(default_factory=dict)
    throughput: dict[str, float] = field(default_factory=dict)
    echo_MBps: dict[str, float] = field(default_factory=dict)
    memory_MB: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def measure(system: System, settings: Settings, client_memory: bool = False) -> Result:
    """Run every measurement on ``system``, starting and stopping it."""
    result = Result(system.name, system.label)
    started = time.perf_counter()
    system.start()
    try:
        system.result(system.submit(noop))
        result.startup_s = time.perf_counter() - started
        pids = [] if system.name == "zmq" else system.worker_pids()
        if pids:
            result.memory_MB["worker_idle"] = _mb(max(rss_bytes(pid) for pid in pids))
        result.latency_us = latency(system, settings.latency_rounds)
        for n in settings.throughput_sizes:
            result.throughput[f"submit_{n}"] = throughput(system.run_many, n)
            if system.has_map:
                result.throughput[f"map_{n}"] = throughput(system.map_many, n)
        for size in settings.echo_sizes_mib:
            result.echo_MBps[str(size)], extra = bandwidth(system, size, settings.echo_rounds, pids)
            if extra is not None:
                result.memory_MB[f"worker_peak_extra_per_echo_{size}MiB"] = extra
        if pids:
            result.memory_MB["worker_after_echo"] = _mb(max(rss_bytes(pid) for pid in pids))
        if client_memory:
            result.memory_MB.update(client_growth(system, settings.client_memory_tasks))
    finally:
        system.close()
    return result


def latency(system: System, rounds: int) -> dict[str, float]:
    """Sequential round trips of a no-op task: median, p90, p99 in microseconds."""
    for _ in range(max(20, rounds // 10)):
        system.result(system.submit(noop))
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        system.result(system.submit(noop))
        times.append(time.perf_counter() - start)
    times.sort()
    return {
        "median": round(statistics.median(times) * 1e6, 1),
        "p90": round(times[int(0.9 * (len(times) - 1))] * 1e6, 1),
        "p99": round(times[int(0.99 * (len(times) - 1))] * 1e6, 1),
    }


def throughput(run: Any, n: int) -> float:
    """Tasks per second for ``run(n)`` (after a small warm-up)."""
    run(min(n, 200))
    start = time.perf_counter()
    run(n)
    return round(n / (time.perf_counter() - start), 1)


def bandwidth(
    system: System, size_mib: int, rounds: int, pids: list[int]
) -> tuple[float, float | None]:
    """Echo an array of ``size_mib`` MiB: MB/s both ways, and the workers' extra peak memory.

    The second value is how many times the array's size the busiest worker's
    peak resident memory grew by during the echoes: about 1 means the worker
    held the array once (no copy on its way in or out).
    """
    array = np.arange(size_mib * MiB, dtype=np.uint8)
    gc.collect()
    before = {pid: max(peak_rss_bytes(pid), rss_bytes(pid)) for pid in pids}
    for _ in range(max(1, len(pids))):  # every worker once, untimed: first touches of memory
        system.result(system.submit(echo, array))
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        back = system.result(system.submit(echo, array))
        times.append(time.perf_counter() - start)
        back = np.frombuffer(back, dtype=np.uint8) if not isinstance(back, np.ndarray) else back
        if back.nbytes != array.nbytes or back[12345] != array[12345] or back[-1] != array[-1]:
            raise AssertionError(f"{system.name}: the echoed array differs")
        del back
    rate = round(2 * array.nbytes / statistics.median(times) / 1e6, 1)
    extra = None
    if pids:
        grown = max(peak_rss_bytes(pid) - before[pid] for pid in pids)
        extra = round(max(grown, 0) / array.nbytes, 2)
    return rate, extra


def client_growth(system: System, tasks: int) -> dict[str, float]:
    """How much this (client) process grows while running ``tasks`` tasks, in MB.

    Half of them go through single submits and half through the system's map,
    in rounds of 2,000, results dropped: bounded bookkeeping keeps the growth
    near zero however many tasks run.
    """
    gc.collect()
    before = rss_bytes()
    rounds = max(1, tasks // 2 // 2000)
    for _ in range(rounds):
        system.run_many(2000)
    if system.has_map:
        system.map_many(tasks // 2)
    else:
        for _ in range(rounds):
            system.run_many(2000)
    gc.collect()
    return {f"client_growth_after_{tasks}_tasks": _mb(rss_bytes() - before)}


def _mb(value: int) -> float:
    return round(value / 1e6, 1)
