"""``Pool.connect``: bare file names, stale files, its timeout; and ``kernel install``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import KERNEL_ARGS, TIMEOUT, cli
from jupyter_client import KernelManager

from parallel_kernel import EngineTimeout, Pool


@pytest.fixture
def runtime_dir(tmp_path, monkeypatch) -> Path:
    """A Jupyter runtime directory of the test's own (the kernels started here use it too)."""
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    return runtime


@pytest.fixture
def live(runtime_dir):
    manager = KernelManager(
        kernel_name="parallel", connection_file=str(runtime_dir / "kernel-live.json")
    )
    manager.start_kernel(extra_arguments=KERNEL_ARGS)
    try:
        yield manager
    finally:
        manager.shutdown_kernel(now=True)


@pytest.fixture
def dead(runtime_dir) -> Path:
    """The connection file of a kernel that was killed: it names ports nobody serves."""
    manager = KernelManager(
        kernel_name="parallel", connection_file=str(runtime_dir / "kernel-gone.json")
    )
    manager.start_kernel(extra_arguments=KERNEL_ARGS)
    info = Path(manager.connection_file).read_text()
    manager.shutdown_kernel(now=True)
    stale = runtime_dir / "kernel-dead.json"
    stale.write_text(info)
    return stale


def test_a_bare_name_is_found_in_the_runtime_directory(live, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # not where the file is
    with Pool.connect(["kernel-live.json"]) as pool:
        assert pool.engines[0].connection_file == live.connection_file
        assert pool.submit(lambda: 6 * 7).result(TIMEOUT) == 42


def test_a_bare_name_that_is_nowhere_says_where_it_was_looked_for(runtime_dir) -> None:
    with pytest.raises(FileNotFoundError, match=r"kernel-none\.json.*runtime directory"):
        Pool.connect(["kernel-none.json"])


def test_a_stale_file_is_named_and_fails_the_connect(dead, live) -> None:
    with pytest.raises(EngineTimeout) as caught:
        Pool.connect([dead, live.connection_file], timeout=2)
    message = str(caught.value)
    assert str(dead) in message
    assert "does not answer" in message
    assert "kernelspec" not in message
    assert "start" not in message
    assert caught.value.engine_ids == [0]
    assert live.is_alive()


def test_unreachable_kernels_can_be_left_out(dead, live) -> None:
    with Pool.connect([dead, live.connection_file], timeout=2, on_unreachable="skip") as pool:
        assert [(e.id, e.state) for e in pool.engines] == [(0, "stopped"), (1, "idle")]
        assert pool.broadcast(os.getpid) == [live.provisioner.pid]
        assert pool.submit(lambda: "served").result(TIMEOUT) == "served"
    assert live.is_alive()


def test_skip_still_fails_when_no_kernel_answers(dead) -> None:
    with pytest.raises(EngineTimeout, match=r"kernel-dead\.json"):
        Pool.connect([dead], timeout=1, on_unreachable="skip")


def test_bad_connect_options_are_refused(live) -> None:
    with pytest.raises(ValueError, match="on_unreachable must be 'raise' or 'skip'"):
        Pool.connect([live.connection_file], on_unreachable="ignore")
    with pytest.raises(ValueError, match="timeout must be positive"):
        Pool.connect([live.connection_file], timeout=0)


def test_kernel_install_installs_our_kernelspec(tmp_path) -> None:
    result = cli("kernel", "install", "--prefix", str(tmp_path))
    assert result.returncode == 0, result.stderr
    spec_dir = tmp_path / "share" / "jupyter" / "kernels" / "parallel"
    assert f"Installed kernelspec parallel in {spec_dir}" in result.stdout
    spec = json.loads((spec_dir / "kernel.json").read_text())
    assert spec["argv"][-4:] == ["-m", "parallel_kernel", "-f", "{connection_file}"]
    assert not (tmp_path / "share" / "jupyter" / "kernels" / "python3").exists()
