"""The former home of ipyparallel's apply format, kept so that code importing it from here
keeps working; it lives in :mod:`parallel_kernel.kernel.ipyparallel_format`."""

from .kernel.ipyparallel_format import pack_result, unpack_apply

__all__ = ["pack_result", "unpack_apply"]
