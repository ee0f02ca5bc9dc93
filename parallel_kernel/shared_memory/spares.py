"""Segments a sender wrote before, written again: new memory is slow to write.

See :mod:`parallel_kernel.shared_memory` for the model.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import threading
import time
from mmap import mmap
from pathlib import Path
from typing import Any

from .places import new_name, this_holder

#: Bytes of written segments a process keeps to write again.
SPARE_BYTES = 1 << 30
#: Seconds a spare segment is kept unused.
SPARE_SECONDS = 30.0
#: Offsets of the frames in a segment are multiples of this (numpy's widest alignment).
ALIGN = 64
#: Largest write the kernel takes in one call.
_WRITE_MAX = 1 << 30
#: ``madvise`` advice that maps every page of a range writable at once (Linux 5.14).
_MADV_POPULATE_WRITE = 23
#: Bytes mapped in per ``madvise`` call.
_POPULATE_CHUNK = 16 << 20


def nbytes(frame: Any) -> int:
    """The size of a frame in bytes."""
    return len(frame) if type(frame) is bytes else memoryview(frame).nbytes


class Spares:
    """Segments this process wrote before, kept to be written again.

    Writing into new memory costs the kernel a page allocation per 4 KiB, which
    makes it several times slower than a copy into memory already there; so a
    sender keeps the segments it wrote (under a name of its own, mapped
    writable) and writes the next message into one that no one else holds any
    more (its only name is the sender's: receivers drop theirs when their last
    view goes).  At most :data:`SPARE_BYTES` are kept; a spare not used for
    :data:`SPARE_SECONDS` is dropped (by a timer thread, so an idle process
    holds none for long).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: path -> (writable mapping, last used)
        self._free: dict[Path, tuple[mmap, float]] = {}
        #: path -> its pages being mapped in (see :meth:`_prefault`)
        self._prefaulting: dict[Path, _Prefault] = {}
        self._timer: threading.Timer | None = None

    def write(self, folder: Path, frames: list[tuple[int, Any]]) -> tuple[Path, list[list[Any]]]:
        """Write ``frames`` (index, frame) into a segment; its path (a name of this
        process's) and the frames' ``[index, name, offset, size]`` (name left out)."""
        refs, total = [], 0
        for index, frame in frames:
            size = nbytes(frame)
            refs.append([index, "", total, size])
            total += -(-size // ALIGN) * ALIGN
        found = self._take(total)
        if found is None:
            path = new_name(folder, this_holder())
            mapping = _write_new(path, frames, refs, total)
            self._prefault(path, mapping)
        else:
            path, mapping = found
            self._prefaulted(path)
            for (_, frame), (_, _, offset, size) in zip(frames, refs, strict=True):
                mapping[offset : offset + size] = memoryview(frame).cast("B")
        self._give_back(path, mapping)
        return path, refs

    def _prefault(self, path: Path, mapping: mmap) -> None:
        """Map the new segment's pages into its writable mapping, ahead of its next use.

        Written with ``write(2)``, its pages exist but the mapping has none of
        them yet: the next message written through it would take a page fault
        per 4 KiB (slower than the copy itself), where ``madvise`` maps them
        in a few calls, while the engines read the segment.
        """
        prefault = _Prefault(mapping)
        with self._lock:
            self._prefaulting[path] = prefault

    def _prefaulted(self, path: Path) -> None:
        """Finish mapping ``path``'s pages in (before it is written or closed)."""
        with self._lock:
            prefault = self._prefaulting.pop(path, None)
        if prefault is not None:
            prefault.finish()

    def _take(self, size: int) -> tuple[Path, mmap] | None:
        """The smallest free spare of ``size`` to ``2 * size`` bytes that only this
        process still names, taken out of the free list."""
        with self._lock:
            now = time.monotonic()
            best = None
            for path, (mapping, used) in list(self._free.items()):
                if now - used > SPARE_SECONDS:
                    self._drop(path)
                elif (
                    size <= len(mapping) <= 2 * size
                    and (best is None or len(mapping) < len(self._free[best][0]))
                    and _only_mine(path)
                ):
                    best = path
            if best is None:
                return None
            mapping, _ = self._free.pop(best)
            return best, mapping

    def _give_back(self, path: Path, mapping: mmap) -> None:
        with self._lock:
            self._free[path] = (mapping, time.monotonic())
            total = sum(len(m) for m, _ in self._free.values())
            for old in sorted(self._free, key=lambda p: self._free[p][1]):
                if total <= SPARE_BYTES:
                    break
                total -= len(self._free[old][0])
                self._drop(old)
            if self._timer is None:
                self._expire_later()

    def _expire_later(self) -> None:
        self._timer = threading.Timer(SPARE_SECONDS, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        """Drop the spares not used for :data:`SPARE_SECONDS` (on a timer's thread)."""
        with self._lock:
            self._timer = None
            now = time.monotonic()
            for path, (_, used) in list(self._free.items()):
                if now - used >= SPARE_SECONDS:
                    self._drop(path)
            if self._free:
                self._expire_later()

    def _drop(self, path: Path) -> None:
        mapping, _ = self._free.pop(path)
        prefault = self._prefaulting.pop(path, None)
        if prefault is not None:
            prefault.stop()
        mapping.close()
        path.unlink(missing_ok=True)

    def clear(self) -> None:
        """Drop every spare (before this process ends)."""
        with self._lock:
            for path in list(self._free):
                self._drop(path)


def _only_mine(path: Path) -> bool:
    try:
        return os.stat(path).st_nlink == 1
    except OSError:
        return False


def _write_new(
    path: Path, frames: list[tuple[int, Any]], refs: list[list[Any]], total: int
) -> mmap:
    """Write ``frames`` into a new segment at ``path``, with ``write(2)`` (faster than
    through a mapping into memory not allocated yet); return a writable mapping of it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, total)
        for (_, frame), (_, _, at, _) in zip(frames, refs, strict=True):
            view = memoryview(frame).cast("B")
            while view:
                written = os.pwrite(fd, view[:_WRITE_MAX], at)
                view, at = view[written:], at + written
        return mmap(fd, total)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


class _Prefault:
    """Maps every page of a writable mapping in, a chunk at a time: on a thread of
    its own that runs when a CPU is idle (``SCHED_IDLE``: the transfers going on
    come first), and what is left by whoever needs the mapping next
    (:meth:`finish`).  A kernel without the advice: nothing happens."""

    def __init__(self, mapping: mmap) -> None:
        self._size = len(mapping)
        self._pages: Any = (ctypes.c_char * self._size).from_buffer(mapping)
        self._start = ctypes.addressof(self._pages)
        self._next = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._in_background, name="parallel_kernel-prefault", daemon=True
        )
        self._thread.start()

    def _in_background(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # this thread only
        self._populate()

    def finish(self) -> None:
        """Map in what is left, here; release the mapping (it may be written or closed)."""
        self._populate()
        self._thread.join()
        self._pages = None

    def stop(self) -> None:
        """Map in no more; release the mapping (it is about to be closed)."""
        with self._lock:
            self._next = self._size
        self._thread.join()
        self._pages = None

    def _populate(self) -> None:
        while True:
            with self._lock:
                offset = self._next
                if offset >= self._size:
                    return
                self._next = offset + _POPULATE_CHUNK
            failed = _libc().madvise(
                ctypes.c_void_p(self._start + offset),
                ctypes.c_size_t(min(_POPULATE_CHUNK, self._size - offset)),
                ctypes.c_int(_MADV_POPULATE_WRITE),
            )
            if failed:
                with self._lock:
                    self._next = self._size
                return


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


_spares = Spares()


def spares() -> Spares:
    """This process's spares."""
    return _spares


def forget_all() -> None:
    """A forked child: the parent's spares are not its own to write into or remove."""
    global _spares
    _spares = Spares()
