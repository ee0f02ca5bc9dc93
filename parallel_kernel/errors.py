"""Exceptions that cross the wire or that tasks raise on purpose."""

from __future__ import annotations


class UnmetDependency(Exception):
    """Raised by a task to say "not here": this engine cannot run it.

    The kernel replies ``status: error`` with ``dependencies_met: false`` in the
    reply metadata, which tells a scheduler to run the task on another engine.
    """
