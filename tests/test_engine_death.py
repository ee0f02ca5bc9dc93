"""Why an engine died: its stderr, every thread's Python stack at a fault, the OOM killer."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path

import pytest
from conftest import wait_until

from parallel_kernel import EngineDied, Pool
from parallel_kernel.pool import death

pytestmark = pytest.mark.timeout(180)

WAIT = 60


def segfault() -> None:
    import ctypes

    ctypes.string_at(0)  # reads address 0: SIGSEGV


def abort_after_a_word() -> None:
    import os

    os.write(2, b"the C library says: cannot go on\n")  # straight to the process's fd 2
    os.abort()


def eat_memory() -> None:
    hog = [b"x" * (64 << 20) for _ in range(64)]  # 4 GiB, every page written
    print(len(hog))


def test_a_segfault_reports_every_threads_python_stack(caplog) -> None:
    with Pool(1) as pool, caplog.at_level(logging.WARNING, logger="parallel_kernel"):
        with pytest.raises(EngineDied) as died:
            pool.submit(segfault).result(WAIT)
        error = died.value
        assert error.engine_id == 0
        assert error.reason == "its process was killed by SIGSEGV"
        assert error.fault.startswith("Fatal Python error: Segmentation fault")
        assert "in segfault" in error.fault  # the task's frame, in the thread that crashed
        assert "Current thread" in error.fault
        assert "--- its Python stacks at the fault ---" in str(error)
        assert not error.oom
        assert "in segfault" in caplog.text  # the pool's log says it too
        assert pool.submit(abs, -2).result(WAIT) == 2  # restarted, serving


def test_an_abort_shows_what_the_engine_wrote_to_stderr_before_it() -> None:
    with Pool(1) as pool:
        with pytest.raises(EngineDied) as died:
            pool.submit(abort_after_a_word).result(WAIT)
        error = died.value
        assert error.reason == "its process was killed by SIGABRT"
        assert "the C library says: cannot go on" in error.stderr
        assert error.fault.startswith("Fatal Python error: Aborted")
        message = str(error)
        assert message.index("cannot go on") < message.index("Fatal Python error")


def test_a_restarted_engines_death_shows_only_its_own_stderr() -> None:
    with Pool(1) as pool:
        with pytest.raises(EngineDied):
            pool.submit(abort_after_a_word).result(WAIT)
        with pytest.raises(EngineDied) as died:
            pool.submit(segfault).result(WAIT)
        assert "cannot go on" not in str(died.value)


def memory_cgroup(name: str) -> Path | None:
    """A fresh memory cgroup (v2, else v1) limited to 256 MiB, or ``None`` if none can be made."""
    if os.geteuid() != 0:
        return None
    v2 = Path("/sys/fs/cgroup")
    candidates = []
    if "memory" in _read(v2 / "cgroup.subtree_control").split():
        candidates.append((v2 / name, "memory.max", "memory.swap.max"))
    if (Path("/sys/fs/cgroup/memory") / "memory.limit_in_bytes").is_file():
        candidates.append((Path("/sys/fs/cgroup/memory") / name, "memory.limit_in_bytes", None))
    for path, limit, swap in candidates:
        try:
            path.mkdir()
            (path / limit).write_text(str(256 << 20))
            if swap is not None and (path / swap).exists():
                (path / swap).write_text("0")
        except OSError:
            shutil.rmtree(path, ignore_errors=True)
            continue
        return path
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


@pytest.fixture
def limited_kernelspec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A kernelspec whose engines run in a memory cgroup of 256 MiB."""
    cgroup = memory_cgroup(f"parallel-kernel-test-{os.getpid()}")
    if cgroup is None:
        pytest.skip("needs root and a memory cgroup (v1 or v2) to limit an engine's memory")
    spec = tmp_path / "kernels" / "parallel-256m"
    spec.mkdir(parents=True)
    enter = f'echo $$ > {cgroup / "cgroup.procs"} && exec "$0" "$@"'
    argv = ["sh", "-c", enter, sys.executable, "-m", "parallel_kernel", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "256 MiB", "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    yield "parallel-256m"
    for process in _read(cgroup / "cgroup.procs").split():
        os.kill(int(process), 9)
    cgroup.rmdir()


@pytest.mark.parametrize("kernel_log", ["readable", "unreadable"])
def test_an_engine_the_oom_killer_killed_says_so(
    limited_kernelspec: str, kernel_log: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Told by the kernel log (root can read it), or else by its memory cgroup's OOM count."""
    if kernel_log == "unreadable":
        monkeypatch.setattr(death, "_kernel_log_says_oom", lambda pid: False)
    with Pool(1, kernel_name=limited_kernelspec) as pool:
        with pytest.raises(EngineDied) as died:
            pool.submit(eat_memory).result(WAIT)
        error = died.value
        assert error.reason == "its process was killed by SIGKILL"
        assert error.oom.startswith("killed by the kernel's OOM killer")
        assert ("kernel log" in error.oom) == (kernel_log == "readable")
        assert "OOM killer" in str(error)
        assert pool.submit(abs, -3).result(WAIT) == 3


def test_a_plain_sigkill_is_not_called_an_oom_kill() -> None:
    with Pool(1) as pool:
        [pid] = pool.broadcast(os.getpid)
        future = pool.submit(__import__("time").sleep, 30)
        wait_until(future.running)
        os.kill(pid, 9)
        with pytest.raises(EngineDied) as died:
            future.result(WAIT)
        assert died.value.reason == "its process was killed by SIGKILL"
        assert died.value.oom == ""
