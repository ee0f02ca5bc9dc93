"""The benchmark command runs end to end and writes what docs/performance.md describes.

Only the systems needing no extra install run here (the pool, ProcessPoolExecutor,
the raw ZMQ floor); the numbers themselves are never asserted. The latency
ladder and a short soak run too; the soak's verdict (nothing lost, no hung
wait) is asserted, since that is correctness, not speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_module(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -m <args>`` from the repository root, output captured."""
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def run_for_json(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    """Run a benchmark module that must succeed and write ``--json``; return it and the JSON."""
    out = tmp_path / "out.json"
    run = run_module(*args, "--json", str(out), timeout=280)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run, json.loads(out.read_text())


@pytest.mark.timeout(300)
def test_quick_run_writes_every_measurement(tmp_path: Path) -> None:
    run, data = run_for_json(
        tmp_path, "benchmarks", "--quick", "parallel_kernel", "processpool", "zmq-ipc"
    )
    assert "| parallel_kernel Pool |" in run.stdout
    ours = data["results"]["parallel_kernel"]
    assert ours["error"] is None
    assert set(ours["latency_us"]) == {"median", "p90", "p99"}
    assert set(ours["throughput"]) == {"submit_2000", "map_2000"}
    assert ours["echo_MBps"]["64"] > 0
    assert ours["startup_s"] > 0
    assert "client_growth_after_20000_tasks" in ours["memory_MB"]
    targets = {t["target"] for t in data["targets"]}
    assert "latency median: ours / processpool <= 2" in targets
    assert "64 MiB echo: ours / zmq-ipc >= 2" in targets
    assert "broadcast (first): ours / one numpy copy <= 1.5" in targets
    assert "broadcast (again): push over sockets / ours >= 3" in targets
    assert "chain: intermediate bytes received by the client == 0" in targets
    measured = data["data"]["parallel_kernel"]
    assert measured["chain_client_bytes"] == 0
    assert measured["broadcast_shared_bytes"] == measured["broadcast_array_bytes"]
    assert "| parallel_kernel | " in run.stdout  # the data benchmarks' table
    assert data["machine"]["cpus"] >= 1


def test_an_unknown_system_is_refused() -> None:
    run = run_module("benchmarks", "nosuchsystem", timeout=60)
    assert run.returncode == 2
    assert "invalid choice: 'nosuchsystem'" in run.stderr


@pytest.mark.timeout(200)
def test_the_latency_ladder_prints_every_step() -> None:
    run = run_module("benchmarks.ladder", "--rounds", "100", timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [line for line in run.stdout.splitlines() if line.startswith("| ") and "µs" not in line]
    assert [row.split(" | ")[0] for row in rows] == [
        "| ProcessPoolExecutor(1)",
        "| zmq echo (ipc), calling thread",
        "| zmq echo + client loop thread",
        "| + signed Jupyter messages both ways",
        "| ... packed in one frame",
        "| + pickled call on the server",
        "| parallel_kernel Pool(1)",
    ]
    assert all(float(row.split(" | ")[1].replace(",", "")) > 0 for row in rows)


@pytest.mark.timeout(300)
def test_a_short_soak_loses_nothing(tmp_path: Path) -> None:
    run, report = run_for_json(
        tmp_path, "benchmarks.soak", "--minutes", "0.25", "--small", "10000", "--kill-every", "5"
    )
    assert report["lost"] == 0
    assert report["hung_waits"] == 0
    assert report["engine_kills"] >= 2
    assert report["small_tasks"] >= 10_000
    assert report["completed"] >= 10_000
    assert report["expected_errors"]["ValueError raised by the task"] > 0
    assert "| **lost** | **0** |" in run.stdout
