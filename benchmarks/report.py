"""The table, the targets, the JSON file and the plot of one benchmark run."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from .suite import Result, Settings

OURS = "parallel_kernel"
TCP = "parallel_kernel-tcp"


def machine() -> dict[str, Any]:
    """Where the run happened, and with which versions."""
    versions = {}
    for package in (
        "parallel_kernel",
        "ipykernel",
        "jupyter_client",
        "pyzmq",
        "ipyparallel",
        "distributed",
        "numpy",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "versions": versions,
    }


def targets(results: dict[str, Result]) -> list[dict[str, Any]]:
    """The performance targets, each as ours/peer ratio against its goal."""
    ours = results.get(OURS)
    if ours is None or ours.error:
        return []
    checks: list[dict[str, Any]] = []

    def check(
        what: str,
        mine: float | None,
        peer: str,
        theirs: float | None,
        goal: float,
        lower_is_better: bool,
        who: str = "ours",
    ) -> None:
        if mine is None or theirs is None or peer not in results or results[peer].error:
            return
        ratio = mine / theirs
        met = ratio <= goal if lower_is_better else ratio >= goal
        sign = "<=" if lower_is_better else ">="
        checks.append(
            {
                "target": f"{what}: {who} / {peer} {sign} {goal:g}",
                "ours": mine,
                "peer": theirs,
                "ratio": round(ratio, 3),
                "met": met,
            }
        )

    def get(name: str, section: str, key: str) -> float | None:
        result = results.get(name)
        if result is None:
            return None
        return getattr(result, section).get(key)

    median = ours.latency_us.get("median")
    check(
        "latency median",
        median,
        "ipyparallel-direct",
        get("ipyparallel-direct", "latency_us", "median"),
        0.15,
        True,
    )
    check(
        "latency median",
        median,
        "processpool",
        get("processpool", "latency_us", "median"),
        2.0,
        True,
    )
    for how in ("submit", "map"):
        key = f"{how}_2000"
        check(
            f"2,000 tasks via {how}",
            ours.throughput.get(key),
            "processpool",
            get("processpool", "throughput", key),
            1.0,
            False,
        )
        check(
            f"2,000 tasks via {how}",
            ours.throughput.get(key),
            "ipyparallel-lb",
            get("ipyparallel-lb", "throughput", "submit_2000"),
            20.0,
            False,
        )
    echo = ours.echo_MBps.get("64")
    # the floor on the same transport: ipc for the default pool (whose engines on this
    # host share memory with it), TCP for its TCP variant
    for size in ("64", "512"):
        check(
            f"{size} MiB echo",
            ours.echo_MBps.get(size),
            "zmq-ipc",
            get("zmq-ipc", "echo_MBps", size),
            2.0,
            False,
        )
    check(
        "64 MiB echo",
        get(TCP, "echo_MBps", "64"),
        "zmq",
        get("zmq", "echo_MBps", "64"),
        1.0,
        False,
        who=TCP,
    )
    best_ipp = max(
        (
            v
            for v in (get(n, "echo_MBps", "64") for n in ("ipyparallel-direct", "ipyparallel-lb"))
            if v is not None
        ),
        default=None,
    )
    check("64 MiB echo", echo, "ipyparallel-direct", best_ipp, 2.0, False)
    check(
        "start-up",
        ours.startup_s,
        "ipyparallel-lb",
        results.get("ipyparallel-lb") and results["ipyparallel-lb"].startup_s,
        0.25,
        True,
    )
    return checks


def data_targets(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets of the data benchmarks (see :mod:`benchmarks.data`)."""
    ours = results.get(OURS, {})
    if "error" in ours or not ours:
        return []
    checks = []

    def check(what: str, mine: float, theirs: float, goal: float, lower: bool) -> None:
        ratio = mine / theirs if theirs else float("inf")
        checks.append(
            {
                "target": f"{what} {'<=' if lower else '>='} {goal:g}",
                "ours": round(mine, 4),
                "peer": round(theirs, 4),
                "ratio": round(ratio, 3),
                "met": ratio <= goal if lower else ratio >= goal,
            }
        )

    for when in ("first", "again"):
        placed = ours[f"broadcast_{when}_s"]
        check(f"broadcast ({when}): ours / one numpy copy", placed, ours["memcpy_s"], 1.5, True)
        check(f"broadcast ({when}): push over sockets / ours", ours["push_s"], placed, 3.0, False)
    check(
        "broadcast: shared memory / array size",
        ours["broadcast_shared_bytes"],
        ours["broadcast_array_bytes"],
        1.0,
        True,
    )
    checks.append(
        {
            "target": "chain: intermediate bytes received by the client == 0",
            "ours": ours["chain_client_bytes"],
            "peer": 0,
            "ratio": 0,
            "met": ours["chain_client_bytes"] == 0,
        }
    )
    for peer in ("dask", "ray"):
        theirs = results.get(peer, {})
        if "chain_s" in theirs:
            check(f"chain: ours / {peer}", ours["chain_s"], theirs["chain_s"], 1.0, True)
    return checks


