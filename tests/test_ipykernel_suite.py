"""ipykernel's own test suite, run with ParallelKernel as the kernel.

The suite is the one of the installed ipykernel, taken at test time from where
ipykernel publishes it: the wheel has no tests, so ``pip download --no-deps
--no-binary ipykernel ipykernel==<installed version>`` fetches the sdist from
the package index and its ``tests/`` and ``pyproject.toml`` (the suite's pytest
settings: 30 s per test, warnings are errors, strict markers) are unpacked into
pytest's cache directory, once per version.  Nothing of it is copied into this
repository.  Without the download the test fails in CI and skips elsewhere.
The suite runs with its own settings plus ``asyncio_default_fixture_loop_scope``,
which the installed pytest-asyncio warns about when unset.

``tests/ipykernel_redirect.py`` is the pytest plugin that makes the kernels of
that suite ours.  The suite, ipykernel 7.4.0, starts kernels in four ways:

* **Kernel managers** (``tests/utils.py``'s ``start_new_kernel`` and
  ``new_kernel``, the ``kc`` fixture, the kernelspecs that ``test_curve.py``
  and ``test_kernelapp.py`` write): jupyter_client formats the kernelspec's
  ``python -m ipykernel_launcher -f {connection_file}``.  The plugin wraps
  ``KernelManager.format_kernel_cmd`` so that it runs ``python -m
  parallel_kernel`` instead, the command of our kernelspec: ParallelKernelApp
  and ParallelKernel, in a subprocess.
* **ipykernel's API in a child Python** (``test_embed_kernel.py``'s
  ``embed_kernel``, ``test_start_kernel.py``'s ``launch_new_instance``): these
  run ipykernel's ``IPKernelApp``, which loads ``ipython_kernel_config.py``;
  the plugin points ``IPYTHONDIR`` at a profile whose config sets
  ``IPKernelApp.kernel_class`` to ParallelKernel.
* **In-process kernels** (``tests/conftest.py``'s ``MockIPyKernel``, behind the
  ``ipkernel`` fixture of ``test_ipkernel_direct.py`` and ``test_comm.py``):
  while the suite's conftest is imported, ``ipykernel.ipkernel.IPythonKernel``
  is ParallelKernel, so ``MockIPyKernel`` subclasses it.
* **In-process applications** (``IPKernelApp(...)``, ``IPKernelApp.instance()``
  and ``embed_kernel`` in the pytest process, ``test_connect.py``'s
  ``DummyKernelApp``): ``IPKernelApp.__new__`` builds a ParallelKernelApp (for
  a subclass of the suite's own, that subclass with ParallelKernelApp beneath
  it), while the name ``IPKernelApp`` stays ipykernel's class, so the suite's
  ``super(IPKernelApp, app).initialize(...)`` means what it says.

Not redirected, because they do not exercise ipykernel's ``IPythonKernel`` or
``IPKernelApp`` and run unchanged: the tests on ``conftest.py``'s
``MockKernel`` (ipykernel's base ``Kernel`` with a no-op language:
``test_kernel_direct.py``, ``test_zmq_shell.py``'s shell test, the in-process
half of ``test_eventloop.py``), ``tests/inprocess/`` (ipykernel's own
``InProcessKernel``; ParallelKernel has no in-process variant), the tests of
ipykernel's utilities (``test_io.py``, ``test_jsonutil.py``,
``test_heartbeat.py``, ``test_parentpoller.py``, ``test_displayhook.py``,
``test_subshell_wedge.py``, ``test_kernelspec.py``) and ``test_help_output``
(``python -m IPython kernel --help-all``).  Excluded by name, only on a machine
without a display: ``test_matplotlib_gui[tk]``, which needs one (matplotlib
refuses the Tk backend when headless; ipykernel's CI skips the whole module).

That the redirection happened is checked from the plugin's report: every
command a kernel manager formatted runs ``-m parallel_kernel``, every
``kernel_info_reply`` that a client channel received (embedded kernels
included) lists ``"parallel"`` in ``supported_features``, ``MockIPyKernel``
derives from ParallelKernel, and in-process applications were built by the
plugin.  Every test collected must pass (or be skipped by the suite itself),
as all do with ipykernel's own kernel (the suite without the plugin) here.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from conftest import junit_outcomes

TESTS = Path(__file__).resolve().parent
VERSION = importlib.metadata.version("ipykernel")
#: Needs a display: deselected on a machine without one.
HEADLESS_DESELECT = "tests/test_matplotlib_eventloops.py::test_matplotlib_gui[tk]"


def unavailable(message: str) -> None:
    """Fail in CI, skip elsewhere: the suite cannot be had."""
    if "CI" in os.environ:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def ipykernel_suite(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ipykernel's ``tests/`` and ``pyproject.toml``, from the installed version's sdist."""
    cache = getattr(pytestconfig, "cache", None)  # None under -p no:cacheprovider
    root = cache.mkdir("ipykernel-suite") if cache else tmp_path_factory.mktemp("ipykernel-suite")
    suite = root / f"ipykernel-{VERSION}"
    if (suite / "tests" / "conftest.py").exists():
        return suite
    with tempfile.TemporaryDirectory(dir=root) as download:
        # the sdist of ipykernel only: its build backend still comes as wheels
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "ipykernel"]
        pip = subprocess.run(
            [*command, "--dest", download, f"ipykernel=={VERSION}"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        sdists = list(Path(download).glob(f"ipykernel-{VERSION}.tar.gz"))
        if pip.returncode or not sdists:
            unavailable(f"pip could not download ipykernel {VERSION}'s sdist:\n{pip.stderr}")
        staging = Path(download) / "suite"
        top = f"ipykernel-{VERSION}/"
        with tarfile.open(sdists[0]) as sdist:
            members = [
                member
                for member in sdist.getmembers()
                if member.name.startswith(f"{top}tests/") or member.name == f"{top}pyproject.toml"
            ]
            for member in members:
                member.name = member.name.removeprefix(top)
            sdist.extractall(staging, members=members, filter="data")
        with contextlib.suppress(OSError):  # a concurrent run may have unpacked it first
            staging.rename(suite)
    return suite


def run_suite(suite: Path, tmp_path: Path, name: str, *plugin: str) -> dict[str, str]:
    """Run ipykernel's suite in ``suite``; the outcome of every test, by node id.

    The working directory is the suite's, as in ipykernel's CI: child processes
    of its tests import ``tests.*`` from there.
    """
    report = tmp_path / f"{name}.xml"
    headless = [] if os.environ.get("DISPLAY") else ["--deselect", HEADLESS_DESELECT]
    python_path = [os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests",
            "-q",
            "--color=no",
            "-p",
            "no:cacheprovider",
            # pytest-asyncio warns when this is unset, and the suite makes warnings errors
            "-o",
            "asyncio_default_fixture_loop_scope=function",
            f"--junitxml={report}",
            *headless,
            *plugin,
        ],
        cwd=suite,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *python_path])},
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    (tmp_path / f"{name}.log").write_text(result.stdout + result.stderr)
    return junit_outcomes(report)


