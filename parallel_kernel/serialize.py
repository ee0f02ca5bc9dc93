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
frame list is detected before anything is unpickled.  ``docs/protocol.md``
describes the layout for writers of other clients.

Both the kernel and the client import this module; nothing else in the project
knows how objects become frames.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Sequence
from types import CodeType, FunctionType, ModuleType
from typing import Any

import cloudpickle

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "INLINE_THRESHOLD",
    "DeserializationError",
    "SerializationError",
    "describe",
    "is_native_apply",
    "pack",
    "pack_apply",
    "pack_result",
    "unpack",
    "unpack_apply",
    "unpack_result",
]

#: Value of ``content["format"]`` in messages that use this wire format.
FORMAT = "parallel_kernel"
#: Value of ``content["version"]``; bumped on any incompatible layout change.
FORMAT_VERSION = 1
#: Out-of-band buffers smaller than this many bytes are pickled inline.
#: It matches jupyter_client's ``Session.copy_threshold``, below which ZMQ
#: copies a frame anyway.
INLINE_THRESHOLD = 64 * 1024

Frame = bytes | memoryview


class SerializationError(Exception):
    """An object could not be turned into frames (it is not picklable)."""


class DeserializationError(Exception):
    """Frames could not be turned back into an object.

    ``part`` names what was being unpacked (``"function"``, ``"arguments"``,
    ``"result"`` or ``"message"``), so an error can say which piece is bad.
    """

    def __init__(self, message: str, part: str = "message") -> None:
        super().__init__(message)
        self.part = part


def _out_of_band(frames: list[Frame]) -> Callable[[pickle.PickleBuffer], bool]:
    """A pickle ``buffer_callback`` that moves large contiguous buffers to ``frames``.

    Returning a true value tells pickle to keep the buffer in band.
    """

    def callback(buffer: pickle.PickleBuffer) -> bool:
        try:
            view = buffer.raw()
        except BufferError:
            return True  # not contiguous: pickle copies it in band
        if view.nbytes < INLINE_THRESHOLD:
            return True
        frames.append(view)
        return False

    return callback


def _rebuild_memoryview(buffer: Any, fmt: str, shape: tuple[int, ...]) -> memoryview:
    """Rebuild a pickled memoryview as a view of ``buffer`` (a received frame)."""
    return memoryview(buffer).cast("B").cast(fmt, shape)


class _Pickler(cloudpickle.Pickler):
    """cloudpickle, plus memoryviews, which plain pickle refuses, as out-of-band buffers."""

    def reducer_override(self, obj: Any) -> Any:
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
        return type(self.data), (pickle.PickleBuffer(self.data),)


def _lift(obj: Any) -> Any:
    if type(obj) in (bytes, bytearray) and len(obj) >= INLINE_THRESHOLD:
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
#: Types that are immutable all the way down when their items are (for the function cache).
_IMMUTABLE_SCALARS = _PLAIN_SCALARS | {bytes, range, type(...)}


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
        return len(obj) < INLINE_THRESHOLD
    if kind in (tuple, list):
        return all(_plain(item, budget) for item in obj)
    if kind is dict:
        return all(
            type(key) in _PLAIN_SCALARS and _plain(value, budget) for key, value in obj.items()
        )
    return False


class _FunctionCache:
    """Pickles of functions whose pickle cannot change while they stay the same objects.

    cloudpickle copies a function defined in a notebook or script by value,
    with the current values of the globals it names.  The pickle is reused
    only while each of those globals is still bound to the same object and
    that object is immutable (numbers, strings, tuples of them) or a plain
    module (not a package) pickled by name, and the function has no closure,
    no mutable defaults, no attributes, and the same name, module and doc:
    then pickling it again would give the same bytes.  Annotations must be
    strings or builtin types.  Anything else is pickled afresh every time.
    """

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self.entries: dict[int, tuple[Any, tuple[Any, ...], list[Frame]]] = {}

    def frames(self, f: Any) -> list[Frame]:
        if type(f) is not FunctionType or cloudpickle.cloudpickle._should_pickle_by_reference(f):
            return pack(f)  # a reference is cheap to pickle, and may change meaning
        entry = self.entries.get(id(f))
        if entry is not None and entry[0] is f and self._same(f, entry[1]):
            return entry[2]
        frames = pack(f)
        snapshot = self._snapshot(f)
        if snapshot is not None:
            if len(self.entries) >= self.size:
                self.entries.pop(next(iter(self.entries), None), None)
            self.entries[id(f)] = (f, snapshot, frames)
        return frames

    def _snapshot(self, f: FunctionType) -> tuple[Any, ...] | None:
        if f.__closure__ or f.__dict__ or f.__kwdefaults__:
            return None
        annotations = tuple(f.__annotations__.items())
        if not all(
            _immutable(v) or (type(v) is type and v in _BUILTIN_TYPES) for _, v in annotations
        ):
            return None
        if f.__defaults__ and not all(_immutable(d) for d in f.__defaults__):
            return None
        values = []
        namespace = f.__globals__
        for name in _global_names(f.__code__):
            value = namespace.get(name, _UNBOUND)
            if value is not _UNBOUND and not _immutable(value) and not _plain_module(value):
                return None
            values.append(value)
        return (
            f.__code__,
            f.__defaults__,
            f.__name__,
            f.__qualname__,
            f.__doc__,
            f.__module__,
            annotations,
            *values,
        )

    def _same(self, f: FunctionType, snapshot: tuple[Any, ...]) -> bool:
        current = (f.__code__, f.__defaults__, f.__name__, f.__qualname__, f.__doc__, f.__module__)
        if any(a is not b for a, b in zip(current, snapshot, strict=False)):
            return False
        if f.__closure__ or f.__dict__ or f.__kwdefaults__:
            return False
        annotations = snapshot[6]
        if len(f.__annotations__) != len(annotations) or any(
            f.__annotations__.get(key, _UNBOUND) is not value for key, value in annotations
        ):
            return False
        namespace = f.__globals__
        names = _global_names(f.__code__)
        return all(
            namespace.get(name, _UNBOUND) is value
            and (not isinstance(value, ModuleType) or _plain_module(value))
            for name, value in zip(names, snapshot[7:], strict=True)
        )


