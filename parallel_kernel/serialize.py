"""The wire format of parallel_kernel: one place for packing and unpacking.

Objects are pickled with cloudpickle at pickle protocol 5.  Every buffer that
pickle hands out of band (a ``PickleBuffer``: numpy arrays, memoryviews, and
``bytes``/``bytearray`` arguments and results) and that is at least
:data:`INLINE_THRESHOLD` bytes becomes its own message frame, passed to ZMQ
without a copy; smaller buffers stay inside the pickle, where copying them is
cheaper than an extra frame.  On the receiving side the frames are handed back
to ``pickle.loads(..., buffers=...)``, so numpy arrays and memoryviews are
rebuilt on top of the received frame's memory, again without a copy (``bytes``
and ``bytearray`` own their memory, so they are rebuilt with one copy).

One *part* is a pickle frame followed by its out-of-band frames.  An
``apply_request`` carries two parts (the function, then the ``(args, kwargs)``
pair) and an ``apply_reply`` carries one (the result).  The content of each
message says how many frames belong to each part, so a truncated or padded
frame list is detected before anything is unpickled.  A task whose arguments
are other tasks' results carries those values as more parts, the *inputs*,
after its arguments: the arguments pickle holds a placeholder
(:func:`input_placeholder`) for each, replaced by the input's value when the
arguments are unpickled.  Between processes of one host, large frames may
travel in shared memory instead (:mod:`parallel_kernel.shared_memory`): the
unpacking functions take them from there.  ``docs/protocol.md``
describes the layout for writers of other clients.

Both the kernel and the client import this module; nothing else in the project
knows how objects become frames.
"""

from __future__ import annotations

import functools
import io
import pickle
import threading
import types
from collections.abc import Callable, Sequence
from typing import Any

import cloudpickle

from . import shared_memory, source
from .errors import DeserializationError, SerializationError
from .function_cache import FunctionCache, LoadedFunctions
from .protocol import LARGE_BUFFER

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "INLINE_THRESHOLD",
    "DeserializationError",
    "SerializationError",
    "describe",
    "input_placeholder",
    "is_native_apply",
    "pack",
    "pack_apply",
    "pack_result",
    "unpack",
    "unpack_apply",
    "unpack_result",
    "with_inputs",
]

#: Value of ``content["format"]`` in messages that use this wire format.
FORMAT = "parallel_kernel"
#: Value of ``content["version"]``; bumped on any incompatible layout change.
FORMAT_VERSION = 1
#: Out-of-band buffers smaller than this many bytes are pickled inline: an alias of
#: :data:`parallel_kernel.protocol.LARGE_BUFFER`, the size from which a buffer
#: travels as a frame of its own.
INLINE_THRESHOLD = LARGE_BUFFER

Frame = bytes | memoryview


def _out_of_band(frames: list[Frame]) -> Callable[[pickle.PickleBuffer], bool]:
    """A pickle ``buffer_callback`` that moves large contiguous buffers to ``frames``.

    Returning a true value tells pickle to keep the buffer in band.
    """

    def callback(buffer: pickle.PickleBuffer) -> bool:
        try:
            view = buffer.raw()
        except BufferError:
            return True  # not contiguous: pickle copies it in band
        if view.nbytes < LARGE_BUFFER:
            return True
        frames.append(view)
        return False

    return callback


def _rebuild_memoryview(buffer: Any, fmt: str, shape: tuple[int, ...]) -> memoryview:
    """Rebuild a pickled memoryview as a view of ``buffer`` (a received frame)."""
    return memoryview(buffer).cast("B").cast(fmt, shape)


class _Pickler(cloudpickle.Pickler):
    """cloudpickle, plus memoryviews, which plain pickle refuses, as out-of-band buffers,
    and code objects that keep their file name.

    cloudpickle names the file of code sent by value ``<dynamic-code>``; with
    the real name and the source lines carried along (:mod:`parallel_kernel.source`),
    a task's traceback shows its source on any engine.
    """

    def reducer_override(self, obj: Any) -> Any:
        """Pickle a memoryview as a :func:`_rebuild_memoryview` of an out-of-band buffer,
        a code object as its ``marshal`` bytes and source lines."""
        if type(obj) is types.CodeType:
            return source.reduce_code(obj)
        if type(obj) is memoryview:
            data = obj if obj.c_contiguous else memoryview(obj.tobytes())
            try:
                data.cast("B").cast(obj.format, obj.shape)
            except (TypeError, ValueError) as exc:
                raise pickle.PicklingError(
                    f"a memoryview of format {obj.format!r} and shape {obj.shape} cannot be "
                    "rebuilt on the other side; send a numpy array or bytes(view) instead"
                ) from exc
            return _rebuild_memoryview, (pickle.PickleBuffer(data), obj.format, obj.shape)
        return super().reducer_override(obj)


