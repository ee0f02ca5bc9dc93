"""parallel_kernel: a Jupyter kernel that is also an engine of a parallel task queue.

Importing this package is cheap and does not import ipykernel: the kernel lives
in :mod:`parallel_kernel.kernel`, the wire format in :mod:`parallel_kernel.serialize`.
"""

from ._version import __version__
from .errors import UnmetDependency

__all__ = ["UnmetDependency", "__version__"]
