"""The kernel application: ipykernel's ``IPKernelApp`` launching a ParallelKernel.

The application keeps ipykernel's name, so ``ipython_kernel_config.py`` and
every ``--IPKernelApp.*`` / ``--IPythonKernel.*`` option apply unchanged;
``--ParallelKernel.*`` options configure the parallel features.
"""

from __future__ import annotations

from ipykernel.kernelapp import IPKernelApp
from traitlets import Type

from .kernel import ParallelKernel


class ParallelKernelApp(IPKernelApp):
    """``IPKernelApp`` whose kernel is a :class:`~parallel_kernel.kernel.ParallelKernel`."""

    classes = [*IPKernelApp.classes, ParallelKernel]

    kernel_class = Type(
        ParallelKernel,
        klass="ipykernel.kernelbase.Kernel",
        help="The kernel class to run; must be a ParallelKernel for the parallel features.",
    ).tag(config=True)


def launch(argv: list[str] | None = None) -> None:
    """Run the kernel until it is shut down (``argv`` as for ``ipykernel``)."""
    ParallelKernelApp.launch_instance(argv=argv)
