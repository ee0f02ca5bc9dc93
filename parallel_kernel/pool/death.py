"""Why an engine died: what its process left behind, beyond how it ended.

For an engine the pool started on this machine, :class:`Clues` are taken when
its process starts (where its standard error stands, the out-of-memory kill
counters that cover it) and read again when it dies:

* the last lines it wrote to standard error;
* for a fatal signal (SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL), the Python
  stack of every thread, which engines dump with ``faulthandler``;
* for a SIGKILL, whether the kernel's out-of-memory killer sent it.  Linux
  says so in three places, tried in this order: the kernel log
  (``/dev/kmsg``, readable by root, names the killed pid), the ``oom_kill``
  count of the engine's memory cgroup (v2 ``memory.events``, v1
  ``memory.oom_control``), and the system-wide count in ``/proc/vmstat``.
  The first is certain; a count that rose while the engine ran makes it
  probable, and the message says which one told.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EngineDied

#: How many of the last lines of standard error a death report shows.
STDERR_LINES = 20
#: Signals after which faulthandler has written the threads' stacks.
FAULTS = frozenset({"SIGSEGV", "SIGABRT", "SIGBUS", "SIGFPE", "SIGILL"})
#: Where faulthandler's dump starts.
_FAULT_START = re.compile(r"^Fatal Python error: .*$", re.M)


@dataclass(frozen=True)
class Cause:
    """What is known of an engine's death besides how its process ended."""

    #: The last lines it wrote to standard error since it (re)started (before a fault dump).
    stderr: str = ""
    #: faulthandler's dump of every thread's Python stack, for a fatal signal.
    fault: str = ""
    #: How the out-of-memory killer was found to have killed it, or ``""``.
    oom: str = ""

    def details(self) -> str:
        """The cause as text to append to a death's message (``""`` if nothing is known)."""
        parts = []
        if self.oom:
            parts.append(f"it was {self.oom}")
        if self.stderr:
            parts.append(f"--- the last lines of its stderr ---\n{self.stderr}")
        if self.fault:
            parts.append(f"--- its Python stacks at the fault ---\n{self.fault}")
        return "\n".join(parts)


def engine_died(engine_id: int, why: str, cause: Cause | None = None) -> EngineDied:
    """The error of a task lost with engine ``engine_id``: how it ended, and the cause."""
    cause = cause or Cause()
    details = cause.details()
    message = f"engine {engine_id} died ({why})" + (f"\n{details}" if details else "")
    return EngineDied(
        message,
        engine_id=engine_id,
        reason=why,
        stderr=cause.stderr,
        fault=cause.fault,
        oom=cause.oom,
    )


@dataclass
class Clues:
    """What to compare against when an engine's process dies (taken when it starts)."""

    pid: int | None
    stderr_path: Path | None
    stderr_offset: int = 0
    oom_counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def at_start(cls, pid: int | None, stderr_path: Path | None) -> Clues:
        """The clues of a process that has just started."""
        offset = 0
        if stderr_path is not None:
            with contextlib.suppress(OSError):
                offset = stderr_path.stat().st_size
        return cls(pid, stderr_path, offset, _oom_counts(pid))

    def settled(self) -> None:
        """The engine answers: count again, in the cgroup it runs in now (a launcher may
        have moved it into one after it started)."""
        self.oom_counts = _oom_counts(self.pid)

    def cause(self, signal_name: str | None) -> Cause:
        """What the process left behind, having been killed by ``signal_name`` (or exited)."""
        written = self._stderr()
        fault = ""
        found = _FAULT_START.search(written) if signal_name in FAULTS else None
        if found is not None:
            written, fault = written[: found.start()], written[found.start() :].strip()
        stderr = "\n".join(written.rstrip().splitlines()[-STDERR_LINES:])
        oom = self._oom() if signal_name == "SIGKILL" else ""
        return Cause(stderr=stderr, fault=fault, oom=oom)

    def _stderr(self) -> str:
        if self.stderr_path is None:
            return ""
        try:
            with open(self.stderr_path, "rb") as stream:
                stream.seek(self.stderr_offset)
                return stream.read().decode(errors="replace")
        except OSError:
            return ""

    def _oom(self) -> str:
        if self.pid is not None and _kernel_log_says_oom(self.pid):
            return "killed by the kernel's OOM killer (the kernel log names its pid)"
        now = _oom_counts(None, self.oom_counts)
        for source, before in self.oom_counts.items():
            if now.get(source, before) > before:
                if source == "vmstat":
                    return (
                        "probably killed by the kernel's OOM killer (the system's OOM-kill "
                        "count in /proc/vmstat rose while it ran)"
                    )
                return (
                    "killed by the kernel's OOM killer (the OOM-kill count of its memory "
                    f"cgroup rose while it ran: {source})"
                )
        return ""


def _oom_counts(pid: int | None, paths: dict[str, int] | None = None) -> dict[str, int]:
    """The OOM-kill counters covering ``pid``: its memory cgroup's and the system's.

    With ``paths`` (the counters found at the start), the same counters are
    read again (the process is gone, so its cgroup cannot be looked up).
    """
    sources = list(paths) if paths is not None else [*_cgroup_counters(pid), "vmstat"]
    counts = {}
    for source in sources:
        count = _read_count(source)
        if count is not None:
            counts[source] = count
    return counts


def _cgroup_counters(pid: int | None) -> list[str]:
    """The files holding the ``oom_kill`` count of ``pid``'s memory cgroup (v2 and v1)."""
    if pid is None:
        return []
    try:
        membership = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return []
    found = []
    for line in membership.splitlines():
        _, controllers, path = line.split(":", 2)
        relative = path.lstrip("/")
        if controllers == "":
            for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
                found.append(os.path.join(root, relative, "memory.events"))
        elif "memory" in controllers.split(","):
            found.append(os.path.join("/sys/fs/cgroup/memory", relative, "memory.oom_control"))
    return [path for path in found if os.path.isfile(path)]


def _read_count(source: str) -> int | None:
    """The ``oom_kill`` count in a cgroup file, or in ``/proc/vmstat`` for ``"vmstat"``."""
    path = "/proc/vmstat" if source == "vmstat" else source
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    found = re.search(r"^oom_kill (\d+)$", text, re.M)
    return int(found.group(1)) if found else None


def _kernel_log_says_oom(pid: int) -> bool:
    """Whether the kernel log (``/dev/kmsg``, root only) records an OOM kill of ``pid``."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    killed = re.compile(rf"(Killed process {pid} |oom-kill:.*\bpid={pid}\b)")
    try:
        while True:
            try:
                record = os.read(fd, 8192)
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # a record was overwritten while reading: go on
                    continue
                return False  # EAGAIN: the end of the log
            if killed.search(record.decode(errors="replace")):
                return True
    finally:
        os.close(fd)
