"""Run the benchmark suite: ``python -m benchmarks [--quick] [--workers N] [systems ...]``.

Every system runs the same measurements in this one process tree, one system
at a time; the table, the targets (ratios against the peers of the same run),
a JSON file and a plot come out at the end.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import traceback
from pathlib import Path

import cloudpickle

from . import report, workloads
from .suite import Result, Settings, measure
from .systems import SYSTEMS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "systems",
        nargs="*",
        choices=[[], *SYSTEMS],
        help=f"systems to run (default: all of {', '.join(SYSTEMS)})",
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds; under two minutes")
    parser.add_argument("--workers", type=int, default=2, help="workers per system (default 2)")
    parser.add_argument(
        "--json", type=Path, default=Path("benchmark-results.json"), help="JSON output file"
    )
    parser.add_argument("--plot", type=Path, help="also draw latency and throughput into this PNG")
    args = parser.parse_args(argv)
    settings = Settings.quick_settings(args.workers) if args.quick else Settings(args.workers)
    cloudpickle.register_pickle_by_value(workloads)

    results: dict[str, Result] = {}
    started = time.perf_counter()
    for name in args.systems or list(SYSTEMS):
        system = SYSTEMS[name](args.workers)
        print(f"… {system.label}", file=sys.stderr, flush=True)
        try:
            results[name] = measure(system, settings, client_memory=name == report.OURS)
        except Exception as exc:
            traceback.print_exc()
            results[name] = Result(name, system.label, error=f"{type(exc).__name__}: {exc}")
        gc.collect()

    checks = report.targets(results)
    print(report.table(results, settings))
    ours = results.get(report.OURS)
    if ours is not None and ours.memory_MB:
        print("\nparallel_kernel memory (MB):", ours.memory_MB)
    if checks:
        print("\nTargets:\n" + report.target_lines(checks))
    report.write_json(args.json, results, settings, checks)
    if args.plot:
        report.plot(args.plot, results)
    print(f"\n{time.perf_counter() - started:.0f} s; results in {args.json}", file=sys.stderr)
    return 1 if any(r.error for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
