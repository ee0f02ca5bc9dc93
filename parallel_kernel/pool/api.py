"""``Pool``: a ``concurrent.futures.Executor`` whose workers are parallel kernels.

This module is the public face only: it checks arguments, packs calls and
hands them to the pool's loop thread (:mod:`parallel_kernel.pool.core`),
where everything else happens.  There is no broker: the pool talks to every
engine's sockets itself.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from typing import Any, Literal

from .. import protocol, serialize
from ..errors import PoolBroken
from . import arguments, futures, lifecycle, mapping, output, prompts, runtime_files, status
from .all_engines import AllEngines
from .control import TaskHandle
from .core import STARTUP_TIMEOUT, PoolCore, PoolOptions
from .futures import TaskFuture
from .kept import KEEP_OVER
from .launch import check_kernel_name, launch_transport
from .scatter import gather_values, scatter_values
from .scheduler import Job
from .status import Engine, PoolStatus, engine_of
from .tasks import Task, chunk_name, kind_of


class _Option:
    """A pool attribute that reads the pool's :class:`PoolOptions` (their one source)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, pool: Any, owner: type | None = None) -> Any:
        if pool is None:
            return self
        return getattr(pool._core.options, self.name)


#: Seconds a kernel given to :meth:`Pool.connect` has to answer.
CONNECT_TIMEOUT = 10.0


