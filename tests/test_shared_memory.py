"""Large buffers between the client and engines of one host go through shared memory."""

from __future__ import annotations

import gc
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import wait_until

from parallel_kernel import EngineDied, Pool, shared_memory
from parallel_kernel.shared_memory import SharedMemoryError

pytestmark = pytest.mark.timeout(180)

WAIT = 60
MiB = 1 << 20


@pytest.fixture(scope="module")
def segments(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private directory of segments for this module's pools (and their engines)."""
    path = tmp_path_factory.mktemp("segments")
    path.chmod(0o700)
    before = os.environ.get(shared_memory.DIRECTORY_ENV)
    os.environ[shared_memory.DIRECTORY_ENV] = str(path)
    yield path
    if before is None:
        del os.environ[shared_memory.DIRECTORY_ENV]
    else:
        os.environ[shared_memory.DIRECTORY_ENV] = before


@pytest.fixture
def own_segments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory of segments of one test's own (no other pool's spares in it)."""
    path = tmp_path / "segments"
    path.mkdir(mode=0o700)
    monkeypatch.setenv(shared_memory.DIRECTORY_ENV, str(path))
    return path


@pytest.fixture(scope="module")
def pool(segments: Path) -> Iterator[Pool]:
    with Pool(2) as pool:
        yield pool


def mapped_segments(buffer: object = None) -> dict[str, int]:
    """Runs anywhere: the segment files this process maps (name -> inode), or only the
    one that holds ``buffer``'s memory."""
    import os
    import re

    address = None if buffer is None else memoryview_address(buffer)
    found = {}
    directory = os.environ["PARALLEL_KERNEL_SHARED_DIR"]
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].startswith(directory + "/"):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                if address is None or start <= address < end:
                    name = re.sub(r" \(deleted\)$", "", fields[5].strip()).rsplit("/", 1)[1]
                    found[name] = int(fields[4])
    return found


def memoryview_address(buffer: object) -> int:
    import numpy as np

    return np.frombuffer(buffer, dtype=np.uint8).__array_interface__["data"][0]


def where_is(x: np.ndarray) -> tuple[bool, dict[str, int]]:
    """Runs on an engine: whether ``x`` is writable, and the segment its memory is in."""
    return x.flags.writeable, mapped_segments(x)


def files(path: Path) -> list[str]:
    return sorted(os.listdir(path))


def settled_empty(path: Path) -> None:
    gc.collect()
    wait_until(lambda: files(path) == [], timeout=30)


def test_a_large_argument_is_mapped_read_only_by_the_engine(pool: Pool, segments: Path) -> None:
    a = np.arange(4 * MiB, dtype=np.uint8)
    writable, where = pool.submit(where_is, a).result(WAIT)
    assert writable is False
    assert len(where) == 1, where  # the argument's memory is a segment of the directory
    _small_writable, small_where = pool.submit(where_is, np.arange(1000)).result(WAIT)
    assert small_where == {}  # small buffers stay in the message


def test_a_large_result_is_read_where_the_engine_wrote_it(pool: Pool, segments: Path) -> None:
    future = pool.submit(np.arange, 2 * MiB, dtype=np.float64)
    result = future.result(WAIT)
    assert result[-1] == 2 * MiB - 1
    assert result.flags.writeable is False
    assert len(mapped_segments(result)) == 1
    del result, future
    settled_empty_of_results(segments)


def settled_empty_of_results(segments: Path) -> None:
    """Wait until only spare segments (written here or by an engine, held by no one
    else) are left."""
    gc.collect()

    def only_spares() -> bool:
        inodes: dict[int, int] = {}
        for name in files(segments):
            with open(segments / name, "rb") as f:
                info = os.fstat(f.fileno())
            inodes[info.st_ino] = info.st_nlink
        return all(links == 1 for links in inodes.values())

    wait_until(only_spares, timeout=30)


def test_an_echo_sends_back_the_same_memory_without_a_copy(pool: Pool, segments: Path) -> None:
    a = np.ones(8 * MiB, dtype=np.uint8)
    echoed = pool.submit(lambda x: x, a).result(WAIT)
    assert np.array_equal(echoed, a)
    sent_and_back = mapped_segments(echoed)
    assert len(sent_and_back) == 1
    [(_name, inode)] = sent_and_back.items()
    # the result is a name of the segment the argument was written into
    linked = [n for n in files(segments) if os.stat(segments / n).st_ino == inode]
    assert len(linked) >= 2, linked


def test_segments_are_private_to_the_user(pool: Pool, segments: Path) -> None:
    future = pool.submit(np.ones, 4 * MiB, dtype=np.uint8)
    value = future.result(WAIT)
    assert mapped_segments(value)
    assert stat.S_IMODE(segments.stat().st_mode) == 0o700
    for name in files(segments):
        assert stat.S_IMODE((segments / name).stat().st_mode) == 0o600


def test_a_broadcast_value_is_stored_once_for_every_engine(pool: Pool, segments: Path) -> None:
    a = np.arange(32 * MiB, dtype=np.uint8)
    shared = pool.scatter(a, broadcast=True)
    seen = pool.broadcast(lambda: None)  # every engine serves
    assert len(seen) == 2
    placed = [shared, *shared._replicas]
    assert [f.exception(WAIT) for f in placed] == [None, None]
    assert sorted(f.engine_id for f in placed) == [0, 1]
    futures = [pool.submit(where_is, shared, engine=e) for e in (0, 1)]
    results = [f.result(WAIT) for f in futures]
    assert [writable for writable, _ in results] == [False, False]
    inodes = {inode for _, where in results for inode in where.values()}
    assert len(inodes) == 1, results  # both engines map the same memory
    assert all(f.kept is None for f in futures)  # small results, nothing fetched back
    total = sum(
        os.stat(segments / n).st_size
        for n in {os.stat(segments / n).st_ino: n for n in files(segments)}.values()
    )
    assert total < 3 * a.nbytes  # one copy of the value (and spares), not one per engine
    assert pool.gather(shared)[-1] == a[-1]


