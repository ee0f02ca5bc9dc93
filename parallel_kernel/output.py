"""The former home of the pool's output forwarding, kept so that code importing it from
here keeps working; it lives in :mod:`parallel_kernel.pool.output`."""

from .pool.output import OutputForwarder, display_outputs, origin, shareable

__all__ = ["OutputForwarder", "display_outputs", "origin", "shareable"]
