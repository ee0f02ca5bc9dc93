"""The kernel application: ipykernel's ``IPKernelApp`` launching a ParallelKernel.

The application keeps ipykernel's name, so ``ipython_kernel_config.py`` and
every ``--IPKernelApp.*`` / ``--IPythonKernel.*`` option apply unchanged;
``--ParallelKernel.*`` options configure the parallel features.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ipykernel.kernelapp import IPKernelApp
from traitlets import Integer, Type

from .parallelkernel import ParallelKernel
from .taskchannel import bind_task_socket


class ParallelKernelApp(IPKernelApp):
    """``IPKernelApp`` whose kernel is a :class:`~parallel_kernel.kernel.ParallelKernel`."""

    classes = [*IPKernelApp.classes, ParallelKernel]

    kernel_class = Type(
        ParallelKernel,
        klass="ipykernel.kernelbase.Kernel",
        help="The kernel class to run; must be a ParallelKernel for the parallel features.",
    ).tag(config=True)

    task_port = Integer(
        0,
        help="Port of the task channel (0 picks a free one); see "
        "parallel_kernel.kernel.taskchannel.",
    ).tag(config=True)

    def init_sockets(self) -> None:
        """ipykernel's sockets, plus the task channel's ROUTER."""
        super().init_sockets()
        if self.transport == "ipc" and self.task_port <= 0:
            # ipc "ports" are file-name suffixes picked by counting up from 1; the
            # heartbeat's is not bound yet, so start past every port of the connection
            ports = (self.shell_port, self.stdin_port, self.control_port)
            self.task_port = max((*ports, self.iopub_port, self.hb_port)) + 1
        self.task_socket, self.task_port = bind_task_socket(self, self.task_port)
        self.log.debug("task ROUTER Channel on port: %i", self.task_port)

    def init_kernel(self) -> None:
        super().init_kernel()
        self.kernel.task_socket = self.task_socket
        self.kernel.task_port = self.task_port

    def close(self) -> None:
        """Close the task channel, then ipykernel's sockets (the context waits for all)."""
        channel = getattr(self.kernel, "task_channel", None) if self.kernel else None
        if channel is not None:
            channel.close()
        socket = getattr(self, "task_socket", None)
        if socket is not None and not socket.closed:
            socket.close(linger=0)
            if self.transport == "ipc":
                # whoever started the kernel removes the files of the standard ports only
                Path(f"{self.ip}-{self.task_port}").unlink(missing_ok=True)
        super().close()

    def write_connection_file(self, **kwargs: Any) -> None:
        """ipykernel's connection file, plus ``task_port``."""
        super().write_connection_file(**kwargs)
        path = Path(self.abs_connection_file)
        info = json.loads(path.read_text())
        if info.get("task_port") != self.task_port:
            info["task_port"] = self.task_port
            path.write_text(json.dumps(info, indent=1))


def launch(argv: list[str] | None = None) -> None:
    """Run the kernel until it is shut down (``argv`` as for ``ipykernel``)."""
    ParallelKernelApp.launch_instance(argv=argv)