class _Blob:
    """A large ``bytes`` or ``bytearray`` that pickles as an out-of-band buffer.

    Pickle writes these two types in band before consulting any hook, so
    :func:`_lift` wraps them where the wire format can see them: each argument,
    keyword value and result, and the items of a result that is a list, tuple
    or dict.  They are rebuilt with one copy, since both types own their memory.
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes | bytearray) -> None:
        self.data = data

    def __reduce__(self) -> tuple[Any, ...]:
        """Rebuild as the wrapped type, from an out-of-band buffer."""
        return type(self.data), (pickle.PickleBuffer(self.data),)


def _lift(obj: Any) -> Any:
    """Wrap a large ``bytes``/``bytearray`` in a :class:`_Blob`; anything else as it is."""
    if type(obj) in (bytes, bytearray) and len(obj) >= LARGE_BUFFER:
        return _Blob(obj)
    return obj


def _lift_items(obj: Any) -> Any:
    """:func:`_lift` ``obj`` and the items of a list, tuple or dict, keeping its type."""
    kind = type(obj)
    if kind in (list, tuple):
        items = [_lift(item) for item in obj]
        if any(new is not old for new, old in zip(items, obj, strict=True)):
            return kind(items)
    elif kind is dict:
        lifted = {key: _lift(value) for key, value in obj.items()}
        if any(lifted[key] is not value for key, value in obj.items()):
            return lifted
    return _lift(obj)


#: Types whose values pickle the same with the standard pickler as with cloudpickle,
#: and never hold out-of-band buffers (bytes too, when small: see ``_plain``).
_PLAIN_SCALARS = frozenset({type(None), bool, int, float, complex, str})


def _plain(obj: Any, budget: list[int]) -> bool:
    """Whether ``obj`` is small plain data: scalars, short bytes, and tuples, lists
    and dicts of those (at most ``budget[0]`` items in all).

    Such data pickles the same with the C pickler, several times faster than
    cloudpickle's.
    """
    budget[0] -= 1
    if budget[0] < 0:
        return False
    kind = type(obj)
    if kind in _PLAIN_SCALARS:
        return True
    if kind is bytes:
        return len(obj) < LARGE_BUFFER
    if kind in (tuple, list):
        return all(_plain(item, budget) for item in obj)
    if kind is dict:
        return all(
            type(key) in _PLAIN_SCALARS and _plain(value, budget) for key, value in obj.items()
        )
    return False


def pack(obj: Any) -> list[Frame]:
    """Pickle ``obj`` into a list of frames: the pickle, then its large buffers.

    Large buffers are returned as memoryviews of the original objects (no copy),
    so the objects must not be mutated until the frames have been sent.

    Raises :class:`SerializationError` if ``obj`` cannot be pickled, with what
    pickling raised (any exception but ``KeyboardInterrupt``) as its cause.
    """
    frames: list[Frame] = []
    try:
        file = io.BytesIO()
        _Pickler(file, protocol=5, buffer_callback=_out_of_band(frames)).dump(obj)
        payload = file.getbuffer()  # a view: no copy of a large pickle
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # an object's __reduce__ may raise anything, SystemExit too
        raise SerializationError(f"cannot serialize {describe(obj)}: {_reason(exc)}") from exc
    return [payload, *frames]


def unpack(frames: Sequence[Frame], part: str = "message") -> Any:
    """Rebuild the object that :func:`pack` turned into ``frames``.

    Raises :class:`DeserializationError` with ``part`` if the frames are not a
    valid pickle or refer to something missing here (a module, a class).
    """
    if not frames:
        raise DeserializationError(f"no frames for the {part}", part)
    try:
        return pickle.loads(frames[0], buffers=frames[1:])
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a __setstate__ or __reduce__ may raise anything
        raise DeserializationError(f"cannot deserialize the {part}: {_reason(exc)}", part) from exc


_functions = FunctionCache(pack)
_loaded = LoadedFunctions(functools.partial(unpack, part="function"))


def _split(frames: Sequence[Frame], counts: Any, names: Sequence[str]) -> list[Sequence[Frame]]:
    """Cut ``frames`` into consecutive parts of the sizes given by ``counts``."""
    if (
        not isinstance(counts, list)
        or len(counts) != len(names)
        or not all(type(n) is int and n >= 1 for n in counts)
    ):
        raise DeserializationError(
            f"content 'parts' must be a list of {len(names)} positive integers, got {counts!r}"
        )
    if sum(counts) != len(frames):
        raise DeserializationError(
            f"message declares {sum(counts)} buffers ({dict(zip(names, counts, strict=True))})"
            f" but carries {len(frames)}"
        )
    parts, start = [], 0
    for n in counts:
        parts.append(frames[start : start + n])
        start += n
    return parts


def is_native_apply(content: Any) -> bool:
    """Whether an ``apply_request`` content dict declares this wire format."""
    return isinstance(content, dict) and content.get("format") == FORMAT


class _Input:
    """Stands, in a task's arguments, for the value of its input number ``index``."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __reduce__(self) -> tuple[Any, ...]:
        return _input_value, (self.index,)

    def __repr__(self) -> str:
        return f"<input {self.index}>"


