"""Futures of pool tasks, and ``wait`` / ``as_completed`` with progress bars.

A :class:`TaskFuture` is a ``concurrent.futures.Future``: ``result()``,
``exception()``, ``add_done_callback()``, ``concurrent.futures.wait`` and
``as_completed`` all work.  It can also be awaited from asyncio code, and it
carries what the engine reported about the task.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sys
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any, Protocol

from . import output
from .kept import KeptResult, value_of

#: The logger the standard library reports failing done callbacks to.
_CALLBACK_LOG = logging.getLogger("concurrent.futures")


class Handle(Protocol):
    """What a future may ask of the pool about its task (``None`` once the pool is done)."""

    task: Any

    def cancel(self) -> bool:
        """Cancel the task unless it has started; whether it will never run."""
        ...

    def interrupt(self) -> bool:
        """Interrupt the task if it runs now; whether an interrupt went out."""
        ...

    def stack(self) -> str:
        """The task's live stack, formatted; ``RuntimeError`` if it does not run."""
        ...


class TaskFuture(concurrent.futures.Future):
    """The future of one task run on a pool engine.

    Besides the ``concurrent.futures.Future`` API:

    - ``engine_id``: the engine that ran (or is running) the task;
    - ``stdout``, ``stderr``: what the task printed;
    - ``outputs``: rich outputs it displayed (``display_data`` contents);
    - ``metadata``: the reply metadata (``started``, ``completed``, ``engine`` ...);
    - ``interrupt()``: interrupt the task if it is running;
    - ``stack()``: the running task's live stack, taken on its engine;
    - ``debug()``: a post-mortem debugger on the engine where the task failed;
    - ``connection_file``: the connection file of the engine that ran it;
    - ``kept``: where its result is kept on an engine, if it is (``docs/data.md``);
    - ``display_outputs()``: show what it printed and displayed here (in a
      notebook, as output of the current cell);
    - ``await future`` in asyncio code.

    ``cancel()`` cancels a task that has not been sent; for a task already
    queued at an engine it asks the engine to abort it, and succeeds if the
    engine had not started it (so it will never run).  An engine that does not
    answer within a fraction of a second gets ``False``, and the task runs.
    ``interrupt()`` interrupts this task or nothing, never a later one.
    ``running()`` is true once the engine has said it started the task.
    """

    def __init__(self, handle: Handle | None = None) -> None:
        super().__init__()
        self._handle = handle
        #: What the pool that ran it is known by (see :func:`attach`), kept when done.
        self._owner: Any = None
        #: Where its result is kept on an engine, if it is (see :mod:`.kept`).
        self._kept: KeptResult | None = None
        #: Futures of the same value placed on other engines (``scatter(broadcast=True)``).
        self._replicas: list[TaskFuture] = []
        #: Its value made again after its engine lost it (see :mod:`.recompute`).
        self._again: TaskFuture | None = None
        self.engine_id: int | None = None
        self.msg_id: str | None = None
        #: The connection file of the engine that ran it (``jupyter console --existing``).
        self.connection_file: str | None = None
        self.stdout = ""
        self.stderr = ""
        self.outputs: list[dict[str, Any]] = []
        self.metadata: dict[str, Any] = {}

    @property
    def kept(self) -> KeptResult | None:
        """Where the task's result is kept on an engine (its value was not sent here
        with the reply), else ``None``; ``result()`` fetches a kept value once."""
        return self._kept

    def result(self, timeout: float | None = None) -> Any:
        """The task's result, as ``Future.result``; a result kept on its engine is
        fetched from there on the first call (see ``docs/data.md``)."""
        value = super().result(timeout)
        if type(value) is KeptResult:
            value = value_of(self, timeout)
        return value

    def cancel(self) -> bool:
        """Cancel the task unless it has started; return whether it is cancelled."""
        if self.done():
            return self.cancelled()
        if self.running():
            return False
        handle = self._handle
        if handle is None or not handle.cancel():
            return False
        with self._condition:
            if not super().cancel():
                return False
            # what an Executor does when its worker picks the item up: wakes
            # concurrent.futures.wait() and as_completed(), which wait for this step
            self.set_running_or_notify_cancel()
        return True

    def add_done_callback(self, fn: Callable[[concurrent.futures.Future], object]) -> None:
        """Call ``fn(future)`` once the future is done (at once if it is).

        As with any future, an exception ``fn`` raises is logged and ignored;
        here that holds for every exception, ``SystemExit`` included: callbacks
        run on the pools' loop thread, which must keep serving.
        """
        super().add_done_callback(_guarded(fn))

    def interrupt(self) -> bool:
        """Interrupt the task if it is running now; return whether an interrupt was sent."""
        handle = self._handle
        return handle is not None and handle.interrupt()

    def stack(self) -> str:
        """The running task's current Python stack, as a traceback shows it (innermost last).

        Taken on the engine without stopping or slowing the task: only the
        task's own frames, also while it waits in C code (``time.sleep``, a
        numpy call).  ``RuntimeError`` if the task is not running (queued,
        finished); :class:`~parallel_kernel.EngineTimeout` if the engine does
        not answer within a few seconds (a task holding the GIL in C code).
        """
        handle = self._handle
        if handle is None:
            state = "cancelled" if self.cancelled() else "finished" if self.done() else "pending"
            raise RuntimeError(f"the task is not running (it is {state})")
        return handle.stack()

    def debug(self) -> None:
        """Open a post-mortem debugger on the engine where this task failed, in the
        frame that raised, with its local variables; return when it quits (``q``).

        Commands are read here (the terminal, or a notebook cell's input box)
        and the debugger's output is shown here; the engine keeps serving
        afterwards but runs no other task while the session is open.
        ``RuntimeError`` if the task did not fail with its own exception, and
        when its engine cannot debug it any more (it died or was restarted,
        or another task has failed there since: an engine keeps only its
        last failure).  See ``docs/debugging.md``.
        """
        from .postmortem import debug

        debug(self)

    def display_outputs(self) -> None:
        """Show the task's stdout, stderr and rich outputs here, as output of the caller.

        In a notebook, figures and HTML an engine displayed appear in the
        current cell; in a script, their ``text/plain`` form is printed.
        """
        output.display_outputs(self)

    def __await__(self) -> Generator[Any, None, Any]:
        return self._awaited().__await__()

    async def _awaited(self) -> Any:
        """``await future``: its outcome, a kept result fetched off the event loop's thread.

        ``asyncio.wrap_future`` would read the result on the loop's thread,
        blocking it for as long as a kept value takes to fetch.  Cancelling
        the awaiting task cancels the future, as ``wrap_future`` does.
        """
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self.add_done_callback(lambda _f: loop.call_soon_threadsafe(_settle, done))
        try:
            await done
        except asyncio.CancelledError:
            self.cancel()
            raise
        if self.cancelled():
            raise asyncio.CancelledError
        if type(self._result) is KeptResult:
            return await loop.run_in_executor(None, self.result)
        return self.result()

    def __repr__(self) -> str:
        where = f" on engine {self.engine_id}" if self.engine_id is not None else ""
        return f"<TaskFuture {self._state.lower()}{where}>"


