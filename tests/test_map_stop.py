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
    import time

    class Bar:
        # stands in for tqdm's bar (tqdm.std's outside a kernel): what map's bar counted
        def __init__(self, **options):
            self.n = 0
        def update(self, n):
            self.n += n
        def close(self):
            print("bar", self.n, flush=True)

    import tqdm.std
    tqdm.std.tqdm = Bar

    from parallel_kernel import Pool

    with Pool(2) as pool:
        pool.submit(time.sleep, 0).result()
        done = 0
        try:
            # chunks of 4 items: the first takes 0.4 s, every other one 40 s
            for _ in pool.map(time.sleep, [0.1] * 4 + [10] * 26, progress=True):
                done += 1
                if done == 4:
                    print("iterating", flush=True)
        except KeyboardInterrupt:
            print("KeyboardInterrupt", done, flush=True)
    print("exited", flush=True)
    """
)


def test_ctrl_c_during_map_cancels_the_queue_and_interrupts_what_runs(tmp_path) -> None:
    script = tmp_path / "ctrl_c_map.py"
    script.write_text(SCRIPT)
    process = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline().strip() == "iterating"
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        # the bar closes as the KeyboardInterrupt leaves map, then the script's handler
        # prints, then the pool shuts down (waiting for what still runs) and it exits
        out, err = process.communicate(timeout=TIMEOUT)
        waited = time.monotonic() - sent
    finally:
        process.kill()
    assert out.splitlines() == ["bar 4", "KeyboardInterrupt 4", "exited"], err
    # the 40 s chunks running on the engines were interrupted, not waited for
    assert waited < 10, waited
    assert process.returncode == 0, err
