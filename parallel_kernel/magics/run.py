"""One ``%px``: code run as a cell on some engines, its output shown as it comes.

The code goes to each target engine as an ``execute_request`` (so the
engine's ``In``/``Out``, display hooks and magics work there), through the
pool like any task: it never runs on an engine while another cell or task
runs there.  While the notebook cell waits:

* output is shown as ``--group-outputs`` says (:mod:`.rendering`), and the
  progress line counts the engines that finished;
* ``--timeout S`` interrupts the engines still running S seconds after the
  cell sent the code (a timer does it, so a ``--noblock`` run is held to it
  too, whether or not ``%pxresult`` waits for it);
* ``--stop-on-error`` interrupts the others once one engine fails;
* interrupting the notebook cell (the stop button, Ctrl-C) interrupts the
  engines, waits a moment for their output, and stops the cell.

After all finished, a failure on any engine raises one
:class:`~parallel_kernel.ParallelCellError` naming every failed engine (their
tracebacks were shown once each with the output).
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Any

from ..errors import EngineTimeout, ParallelCellError
from ..pool.futures import TaskFuture
from . import targets
from .cell import CellOutput
from .rendering import GROUPINGS, Labeller, Piece, piece
from .settings import Settings

#: Seconds given to interrupted engines to end their code and send their output.
INTERRUPT_GRACE = 10.0
#: Seconds between two looks at the clock while the cell waits.
TICK = 0.1


class ParallelRun:
    """Code sent to engines by one parallel magic; its futures by engine id.

    ``%px --noblock`` returns it at once, its output held back: ``ready()``
    says whether every engine finished, ``show()`` (what ``%pxresult`` does)
    waits for them, shows the output and raises the errors.
    """

    def __init__(self, pool: Any, code: str, settings: Settings) -> None:
        self.code = code
        self.settings = settings
        self.engine_ids = targets.select(settings.targets, _serving(pool))
        self.cell = CellOutput()
        self.live = settings.block
        self.grouping = GROUPINGS[settings.group_outputs](Labeller(self.cell))
        self.pieces: list[Piece] = []
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._finished = 0
        self.timed_out: list[int] = []
        self._timer: threading.Timer | None = None
        self.futures: dict[int, TaskFuture] = {}
        if self.live and settings.progress:
            self._progress()
        for engine_id in self.engine_ids:
            future = pool.submit_cell(code, engine=engine_id, on_output=self._sink)
            self.futures[engine_id] = future
            future.add_done_callback(lambda _f, e=engine_id: self._engine_done(e))
        if settings.timeout is not None and not self.ready():
            self._timer = threading.Timer(settings.timeout, self._time_out)
            self._timer.daemon = True
            self._timer.start()

    # -- from the pool's loop thread

    def _sink(self, engine_id: int, msg_type: str, content: dict[str, Any]) -> None:
        item = piece(engine_id, msg_type, content)
        if item is None:
            return
        with self._lock:
            self.pieces.append(item)
        if self.live:
            self.grouping.add(item)

    def _engine_done(self, engine_id: int) -> None:
        with self._lock:
            self._finished += 1
            if self._finished == len(self.engine_ids) and self._timer is not None:
                self._timer.cancel()
        if self.live:
            self.grouping.engine_done(engine_id)
            if self.settings.progress:
                self._progress()

    def _progress(self) -> None:
        done, total = self._finished, len(self.engine_ids)
        failed = sum(1 for f in self.futures.values() if f.done() and _failed(f))
        text = f"%px: {done} of {total} engine{'s' if total != 1 else ''} finished"
        if failed:
            text += f", {failed} failed"
        if done == total:
            text += f" ({time.monotonic() - self.started:.1f} s)"
        self.cell.progress(text)

    # -- from the timer's thread

    def _time_out(self) -> None:
        """The timeout is up: interrupt the engines still running (or cancel their code)."""
        with self._lock:
            late = {e: f for e, f in self.futures.items() if not f.done()}
            self.timed_out = sorted(late)
        self._interrupt(late.values())

    # -- from the notebook's thread

    def ready(self) -> bool:
        """Whether every engine has finished."""
        return all(f.done() for f in self.futures.values())

    def wait(self) -> None:
        """Wait for the engines (as the settings say), show what is held, raise the errors."""
        try:
            self._wait_interruptibly()
        finally:
            self.grouping.finish()
        self._raise()

    def show(self) -> None:
        """Wait for the engines, then show all their output, grouped as the settings say,
        and raise their errors (what ``%pxresult`` does for a ``--noblock`` run)."""
        try:
            self._wait_interruptibly()
        finally:
            grouping = GROUPINGS[self.settings.group_outputs](Labeller(CellOutput()))
            with self._lock:
                pieces = list(self.pieces)
            for item in pieces:
                grouping.add(item)
            for engine_id in self.engine_ids:
                grouping.engine_done(engine_id)
            grouping.finish()
        self._raise()

    def _wait_interruptibly(self) -> None:
        """Wait; on Ctrl-C interrupt the engines and give them a moment before re-raising."""
        try:
            self._wait_for_engines()
        except KeyboardInterrupt:
            self._interrupt(self.futures.values())
            self._settle()
            raise

    def _wait_for_engines(self) -> None:
        pending = set(self.futures.values())
        while pending:
            done, pending = concurrent.futures.wait(
                pending, timeout=TICK, return_when=concurrent.futures.FIRST_COMPLETED
            )
            if self.settings.stop_on_error and any(_failed(f) for f in done):
                self._interrupt(pending)
                self._settle()
                return
            if self.timed_out:
                self._settle()
                return

    def _interrupt(self, futures: Any) -> None:
        for future in futures:
            if not future.done() and not future.cancel():
                future.interrupt()

    def _settle(self) -> None:
        """Give interrupted engines a moment to end and send their output."""
        concurrent.futures.wait(list(self.futures.values()), timeout=INTERRUPT_GRACE)

    def _raise(self) -> None:
        if self.timed_out:
            names = _names(self.timed_out)
            raise EngineTimeout(
                f"%px: engine{'s' if len(self.timed_out) > 1 else ''} {names} still ran after "
                f"{self.settings.timeout:g} s and {'were' if len(self.timed_out) > 1 else 'was'} "
                "interrupted",
                self.timed_out,
            )
        errors: dict[int, BaseException] = {}
        for engine_id, future in self.futures.items():
            if future.cancelled():
                continue
            if future.done() and future.exception() is not None:
                errors[engine_id] = future.exception()  # type: ignore[assignment]
        if errors:
            raise ParallelCellError(errors)


def _failed(future: TaskFuture) -> bool:
    return not future.cancelled() and future.exception() is not None


def _serving(pool: Any) -> list[int]:
    """Ids of the engines that take part (not dead, not stopped)."""
    return [e.id for e in pool.engines if e.state not in ("dead", "stopped")]


def _names(engine_ids: list[int]) -> str:
    return ", ".join(str(e) for e in engine_ids)
