"""Exceptions that cross the wire, that tasks raise on purpose, and that the pool raises.

The pool's exceptions form one hierarchy under :class:`ParallelError`::

    ParallelError
    ├── RemoteError            the task raised on its engine (an exception not rebuilt here)
    │   ├── RemoteTraceback    the ``__cause__`` of a task's own exception: where it was raised
    │   └── TaskInterrupted    ... KeyboardInterrupt: the task was interrupted
    ├── TaskTimeout            the task ran longer than its timeout (also a TimeoutError)
    ├── EngineTimeout          engines did not answer an all-engine call in time (a TimeoutError)
    ├── TaskAborted            the engine answered "aborted" (an abort from another client)
    ├── EngineDied             the engine running the task died (also a BrokenProcessPool)
    ├── PoolBroken             the pool can no longer start any engine (also a BrokenProcessPool)
    ├── EngineStartError       an engine could not be started
    ├── DependencyError        a dependency can never be met
    ├── SerializationError     an object cannot be pickled (also a pickle.PicklingError)
    └── DeserializationError   frames cannot be unpickled (also a pickle.UnpicklingError)

A task's own exception is raised as itself, with a :class:`RemoteTraceback`
as its ``__cause__``.
"""

from __future__ import annotations

import contextlib
import pickle
import re
from concurrent.futures.process import BrokenProcessPool
from typing import Any

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class UnmetDependency(Exception):
    """Raised by a task to say "not here": this engine cannot run it.

    The kernel replies ``status: error`` with ``dependencies_met: false`` in the
    reply metadata, which tells a scheduler to run the task on another engine.
    """


class ParallelError(Exception):
    """Base class of the errors the pool raises for a task or an engine."""


class RemoteError(ParallelError):
    """A task raised an exception on its engine.

    ``str(error)`` shows the remote traceback.  The remote exception is
    reachable as ``error.original`` (the exception object itself, when it
    could be pickled and its class imported here; otherwise ``None``), and
    always as ``ename`` / ``evalue`` / ``traceback`` (the lines IPython
    formatted on the engine, colours included).
    """

    def __init__(
        self,
        ename: str,
        evalue: str,
        traceback: list[str],
        engine_id: int | None = None,
        original: BaseException | None = None,
    ) -> None:
        self.ename = ename
        self.evalue = evalue
        self.traceback = list(traceback)
        self.engine_id = engine_id
        self.original = original
        super().__init__(ename, evalue)

    def render_traceback(self) -> str:
        """The remote traceback as plain text (ANSI colours removed)."""
        return _ANSI.sub("", "\n".join(line.rstrip("\n") for line in self.traceback))

    def __str__(self) -> str:
        where = f" on engine {self.engine_id}" if self.engine_id is not None else ""
        header = f"{self.ename}: {self.evalue}" if self.evalue else self.ename
        body = self.render_traceback()
        return f"{header} (raised{where})\n{body}" if body else f"{header} (raised{where})"

    def _render_traceback_(self) -> list[str]:
        """IPython shows the coloured remote traceback for an uncaught RemoteError."""
        return self.traceback or [str(self)]

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.ename, self.evalue, self.traceback, self.engine_id, None)


class RemoteTraceback(RemoteError):
    """Where a task's exception was raised: its engine and remote traceback.

    :func:`rebuilt` attaches one as the ``__cause__`` of the task's own
    exception, so an uncaught exception prints the remote traceback (source
    lines included) above the local one.  ``tb`` is that traceback as plain
    text, as the standard library's ``traceback`` module formats it on the
    engine (or, from a kernel that does not send it, IPython's lines without
    colours); ``str()`` shows it.
    """

    def __init__(
        self,
        ename: str,
        evalue: str,
        traceback: list[str],
        engine_id: int | None = None,
        tb: str | None = None,
    ) -> None:
        super().__init__(ename, evalue, traceback, engine_id)
        self.tb = tb or self.render_traceback()

    def __str__(self) -> str:
        where = f"engine {self.engine_id}" if self.engine_id is not None else "its engine"
        return f"the task raised on {where}:\n{self.tb.rstrip()}"

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.ename, self.evalue, self.traceback, self.engine_id, self.tb)


