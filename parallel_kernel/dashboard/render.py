"""The dashboard's pictures, as HTML: the totals, one row per engine, the task stream.

Pure functions of a :class:`~parallel_kernel.pool.status.PoolStatus`, so the
same snapshot always draws the same way (and tests can read it).
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Callable

from ..pool.activity import Span
from ..pool.status import EngineStatus, PoolStatus

#: Colours of the functions on the task stream (a function keeps its colour).
PALETTE = (
    "#4c78a8",
    "#f58518",
    "#54a24b",
    "#b279a2",
    "#eeca3b",
    "#72b7b2",
    "#ff9da6",
    "#9d755d",
    "#bab0ac",
    "#79706e",
)
FAILED = "#d62728"
#: Colour of each engine state's badge.
STATE_COLOURS = {
    "idle": "#54a24b",
    "busy": "#4c78a8",
    "starting": "#bab0ac",
    "restarting": "#f58518",
    "dead": "#d62728",
    "stopped": "#79706e",
}
#: Seconds the task stream shows.
WINDOW = 60.0


def colour(name: str) -> str:
    """The colour of a function's tasks on the task stream."""
    digest = hashlib.blake2s(name.encode(), digest_size=2).digest()
    return PALETTE[int.from_bytes(digest, "big") % len(PALETTE)]


def totals(status: PoolStatus) -> str:
    """The line above everything: engines by state and task totals."""
    summary = html.escape(status.summary())
    return f"<div class='pk-totals'><b>parallel_kernel pool</b> &mdash; {summary}</div>"


def engine_row(engine: EngineStatus) -> str:
    """One engine's figures (the buttons are widgets beside it)."""
    badge = STATE_COLOURS.get(engine.state, "#bab0ac")
    if engine.running is not None:
        running = f"{html.escape(engine.running)} ({engine.running_for or 0:.1f} s)"
    else:
        running = "&ndash;"
    rss = f"{engine.rss / 1e6:.0f} MB" if engine.rss is not None else "&ndash;"
    cpu = f"{engine.cpu_percent:.0f} %" if engine.cpu_percent is not None else "&ndash;"
    cells = [
        f"<b>engine {engine.id}</b>",
        f"<span style='background:{badge};color:white;padding:0 6px;border-radius:3px'>"
        f"{html.escape(engine.state)}</span>",
        f"running: {running}",
        f"done {engine.done}",
        f"failed {engine.failed}",
        f"queued {engine.queued}",
        f"RSS {rss}",
        f"CPU {cpu}",
    ]
    widths = (80, 90, 220, 70, 70, 80, 90, 70)
    return "".join(
        f"<span class='pk-cell' style='display:inline-block;width:{w}px'>{c}</span>"
        for c, w in zip(cells, widths, strict=True)
    )


def task_stream(status: PoolStatus, width: int = 760, lane: int = 16) -> str:
    """The last :data:`WINDOW` seconds of tasks, one lane per engine, as an SVG.

    Each task is a bar from its start to its end, coloured by its function;
    failed tasks are red with a dark outline; running tasks reach the right edge.
    """
    ids = [e.id for e in status.engines]
    lanes = {engine_id: i for i, engine_id in enumerate(ids)}
    end = status.taken_at
    start = end - WINDOW
    label_width = 70
    plot = width - label_width

    def x(t: float) -> float:
        return label_width + max(0.0, (t - start) / WINDOW * plot)

    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' "
        f"height='{lane * max(1, len(ids)) + 18}' class='pk-stream'>"
    ]
    for engine_id, i in lanes.items():
        y = i * lane
        parts.append(
            f"<text x='0' y='{y + lane - 4}' font-size='11' font-family='sans-serif'>"
            f"engine {engine_id}</text>"
        )
    for span in status.recent:
        if span.end < start or span.engine_id not in lanes:
            continue
        parts.append(_bar(span, lanes[span.engine_id] * lane, lane, x))
    for engine in status.engines:
        if engine.running is not None and engine.running_for is not None:
            running = Span(engine.id, engine.running, end - engine.running_for, end, True)
            parts.append(_bar(running, lanes[engine.id] * lane, lane, x, opacity=0.5))
    axis_y = lane * max(1, len(ids)) + 12
    parts.append(
        f"<text x='{label_width}' y='{axis_y}' font-size='10' font-family='sans-serif'>"
        f"&minus;{WINDOW:.0f} s</text>"
        f"<text x='{width - 24}' y='{axis_y}' font-size='10' font-family='sans-serif'>now</text>"
    )
    parts.append("</svg>")
    return "".join(parts)


def _bar(span: Span, y: float, lane: int, x: Callable[[float], float], opacity: float = 1.0) -> str:
    left = x(span.start)
    right = max(left + 1.0, x(span.end))
    fill = colour(span.label) if span.ok else FAILED
    outline = "" if span.ok else " stroke='#600' stroke-width='1'"
    return (
        f"<rect x='{left:.1f}' y='{y + 2}' width='{right - left:.1f}' height='{lane - 4}' "
        f"fill='{fill}' fill-opacity='{opacity}'{outline}>"
        f"<title>{html.escape(span.label)} on engine {span.engine_id}: "
        f"{span.end - span.start:.3f} s{'' if span.ok else ', failed'}</title></rect>"
    )