def table(results: dict[str, Result], settings: Settings) -> str:
    """A Markdown table of every system's numbers."""
    sizes = settings.throughput_sizes
    mibs = settings.echo_sizes_mib
    header = ["system", "start-up s", "latency µs (median / p90 / p99)"]
    header += [f"tasks/s {n:,} submit / map" for n in sizes]
    header += [f"echo {m} MiB MB/s" for m in mibs]
    header += ["worker RSS MB idle / after echo"]
    rows = [header, ["---"] * len(header)]
    for result in results.values():
        if result.error:
            rows.append(
                [result.label, "failed: " + result.error.splitlines()[0]] + [""] * (len(header) - 2)
            )
            continue
        lat = result.latency_us
        row = [
            result.label,
            _fmt(result.startup_s, 2),
            f"{_fmt(lat.get('median'), 0)} / {_fmt(lat.get('p90'), 0)} / {_fmt(lat.get('p99'), 0)}",
        ]
        for n in sizes:
            row.append(
                f"{_fmt(result.throughput.get(f'submit_{n}'), 0)} / "
                f"{_fmt(result.throughput.get(f'map_{n}'), 0)}"
            )
        row += [_fmt(result.echo_MBps.get(str(m)), 0) for m in mibs]
        memory = result.memory_MB
        row.append(
            f"{_fmt(memory.get('worker_idle'), 0)} / {_fmt(memory.get('worker_after_echo'), 0)}"
        )
        rows.append(row)
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def target_lines(checks: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"- [{'x' if c['met'] else ' '}] {c['target']}: {c['ours']:g} vs {c['peer']:g} "
        f"→ ratio {c['ratio']:g}"
        for c in checks
    )


def write_json(
    path: Path,
    results: dict[str, Result],
    settings: Settings,
    checks: list[dict[str, Any]],
    data_results: dict[str, dict[str, Any]] | None = None,
) -> None:
    data = {
        "machine": machine(),
        "settings": dataclasses.asdict(settings),
        "results": {name: dataclasses.asdict(r) for name, r in results.items()},
        "data": data_results or {},
        "targets": checks,
    }
    path.write_text(json.dumps(data, indent=2) + "\n")


def plot(path: Path, results: dict[str, Result]) -> None:
    """Bar charts of latency (median) and 2,000-task throughput per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in results.values() if not r.error]
    labels = [r.label for r in measured]
    colors = ["tab:orange" if r.system == OURS else "tab:blue" for r in measured]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    left.barh(labels, [r.latency_us.get("median", 0) for r in measured], color=colors)
    left.set_xscale("log")
    left.set_xlabel("no-op round trip, median µs (log scale, lower is better)")
    left.invert_yaxis()
    right.barh(labels, [r.throughput.get("submit_2000", 0) for r in measured], color=colors)
    right.set_xscale("log")
    right.set_xlabel("2,000 no-op submits, tasks/s (log scale, higher is better)")
    right.invert_yaxis()
    right.set_yticklabels([])
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"
