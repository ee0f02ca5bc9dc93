"""The former home of :class:`ParallelKernelApp` and :func:`launch`, kept so that code
importing them from here keeps working; they live in :mod:`parallel_kernel.kernel.app`."""

from .kernel.app import ParallelKernelApp, launch

__all__ = ["ParallelKernelApp", "launch"]