def input_placeholder(index: int) -> Any:
    """What to put in a task's arguments where the value of input ``index`` goes
    (the inputs themselves are added by :func:`with_inputs`)."""
    return _Input(index)


#: The values of the inputs of the arguments being unpickled on this thread.
_unpacking = threading.local()


def _input_value(index: int) -> Any:
    """The value of input ``index`` of the task whose arguments are being unpickled."""
    values = getattr(_unpacking, "inputs", None)
    if values is None or not 0 <= index < len(values):
        raise DeserializationError(
            f"the arguments refer to input {index}, which the message does not carry",
            "arguments",
        )
    return values[index]


class Kept:
    """An input that is not carried in the message: it is kept on an engine, under
    ``key``; ``peer`` (the connection details of another engine) says where, if not
    on the engine that runs the task."""

    __slots__ = ("key", "peer")

    def __init__(self, key: str, peer: dict[str, Any] | None = None) -> None:
        self.key = key
        self.peer = peer


def with_inputs(
    content: dict[str, Any], buffers: list[Frame], values: Sequence[Any]
) -> tuple[dict[str, Any], list[Frame]]:
    """An ``apply_request`` packed by :func:`pack_apply`, plus the values of its inputs
    (each a value to carry, or a :class:`Kept`).

    Raises :class:`SerializationError` naming the input that cannot be pickled.
    """
    counts, frames = [], []
    kept: dict[str, Any] = {}
    for index, value in enumerate(values):
        if type(value) is Kept:
            kept[str(index)] = {"key": value.key, **({"peer": value.peer} if value.peer else {})}
            continue
        try:
            packed = pack(_lift(value))
        except SerializationError as exc:
            raise SerializationError(f"input {index}: {exc}") from exc.__cause__
        counts.append(len(packed))
        frames.extend(packed)
    parts = [*content["parts"][:2], *counts]
    extra = {"inputs": len(values), **({"kept": kept} if kept else {})}
    return {**content, "parts": parts, **extra}, [*buffers, *frames]


def pack_apply(
    f: Callable[..., Any],
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    function_frames: list[Frame] | None = None,
) -> tuple[dict[str, Any], list[Frame]]:
    """Build the content and buffers of an ``apply_request`` for ``f(*args, **kwargs)``.

    ``function_frames`` may carry ``pack(f)`` computed earlier, so a caller that
    sends the same function many times pickles it once.

    Raises :class:`SerializationError` naming the part that cannot be pickled.
    """
    if not callable(f):
        raise SerializationError(f"{describe(f)} is not callable")
    if function_frames is None:
        try:
            function_frames = _functions.frames(f)
        except SerializationError as exc:
            raise SerializationError(f"the function: {exc}") from exc.__cause__
    call = (tuple(args), kwargs or {})
    try:
        if _plain(call, [64]):
            call_frames: list[Frame] = [pickle.dumps(call, protocol=5)]
        else:
            lifted_args = tuple(_lift(arg) for arg in args)
            lifted_kwargs = {key: _lift(value) for key, value in (kwargs or {}).items()}
            call_frames = pack((lifted_args, lifted_kwargs))
    except SerializationError as exc:
        raise SerializationError(f"the arguments: {exc}") from exc.__cause__
    content = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "parts": [len(function_frames), len(call_frames)],
    }
    return content, [*function_frames, *call_frames]


