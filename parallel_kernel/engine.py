"""Run a parallel kernel as an engine for pools on other hosts: ``parallel-kernel engine``.

An engine started by hand or by a batch system listens on an address of its
host and writes a connection file, task channel's port (``task_port``)
included; the file, copied to the client, is what
:meth:`parallel_kernel.Pool.connect` needs.  By default the engine encrypts
its sockets with CurveZMQ (a key pair in the connection file), since its
messages then cross a network; the file's signing key authenticates the client
either way.
"""

from __future__ import annotations

import asyncio
import atexit
import ipaddress
import json
import os
import signal
import socket
import sys
import uuid
from pathlib import Path
from typing import Any

import zmq
from jupyter_client.connect import write_connection_file
from tornado.ioloop import IOLoop

from .protocol import TASK_PORT_KEY

ENCRYPTIONS = ("curve", "none")


def prepare_connection_file(path: str | Path, ip: str, encryption: str = "curve") -> bool:
    """Write a connection file for an engine on ``ip`` unless ``path`` exists; True if written.

    The file gets free TCP ports on ``ip`` (picked here, on the engine's
    host), the task channel's among them, a fresh signing key and, with
    ``encryption="curve"``, a CurveZMQ key pair.  It is readable by its owner
    only.  An existing file is left as it is, so an engine restarted with the
    same file keeps its ports and keys.
    """
    if encryption not in ENCRYPTIONS:
        raise ValueError(f"encryption must be one of {ENCRYPTIONS}, got {encryption!r}")
    path = Path(path)
    if path.exists():
        return False
    _check_address(ip)
    keys = {}
    if encryption == "curve":
        if not zmq.has("curve"):
            raise ValueError("this libzmq has no CurveZMQ support; use --encryption none")
        public, secret = zmq.curve_keypair()
        keys = {"curve_publickey": public, "curve_secretkey": secret}
    path.parent.mkdir(parents=True, exist_ok=True)
    family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
    # held while jupyter_client picks the other ports, so that it cannot pick this one
    with socket.socket(family) as task_port_holder:
        task_port_holder.bind((ip, 0))
        keys[TASK_PORT_KEY] = task_port_holder.getsockname()[1]
        write_connection_file(
            str(path), ip=ip, key=str(uuid.uuid4()).encode(), transport="tcp", **keys
        )
    return True


def _check_address(ip: str) -> None:
    """Refuse an address this host cannot listen on, with the reason, before any kernel starts."""
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise ValueError(f"--ip must be an IP address of this host, got {ip!r}") from None
    context = zmq.Context()
    probe = context.socket(zmq.ROUTER)
    try:
        probe.bind_to_random_port(f"tcp://{ip}")
    except zmq.ZMQError as exc:
        raise ValueError(f"cannot listen on {ip}: {exc}") from None
    finally:
        probe.close(linger=0)
        context.term()


def _remove_on_sigterm(path: Path) -> None:
    """On SIGTERM (how batch systems stop jobs), remove the written file, then terminate.

    The handler is the main event loop's, not a bare ``signal.signal`` one: a
    signal sent to the process lands on any of the kernel's threads, and
    Python runs a bare handler only once the main thread wakes, which an idle
    kernel's never does.  The loop's wake-up socket is written whichever
    thread takes the signal.
    """
    loop = IOLoop.current().asyncio_loop  # the loop the kernel application runs
    loop.add_signal_handler(signal.SIGTERM, _remove_and_terminate, path, loop)


def _remove_and_terminate(path: Path, loop: asyncio.AbstractEventLoop) -> None:
    """Remove ``path``, then end the process as SIGTERM's default action does."""
    path.unlink(missing_ok=True)
    loop.remove_signal_handler(signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGTERM)


def _engine_app() -> Any:
    """The application of ``parallel-kernel engine`` (its singleton instance)."""
    from .kernel import ParallelKernelApp
    from .kernel.compat import remember_ports

    class EngineApp(ParallelKernelApp):
        """The kernel application, minus ipykernel's terminal banner.

        The banner names the file the kernel started from (a private copy, see
        :func:`run_engine`) and says Ctrl-C does not work, which is wrong for
        an engine; :func:`run_engine` prints its own line instead.
        """

        def log_connection_info(self) -> None:
            """Log the connection file (not print a banner), and note the ports as ipykernel."""
            self.log.info("connection file: %s", self.connection_file)
            remember_ports(self)

    return EngineApp.instance()


def run_engine(
    connection_file: str | Path,
    ip: str,
    *,
    encryption: str = "curve",
    engine_id: int = 0,
    kernel_args: list[str] | None = None,
) -> None:
    """Run a kernel on ``ip`` with ``connection_file``, say where it is, and serve until shut down.

    When the file does not exist yet, the kernel starts from a private copy
    and the complete file (task port included) appears at ``connection_file``
    in one step, once the kernel listens: a client or job script that waits
    for the file never reads half of it, nor connects too early.  Such a file
    is removed when the engine exits, also on SIGTERM (it holds the engine's
    keys); a file that was given is used as it is and kept.  The kernel binds
    its task channel to the file's ``task_port`` (a free port if the file has
    none: ``kernel_info`` tells it).
    """
    path = Path(connection_file).absolute()
    staging = path.with_name(f".{path.name}.{os.getpid()}.starting")
    written = prepare_connection_file(staging, ip, encryption) if not path.exists() else False
    used = staging if written else path
    task_port = json.loads(used.read_text()).get(TASK_PORT_KEY)
    app = _engine_app()
    try:
        app.initialize(
            [
                "-f",
                str(used),
                f"--ParallelKernel.engine_id={engine_id}",
                "--HistoryManager.hist_file=:memory:",
                *([f"--ParallelKernelApp.task_port={task_port}"] if task_port else []),
                *(kernel_args or []),
            ]
        )
        if written:
            if app.task_port != task_port:  # kernel_args chose another port
                info = json.loads(staging.read_text())
                staging.write_text(json.dumps({**info, TASK_PORT_KEY: app.task_port}, indent=1))
            os.replace(staging, path)
            app.connection_file = str(path)
            atexit.register(path.unlink, missing_ok=True)
            _remove_on_sigterm(path)
    finally:
        staging.unlink(missing_ok=True)
    info = json.loads(path.read_text())
    encrypted = "CurveZMQ" if info.get("curve_publickey") else "no encryption (signed only)"
    print(
        f"parallel-kernel engine {engine_id}: listening on {info['ip']} ({encrypted}); "
        f"connection file {path} (copy it to the client for Pool.connect; "
        "it is a password: keep it private)",
        file=sys.__stderr__,  # sys.stderr now goes to the kernel's clients
        flush=True,
    )
    app.start()