# -- the pool's side of a future (its loop thread); the only code that touches its state


def attach(future: TaskFuture, handle: Handle, owner: Any) -> None:
    """Give ``future`` the handle through which it cancels and interrupts its task,
    and the token of the pool it belongs to (see :func:`owned_by`)."""
    future._handle = handle
    future._owner = owner


def owned_by(future: Any, owner: Any) -> bool:
    """Whether ``future`` is a future of the pool known by ``owner``, done or not."""
    return isinstance(future, TaskFuture) and future._owner is owner


def task_of(future: TaskFuture) -> Any:
    """The pool's task behind ``future``, or ``None`` once the pool is done with it."""
    handle = future._handle
    return handle.task if handle is not None else None


def cancelled_by_pool(future: TaskFuture) -> None:
    """The pool stopped the task before it ran (an abandoned map): the future is cancelled."""
    with future._condition:
        if future.done():
            return
        if not future.running():
            concurrent.futures.Future.cancel(future)
            future.set_running_or_notify_cancel()
            return
    future.set_exception(concurrent.futures.CancelledError("stopped before it ran"))


def notify_running(future: TaskFuture) -> None:
    """The engine started the task: ``running()`` becomes true."""
    with future._condition:
        if not future.done() and not future.running():
            future.set_running_or_notify_cancel()


