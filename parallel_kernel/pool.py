"""``Pool``: a ``concurrent.futures.Executor`` whose workers are parallel kernels.

There is no broker: the pool talks to every engine's shell, control and IOPub
sockets from one background event-loop thread, which owns all sockets and all
task state (one thread for all the pools of a process).  Calls from user
threads hand work to that thread (``call_soon_threadsafe``) or wait for it with
a timeout, so the pool works the same from a script, a notebook (whose own
loop is never touched) and asyncio code.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import contextvars
import functools
import glob
import logging
import math
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.paths import jupyter_runtime_dir

from . import output, remote, serialize
from .client import EngineClient, kernel_client
from .errors import (
    EngineDied,
    EngineStartError,
    RemoteError,
    TaskAborted,
    TaskInterrupted,
    TaskTimeout,
)
from .futures import TaskFuture, _progress
from .scheduler import Dependency, Job, Scheduler

#: Seconds to wait for an engine to start and answer kernel_info.
STARTUP_TIMEOUT = 60.0
#: Seconds a finished task waits for the rest of its output (IOPub ``idle``).
OUTPUT_GRACE = 2.0
#: Seconds between checks that owned engine processes are alive.
POLL_INTERVAL = 0.5
#: Seconds a timed-out task gets to stop after its interrupt before it is failed anyway.
INTERRUPT_GRACE = 5.0
#: Seconds to wait for a control reply (abort, clear, interrupt).
CONTROL_TIMEOUT = 30.0
ENGINE_ARGS = ["--HistoryManager.hist_file=:memory:"]
#: glibc tunable the pool adds to its engines' environment on Linux: malloc backs its
#: large blocks (such as received message buffers) with transparent huge pages.
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
#: Seconds of known-short work an engine may have queued per slot of ``hwm``.
QUEUED_WORK_PER_SLOT = 0.002
#: Most tasks that share one slot (and so, about the most sent in one message).
MAX_TASKS_PER_SLOT = 32

log = logging.getLogger(__name__)


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


class _Task:
    """One request the pool sends to an engine on behalf of a future."""

    __slots__ = (
        "batched",
        "buffers",
        "cancel_requested",
        "channel",
        "content",
        "engine_id",
        "future",
        "idle",
        "interrupt_requested",
        "job",
        "kind",
        "msg_id",
        "msg_type",
        "origin",
        "reply",
        "retries",
        "retry_on_error",
        "timed_out",
        "timeout",
        "timer",
    )

    def __init__(
        self,
        future: TaskFuture,
        msg_type: str,
        content: dict[str, Any],
        buffers: list[Any],
        job: Job,
        retries: int = 0,
        retry_on_error: bool = False,
        timeout: float | None = None,
        kind: str | None = None,
    ) -> None:
        self.kind = kind
        self.batched = False
        self.future = future
        self.msg_type = msg_type
        self.content = content
        self.buffers = buffers
        self.job = job
        self.retries = retries
        self.retry_on_error = retry_on_error
        self.timeout = timeout
        self.engine_id: int | None = None
        self.msg_id: str | None = None
        self.reply: dict[str, Any] | None = None
        self.channel = "shell"
        self.idle = False
        self.cancel_requested = False
        self.interrupt_requested = False
        self.timed_out = False
        self.timer: asyncio.TimerHandle | None = None
        self.origin: dict[str, Any] | None = None


class _EngineState:
    """The pool's live record of one engine (loop thread only)."""

    def __init__(self, engine_id: int, manager: AsyncKernelManager | None, connection_file: str):
        self.id = engine_id
        self.manager = manager
        self.connection_file = connection_file
        self.client: EngineClient | None = None
        self.state = "starting"
        self.uuid: str | None = None
        self.inflight: dict[str, _Task] = {}
        self.running: str | None = None
        self.stderr_path: Path | None = None
        self.stderr: Any = None
        self.iopub_seen = asyncio.Event()
        self.watcher: asyncio.Task[None] | None = None


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
    task (see :mod:`parallel_kernel.output`).  ``transport`` is how the
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
        _connection_files: list[str] | None = None,
    ) -> None:
        if hwm < 1:
            raise ValueError(f"hwm must be at least 1, got {hwm}")
        if _connection_files is None:
            if n is None:
                n = os.cpu_count() or 1
            if n < 1:
                raise ValueError(f"a pool needs at least one engine, got n={n}")
            _check_kernel_name(kernel_name)
            transport = _launch_transport(kernel_name, transport)
            if transport == "ipc" and transport_encryption == "auto":
                transport_encryption = "disabled"
        self.kernel_name = kernel_name
        self.hwm = hwm
        self.forward_output = forward_output
        self.restart = restart
        self.startup_timeout = startup_timeout
        self.transport = transport
        self.transport_encryption = transport_encryption
        self.task_channel = task_channel
        self._extra_arguments = list(extra_arguments or [])
        self._scheduler = Scheduler()
        self._output = output.OutputForwarder()
        self._engines: dict[int, _EngineState] = {}
        self._tasks: dict[str, _Task] = {}
        # control and introspection requests awaiting a reply: msg_id -> (waiter, engine id)
        self._requests: dict[str, tuple[asyncio.Future[dict[str, Any]], int]] = {}
        self._futures: weakref.WeakSet[TaskFuture] = weakref.WeakSet()
        # measured run time of tasks per function (seconds, moving average)
        self._runtimes: dict[str, float] = {}
        self._schedule_pending = False
        # tasks submitted from other threads, waiting for the loop to take them
        self._inbox: collections.deque[_Task] = collections.deque()
        self._inbox_wakeup = False
        self._closed = False
        self._background: set[asyncio.Future[Any]] = set()
        self._stderr_dir = tempfile.TemporaryDirectory(prefix="parallel-kernel-")
        self._loop, self._thread = _shared_loop()
        self._stopped = False
        try:
            if _connection_files is None:
                self._run(self._start_engines(n), timeout=startup_timeout * 2 + 10)
            else:
                self._run(self._connect_engines(_connection_files), timeout=startup_timeout + 10)
        except BaseException:
            self._teardown()
            raise
        self._finalizer = weakref.finalize(self, _abandon, self._loop, self._thread, self._engines)

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

    # ------------------------------------------------------------------ threads

    def _run(self, coro: Any, timeout: float | None) -> Any:
        """Run a coroutine on the pool's loop and wait for it (never from that loop)."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("this pool method blocks; it cannot be called from a pool callback")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        self._loop.call_soon_threadsafe(callback, *args)

    def _spawn(self, coro: Any) -> None:
        """Run a coroutine in the background on the loop, keeping a reference to it."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ engines

    async def _start_engines(self, n: int) -> None:
        results = await asyncio.gather(
            *(self._start_engine(i) for i in range(n)), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self._stop_engines()
            raise errors[0]

    async def _start_engine(self, engine_id: int) -> None:
        runtime_dir = jupyter_runtime_dir()
        os.makedirs(runtime_dir, mode=0o700, exist_ok=True)
        # in the runtime directory, where `jupyter console --existing kernel-<id>.json` looks
        connection_file = os.path.join(runtime_dir, f"kernel-{uuid.uuid4()}.json")
        manager = AsyncKernelManager(
            kernel_name=self.kernel_name,
            transport=self.transport,
            connection_file=connection_file,
        )
        if self.transport == "ipc":
            manager.ip = connection_file.removesuffix(".json") + "-ipc"
        engine = _EngineState(engine_id, manager, "")
        engine.stderr_path = Path(self._stderr_dir.name) / f"engine-{engine_id}.stderr"
        self._engines[engine_id] = engine
        self._scheduler.add_engine(engine_id, self.hwm)
        self._scheduler.set_available(engine_id, False)
        await self._launch(engine)
        engine.watcher = asyncio.ensure_future(self._watch_process(engine))

    async def _launch(self, engine: _EngineState) -> None:
        """Start (or restart) an owned engine's process and wait until it answers."""
        manager = engine.manager
        assert manager is not None
        arguments = [
            f"--ParallelKernel.engine_id={engine.id}",
            *ENGINE_ARGS,
            *self._extra_arguments,
        ]
        options: dict[str, Any] = {}
        if _provisioner_name(self.kernel_name) == "local-provisioner":
            # kept open for the engine's life: restarts reuse it, and its tail explains
            # failures (other provisioners start processes elsewhere, or pass their own)
            engine.stderr = open(engine.stderr_path, "ab")  # noqa: SIM115
            options["stderr"] = engine.stderr
        await manager.start_kernel(
            extra_arguments=arguments,
            env=engine_environment(),
            transport_encryption=self.transport_encryption,
            **options,
        )
        engine.connection_file = manager.connection_file
        await self._open(engine)

    async def _connect_engines(self, files: list[str]) -> None:
        for engine_id, path in enumerate(files):
            if not Path(path).is_file():
                raise FileNotFoundError(f"no connection file {path!r}")
            engine = _EngineState(engine_id, None, path)
            self._engines[engine_id] = engine
            self._scheduler.add_engine(engine_id, self.hwm)
            self._scheduler.set_available(engine_id, False)
        await asyncio.gather(*(self._attach(e) for e in self._engines.values()))

    async def _attach(self, engine: _EngineState) -> None:
        await self._open(engine)

    async def _open(self, engine: _EngineState) -> None:
        """Open the engine's sockets; return once it answers on shell and IOPub.

        IOPub is a subscription: messages published before it is in place are
        lost, so the engine counts as ready only once some IOPub message (the
        kernel's welcome, or the status of a kernel_info request) has arrived.
        """
        if self._closed and engine.state == "restarting":
            raise EngineStartError("the pool is shutting down")
        engine.iopub_seen = asyncio.Event()
        engine.client = EngineClient(kernel_client(engine.connection_file), self, heartbeat=True)
        engine.client.open()
        deadline = time.monotonic() + self.startup_timeout
        info = None
        while info is None or not engine.iopub_seen.is_set():
            reply = self._request(engine, "shell", "kernel_info_request", {})
            while not reply.done():
                await asyncio.wait({reply}, timeout=0.2)
                if engine.manager is not None and not await engine.manager.is_alive():
                    reply.cancel()
                    raise EngineStartError(self._start_failure(engine, "its process exited"))
                self._check_start_deadline(engine, deadline, reply)
            info = reply.result()["content"]
            log.debug(
                "Engine %d answered kernel_info (IOPub seen: %s)",
                engine.id,
                engine.iopub_seen.is_set(),
            )
            self._check_start_deadline(engine, deadline, reply)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(engine.iopub_seen.wait(), 0.5)
        parallel = info.get("parallel")
        if not isinstance(parallel, dict):
            raise EngineStartError(
                f"engine {engine.id} ({engine.connection_file}) is not a parallel kernel: "
                "its kernel_info has no 'parallel' feature"
            )
        engine.uuid = parallel.get("engine_uuid")
        if engine.manager is not None and parallel.get("engine_id") != engine.id:
            # a provisioner's launcher dropped the pool's --ParallelKernel.engine_id
            await self._request(
                engine,
                "shell",
                "execute_request",
                {
                    "code": f"get_ipython().kernel.engine_id = {engine.id}",
                    "silent": True,
                    "store_history": False,
                },
            )
        task_port = parallel.get("task_port")
        if self.task_channel and isinstance(task_port, int) and task_port > 0:
            engine.client.connect_task(task_port)
        engine.state = "idle"
        self._scheduler.set_available(engine.id, True)
        self._schedule()

    def _check_start_deadline(
        self, engine: _EngineState, deadline: float, reply: asyncio.Future[Any]
    ) -> None:
        if time.monotonic() <= deadline:
            return
        reply.cancel()
        what = "no answer" if not reply.done() else "no IOPub message"
        raise EngineStartError(
            self._start_failure(engine, f"{what} within {self.startup_timeout:g} s")
        )

    def _start_failure(self, engine: _EngineState, why: str) -> str:
        message = f"engine {engine.id} (kernelspec {self.kernel_name!r}) failed to start: {why}"
        if engine.stderr_path is not None and engine.stderr_path.exists():
            tail = engine.stderr_path.read_text(errors="replace").strip()[-4000:]
            if tail:
                message += f"\n--- its stderr ---\n{tail}"
        return message

    async def _watch_process(self, engine: _EngineState) -> None:
        """Notice an owned engine's process dying, within POLL_INTERVAL."""
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            alive = engine.manager is None or await engine.manager.is_alive()
            if engine.state in ("idle", "busy") and not alive:
                await self._lose(engine, await _exit_reason(engine.manager))

    def on_heartbeat_lost(self, client: EngineClient) -> None:
        engine = self._engine_of(client)
        if engine is not None and engine.state in ("idle", "busy"):
            self._spawn(self._lose(engine, "its heartbeat stopped"))

    async def _lose(self, engine: _EngineState, why: str) -> None:
        """An engine died: fail or retry its tasks, then restart it if the pool owns it."""
        if engine.state not in ("idle", "busy"):
            return
        engine.state = "dead"
        log.warning("Engine %d died (%s)", engine.id, why)
        self._scheduler.set_available(engine.id, False)
        self._scheduler.forget_outstanding(engine.id)
        lost = list(engine.inflight.values())
        engine.inflight.clear()
        engine.running = None
        for task in lost:
            if task.reply is not None:
                self._finish(task, task.msg_id)
                continue
            self._tasks.pop(task.msg_id or "", None)
            if task.retries > 0 and not task.future.done():
                task.retries -= 1
                self._requeue(task, avoid=engine.id)
            else:
                self._resolve(task, error=EngineDied(f"engine {engine.id} died ({why})"))
        for msg_id, (waiter, engine_id) in list(self._requests.items()):
            if engine_id == engine.id:
                self._requests.pop(msg_id, None)
                if not waiter.done():
                    waiter.set_exception(EngineDied(f"engine {engine.id} died ({why})"))
        if engine.client is not None:
            engine.client.close()
            engine.client = None
        if engine.manager is not None and self.restart and not self._closed:
            engine.state = "restarting"
            started = time.monotonic()
            try:
                await engine.manager.restart_kernel(now=True)
                engine.connection_file = engine.manager.connection_file
                await self._open(engine)
                log.info("Engine %d restarted in %.2f s", engine.id, time.monotonic() - started)
            except Exception as exc:
                engine.state = "dead"
                if engine.client is not None:
                    engine.client.close()
                    engine.client = None
                self._loop.call_exception_handler(
                    {"message": f"engine {engine.id} could not be restarted", "exception": exc}
                )
        self._fail_if_no_engines()
        self._schedule()

    def _fail_if_no_engines(self) -> None:
        """With every engine dead for good, fail the queued tasks instead of holding them."""
        if any(
            e.state in ("idle", "busy", "starting", "restarting") for e in self._engines.values()
        ):
            return
        for task in list(self._queued_tasks()):
            self._resolve(task, error=EngineDied("every engine of the pool is dead"))
        self._scheduler.queue.clear()

    def _engine_of(self, client: EngineClient) -> _EngineState | None:
        for engine in self._engines.values():
            if engine.client is client:
                return engine
        return None

    @property
    def engines(self) -> list[Engine]:
        """A snapshot of every engine: id, state, connection file, ownership."""
        return [
            Engine(
                id=e.id,
                state=e.state,
                connection_file=e.connection_file,
                owned=e.manager is not None,
                uuid=e.uuid,
                outstanding=len(e.inflight),
            )
            for e in sorted(self._engines.values(), key=lambda e: e.id)
        ]

    # ------------------------------------------------------------------ requests

    def _request(
        self, engine: _EngineState, channel: str, msg_type: str, content: dict[str, Any]
    ) -> asyncio.Future[dict[str, Any]]:
        """Send a non-task request and return a future for its reply message."""
        assert engine.client is not None
        msg_id = engine.client.send(channel, msg_type, content)
        waiter: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._requests[msg_id] = (waiter, engine.id)
        return waiter

    def on_reply(self, client: EngineClient, channel: str, msg: dict[str, Any]) -> None:
        msg_id = msg["parent_header"].get("msg_id")
        request = self._requests.pop(msg_id, None)
        if request is not None:
            waiter = request[0]
            if not waiter.done():
                waiter.set_result(msg)
            return
        task = self._tasks.get(msg_id)
        if task is None or task.reply is not None:
            return
        engine = self._engines[task.engine_id]
        engine.inflight.pop(msg_id, None)
        if engine.running == msg_id:
            engine.running = None
        # the task's idle status may have come first (IOPub and shell are not ordered)
        if not engine.inflight and engine.state == "busy":
            engine.state = "idle"
        self._scheduler.finished(engine.id, task.job.cost)
        task.reply = msg
        self._cancel_timer(task)
        if channel == "task":
            metadata = msg.get("metadata", {})
            if metadata.get("outputs") == 0:
                task.idle = True
            self._learn_runtime(task, metadata)
        self._track_running(engine)
        if task.idle or msg["content"].get("status") == "aborted":
            self._finish(task, msg_id)
        else:
            self._loop.call_later(OUTPUT_GRACE, self._finish, task, msg_id)
        self._schedule_soon()

    def on_iopub(self, client: EngineClient, msg: dict[str, Any]) -> None:
        msg_id = msg["parent_header"].get("msg_id")
        task = self._tasks.get(msg_id)
        msg_type = msg["msg_type"]
        content = msg["content"]
        engine = self._engine_of(client)
        if engine is not None:
            engine.iopub_seen.set()
        if msg_type == "status" and engine is not None:
            state = content.get("execution_state")
            if state == "busy" and task is not None and task.reply is None:
                engine.running = msg_id
                engine.state = "busy"
                if task.timeout is not None and task.timer is None:
                    task.timer = self._loop.call_later(task.timeout, self._timed_out, task, msg_id)
            elif state == "idle":
                if engine.running == msg_id:
                    engine.running = None
                if not engine.inflight and engine.state == "busy":
                    engine.state = "idle"
                if task is not None:
                    task.idle = True
                    self._finish(task, msg_id)
            return
        if task is None:
            return
        if msg_type == "stream":
            text = content.get("text", "")
            if content.get("name") == "stderr":
                task.future.stderr += text
            else:
                task.future.stdout += text
            if self.forward_output and engine is not None:
                self._output.stream(engine.id, content.get("name") or "stdout", text, task.origin)
        elif msg_type in output.RICH_TYPES:
            task.future.outputs.append(content)
            if self.forward_output and engine is not None:
                self._output.rich(engine.id, msg_type, content, task.origin)

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
        raises :class:`~parallel_kernel.serialize.SerializationError` here and
        nothing is sent.  Options (names reserved by ``submit``; pass a
        ``functools.partial`` for a function that takes such a keyword):

        - ``engine``: run on that engine id only;
        - ``after``: futures (or a :class:`Dependency`) that must finish first;
        - ``follow``: futures to run beside: on the engine where they ran;
        - ``retries``: resubmit this many times to another engine if the engine
          dies (and, with ``retry_on_error=True``, if the task raises);
        - ``timeout``: seconds the task may run (once started) before it is
          interrupted and fails with :class:`TaskTimeout`.
        """
        content, buffers = serialize.pack_apply(fn, args, kwargs)
        return self._submit_message(
            "apply_request",
            content,
            buffers,
            Job(target=engine, after=Dependency.coerce(after), follow=Dependency.coerce(follow)),
            retries=retries,
            retry_on_error=retry_on_error,
            timeout=timeout,
            kind=_kind(fn),
        )

    def _submit_message(
        self,
        msg_type: str,
        content: dict[str, Any],
        buffers: list[Any],
        job: Job,
        **options: Any,
    ) -> TaskFuture:
        if self._closed:
            raise RuntimeError("cannot schedule new tasks after shutdown")
        if options.get("timeout") is not None and options["timeout"] <= 0:
            raise ValueError(f"timeout must be positive, got {options['timeout']}")
        future = TaskFuture(self)
        task = _Task(future, msg_type, content, buffers, job, **options)
        if self.forward_output:
            task.origin = output.origin()
        future._task = task
        self._futures.add(future)
        for dependency in (job.after, job.follow):
            for dep in dependency.futures if dependency else ():
                dep.add_done_callback(lambda _f: self._call_soon(self._schedule))
        self._inbox.append(task)
        if not self._inbox_wakeup:
            self._inbox_wakeup = True
            self._call_soon(self._take_inbox)
        return future

    def _take_inbox(self) -> None:
        """Queue every task submitted since the last wake-up, then schedule once.

        A burst of submits costs one wake-up of the loop, not one per task.
        """
        self._inbox_wakeup = False
        inbox = self._inbox
        while inbox:
            self._enqueue(inbox.popleft(), schedule=False)
        self._schedule()
        self._fail_if_no_engines()

    def _enqueue(self, task: _Task, schedule: bool = True) -> None:
        if task.future.done():
            return
        task.job.task = task
        # a task with a timeout is timed from its own busy status, which only the
        # shell channel publishes: it goes there, alone
        task.job.cost = 1.0 if task.timeout is not None else self._cost(task.kind)
        self._scheduler.queue.append(task.job)
        if schedule:
            self._schedule()
            self._fail_if_no_engines()

    def _requeue(self, task: _Task, avoid: int | None = None) -> None:
        """Queue a task again, on an engine other than ``avoid`` when it may run elsewhere."""
        others = self._scheduler.eligible(task.job) - {avoid}
        if avoid is not None and others:
            task.job.blacklist.add(avoid)
        self._cancel_timer(task)
        task.engine_id = task.msg_id = task.reply = None
        task.idle = task.timed_out = False
        task.future.stdout = task.future.stderr = ""
        task.future.outputs = []
        self._enqueue(task)

    def _cost(self, kind: str | None) -> float:
        """The share of an engine slot a task takes, from its function's measured run time.

        Tasks of a function not seen yet, or longer than ``QUEUED_WORK_PER_SLOT``,
        take a whole slot; short ones a fraction, so an engine gets several
        at a time (sent as one message) and never waits for the client between them.
        """
        runtime = self._runtimes.get(kind) if kind is not None else None
        if runtime is None:
            return 1.0
        share = int(QUEUED_WORK_PER_SLOT / max(runtime, 1e-6))
        return 1.0 / min(MAX_TASKS_PER_SLOT, max(1, share))

    def _learn_runtime(self, task: _Task, metadata: dict[str, Any]) -> None:
        runtime = metadata.get("runtime")
        if task.kind is None or not isinstance(runtime, float):
            return
        previous = self._runtimes.get(task.kind)
        self._runtimes[task.kind] = runtime if previous is None else 0.7 * previous + 0.3 * runtime
        if len(self._runtimes) > 1000:
            self._runtimes.pop(next(iter(self._runtimes)))

    def _schedule_soon(self) -> None:
        """Schedule once this loop iteration's replies are all in (they may free many slots)."""
        if not self._schedule_pending and self._scheduler.queue:
            self._schedule_pending = True
            self._loop.call_soon(self._scheduled)

    def _scheduled(self) -> None:
        self._schedule_pending = False
        self._schedule()

    def _queued_tasks(self) -> Iterator[_Task]:
        for job in self._scheduler.queue:
            if job.task is not None:
                yield job.task

    def _schedule(self) -> None:
        """Send every queued task that an engine can take now.

        Tasks for one engine's task channel go out together, as one
        ``apply_batch_request`` when there are several.
        """
        batches: dict[int, list[_Task]] = {}
        for job, engine_id in self._scheduler.assignments():
            task: _Task | None = job.task
            if task is None:  # resolved while queued
                if engine_id >= 0:
                    self._scheduler.finished(engine_id, job.cost)
                continue
            if engine_id < 0:
                self._resolve(task, error=self._scheduler.reason(job))
                continue
            if task.future.done():
                self._scheduler.finished(engine_id, job.cost)
                continue
            engine = self._engines[engine_id]
            task.engine_id = engine_id
            task.future.engine_id = engine_id
            if engine.client is None:
                self._unreachable(engine, [task], ConnectionError("its sockets are closed"))
                continue
            if (
                task.msg_type == "apply_request"
                and task.timeout is None
                and engine.client.has_task_channel
            ):
                task.channel = "task"
                if job.cost < 1.0:
                    batches.setdefault(engine_id, []).append(task)
                    continue
            else:
                task.channel = "shell"
            try:
                msg_id = engine.client.send(task.channel, task.msg_type, task.content, task.buffers)
            except Exception as exc:
                self._unreachable(engine, [task], exc)
                continue
            self._sent(engine, task, msg_id)
        for engine_id, tasks in batches.items():
            engine = self._engines[engine_id]
            try:
                if len(tasks) == 1:
                    [task] = tasks
                    msg_ids = [
                        engine.client.send("task", task.msg_type, task.content, task.buffers)
                    ]
                else:
                    msg_ids = engine.client.send_batch([(t.content, t.buffers) for t in tasks])
            except Exception as exc:
                self._unreachable(engine, tasks, exc)
                continue
            for task, msg_id in zip(tasks, msg_ids, strict=True):
                task.batched = len(tasks) > 1
                self._sent(engine, task, msg_id)

    def _sent(self, engine: _EngineState, task: _Task, msg_id: str) -> None:
        task.msg_id = msg_id
        task.future.msg_id = msg_id
        self._tasks[msg_id] = task
        engine.inflight[msg_id] = task
        self._track_running(engine)

    def _unreachable(self, engine: _EngineState, tasks: list[_Task], exc: Exception) -> None:
        for task in tasks:
            self._scheduler.finished(engine.id, task.job.cost)
            self._resolve(task, error=EngineDied(f"engine {engine.id} is unreachable: {exc}"))

    def _track_running(self, engine: _EngineState) -> None:
        """Task-channel tasks run in the order sent: the oldest unanswered one is running.

        (The task channel publishes no ``busy`` status; shell requests are
        tracked by theirs.)
        """
        if engine.running is not None or not engine.inflight:
            return
        task = next(iter(engine.inflight.values()))
        if task.channel != "task":
            return
        engine.running = task.msg_id
        engine.state = "busy"
        if task.timeout is not None and task.timer is None:
            task.timer = self._loop.call_later(task.timeout, self._timed_out, task, task.msg_id)

    def _finish(self, task: _Task, msg_id: str | None) -> None:
        """Turn the reply to attempt ``msg_id`` of a task into its future's outcome.

        Called when the reply and the output are both in, or when the output
        grace period ends; a call about an earlier attempt (the task was since
        retried) does nothing.
        """
        if msg_id is None or task.msg_id != msg_id or task.reply is None:
            return
        if self._tasks.pop(msg_id, None) is None:
            return
        msg = task.reply
        content = msg["content"]
        metadata = msg.get("metadata", {})
        task.future.metadata = metadata
        status = content.get("status")
        if status == "ok":
            try:
                value = (
                    serialize.unpack_result(content, msg["buffers"])
                    if task.msg_type == "apply_request"
                    else None
                )
            except serialize.DeserializationError as exc:
                self._resolve(task, error=exc)
            else:
                self._resolve(task, result=value)
            return
        if status == "aborted":
            if task.interrupt_requested:
                self._resolve(
                    task,
                    error=TaskInterrupted(
                        "KeyboardInterrupt",
                        "interrupted before it started",
                        [],
                        engine_id=task.engine_id,
                    ),
                )
            elif not task.cancel_requested:
                self._resolve(task, error=TaskAborted("the engine aborted this task"))
            return
        if metadata.get("dependencies_met") is False:
            engine_id = task.engine_id
            if engine_id is not None:
                task.job.blacklist.add(engine_id)
            self._requeue(task, avoid=engine_id)
            return
        if task.retry_on_error and task.retries > 0 and not task.timed_out:
            task.retries -= 1
            self._requeue(task, avoid=task.engine_id)
            return
        self._resolve(task, error=self._remote_error(task, content, msg["buffers"]))

    def _remote_error(
        self, task: _Task, content: dict[str, Any], buffers: list[Any]
    ) -> BaseException:
        ename = content.get("ename", "Error")
        if task.timed_out and ename == "KeyboardInterrupt":
            return TaskTimeout(f"the task ran longer than its timeout of {task.timeout:g} s")
        original = None
        if buffers and serialize.is_native_apply(content):
            try:
                original = serialize.unpack_result(content, buffers)
            except serialize.DeserializationError:
                original = None
        kind = TaskInterrupted if ename == "KeyboardInterrupt" else RemoteError
        error = kind(
            ename,
            content.get("evalue", ""),
            content.get("traceback", []),
            engine_id=task.engine_id,
            original=original if isinstance(original, BaseException) else None,
        )
        return error

    @staticmethod
    def _cancel_timer(task: _Task) -> None:
        if task.timer is not None:
            task.timer.cancel()
            task.timer = None

    def _resolve(self, task: _Task, result: Any = None, error: BaseException | None = None):
        self._cancel_timer(task)
        future = task.future
        if future.done():
            return
        if future.set_running_or_notify_cancel():
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)
        _release(task)

    # ------------------------------------------------------------------ cancel, interrupt

    def _cancel(self, future: TaskFuture) -> bool:
        """Cancel a task for ``TaskFuture.cancel``: locally, or by aborting it at its engine."""
        task: _Task | None = future._task
        if task is None:
            return False
        if threading.current_thread() is self._thread:
            return self._cancel_queued(task)
        try:
            return self._run(self._cancel_task(task), timeout=CONTROL_TIMEOUT + 5)
        except (concurrent.futures.TimeoutError, RuntimeError):
            return False

    def _cancel_queued(self, task: _Task) -> bool:
        if task.job in self._scheduler.queue:
            self._scheduler.queue.remove(task.job)
            return True
        return task.msg_id is None and task.reply is None

    async def _cancel_task(self, task: _Task) -> bool:
        if self._cancel_queued(task):
            return True
        if task.reply is not None or task.engine_id is None:
            return False
        engine = self._engines[task.engine_id]
        if engine.client is None or task.msg_id not in engine.inflight:
            return False
        task.cancel_requested = True
        waiter = self._request(engine, "control", "abort_request", {"msg_ids": [task.msg_id]})
        try:
            reply = await asyncio.wait_for(waiter, CONTROL_TIMEOUT)
        except (TimeoutError, EngineDied):
            task.cancel_requested = False
            return False
        if task.msg_id in reply["content"].get("pending", []):
            return True
        task.cancel_requested = False
        if task.reply is not None:
            self._finish(task, task.msg_id)
        return False

    def _interrupt_task(self, future: TaskFuture) -> bool:
        task: _Task | None = future._task
        if task is None:
            return False
        return self._run(self._interrupt_if_running(task), timeout=CONTROL_TIMEOUT + 5)

    async def _interrupt_if_running(self, task: _Task) -> bool:
        if task.engine_id is None or task.reply is not None:
            return False
        engine = self._engines[task.engine_id]
        if engine.running != task.msg_id:
            return False
        if task.batched and len(engine.inflight) > 1:
            # its reply may be waiting for the rest of its batch while the next task runs
            return False
        if task.channel == "task" and await self._abort_unstarted(engine, task):
            return True
        if task.reply is not None:
            return False
        await self._interrupt_engine(engine)
        return True

    async def _abort_unstarted(self, engine: _EngineState, task: _Task) -> bool:
        """Stop a task-channel task that may not have started; return whether it had not.

        The task channel publishes no ``busy``, so the oldest task in flight may
        still be on its way, and a SIGINT reaching an engine between tasks is
        ignored.  An abort settles it: either the engine will never start the
        task (it replies ``aborted``, raised as TaskInterrupted), or it has
        started and a SIGINT is what stops it.
        """
        task.interrupt_requested = True
        waiter = self._request(engine, "control", "abort_request", {"msg_ids": [task.msg_id]})
        try:
            reply = await asyncio.wait_for(waiter, CONTROL_TIMEOUT)
        except (TimeoutError, EngineDied):
            return False
        return task.msg_id in reply["content"].get("pending", [])

    async def _interrupt_engine(self, engine: _EngineState) -> None:
        if engine.manager is not None:
            await engine.manager.interrupt_kernel()
        elif engine.client is not None:
            await asyncio.wait_for(
                self._request(engine, "control", "interrupt_request", {}), CONTROL_TIMEOUT
            )

    def _timed_out(self, task: _Task, msg_id: str) -> None:
        task.timer = None
        if task.msg_id != msg_id or task.reply is not None or task.engine_id is None:
            return
        engine = self._engines[task.engine_id]
        if engine.running != task.msg_id:
            return
        task.timed_out = True
        self._spawn(self._interrupt_engine(engine))
        self._loop.call_later(INTERRUPT_GRACE, self._give_up, task, msg_id)

    def _give_up(self, task: _Task, msg_id: str) -> None:
        """The engine ignored the interrupt: fail the future; the engine's reply is dropped."""
        if task.msg_id == msg_id and task.reply is None:
            self._resolve(
                task,
                error=TaskTimeout(
                    f"the task ran longer than its timeout of {task.timeout:g} s and did not stop "
                    f"within {INTERRUPT_GRACE:g} s of its interrupt; engine {task.engine_id} is "
                    "still running it"
                ),
            )

    def interrupt(self, engine: int | None = None) -> None:
        """Interrupt whatever runs on one engine, or on all of them."""
        targets = [self._engines[engine]] if engine is not None else list(self._engines.values())

        async def interrupt_all() -> None:
            await asyncio.gather(*(self._interrupt_engine(e) for e in targets if e.client))

        self._run(interrupt_all(), timeout=CONTROL_TIMEOUT + 5)

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
            chunksize = max(1, math.ceil(len(items) / (4 * max(1, len(self._engines)))))
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
            self._submit_message("apply_request", content, buffers, Job(target=e.id))
            for e in self.engines
            if e.state not in ("dead", "stopped")
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
            if e.state not in ("dead", "stopped")
        ]
        for future in futures:
            future.result()
        return futures

    def clear(self) -> None:
        """Reset every engine's namespace (and re-run its start-up code)."""

        async def clear_all() -> list[dict[str, Any]]:
            waiters = [
                self._request(e, "control", "clear_request", {})
                for e in self._engines.values()
                if e.client is not None
            ]
            return await asyncio.wait_for(asyncio.gather(*waiters), CONTROL_TIMEOUT)

        for reply in self._run(clear_all(), timeout=CONTROL_TIMEOUT + 5):
            content = reply["content"]
            if content.get("status") != "ok":
                raise RemoteError(
                    content.get("ename", "Error"),
                    content.get("evalue", ""),
                    content.get("traceback", []),
                )

    # ------------------------------------------------------------------ shutdown

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting tasks; optionally cancel the pending ones; stop owned engines.

        Kernels attached with :meth:`connect` are left running.
        """
        if self._stopped:
            return
        if threading.current_thread() is self._thread:
            raise RuntimeError("shutdown() blocks; it cannot be called from a pool callback")
        self._closed = True
        if cancel_futures:
            for future in list(self._futures):
                if not future.done():
                    future.cancel()
        if wait:
            concurrent.futures.wait([f for f in list(self._futures) if not f.done()])
        self._teardown()

    def _teardown(self) -> None:
        self._closed = True
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer.detach()
        if not self._stopped and self._thread.is_alive():
            self._stopped = True
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._stop_engines(), self._loop).result(60)
        self._stopped = True
        self._stderr_dir.cleanup()

    async def _stop_engines(self) -> None:
        async def stop(engine: _EngineState) -> None:
            if engine.watcher is not None:
                engine.watcher.cancel()
            if engine.client is not None:
                engine.client.close()
                engine.client = None
            if engine.manager is not None and engine.state != "stopped":
                try:
                    await asyncio.wait_for(engine.manager.shutdown_kernel(now=False), 15)
                except Exception:
                    await engine.manager.shutdown_kernel(now=True)
            engine.state = "stopped"
            if engine.stderr is not None:
                engine.stderr.close()
            if engine.manager is not None and engine.manager.transport == "ipc":
                # an engine that was killed could not remove its own sockets
                for path in glob.glob(glob.escape(engine.manager.ip) + "-*"):
                    with contextlib.suppress(OSError):
                        os.remove(path)

        for task in list(self._tasks.values()):
            self._finish(task, task.msg_id)
        await asyncio.gather(*(stop(e) for e in self._engines.values()), return_exceptions=True)
        for task in list(self._tasks.values()) + list(self._queued_tasks()):
            self._resolve(task, error=EngineDied("the pool was shut down"))
        # the loop outlives the pool (resolving cancelled the tasks' timers)
        for background in list(self._background):
            background.cancel()

    def __repr__(self) -> str:
        states = ", ".join(f"{e.id}:{e.state}" for e in self.engines)
        return f"<Pool of {len(self._engines)} engines ({states})>"


#: What a resolved task keeps of its reply: that there was one.
_ANSWERED: dict[str, Any] = {"content": {}, "metadata": {}, "buffers": []}


def _release(task: _Task) -> None:
    """Let a resolved task's request, reply and future be freed as soon as the user drops them.

    Task, job and future refer to each other; without this, a large argument
    or result would live until the cyclic garbage collector happens to run.
    """
    task.content = {}
    task.buffers = []
    if task.reply is not None:
        task.reply = _ANSWERED
    task.job.task = None
    task.future._task = None


def _kind(fn: Any) -> str | None:
    """What tasks of ``fn`` have in common, for run-time estimates: its name and code.

    (Every lambda has the same name; its code object tells them apart.)
    """
    target = fn.func if isinstance(fn, functools.partial) else fn
    name = getattr(target, "__qualname__", None)
    if not isinstance(name, str):
        return None
    code = getattr(target, "__code__", None)
    return f"{getattr(target, '__module__', None)}.{name}:{id(code) if code else ''}"


#: Clean-ups of dropped pools running on the loop (referenced until done).
_abandoned: set[asyncio.Task[None]] = set()


def _abandon(
    loop: asyncio.AbstractEventLoop, thread: threading.Thread, engines: dict[int, _EngineState]
) -> None:
    """A pool dropped without shutdown: close its sockets and stop the engines it started.

    The loop is shared with other pools and lives on.  The garbage collector
    may call this on the loop's own thread, which must not wait for the loop.
    """

    async def stop() -> None:
        for engine in engines.values():
            if engine.watcher is not None:
                engine.watcher.cancel()
            if engine.client is not None:
                engine.client.close()
                engine.client = None
            if engine.manager is not None and engine.state != "stopped":
                with contextlib.suppress(Exception):
                    await engine.manager.shutdown_kernel(now=True)
                engine.state = "stopped"

    if not thread.is_alive():
        return
    if threading.current_thread() is thread:
        task = loop.create_task(stop())
        _abandoned.add(task)
        task.add_done_callback(_abandoned.discard)
        return
    with contextlib.suppress(Exception):
        asyncio.run_coroutine_threadsafe(stop(), loop).result(30)


_shared: tuple[int, asyncio.AbstractEventLoop, threading.Thread] | None = None
_shared_lock = threading.Lock()


def _shared_loop() -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    """The event loop, on a daemon thread, that every pool of this process runs on.

    Kernel provisioners may keep process-wide state tied to the loop they
    first ran on (gateway_provisioners' listener for engines' connection
    info does), so pools share one loop that lasts as long as the process
    instead of each stopping its own.  A forked child gets a loop of its own.
    """
    global _shared
    with _shared_lock:
        if _shared is None or _shared[0] != os.getpid() or not _shared[2].is_alive():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="parallel-kernel-pools", daemon=True
            )
            thread.start()
            _shared = (os.getpid(), loop, thread)
        return _shared[1], _shared[2]


async def _exit_reason(manager: AsyncKernelManager | None) -> str:
    """How an engine's process ended: its exit status or the signal that killed it."""
    provisioner = manager.provisioner if manager is not None else None
    code = await provisioner.poll() if provisioner is not None else None
    if code is None:
        return "its process exited"
    if code < 0:
        try:
            return f"its process was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"its process was killed by signal {-code}"
    return f"its process exited with status {code}"


