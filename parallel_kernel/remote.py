"""Functions the pool sends to engines: chunks of ``map``, push/pull, ``require``, scatter.

This module runs inside the kernels, so it imports nothing of the client side.
Frames of these helpers are hidden from task tracebacks (``__tracebackhide__``),
so an error shows the user's function first.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .errors import UnmetDependency
from .namespace import bind_to_namespace, carried_names


def _namespace() -> dict[str, Any]:
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        raise RuntimeError("this function runs inside a parallel kernel")
    return shell.user_ns


def call_in_namespace(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` with the engine's user namespace as its globals, as apply_request does."""
    __tracebackhide__ = True
    namespace = _namespace()
    fn, carried = bind_to_namespace(fn, namespace)
    with carried_names(namespace, carried):
        return fn(*args, **kwargs)


def run_chunk(fn: Callable[..., Any], items: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Run ``fn(*args)`` for every argument tuple of a ``map`` chunk, in order."""
    __tracebackhide__ = True
    namespace = _namespace()
    fn, carried = bind_to_namespace(fn, namespace)
    with carried_names(namespace, carried):
        return [fn(*args) for args in items]


def push(values: dict[str, Any]) -> None:
    """Set names in the engine's namespace."""
    _namespace().update(values)


def pull(names: str | Iterable[str]) -> Any:
    """Read one name (a string) or several (a list) from the engine's namespace."""
    namespace = _namespace()
    if isinstance(names, str):
        return namespace[names]
    return [namespace[name] for name in names]


class Require:
    """A task that runs only on engines where some modules import (see :func:`require`)."""

    def __init__(self, modules: tuple[str, ...], fn: Callable[..., Any]) -> None:
        self.modules = modules
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", "task")
        self.__qualname__ = getattr(fn, "__qualname__", self.__name__)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        for module in self.modules:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise UnmetDependency(f"module {module!r} does not import here: {exc}") from None
        return call_in_namespace(self.fn, *args, **kwargs)


def require(*modules: str) -> Callable[[Callable[..., Any]], Require]:
    """Decorate a task so it runs only on engines where ``modules`` import.

    On an engine where one does not, the task raises ``UnmetDependency`` and the
    pool runs it on another engine; if no engine can, the future fails with
    ``DependencyError``.
    """

    def decorate(fn: Callable[..., Any]) -> Require:
        return Require(modules, fn)

    return decorate


def placed(value: Any) -> Any:
    """``value`` itself: a task that puts it on its engine (``Pool.scatter``)."""
    return value
