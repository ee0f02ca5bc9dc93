"""Every public name keeps working where users and older clients' pickles look for it."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)

#: Module paths the API reference has documented, and what each must still offer.
DOCUMENTED = {
    "parallel_kernel": [
        "Pool",
        "Engine",
        "TaskFuture",
        "wait",
        "as_completed",
        "require",
        "ParallelCellError",
        "load_ipython_extension",
    ],
    "parallel_kernel.pool": ["Pool", "Engine"],
    "parallel_kernel.kernel": ["ParallelKernel", "ParallelKernelApp", "launch"],
    "parallel_kernel.kernelapp": ["ParallelKernelApp", "launch"],
    "parallel_kernel.output": ["display_outputs", "OutputForwarder"],
    "parallel_kernel.ipyparallel_format": ["unpack_apply", "pack_result"],
    "parallel_kernel.integrations.joblib": ["PoolBackend"],
    "parallel_kernel.magics": ["register"],
    "parallel_kernel.magics.run": ["ParallelRun"],
    # what older clients' pickles reference by path
    "parallel_kernel.remote": ["run_chunk", "push", "pull", "call_in_namespace", "Require"],
    "parallel_kernel.serialize": ["pack", "unpack", "pack_apply", "unpack_result"],
}


@pytest.mark.parametrize("module", sorted(DOCUMENTED))
def test_documented_module_paths_offer_their_names(module: str) -> None:
    loaded = importlib.import_module(module)
    assert [name for name in DOCUMENTED[module] if not hasattr(loaded, name)] == []


def test_old_paths_are_the_same_objects() -> None:
    from parallel_kernel.kernel import ParallelKernelApp, launch
    from parallel_kernel.kernelapp import ParallelKernelApp as OldApp
    from parallel_kernel.kernelapp import launch as old_launch

    assert OldApp is ParallelKernelApp
    assert old_launch is launch


def test_importing_the_package_loads_no_ipykernel() -> None:
    """A script that only uses the pool does not pay for ipykernel (or look like a kernel)."""
    code = "import parallel_kernel, sys; print('ipykernel' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
