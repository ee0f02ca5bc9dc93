"""``Pool``: a ``concurrent.futures.Executor`` whose workers are parallel kernels.

This module is the public face only: it checks arguments, packs calls and
hands them to the pool's loop thread (:mod:`parallel_kernel.pool.core`),
where everything else happens.  There is no broker: the pool talks to every
engine's sockets itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import protocol, remote, serialize
from ..errors import RemoteError
from . import output
from .control import CONTROL_TIMEOUT, TaskHandle
from .core import STARTUP_TIMEOUT, PoolCore, PoolOptions
from .engine_state import EngineState
from .futures import TaskFuture, _progress
from .launch import check_kernel_name, launch_transport
from .scheduler import Dependency, Job
from .tasks import Task, kind_of


class _Option:
    """A pool attribute that reads the pool's :class:`PoolOptions` (their one source)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, pool: Any, owner: type | None = None) -> Any:
        if pool is None:
            return self
        return getattr(pool._core.options, self.name)


#: Engines that no longer take part: all-engine calls leave them out.
_GONE = (EngineState.DEAD, EngineState.STOPPED)


@dataclass(frozen=True)
class Engine:
    """What the pool knows about one engine (a snapshot).

    ``connection_file`` lets a person attach to the engine and look at the
    namespace its tasks left: ``jupyter console --existing <connection_file>``.
    """

    id: int
    state: str
    connection_file: str
    owned: bool
    uuid: str | None
    outstanding: int