def rebuilt(remote: RemoteError, exception: BaseException, tb: str | None = None) -> BaseException:
    """The task's own ``exception``, with ``remote``'s traceback as its ``__cause__``.

    ``tb`` is the plain-text traceback, when the engine sent one.  ``engine_id``
    is set on the exception too, when it takes attributes.
    """
    cause = RemoteTraceback(remote.ename, remote.evalue, remote.traceback, remote.engine_id, tb)
    exception.__cause__ = cause
    with contextlib.suppress(AttributeError, TypeError):  # a class with __slots__ ...
        exception.engine_id = remote.engine_id  # type: ignore[attr-defined]
    return exception


class TaskInterrupted(RemoteError):
    """The task was interrupted on its engine (it ended with KeyboardInterrupt)."""


class ParallelCellError(ParallelError):
    """Code run on several engines (``%px``) failed on some of them.

    ``errors`` maps each failed engine's id to its error (a
    :class:`RemoteError` with the engine's traceback).  In a notebook the
    tracebacks were shown with the engines' output already, so this shows
    one line per failed engine.
    """

    def __init__(self, errors: dict[int, BaseException]) -> None:
        self.errors = dict(sorted(errors.items()))
        super().__init__(self._summary())

    def _summary(self) -> str:
        count = len(self.errors)
        lines = [f"{count} engine{'s' if count > 1 else ''} raised an exception:"]
        for engine_id, error in self.errors.items():
            if isinstance(error, RemoteError):
                what = f"{error.ename}: {error.evalue}" if error.evalue else error.ename
            else:
                what = f"{type(error).__name__}: {error}"
            lines.append(f"  engine {engine_id}: {what}")
        return "\n".join(lines)

    def _render_traceback_(self) -> list[str]:
        """IPython shows the summary only: each traceback was shown with its engine's output."""
        return [f"{type(self).__name__}: {self}"]

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.errors,)


class TaskTimeout(ParallelError, TimeoutError):
    """The task ran longer than its ``timeout`` and was interrupted."""


class EngineTimeout(ParallelError, TimeoutError):
    """Engines did not answer in time (``broadcast``, ``push``, ``pull``, ``execute``,
    ``clear``, ``interrupt``, ``connect``); ``engine_ids`` names them."""

    def __init__(self, message: str, engine_ids: list[int]) -> None:
        super().__init__(message)
        self.engine_ids = list(engine_ids)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (str(self), self.engine_ids)


class TaskAborted(ParallelError):
    """The engine answered the task ``aborted`` without running it."""


class EngineDied(ParallelError, BrokenProcessPool):
    """The engine running the task died before it replied.

    Also a ``BrokenProcessPool``, which is what ``ProcessPoolExecutor`` raises
    for a dead worker, so code written for it catches this too; the pool
    itself keeps serving (it restarts the engines it started).

    What is known of the death, for an engine the pool started on this
    machine (the message says it too): ``engine_id``; ``reason``, how its
    process ended; ``stderr``, the last lines it wrote to standard error;
    ``fault``, the Python stack of every thread at a fatal signal (SIGSEGV,
    SIGABRT ...); ``oom``, how the kernel's out-of-memory killer was found
    to have killed it (``""`` if it was not).
    """

    def __init__(
        self,
        message: str,
        *,
        engine_id: int | None = None,
        reason: str = "",
        stderr: str = "",
        fault: str = "",
        oom: str = "",
    ) -> None:
        super().__init__(message)
        self.engine_id = engine_id
        self.reason = reason
        self.stderr = stderr
        self.fault = fault
        self.oom = oom


class PoolBroken(ParallelError, BrokenProcessPool):
    """The pool can no longer start any engine: each one died for good or its
    ``initializer`` failed.  Pending tasks fail with it and so does every later
    ``submit``; :attr:`Pool.broken <parallel_kernel.Pool.broken>` says why."""


class EngineStartError(ParallelError):
    """An engine could not be started; the message includes its standard error."""


class DependencyError(ParallelError):
    """A task's dependencies can never be met (a failed prerequisite, no eligible engine)."""


class SerializationError(ParallelError, pickle.PicklingError):
    """An object could not be turned into frames (it is not picklable).

    Its ``__cause__`` is what pickling raised (the object's own ``__reduce__``
    error, for instance).
    """


class DeserializationError(ParallelError, pickle.UnpicklingError):
    """Frames could not be turned back into an object.

    ``part`` names what was being unpacked (``"function"``, ``"arguments"``,
    ``"result"`` or ``"message"``), so an error can say which piece is bad;
    its ``__cause__`` is what unpickling raised.
    """

    def __init__(self, message: str, part: str = "message") -> None:
        super().__init__(message)
        self.part = part

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (str(self), self.part)
