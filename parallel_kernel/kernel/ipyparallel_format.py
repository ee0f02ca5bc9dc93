"""ipyparallel's ``apply_request`` wire format, spoken when ipyparallel is installed.

ipyparallel clients and controllers send ``apply_request`` with an empty
content dict and buffers made by ``ipyparallel.serialize.pack_apply_message``
(the canned function, an info dict, then each argument's frames), and expect
the result as ``serialize_object`` frames.  The kernel tells the two formats
apart per message: content that declares :data:`parallel_kernel.serialize.FORMAT`
is native, anything else is taken for ipyparallel's (see ``docs/protocol.md``).

ipyparallel is an optional dependency (``pip install "parallel-kernel[ipyparallel]"``);
its own functions do the (un)packing, so both sides agree by construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..serialize import DeserializationError, SerializationError, describe


def _serialize() -> Any:
    """``ipyparallel.serialize``, or a DeserializationError saying how to install it."""
    try:
        from ipyparallel import serialize
    except ImportError:
        raise DeserializationError(
            "the apply_request does not declare the parallel_kernel format, and ipyparallel "
            "(whose format it may be) is not installed on this engine: "
            'pip install "parallel-kernel[ipyparallel]"'
        ) from None
    return serialize


def unpack_apply(
    buffers: Sequence[Any], namespace: dict[str, Any]
) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """``(f, args, kwargs)`` from an ipyparallel ``apply_request``'s buffers.

    Canned functions are rebuilt with ``namespace`` as their globals, as on a
    stock ipyparallel engine.  Raises :class:`DeserializationError` if the
    buffers are not ipyparallel's format either.
    """
    serialize = _serialize()
    try:
        f, args, kwargs = serialize.unpack_apply_message(list(buffers), namespace, copy=False)
    except NameError:
        raise  # a Reference to a name the engine does not have, as a stock engine reports it
    except Exception as exc:
        if type(exc).__name__ == "UnmetDependency":
            raise  # ipyparallel's @depend / @require: the scheduler reroutes the task
        raise DeserializationError(
            "the apply_request declares neither the parallel_kernel format nor is it valid "
            f"ipyparallel format: {type(exc).__name__}: {exc}"
        ) from None
    return f, tuple(args), dict(kwargs)


def pack_result(result: Any, session: Any) -> list[Any]:
    """The ``apply_reply`` buffers of ``result``, with the session's size thresholds."""
    serialize = _serialize()
    try:
        return serialize.serialize_object(
            result,
            buffer_threshold=session.buffer_threshold,
            item_threshold=session.item_threshold,
        )
    except Exception as exc:
        raise SerializationError(f"cannot serialize {describe(result)}: {exc}") from exc
