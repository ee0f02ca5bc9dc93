"""Engine output shown where the pool runs: a terminal, or the notebook cell that asked.

A task's output (what it prints and displays on its engine) is kept on its
future.  With ``Pool(forward_output=True)`` it is also shown here as it
arrives, and ``TaskFuture.display_outputs()`` shows it again later:

* in a script or terminal, stdout and stderr go to this process's streams
  and rich outputs by their ``text/plain`` form, each line prefixed with the
  engine id;
* in a notebook (the pool runs inside an IPython kernel), stream text and
  rich outputs (HTML, images, matplotlib figures ...) become outputs of the
  cell that submitted the task, even when another cell is running by the time
  they arrive: the cell's parent header is taken when the task is submitted.

Widgets live where they were created: a widget view displayed on an engine
refers to a model on that engine, which the notebook's own kernel does not
have, so forwarded outputs keep only the widget's other representations.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

#: The MIME type of a widget view, which refers to a widget model by id.
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
#: IOPub message types whose content is a MIME bundle to show.
RICH_TYPES = frozenset({"display_data", "update_display_data", "execute_result"})
#: IOPub message types a task's output sink gets (see ``Task.sink``).
SINK_TYPES = RICH_TYPES | {"stream", "error", "clear_output"}
#: A task's output sink: called with ``(engine_id, msg_type, content)`` per output message.
OutputCallback = Callable[[int, str, dict[str, Any]], None]


def kernel_shell() -> Any:
    """The IPython shell of the kernel this process is, or ``None`` outside a kernel."""
    if "ipykernel" not in sys.modules:
        return None
    from IPython import get_ipython

    shell = get_ipython()
    return shell if getattr(shell, "kernel", None) is not None else None


def in_kernel() -> bool:
    """Whether this process is an IPython kernel (a notebook's, a console's)."""
    return kernel_shell() is not None


def origin() -> dict[str, Any] | None:
    """The header that output of the calling code is parented to (its cell), if in a kernel."""
    shell = kernel_shell()
    if shell is None:
        return None
    header = shell.display_pub.parent_header
    return dict(header) if header else None


def shareable(data: dict[str, Any]) -> dict[str, Any]:
    """A MIME bundle without the representations that only make sense on the engine."""
    return {mime: value for mime, value in data.items() if mime != WIDGET_VIEW}


def write(name: str, text: str, parent: dict[str, Any] | None) -> None:
    """Write ``text`` to this process's ``stdout`` or ``stderr``; in a kernel, as output of
    the cell whose header ``parent`` is (from any thread)."""
    stream = sys.stderr if name == "stderr" else sys.stdout
    setter = getattr(stream, "set_thread_parent", None) if parent else None
    token = setter(parent) if setter is not None else None
    try:
        stream.write(text)
        stream.flush()
    finally:
        if token is not None:
            stream.reset_thread_parent(token)


def publish(
    data: dict[str, Any], metadata: dict[str, Any], parent: dict[str, Any] | None, **options: Any
) -> None:
    """Display a MIME bundle from this kernel, as output of the cell whose header ``parent``
    is (from any thread); ``options`` as for the display publisher (``transient``, ``update``)."""
    publisher = kernel_shell().display_pub
    token = publisher.set_thread_parent(parent) if parent else None
    try:
        publisher.publish(data, metadata, **options)
    finally:
        if token is not None:
            publisher.reset_thread_parent(token)


class LineLabels:
    """Puts a label before every line of streamed text, across the chunks it comes in.

    A carriage return starts a line too: a progress bar that redraws its line
    (``\\r 40%|####``) keeps its label, since the frontend overwrites the line
    from its start.
    """

    def __init__(self) -> None:
        self._line_start: dict[Any, bool] = {}

    def __call__(self, stream: Any, label: str, text: str) -> str:
        """``text``, the next chunk of ``stream``, with ``label`` starting each of its lines."""
        out = []
        for line in text.splitlines(keepends=True):
            if self._line_start.get(stream, True):
                out.append(label)
            out.append(line)
            self._line_start[stream] = line.endswith(("\n", "\r"))
        return "".join(out)


class OutputForwarder:
    """Shows engine output in this process, parented to the cell each task came from."""

    def __init__(self) -> None:
        self._labels = LineLabels()

    def stream(self, engine_id: int, name: str, text: str, parent: dict[str, Any] | None) -> None:
        """Show ``text`` that engine ``engine_id`` wrote to its stream ``name``."""
        write(name, self._labels((engine_id, name), f"[engine {engine_id}] ", text), parent)

    def rich(
        self, engine_id: int, msg_type: str, content: dict[str, Any], parent: dict[str, Any] | None
    ) -> None:
        """Show a ``display_data``-like output of engine ``engine_id``."""
        data = shareable(content.get("data") or {})
        if not data:
            return
        if kernel_shell() is None:
            text = data.get("text/plain")
            if text:
                self.stream(engine_id, "stdout", f"{text}\n", None)
            return
        publish(
            data,
            content.get("metadata") or {},
            parent,
            transient=content.get("transient"),
            update=msg_type == "update_display_data",
        )


def display_outputs(future: Any) -> None:
    """Show a finished task's stdout, stderr and rich outputs here, as output of the caller."""
    engine_id = future.engine_id if future.engine_id is not None else -1
    forwarder = OutputForwarder()
    if future.stdout:
        forwarder.stream(engine_id, "stdout", future.stdout, None)
    if future.stderr:
        forwarder.stream(engine_id, "stderr", future.stderr, None)
    for content in future.outputs:
        forwarder.rich(engine_id, "display_data", content, None)
