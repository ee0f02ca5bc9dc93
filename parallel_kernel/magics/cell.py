"""Where a parallel magic's output goes: the cell that ran it, from any thread.

In a kernel (ours or the stock one) text becomes the cell's stdout and stderr
and MIME bundles its displays, parented to the cell even when they are sent
from the pool's loop thread; the progress line is one display updated in
place.  Outside a kernel (a terminal IPython) text goes to this process's
streams, bundles by their ``text/plain``, and there is no progress line.
"""

from __future__ import annotations

import uuid
from typing import Any

from ..pool import output


class CellOutput:
    """Writes to the cell that is running now (taken when this is made)."""

    def __init__(self) -> None:
        self.shell = output.kernel_shell()
        self.parent = output.origin()
        self._progress_id: str | None = None

    @property
    def in_kernel(self) -> bool:
        """Whether output goes to a kernel's frontend (else to a terminal)."""
        return self.shell is not None

    def stream(self, name: str, text: str) -> None:
        """Write ``text`` to the cell's ``stdout`` or ``stderr``."""
        output.write(name, text, self.parent)

    def bundle(
        self, data: dict[str, Any], metadata: dict[str, Any] | None = None, **options: Any
    ) -> None:
        """Show a MIME bundle (``transient`` and ``update`` as for ``display``)."""
        if self.shell is None:
            text = data.get("text/plain")
            if text:
                self.stream("stdout", f"{text}\n")
            return
        output.publish(data, metadata or {}, self.parent, **options)

    def progress(self, text: str) -> None:
        """Show ``text`` as the cell's progress line (one line, updated in place)."""
        if self.shell is None:
            return
        first = self._progress_id is None
        if first:
            self._progress_id = uuid.uuid4().hex
        self.bundle(
            {"text/plain": text},
            transient={"display_id": self._progress_id},
            update=not first,
        )
