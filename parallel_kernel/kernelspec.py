"""Writing, installing and removing the ``parallel`` kernelspec.

``pip install`` already puts the spec (``kernelspec/`` in the source tree) into
``{sys.prefix}/share/jupyter/kernels/parallel``, where Jupyter finds it with no
further step.  This module is for everything else: installing the spec for a
user or another prefix so that a Jupyter running in a different environment
launches this environment's Python, under another name or display name, or
with extra environment variables.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_core.paths import SYSTEM_JUPYTER_PATH, jupyter_data_dir

KERNEL_NAME = "parallel"
DISPLAY_NAME = "Python 3 (parallel)"
DISTRIBUTION = "parallel-kernel"
#: Jupyter's rule for kernel names.
NAME_PATTERN = re.compile(r"^[a-z0-9._-]+$", re.IGNORECASE)
SPEC_FILES = ("kernel.json", "logo-32x32.png", "logo-64x64.png", "logo-svg.svg")


def resource_dir() -> Path:
    """The directory holding the shipped kernel.json and logos.

    That is the installed wheel's ``share/jupyter/kernels/parallel``, or the
    ``kernelspec/`` directory of a source checkout.
    """
    try:
        for file in metadata.distribution(DISTRIBUTION).files or ():
            if file.name == "kernel.json" and file.parent.name == KERNEL_NAME:
                return Path(str(file.locate())).parent
    except metadata.PackageNotFoundError:
        pass
    source = Path(__file__).resolve().parent.parent / "kernelspec"
    if (source / "kernel.json").is_file():
        return source
    raise FileNotFoundError(
        f"cannot find the {KERNEL_NAME!r} kernelspec files: {DISTRIBUTION} is not installed "
        "and this is not a source checkout"
    )


def kernel_dict(
    executable: str | None = None,
    display_name: str = DISPLAY_NAME,
    env: dict[str, str] | None = None,
    extra_arguments: list[str] | None = None,
) -> dict[str, Any]:
    """The kernel.json content, launching ``executable`` (default: this Python)."""
    spec = json.loads((resource_dir() / "kernel.json").read_text())
    spec["argv"] = [
        executable or sys.executable,
        # as ipykernel's installer does: the debugger cannot see frozen modules
        "-Xfrozen_modules=off",
        "-m",
        "parallel_kernel",
        "-f",
        "{connection_file}",
        *(extra_arguments or []),
    ]
    spec["display_name"] = display_name
    if env:
        spec["env"] = dict(env)
    return spec


def write_kernel_spec(path: str | Path | None = None, **kernel_options: Any) -> Path:
    """Write a kernelspec directory (kernel.json and logos) and return its path.

    ``path`` defaults to a new temporary directory; ``kernel_options`` are
    passed to :func:`kernel_dict`.
    """
    target = Path(path) if path else Path(tempfile.mkdtemp(suffix="_kernels")) / KERNEL_NAME
    target.mkdir(parents=True, exist_ok=True)
    source = resource_dir()
    for name in SPEC_FILES[1:]:
        shutil.copyfile(source / name, target / name)
    (target / "kernel.json").write_text(json.dumps(kernel_dict(**kernel_options), indent=2) + "\n")
    return target


def kernels_dir(user: bool = False, prefix: str | None = None) -> Path:
    """Where a spec goes: the user's data dir, a prefix, or the system-wide dir."""
    if user:
        return Path(jupyter_data_dir()) / "kernels"
    if prefix:
        return Path(prefix) / "share" / "jupyter" / "kernels"
    return Path(SYSTEM_JUPYTER_PATH[0]) / "kernels"


def _check_name(kernel_name: str) -> None:
    if not NAME_PATTERN.match(kernel_name):
        raise ValueError(
            f"invalid kernel name {kernel_name!r}: use only ASCII letters, digits, '.', '_' and '-'"
        )


def install(
    user: bool = False,
    prefix: str | None = None,
    kernel_name: str = KERNEL_NAME,
    display_name: str | None = None,
    env: dict[str, str] | None = None,
) -> Path:
    """Install the kernelspec and return the directory it was installed to.

    The spec launches this Python (``sys.executable``) by absolute path, so it
    works from a Jupyter installed in any environment.
    """
    _check_name(kernel_name)
    if display_name is None:
        display_name = (
            DISPLAY_NAME if kernel_name == KERNEL_NAME else f"{DISPLAY_NAME} [{kernel_name}]"
        )
    with tempfile.TemporaryDirectory() as staging:
        source = write_kernel_spec(Path(staging) / kernel_name, display_name=display_name, env=env)
        installed = KernelSpecManager().install_kernel_spec(
            str(source), kernel_name, user=user, prefix=prefix, replace=True
        )
    return Path(installed)


def uninstall(
    user: bool = False, prefix: str | None = None, kernel_name: str = KERNEL_NAME
) -> Path:
    """Remove an installed kernelspec from the given location and return its path.

    Raises ``FileNotFoundError`` if there is no spec of that name there.
    """
    _check_name(kernel_name)
    path = kernels_dir(user, prefix) / kernel_name
    if not (path / "kernel.json").is_file():
        raise FileNotFoundError(f"no kernelspec {kernel_name!r} in {path.parent}")
    shutil.rmtree(path)
    return path