class Pool(Executor):
    """A pool of parallel kernels with futures, pipelining, abort, retries and timeouts.

    ``Pool(n)`` starts ``n`` engines from kernelspec ``kernel_name`` (default
    ``"parallel"``), concurrently; :meth:`connect` attaches to kernels that are
    already running.  Use it like any ``concurrent.futures.Executor``::

        with Pool(4) as pool:
            results = list(pool.map(f, range(1000)))

    ``hwm`` is how many tasks may be outstanding at one engine (one running,
    the rest queued there so it never waits for the client between tasks).
    Tasks of a function whose measured run time is short share a slot: up to
    32 per slot, about 2 ms of work, sent to the engine in one message; a
    function not seen yet, or a slow one, takes a whole slot.
    ``forward_output=True`` shows what tasks print and display as it arrives:
    in a script, on this process's stdout and stderr, each line prefixed with
    its engine id; in a notebook, as output of the cell that submitted the
    task (see :mod:`parallel_kernel.pool.output`).  ``transport`` is how the
    pool reaches the engines it starts: ``"ipc"`` (Unix sockets in the user's
    private Jupyter runtime directory), ``"tcp"`` (loopback), or ``"auto"``,
    which picks ipc for engines started on this machine by jupyter_client's
    local provisioner and tcp for any other provisioner.
    ``transport_encryption`` (``"auto"``, ``"required"`` or ``"disabled"``) is
    passed to jupyter_client: with ``"auto"``, engines reached over tcp whose
    kernelspec supports CurveZMQ use it; ipc sockets, readable by their owner
    only, are not encrypted unless it is ``"required"``.
    ``task_channel=False`` sends every task on the shell channel instead of the
    engines' task channel: slower, but served even while an engine runs a GUI
    event loop (``%gui qt``, interactive matplotlib backends), which hands
    control back to the kernel only for shell messages.
    A task that raises makes its future raise the task's own exception, with
    the remote traceback as its ``__cause__`` (a
    :class:`~parallel_kernel.RemoteTraceback`); ``wrap_errors=True``
    raises every task error as a :class:`~parallel_kernel.RemoteError`
    instead (the task's own exception in its ``original``).
    """

    def __init__(
        self,
        n: int | None = None,
        *,
        kernel_name: str = "parallel",
        hwm: int = 2,
        forward_output: bool = False,
        restart: bool = True,
        extra_arguments: list[str] | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
        transport: str = "auto",
        transport_encryption: str = "auto",
        task_channel: bool = True,
        wrap_errors: bool = False,
        _connection_files: list[str] | None = None,
    ) -> None:
        if hwm < 1:
            raise ValueError(f"hwm must be at least 1, got {hwm}")
        if _connection_files is None:
            if n is None:
                n = os.cpu_count() or 1
            if n < 1:
                raise ValueError(f"a pool needs at least one engine, got n={n}")
            check_kernel_name(kernel_name)
            transport = launch_transport(kernel_name, transport)
            if transport == "ipc" and transport_encryption == "auto":
                transport_encryption = "disabled"
        self._core = PoolCore(
            PoolOptions(
                kernel_name=kernel_name,
                hwm=hwm,
                forward_output=forward_output,
                restart=restart,
                extra_arguments=list(extra_arguments or []),
                startup_timeout=startup_timeout,
                transport=transport,
                transport_encryption=transport_encryption,
                task_channel=task_channel,
                wrap_errors=wrap_errors,
            )
        )
        self._futures: weakref.WeakSet[TaskFuture] = weakref.WeakSet()
        core = self._core
        try:
            if _connection_files is None:
                core.bridge.run(core.engines.start(n), timeout=startup_timeout * 2 + 10)
            else:
                core.bridge.run(
                    core.engines.connect(_connection_files), timeout=startup_timeout + 10
                )
        except BaseException:
            self._teardown()
            raise
        self._finalizer = weakref.finalize(self, _abandon, core)

    kernel_name = _Option()
    hwm = _Option()
    forward_output = _Option()
    restart = _Option()
    startup_timeout = _Option()
    transport = _Option()
    transport_encryption = _Option()
    task_channel = _Option()
    wrap_errors = _Option()

    @classmethod
    def connect(cls, connection_files: Iterable[str | os.PathLike[str]], **options: Any) -> Pool:
        """A pool of kernels that are already running, given their connection files.

        The pool never shuts these kernels down and never restarts them; an
        engine that dies is reported (its tasks fail with ``EngineDied``) and
        left out.  Works with any kernel of this package, e.g. the one behind
        a notebook (``%connect_info`` there shows its connection file).
        """
        files = [str(Path(f).expanduser()) for f in connection_files]
        if not files:
            raise ValueError("connect() needs at least one connection file")
        return cls(_connection_files=files, **options)

    @property
    def engines(self) -> list[Engine]:
        """A snapshot of every engine: id, state, connection file, ownership."""
        return [
            Engine(
                id=e.id,
                state=str(e.state),
                connection_file=e.connection_file,
                owned=e.owned,
                uuid=e.uuid,
                outstanding=len(e.inflight),
            )
            for e in sorted(self._core.records.values(), key=lambda e: e.id)
        ]

    def futures(self) -> list[TaskFuture]:
        """The futures of this pool's tasks that are not done yet."""
        return [f for f in list(self._futures) if not f.done()]

    # ------------------------------------------------------------------ tasks

    def submit(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        engine: int | None = None,
        after: Any = None,
        follow: Any = None,
        retries: int = 0,
        retry_on_error: bool = False,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> TaskFuture:
        """Schedule ``fn(*args, **kwargs)`` on an engine and return its future.

        The function and arguments are serialized now: anything unpicklable
        raises :class:`~parallel_kernel.serialize.SerializationError` (a
        ``pickle.PicklingError``, with what pickling raised as its cause) here
        and nothing is sent.  Options (names reserved by ``submit``; pass a
        ``functools.partial`` for a function that takes such a keyword):

        - ``engine``: run on that engine id only;
        - ``after``: futures (or a :class:`Dependency`) that must finish first;
        - ``follow``: futures to run beside: on the engine where they ran;
        - ``retries``: how many more times the task may run if its engine dies
          while it may be running (and, with ``retry_on_error=True``, if it
          raises); a task that never started on a dead engine runs elsewhere
          without using one;
        - ``timeout``: seconds the task may run (once started) before it is
          interrupted and fails with :class:`TaskTimeout`.
        """
        content, buffers = serialize.pack_apply(fn, args, kwargs)
        return self._submit_message(
            protocol.APPLY_REQUEST,
            content,
            buffers,
            Job(target=engine, after=Dependency.coerce(after), follow=Dependency.coerce(follow)),
            retries=retries,
            retry_on_error=retry_on_error,
            timeout=timeout,
            kind=kind_of(fn),
        )

    def _submit_message(
        self,
        msg_type: str,
        content: dict[str, Any],
        buffers: list[Any],
        job: Job,
        **options: Any,
    ) -> TaskFuture:
        """Make a task of a packed request and hand it to the loop; return its future."""
        core = self._core
        if core.closed:
            raise RuntimeError("cannot schedule new tasks after shutdown")
        if options.get("timeout") is not None and options["timeout"] <= 0:
            raise ValueError(f"timeout must be positive, got {options['timeout']}")
        future = TaskFuture()
        task = Task(future, msg_type, content, buffers, job, **options)
        future._handle = TaskHandle(core.control, task)
        if self.forward_output:
            task.origin = output.origin()
        self._futures.add(future)
        for dependency in (job.after, job.follow):
            for dep in dependency.futures if dependency else ():
                dep.add_done_callback(lambda _f: core.bridge.call_soon(core.dispatch.schedule))
        core.dispatch.submit(task)
        return future

    # ------------------------------------------------------------------ map and friends

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
        progress: bool | dict[str, Any] = False,
        retries: int = 0,
    ) -> Iterator[Any]:
        """``Executor.map``: results in order, with small tasks batched into chunks.

        The iterables are consumed at once.  Without ``chunksize``, items are
        cut into about four chunks per engine.  ``timeout`` bounds the whole
        iteration, counted from this call.  ``progress`` shows a tqdm bar
        (``True`` or a dict of tqdm options).  ``retries`` reruns a chunk on
        another engine if its engine dies, as for :meth:`submit`.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        items = list(zip(*iterables, strict=False))
        if chunksize is None:
            chunksize = max(1, math.ceil(len(items) / (4 * max(1, len(self._core.records)))))
        elif chunksize < 1:
            raise ValueError(f"chunksize must be at least 1, got {chunksize}")
        if chunksize == 1:
            runner, frames = fn, serialize.pack(fn)
            futures = [self._submit_packed(runner, args, frames, retries) for args in items]
            sizes = [1] * len(futures)
        else:
            runner = functools.partial(remote.run_chunk, fn)
            frames = serialize.pack(runner)
            chunks = [items[i : i + chunksize] for i in range(0, len(items), chunksize)]
            futures = [self._submit_packed(runner, (chunk,), frames, retries) for chunk in chunks]
            sizes = [len(chunk) for chunk in chunks]
        bar = _progress(len(items), progress, "map")
        if bar is not None:
            lock = threading.Lock()
            # the bar advances from the pool's thread, as output of the caller's
            # context: in a notebook, its widget updates belong to the calling cell
            caller = contextvars.copy_context()
            for future, size in zip(futures, sizes, strict=True):

                def advance(_f: Any, size: int = size) -> None:
                    with lock:
                        caller.run(bar.update, size)

                future.add_done_callback(advance)
        return self._map_results(futures, chunksize > 1, deadline, bar)

    def _submit_packed(
        self, fn: Any, args: tuple[Any, ...], frames: list[Any], retries: int
    ) -> TaskFuture:
        content, buffers = serialize.pack_apply(fn, args, function_frames=frames)
        return self._submit_message("apply_request", content, buffers, Job(), retries=retries)

    @staticmethod
    def _map_results(
        futures: list[TaskFuture], chunked: bool, deadline: float | None, bar: Any
    ) -> Iterator[Any]:
        """Yield results in order, letting go of each future once its result is yielded;
        an early stop (or the deadline) cancels the rest."""
        try:
            futures.reverse()
            while futures:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError("map did not finish within its timeout")
                value = futures[-1].result(remaining)
                futures.pop()
                if chunked:
                    yield from value
                else:
                    yield value
        finally:
            for future in futures:
                future.cancel()
            if bar is not None:
                bar.close()

    def broadcast(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> list[Any]:
        """Run ``fn(*args, **kwargs)`` once on every engine; results in engine order."""
        content, buffers = serialize.pack_apply(fn, args, kwargs)
        futures = [
            self._submit_message(protocol.APPLY_REQUEST, content, buffers, Job(target=e.id))
            for e in self.engines
            if e.state not in _GONE
        ]
        return [future.result() for future in futures]

    def push(self, values: dict[str, Any]) -> None:
        """Set these names in every engine's namespace."""
        self.broadcast(remote.push, dict(values))

    def pull(self, names: str | Iterable[str]) -> list[Any]:
        """Read a name (or a list of names) from every engine's namespace, in engine order."""
        return self.broadcast(remote.pull, names if isinstance(names, str) else list(names))

    def execute(self, code: str) -> list[TaskFuture]:
        """Run ``code`` as a cell on every engine; return the finished futures (``stdout`` ...).

        Raises :class:`RemoteError` for the first engine where the code failed.
        """
        content = {"code": code, "silent": False, "store_history": False, "allow_stdin": False}
        futures = [
            self._submit_message("execute_request", content, [], Job(target=e.id))
            for e in self.engines
            if e.state not in _GONE
        ]
        for future in futures:
            future.result()
        return futures

    def clear(self) -> None:
        """Reset every engine's namespace (and re-run its start-up code)."""
        core = self._core

        async def clear_all() -> list[dict[str, Any]]:
            waiters = [
                core.requests.send(e, "control", protocol.CLEAR_REQUEST, {})
                for e in core.records.values()
                if e.connection is not None
            ]
            return await asyncio.wait_for(asyncio.gather(*waiters), CONTROL_TIMEOUT)

        for reply in core.bridge.run(clear_all(), timeout=CONTROL_TIMEOUT + 5):
            content = reply["content"]
            if content.get("status") != "ok":
                raise RemoteError(
                    content.get("ename", "Error"),
                    content.get("evalue", ""),
                    content.get("traceback", []),
                )

    def interrupt(self, engine: int | None = None) -> None:
        """Interrupt whatever runs on one engine, or on all of them."""
        self._core.control.interrupt_all(engine)

    # ------------------------------------------------------------------ shutdown

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting tasks; optionally cancel the pending ones; stop owned engines.

        Kernels attached with :meth:`connect` are left running.
        """
        core = self._core
        if core.stopped:
            return
        if core.bridge.on_loop:
            raise RuntimeError("shutdown() blocks; it cannot be called from a pool callback")
        core.closed = True
        if cancel_futures:
            for future in self.futures():
                future.cancel()
        if wait:
            concurrent.futures.wait(self.futures())
        self._teardown()

    def _teardown(self) -> None:
        """Stop the engines and remove the pool's files, once (also after a failed start)."""
        core = self._core
        core.closed = True
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer.detach()
        if not core.stopped and core.bridge.thread.is_alive():
            core.stopped = True
            with contextlib.suppress(Exception):
                core.bridge.run(core.stop(), timeout=60)
        core.stopped = True
        core.cleanup()

    def __repr__(self) -> str:
        states = ", ".join(f"{e.id}:{e.state}" for e in self.engines)
        return f"<Pool of {len(self._core.records)} engines ({states})>"


#: Clean-ups of dropped pools running on the loop (referenced until done).
_abandoned: set[asyncio.Task[None]] = set()


def _abandon(core: PoolCore) -> None:
    """A pool dropped without shutdown: close its sockets and stop the engines it started.

    The loop is shared with other pools and lives on.  The garbage collector
    may call this on the loop's own thread, which must not wait for the loop.
    """
    bridge = core.bridge
    if not bridge.thread.is_alive():
        return
    if bridge.on_loop:
        task = bridge.loop.create_task(core.engines.abandon())
        _abandoned.add(task)
        task.add_done_callback(_abandoned.discard)
        return
    with contextlib.suppress(Exception):
        bridge.run(core.engines.abandon(), timeout=30)
