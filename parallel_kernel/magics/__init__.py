"""Parallel magics: run notebook code on a pool's engines, with output as it comes.

``%load_ext parallel_kernel`` registers them in any IPython (our kernel, the
stock ``python3`` kernel, a terminal); ``pool.activate()`` or ``%pool start N``
picks the pool they run on:

* ``%px CODE`` / ``%%px``: run code on the engines (:mod:`.run`);
* ``%pxresult``: show the output of the last ``%px --noblock``;
* ``%autopx``: run every following cell on the engines, until ``%autopx``;
* ``%pxconfig``: the default options (:mod:`.settings`);
* ``%pool``: start, attach to, show or stop the active pool.
"""

from __future__ import annotations

from typing import Any


def register(ipython: Any) -> None:
    """Register the magics with ``ipython`` (what ``%load_ext parallel_kernel`` does)."""
    from .commands import ParallelMagics

    ipython.register_magics(ParallelMagics(ipython))
