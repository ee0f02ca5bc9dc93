"""The live dashboard of a pool, as ipywidgets: no server of its own.

It draws a :class:`~parallel_kernel.pool.status.PoolStatus` (see
:mod:`.render`) and redraws from the pool's loop thread when the pool's
activity changes (at most :data:`UPDATE_INTERVAL` apart) and every
:data:`STATS_INTERVAL` seconds with fresh memory and CPU figures from the
engines.  Each engine row has an *interrupt* and a *restart* button.
"""

from __future__ import annotations

import weakref
from typing import Any

from ..pool import status as pool_status
from . import clicks, render

#: Seconds between two redraws at most, however much happens.
UPDATE_INTERVAL = 0.25
#: Seconds between two samples of the engines' memory and CPU.
STATS_INTERVAL = 2.0


class Dashboard:
    """A live view of ``pool``; show it as a cell's last value or with ``display()``.

    ``pool.dashboard()`` makes one per pool, and each display is another view
    of its widgets.  ``close()`` stops it (the pool's shutdown does too).
    """

    def __init__(self, pool: Any) -> None:
        import ipywidgets as widgets

        self._widgets = widgets
        # not a reference that keeps the pool alive: a dropped pool winds down as without one
        self._pool = weakref.proxy(pool)
        self._core = pool._core
        self.totals = widgets.HTML()
        self.stream = widgets.HTML()
        self.rows = widgets.VBox()
        self.message = widgets.HTML()
        self.widget = widgets.VBox([self.totals, self.stream, self.rows, self.message])
        self._rows: dict[int, tuple[Any, Any, Any]] = {}
        self._subshell = clicks.subshell()
        self._scheduled = False
        self._closed = False
        self._timer: Any = None
        self.draws = 0
        self._core.bridge.run(self._start(), timeout=pool_status.STATS_WAIT * 3 + 5)

    # -- loop thread

    async def _start(self) -> None:
        self._core.activity.watchers.append(self._changed)
        await self._core.stats.sample()
        self._draw()
        self._timer = self._core.bridge.loop.call_later(STATS_INTERVAL, self._tick)

    def _changed(self) -> None:
        if not self._scheduled and not self._closed:
            self._scheduled = True
            self._core.bridge.loop.call_later(UPDATE_INTERVAL, self._draw)

    def _tick(self) -> None:
        if self._closed or self._core.closed:
            self._stop()
            return
        self._core.bridge.spawn(self._sample_and_draw())
        self._timer = self._core.bridge.loop.call_later(STATS_INTERVAL, self._tick)

    async def _sample_and_draw(self) -> None:
        await self._core.stats.sample()
        self._draw()

    def _draw(self) -> None:
        self._scheduled = False
        if self._closed:
            return
        self.show(pool_status.snapshot(self._core))

    def _stop(self) -> None:
        if self._changed in self._core.activity.watchers:
            self._core.activity.watchers.remove(self._changed)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- drawing (any thread)

    def show(self, status: pool_status.PoolStatus) -> None:
        """Draw ``status``."""
        self.totals.value = render.totals(status)
        self.stream.value = render.task_stream(status)
        if set(self._rows) != {e.id for e in status.engines}:
            self._make_rows(status)
        for engine in status.engines:
            row, interrupt, restart = self._rows[engine.id]
            row.value = render.engine_row(engine)
            serving = engine.state in ("idle", "busy")
            interrupt.disabled = engine.state != "busy"
            restart.disabled = not (serving and engine.owned)
        self.draws += 1

    def _make_rows(self, status: pool_status.PoolStatus) -> None:
        widgets = self._widgets
        rows = {}
        for engine in status.engines:
            row = widgets.HTML()
            interrupt = widgets.Button(description="interrupt", layout={"width": "90px"})
            restart = widgets.Button(description="restart", layout={"width": "80px"})
            interrupt.on_click(lambda _b, e=engine.id: self.interrupt(e))
            restart.on_click(lambda _b, e=engine.id: self.restart(e))
            for button in (interrupt, restart):
                clicks.route(button, self._subshell)
            rows[engine.id] = (row, interrupt, restart)
        self._rows = rows
        self.rows.children = [
            widgets.HBox([row, interrupt, restart]) for row, interrupt, restart in rows.values()
        ]

    # -- buttons

    def interrupt(self, engine_id: int) -> None:
        """What the *interrupt* button of ``engine_id`` does."""
        self._act(f"engine {engine_id}: interrupted", "interrupt", engine_id)

    def restart(self, engine_id: int) -> None:
        """What the *restart* button of ``engine_id`` does."""
        self.message.value = f"engine {engine_id}: restarting&hellip;"
        self._act(f"engine {engine_id}: restarted", "restart_engine", engine_id)

    def _act(self, done: str, action: str, engine_id: int) -> None:
        try:
            getattr(self._pool, action)(engine_id)
        except ReferenceError:
            self.message.value = "the pool is gone"
        except Exception as exc:
            self.message.value = f"<span style='color:#d62728'>{type(exc).__name__}: {exc}</span>"
        else:
            self.message.value = done

    # -- the user's side

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (a closed dashboard draws no more)."""
        return self._closed

    def close(self) -> None:
        """Stop updating and close the widgets."""
        if self._closed:
            return
        self._closed = True
        if not self._core.closed:
            self._core.bridge.call_soon(self._stop)
        _close_tree(self.widget)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


def _close_tree(widget: Any) -> None:
    """Close ``widget``, its children, and their layouts and styles (widgets too)."""
    for child in getattr(widget, "children", ()):
        _close_tree(child)
    for part in (getattr(widget, "layout", None), getattr(widget, "style", None)):
        if part is not None:
            part.close()
    widget.close()