def unpack_apply(
    content: dict[str, Any],
    buffers: Sequence[Frame],
    kept: Callable[[int, Any], Any] | None = None,
) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """Inverse of :func:`pack_apply`: return ``(f, args, kwargs)``.

    ``f`` is returned as unpickled; checking that it is callable is the
    caller's job, so the error can name the engine.  Raises
    :class:`DeserializationError` for any malformed message.
    """
    _check_version(content)
    buffers = shared_memory.attach(content, buffers)
    count = content.get("inputs", 0)
    if type(count) is not int or count < 0:
        raise DeserializationError(f"content 'inputs' must be a count, got {count!r}")
    elsewhere = _kept_inputs(content.get("kept", {}), count, kept)
    carried = [i for i in range(count) if i not in elsewhere]
    names = ("function", "arguments", *(f"input {i}" for i in carried))
    function_frames, call_frames, *input_frames = _split(buffers, content.get("parts"), names)
    f = _loaded.load(function_frames)
    values = dict(zip(carried, input_frames, strict=True))
    _unpacking.inputs = [
        kept(i, elsewhere[i])
        if kept is not None and i in elsewhere
        else unpack(values[i], f"input {i}")
        for i in range(count)
    ]
    try:
        call = unpack(call_frames, "arguments")
    finally:
        _unpacking.inputs = None
    if (
        not isinstance(call, tuple)
        or len(call) != 2
        or not isinstance(call[0], tuple)
        or not isinstance(call[1], dict)
    ):
        raise DeserializationError(
            f"the arguments must unpickle to a (tuple, dict) pair, got {describe(call)}",
            "arguments",
        )
    return f, call[0], call[1]


def _kept_inputs(
    kept: Any, count: int, resolve: Callable[[int, Any], Any] | None
) -> dict[int, Any]:
    """The inputs not carried as parts (content ``"kept"``: index -> where the value is)."""
    if not isinstance(kept, dict) or not all(
        isinstance(k, str) and k.isdigit() and int(k) < count for k in kept
    ):
        raise DeserializationError(
            f"content 'kept' must map input indexes (below {count}) to where they are, "
            f"got {describe(kept)}"
        )
    if kept and resolve is None:
        raise DeserializationError("the message refers to kept inputs, which only engines have")
    return {int(k): spec for k, spec in kept.items()}


def pack_result(result: Any) -> tuple[dict[str, Any], list[Frame]]:
    """Build the content fields and buffers that carry ``result`` in an ``apply_reply``."""
    frames = (
        [pickle.dumps(result, protocol=5)] if _plain(result, [64]) else pack(_lift_items(result))
    )
    return {"format": FORMAT, "version": FORMAT_VERSION, "parts": [len(frames)]}, frames


def unpack_result(content: dict[str, Any], buffers: Sequence[Frame]) -> Any:
    """Inverse of :func:`pack_result`."""
    _check_version(content)
    buffers = shared_memory.attach(content, buffers)
    (frames,) = _split(buffers, content.get("parts"), ("result",))
    return unpack(frames, "result")


def _check_version(content: Any) -> None:
    """Raise :class:`DeserializationError` unless ``content`` declares this format's version."""
    if not is_native_apply(content):
        raise DeserializationError(
            f"content does not declare format {FORMAT!r}: {describe(content)}"
        )
    if content.get("version") != FORMAT_VERSION:
        raise DeserializationError(
            f"unsupported {FORMAT} format version {content.get('version')!r}"
            f" (this side speaks {FORMAT_VERSION})"
        )


def describe(obj: Any) -> str:
    """A short, safe description of an object for error messages."""
    try:
        text = repr(obj)
    except Exception:
        text = f"<{type(obj).__qualname__} object>"
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(obj).__qualname__} {text}"


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
