"""The checks of a pool's, a submit's and a connect's arguments.

Each raises a ``TypeError`` or ``ValueError`` that names the argument, before
anything is packed or registered, so a bad call leaves the pool as it was.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .. import serialize, shared_memory
from .scheduler import Dependency


def engine_count(max_workers: Any, n: Any) -> int:
    """How many engines to start: ``max_workers`` (or its other name ``n``), by default
    one per CPU of this machine."""
    if max_workers is not None and n is not None:
        raise TypeError("Pool() got both max_workers and n (the same thing); pass one")
    count = max_workers if max_workers is not None else n
    if count is None:
        return os.cpu_count() or 1
    if not isinstance(count, int) or isinstance(count, bool):
        raise TypeError(f"max_workers must be an int, got {type(count).__name__} {count!r}")
    if count <= 0:
        raise ValueError("max_workers must be greater than 0")
    return count


def connection_file_path(name: str | os.PathLike[str]) -> str:
    """A connection file's path: as given if it exists, else a bare name looked up as
    ``jupyter console --existing`` does (current directory, then the runtime directory)."""
    path = Path(name).expanduser()
    if path.is_file() or path.parent != Path("."):
        return str(path)
    from jupyter_client import find_connection_file
    from jupyter_core.paths import jupyter_runtime_dir

    try:
        return find_connection_file(str(path))
    except OSError:
        raise FileNotFoundError(
            f"no connection file {str(path)!r} here or in the Jupyter runtime directory "
            f"{jupyter_runtime_dir()}"
        ) from None


def check_mp_context(mp_context: Any) -> None:
    """``mp_context`` is accepted for ProcessPoolExecutor's signature, and must be ``None``."""
    if mp_context is not None:
        raise ValueError(
            "a Pool's engines are Jupyter kernels started from a kernelspec, not "
            f"multiprocessing processes: mp_context must be None, got {mp_context!r}"
        )


def pack_initializer(
    initializer: Callable[..., Any] | None, initargs: Iterable[Any]
) -> tuple[dict[str, Any], list[Any]] | None:
    """The ``initializer(*initargs)`` call each engine runs first, packed once."""
    if initializer is None:
        return None
    if not callable(initializer):
        raise TypeError(f"initializer must be callable, got {type(initializer).__name__}")
    return serialize.pack_apply(initializer, tuple(initargs), {})


def check_keep_over(keep_over: Any) -> None:
    """``keep_over``: ``None`` or a number of bytes (an int, 0 or more)."""
    if keep_over is None:
        return
    if not isinstance(keep_over, int) or isinstance(keep_over, bool):
        raise TypeError(f"keep_over must be a number of bytes or None, got {keep_over!r}")
    if keep_over < 0:
        raise ValueError(f"keep_over must be 0 or more, got {keep_over}")


def check_shared_memory(choice: Any) -> None:
    """``shared_memory``: ``True``, ``False`` or ``"auto"``; ``True`` only where it works."""
    if choice not in (True, False, "auto") or type(choice) not in (bool, str):
        raise ValueError(f"shared_memory must be True, False or 'auto', got {choice!r}")
    if choice is True and shared_memory.place() is None:
        raise ValueError(
            "shared_memory=True, but this process has no shared memory: it needs Linux and "
            f"a private directory in memory (${shared_memory.DIRECTORY_ENV}, "
            "$XDG_RUNTIME_DIR or /dev/shm); see the log for why"
        )


def check_engine(engine: Any) -> int | None:
    """``submit(engine=...)``: an engine id or ``None``; returned as is."""
    if engine is not None and (not isinstance(engine, int) or isinstance(engine, bool)):
        raise TypeError(f"engine must be an engine id (an int), got {type(engine).__name__}")
    return engine


def dependency(name: str, value: Any) -> Dependency | None:
    """``after=`` or ``follow=`` as a :class:`Dependency` whose items are all futures."""
    try:
        dependency = Dependency.coerce(value)
    except TypeError:
        raise TypeError(
            f"{name} must be a future, an iterable of futures or a Dependency, "
            f"got {type(value).__name__}"
        ) from None
    for item in dependency.futures if dependency is not None else ():
        if not isinstance(item, concurrent.futures.Future):
            raise TypeError(f"{name} must hold futures, got {type(item).__name__} {item!r}")
    return dependency


