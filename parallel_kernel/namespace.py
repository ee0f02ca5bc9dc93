"""How tasks share the kernel's user namespace.

Two jobs, both about the one dict that notebook cells, ``execute_request``s and
``apply_request`` tasks all use as their globals:

* :func:`bind_to_namespace` makes a function sent by value (from a script, a
  notebook, a lambda, a closure, a method of a class defined there) use the
  user namespace as its globals, so a task reads and writes engine state.
* :class:`NamespaceGate` keeps ``clear_request`` from resetting the namespace
  while any shell, main or subshell, is running user code.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FunctionType, MethodType
from typing import Any


def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


class _Rebinder:
    """Rebuilds by-value functions with ``namespace`` as globals, remembering what they carried.

    cloudpickle rebuilds a function it pickled by value with a *private*
    globals dict holding only the names the function referenced where it was
    defined.  A function's globals are read-only, so each such function is
    rebuilt; classes defined by value get their methods rebuilt in place.
    """

    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace
        self.private: dict[int, dict[str, Any]] = {}
        self._done: dict[int, Any] = {}

    def _is_private(self, globals_dict: dict[str, Any], module_name: str | None) -> bool:
        if globals_dict is self.namespace:
            return False
        module = sys.modules.get(module_name or "")
        return getattr(module, "__dict__", None) is not globals_dict

    def rebind(self, obj: Any) -> Any:
        """``obj`` rebuilt to use the namespace (each object once), or ``obj`` if it need not be."""
        key = id(obj)
        if key in self._done:
            return self._done[key]
        if isinstance(obj, FunctionType):
            result = self._function(obj)
        elif isinstance(obj, functools.partial):
            result = functools.partial(self.rebind(obj.func), *obj.args, **obj.keywords)
        elif isinstance(obj, MethodType):
            result = MethodType(self.rebind(obj.__func__), obj.__self__)
        elif isinstance(obj, type):
            result = self._class(obj)
        elif callable(obj) and not isinstance(obj, type(len)):
            self._class(type(obj))
            result = obj
        else:
            result = obj
        self._done[key] = result
        return result

    def _function(self, f: FunctionType) -> FunctionType:
        """A copy of ``f`` whose globals are the engine's namespace, if ``f`` came with
        private globals of its own (pickled by value); else ``f`` itself."""
        if not self._is_private(f.__globals__, f.__module__):
            return f
        self.private[id(f.__globals__)] = f.__globals__
        bound = FunctionType(f.__code__, self.namespace, f.__name__, f.__defaults__, f.__closure__)
        self._done[id(f)] = bound
        bound.__kwdefaults__ = f.__kwdefaults__
        bound.__qualname__ = f.__qualname__
        bound.__module__ = f.__module__
        bound.__doc__ = f.__doc__
        bound.__annotations__ = f.__annotations__
        bound.__dict__.update(f.__dict__)
        for cell in f.__closure__ or ():
            try:
                contents = cell.cell_contents
            except ValueError:
                continue  # an empty cell: a name assigned later in the enclosing function
            if isinstance(contents, FunctionType | functools.partial | MethodType | type):
                cell.cell_contents = self.rebind(contents)
        return bound

    def _class(self, cls: type) -> type:
        """Rebind ``cls``'s methods (plain, static and class methods) in place."""
        if cls.__module__ == "builtins":
            return cls
        for name, attr in list(vars(cls).items()):
            if isinstance(attr, staticmethod | classmethod):
                rebound = self.rebind(attr.__func__)
                if rebound is not attr.__func__:
                    setattr(cls, name, type(attr)(rebound))
            elif isinstance(attr, FunctionType):
                rebound = self.rebind(attr)
                if rebound is not attr:
                    setattr(cls, name, rebound)
        return cls

    def carried(self) -> dict[str, Any]:
        """Names the rebuilt functions referenced and the namespace lacks, with their values."""
        carried: dict[str, Any] = {}
        seen: set[int] = set()
        while pending := [d for key, d in self.private.items() if key not in seen]:
            for private in pending:
                seen.add(id(private))
                for name, value in list(private.items()):
                    if not _is_dunder(name) and name not in self.namespace:
                        carried[name] = self.rebind(value)
        return carried


def bind_to_namespace(
    f: Callable[..., Any], namespace: dict[str, Any]
) -> tuple[Callable[..., Any], dict[str, Any]]:
    """Return ``f`` rebuilt to use ``namespace`` as its globals, and the names it carried.

    Names resolve in ``namespace`` first: the engine's state wins.  The
    carried names are values the function referenced where it was defined and
    that ``namespace`` does not have; the caller binds them for the duration
    of the call (see :func:`carried_names`), so the function still finds them.
    Functions from importable modules are returned unchanged.
    """
    rebinder = _Rebinder(namespace)
    bound = rebinder.rebind(f)
    return bound, rebinder.carried()


@contextmanager
def carried_names(namespace: dict[str, Any], carried: dict[str, Any]) -> Iterator[None]:
    """Bind ``carried`` names in ``namespace`` while the block runs.

    Afterwards each name is removed again, unless the task assigned it a new
    value, which then stays, as any assignment to a global does.
    """
    namespace.update(carried)
    try:
        yield
    finally:
        for name, value in carried.items():
            if namespace.get(name) is value:
                del namespace[name]


class NamespaceGate:
    """Shared while user code runs in a subshell, exclusive while the namespace is cleared.

    The main shell runs one request at a time, so a clear that runs there
    (holding the main shell's lock) already excludes main-shell code; this
    gate also makes it wait for code running in subshells, and makes new
    subshell requests wait for the clear.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._running = 0
        self._clearing = False

    @contextmanager
    def running(self) -> Iterator[None]:
        """Hold the gate shared while user code runs (waits for a clear in progress)."""
        with self._condition:
            self._condition.wait_for(lambda: not self._clearing)
            self._running += 1
        try:
            yield
        finally:
            with self._condition:
                self._running -= 1
                self._condition.notify_all()

    @contextmanager
    def clearing(self) -> Iterator[None]:
        """Hold the gate alone while the namespace is cleared (waits for running code)."""
        with self._condition:
            self._condition.wait_for(lambda: not self._clearing)
            self._clearing = True
            self._condition.wait_for(lambda: self._running == 0)
        try:
            yield
        finally:
            with self._condition:
                self._clearing = False
                self._condition.notify_all()
