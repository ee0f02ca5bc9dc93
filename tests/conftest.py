"""Fixtures that start real parallel kernels from the installed kernelspec.

Tests talk to the kernel through jupyter_client, exactly as any frontend or
script would; nothing here mocks the kernel or ZMQ.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from queue import Empty
from typing import Any

import cloudpickle
import pexpect
import pytest
from jupyter_client.manager import KernelManager

from parallel_kernel import serialize

TIMEOUT = 30
# Tests run several kernels at once; keep them off the user's IPython history file.
KERNEL_ARGS = ["--HistoryManager.hist_file=:memory:"]


@pytest.fixture(autouse=True, scope="session")
def _send_test_functions_by_value() -> None:
    """Functions defined in test modules travel by value, as a notebook's would.

    The engines cannot import the test modules, and the point of most tests
    is a function written by the user, not one importable everywhere.
    """
    for name, module in list(sys.modules.items()):
        if name.startswith(("test_", "conftest", "tests.")):
            cloudpickle.register_pickle_by_value(module)


def require_installed(program: Path, package: str) -> None:
    """Fail in CI (which installs ``package``), skip elsewhere, when ``program`` is missing."""
    if program.exists():
        return
    message = (
        f"{program} is missing: this test needs Debian's {package} package "
        f"(apt-get install {package}; .ci/run installs it)"
    )
    if "CI" in os.environ:
        pytest.fail(message)
    pytest.skip(message)


def _busy(seconds: float) -> None:
    import sys
    import time

    print("busy task started", flush=True)
    sys.stdout.flush()
    time.sleep(seconds)


class Driver:
    """A kernel started from a kernelspec and a blocking client with per-request routing.

    Replies and IOPub messages are stored by parent msg_id, so tests can
    pipeline many requests and then collect each one's outcome.
    """

    def __init__(self, kernel_name: str = "parallel", extra_arguments: list[str] | None = None):
        self.manager = KernelManager(kernel_name=kernel_name)
        self.manager.start_kernel(extra_arguments=[*KERNEL_ARGS, *(extra_arguments or [])])
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)
        self.session = self.client.session
        self._replies: dict[str, dict[str, Any]] = {}
        self._iopub: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._idle: set[str] = set()

    # -- sending
    def send(
        self,
        msg_type: str,
        content: Any = None,
        *,
        buffers: list[Any] | None = None,
        metadata: dict[str, Any] | None = None,
        channel: str = "shell",
        header: dict[str, Any] | None = None,
    ) -> str:
        msg = self.session.msg(msg_type, {} if content is None else content, metadata=metadata)
        if header:
            msg["header"].update(header)
        msg["buffers"] = buffers or []
        getattr(self.client, f"{channel}_channel").send(msg)
        return msg["header"]["msg_id"]

    def send_apply(self, f: Any, *args: Any, **kwargs: Any) -> str:
        metadata = kwargs.pop("_metadata", None)
        header = kwargs.pop("_header", None)
        content, buffers = serialize.pack_apply(f, args, kwargs)
        return self.send(
            "apply_request", content, buffers=buffers, metadata=metadata, header=header
        )

    # -- receiving
    def reply(self, msg_id: str, channel: str = "shell", timeout: float = TIMEOUT) -> dict:
        deadline = time.monotonic() + timeout
        while msg_id not in self._replies:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no reply to {msg_id} on {channel} within {timeout} s")
            try:
                msg = getattr(self.client, f"get_{channel}_msg")(timeout=remaining)
            except Empty:
                continue
            self._replies[msg["parent_header"]["msg_id"]] = msg
        return self._replies.pop(msg_id)

    def no_reply(self, channel: str = "shell", wait: float = 1.0) -> list[dict]:
        """Every message that arrives on ``channel`` within ``wait`` seconds (expect none)."""
        extra = list(self._replies.values())
        deadline = time.monotonic() + wait
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                extra.append(getattr(self.client, f"get_{channel}_msg")(timeout=remaining))
            except Empty:
                break
        return extra

    def iopub(self, msg_id: str, timeout: float = TIMEOUT) -> list[dict]:
        """All IOPub messages of one request, up to and including its ``idle``."""
        self._read_iopub_until(lambda: msg_id in self._idle, timeout)
        self._idle.discard(msg_id)
        return self._iopub.pop(msg_id)

    def wait_for_output(self, msg_id: str, text: str, timeout: float = TIMEOUT) -> None:
        """Wait until the request has printed ``text`` (so it is certainly running)."""

        def printed() -> bool:
            return any(
                m["msg_type"] == "stream" and text in m["content"]["text"]
                for m in self._iopub.get(msg_id, ())
            )

        self._read_iopub_until(printed, timeout)

    def _read_iopub_until(self, condition: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"IOPub condition not met within {timeout} s")
            try:
                msg = self.client.get_iopub_msg(timeout=remaining)
            except Empty:
                continue
            parent = msg["parent_header"].get("msg_id")
            self._iopub[parent].append(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                self._idle.add(parent)

    # -- conveniences
    def start_busy_task(self, seconds: float) -> str:
        """Start a task that keeps the engine busy; return once it is running."""
        msg_id = self.send_apply(_busy, seconds)
        self.wait_for_output(msg_id, "busy task started")
        return msg_id

    def apply(self, f: Any, *args: Any, **kwargs: Any) -> dict:
        """Run ``f`` and return the ``apply_reply`` (with ``result`` added when ok)."""
        reply = self.reply(self.send_apply(f, *args, **kwargs))
        if reply["content"]["status"] == "ok":
            reply["result"] = serialize.unpack_result(reply["content"], reply["buffers"])
        return reply

    def call(self, f: Any, *args: Any, **kwargs: Any) -> Any:
        """Run ``f`` and return its result, failing the test on an error reply."""
        reply = self.apply(f, *args, **kwargs)
        assert reply["content"]["status"] == "ok", reply["content"]
        return reply["result"]

    def execute(self, code: str) -> dict:
        msg_id = self.client.execute(code)
        return self.reply(msg_id)

    def control(self, msg_type: str, content: Any = None) -> dict:
        return self.reply(self.send(msg_type, content, channel="control"), channel="control")

    def flush(self) -> None:
        """Forget everything received so far (between tests sharing a kernel).

        A kernel_info request is the barrier: its reply follows every earlier
        shell reply, and its idle status every earlier IOPub message.
        """
        barrier = self.client.kernel_info()
        deadline = time.monotonic() + TIMEOUT
        for channel, last in (("shell", "kernel_info_reply"), ("iopub", "status")):
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"the {channel} channel did not drain within {TIMEOUT} s")
                msg = getattr(self.client, f"get_{channel}_msg")(timeout=remaining)
                ours = msg["parent_header"].get("msg_id") == barrier and msg["msg_type"] == last
                if ours and (last != "status" or msg["content"]["execution_state"] == "idle"):
                    break
        self.no_reply("control", wait=0.05)
        self._replies.clear()
        self._iopub.clear()
        self._idle.clear()

    def stop(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=False)


@pytest.fixture(scope="module")
def module_kernel() -> Iterator[Driver]:
    driver = Driver(extra_arguments=["--ParallelKernel.engine_id=3"])
    yield driver
    driver.stop()


@pytest.fixture
def kernel(module_kernel: Driver) -> Driver:
    """A kernel shared by a test module, with its channels drained before each test."""
    assert module_kernel.manager.is_alive(), "the shared kernel died in an earlier test"
    module_kernel.flush()
    return module_kernel


@pytest.fixture
def fresh_kernel(request: pytest.FixtureRequest) -> Iterator[Driver]:
    """A kernel of its own; ``@pytest.mark.kernel_args([...])`` adds arguments."""
    marker = request.node.get_closest_marker("kernel_args")
    driver = Driver(extra_arguments=list(marker.args[0]) if marker else [])
    yield driver
    driver.stop()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kernel_args(args): extra arguments for fresh_kernel")


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def outputs_of(cell) -> str:
    """What a notebook cell showed as text: its streams and its outputs' text/plain."""
    texts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            texts.append(output.text)
        elif "data" in output:
            texts.append(output.data.get("text/plain", ""))
    return "".join(texts)