_UNBOUND = object()
_BUILTIN_TYPES = frozenset({int, float, complex, str, bytes, bool, object, type(None)})
_names_of: dict[CodeType, tuple[str, ...]] = {}


def _global_names(code: CodeType) -> tuple[str, ...]:
    """Every name a code object (and the code nested in it) may look up as a global."""
    names = _names_of.get(code)
    if names is None:
        found = dict.fromkeys(code.co_names)
        for const in code.co_consts:
            if isinstance(const, CodeType):
                found.update(dict.fromkeys(_global_names(const)))
        names = _names_of[code] = tuple(found)
        if len(_names_of) > 4096:
            _names_of.pop(next(iter(_names_of), None), None)
    return names


def _immutable(value: Any) -> bool:
    kind = type(value)
    if kind in _IMMUTABLE_SCALARS:
        return True
    if kind in (tuple, frozenset):
        return all(_immutable(item) for item in value)
    return False


def _plain_module(value: Any) -> bool:
    """A module pickled by name whose pickle cannot depend on which submodules are imported.

    (cloudpickle records the submodules a function reaches through a package,
    so a function naming a package is never cached.)
    """
    return (
        isinstance(value, ModuleType)
        and not hasattr(value, "__path__")
        and not cloudpickle.cloudpickle._is_registered_pickle_by_value(value)
    )


class _LoadedFunctions:
    """Functions unpickled from the same bytes before, when reusing one cannot be told apart.

    A pool sends the same function pickle for every task of a ``map``.  A
    function unpickled from those bytes is reused only if nothing in it can
    have changed since: no closure, no attributes, no keyword-only defaults,
    immutable defaults and annotations, and globals that are all immutable
    values or modules.  Everything else is unpickled afresh for every call, as
    it must be (a task may mutate a list its function carried).
    """

    def __init__(self, size: int = 256, largest: int = 2**16) -> None:
        self.size = size
        self.largest = largest
        self.entries: dict[bytes, Any] = {}

    def load(self, frames: Sequence[Frame]) -> Any:
        if len(frames) != 1 or memoryview(frames[0]).nbytes > self.largest:
            return unpack(frames, "function")
        key = bytes(frames[0])
        f = self.entries.get(key)
        if f is not None:
            return f
        f = unpack(frames, "function")
        if self._reusable(f):
            if len(self.entries) >= self.size:
                self.entries.pop(next(iter(self.entries)))
            self.entries[key] = f
        return f

    @staticmethod
    def _reusable(f: Any) -> bool:
        if type(f) is not FunctionType or f.__closure__ or f.__dict__ or f.__kwdefaults__:
            return False
        if f.__defaults__ and not all(_immutable(d) for d in f.__defaults__):
            return False
        if not all(
            _immutable(v) or (type(v) is type and v in _BUILTIN_TYPES)
            for v in f.__annotations__.values()
        ):
            return False
        return all(
            _immutable(value) or isinstance(value, ModuleType)
            for name, value in f.__globals__.items()
            if not (name.startswith("__") and name.endswith("__"))
        )


_functions = _FunctionCache()
_loaded = _LoadedFunctions()


def pack(obj: Any) -> list[Frame]:
    """Pickle ``obj`` into a list of frames: the pickle, then its large buffers.

    Large buffers are returned as memoryviews of the original objects (no copy),
    so the objects must not be mutated until the frames have been sent.

    Raises :class:`SerializationError` if ``obj`` cannot be pickled.
    """
    frames: list[Frame] = []
    try:
        file = io.BytesIO()
        _Pickler(file, protocol=5, buffer_callback=_out_of_band(frames)).dump(obj)
        payload = file.getbuffer()  # a view: no copy of a large pickle
    except Exception as exc:
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
    except Exception as exc:
        raise DeserializationError(f"cannot deserialize the {part}: {_reason(exc)}", part) from exc


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
    content: dict[str, Any], buffers: Sequence[Frame]
) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """Inverse of :func:`pack_apply`: return ``(f, args, kwargs)``.

    ``f`` is returned as unpickled; checking that it is callable is the
    caller's job, so the error can name the engine.  Raises
    :class:`DeserializationError` for any malformed message.
    """
    _check_version(content)
    function_frames, call_frames = _split(buffers, content.get("parts"), ("function", "arguments"))
    f = _loaded.load(function_frames)
    call = unpack(call_frames, "arguments")
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


def pack_result(result: Any) -> tuple[dict[str, Any], list[Frame]]:
    """Build the content fields and buffers that carry ``result`` in an ``apply_reply``."""
    frames = (
        [pickle.dumps(result, protocol=5)] if _plain(result, [64]) else pack(_lift_items(result))
    )
    return {"format": FORMAT, "version": FORMAT_VERSION, "parts": [len(frames)]}, frames


def unpack_result(content: dict[str, Any], buffers: Sequence[Frame]) -> Any:
    """Inverse of :func:`pack_result`."""
    _check_version(content)
    (frames,) = _split(buffers, content.get("parts"), ("result",))
    return unpack(frames, "result")


def _check_version(content: Any) -> None:
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
