"""Where segments live, and who may read them: the directory, places and holders.

See :mod:`parallel_kernel.shared_memory` for the model.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import stat
from functools import cache
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Environment variable naming the directory of segments (else see :func:`directory`).
DIRECTORY_ENV = "PARALLEL_KERNEL_SHARED_DIR"
#: A segment's name: its holder (``<pid>.<start time>``) and 32 hex digits.
NAME = re.compile(r"^(\d+)\.(\d+)-[0-9a-f]{32}$")


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


def start_time(pid: int) -> int | None:
    """The start time of process ``pid`` (clock ticks after boot), ``None`` if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(text.rsplit(")", 1)[1].split()[19])


@cache
def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def this_holder() -> str:
    """This process as a holder: ``<pid>.<start time>``."""
    return _holder_of(os.getpid())


@cache
def _holder_of(pid: int) -> str:
    return f"{pid}.{start_time(pid)}"


def place() -> str | None:
    """Where this process reads shared memory (sent to those who send it large
    buffers), or ``None`` if it cannot."""
    path = directory()
    if path is None:
        return None
    try:
        info = path.stat()
        return f"{_boot_id()}/{info.st_dev}/{info.st_ino}/{this_holder()}"
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


def new_name(folder: Path, holder: str) -> Path:
    """A new segment name in ``folder`` for ``holder``."""
    return folder / f"{holder}-{secrets.token_hex(16)}"


def holder_of_name(name: str) -> str | None:
    """The holder a segment name begins with, or ``None`` if it is not a segment's name."""
    match = NAME.match(name)
    return f"{match[1]}.{match[2]}" if match else None


def alive(holder: str) -> bool:
    """Whether the process ``holder`` (``<pid>.<start time>``) still runs."""
    pid, start = holder.split(".")
    return str(start_time(int(pid))) == start
