"""How the pool reaches the engines it starts: ipc sockets by default, tcp when asked or needed."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
from jupyter_core.paths import jupyter_runtime_dir

from parallel_kernel import Pool
from parallel_kernel.pool.launch import launch_transport


def _socket_files(connection: dict) -> list[Path]:
    prefix = Path(connection["ip"])
    return sorted(prefix.parent.glob(prefix.name + "-*"))


def test_local_engines_use_private_ipc_sockets() -> None:
    with Pool(1) as pool:
        connection_file = Path(pool.engines[0].connection_file)
        connection = json.loads(connection_file.read_text())
        assert connection["transport"] == "ipc"
        assert "curve_publickey" not in connection  # a private socket needs no encryption
        assert connection_file.parent == Path(jupyter_runtime_dir())
        assert stat.S_IMODE(connection_file.parent.stat().st_mode) & 0o077 == 0
        sockets = _socket_files(connection)
        # the five Jupyter channels and the task channel
        assert len(sockets) == 6
        assert all(stat.S_ISSOCK(p.stat().st_mode) for p in sockets)
        assert pool.submit(sum, [1, 2]).result(30) == 3
        assert list(pool.map(abs, [-1, -2, -3])) == [1, 2, 3]
    assert not connection_file.exists()
    assert _socket_files(connection) == []


def test_tcp_on_request() -> None:
    with Pool(1, transport="tcp", transport_encryption="disabled") as pool:
        connection = json.loads(Path(pool.engines[0].connection_file).read_text())
        assert connection["transport"] == "tcp"
        assert connection["ip"] == "127.0.0.1"
        assert pool.submit(sum, [1, 2]).result(30) == 3


def test_a_runtime_directory_too_deep_for_unix_sockets_falls_back_to_tcp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(deep))
    assert launch_transport("parallel", "auto") == "tcp"
    with Pool(1, transport_encryption="disabled") as pool:
        connection = json.loads(Path(pool.engines[0].connection_file).read_text())
        assert connection["transport"] == "tcp"
        assert pool.submit(os.getpid).result(30) > 0


PROVISIONER = """
from jupyter_client.provisioning import LocalProvisioner


class ElsewhereProvisioner(LocalProvisioner):
    \"\"\"Stands for a provisioner that starts kernels on other hosts.\"\"\"
"""


def test_a_kernelspec_with_another_provisioner_gets_tcp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "elsewhere_provisioner.py").write_text(PROVISIONER)
    dist_info = tmp_path / "elsewhere_provisioner-0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: elsewhere-provisioner\n")
    (dist_info / "entry_points.txt").write_text(
        "[jupyter_client.kernel_provisioners]\n"
        "elsewhere-provisioner = elsewhere_provisioner:ElsewhereProvisioner\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = tmp_path / "kernels" / "elsewhere"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "parallel_kernel", "-f", "{connection_file}"],
                "display_name": "elsewhere",
                "language": "python",
                "metadata": {"kernel_provisioner": {"provisioner_name": "elsewhere-provisioner"}},
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    assert launch_transport("parallel", "auto") == "ipc"
    with Pool(1, kernel_name="elsewhere", transport_encryption="disabled") as pool:
        connection = json.loads(Path(pool.engines[0].connection_file).read_text())
        assert connection["transport"] == "tcp"
        assert pool.submit(sum, [1, 2]).result(30) == 3


def test_an_unknown_transport_is_refused() -> None:
    with pytest.raises(ValueError, match="transport must be 'auto', 'tcp' or 'ipc'"):
        Pool(1, transport="udp")
