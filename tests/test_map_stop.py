"""``map``: each result let go once yielded, and Ctrl-C while iterating."""

from __future__ import annotations

import array
import gc
import signal
import subprocess
import sys
import textwrap
import time
import weakref

import pytest
from conftest import TIMEOUT

from parallel_kernel import Pool


def make(i: int) -> array.array:
    return array.array("d", [float(i)] * 1000)


@pytest.fixture(scope="module")
def pool():
    with Pool(2) as pool:
        yield pool


@pytest.mark.parametrize("chunksize", [1, 4])
def test_a_yielded_result_is_let_go_while_the_map_goes_on(pool: Pool, chunksize: int) -> None:
    results = pool.map(make, range(8), chunksize=chunksize)
    first = next(results)
    assert first[0] == 0.0
    ref = weakref.ref(first)
    del first
    gc.collect()
    assert ref() is None  # the iterator, still alive, no longer holds it
    assert [r[0] for r in results] == [float(i) for i in range(1, 8)]


SCRIPT = textwrap.dedent(
    """
    import sys, time

    class Bar:
        # what tqdm.auto.tqdm is given to count, printed at the end
        def __init__(self, **options):
            self.n = 0
        def update(self, n):
            self.n += n
        def close(self):
            print("bar", self.n, flush=True)

    import tqdm.auto
    tqdm.auto.tqdm = Bar

    from parallel_kernel import Pool

    with Pool(2) as pool:
        pool.submit(time.sleep, 0).result()
        done = 0
        try:
            print("ready", flush=True)
            # chunks of 4 items: each task takes 4 s
            for _ in pool.map(time.sleep, [1] * 30, progress=True):
                done += 1
                if done == 1:
                    print("iterating", flush=True)
        except KeyboardInterrupt:
            print("KeyboardInterrupt", done, flush=True)
            futures = pool.futures()
            # nothing queued is left to run: the rest is cancelled or interrupted
            for f in futures:
                try:
                    f.result(10)
                except BaseException as exc:
                    pass
            print("unfinished", len([f for f in futures if not f.done()]), flush=True)
    """
)


def test_ctrl_c_during_map_cancels_the_queue_and_interrupts_what_runs(tmp_path) -> None:
    script = tmp_path / "ctrl_c_map.py"
    script.write_text(SCRIPT)
    process = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline().strip() == "ready"
        assert process.stdout.readline().strip() == "iterating"
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        seen = [process.stdout.readline()]  # the bar closes first, then the except clause
        if seen[0].startswith("bar"):
            seen.append(process.stdout.readline())
        waited = time.monotonic() - sent
        line = seen[-1].split()
        out, err = process.communicate(timeout=TIMEOUT)
    finally:
        process.kill()
    assert line[0] == "KeyboardInterrupt", err
    # the chunks running on the two engines (4 s each) were interrupted, not waited for
    assert waited < 3.5, waited
    finished = int(line[1])
    lines = [x.strip() for x in seen] + out.splitlines()
    assert "unfinished 0" in lines
    bar = [int(x.split()[1]) for x in lines if x.startswith("bar")]
    # the bar counted the items that finished (whole chunks), not the cancelled ones
    assert len(bar) == 1, lines
    assert finished <= bar[0] <= 16, (bar, finished)
    assert bar[0] % 4 == 0, bar
    assert process.returncode == 0, err
