"""``input()`` and ``getpass()`` in a task: asked of the task's caller, or refused at once.

A task runs where nobody types: Python's own ``input()`` would read the
engine process's standard input (end of file for an engine a pool started,
a terminal nobody watches for one started by hand).  So, while a task's
function runs, ``input`` and ``getpass.getpass`` are replaced:

* when the request says its caller can answer (``"allow_stdin": true`` in
  the ``apply_request`` content, as in an ``execute_request``), they send an
  ``input_request`` on the kernel's stdin channel to the caller's identity,
  parented to the task's request, and wait for its ``input_reply``.  A
  pool's stdin socket carries the same identity as its shell and task
  sockets, so it is the one asked, whichever channel the task came by.  The
  reply's ``value`` is returned; ``"\\x04"`` (end of input, as in ipykernel)
  raises ``EOFError``; an ``error`` text (this package's addition: the
  caller could not ask anyone) raises ``StdinNotImplementedError`` with it;
* otherwise they raise ``StdinNotImplementedError`` at once, saying why.

A SIGINT (an interrupt, a task timeout) ends the wait with
``KeyboardInterrupt``, as it would end a wait at a terminal.
"""

from __future__ import annotations

import builtins
import getpass
import sys
import time
from collections.abc import Callable
from typing import Any

import zmq
from IPython.core.error import StdinNotImplementedError

from . import compat

#: The reply value that means end of input (Ctrl-D at the caller).
END_OF_INPUT = "\x04"
#: Seconds an input request waits for the caller's stdin socket to connect.
CONNECT_WAIT = 5.0
#: Milliseconds between checks for a signal while the caller is being asked.
POLL_INTERVAL_MS = 100


class TaskInput:
    """While a task's function runs, ``input()`` asks its caller (or fails clearly)."""

    __slots__ = ("ask", "saved")

    def __init__(self, kernel: Any, parent: dict[str, Any]) -> None:
        content = parent.get("content")
        if isinstance(content, dict) and content.get("allow_stdin") is True:
            self.ask: Any = _AskCaller(kernel, *compat.shell_parent(kernel))
        else:
            self.ask = refuse_input

    def __enter__(self) -> Callable[[Any], Any]:
        """Replace ``input`` and ``getpass``; return what the task's function becomes."""
        self.saved = builtins.input, getpass.getpass
        ask = self.ask
        builtins.input = ask
        getpass.getpass = lambda prompt="Password: ", stream=None: ask(prompt, password=True)
        return self.own

    def own(self, f: Any) -> Any:
        """``f``, or the replacement if ``f`` is ``input`` or ``getpass`` itself: sent as
        the task's function (``pool.submit(input, ...)``), they were unpickled as the
        originals, before the replacement."""
        saved_input, saved_getpass = self.saved
        if f is saved_input:
            return builtins.input
        if f is saved_getpass:
            return getpass.getpass
        return f

    def __exit__(self, *exc_info: object) -> None:
        builtins.input, getpass.getpass = self.saved


class _AskCaller:
    """``input()`` of one task: an ``input_request`` to its caller, then its answer."""

    __slots__ = ("ident", "kernel", "parent")

    def __init__(self, kernel: Any, ident: Any, parent: dict[str, Any]) -> None:
        self.kernel = kernel
        self.ident = ident
        self.parent = parent

    def __call__(self, prompt: object = "", *, password: bool = False) -> str:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()  # what the task printed comes before its question
        socket, session = self.kernel.stdin_socket, self.kernel.session
        while socket.poll(0):  # answers to questions asked before, and given up on
            session.recv(socket)
        request = self._send_request({"prompt": str(prompt), "password": password})
        reply = self._answer_to(request["header"]["msg_id"])
        content = reply.get("content") or {}
        error = content.get("error")
        if error:
            raise StdinNotImplementedError(f"input() in a task: {error}")
        value = content.get("value", "")
        if value == END_OF_INPUT:
            raise EOFError
        return str(value)

    def _send_request(self, content: dict[str, Any]) -> dict[str, Any]:
        """Send the ``input_request``, once the caller's stdin socket is connected.

        A ROUTER drops a message for an identity it does not know yet, and a
        pool's stdin socket may still be connecting when its first task runs:
        the send is retried for up to :data:`CONNECT_WAIT` seconds.
        """
        socket, session = self.kernel.stdin_socket, self.kernel.session
        deadline = time.monotonic() + CONNECT_WAIT
        socket.router_mandatory = 1
        try:
            while True:
                try:
                    return session.send(
                        socket, "input_request", content, self.parent, ident=self.ident
                    )
                except zmq.ZMQError as exc:
                    if exc.errno != zmq.EHOSTUNREACH or time.monotonic() > deadline:
                        raise StdinNotImplementedError(
                            "input() in a task: its caller has no stdin channel connected "
                            f"to this engine ({exc})"
                        ) from None
                time.sleep(0.01)
        finally:
            socket.router_mandatory = 0

    def _answer_to(self, msg_id: str) -> dict[str, Any]:
        """Wait for the ``input_reply`` to ``msg_id`` (one with no parent counts:
        jupyter_client's ``input()`` sends none)."""
        socket, session = self.kernel.stdin_socket, self.kernel.session
        while True:
            if not socket.poll(POLL_INTERVAL_MS, zmq.POLLIN):
                continue
            try:
                _, reply = session.recv(socket)
            except ValueError:  # a badly signed or malformed message: not an answer
                self.kernel.log.warning("Dropped an invalid message on stdin", exc_info=True)
                continue
            if reply is None or reply.get("msg_type") != "input_reply":
                continue
            if reply.get("parent_header", {}).get("msg_id") in (None, msg_id):
                return reply


def refuse_input(prompt: object = "", *args: Any, **kwargs: Any) -> str:
    """What ``input()`` does in a task whose caller cannot answer."""
    raise StdinNotImplementedError(
        f"input({prompt!r}) was called in a task, but its caller cannot answer: it sent "
        "the task from where nothing can be typed (no standard input, or a notebook "
        "run that allows no input, as in papermill or nbclient), or it is a client "
        "that did not ask for input (apply_request content 'allow_stdin'). Pass what "
        "the task needs as an argument instead."
    )
