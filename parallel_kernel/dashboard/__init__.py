"""A live dashboard for a pool, in the notebook: ``pool.dashboard()``, or ``pool`` as the
last line of a cell.

One row per engine (state, running task and for how long, tasks done, failed
and queued, memory and CPU, buttons to interrupt or restart it), a task
stream of the last minute, and totals; see ``docs/notebooks.md``.  The text
form, for terminals, is ``print(pool.status())`` and ``parallel-kernel status``.
"""

from __future__ import annotations

from .widget import Dashboard

__all__ = ["Dashboard"]
