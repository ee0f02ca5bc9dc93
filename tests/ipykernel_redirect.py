"""pytest plugin: run ipykernel's own test suite with ParallelKernel as the kernel.

``python -m pytest tests -p ipykernel_redirect`` in an unpacked ipykernel
sdist (with this directory on ``PYTHONPATH``) makes every kernel that suite
starts a parallel kernel; ``tests/test_ipykernel_suite.py`` says which ways of
starting one there are and how each is redirected.  ``--redirect-report PATH``
writes what was redirected, and every ``kernel_info_reply`` that jupyter_client
channels received, as JSON, so that the run can show it really happened.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

import ipykernel.ipkernel
import pytest
from ipykernel.kernelapp import IPKernelApp
from jupyter_client.channels import ZMQSocketChannel
from jupyter_client.manager import KernelManager
from traitlets.traitlets import HasDescriptors

from parallel_kernel.kernel import ParallelKernel, ParallelKernelApp

KERNEL_MODULE = "parallel_kernel"  # what ``python -m`` runs instead of ipykernel_launcher

#: Filled while the suite runs, written by ``--redirect-report``.
record: dict[str, Any] = {"kernel_commands": [], "kernel_info": [], "applications": []}
_current_test = "(collection)"

_format_kernel_cmd = KernelManager.format_kernel_cmd
_channel_recv = ZMQSocketChannel._recv


def format_kernel_cmd(self: KernelManager, extra_arguments: list[str] | None = None) -> list[str]:
    """The kernelspec's command, with ``-m ipykernel_launcher`` made ``-m parallel_kernel``."""
    stock = _format_kernel_cmd(self, extra_arguments)
    cmd = [
        KERNEL_MODULE if word == "ipykernel_launcher" and stock[i - 1] == "-m" else word
        for i, word in enumerate(stock)
    ]
    record["kernel_commands"].append({"test": _current_test, "stock": stock, "cmd": cmd})
    return cmd


def channel_recv(self: ZMQSocketChannel, **kwargs: Any) -> dict[str, Any]:
    """A client channel's ``_recv``, noting which features each ``kernel_info_reply`` names."""
    msg = _channel_recv(self, **kwargs)
    if msg["msg_type"] == "kernel_info_reply":
        content = msg["content"]
        record["kernel_info"].append(
            {
                "test": _current_test,
                "implementation": content.get("implementation"),
                "supported_features": content.get("supported_features", []),
            }
        )
    return msg


@functools.cache
def parallel_app_class(cls: type) -> type:
    """What the suite gets when it constructs ``cls``, ``IPKernelApp`` or a subclass of its own."""
    if issubclass(cls, ParallelKernelApp):
        return cls
    if cls is IPKernelApp:
        return ParallelKernelApp
    return type(cls.__name__, (cls, ParallelKernelApp), {"__module__": cls.__module__})


def new_app(cls: type, /, *args: Any, **kwargs: Any) -> Any:
    """``IPKernelApp.__new__``: every application constructed in-process is a ParallelKernelApp.

    The suite's own names stay ipykernel's, so ``super(IPKernelApp, app)`` in
    its tests still skips exactly ``IPKernelApp``'s methods.
    """
    built = parallel_app_class(cls)
    record["applications"].append({"test": _current_test, "constructed": cls.__qualname__})
    return HasDescriptors.__new__(built, *args, **kwargs)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--redirect-report", help="write what ipykernel_redirect did here (JSON)")


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: Any, args: Any) -> Any:
    """The suite's conftest.py defines its in-process kernel on ParallelKernel.

    Only while the initial conftests are imported: ``ipykernel.inprocess`` and
    every other module keep ipykernel's ``IPythonKernel``.
    """
    with mock.patch.object(ipykernel.ipkernel, "IPythonKernel", ParallelKernel):
        return (yield)


def pytest_configure(config: pytest.Config) -> None:
    IPKernelApp.__new__ = staticmethod(new_app)
    KernelManager.format_kernel_cmd = format_kernel_cmd
    ZMQSocketChannel._recv = channel_recv
    # kernels that ipykernel's own API starts in a child process (embed_kernel,
    # launch_new_instance) run IPKernelApp there; its config picks the kernel class
    ipython_dir = Path(tempfile.mkdtemp(prefix="ipykernel-redirect-"))
    # removed after the in-process shells' own exit handlers have closed their history
    atexit.register(shutil.rmtree, ipython_dir, ignore_errors=True)
    profile = ipython_dir / "profile_default"
    profile.mkdir()
    (profile / "ipython_kernel_config.py").write_text(
        "c.IPKernelApp.kernel_class = 'parallel_kernel.kernel.ParallelKernel'\n"
    )
    os.environ["IPYTHONDIR"] = str(ipython_dir)


def pytest_report_header(config: pytest.Config) -> str:
    return f"ipykernel's kernels: python -m {KERNEL_MODULE}, ParallelKernel, ParallelKernelApp"


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    global _current_test
    _current_test = nodeid


def pytest_collection_finish(session: pytest.Session) -> None:
    mock_kernel = getattr(sys.modules.get("tests.conftest"), "MockIPyKernel", object)
    record["in_process_kernel_bases"] = [cls.__name__ for cls in mock_kernel.__mro__]


def pytest_unconfigure(config: pytest.Config) -> None:
    report = config.getoption("redirect_report")
    if report:
        Path(report).write_text(json.dumps(record, indent=1))
