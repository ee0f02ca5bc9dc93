"""The task channel's socket: opened as the application opens its Jupyter sockets, closed
with its ipc file.

Both ways of starting the kernel use these: :class:`~.app.ParallelKernelApp`,
and a plain ``IPKernelApp`` whose kernel class is ParallelKernel.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import zmq

from ..protocol import ipc_path
from .compat import apply_curve_server_options, bind_socket

if TYPE_CHECKING:
    from ipykernel.kernelapp import IPKernelApp


def bind_task_socket(app: IPKernelApp, port: int = 0) -> tuple[zmq.Socket, int]:
    """Open the task channel's ROUTER as ``app`` opens its shell socket; return it and its port.

    Same context, address, transport and CurveZMQ keys as the application's
    Jupyter channels; ``port`` 0 picks a free one.
    """
    if app.transport == "ipc" and port <= 0:
        # ipc "ports" are file-name suffixes picked by counting up from 1; the
        # heartbeat's may not be bound yet, so start past every port of the connection
        ports = (app.shell_port, app.iopub_port, app.stdin_port, app.control_port, app.hb_port)
        port = max(ports) + 1
    socket = app.context.socket(zmq.ROUTER)
    socket.linger = 1000
    socket.router_handover = 1
    apply_curve_server_options(app, socket)
    port = bind_socket(app, socket, port)
    app.log.debug("task ROUTER Channel on port: %i", port)
    return socket, port


def close_task_socket(app: IPKernelApp, socket: zmq.Socket, port: int | None) -> None:
    """Close the task channel's socket (and remove its ipc file: ``app`` removes only its own)."""
    if socket.closed:
        return
    socket.close(linger=0)
    if app.transport == "ipc" and port:
        Path(ipc_path(app.ip, port)).unlink(missing_ok=True)
