"""``Pool.scatter`` and ``Pool.gather``: values placed on engines, ahead of the tasks that use them.

A scattered value is the result of a task that returns its argument, kept on
the engine that ran it whatever its size (see :mod:`.kept`): its future is
an argument like any other future, and tasks that take it run where it is.
The items of a list (or the values of a dict) are spread over the engines
that serve at the time, in turn.  With ``broadcast=True`` each value is
placed on every one of them instead: one future, whose tasks take the copy
on their own engine; the engines of this host map one copy in shared memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import protocol, remote, serialize, shared_memory
from .futures import TaskFuture
from .scheduler import Job

if TYPE_CHECKING:
    from .engine_state import EngineRecord

#: ``submit_message(msg_type, content, buffers, job)``: a packed task to the pool.
SubmitMessage = Callable[..., TaskFuture]


def scatter_values(
    submit_message: SubmitMessage, engines: list[EngineRecord], data: Any, broadcast: bool
) -> Any:
    """Place ``data`` on engines: a future for one object, a list of futures for a list
    or tuple, a dict of futures for a dict (items spread over ``engines`` in turn, or
    each on every one of them with ``broadcast``)."""
    if broadcast:
        return _each(data, lambda value, _: _everywhere(submit_message, value, engines))
    engine_ids = [engine.id for engine in engines]
    return _each(data, lambda value, i: _place(submit_message, value, _turn(engine_ids, i)))


def _each(data: Any, place: Callable[[Any, int], TaskFuture]) -> Any:
    """``place(value, index)`` for one object, or each item of a list, tuple or dict."""
    if type(data) in (list, tuple):
        return [place(item, i) for i, item in enumerate(data)]
    if type(data) is dict:
        return {key: place(value, i) for i, (key, value) in enumerate(data.items())}
    return place(data, -1)


def gather_values(futures: Any, timeout: float | None) -> Any:
    """The values of ``futures`` (a future, a list or tuple of them, or a dict of them)."""
    if isinstance(futures, TaskFuture):
        return futures.result(timeout)
    if type(futures) in (list, tuple):
        return type(futures)(_value(f, f"[{i}]", timeout) for i, f in enumerate(futures))
    if type(futures) is dict:
        return {key: _value(f, f"[{key!r}]", timeout) for key, f in futures.items()}
    raise TypeError(
        "gather() takes a future, or a list, tuple or dict of futures, "
        f"got {type(futures).__name__}"
    )


def _value(future: Any, where: str, timeout: float | None) -> Any:
    if not isinstance(future, TaskFuture):
        raise TypeError(f"gather(): item {where} is not a future: {serialize.describe(future)}")
    return future.result(timeout)


def _turn(engine_ids: list[int], index: int) -> int | None:
    return engine_ids[index % len(engine_ids)] if engine_ids and index >= 0 else None


def _place(submit_message: SubmitMessage, value: Any, engine: int | None) -> TaskFuture:
    """A task that returns ``value`` on ``engine`` (or any), its result kept there."""
    content, buffers = _pack(value)
    return submit_message(protocol.APPLY_REQUEST, content, buffers, Job(target=engine))


def _everywhere(
    submit_message: SubmitMessage, value: Any, engines: list[EngineRecord]
) -> TaskFuture:
    """``value`` placed on every engine: the future of its first copy, which knows the
    others.  The engines of this host share one copy in shared memory."""
    if not engines:
        return _place(submit_message, value, None)
    content, buffers = _pack(value)
    if any(engine.shared is not None for engine in engines):
        buffers = shared_memory.hold(buffers)
    first, *others = (
        submit_message(protocol.APPLY_REQUEST, dict(content), buffers, Job(target=engine.id))
        for engine in engines
    )
    first._replicas = others
    return first


def _pack(value: Any) -> tuple[dict[str, Any], list[Any]]:
    """The request of a task that returns ``value``, its result kept whatever its size."""
    if isinstance(value, TaskFuture):
        raise TypeError("scatter() places values, not futures: a future's value is on its engine")
    try:
        content, buffers = serialize.pack_apply(remote.placed, (value,), {})
    except serialize.SerializationError as exc:
        cause = exc.__cause__ or exc
        raise serialize.SerializationError(
            f"scatter(): cannot serialize {serialize.describe(value)}: "
            f"{type(cause).__name__}: {cause}"
        ) from exc.__cause__
    content["keep_over"] = 0  # kept whatever its size: that is the point
    return content, buffers
