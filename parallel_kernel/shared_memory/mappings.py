"""The segments this process maps: reading messages, and finding the segment a buffer is in.

See :mod:`parallel_kernel.shared_memory` for the model.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import weakref
from collections.abc import Sequence
from mmap import ACCESS_READ, mmap
from pathlib import Path
from typing import Any

from ..errors import DeserializationError
from .places import directory, holder_of_name, this_holder


class SharedMemoryError(DeserializationError):
    """A message refers to a segment that cannot be mapped here."""


#: The segments this process has mapped: name -> (address, size, mapping).
_mapped: dict[str, tuple[int, int, weakref.ref[mmap]]] = {}
_lock = threading.Lock()


class _PyBuffer(ctypes.Structure):
    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    ]


_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.argtypes = [ctypes.POINTER(_PyBuffer)]


def _address(obj: Any) -> int:
    """The address of the memory of a contiguous buffer (read-only ones too)."""
    view = _PyBuffer()
    _get_buffer(obj, ctypes.byref(view), 0)
    try:
        return view.buf or 0
    finally:
        _release_buffer(ctypes.byref(view))


def map_segment(name: str) -> mmap:
    """Map segment ``name`` (held by this process) read-only, and remember it."""
    with _lock:
        known = _mapped.get(name)
        mapping = known[2]() if known else None
        if mapping is not None:
            return mapping
    folder = directory()
    if folder is None or holder_of_name(name) != this_holder():
        raise SharedMemoryError(f"{name!r} is not a shared memory segment of this process")
    try:
        fd = os.open(folder / name, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        raise SharedMemoryError(
            f"the shared memory segment {name} cannot be opened ({exc.strerror}): "
            "its sender may have died before it was read"
        ) from None
    try:
        mapping = mmap(fd, os.fstat(fd).st_size, access=ACCESS_READ)
    finally:
        os.close(fd)
    with _lock:
        _mapped[name] = (_address(mapping), len(mapping), weakref.ref(mapping))
    weakref.finalize(mapping, _unmapped, folder / name, os.getpid())
    return mapping


def _unmapped(path: Path, pid: int) -> None:
    """The last view of a segment is gone: drop its name here (in the process that
    mapped it, not in a forked child, whose parent may still be using it)."""
    if os.getpid() != pid:
        return
    with _lock:
        _mapped.pop(path.name, None)
    with contextlib.suppress(OSError):
        path.unlink()


def mapped_at(frame: Any, nbytes: int) -> tuple[str, int] | None:
    """``(segment name, offset)`` if ``frame`` lies in a segment mapped here and covers
    at least half of it (a small view is copied rather than keep a large segment alive)."""
    with _lock:
        if not _mapped:
            return None
        entries = list(_mapped.items())
    try:
        start = _address(frame)
    except (BufferError, TypeError, ValueError):
        return None
    for name, (base, size, ref) in entries:
        if base <= start and start + nbytes <= base + size and ref() is not None:
            return (name, start - base) if 2 * nbytes >= size else None
    return None


def attach(content: dict[str, Any], buffers: Sequence[Any]) -> list[Any]:
    """``buffers`` with the frames that ``content["shared"]`` refers to as read-only
    views of their segments.  Raises :class:`SharedMemoryError` if one cannot be had."""
    refs = content.get("shared")
    frames = list(buffers)
    if refs is None:
        return frames
    if not isinstance(refs, list):
        raise SharedMemoryError(f"content 'shared' must be a list, got {type(refs).__name__}")
    for ref in refs:
        if (
            not isinstance(ref, list)
            or len(ref) != 4
            or not all(type(n) is int and n >= 0 for n in (ref[0], ref[2], ref[3]))
            or not isinstance(ref[1], str)
            or ref[0] >= len(frames)
        ):
            raise SharedMemoryError(
                "content 'shared' entries must be [frame index, segment, offset, size] "
                f"within the message's {len(frames)} frames, got {ref!r}"
            )
        index, name, offset, size = ref
        mapping = map_segment(name)
        if offset + size > len(mapping):
            raise SharedMemoryError(
                f"frame {index} lies past the end of shared memory segment {name} "
                f"({offset} + {size} > {len(mapping)} bytes)"
            )
        frames[index] = memoryview(mapping)[offset : offset + size]
    return frames


def receive(content: dict[str, Any], buffers: Sequence[Any]) -> tuple[dict[str, Any], list[Any]]:
    """:func:`attach` as a message arrives, so its segments are held (and removed
    with their views) even if it is never unpacked; a segment that cannot be
    mapped is left for the unpacking to report."""
    if "shared" not in content:
        return content, list(buffers)
    try:
        frames = attach(content, buffers)
    except SharedMemoryError:
        return content, list(buffers)
    return {k: v for k, v in content.items() if k != "shared"}, frames


def forget_all() -> None:
    """A forked child: the parent's mappings are not its own to pass on or remove."""
    _mapped.clear()


def is_mapped(name: str) -> bool:
    """Whether this process maps segment name ``name``."""
    with _lock:
        return name in _mapped
