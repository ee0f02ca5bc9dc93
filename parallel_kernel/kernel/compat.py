"""Every use of a private name of ipykernel, IPython or the standard library, in one place.

The kernel extends ipykernel's ``IPythonKernel`` further than its public API
reaches: the main shell's lock, status messages, the application's socket
binding, the shell parent's context variable, IPython's traceback rendering,
the buffers of ipykernel's output streams, the child processes it stops at
shutdown.  Those names can change in any release, so nothing else in the
package touches them: an ipykernel (or IPython) upgrade means auditing this
module, each piece of which says what it was checked against.

Besides these, ``ParallelKernel`` overrides public but internal methods of
ipykernel's dispatch (``dispatch_shell``, ``shell_channel_thread_main``,
``process_control``, ``should_handle``, ``pre_handler_hook``,
``post_handler_hook``), which is why ipykernel is pinned to 7.4.x.
"""

from __future__ import annotations

import _signal
import asyncio
import sys
from typing import Any

__all__ = [
    "OutputCounter",
    "PrivateOverrides",
    "apply_curve_server_options",
    "bind_socket",
    "cell_runner_codes",
    "flush_output",
    "lock_wanted",
    "main_shell_lock",
    "original_stderr_fd",
    "publish_status",
    "remember_ports",
    "render_traceback",
    "set_signal_handler",
    "shell_parent",
    "show_rendered_traceback",
    "signal_interrupt",
]

#: ``signal.signal`` without its Python wrapper, which converts every previous
#: handler to an enum member on the way out (microseconds per task): the C
#: function ``_signal.signal`` underneath, checked against CPython 3.11.7.
set_signal_handler = _signal.signal

#: Message types of the IOPub messages that count as a request's output.
OUTPUT_TYPES = frozenset(
    {"stream", "display_data", "update_display_data", "execute_result", "error", "clear_output"}
)


# ---------------------------------------------------------------------- the kernel


def main_shell_lock(kernel: Any) -> asyncio.Lock:
    """The lock the main shell holds while it handles a message (cells, applies, clears).

    ``Kernel._main_asyncio_lock``, created once in ``Kernel.__init__``;
    checked against ipykernel 7.4.0 (``shell_main`` takes it for every message
    of the main shell).
    """
    return kernel._main_asyncio_lock


def lock_wanted(lock: asyncio.Lock) -> bool:
    """Whether ``lock`` is held, or a coroutine waits for it.

    ``asyncio.Lock._waiters`` (``None`` or a deque of futures), checked
    against CPython 3.11.7: ``locked()`` alone misses a cell that is queued
    for the lock while a task holds it.
    """
    return lock.locked() or any(not w.done() for w in getattr(lock, "_waiters", None) or ())


def publish_status(kernel: Any, status: str, channel: str, parent: dict[str, Any]) -> None:
    """Publish a ``status`` message (``busy``/``idle``) of ``channel``, parented to ``parent``.

    ``Kernel._publish_status(status, channel, parent)``, checked against
    ipykernel 7.4.0.
    """
    kernel._publish_status(status, channel, parent=parent)


def cell_runner_codes() -> tuple[Any, ...]:
    """Code objects of IPython's functions that call a cell's code (``InteractiveShell.run_code``,
    checked against IPython 9): a cell's own frames are the ones below them."""
    from IPython.core.interactiveshell import InteractiveShell

    return (InteractiveShell.run_code.__code__,)


def original_stderr_fd() -> int | None:
    """The file descriptor of the process's own standard error.

    With ``capture_fd_output`` (ipykernel 7.4's default), fd 2 is a pipe that a
    thread of this process forwards to IOPub, and the file the kernel was
    started with lives on as ipykernel's ``OutStream._original_stdstream_copy``.
    """
    copy = getattr(sys.stderr, "_original_stdstream_copy", None)
    if isinstance(copy, int):
        return copy
    try:
        return sys.__stderr__.fileno() if sys.__stderr__ is not None else None
    except (OSError, ValueError):
        return None


def signal_interrupt(kernel: Any) -> None:
    """SIGINT to the kernel (and its process group), as ipykernel's own interrupt does.

    ipykernel 7.4's ``Kernel._send_interrupt_children``.
    """
    kernel._send_interrupt_children()


def shell_parent(kernel: Any) -> tuple[Any, dict[str, Any]]:
    """The main shell's current ``(ident, parent)``, to restore with ``set_parent`` later.

    ``Kernel._get_shell_context_var(Kernel._shell_parent_ident)``: ipykernel
    7.4.0 keeps the shell's routing identity in a context variable with no
    public getter (``get_parent("shell")`` gives the parent only).
    """
    return kernel._get_shell_context_var(kernel._shell_parent_ident), kernel.get_parent("shell")