class Pool(Executor):
    """A pool of parallel kernels with futures, pipelining, abort, retries and timeouts.

    ``Pool(max_workers)`` starts that many engines (default: one per CPU) from
    kernelspec ``kernel_name`` (default ``"parallel"``), concurrently; ``n`` is
    the same argument under its older name.  :meth:`connect` attaches to
    kernels that are already running.  ``initializer(*initargs)`` runs on
    every engine (also a restarted one) before it takes tasks; an engine
    where it raises is left out, and a pool left with no engine is
    :attr:`broken`.  ``mp_context`` must be ``None``: engines are kernels, not
    ``multiprocessing`` processes.  Use it like any
    ``concurrent.futures.Executor``::

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
    ``keep_over``: a result of at least this many bytes (as pickled; 1 MiB
    by default) stays on its engine: ``result()`` fetches it on its first
    call, and a task that takes the future as an argument gets it from there,
    not through this process (see ``docs/data.md``); ``None`` brings every
    result back at once.
    ``shared_memory``: buffers of 1 MiB or more to and from engines on this
    host go through shared memory instead of sockets (one copy in all, read
    back as read-only views): ``"auto"`` (the default) wherever it is
    available, ``True`` to fail if it is not, ``False`` never.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: Iterable[Any] = (),
        *,
        n: int | None = None,
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
        keep_over: int | None = KEEP_OVER,
        shared_memory: bool | str = "auto",
        _connection_files: list[str] | None = None,
        _skip_unreachable: bool = False,
    ) -> None:
        if hwm < 1:
            raise ValueError(f"hwm must be at least 1, got {hwm}")
        arguments.check_mp_context(mp_context)
        arguments.check_keep_over(keep_over)
        arguments.check_shared_memory(shared_memory)
        init_call = arguments.pack_initializer(initializer, initargs)
        if _connection_files is None:
            count = arguments.engine_count(max_workers, n)
            check_kernel_name(kernel_name)
            transport = launch_transport(kernel_name, transport)
            if transport == "ipc" and transport_encryption == "auto":
                transport_encryption = "disabled"
            runtime_files.clean()
        elif max_workers is not None or n is not None:
            raise TypeError("connect() attaches one engine per connection file; drop max_workers")
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
                initializer=init_call,
                wrap_errors=wrap_errors,
                keep_over=keep_over,
                shared_memory=shared_memory,
            )
        )
        core = self._core
        self._all = AllEngines(core, self._submit_message)
        self._dashboard: Any = None
        try:
            if _connection_files is None:
                core.bridge.run(core.engines.start(count), timeout=startup_timeout * 2 + 10)
            else:
                core.bridge.run(
                    core.engines.connect(_connection_files, skip_unreachable=_skip_unreachable),
                    timeout=startup_timeout + 10,
                )
        except BaseException:
            self._teardown()
            raise
        lifecycle.register(core)
        self._finalizer = weakref.finalize(self, lifecycle.dropped, core)
        self._finalizer.atexit = False  # the interpreter's exit winds every pool down first

    kernel_name = _Option()
    hwm = _Option()
    forward_output = _Option()
    restart = _Option()
    startup_timeout = _Option()
    transport = _Option()
    transport_encryption = _Option()
    task_channel = _Option()
    wrap_errors = _Option()
    keep_over = _Option()
    shared_memory = _Option()

    @classmethod
    def connect(
        cls,
        connection_files: Iterable[str | os.PathLike[str]],
        *,
        timeout: float = CONNECT_TIMEOUT,
        on_unreachable: str = "raise",
        **options: Any,
    ) -> Pool:
        """A pool of kernels that are already running, given their connection files.

        A bare file name (``kernel-1234.json``, as ``%connect_info`` prints it)
        is looked up in the current directory, then in the Jupyter runtime
        directory, as ``jupyter console --existing`` does.  Each kernel gets
        ``timeout`` seconds to answer; one that does not (a stale file of a
        kernel that is gone) raises :class:`~parallel_kernel.EngineTimeout`
        naming the file with ``on_unreachable="raise"`` (the default), or is
        left out with ``on_unreachable="skip"`` (it shows as ``stopped`` in
        :attr:`engines`; the connect still fails if no kernel answers).

        The pool never shuts these kernels down and never restarts them; an
        engine that dies is reported (its tasks fail with ``EngineDied``) and
        left out.  Works with any kernel of this package, e.g. the one behind
        a notebook (``%connect_info`` there shows its connection file).
        """
        if on_unreachable not in ("raise", "skip"):
            raise ValueError(f"on_unreachable must be 'raise' or 'skip', got {on_unreachable!r}")
        arguments.check_timeout(timeout)
        if timeout is None:
            raise ValueError("connect() needs a timeout in seconds, got None")
        if "startup_timeout" in options:
            raise TypeError("connect() takes timeout=, not startup_timeout=")
        files = [arguments.connection_file_path(f) for f in connection_files]
        if not files:
            raise ValueError("connect() needs at least one connection file")
        return cls(
            _connection_files=files,
            _skip_unreachable=on_unreachable == "skip",
            startup_timeout=timeout,
            **options,
        )

    @property
    def broken(self) -> str | Literal[False]:
        """``False``, or why the pool can no longer run tasks: no engine can be started
        (each died for good, or its initializer failed).  Then every submit raises
        :class:`~parallel_kernel.errors.PoolBroken`."""
        return self._core.broken or False

    @property
    def engines(self) -> list[Engine]:
        """A snapshot of every engine: id, state, connection file, ownership."""
        return [engine_of(e) for e in self._core.in_order()]

    def futures(self) -> list[TaskFuture]:
        """The futures of this pool's tasks that are not done yet."""
        return [f for f in list(self._core.futures) if not f.done()]

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
        and nothing is sent.  A future of this pool as an argument (or an item
        of a list, tuple or dict that is one) stands for its value: the task
        waits for it and fails with :class:`~parallel_kernel.DependencyError`,
        naming it, if it fails (see ``docs/data.md``).  Options (names
        reserved by ``submit``; pass a ``functools.partial`` for a function
        that takes such a keyword):

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
        arguments.check_retries(retries)
        arguments.check_timeout(timeout)
        args, kwargs, inputs = arguments.take_inputs(args, kwargs, self._is_ours)
        job = Job(
            target=arguments.check_engine(engine),
            after=arguments.dependency("after", after),
            follow=arguments.dependency("follow", follow),
            inputs=inputs,
        )
        content, buffers = serialize.pack_apply(fn, args, kwargs)
        return self._submit_message(
            protocol.APPLY_REQUEST,
            content,
            buffers,
            job,
            retries=retries,
            retry_on_error=retry_on_error,
            timeout=timeout,
            kind=kind_of(fn),
        )

    def submit_cell(
        self,
        code: str,
        *,
        engine: int | None = None,
        on_output: output.OutputCallback | None = None,
        store_history: bool = True,
        timeout: float | None = None,
    ) -> TaskFuture:
        """Schedule ``code`` to run as a notebook cell on an engine; return its future.

        The cell is an ``execute_request``, so the engine's ``In``/``Out``,
        display hooks and IPython magics work as in a notebook.  It waits its
        turn like any task (``engine``: that engine only; ``timeout``: seconds
        it may run before it is interrupted, as for :meth:`submit`).  The
        future's result is ``None``; what the cell printed and displayed is on
        the future (``stdout``, ``stderr``, ``outputs``), and a cell that raised
        fails it with :class:`~parallel_kernel.RemoteError`.

        ``on_output(engine_id, msg_type, content)`` is called for each output
        message as it arrives (``stream``, ``display_data``,
        ``update_display_data``, ``execute_result``, ``error``,
        ``clear_output``; ``content`` as the Jupyter protocol has it), which
        is how ``%px`` streams.  It is called on the pool's own thread, so it
        must return quickly; an exception it raises is logged, not the task's.
        """
        if not isinstance(code, str):
            raise TypeError(f"submit_cell: code is a str, not {type(code).__name__}")
        if on_output is not None and not callable(on_output):
            raise TypeError("submit_cell: on_output is a callable or None")
        arguments.check_timeout(timeout)
        content = {
            "code": code,
            "silent": False,
            "store_history": bool(store_history),
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": False,
        }
        job = Job(target=arguments.check_engine(engine))
        return self._submit_message(
            "execute_request", content, [], job, sink=on_output, timeout=timeout, name="cell"
        )

    def _submit_message(
        self,
        msg_type: str,
        content: dict[str, Any],
        buffers: list[Any],
        job: Job,
        **options: Any,
    ) -> TaskFuture:
        """Make a task of a packed request and hand it to the loop; return its future.

        Everything that can fail is checked before: nothing is registered for a
        call that raises."""
        core = self._core
        if core.broken:
            raise PoolBroken(core.broken)
        if lifecycle.exiting():
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")
        if core.closed:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if msg_type == protocol.APPLY_REQUEST:
            if prompts.can_answer():
                content["allow_stdin"] = True
            if core.options.keep_over is not None:
                content.setdefault("keep_over", core.options.keep_over)
            if core.place is not None:
                content["shared_memory"] = core.place
        future = TaskFuture()
        task = Task(future, msg_type, content, buffers, job, **options)
        futures.attach(future, TaskHandle(core.control, task), core.token)
        if self.forward_output:
            task.origin = output.origin()
        core.futures.add(future)
        needed = [f for d in (job.after, job.follow) if d for f in d.futures]
        for dep in needed + [future for _, future in job.inputs]:
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
        (``True`` or a dict of tqdm options) of the items finished.
        ``retries`` reruns a chunk on another engine if its engine dies, as
        for :meth:`submit`.  Each result is let go of once yielded; stopping
        early cancels what has not run, and Ctrl-C also interrupts what runs.
        """
        mapping.check_options(timeout, chunksize, retries)
        return mapping.map_results(
            self._submit_packed,
            self._core.control,
            len(self._core.records),
            fn,
            iterables,
            timeout=timeout,
            chunksize=chunksize,
            progress=progress,
            retries=retries,
        )

    def _submit_packed(
        self, fn: Any, args: tuple[Any, ...], frames: list[Any], retries: int
    ) -> TaskFuture:
        """Submit a call whose function is already pickled (``frames``), as ``map`` does."""
        args, _, inputs = arguments.take_inputs(args, {}, self._is_ours)
        content, buffers = serialize.pack_apply(fn, args, function_frames=frames)
        return self._submit_message(
            protocol.APPLY_REQUEST,
            content,
            buffers,
            Job(inputs=inputs),
            retries=retries,
            name=chunk_name(fn),
        )

    def _is_ours(self, future: Any) -> bool:
        """Whether ``future`` is a future of this pool's tasks."""
        return futures.owned_by(future, self._core.token)

    # ------------------------------------------------------------------ data on engines

    def scatter(self, data: Any, *, broadcast: bool = False) -> Any:
        """Place ``data`` on engines; return futures for it, usable as task arguments.

        One object gives one future, a list or tuple a list of futures (its
        items spread over the engines in turn), a dict a dict of futures.
        Each value stays on its engine, whatever its size, until its future is
        gone; tasks that take it run there (see ``docs/data.md``).  With
        ``broadcast=True`` each value is placed on every serving engine (a
        model, a lookup table): tasks that take its future run anywhere and
        use their engine's copy; engines on this host share one copy.
        """
        engines = [e for e in self._core.records.values() if e.serving]
        return scatter_values(self._submit_message, engines, data, broadcast)

    def gather(self, futures: Any, *, timeout: float | None = None) -> Any:
        """The values of ``futures``: a future, or a list, tuple or dict of them, same shape."""
        return gather_values(futures, timeout)

    # ------------------------------------------------------------------ every engine

    def broadcast(
        self, fn: Callable[..., Any], /, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> list[Any]:
        """Run ``fn(*args, **kwargs)`` once on every engine; results in engine order.

        ``timeout`` is reserved (it is not passed to ``fn``; use a
        ``functools.partial`` for a function that takes one): seconds to wait
        for every engine, after which :class:`~parallel_kernel.EngineTimeout`
        names the engines that did not answer.  Their calls are cancelled if
        they had not started, else left to finish; the pool keeps serving.
        """
        return self._all.broadcast(fn, args, kwargs, timeout)

    def push(self, values: dict[str, Any], *, timeout: float | None = None) -> None:
        """Set these names in every engine's namespace (``timeout`` as for :meth:`broadcast`)."""
        self._all.push(values, timeout)

    def pull(self, names: str | Iterable[str], *, timeout: float | None = None) -> list[Any]:
        """Read a name (or a list of names) from every engine's namespace, in engine order
        (``timeout`` as for :meth:`broadcast`)."""
        return self._all.pull(names, timeout)

    def execute(self, code: str, *, timeout: float | None = None) -> list[TaskFuture]:
        """Run ``code`` as a cell on every engine; return the finished futures (``stdout`` ...).

        Raises :class:`RemoteError` for the first engine where the code failed;
        ``timeout`` as for :meth:`broadcast`.
        """
        return self._all.execute(code, timeout)

    def clear(self, *, timeout: float | None = None) -> None:
        """Reset every engine's namespace (and re-run its start-up code).

        An engine clears once the code it runs has returned.  ``timeout``:
        seconds to wait for every engine, after which
        :class:`~parallel_kernel.EngineTimeout` names those that did not
        answer (they still clear when they get to it).
        """
        self._all.clear(timeout)

    def interrupt(self, engine: int | None = None) -> None:
        """Interrupt whatever runs on one engine, or on all of them.

        Engines the pool started get SIGINT; an attached engine that does not
        answer its ``interrupt_request`` at once is named by the
        :class:`~parallel_kernel.EngineTimeout` raised (the request stays on
        its way and interrupts what runs when the engine reads it).
        """
        self._core.control.interrupt_all(engine)

    def stacks(self) -> list[str]:
        """Every engine's live stack, in engine order: what its task is doing right now.

        Each is text: ``engine N: idle``, or the user frames of what runs, as
        a traceback shows them (innermost last), taken without stopping it;
        an engine that cannot answer says why.  ``print(*pool.stacks())``.
        """
        return self._core.stacks.of_engines()

    def restart_engine(self, engine: int) -> None:
        """Restart one engine the pool started (a fresh process, an empty namespace).

        Its running task fails with :class:`~parallel_kernel.EngineDied` (or is
        retried, as its ``retries`` say); its queued tasks run elsewhere.
        ``ValueError`` for an engine attached with :meth:`connect` or one that
        is not serving.
        """
        core = self._core
        core.bridge.run(core.engines.restart(engine), timeout=core.options.startup_timeout + 10)

    def status(self) -> PoolStatus:
        """The pool at a glance: every engine's state, task counts, running task, memory
        and CPU use (``print(pool.status())`` for a table); see ``docs/notebooks.md``."""
        core = self._core
        return core.bridge.run(status.measured(core), timeout=status.STATS_WAIT * 3 + 5)

    def dashboard(self) -> Any:
        """The live dashboard of this pool for notebooks (ipywidgets): one row per engine
        with its state, running task, counts, memory and CPU, and buttons to interrupt
        or restart it; the task stream of the last minute above.  ``pool`` as the last
        line of a cell shows it too.

        A pool has one dashboard however often it is shown: every display is a
        view of the same widgets, drawn once.  ``close()`` stops it (and
        empties its views); the next call makes a new one.  See
        ``docs/notebooks.md``."""
        try:
            import ipywidgets  # noqa: F401

            from ..dashboard import Dashboard
        except ImportError as exc:
            raise ImportError(
                f"pool.dashboard() needs ipywidgets ({exc}): "
                "pip install 'parallel_kernel[notebook]'"
            ) from exc
        shown = self._dashboard
        if shown is None or shown.closed:
            shown = self._dashboard = Dashboard(self)
        return shown

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """In a notebook, a live dashboard; elsewhere, the pool's status as text."""
        core = self._core
        if core.closed:
            return {"text/plain": repr(self)}
        if output.in_kernel():
            try:
                return self.dashboard()._repr_mimebundle_(include=include, exclude=exclude)
            except ImportError:
                pass
        return {"text/plain": f"{self!r}\n{self.status()}"}

    def activate(self) -> Pool:
        """Make this pool the one the parallel magics run on (``%px`` ...); return it.

        One pool is active per process; activating another replaces it (and
        says so).  ``%load_ext parallel_kernel`` loads the magics; see
        ``docs/notebooks.md``.
        """
        from ..magics import active

        active.activate(self)
        return self

    # ------------------------------------------------------------------ shutdown

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting tasks; let the submitted ones finish; then stop the owned engines.

        ``cancel_futures=True`` cancels the tasks that have not started.  With
        ``wait=False`` this returns at once and the engines stop once the work
        is done; with ``wait=True`` it returns when they are stopped.  Kernels
        attached with :meth:`connect` are left running.
        """
        core = self._core
        if wait and core.bridge.on_loop:
            raise RuntimeError("shutdown() blocks; it cannot be called from a pool callback")
        core.closed = True
        if cancel_futures:
            self._cancel_waiting()
        self._finalizer.detach()
        done = lifecycle.wind_down(core)
        if wait:
            lifecycle.wait(core, done)

    def _cancel_waiting(self) -> None:
        """Cancel every task that has not started: those queued here at once, those sent
        to engines with one abort per engine (so this takes a fraction of a second)."""
        waiting = [futures.task_of(f) for f in self.futures()]
        tasks = [task for task in waiting if task is not None]
        if self._core.bridge.on_loop:  # a pool callback: only what waits here
            for task in tasks:
                self._core.control.cancel(task)
        else:
            self._core.control.stop(tasks, interrupt=False)

    def _teardown(self) -> None:
        """A start failed: stop the engines that did start and remove the pool's files."""
        core = self._core
        core.closed = True
        if not core.stopped and core.bridge.thread.is_alive():
            core.stopped = True
            with contextlib.suppress(Exception):
                core.bridge.run(core.stop(), timeout=60)
        core.stopped = True
        core.cleanup()

    def __repr__(self) -> str:
        states = ", ".join(f"{e.id}:{e.state}" for e in self.engines)
        return f"<Pool of {len(self._core.records)} engines ({states})>"
