"""Starting engine processes: kernelspecs, transports, environment, how a process ended.

Everything here is about processes and files, not messages: the pool asks
for an engine's process to be started (or restarted), and learns how it
ended when it is gone.
"""

from __future__ import annotations

import contextlib
import glob
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.paths import jupyter_runtime_dir

from .death import Clues
from .runtime_files import EngineManager

#: Arguments every engine the pool starts gets (no history file shared by the engines).
ENGINE_ARGS = ["--HistoryManager.hist_file=:memory:"]
#: glibc tunable the pool adds to its engines' environment on Linux: malloc backs its
#: large blocks (such as received message buffers) with transparent huge pages.
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
#: Longest path of a Unix socket that every platform accepts (Linux allows 107 bytes).
MAX_SOCKET_PATH = 100


def check_kernel_name(kernel_name: str) -> None:
    """Raise ``ValueError`` naming the installed kernelspecs if ``kernel_name`` is not one."""
    try:
        KernelSpecManager().get_kernel_spec(kernel_name)
    except NoSuchKernel:
        available = ", ".join(sorted(KernelSpecManager().find_kernel_specs())) or "none"
        raise ValueError(f"no kernelspec named {kernel_name!r}; available: {available}") from None


def provisioner_name(kernel_name: str) -> str:
    """The kernel provisioner that starts kernels of ``kernel_name`` (jupyter_client's default
    is the local one)."""
    metadata = KernelSpecManager().get_kernel_spec(kernel_name).metadata or {}
    provisioner = (metadata.get("kernel_provisioner") or {}).get("provisioner_name")
    return provisioner or "local-provisioner"


def launch_transport(kernel_name: str, transport: str) -> str:
    """The transport for engines started from ``kernel_name``: ``transport`` with "auto" resolved.

    ipc needs a POSIX system, the local provisioner (other provisioners start
    kernels elsewhere) and socket paths short enough: jupyter_client names
    them after the connection file in the runtime directory.
    """
    if transport not in ("auto", "tcp", "ipc"):
        raise ValueError(f"transport must be 'auto', 'tcp' or 'ipc', got {transport!r}")
    if transport != "auto":
        return transport
    if os.name != "posix":
        return "tcp"
    if provisioner_name(kernel_name) != "local-provisioner":
        return "tcp"
    longest = os.path.join(jupyter_runtime_dir(), f"kernel-{uuid.uuid4()}-ipc-65535")
    return "ipc" if len(os.fsencode(longest)) <= MAX_SOCKET_PATH else "tcp"