def check_retries(retries: Any) -> None:
    """``retries``: a non-negative int."""
    if not isinstance(retries, int) or isinstance(retries, bool):
        raise TypeError(f"retries must be an int, got {type(retries).__name__}")
    if retries < 0:
        raise ValueError(f"retries must be 0 or more, got {retries}")


def is_number(value: Any) -> bool:
    """An int or a float, and not a bool (which is an int to Python)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_timeout(timeout: Any) -> None:
    """``timeout``: ``None`` or a positive number of seconds."""
    if timeout is None:
        return
    if not is_number(timeout):
        raise TypeError(
            f"timeout must be a number of seconds or None, got {type(timeout).__name__}"
        )
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, got {timeout}")


def take_inputs(
    args: tuple[Any, ...], kwargs: dict[str, Any], is_ours: Callable[[Any], bool]
) -> tuple[tuple[Any, ...], dict[str, Any], list[tuple[str, Any]]]:
    """Futures among a call's arguments, each replaced by a placeholder for its value.

    Looked for among the arguments and keyword values, and among the items
    of the lists and tuples and the values of the dicts that are arguments.
    Returns the new arguments and ``(name, future)`` for each input in
    placeholder order, ``name`` saying where it was (``args[0]``,
    ``kwargs['x'][2]``), for errors.  A future of another pool, or another
    kind of future, raises ``TypeError``: its value cannot be sent from here.
    """
    inputs: list[tuple[str, Any]] = []
    take = _Taker(inputs, is_ours)
    new_args = tuple(take(value, f"args[{i}]", 0) for i, value in enumerate(args))
    new_kwargs = {key: take(value, f"kwargs[{key!r}]", 0) for key, value in kwargs.items()}
    if not inputs:
        return args, kwargs, inputs
    return new_args, new_kwargs, inputs


class _Taker:
    """Replaces the futures of a call's arguments by placeholders, noting them in ``inputs``.

    (A class, not a recursive closure: a closure that refers to itself is a
    reference cycle, which would keep the futures, and the values they keep on
    engines, alive until the cyclic garbage collector runs.)
    """

    def __init__(self, inputs: list[tuple[str, Any]], is_ours: Callable[[Any], bool]) -> None:
        self.inputs = inputs
        self.is_ours = is_ours

    def __call__(self, value: Any, name: str, depth: int) -> Any:
        if isinstance(value, concurrent.futures.Future):
            if not self.is_ours(value):
                raise TypeError(
                    f"{name} is a future of another pool (or not of a pool): only this "
                    "pool's futures can be passed as arguments; pass future.result() instead"
                )
            self.inputs.append((name, value))
            return serialize.input_placeholder(len(self.inputs) - 1)
        if depth == 0:
            kind = type(value)
            if kind in (list, tuple) and holds_futures(value):
                items = [self(item, f"{name}[{i}]", 1) for i, item in enumerate(value)]
                if any(new is not old for new, old in zip(items, value, strict=True)):
                    return kind(items)
            elif kind is dict and holds_futures(value.values()):
                items = {key: self(item, f"{name}[{key!r}]", 1) for key, item in value.items()}
                if any(items[key] is not item for key, item in value.items()):
                    return items
        return value


def holds_futures(items: Iterable[Any]) -> bool:
    """Whether a future is among ``items`` (a scan at C speed: large lists are common)."""
    return any(issubclass(kind, concurrent.futures.Future) for kind in set(map(type, items)))


def any_inputs(calls: Iterable[tuple[Any, ...]]) -> bool:
    """Whether :func:`take_inputs` would find futures among the arguments of any of
    ``calls`` (scanned at C speed unless some argument is a container)."""
    calls = list(calls)
    kinds = set(map(type, itertools.chain.from_iterable(calls)))
    if any(issubclass(kind, concurrent.futures.Future) for kind in kinds):
        return True
    if not kinds & {list, tuple, dict}:
        return False
    return any(
        holds_futures(value.values() if type(value) is dict else value)
        for args in calls
        for value in args
        if type(value) in (list, tuple, dict)
    )
