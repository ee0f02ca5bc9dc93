"""Removing the names of segments whose holder has died (or is about to end).

See :mod:`parallel_kernel.shared_memory` for the model.
"""

from __future__ import annotations

import contextlib
import os

from .places import alive, directory, holder_of_name, this_holder
from .spares import spares


def sweep(ending: bool = False) -> int:
    """Remove the segment names whose holder has died; with ``ending`` (this process
    is about to end), this process's own names too (mappings outlive their names).
    Return how many were removed."""
    folder = directory()
    if folder is None:
        return 0
    if ending:
        spares().clear()
    me = this_holder()
    removed = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for name in names:
        holder = holder_of_name(name)
        if holder is None:
            continue
        gone = ending if holder == me else not alive(holder)
        if gone:
            with contextlib.suppress(OSError):
                (folder / name).unlink()
                removed += 1
    return removed
