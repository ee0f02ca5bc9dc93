"""Source lines that travel with a task's code, so its tracebacks show them on any engine.

A function defined in a script, a notebook cell or code given to ``exec`` is
pickled by value: its code object travels, and its source file may not exist
on the engine (another host, a notebook cell, a file since deleted).  The
client knows the lines (``linecache`` holds them for files and for IPython
cells), so the pickle of a code object carries its file name and the lines
it spans; the engine puts them in its ``linecache``.  Everything that reads
source through ``linecache`` then shows them: the plain traceback of an error
reply, IPython's traceback on IOPub, ``pdb``'s ``list``, live stacks.

Lines already readable on the engine from the same file are left alone.
"""

from __future__ import annotations

import linecache
import marshal
import os
import types
from typing import Any


def reduce_code(code: types.CodeType) -> tuple[Any, tuple[Any, ...]]:
    """The pickle reduction of a code object: ``marshal`` bytes, with its source lines.

    Both sides run the same Python version (as pickled code requires), so
    ``marshal``, the format of ``.pyc`` files, carries the code object whole,
    its real file name included.
    """
    data = marshal.dumps(code)
    first, lines = _span(code)
    if not lines:
        return marshal.loads, (data,)
    return load_code, (data, code.co_filename, first, lines)


def load_code(data: bytes, filename: str, first: int, lines: list[str]) -> types.CodeType:
    """Rebuild a code object and make its carried source lines known to ``linecache``."""
    code = marshal.loads(data)
    remember(filename, first, lines)
    return code


def remember(filename: str, first: int, lines: list[str]) -> None:
    """Put ``lines`` (from line ``first`` on) into ``linecache`` for ``filename``,
    unless the file can be read here."""
    entry = linecache.cache.get(filename)
    if entry is None and os.path.isfile(filename):
        return
    if entry is not None and (len(entry) != 4 or entry[1] is not None):
        return  # a file linecache read from disk (or will, lazily)
    known = list(entry[2]) if entry is not None else []
    end = first - 1 + len(lines)
    if len(known) < end:
        known.extend("\n" for _ in range(end - len(known)))
    known[first - 1 : end] = lines
    linecache.cache[filename] = (sum(map(len, known)), None, known, filename)


def _span(code: types.CodeType) -> tuple[int, list[str]]:
    """The first line of ``code`` and the source lines it spans, nested code included."""
    last = max(_last_lines(code), default=code.co_firstlineno)
    lines = linecache.getlines(code.co_filename)
    if not lines or code.co_firstlineno > len(lines):
        return code.co_firstlineno, []
    return code.co_firstlineno, lines[code.co_firstlineno - 1 : last]


def _last_lines(code: types.CodeType) -> list[int]:
    """Every line number ``code`` (and the code nested in it) has instructions on."""
    numbers = [line for _, _, line in code.co_lines() if line is not None]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            numbers.extend(_last_lines(const))
    return numbers
