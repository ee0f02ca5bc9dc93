"""The kernelspec shipped in the wheel, and the install / uninstall commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import Driver, cli
from jupyter_client.kernelspec import KernelSpecManager

SPEC_FILES = {"kernel.json", "logo-32x32.png", "logo-64x64.png", "logo-svg.svg"}


def test_installed_spec_is_found_with_no_further_step() -> None:
    spec = KernelSpecManager().get_kernel_spec("parallel")
    assert (
        Path(spec.resource_dir) == Path(sys.prefix) / "share" / "jupyter" / "kernels" / "parallel"
    )
    assert {p.name for p in Path(spec.resource_dir).iterdir()} >= SPEC_FILES
    assert spec.display_name == "Python 3 (parallel)"
    assert spec.language == "python"
    assert spec.argv == [
        "python",
        "-Xfrozen_modules=off",
        "-m",
        "parallel_kernel",
        "-f",
        "{connection_file}",
    ]
    assert spec.interrupt_mode == "signal"
    assert spec.metadata == {"debugger": True, "supported_encryption": ["curve"]}


def test_jupyter_kernelspec_list_shows_it() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "jupyter", "kernelspec", "list", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    specs = json.loads(out)["kernelspecs"]
    assert specs["parallel"]["spec"]["display_name"] == "Python 3 (parallel)"


def test_logos_are_real_images() -> None:
    spec_dir = Path(KernelSpecManager().get_kernel_spec("parallel").resource_dir)
    for size in (32, 64):
        data = (spec_dir / f"logo-{size}x{size}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert (width, height) == (size, size)
    assert (spec_dir / "logo-svg.svg").read_text().lstrip().startswith("<svg")


def test_install_into_a_prefix_with_name_display_name_and_env(tmp_path: Path) -> None:
    result = cli(
        "install",
        "--prefix",
        str(tmp_path),
        "--name",
        "parallel-test",
        "--display-name",
        "Parallel (test)",
        "--env",
        "PK_TEST_VAR",
        "hello",
        "--env",
        "PK_OTHER",
        "2",
    )
    assert result.returncode == 0, result.stderr
    spec_dir = tmp_path / "share" / "jupyter" / "kernels" / "parallel-test"
    assert f"Installed kernelspec parallel-test in {spec_dir}" in result.stdout
    assert {p.name for p in spec_dir.iterdir()} == SPEC_FILES
    spec = json.loads((spec_dir / "kernel.json").read_text())
    assert spec["argv"] == [
        sys.executable,
        "-Xfrozen_modules=off",
        "-m",
        "parallel_kernel",
        "-f",
        "{connection_file}",
    ]
    assert spec["display_name"] == "Parallel (test)"
    assert spec["env"] == {"PK_TEST_VAR": "hello", "PK_OTHER": "2"}
    assert spec["interrupt_mode"] == "signal"
    assert spec["metadata"] == {"debugger": True, "supported_encryption": ["curve"]}

    os.environ["JUPYTER_PATH"] = str(tmp_path / "share" / "jupyter")
    try:
        driver = Driver(kernel_name="parallel-test")
        try:
            assert driver.call(lambda: __import__("os").environ["PK_TEST_VAR"]) == "hello"
        finally:
            driver.stop()
    finally:
        del os.environ["JUPYTER_PATH"]

    result = cli("uninstall", "--prefix", str(tmp_path), "--name", "parallel-test")
    assert result.returncode == 0, result.stderr
    assert not spec_dir.exists()


def test_install_for_the_user(tmp_path: Path) -> None:
    env = {"JUPYTER_DATA_DIR": str(tmp_path)}
    result = cli("install", "--user", env=env)
    assert result.returncode == 0, result.stderr
    spec = json.loads((tmp_path / "kernels" / "parallel" / "kernel.json").read_text())
    assert spec["display_name"] == "Python 3 (parallel)"
    assert spec["argv"][0] == sys.executable
    assert cli("uninstall", "--user", env=env).returncode == 0
    assert not (tmp_path / "kernels" / "parallel").exists()


def test_sys_prefix_location(tmp_path: Path) -> None:
    name = "parallel-sys-prefix-test"
    target = Path(sys.prefix) / "share" / "jupyter" / "kernels" / name
    try:
        assert cli("install", "--sys-prefix", "--name", name).returncode == 0
        spec = json.loads((target / "kernel.json").read_text())
        assert spec["display_name"] == f"Python 3 (parallel) [{name}]"
    finally:
        assert cli("uninstall", "--sys-prefix", "--name", name).returncode == 0
    assert not target.exists()


def test_bad_names_and_missing_specs_are_clear_errors(tmp_path: Path) -> None:
    result = cli("install", "--prefix", str(tmp_path), "--name", "no spaces allowed")
    assert result.returncode == 1
    assert "invalid kernel name 'no spaces allowed'" in result.stderr
    result = cli("uninstall", "--prefix", str(tmp_path), "--name", "absent")
    assert result.returncode == 1
    assert "no kernelspec 'absent' in" in result.stderr


def test_location_options_are_exclusive(tmp_path: Path) -> None:
    result = cli("install", "--user", "--prefix", str(tmp_path))
    assert result.returncode == 2
    assert "not allowed with argument" in result.stderr


def test_help_and_version() -> None:
    result = cli("--help")
    assert result.returncode == 0
    for command in ("install", "uninstall", "demo", "kernel"):
        assert command in result.stdout
    assert cli("--version").stdout.startswith("parallel-kernel ")
    kernel_help = cli("kernel", "--help-all")
    assert kernel_help.returncode == 0
    assert "--ParallelKernel.exec_lines" in kernel_help.stdout
    assert "--ParallelKernel.engine_id" in kernel_help.stdout


def test_a_mistyped_subcommand_is_an_error_not_a_kernel() -> None:
    result = cli("instal")
    assert result.returncode == 2
    assert "invalid choice: 'instal'" in result.stderr


def test_demo_with_a_missing_kernelspec_is_a_clear_error() -> None:
    result = cli("demo", "--kernel-name", "no-such-spec")
    assert result.returncode == 1
    assert "demo: error: no kernelspec named 'no-such-spec'" in result.stderr
    assert "Traceback" not in result.stderr
    assert cli("demo", "--engines", "0").returncode == 2
