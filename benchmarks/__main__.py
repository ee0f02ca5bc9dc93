"""Run the benchmark suite: ``python -m benchmarks [--quick] [--workers N] [systems ...]``.

Every system runs the same measurements in this one process tree, one system
at a time, each from a fresh child process; the table, the targets (ratios
against the peers of the same run), a JSON file and a plot come out at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import cloudpickle

from . import data, report, workloads
from .suite import Result, Settings, measure
from .systems import SYSTEMS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "systems",
        nargs="*",
        choices=[[], *SYSTEMS, *data.SYSTEMS],
        help=f"systems to run (default: all of {', '.join(SYSTEMS)}; the data benchmarks "
        f"run for {', '.join(data.SYSTEMS)})",
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds; under two minutes")
    parser.add_argument("--workers", type=int, default=2, help="workers per system (default 2)")
    parser.add_argument(
        "--json", type=Path, default=Path("benchmark-results.json"), help="JSON output file"
    )
    parser.add_argument("--plot", type=Path, help="also draw latency and throughput into this PNG")
    parser.add_argument(
        "--no-data",
        action="store_true",
        help="skip the data benchmarks (broadcast, chain: see benchmarks/data.py)",
    )
    parser.add_argument("--one", metavar="FILE", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data-one", metavar="FILE", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    settings = Settings.quick_settings(args.workers) if args.quick else Settings(args.workers)
    cloudpickle.register_pickle_by_value(workloads)
    if args.data_one is not None:
        [name] = args.systems
        cloudpickle.register_pickle_by_value(data)
        args.data_one.write_text(json.dumps(data.measure(name, args.quick)))
        return 0
    if args.one is not None:
        [name] = args.systems
        args.one.write_text(json.dumps(dataclasses.asdict(_measure(name, settings, args.workers))))
        return 0

    results: dict[str, Result] = {}
    started = time.perf_counter()
    for name in [n for n in args.systems or list(SYSTEMS) if n in SYSTEMS]:
        print(f"… {SYSTEMS[name].label}", file=sys.stderr, flush=True)
        results[name] = _in_child(name, args)

    data_results: dict[str, dict] = {}
    if not args.no_data:
        for name in data.SYSTEMS:
            if not args.systems or name in args.systems:
                print(f"… data: {name}", file=sys.stderr, flush=True)
                data_results[name] = _data_in_child(name, args)

    checks = report.targets(results) + report.data_targets(data_results)
    print(report.table(results, settings))
    if data_results:
        print("\n" + data.table(data_results, args.quick))
    ours = results.get(report.OURS)
    if ours is not None and ours.memory_MB:
        print("\nparallel_kernel memory (MB):", ours.memory_MB)
    if checks:
        print("\nTargets:\n" + report.target_lines(checks))
    report.write_json(args.json, results, settings, checks, data_results)
    if args.plot:
        report.plot(args.plot, results)
    print(f"\n{time.perf_counter() - started:.0f} s; results in {args.json}", file=sys.stderr)
    return 1 if any(r.error for r in results.values()) else 0


def _measure(name: str, settings: Settings, workers: int) -> Result:
    system = SYSTEMS[name](workers)
    try:
        return measure(system, settings, client_memory=name == report.OURS)
    except Exception as exc:
        traceback.print_exc()
        return Result(name, system.label, error=f"{type(exc).__name__}: {exc}")


def _in_child(name: str, args: argparse.Namespace) -> Result:
    """Measure one system in a process of its own.

    Each system then starts from the same clean client process: measured in
    one process one after the other, a system's latency depended on which
    systems ran before it (by a factor of three for the zmq floor).
    """
    with tempfile.TemporaryDirectory(prefix="benchmarks-") as directory:
        out = Path(directory) / "result.json"
        command = [sys.executable, "-m", "benchmarks", name, "--one", str(out)]
        command += ["--workers", str(args.workers)] + (["--quick"] if args.quick else [])
        env = {**os.environ, **SYSTEMS[name].environment}
        child = subprocess.run(command, check=False, env=env)
        if not out.exists():
            return Result(name, SYSTEMS[name].label, error=f"exited with {child.returncode}")
        return Result(**json.loads(out.read_text()))


def _data_in_child(name: str, args: argparse.Namespace) -> dict:
    """The data benchmarks of one system, in a process of its own (see :mod:`.data`)."""
    with tempfile.TemporaryDirectory(prefix="benchmarks-") as directory:
        out = Path(directory) / "data.json"
        command = [sys.executable, "-m", "benchmarks", name, "--data-one", str(out)]
        command += ["--quick"] if args.quick else []
        child = subprocess.run(command, check=False)
        if not out.exists():
            return {"error": f"exited with {child.returncode} (is {name} installed?)"}
        return json.loads(out.read_text())


if __name__ == "__main__":
    sys.exit(main())
