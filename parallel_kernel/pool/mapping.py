"""``Pool.map``: items cut into chunks, a progress bar of finished items, results in order.

A chunk is one task that runs the function over its items on the engine
(:func:`parallel_kernel.remote.run_chunk`), so many small items cost one
message each way.  The function is pickled once for all of them.
"""

from __future__ import annotations

import contextvars
import functools
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .. import remote, serialize
from ..errors import TaskInterrupted
from . import arguments
from .control import Control
from .futures import TaskFuture, _progress, task_of

#: Submits one packed call: ``submit(fn, args, function_frames, retries)``.
SubmitPacked = Callable[[Any, tuple[Any, ...], list[Any], int], TaskFuture]


def check_options(timeout: Any, chunksize: Any, retries: Any) -> None:
    """Raise a clear ``TypeError``/``ValueError`` for a bad option of ``map``."""
    if timeout is not None and not arguments.is_number(timeout):
        raise TypeError(
            f"timeout must be a number of seconds or None, got {type(timeout).__name__}"
        )
    arguments.check_retries(retries)
    if chunksize is not None and (not isinstance(chunksize, int) or isinstance(chunksize, bool)):
        raise TypeError(f"chunksize must be an int, got {type(chunksize).__name__}")
    if chunksize is not None and chunksize < 1:
        raise ValueError(f"chunksize must be at least 1, got {chunksize}")


def map_results(
    submit: SubmitPacked,
    control: Control,
    engines: int,
    fn: Callable[..., Any],
    iterables: tuple[Iterable[Any], ...],
    *,
    timeout: float | None,
    chunksize: int | None,
    progress: bool | dict[str, Any],
    retries: int,
) -> Iterator[Any]:
    """Submit ``fn`` over the zipped items (see ``Pool.map``); return the iterator of results.

    Without ``chunksize``, items are cut into about four chunks per engine
    (``engines`` of them).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    items = list(zip(*iterables, strict=False))
    if chunksize is None:
        chunksize = max(1, math.ceil(len(items) / (4 * max(1, engines))))
    if chunksize > 1 and arguments.any_inputs(items):
        chunksize = 1  # an item that is a task's result waits for it alone
    if chunksize == 1:
        frames = serialize.pack(fn)
        futures = [submit(fn, args, frames, retries) for args in items]
        sizes = [1] * len(futures)
    else:
        runner = functools.partial(remote.run_chunk, fn)
        frames = serialize.pack(runner)
        chunks = [items[i : i + chunksize] for i in range(0, len(items), chunksize)]
        futures = [submit(runner, (chunk,), frames, retries) for chunk in chunks]
        sizes = [len(chunk) for chunk in chunks]
    bar = _progress(len(items), progress, "map")
    counter = _FinishedItems(bar, futures, sizes) if bar is not None else None
    return _in_order(futures, chunksize > 1, deadline, counter, control)


class _FinishedItems:
    """A progress bar of the items finished (not cancelled or interrupted), as they finish.

    The bar advances from the pool's thread, as output of the caller's
    context: in a notebook, its widget updates belong to the calling cell.
    :meth:`close` first counts what finished but whose callback has not run
    yet, so the bar a finished map leaves behind shows every item.
    """

    def __init__(self, bar: Any, futures: list[TaskFuture], sizes: list[int]) -> None:
        self._bar = bar
        self._lock = threading.Lock()
        self._caller = contextvars.copy_context()
        self._sizes = dict(zip(map(id, futures), sizes, strict=True))
        self._all = list(futures)
        self._closed = False
        for future in futures:
            future.add_done_callback(self._advance)

    def _advance(self, future: Any) -> None:
        with self._lock:
            size = self._sizes.pop(id(future), 0)
            if self._closed or not size or _unfinished(future):
                return
            self._caller.run(self._bar.update, size)

    def close(self) -> None:
        """Count what has finished, then close the bar."""
        with self._lock:
            done = sum(
                self._sizes.pop(id(f), 0) for f in self._all if f.done() and not _unfinished(f)
            )
            if done:
                self._bar.update(done)
            self._closed = True
            self._all = []
            self._bar.close()


def _unfinished(future: Any) -> bool:
    """Whether a done future's items were stopped rather than finished."""
    return future.cancelled() or isinstance(future.exception(), TaskInterrupted)


def _in_order(
    futures: list[TaskFuture],
    chunked: bool,
    deadline: float | None,
    counter: _FinishedItems | None,
    control: Control,
) -> Iterator[Any]:
    """Yield results in order, letting go of each result once it is yielded (of a
    chunk too); an early stop (or the deadline) cancels the rest, and a
    KeyboardInterrupt (Ctrl-C) also interrupts what runs."""
    interrupt = False
    try:
        futures.reverse()
        while futures:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError("map did not finish within its timeout")
            futures[-1].result(remaining)
            if not chunked:
                # yielded straight from the future, so this frame keeps no reference
                yield futures.pop().result()
                continue
            chunk = futures.pop().result()
            chunk.reverse()
            while chunk:
                yield chunk.pop()
    except KeyboardInterrupt:
        interrupt = True
        raise
    finally:
        tasks = [task_of(f) for f in futures if not f.done()]
        if tasks:
            control.stop([t for t in tasks if t is not None], interrupt=interrupt)
        if counter is not None:
            counter.close()
