"""Pickling a function once for all the tasks that send it, and unpickling it once too.

A pool sends the same function with every task of a ``map``.  Pickling it
with cloudpickle, and unpickling it on the engine, costs more than a small
task's arguments and result, so :mod:`parallel_kernel.serialize` keeps both:

* :class:`FunctionCache` (the sending side) reuses a function's pickle while
  pickling it again would give the same bytes;
* :class:`LoadedFunctions` (the receiving side) reuses the function unpickled
  from the same bytes while nothing in it can have changed.

Both are conservative: anything that might differ (closures, mutable
defaults or globals, attributes, packages) is pickled and unpickled afresh.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import CodeType, FunctionType, ModuleType
from typing import Any

import cloudpickle

#: Types that are immutable all the way down when their items are.
_IMMUTABLE_SCALARS = frozenset(
    {type(None), bool, int, float, complex, str, bytes, range, type(...)}
)


class FunctionCache:
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

    def __init__(self, pack: Callable[[Any], list[Any]], size: int = 256) -> None:
        self.pack = pack
        self.size = size
        self.entries: dict[int, tuple[Any, tuple[Any, ...], list[Any]]] = {}

    def frames(self, f: Any) -> list[Any]:
        """``pack(f)``, reused from an earlier call while it cannot have changed."""
        if type(f) is not FunctionType or cloudpickle.cloudpickle._should_pickle_by_reference(f):
            return self.pack(f)  # a reference is cheap to pickle, and may change meaning
        entry = self.entries.get(id(f))
        if entry is not None and entry[0] is f and self._same(f, entry[1]):
            return entry[2]
        frames = self.pack(f)
        snapshot = self._snapshot(f)
        if snapshot is not None:
            if len(self.entries) >= self.size:
                self.entries.pop(next(iter(self.entries), None), None)
            self.entries[id(f)] = (f, snapshot, frames)
        return frames

    def _snapshot(self, f: FunctionType) -> tuple[Any, ...] | None:
        """What ``f``'s pickle depends on, or ``None`` if it may change unseen (not cached)."""
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
        """Whether everything ``f``'s pickle depends on is still what ``snapshot`` recorded."""
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
    """Whether ``value`` is immutable all the way down (scalars, and tuples of them)."""
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


class LoadedFunctions:
    """Functions unpickled from the same bytes before, when reusing one cannot be told apart.

    A pool sends the same function pickle for every task of a ``map``.  A
    function unpickled from those bytes is reused only if nothing in it can
    have changed since: no closure, no attributes, no keyword-only defaults,
    immutable defaults and annotations, and globals that are all immutable
    values or modules.  Everything else is unpickled afresh for every call, as
    it must be (a task may mutate a list its function carried).
    """

    def __init__(
        self, unpack: Callable[[Sequence[Any]], Any], size: int = 256, largest: int = 2**16
    ) -> None:
        self.unpack = unpack
        self.size = size
        self.largest = largest
        self.entries: dict[bytes, Any] = {}

    def load(self, frames: Sequence[Any]) -> Any:
        """``unpack(frames)``, reusing the function unpickled from the same bytes if allowed."""
        if len(frames) != 1 or memoryview(frames[0]).nbytes > self.largest:
            return self.unpack(frames)
        key = bytes(frames[0])
        f = self.entries.get(key)
        if f is not None:
            return f
        f = self.unpack(frames)
        if self._reusable(f):
            if len(self.entries) >= self.size:
                self.entries.pop(next(iter(self.entries)))
            self.entries[key] = f
        return f

    @staticmethod
    def _reusable(f: Any) -> bool:
        """Whether a function, once unpickled, can serve later calls unchanged."""
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
