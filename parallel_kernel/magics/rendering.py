"""Engine output labelled and grouped as ``--group-outputs`` says.

Every output of an engine becomes a :class:`Piece`; a grouping decides when
it is shown:

* ``order``: as it arrives (text streams line by line, each line labelled
  ``[stdout:0]``, ``[stderr:1]``);
* ``engine``: each engine's output together, shown as soon as that engine
  has finished (engines that finish first come first);
* ``type``: once every engine has finished: all stdout (engine by engine),
  then stderr, then displays, then results, then errors.

Results are labelled ``Out[0:3]:`` (engine 0, its execution count 3),
displays ``[output:0]``, errors ``[error:0]`` with the engine's traceback;
rich outputs (HTML, images, figures) are shown as themselves after their
label.  A display an engine updates in place (``display(...,
display_id=True)`` and ``handle.update(...)``) is updated in place here too,
under a display id of its engine's.  An engine's ``clear_output`` is not
passed on: it would clear the output of every engine.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from ..pool.output import LineLabels, shareable
from .cell import CellOutput

#: The order of the kinds with ``--group-outputs type``.
KINDS = ("stdout", "stderr", "display", "result", "error")


@dataclasses.dataclass
class Piece:
    """One output of one engine."""

    engine: int
    kind: str  # one of KINDS
    content: dict[str, Any]
    #: An ``update_display_data``: it replaces the display of the same display id.
    update: bool = False


def piece(engine: int, msg_type: str, content: dict[str, Any]) -> Piece | None:
    """The piece an IOPub output message stands for (``None``: not shown)."""
    if msg_type == "stream":
        kind = "stderr" if content.get("name") == "stderr" else "stdout"
        return Piece(engine, kind, content)
    if msg_type == "execute_result":
        return Piece(engine, "result", content)
    if msg_type in ("display_data", "update_display_data"):
        return Piece(engine, "display", content, update=msg_type == "update_display_data")
    if msg_type == "error":
        return Piece(engine, "error", content)
    return None


class Labeller:
    """Shows pieces in a cell, each labelled with its engine."""

    def __init__(self, cell: CellOutput) -> None:
        self.cell = cell
        self._labels = LineLabels()
        self._lock = threading.Lock()

    def show(self, pieces: list[Piece]) -> None:
        """Show ``pieces`` in this order."""
        with self._lock:
            for item in pieces:
                getattr(self, f"_{item.kind}")(item)

    def _stdout(self, item: Piece) -> None:
        self.cell.stream("stdout", self._labelled(item, "stdout"))

    def _stderr(self, item: Piece) -> None:
        self.cell.stream("stderr", self._labelled(item, "stderr"))

    def _labelled(self, item: Piece, name: str) -> str:
        text = str(item.content.get("text", ""))
        return self._labels((item.engine, name), f"[{name}:{item.engine}] ", text)

    def _result(self, item: Piece) -> None:
        data = shareable(item.content.get("data") or {})
        label = f"Out[{item.engine}:{item.content.get('execution_count')}]:"
        self._bundle(label, data, item.content.get("metadata"))

    def _display(self, item: Piece) -> None:
        data = shareable(item.content.get("data") or {})
        label = f"[output:{item.engine}]"
        display_id = (item.content.get("transient") or {}).get("display_id")
        if not display_id or not self.cell.in_kernel:
            self._bundle(label, data, item.content.get("metadata"))
            return
        options = {"transient": {"display_id": f"engine-{item.engine}-{display_id}"}}
        if item.update:
            # in place, as itself: its label was shown with the display it updates
            self.cell.bundle(data, item.content.get("metadata"), update=True, **options)
        else:
            self._bundle(label, data, item.content.get("metadata"), **options)

    def _bundle(self, label: str, data: dict[str, Any], metadata: Any, **options: Any) -> None:
        if not data:
            return
        plain = data.get("text/plain", "")
        if set(data) == {"text/plain"} and not options:
            separator = "\n" if "\n" in plain else " "
            self.cell.bundle({"text/plain": f"{label}{separator}{plain}"})
            return
        self.cell.stream("stdout", f"{label}\n")
        self.cell.bundle(data, metadata, **options)

    def _error(self, item: Piece) -> None:
        content = item.content
        lines = content.get("traceback") or [f"{content.get('ename')}: {content.get('evalue')}"]
        body = "\n".join(str(line).rstrip("\n") for line in lines)
        self.cell.stream("stderr", f"[error:{item.engine}]\n{body}\n")


class Grouping:
    """Decides when pieces are shown (``order``: at once)."""

    def __init__(self, labeller: Labeller) -> None:
        self.labeller = labeller
        self._lock = threading.Lock()
        self._held: list[Piece] = []

    def add(self, item: Piece) -> None:
        """An engine produced ``item``."""
        self.labeller.show([item])

    def engine_done(self, engine: int) -> None:
        """``engine`` has finished: everything it produced has been added."""

    def finish(self) -> None:
        """Every engine has finished (or been given up on): show what is held."""
        with self._lock:
            held, self._held = self._held, []
        self.labeller.show(held)


class ByEngine(Grouping):
    """Each engine's output together, once that engine has finished."""

    def add(self, item: Piece) -> None:
        with self._lock:
            self._held.append(item)

    def engine_done(self, engine: int) -> None:
        with self._lock:
            mine = [p for p in self._held if p.engine == engine]
            self._held = [p for p in self._held if p.engine != engine]
        self.labeller.show(mine)

    def finish(self) -> None:
        with self._lock:
            held, self._held = self._held, []
        self.labeller.show(sorted(held, key=lambda p: p.engine))


class ByType(Grouping):
    """Everything once all engines have finished, stdout first, errors last."""

    def add(self, item: Piece) -> None:
        with self._lock:
            self._held.append(item)

    def finish(self) -> None:
        with self._lock:
            held, self._held = self._held, []
        self.labeller.show(sorted(held, key=lambda p: (KINDS.index(p.kind), p.engine)))


GROUPINGS: dict[str, type[Grouping]] = {"order": Grouping, "engine": ByEngine, "type": ByType}