def resolve(future: TaskFuture, result: Any, error: BaseException | None) -> None:
    """Set the outcome, unless the future is done already (cancelled)."""
    with future._condition:
        if future.done():
            return
        if not future.running() and not future.set_running_or_notify_cancel():
            return
    # running now, so cancel() cannot succeed any more; done callbacks run unlocked
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def release(future: TaskFuture) -> None:
    """Forget the task (the pool is done with it), so neither keeps the other alive."""
    handle = future._handle
    if handle is not None:
        handle.task = None
        future._handle = None


def _guarded(
    fn: Callable[[concurrent.futures.Future], object],
) -> Callable[[concurrent.futures.Future], None]:
    """``fn``, logging and ignoring whatever it raises off the main thread.

    The standard library already logs an ``Exception``; a ``SystemExit`` or
    the like would end the pools' loop thread, which runs the callbacks of
    tasks finishing.  On the main thread (a callback added to a done future,
    or run by ``cancel()``) it propagates, as with any future.
    """

    def callback(future: concurrent.futures.Future) -> None:
        try:
            fn(future)
        except Exception:
            raise
        except BaseException:
            if threading.current_thread() is threading.main_thread():
                raise
            _CALLBACK_LOG.exception("exception calling callback for %r", future)

    return callback


def _progress(total: int, enabled: bool | dict[str, Any], desc: str) -> Any:
    """A tqdm bar of ``total`` tasks if ``enabled`` (``True`` or tqdm options), else ``None``."""
    if not enabled:
        return None
    if _in_a_kernel():
        from tqdm.auto import tqdm  # a widget where ipywidgets is installed
    else:
        # tqdm.auto would pick widgets whenever ipykernel is imported, even in a terminal
        from tqdm.std import tqdm

    options = {"total": total, "desc": desc, "unit": "task"}
    if isinstance(enabled, dict):
        options.update(enabled)
    return tqdm(**options)


def _in_a_kernel() -> bool:
    """Whether this code runs in a Jupyter kernel (a notebook or console behind it)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


def as_completed(
    fs: Iterable[concurrent.futures.Future],
    timeout: float | None = None,
    progress: bool | dict[str, Any] = False,
) -> Iterator[concurrent.futures.Future]:
    """``concurrent.futures.as_completed``, with an optional tqdm progress bar.

    ``progress`` may be ``True`` or a dict of tqdm options.
    """
    fs = list(fs)
    bar = _progress(len(fs), progress, "tasks")
    try:
        for future in concurrent.futures.as_completed(fs, timeout=timeout):
            if bar is not None:
                bar.update(1)
            yield future
    finally:
        if bar is not None:
            bar.close()


def wait(
    fs: Iterable[concurrent.futures.Future],
    timeout: float | None = None,
    return_when: str = concurrent.futures.ALL_COMPLETED,
    progress: bool | dict[str, Any] = False,
) -> concurrent.futures._base.DoneAndNotDoneFutures:
    """``concurrent.futures.wait``, with an optional tqdm progress bar."""
    fs = set(fs)
    if not progress:
        return concurrent.futures.wait(fs, timeout=timeout, return_when=return_when)
    done: set[concurrent.futures.Future] = set()
    try:
        for future in as_completed(fs, timeout=timeout, progress=progress):
            done.add(future)
            if return_when == concurrent.futures.FIRST_COMPLETED or (
                return_when == concurrent.futures.FIRST_EXCEPTION
                and not future.cancelled()
                and future.exception() is not None
            ):
                break
    except concurrent.futures.TimeoutError:
        pass
    done |= {f for f in fs if f.done()}
    return concurrent.futures._base.DoneAndNotDoneFutures(done, fs - done)


def _settle(waiter: asyncio.Future[None]) -> None:
    """Wake an ``await`` of a future that is done (unless the awaiting was cancelled)."""
    if not waiter.done():
        waiter.set_result(None)
