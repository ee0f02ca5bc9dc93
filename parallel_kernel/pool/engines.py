"""The engines of a pool: starting or attaching, the handshake, liveness, loss, restart, stop.

An engine is ready once it has answered ``kernel_info`` on shell, said it is
a parallel kernel, and sent something on IOPub (a subscription: what is
published before it is in place is lost).  Liveness is watched twice: the
process of an engine the pool started is polled, and every engine's
heartbeat is pinged.  A lost engine's attempts go back to the dispatcher
(which retries or fails them); an owned one is restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import protocol, shared_memory
from ..errors import EngineStartError, EngineTimeout, RemoteError
from . import death, launch
from .connection import EngineConnection, kernel_client
from .engine_state import SERVING, EngineRecord, EngineState

if TYPE_CHECKING:
    from .core import PoolCore

#: Seconds between checks that owned engine processes are alive.
POLL_INTERVAL = 0.5
#: Seconds an owned engine gets to shut down before it is killed.
SHUTDOWN_TIMEOUT = 15.0

log = logging.getLogger(__name__)
#: Where a failing initializer is reported (at CRITICAL, as ``concurrent.futures`` does).
init_log = logging.getLogger("parallel_kernel")


class EngineSet:
    """Every engine of one pool, by id, and what happens to them (loop thread only)."""

    def __init__(self, core: PoolCore) -> None:
        self.core = core
        self.records: dict[int, EngineRecord] = {}
        #: Engines left out because their initializer failed.
        self.rejected: set[int] = set()

    def _add(self, engine_id: int, manager: Any, connection_file: str) -> EngineRecord:
        core = self.core
        record = EngineRecord(engine_id, core.scheduler, core.options.hwm, manager, connection_file)
        self.records[engine_id] = record
        return record

    # -- start

    async def start(self, n: int) -> None:
        """Start ``n`` engines from the kernelspec, concurrently; all or none."""
        results = await asyncio.gather(
            *(self._start_one(i) for i in range(n)), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.stop()
            raise errors[0]

    async def _start_one(self, engine_id: int) -> None:
        """Launch engine ``engine_id``, wait until it answers, then watch its process."""
        launcher = self.core.launcher
        record = self._add(engine_id, launcher.manager(), "")
        record.stderr_path = launcher.stderr_path(engine_id)
        await launcher.start(record)
        await self._open(record)
        if record.serving:
            record.watcher = asyncio.ensure_future(self._watch_process(record))

    async def connect(self, files: list[str], *, skip_unreachable: bool) -> None:
        """Attach to running kernels, given their connection files (engine ids in file order).

        A kernel that does not answer within the startup timeout fails the
        connect with :class:`EngineTimeout`, or, with ``skip_unreachable``, is
        left out (its engine is STOPPED) as long as one answers.
        """
        for engine_id, path in enumerate(files):
            if not Path(path).is_file():
                raise FileNotFoundError(f"no connection file {path!r}")
            self._add(engine_id, None, path)
        records = list(self.records.values())
        outcomes = await asyncio.gather(*(self._open(e) for e in records), return_exceptions=True)
        failed = {e.id: o for e, o in zip(records, outcomes, strict=True) if o is not None}
        silent = [i for i, o in failed.items() if isinstance(o, EngineTimeout)]
        if skip_unreachable and len(silent) == len(failed) < len(records):
            for engine_id in silent:
                log.warning("Left out: %s", failed[engine_id])
                self._disconnect(self.records[engine_id])
                self.records[engine_id].stop()
            return
        if failed:
            await self.stop()
            if len(silent) > 1 and len(silent) == len(failed):
                names = ", ".join(self.records[i].connection_file for i in silent)
                raise EngineTimeout(
                    f"no kernel answers for these connection files: {names}", silent
                )
            raise next(iter(failed.values()))

    async def _open(self, engine: EngineRecord) -> None:
        """Open the engine's sockets; return once it answers on shell and IOPub."""
        core = self.core
        if core.closed and engine.state is EngineState.RESTARTING:
            raise EngineStartError("the pool is shutting down")
        engine.iopub_seen = asyncio.Event()
        engine.connection = EngineConnection(
            kernel_client(engine.connection_file), core, engine, heartbeat=True
        )
        engine.connection.open()
        info = await self._handshake(engine)
        parallel = info.get("parallel")
        if not isinstance(parallel, dict):
            raise EngineStartError(
                f"engine {engine.id} ({engine.connection_file}) is not a parallel kernel: "
                "its kernel_info has no 'parallel' feature"
            )
        engine.uuid = parallel.get("engine_uuid")
        engine.reports_start = protocol.APPLY_STARTED in parallel.get("task_events", ())
        engine.aims_interrupts = "interrupt_request" in parallel.get("control_requests", ())
        if engine.owned and parallel.get("engine_id") != engine.id:
            # a provisioner's launcher dropped the pool's --ParallelKernel.engine_id
            await core.requests.send(
                engine,
                "shell",
                "execute_request",
                {
                    "code": f"get_ipython().kernel.engine_id = {engine.id}",
                    "silent": True,
                    "store_history": False,
                },
            )
        if core.place is not None:
            engine.shared = shared_memory.holder_at(parallel.get("shared_memory"))
        task_port = parallel.get("task_port")
        if core.options.task_channel and isinstance(task_port, int) and task_port > 0:
            engine.connection.connect_task(task_port)
        if engine.clues is not None:
            engine.clues.settled()
        if core.options.initializer is not None and not await self._initialize(engine):
            return
        engine.ready()
        core.dispatch.schedule()

    async def _initialize(self, engine: EngineRecord) -> bool:
        """Run the pool's initializer on the engine; if it fails, leave the engine out."""
        content, buffers = self.core.options.initializer
        reply = self.core.requests.send(engine, "shell", protocol.APPLY_REQUEST, content, buffers)
        while not reply.done():
            await asyncio.wait({reply}, timeout=0.2)
            manager = engine.manager
            if not reply.done() and manager is not None and not await manager.is_alive():
                reply.cancel()
                await self._reject(engine, "its process exited while running the initializer")
                return False
        result = reply.result()["content"]
        if result.get("status") == "ok":
            return True
        error = RemoteError(
            result.get("ename", "Error"), result.get("evalue", ""), result.get("traceback", [])
        )
        await self._reject(
            engine, f"its initializer failed\n{error.render_traceback() or error.ename}"
        )
        return False

    async def _reject(self, engine: EngineRecord, why: str) -> None:
        """Leave an engine out for good: it could not be initialized."""
        init_log.critical("Engine %d is not used: %s", engine.id, why)
        self.rejected.add(engine.id)
        await self._stop_one(engine)
        self.core.dispatch.fail_if_no_engines()

    async def _handshake(self, engine: EngineRecord) -> dict[str, Any]:
        """``kernel_info`` until it is answered and some IOPub message has arrived."""
        timeout = self.core.options.startup_timeout
        deadline = time.monotonic() + timeout
        info = None
        while info is None or not engine.iopub_seen.is_set():
            reply = self.core.requests.send(engine, "shell", "kernel_info_request", {})
            while not reply.done():
                await asyncio.wait({reply}, timeout=0.2)
                if engine.manager is not None and not await engine.manager.is_alive():
                    reply.cancel()
                    raise EngineStartError(self.core.launcher.failure(engine, "its process exited"))
                self._check_deadline(engine, deadline, reply)
            info = reply.result()["content"]
            log.debug(
                "Engine %d answered kernel_info (IOPub seen: %s)",
                engine.id,
                engine.iopub_seen.is_set(),
            )
            self._check_deadline(engine, deadline, reply)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(engine.iopub_seen.wait(), 0.5)
        return info

    def _check_deadline(
        self, engine: EngineRecord, deadline: float, reply: asyncio.Future[Any]
    ) -> None:
        """Fail the start if the engine did not answer (on shell and IOPub) in time."""
        if time.monotonic() <= deadline:
            return
        what = "no answer" if not reply.done() else "no IOPub message"
        reply.cancel()
        timeout = self.core.options.startup_timeout
        if not engine.owned:
            raise EngineTimeout(
                f"connection file {engine.connection_file}: the kernel does not answer "
                f"({what} within {timeout:g} s); is it still running?",
                [engine.id],
            )
        raise EngineStartError(self.core.launcher.failure(engine, f"{what} within {timeout:g} s"))

    # -- liveness

    async def _watch_process(self, engine: EngineRecord) -> None:
        """Notice an owned engine's process dying, within POLL_INTERVAL."""
        while engine.state is not EngineState.STOPPED:
            await asyncio.sleep(POLL_INTERVAL)
            alive = engine.manager is None or await engine.manager.is_alive()
            if engine.state in SERVING and not alive:
                why, by_itself, signal_name = await launch.exit_reason(engine.manager)
                cause = engine.clues.cause(signal_name) if engine.clues is not None else None
                await self.lose(engine, why, by_itself=by_itself, cause=cause)

    def heartbeat_lost(self, engine: EngineRecord) -> None:
        """The engine's heartbeat stopped answering."""
        if engine.serving:
            self.core.bridge.spawn(self.lose(engine, "its heartbeat stopped"))

    async def lose(
        self,
        engine: EngineRecord,
        why: str,
        *,
        by_itself: bool = False,
        cause: death.Cause | None = None,
        restart: bool | None = None,
    ) -> None:
        """An engine died: hand back its attempts, then restart it if the pool owns it.

        ``by_itself``: its process ended on its own (exited, or a fault), so what
        it was running may have started even without a report.  ``cause``:
        what its process left behind (see :mod:`.death`).  ``restart``: whether
        to start it again, if not as the pool's ``restart`` option says.
        """
        if not engine.serving:
            return
        core = self.core
        details = cause.details() if cause is not None else ""
        log.warning("Engine %d died (%s)%s", engine.id, why, f"\n{details}" if details else "")
        lost = engine.lose(by_itself=by_itself)
        wanted = core.options.restart if restart is None else restart
        restarting = engine.owned and wanted and not core.closed
        if restarting:
            engine.restart()  # before its tasks go back: they may wait for it
        else:
            # before its tasks go back: whoever sees one fail may submit again at once,
            # and must find the pool broken if no engine is left
            engine.retire()
            core.dispatch.fail_if_no_engines()
        core.dispatch.lost(engine, lost, why, cause)
        core.requests.fail(engine.id, death.engine_died(engine.id, why, cause))
        self._disconnect(engine)
        shared_memory.sweep()  # what was on its way to it
        if restarting:
            await self._restart(engine)
        if engine.state is EngineState.DEAD:
            engine.retire()
        core.dispatch.fail_if_no_engines()
        core.dispatch.schedule()

    async def restart(self, engine_id: int) -> None:
        """Restart an engine the pool started, on request: what runs or waits there goes
        as when an engine dies (elsewhere if it had not started, else failed or retried)."""
        engine = self.core.records.get(engine_id)
        if engine is None:
            known = ", ".join(str(i) for i in sorted(self.core.records))
            raise ValueError(f"no engine {engine_id} in this pool (engines: {known})")
        if not engine.owned:
            raise ValueError(
                f"engine {engine_id} was attached with Pool.connect: the pool cannot restart "
                "a kernel it did not start (restart it where it runs)"
            )
        if not engine.serving:
            raise ValueError(
                f"engine {engine_id} is {engine.state}: only a serving engine restarts"
            )
        self.core.stats.forget(engine_id)
        await self.lose(engine, "restarted on request", restart=True)
        if engine.state is not EngineState.IDLE:
            raise RuntimeError(f"engine {engine_id} could not be restarted: it is {engine.state}")

    async def _restart(self, engine: EngineRecord) -> None:
        """Start a RESTARTING owned engine's process again; it is DEAD if that fails."""
        started = time.monotonic()
        try:
            await engine.manager.restart_kernel(now=True)
            engine.connection_file = engine.manager.connection_file
            self.core.launcher.take_clues(engine)
            await self._open(engine)
            log.info("Engine %d restarted in %.2f s", engine.id, time.monotonic() - started)
        except Exception as exc:
            if engine.state is EngineState.RESTARTING:
                engine.lose()
            self._disconnect(engine)
            self.core.bridge.loop.call_exception_handler(
                {"message": f"engine {engine.id} could not be restarted", "exception": exc}
            )

    @staticmethod
    def _disconnect(engine: EngineRecord) -> None:
        if engine.connection is not None:
            engine.connection.close()
            engine.connection = None

    # -- stop

    async def stop(self) -> None:
        """Close every engine's sockets and shut down the engines the pool started."""
        await asyncio.gather(
            *(self._stop_one(e) for e in self.records.values()), return_exceptions=True
        )

    async def _stop_one(self, engine: EngineRecord) -> None:
        """Close one engine's sockets; shut it down (killing it if slow) if the pool owns it."""
        if engine.watcher is not None and engine.watcher is not asyncio.current_task():
            engine.watcher.cancel()
        self._disconnect(engine)
        was_stopped = engine.state is EngineState.STOPPED
        engine.stop()
        manager = engine.manager
        if manager is not None and not was_stopped:
            try:
                await asyncio.wait_for(manager.shutdown_kernel(now=False), SHUTDOWN_TIMEOUT)
            except Exception:
                await manager.shutdown_kernel(now=True)
        if engine.stderr is not None:
            engine.stderr.close()
        if manager is not None:
            launch.remove_sockets(manager)

    async def abandon(self) -> None:
        """Stop at once: close the sockets and kill the engines the pool started."""
        for engine in self.records.values():
            if engine.watcher is not None:
                engine.watcher.cancel()
            self._disconnect(engine)
            manager = engine.manager
            if manager is not None and engine.state is not EngineState.STOPPED:
                with contextlib.suppress(Exception):
                    await manager.shutdown_kernel(now=True)
            engine.stop()
            if manager is not None:
                launch.remove_sockets(manager)
