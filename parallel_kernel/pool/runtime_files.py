"""The pool's files in the Jupyter runtime directory, and removing those of dead engines.

Each engine a pool starts has a connection file ``kernel-<id>.json`` there
and, on the ipc transport, socket files ``kernel-<id>-ipc-<n>`` (the task
channel's among them).  A pool that ends removes them; a client killed with
SIGKILL cannot, and its engines end soon after (a kernel exits when the
process that started it is gone) without removing them either.

:func:`clean` removes what such engines left, and never a file of a live
kernel.  A connection file counts as ours only if it carries
:data:`CLIENT_KEY`, the pid of the process whose pool started the engine,
and as dead only if both that process is gone and nothing accepts a
connection on the engine's heartbeat socket (the heartbeat is answered by a
thread of its own, even while a task runs).  A socket file left without its
connection file is removed only if nothing listens on it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from jupyter_core.paths import jupyter_runtime_dir

#: The key of a connection file that names the pid of the client that started the engine.
CLIENT_KEY = "parallel_kernel_client_pid"
#: Seconds a probe of a tcp heartbeat waits for the connection.
PROBE_TIMEOUT = 1.0

_SOCKET_FILE = re.compile(r"^(kernel-[^/]+)-ipc-\d+$")


class EngineManager(AsyncKernelManager):
    """A kernel manager whose connection file names the client process (see :func:`clean`)."""

    def write_connection_file(self, **kwargs: object) -> None:
        """Write the engine's connection file naming this process as its client, so that
        :func:`clean` can tell the files of a client that is gone."""
        super().write_connection_file(**{CLIENT_KEY: os.getpid()}, **kwargs)


def _process_runs(pid: int) -> bool:
    """Whether process ``pid`` exists (one of another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _accepts(family: int, address: str | tuple[str, int]) -> bool:
    """Whether something accepts a connection at ``address`` (refused or missing: no)."""
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.settimeout(PROBE_TIMEOUT)
        try:
            probe.connect(address)
        except OSError as exc:
            return exc.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    return True


def _heartbeat_answers(info: dict[str, object]) -> bool:
    """Whether the kernel of a connection file may still run (its heartbeat accepts)."""
    port = info.get("hb_port")
    ip = str(info.get("ip", ""))
    if not isinstance(port, int):
        return True
    if info.get("transport") == "ipc":
        return _accepts(socket.AF_UNIX, f"{ip}-{port}")
    return _accepts(socket.AF_INET, (ip or "127.0.0.1", port))


def _socket_files(stem: Path) -> list[Path]:
    return [p for p in stem.parent.glob(f"{stem.name}-ipc-*") if _SOCKET_FILE.match(p.name)]


def _remove(paths: list[Path], dry_run: bool) -> list[Path]:
    """Remove these files (or, for a dry run, only list those that exist); the removed."""
    if dry_run:
        return [p for p in paths if p.exists()]
    removed = []
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def _stale_engine(path: Path) -> bool:
    """Whether ``path`` is the connection file of one of our engines that no longer runs."""
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(info, dict):
        return False
    pid = info.get(CLIENT_KEY)
    if not isinstance(pid, int) or _process_runs(pid):
        return False
    return not _heartbeat_answers(info)


def clean(runtime_dir: str | os.PathLike[str] | None = None, dry_run: bool = False) -> list[Path]:
    """Remove the files of our engines that no longer run; return what was removed
    (with ``dry_run``, what would be)."""
    directory = Path(runtime_dir if runtime_dir is not None else jupyter_runtime_dir())
    if not directory.is_dir():
        return []
    removed = []
    for path in sorted(directory.glob("kernel-*.json")):
        if _stale_engine(path):
            stem = path.with_suffix("")
            removed += _remove([*_socket_files(stem), path], dry_run)
    for path in sorted(directory.glob("kernel-*-ipc-*")):
        match = _SOCKET_FILE.match(path.name)
        if match is None or (directory / f"{match.group(1)}.json").exists():
            continue
        if path.is_socket() and not _accepts(socket.AF_UNIX, str(path)):
            removed += _remove([path], dry_run)
    return removed