@pytest.mark.timeout(900)
def test_ipykernel_own_test_suite_passes_with_parallel_kernel(
    ipykernel_suite: Path, tmp_path: Path
) -> None:
    redirect_report = tmp_path / "redirect.json"
    outcomes = run_suite(
        ipykernel_suite,
        tmp_path,
        "parallel_kernel",
        "-p",
        "ipykernel_redirect",
        f"--redirect-report={redirect_report}",
    )
    counts = Counter(outcomes.values())
    print(f"ipykernel {VERSION}'s suite with ParallelKernel: {dict(counts)}")
    assert [node for node, outcome in outcomes.items() if outcome in ("failure", "error")] == []
    assert counts["passed"] >= 215  # 227 here; 224 with CI set (the suite skips GUI loops)

    redirected = json.loads(redirect_report.read_text())
    commands = redirected["kernel_commands"]
    assert len(commands) >= 50
    assert [c["cmd"] for c in commands if c["cmd"][1:3] != ["-m", "parallel_kernel"]] == []
    replies = redirected["kernel_info"]
    assert len({reply["test"] for reply in replies}) >= 50
    assert [r for r in replies if "parallel" not in r["supported_features"]] == []
    assert "ParallelKernel" in redirected["in_process_kernel_bases"]
    assert len({app["test"] for app in redirected["applications"]}) >= 15