class PrivateOverrides:
    """The kernel's overrides of private ``Kernel`` methods (a mixin before ``IPythonKernel``)."""

    def _process_children(self) -> list[Any]:
        """ipykernel's child processes to stop at shutdown, without the zombies.

        A child that exited but was never reaped (a launcher's helper process,
        for instance) cannot react to signals, and ipykernel would keep
        signalling it for about 30 s before the kernel exits.  Checked against
        ipykernel 7.4.0, where ``_process_children`` returns psutil processes
        (an empty list without psutil).
        """
        children = super()._process_children()  # type: ignore[misc]
        if not children:
            return children
        import psutil

        alive = []
        for child in children:
            try:
                if child.status() != psutil.STATUS_ZOMBIE:
                    alive.append(child)
            except psutil.Error:
                continue
        return alive


# ---------------------------------------------------------------------- the application


def bind_socket(app: Any, socket: Any, port: int) -> int:
    """Bind ``socket`` as ``app`` binds its Jupyter sockets; return the port (0 picks one).

    ``IPKernelApp._bind_socket``, checked against ipykernel 7.4.0: the
    application's address and transport, ipc "ports" as file-name suffixes,
    retries on a port taken meanwhile.
    """
    return app._bind_socket(socket, port)


def apply_curve_server_options(app: Any, socket: Any) -> None:
    """Give ``socket`` the application's CurveZMQ server keys, if it has any.

    ``IPKernelApp._apply_curve_server_options``, new in ipykernel 7.4.0.
    """
    app._apply_curve_server_options(socket)


def remember_ports(app: Any) -> None:
    """Store the application's ports where ipykernel's ``log_connection_info`` does.

    ``IPKernelApp._ports``, which ``init_kernel`` hands to the kernel for
    ``connect_request``; checked against ipykernel 7.4.0.  For an
    application that replaces ``log_connection_info``.
    """
    app._ports = {
        "shell": app.shell_port,
        "iopub": app.iopub_port,
        "stdin": app.stdin_port,
        "hb": app.hb_port,
        "control": app.control_port,
    }


# ---------------------------------------------------------------------- output


def flush_output(force: bool = True) -> None:
    """Send pending stdout/stderr, so that output precedes the reply that follows.

    A flush of ipykernel's ``OutStream`` is a blocking round trip to the IOPub
    thread even when nothing was written (about 0.1 ms each), so unless
    ``force`` a stream whose buffers are empty is left alone.  Reads
    ``OutStream._buffers``, checked against ipykernel 7.4.0; a stream
    without it (not ipykernel's) is always flushed.
    """
    for stream in (sys.stdout, sys.stderr):
        if stream is not None and (force or getattr(stream, "_buffers", True)):
            stream.flush()


def render_traceback(shell: Any, exc_info: tuple[Any, Any, Any], log: Any) -> list[str] | None:
    """Show an exception as IPython does (IOPub ``error``) and return its rendered lines.

    IPython keeps the rendered traceback only in ``shell._last_traceback``,
    which nothing but ``run_cell`` resets; checked against IPython 9.18.1 and
    ipykernel 7.4.0 (whose ``ZMQInteractiveShell._showtraceback`` publishes
    it).  Returns ``None`` if IPython rendered nothing; a failure to render
    is logged.
    """
    shell._last_traceback = None
    try:
        shell.showtraceback(exc_info)
    except Exception:
        log.exception("Could not format a traceback")
    return shell._last_traceback


def show_rendered_traceback(shell: Any, exc_info: tuple[Any, Any, Any], lines: list[str]) -> None:
    """Publish already rendered traceback ``lines`` as IOPub ``error``.

    ``ZMQInteractiveShell._showtraceback(etype, evalue, stb)``, checked
    against ipykernel 7.4.0; for exceptions IPython cannot render itself.
    """
    shell._showtraceback(exc_info[0], exc_info[1], lines)


class OutputCounter:
    """Counts the output messages the kernel publishes for one request at a time.

    It wraps the kernel session's ``send``, through which every publisher of
    ipykernel 7.4.0 (stdout and stderr streams, displays, errors, the
    display hook) sends: the counting lives inside the send, as nothing else
    sees each output message go out.
    """

    def __init__(self, session: Any) -> None:
        self.watched: str | None = None
        self.count = 0
        send = session.send

        def counting_send(
            stream: Any,
            msg_or_type: Any,
            content: Any = None,
            parent: Any = None,
            *a: Any,
            **kw: Any,
        ) -> Any:
            if self.watched is not None:
                if isinstance(msg_or_type, dict):
                    msg_type = msg_or_type.get("msg_type")
                    header = msg_or_type.get("parent_header")
                else:
                    msg_type = msg_or_type
                    header = parent.get("header", parent) if isinstance(parent, dict) else None
                if (
                    msg_type in OUTPUT_TYPES
                    and isinstance(header, dict)
                    and header.get("msg_id") == self.watched
                ):
                    self.count += 1
            return send(stream, msg_or_type, content, parent, *a, **kw)

        session.send = counting_send

    def watch(self, msg_id: str) -> None:
        """Start counting the output of request ``msg_id`` (from zero)."""
        self.watched = msg_id
        self.count = 0

    def stop(self) -> int:
        """Stop counting; return how many output messages the watched request had."""
        self.watched = None
        return self.count