#: Longest path of a Unix socket that every platform accepts (Linux allows 107 bytes).
MAX_SOCKET_PATH = 100


def _launch_transport(kernel_name: str, transport: str) -> str:
    """The transport for engines started from ``kernel_name``: ``transport`` with "auto" resolved.

    ipc needs a POSIX system, the local provisioner (other provisioners start
    kernels elsewhere) and socket paths short enough: jupyter_client names
    them after the connection file in the runtime directory.
    """
    if transport not in ("auto", "tcp", "ipc"):
        raise ValueError(f"transport must be 'auto', 'tcp' or 'ipc', got {transport!r}")
    if transport != "auto":
        return transport
    if os.name != "posix":
        return "tcp"
    if _provisioner_name(kernel_name) != "local-provisioner":
        return "tcp"
    longest = os.path.join(jupyter_runtime_dir(), f"kernel-{uuid.uuid4()}-ipc-65535")
    return "ipc" if len(os.fsencode(longest)) <= MAX_SOCKET_PATH else "tcp"


def engine_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the pool starts engines with: ``environ`` (default: this process's) on
    Linux with :data:`HUGE_PAGES_TUNABLE` added to ``GLIBC_TUNABLES``.

    A 64 MiB argument arrives in a buffer that glibc maps fresh for every
    message; on 4 KiB pages, faulting it in costs more than receiving it.  On
    huge pages the engine takes one fault per 2 MiB, which is why large echoes
    run faster than a plain ZMQ echo (docs/performance.md).  A
    ``glibc.malloc.hugetlb`` setting already in ``GLIBC_TUNABLES`` wins, so
    ``GLIBC_TUNABLES=glibc.malloc.hugetlb=0`` turns this off.  Other C
    libraries and systems ignore the variable.
    """
    env = dict(os.environ if environ is None else environ)
    if sys.platform != "linux":
        return env
    tunables = env.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb=" not in tunables:
        env["GLIBC_TUNABLES"] = ":".join(filter(None, (tunables, HUGE_PAGES_TUNABLE)))
    return env


def _provisioner_name(kernel_name: str) -> str:
    """The kernel provisioner that starts kernels of ``kernel_name`` (jupyter_client's default
    is the local one)."""
    metadata = KernelSpecManager().get_kernel_spec(kernel_name).metadata or {}
    provisioner = (metadata.get("kernel_provisioner") or {}).get("provisioner_name")
    return provisioner or "local-provisioner"


def _check_kernel_name(kernel_name: str) -> None:
    try:
        KernelSpecManager().get_kernel_spec(kernel_name)
    except NoSuchKernel:
        available = ", ".join(sorted(KernelSpecManager().find_kernel_specs())) or "none"
        raise ValueError(f"no kernelspec named {kernel_name!r}; available: {available}") from None
