"""The kernel application: ipykernel's ``IPKernelApp`` launching a ParallelKernel.

The application keeps ipykernel's name, so ``ipython_kernel_config.py`` and
every ``--IPKernelApp.*`` / ``--IPythonKernel.*`` option apply unchanged;
``--ParallelKernel.*`` options configure the parallel features.
"""

from __future__ import annotations

from typing import Any

from ipykernel.kernelapp import IPKernelApp
from ipykernel.parentpoller import ParentPollerUnix
from traitlets import Integer, Type

from .parallelkernel import ParallelKernel
from .parent_watch import ParentWatch
from .tasksocket import bind_task_socket, close_task_socket


class ParallelKernelApp(IPKernelApp):
    """``IPKernelApp`` whose kernel is a :class:`~parallel_kernel.kernel.ParallelKernel`.

    The task channel's port is advertised in ``kernel_info`` only: the
    connection file the kernel starts from belongs to whoever wrote it (a
    kernel manager, ``parallel-kernel engine``) and is left as ipykernel
    leaves it.
    """

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

    #: The task channel's ROUTER, bound in ``init_sockets``.
    task_socket: Any = None

    def init_sockets(self) -> None:
        """ipykernel's sockets, plus the task channel's ROUTER."""
        super().init_sockets()
        self.task_socket, self.task_port = bind_task_socket(self, self.task_port)

    def init_poller(self) -> None:
        """ipykernel's watch of the parent process, replaced by one that cleans up first."""
        super().init_poller()
        if isinstance(self.poller, ParentPollerUnix):
            self.poller = ParentWatch(self.poller.parent_pid)

    def init_kernel(self) -> None:
        """ipykernel's kernel, given the task channel's socket."""
        super().init_kernel()
        self.kernel.task_socket = self.task_socket
        self.kernel.task_port = self.task_port

    def close(self) -> None:
        """Close the task channel, then ipykernel's sockets (the context waits for all)."""
        if isinstance(self.kernel, ParallelKernel):
            self.kernel.close_task_channel(self)
        elif self.task_socket is not None:
            close_task_socket(self, self.task_socket, self.task_port)
        super().close()


def launch(argv: list[str] | None = None) -> None:
    """Run the kernel until it is shut down (``argv`` as for ``ipykernel``)."""
    ParallelKernelApp.launch_instance(argv=argv)