def test_a_value_kept_on_one_engine_reaches_another_through_shared_memory(
    pool: Pool, segments: Path
) -> None:
    kept = pool.submit(np.ones, 8 * MiB, dtype=np.uint8, engine=0)
    kept.exception(WAIT)
    assert kept.kept is not None
    assert kept.kept.engine_id == 0
    writable, where = pool.submit(where_is, kept, engine=1).result(WAIT)
    assert writable is False
    assert len(where) == 1


def test_nothing_is_left_when_the_pool_stops(own_segments: Path) -> None:
    with Pool(1) as pool:
        results = [pool.submit(np.ones, 2 * MiB + i).result(WAIT) for i in range(3)]
        assert all(mapped_segments(r) for r in results)
    del results
    gc.collect()
    shared_memory.sweep(ending=True)  # what this process's exit does
    assert files(own_segments) == []


def test_shared_memory_can_be_turned_off(segments: Path) -> None:
    with Pool(1, shared_memory=False, keep_over=None) as pool:
        _writable, where = pool.submit(where_is, np.ones(4 * MiB, dtype=np.uint8)).result(WAIT)
        result = pool.submit(np.ones, 4 * MiB, dtype=np.uint8).result(WAIT)
    assert where == {}
    assert mapped_segments(result) == {}


def test_bad_shared_memory_settings_are_refused(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(ValueError, match="shared_memory must be True, False or 'auto'"):
        Pool(1, shared_memory="yes")
    open_to_all = tmp_path / "open"
    open_to_all.mkdir(mode=0o777)
    open_to_all.chmod(0o777)
    monkeypatch.setenv(shared_memory.DIRECTORY_ENV, str(open_to_all))
    with pytest.raises(ValueError, match="no shared memory"):
        Pool(1, shared_memory=True)


def test_a_reference_to_a_missing_or_foreign_segment_is_a_clear_error(segments: Path) -> None:
    frames = [b"x", b""]
    with pytest.raises(SharedMemoryError, match="not a shared memory segment of this process"):
        shared_memory.attach({"shared": [[1, "1.2-" + "0" * 32, 0, 10]]}, frames)
    mine = shared_memory.this_holder() + "-" + "a" * 32
    with pytest.raises(SharedMemoryError, match=r"cannot be opened .*sender may have died"):
        shared_memory.attach({"shared": [[1, mine, 0, 10]]}, frames)
    with pytest.raises(SharedMemoryError, match=r"\[frame index, segment, offset, size\]"):
        shared_memory.attach({"shared": [[5, mine, 0, 10]]}, frames)


def test_a_sweep_removes_the_segments_of_dead_holders_only(segments: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(dead.stdout)
    orphan = segments / f"{pid}.1-{'b' * 32}"
    orphan.write_bytes(b"left by a process that was killed")
    alive = segments / f"{shared_memory.this_holder()}-{'c' * 32}"
    alive.write_bytes(b"held by this process")
    assert shared_memory.sweep() >= 1
    assert not orphan.exists()
    assert alive.exists()
    alive.unlink()


def test_no_segment_is_left_after_an_engine_is_killed(own_segments: Path) -> None:
    def hold(x: np.ndarray) -> int:
        time.sleep(60)
        return len(x)

    with Pool(1, restart=False) as pool:
        pid = pool.broadcast(os.getpid)[0]
        future = pool.submit(hold, np.ones(16 * MiB, dtype=np.uint8))
        wait_until(future.running)
        assert files(own_segments)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(EngineDied):
            future.result(WAIT)
    del future
    settled_empty_of_results(own_segments)
    shared_memory.sweep(ending=True)
    assert files(own_segments) == []


CLIENT = """
import os, sys, time
import numpy as np
from parallel_kernel import Pool

pool = Pool(2)
pids = pool.broadcast(os.getpid)
print(" ".join(map(str, pids)), flush=True)
a = np.ones(16 << 20, dtype=np.uint8)
kept = [pool.submit(np.ones, (8 << 20) + i, dtype=np.uint8) for i in range(4)]
while True:
    pool.submit(lambda x: x, a).result()
    print("round", flush=True)
"""


def test_no_segment_is_left_after_the_client_is_killed(own_segments: Path, tmp_path: Path) -> None:
    script = tmp_path / "client.py"
    script.write_text(textwrap.dedent(CLIENT))
    client = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.getcwd(),
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        pids = [int(p) for p in client.stdout.readline().split()]
        assert len(pids) == 2
        for _ in range(3):
            assert client.stdout.readline().strip() == "round"
        assert files(own_segments)
        client.kill()
        client.wait(WAIT)
    finally:
        if client.poll() is None:
            client.kill()
        client.stdout.close()

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_until(lambda: all(gone(pid) for pid in pids), timeout=30)
    assert files(own_segments) == []


def test_a_forked_child_leaves_its_parents_segments_alone(segments: Path) -> None:
    content, frames = shared_memory.offload({}, [bytes(2 * MiB)], shared_memory.this_holder())
    views = shared_memory.attach(content, frames)
    name = content["shared"][0][1]
    child = os.fork()
    if child == 0:  # the child drops its copy of the views, as a task's subprocess would
        del views
        gc.collect()
        os._exit(0)
    os.waitpid(child, 0)
    assert (segments / name).exists()
    assert bytes(views[0][:3]) == b"\0\0\0"
    del views
    gc.collect()
    assert not (segments / name).exists()