def engine_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the pool starts engines with: ``environ`` (default: this process's) on
    Linux with :data:`HUGE_PAGES_TUNABLE` added to ``GLIBC_TUNABLES``.

    A 64 MiB argument arrives in a buffer that glibc maps fresh for every
    message; on 4 KiB pages, faulting it in costs more than receiving it.  On
    huge pages the engine takes one fault per 2 MiB, which is why large echoes
    run faster than a plain ZMQ echo (docs/performance.md).  A
    ``glibc.malloc.hugetlb`` setting already in ``GLIBC_TUNABLES`` wins, so
    ``GLIBC_TUNABLES=glibc.malloc.hugetlb=0`` turns this off.  Other C
    libraries and systems ignore the variable.
    """
    env = dict(os.environ if environ is None else environ)
    if sys.platform != "linux":
        return env
    tunables = env.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb=" not in tunables:
        env["GLIBC_TUNABLES"] = ":".join(filter(None, (tunables, HUGE_PAGES_TUNABLE)))
    return env


class Launcher:
    """Starts the engines of one pool from a kernelspec, through jupyter_client's managers."""

    def __init__(
        self,
        kernel_name: str,
        transport: str,
        transport_encryption: str,
        extra_arguments: list[str],
        stderr_dir: str,
    ) -> None:
        self.kernel_name = kernel_name
        self.transport = transport
        self.transport_encryption = transport_encryption
        self.extra_arguments = extra_arguments
        self.stderr_dir = stderr_dir
        #: Only the local provisioner takes the pool's stderr file (others start
        #: processes elsewhere, or pass their own).
        self.captures_stderr = provisioner_name(kernel_name) == "local-provisioner"

    def manager(self) -> AsyncKernelManager:
        """A kernel manager for a new engine, its connection file in the runtime directory
        (where ``jupyter console --existing kernel-<id>.json`` looks)."""
        runtime_dir = jupyter_runtime_dir()
        os.makedirs(runtime_dir, mode=0o700, exist_ok=True)
        connection_file = os.path.join(runtime_dir, f"kernel-{uuid.uuid4()}.json")
        manager = EngineManager(
            kernel_name=self.kernel_name,
            transport=self.transport,
            connection_file=connection_file,
        )
        if self.transport == "ipc":
            manager.ip = connection_file.removesuffix(".json") + "-ipc"
        return manager

    def stderr_path(self, engine_id: int) -> Path:
        """Where engine ``engine_id``'s stderr is kept (read back to explain a failed start)."""
        return Path(self.stderr_dir) / f"engine-{engine_id}.stderr"

    async def start(self, engine: Any) -> None:
        """Start an engine's process from its record's manager (not waiting for it to answer)."""
        manager = engine.manager
        arguments = [
            f"--ParallelKernel.engine_id={engine.id}",
            *ENGINE_ARGS,
            *self.extra_arguments,
        ]
        options: dict[str, Any] = {}
        if self.captures_stderr:
            # kept open for the engine's life: restarts reuse it, and its tail explains failures
            if engine.stderr is None:
                engine.stderr = open(engine.stderr_path, "ab")  # noqa: SIM115
            options["stderr"] = engine.stderr
        await manager.start_kernel(
            extra_arguments=arguments,
            env=engine_environment(),
            transport_encryption=self.transport_encryption,
            **options,
        )
        engine.connection_file = manager.connection_file
        self.take_clues(engine)

    def take_clues(self, engine: Any) -> None:
        """Note what will explain the death of the engine's process, which has just started."""
        stderr = engine.stderr_path if self.captures_stderr else None
        engine.clues = Clues.at_start(process_id(engine.manager), stderr)

    def failure(self, engine: Any, why: str) -> str:
        """The message of an engine that failed to start: why, and the tail of its stderr."""
        message = f"engine {engine.id} (kernelspec {self.kernel_name!r}) failed to start: {why}"
        if engine.stderr_path is not None and engine.stderr_path.exists():
            tail = engine.stderr_path.read_text(errors="replace").strip()[-4000:]
            if tail:
                message += f"\n--- its stderr ---\n{tail}"
        return message


#: Signals that a process gets from outside (a person, a batch system, the OOM killer),
#: unlike faults its own code raises (SIGSEGV, SIGABRT ...).
OUTSIDE_SIGNALS = frozenset({signal.SIGKILL, signal.SIGTERM, signal.SIGHUP, signal.SIGINT})


async def exit_reason(manager: AsyncKernelManager | None) -> tuple[str, bool, str | None]:
    """How an engine's process ended (its exit status or the signal that killed it),
    whether it ended by itself (exited, or a fault of its own such as SIGSEGV), and the
    name of the signal that killed it, if one did.

    A process that ends by itself did so running something, and so may have
    been running a task even if its report that it started had no time to
    leave the process.
    """
    provisioner = manager.provisioner if manager is not None else None
    code = await provisioner.poll() if provisioner is not None else None
    if code is None:
        return "its process exited", False, None
    if code < 0:
        try:
            killer = signal.Signals(-code)
        except ValueError:
            return f"its process was killed by signal {-code}", True, None
        name = killer.name
        return f"its process was killed by {name}", killer not in OUTSIDE_SIGNALS, name
    return f"its process exited with status {code}", True, None


def process_id(manager: AsyncKernelManager | None) -> int | None:
    """The pid of an engine process the pool started here (``None`` elsewhere)."""
    provisioner = manager.provisioner if manager is not None else None
    pid = getattr(provisioner, "pid", None)
    return pid if isinstance(pid, int) else None


def remove_sockets(manager: AsyncKernelManager) -> None:
    """Remove the ipc socket files of an engine that could not remove them (it was killed)."""
    if manager.transport != "ipc":
        return
    for path in glob.glob(glob.escape(manager.ip) + "-*"):
        with contextlib.suppress(OSError):
            os.remove(path)
