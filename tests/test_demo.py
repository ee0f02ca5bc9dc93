"""``parallel-kernel demo``, the README's first command, does what it says."""

from __future__ import annotations

import re
import shutil
import subprocess
import sysconfig


def test_demo_runs_a_parallel_job_on_two_engines() -> None:
    executable = shutil.which("parallel-kernel", path=sysconfig.get_path("scripts"))
    assert executable, "the console script is installed with the package"
    result = subprocess.run(
        [executable, "demo"], capture_output=True, text=True, timeout=300, check=True
    )
    out = result.stdout
    assert "Starting 2 engines from kernelspec 'parallel'" in out
    rows = re.findall(r"^  engine (\d) .* primes in \[([\d,]+), ([\d,]+)\): ([\d,]+)$", out, re.M)
    assert len(rows) == 16
    assert {engine for engine, *_ in rows} == {"0", "1"}
    counted = sum(int(n.replace(",", "")) for *_, n in rows)
    assert f"total: {counted:,} primes" in out
    assert counted == 33_860  # primes below 400,000
    assert "tasks: 100%" in out
    assert out.count("total: 33,860 primes") == 2
    # the load balancer splits the 32 tasks by which engine is free first
    ran = dict(re.findall(r"engine (\d) ran (\d+) tasks", out))
    assert set(ran) == {"0", "1"}
    assert sum(int(n) for n in ran.values()) == 32
    assert re.search(r"ValueError: this task fails on purpose \(raised on engine \d\)", out)
    assert "next task: 25 primes" in out
