"""Large buffers between processes of one host through shared memory instead of sockets.

A message's frames of at least :data:`SHARED_MIN` bytes are written into one
*segment*, a file in a private directory in memory (see :func:`directory`),
and the message carries, in place of each, an empty frame and a reference
(content ``"shared"``: ``[frame index, segment name, offset, size]``).  The
receiver maps the segment read-only and gets views of it: one copy on the
sending side, none on the receiving side.

**Who removes a segment.**  Each name of a segment belongs to one process, its
*holder*, whose pid and start time begin the name: the receiver of the
message.  The holder keeps the name while its mapping lives (so it can pass
the same memory on: a buffer that is a view of a mapped segment is sent again
by giving the next receiver a hard link, with no copy) and removes it when
the last view is gone.  The memory itself is freed by the kernel when no name
and no mapping is left.  A name whose holder has died is removed by whoever
sweeps next (:func:`sweep`: pools and engines at start and stop, a pool when
an engine dies, an engine whose client has died), so a ``kill -9`` on either
side leaks nothing for longer than that.

**Where.**  Sender and receiver must see the same directory: a process says
where it reads shared memory with its *place* (:func:`place`: boot id, the
directory's device and inode, its pid and start time), and a sender uses
shared memory only toward a place that is the same directory on the same
boot of the same machine (:func:`holder_at`); elsewhere frames go over the
socket as before.  Only Linux has what this needs (``/proc``); elsewhere
:func:`place` is ``None`` and nothing changes.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import secrets
import stat
import threading
import time
import weakref
from collections.abc import Sequence
from functools import cache
from mmap import ACCESS_READ, mmap
from pathlib import Path
from typing import Any

from .errors import DeserializationError

__all__ = [
    "SHARED_MIN",
    "SharedMemoryError",
    "attach",
    "directory",
    "discard",
    "hold",
    "holder_at",
    "offload",
    "place",
    "sweep",
    "toward",
]

log = logging.getLogger(__name__)

#: Frames of at least this many bytes go through shared memory.
SHARED_MIN = 1 << 20
#: Environment variable naming the directory of segments (else see :func:`directory`).
DIRECTORY_ENV = "PARALLEL_KERNEL_SHARED_DIR"
#: Offsets of the frames in a segment are multiples of this (numpy's widest alignment).
_ALIGN = 64
#: Bytes of written segments a process keeps to write again (see ``_Spares``).
SPARE_BYTES = 1 << 30
#: Seconds a spare segment is kept unused.
SPARE_SECONDS = 30.0
#: Largest write the kernel takes in one call.
_WRITE_MAX = 1 << 30
_NAME = re.compile(r"^(\d+)\.(\d+)-[0-9a-f]{32}$")


class SharedMemoryError(DeserializationError):
    """A message refers to a segment that cannot be mapped here."""


# ---------------------------------------------------------------------- where


def directory() -> Path | None:
    """The directory of segments, made private (0700) if new; ``None`` if there is none.

    ``$PARALLEL_KERNEL_SHARED_DIR`` if set; else ``parallel_kernel`` in
    ``$XDG_RUNTIME_DIR`` (the user's private runtime directory, in memory);
    else ``/dev/shm/parallel_kernel-<uid>``.  A directory that another user
    owns or that others may read is refused (``None``, with a warning).
    """
    return _directory(os.environ.get(DIRECTORY_ENV), os.environ.get("XDG_RUNTIME_DIR"))


@cache
def _directory(chosen: str | None, runtime: str | None) -> Path | None:
    if chosen:
        path = Path(chosen)
    elif runtime and _in_memory(runtime):
        path = Path(runtime) / "parallel_kernel"
    elif _in_memory("/dev/shm"):
        path = Path(f"/dev/shm/parallel_kernel-{os.getuid()}")
    else:
        return None
    try:
        path.mkdir(mode=0o700, parents=bool(chosen), exist_ok=True)
        info = path.lstat()
    except OSError as exc:
        log.warning("No shared memory: cannot make %s: %s", path, exc)
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        log.warning(
            "No shared memory: %s must be a directory of this user that others cannot open "
            "(mode %o, owner %d)",
            path,
            stat.S_IMODE(info.st_mode),
            info.st_uid,
        )
        return None
    return path


def _in_memory(path: str) -> bool:
    """Whether ``path`` is on a file system in memory (tmpfs), per ``/proc/self/mounts``."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return False
    best, kind = "", ""
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind in ("tmpfs", "ramfs")


def _start_time(pid: int) -> int | None:
    """The start time of process ``pid`` (clock ticks after boot), ``None`` if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(text.rsplit(")", 1)[1].split()[19])


@cache
def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _me() -> str:
    """This process as a holder: ``<pid>.<start time>``."""
    return _holder_of(os.getpid())


@cache
def _holder_of(pid: int) -> str:
    return f"{pid}.{_start_time(pid)}"


def place() -> str | None:
    """Where this process reads shared memory (sent to those who send it large
    buffers), or ``None`` if it cannot."""
    path = directory()
    if path is None:
        return None
    try:
        info = path.stat()
        return f"{_boot_id()}/{info.st_dev}/{info.st_ino}/{_me()}"
    except (OSError, ValueError, IndexError):
        return None


def holder_at(remote: Any) -> str | None:
    """The holder of segments for the process at place ``remote``, if it shares
    this process's directory (same machine, same boot, same directory); else ``None``."""
    if not isinstance(remote, str):
        return None
    mine = place()
    if mine is None:
        return None
    fields = remote.split("/")
    if len(fields) != 4 or fields[:3] != mine.split("/")[:3]:
        return None
    return fields[3] if re.fullmatch(r"\d+\.\d+", fields[3]) else None


# ---------------------------------------------------------------------- mappings

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


def _map(name: str) -> mmap:
    """Map segment ``name`` (held by this process) read-only, and remember it."""
    with _lock:
        known = _mapped.get(name)
        mapping = known[2]() if known else None
        if mapping is not None:
            return mapping
    match = _NAME.match(name)
    folder = directory()
    if match is None or folder is None or f"{match[1]}.{match[2]}" != _me():
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


def _mapped_at(frame: Any, nbytes: int) -> tuple[str, int, int] | None:
    """``(name, offset, size)`` if ``frame`` lies in a segment mapped here and covers
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
            return (name, size, start - base) if 2 * nbytes >= size else None
    return None


# ---------------------------------------------------------------------- sending


def _nbytes(frame: Any) -> int:
    return len(frame) if type(frame) is bytes else memoryview(frame).nbytes


def offload(
    content: dict[str, Any], buffers: Sequence[Any], holder: str
) -> tuple[dict[str, Any], list[Any]]:
    """``content`` and ``buffers`` with every large frame moved to shared memory,
    for the process ``holder`` (see :func:`holder_at`) to map.

    Frames that are views of a segment mapped here are passed on as a new name
    of that segment; the others are copied into one new segment.  If shared
    memory fails (the directory is full), the frames stay as they are.
    """
    large = [i for i, frame in enumerate(buffers) if _nbytes(frame) >= SHARED_MIN]
    folder = directory()
    if not large or folder is None:
        return content, list(buffers)
    refs: list[list[Any]] = []
    copies: list[tuple[int, Any]] = []
    made: list[Path] = []
    try:
        for index in large:
            frame = buffers[index]
            found = _mapped_at(frame, _nbytes(frame))
            link = _new_name(folder, holder)
            try:
                if found is None:
                    raise FileNotFoundError
                os.link(folder / found[0], link)
            except FileNotFoundError:  # not mapped here, or its name is gone: copied
                copies.append((index, frame))
                continue
            made.append(link)
            refs.append([index, link.name, found[2], _nbytes(frame)])
        if copies:
            segment, written = _spares.write(folder, copies)
            link = _new_name(folder, holder)
            os.link(segment, link)
            made.append(link)
            refs.extend([index, link.name, offset, size] for index, _, offset, size in written)
    except OSError as exc:
        for path in made:
            path.unlink(missing_ok=True)
        log.warning("Large buffers go over the socket: shared memory failed: %s", exc)
        return content, list(buffers)
    frames = list(buffers)
    for index, *_ in refs:
        frames[index] = b""
    return {**content, "shared": sorted(refs)}, frames


def toward(
    remote: Any, content: dict[str, Any], buffers: Sequence[Any]
) -> tuple[dict[str, Any], list[Any]]:
    """:func:`offload` for the process at place ``remote`` if it shares this
    process's directory; else ``content`` and ``buffers`` as they are."""
    holder = holder_at(remote) if remote is not None else None
    if holder is None:
        return content, list(buffers)
    return offload(content, buffers, holder)


def _new_name(folder: Path, holder: str) -> Path:
    return folder / f"{holder}-{secrets.token_hex(16)}"


class _Spares:
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
        self._timer: threading.Timer | None = None

    def write(self, folder: Path, frames: list[tuple[int, Any]]) -> tuple[Path, list[list[Any]]]:
        """Write ``frames`` (index, frame) into a segment; its path (a name of this
        process's) and the frames' ``[index, name, offset, size]`` (name left out)."""
        refs, total = [], 0
        for index, frame in frames:
            size = _nbytes(frame)
            refs.append([index, "", total, size])
            total += -(-size // _ALIGN) * _ALIGN
        found = self._take(total)
        if found is None:
            path = _new_name(folder, _me())
            mapping = _write_new(path, frames, refs, total)
        else:
            path, mapping = found
            for (_, frame), (_, _, offset, size) in zip(frames, refs, strict=True):
                mapping[offset : offset + size] = memoryview(frame).cast("B")
        self._give_back(path, mapping)
        return path, refs

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


_spares = _Spares()


def _forked() -> None:
    """A forked child: the segments its parent maps and keeps are not its own to pass
    on, write into or remove."""
    global _spares
    _spares = _Spares()
    _mapped.clear()


os.register_at_fork(after_in_child=_forked)


def hold(buffers: Sequence[Any]) -> list[Any]:
    """``buffers`` with the large frames copied into a segment this process maps,
    as views of it: sent to several processes on this host, they all get the
    same memory (one copy in all).  Unchanged if there is no shared memory here."""
    me = _me() if directory() is not None else None
    if me is None:
        return list(buffers)
    content, frames = offload({}, buffers, me)
    if "shared" not in content:
        return frames
    try:
        return attach(content, frames)
    except SharedMemoryError:
        return list(buffers)


def discard(content: Any) -> None:
    """Remove the segment names of a message that will not be read (or was not sent)."""
    folder = directory()
    refs = content.get("shared") if isinstance(content, dict) else None
    if folder is None or not isinstance(refs, list):
        return
    for ref in refs:
        name = ref[1] if isinstance(ref, list) and len(ref) == 4 else None
        if isinstance(name, str) and _NAME.match(name) and name not in _mapped:
            (folder / name).unlink(missing_ok=True)


# ---------------------------------------------------------------------- receiving


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
        mapping = _map(name)
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


# ---------------------------------------------------------------------- cleaning up


def sweep(ending: bool = False) -> int:
    """Remove the segment names whose holder has died; with ``ending`` (this process
    is about to end), this process's own names too (mappings outlive their names).
    Return how many were removed."""
    folder = directory()
    if folder is None:
        return 0
    if ending:
        _spares.clear()
    me = _me()
    removed = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for name in names:
        match = _NAME.match(name)
        if match is None:
            continue
        if f"{match[1]}.{match[2]}" == me:
            gone = ending
        else:
            gone = str(_start_time(int(match[1]))) != match[2]
        if gone:
            with contextlib.suppress(OSError):
                (folder / name).unlink()
                removed += 1
    return removed