def junit_outcomes(report: Path) -> dict[str, str]:
    """Each test of a JUnit XML report (``pytest --junitxml``), by node name:
    ``"passed"``, ``"failure"``, ``"error"`` or ``"skipped"``."""
    outcomes = {}
    for case in ElementTree.parse(report).iter("testcase"):
        node = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case} & {"failure", "error", "skipped"}
        outcomes[node] = kinds.pop() if kinds else "passed"
    return outcomes


def wait_until(condition: Any, timeout: float = 30) -> None:
    """Poll ``condition()`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"the condition never held within {timeout} s"
        time.sleep(0.01)


def run(argv: list[str], *, timeout: float = 60, **options: Any) -> subprocess.CompletedProcess:
    """Run a program to its end, its output captured as text (``options`` as for
    ``subprocess.run``); the caller checks the exit status."""
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, **options
    )


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``parallel-kernel ARGS...`` (as ``python -m parallel_kernel``), as a user would."""
    return run([sys.executable, "-m", "parallel_kernel", *args], env={**os.environ, **(env or {})})


def channel_options(channel: str) -> dict[str, Any]:
    """``submit`` options that send a task by ``channel`` (a task with a timeout goes by shell)."""
    return {"timeout": 60} if channel == "shell" else {}


@contextlib.contextmanager
def script_in_a_terminal(
    tmp_path: Path, source: str, channel: str, timeout: float = 60
) -> Iterator[pexpect.spawn]:
    """Run ``source`` as a script in a pseudo-terminal, as from a user's shell.

    ``{options}`` in the source becomes the ``submit`` options of ``channel``.
    Yields the pexpect child to drive; the script must then exit with status 0.
    """
    script = tmp_path / "job.py"
    options = "".join(f", {key}={value!r}" for key, value in channel_options(channel).items())
    script.write_text(source.format(options=options))
    child = pexpect.spawn(
        sys.executable, [str(script)], cwd=str(tmp_path), encoding="utf-8", timeout=timeout
    )
    try:
        yield child
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
