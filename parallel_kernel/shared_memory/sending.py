"""Sending large frames through shared memory: copied once, or passed on as the same memory.

See :mod:`parallel_kernel.shared_memory` for the model.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .mappings import SharedMemoryError, attach, is_mapped, mapped_at
from .places import directory, holder_at, holder_of_name, new_name, this_holder
from .spares import nbytes, spares

log = logging.getLogger(__name__)

#: Frames of at least this many bytes go through shared memory.
SHARED_MIN = 1 << 20


def offload(
    content: dict[str, Any], buffers: Sequence[Any], holder: str
) -> tuple[dict[str, Any], list[Any]]:
    """``content`` and ``buffers`` with every large frame moved to shared memory,
    for the process ``holder`` (see :func:`holder_at`) to map.

    Frames that are views of a segment mapped here are passed on as a new name
    of that segment; the others are copied into one new segment.  If shared
    memory fails (the directory is full), the frames stay as they are.
    """
    large = [i for i, frame in enumerate(buffers) if nbytes(frame) >= SHARED_MIN]
    folder = directory()
    if not large or folder is None:
        return content, list(buffers)
    refs: list[list[Any]] = []
    copies: list[tuple[int, Any]] = []
    made: list[Path] = []
    try:
        for index in large:
            frame = buffers[index]
            found = mapped_at(frame, nbytes(frame))
            link = new_name(folder, holder)
            try:
                if found is None:
                    raise FileNotFoundError
                os.link(folder / found[0], link)
            except FileNotFoundError:  # not mapped here, or its name is gone: copied
                copies.append((index, frame))
                continue
            made.append(link)
            refs.append([index, link.name, found[1], nbytes(frame)])
        if copies:
            segment, written = spares().write(folder, copies)
            link = new_name(folder, holder)
            os.link(segment, link)
            made.append(link)
            refs.extend([index, link.name, offset, size] for index, _, offset, size in written)
    except OSError as exc:
        for path in made:
            path.unlink(missing_ok=True)
        log.warning("Large buffers go over the socket: shared memory failed: %s", exc)
        return content, list(buffers)
    frames = list(buffers)
    for index, *_ in refs:
        frames[index] = b""
    return {**content, "shared": sorted(refs)}, frames


def toward(
    remote: Any, content: dict[str, Any], buffers: Sequence[Any]
) -> tuple[dict[str, Any], list[Any]]:
    """:func:`offload` for the process at place ``remote`` if it shares this
    process's directory; else ``content`` and ``buffers`` as they are."""
    holder = holder_at(remote) if remote is not None else None
    if holder is None:
        return content, list(buffers)
    return offload(content, buffers, holder)


def hold(buffers: Sequence[Any]) -> list[Any]:
    """``buffers`` with the large frames copied into a segment this process maps,
    as views of it: sent to several processes on this host, they all get the
    same memory (one copy in all).  Unchanged if there is no shared memory here."""
    me = this_holder() if directory() is not None else None
    if me is None:
        return list(buffers)
    content, frames = offload({}, buffers, me)
    if "shared" not in content:
        return frames
    try:
        return attach(content, frames)
    except SharedMemoryError:
        return list(buffers)


def discard(content: Any) -> None:
    """Remove the segment names of a message that will not be read (or was not sent)."""
    folder = directory()
    refs = content.get("shared") if isinstance(content, dict) else None
    if folder is None or not isinstance(refs, list):
        return
    for ref in refs:
        name = ref[1] if isinstance(ref, list) and len(ref) == 4 else None
        if isinstance(name, str) and holder_of_name(name) and not is_mapped(name):
            (folder / name).unlink(missing_ok=True)
