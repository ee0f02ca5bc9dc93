"""Run a ParallelKernel as an engine of an ipyparallel controller.

``parallel-kernel ipengine [ipengine options]`` (or ``python -m
parallel_kernel.ipengine``) is ipyparallel's ``ipengine`` with this package's
kernel doing the work: it registers with a controller, and ipyparallel's
clients, views, schedulers, ``%px`` magics and launchers (local, MPI, SSH,
Slurm, PBS, LSF, HTCondor ...) use it like a stock engine.  Point a cluster's
launchers at it with their ``engine_cmd``::

    c.EngineLauncher.engine_cmd = ["python", "-m", "parallel_kernel.ipengine"]

ipyparallel has no option for the kernel class: its engine application
builds the kernel from the module-level name ``Kernel`` of
``ipyparallel.engine.app`` and keeps it in a trait typed for ipyparallel's own
kernel.  The adapter is exactly that: the name rebound to
:class:`EngineKernel`, and an ``IPEngine`` whose ``kernel`` trait accepts it.
It relies on those two names, so it is pinned to the ipyparallel versions
tested (``IPYPARALLEL_TESTED``).
"""

from __future__ import annotations

import sys
from typing import Any

from ipykernel.ipkernel import IPythonKernel

from .kernel import ParallelKernel

#: The ipyparallel releases this adapter is tested with (major, minor).
IPYPARALLEL_TESTED = ((9, 2),)


class EngineKernel(ParallelKernel):
    """A ParallelKernel that follows ipyparallel's engine conventions.

    Reply metadata carries the scheduler fields a stock engine always sets
    (the broadcast scheduler reads them even when the request had none), and
    ``shell.data_pub`` publishes ``ipyparallel.datapub.publish_data`` updates.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        from ipyparallel.engine.datapub import ZMQDataPublisher

        data_pub = self.shell.data_pub = ZMQDataPublisher(parent=self)
        self.shell.configurables.append(data_pub)
        data_pub.session = self.session
        data_pub.pub_socket = self.iopub_socket

    def init_metadata(self, parent: dict[str, Any]) -> dict[str, Any]:
        """Reply metadata with the scheduler fields a stock engine always sets."""
        metadata = super().init_metadata(parent)
        requested = parent.get("metadata")
        requested = requested if isinstance(requested, dict) else {}
        for key, default in (
            ("is_broadcast", False),
            ("is_coalescing", False),
            ("original_msg_id", ""),
            ("label", None),
        ):
            metadata[key] = requested.get(key, default)
        return metadata


def _check_version() -> None:
    """Warn (on stderr) when the installed ipyparallel is not a tested release."""
    import ipyparallel

    version = tuple(int(part) for part in ipyparallel.__version__.split(".")[:2])
    if version not in IPYPARALLEL_TESTED:
        tested = ", ".join(f"{major}.{minor}" for major, minor in IPYPARALLEL_TESTED)
        print(
            f"parallel_kernel.ipengine: ipyparallel {ipyparallel.__version__} is installed; "
            f"this adapter is tested with {tested}",
            file=sys.stderr,
        )


def main(argv: list[str] | None = None) -> None:
    """Start an ipyparallel engine whose kernel is an :class:`EngineKernel`."""
    try:
        from ipyparallel.engine import app
    except ImportError:
        sys.exit(
            'parallel-kernel ipengine needs ipyparallel: pip install "parallel-kernel[ipyparallel]"'
        )
    from traitlets import Instance, List

    _check_version()

    class ParallelEngine(app.IPEngine):
        """ipyparallel's engine application, holding any IPython kernel."""

        kernel = Instance(IPythonKernel, allow_none=True)
        classes = List([*app.IPEngine.class_traits()["classes"].default(), EngineKernel])

    app.Kernel = EngineKernel
    ParallelEngine.launch_instance(argv)


if __name__ == "__main__":
    main()
