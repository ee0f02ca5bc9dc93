"""Large buffers between processes of one host through shared memory instead of sockets.

A message's frames of at least :data:`SHARED_MIN` bytes are written into one
*segment*, a file in a private directory in memory (see :func:`~.places.directory`),
and the message carries, in place of each, an empty frame and a reference
(content ``"shared"``: ``[frame index, segment name, offset, size]``).  The
receiver maps the segment read-only and gets views of it: one copy on the
sending side, none on the receiving side.

**Who removes a segment.**  Each name of a segment belongs to one process, its
*holder*, whose pid and start time begin the name: the receiver of the
message.  The holder keeps the name while its mapping lives (so it can pass
the same memory on: a buffer that is a view of a mapped segment is sent again
by giving the next receiver a hard link, with no copy) and removes it when
the last view is gone.  The memory itself is freed by the kernel when no name
and no mapping is left.  A name whose holder has died is removed by whoever
sweeps next (:func:`sweep`: pools and engines at start and stop, a pool when
an engine dies, an engine whose client has died), so a ``kill -9`` on either
side leaks nothing for longer than that.

**Where.**  Sender and receiver must see the same directory: a process says
where it reads shared memory with its *place* (:func:`place`: boot id, the
directory's device and inode, its pid and start time), and a sender uses
shared memory only toward a place that is the same directory on the same
boot of the same machine (:func:`holder_at`); elsewhere frames go over the
socket as before.  Only Linux has what this needs (``/proc``); elsewhere
:func:`place` is ``None`` and nothing changes.

The modules: :mod:`.places` (the directory, places, holders and names),
:mod:`.sending` (:func:`offload`, :func:`hold`), :mod:`.spares` (segments
written again), :mod:`.mappings` (:func:`attach`, the segments mapped here)
and :mod:`.sweeping` (:func:`sweep`).
"""

from __future__ import annotations

import os

from . import mappings, spares
from .mappings import SharedMemoryError, attach, receive
from .places import DIRECTORY_ENV, directory, holder_at, place, this_holder
from .sending import SHARED_MIN, discard, hold, offload, toward
from .sweeping import sweep

__all__ = [
    "DIRECTORY_ENV",
    "SHARED_MIN",
    "SharedMemoryError",
    "attach",
    "directory",
    "discard",
    "hold",
    "holder_at",
    "offload",
    "place",
    "receive",
    "sweep",
    "this_holder",
    "toward",
]


def _forked() -> None:
    """A forked child: the segments its parent maps and keeps are not its own to pass
    on, write into or remove."""
    mappings.forget_all()
    spares.forget_all()


os.register_at_fork(after_in_child=_forked)
