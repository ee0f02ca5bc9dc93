"""pytest plugin: run ipyparallel's own test suite with parallel_kernel engines.

``python -m pytest --pyargs ipyparallel.tests -p ipyparallel_engines`` (with
this directory on ``PYTHONPATH``) makes every engine that suite starts, through
its test helpers and every launcher's default, run ``python -m
parallel_kernel.ipengine`` instead of ipyparallel's own engine.  The suite
itself is the one installed with ipyparallel; nothing of it is copied here.
"""

from __future__ import annotations

import sys

import pytest

ENGINE_COMMAND = [sys.executable, "-m", "parallel_kernel.ipengine"]


def pytest_configure(config: pytest.Config) -> None:
    from ipyparallel.cluster import launcher

    # one list, shared by the suite's add_engines helper and every launcher's default
    launcher.ipengine_cmd_argv[:] = ENGINE_COMMAND


def pytest_report_header(config: pytest.Config) -> str:
    return f"ipyparallel engines: {' '.join(ENGINE_COMMAND)}"
