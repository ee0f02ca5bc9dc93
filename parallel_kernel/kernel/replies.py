"""Every request gets exactly one reply: the kernel's safety net for bad input.

ipykernel answers a request it cannot handle with silence: an unknown message
type is only logged, a handler that raises is logged, a message whose JSON does
not decode is logged, and in each case the client waits forever.  The pieces
here turn each of those into a specific error reply:

* :class:`HandlerTable` maps message types to handlers; unknown types get a
  fallback handler, and each handler is guarded so that an exception, or a
  return without any reply, still produces an error reply (once);
* :func:`find_malformed` inspects a correctly signed message whose header
  decodes but whose other parts do not.
"""

from __future__ import annotations

import hmac
import inspect
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from .. import serialize

Handler = Callable[[Any, list[bytes], dict[str, Any]], Any]
ErrorReply = Callable[[Any, list[bytes], dict[str, Any], dict[str, Any]], None]


def reply_type(msg_type: str) -> str:
    """The reply type that answers ``msg_type`` (``foo_request`` → ``foo_reply``)."""
    base = msg_type[: -len("_request")] if msg_type.endswith("_request") else msg_type
    return f"{base}_reply"


def error_content(ename: str, evalue: str, traceback_lines: list[str] | None = None) -> dict:
    """The content of an error reply."""
    return {"status": "error", "ename": ename, "evalue": evalue, "traceback": traceback_lines or []}


class ReplyWatch:
    """Stands in for the reply stream given to a handler and notes whether it replied."""

    __slots__ = ("sent", "stream")

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.sent = False

    def send_multipart(self, *args: Any, **kwargs: Any) -> Any:
        """Send on the stream, noting that a reply went out."""
        self.sent = True
        return self.stream.send_multipart(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def send_tracked(session: Any, stream: Any, msg_type: str, **kwargs: Any) -> dict[str, Any]:
    """``session.send`` with a ZMQ tracker for its zero-copy buffers.

    ``Session.send`` tracks only sends on a real ``zmq.Socket``, so a
    :class:`ReplyWatch` is unwrapped first.
    """
    if isinstance(stream, ReplyWatch):
        stream.sent = True
        stream = stream.stream
    return session.send(stream, msg_type, track=True, **kwargs)


class HandlerTable(dict):
    """Message type → guarded handler, with a fallback for unknown types.

    ipykernel looks handlers up with ``table.get(msg_type, None)``; this table
    always returns a handler.  ``send_error(stream, ident, parent, content)``
    sends an error reply.  Types in ``answered_later`` reply from elsewhere
    (another thread), so a return without a reply is expected for them.
    """

    def __init__(
        self,
        handlers: dict[str, Handler],
        unknown: Handler,
        send_error: ErrorReply,
        log: Any,
        answered_later: Sequence[str] = (),
    ) -> None:
        self._send_error = send_error
        self._log = log
        super().__init__(
            {
                msg_type: self._guard(handler, expects_reply=msg_type not in answered_later)
                for msg_type, handler in handlers.items()
            }
        )
        self._unknown = self._guard(unknown, expects_reply=True)

    def __missing__(self, msg_type: str) -> Handler:
        """The error-reply handler, for every type without a handler of its own."""
        return self._unknown

    def get(self, msg_type: str, default: Any = None) -> Handler:
        """The handler for ``msg_type``; unknown types get the error-reply handler."""
        return self[msg_type]

    def _guard(self, handler: Handler, expects_reply: bool) -> Handler:
        """``handler`` wrapped so that an exception, or no reply at all, sends an error reply."""

        async def guarded(stream: Any, ident: list[bytes], parent: dict[str, Any]) -> None:
            watch = ReplyWatch(stream)
            msg_type = parent["header"]["msg_type"]
            try:
                result = handler(watch, ident, parent)
                if inspect.isawaitable(result):
                    await result
            except (Exception, KeyboardInterrupt) as exc:
                if watch.sent:
                    raise
                self._log.exception("Error handling %s", msg_type)
                content = error_content(
                    type(exc).__name__,
                    f"the kernel failed to handle this {msg_type}: {exc!r}",
                    traceback.format_exception(exc),
                )
                self._send_error(stream, ident, parent, content)
                return
            if expects_reply and not watch.sent and msg_type.endswith("_request"):
                self._log.error("%s was handled without a reply", msg_type)
                content = error_content(
                    "BadRequest",
                    f"the kernel could not handle this {msg_type}; its content is probably "
                    "missing required fields (the kernel log has details)",
                )
                self._send_error(stream, ident, parent, content)

        guarded.__name__ = getattr(handler, "__name__", "handler")
        guarded.__doc__ = handler.__doc__
        return guarded


def find_malformed(session: Any, frames: Sequence[Any]) -> tuple[list, dict, str] | None:
    """Find a correctly signed message that jupyter_client cannot deserialize.

    That is one whose parent, metadata or content is not valid JSON, or whose
    header's ``version`` is not a protocol version (such as "5.4"), or whose
    ``subshell_id`` is neither a string nor null.

    Returns ``(idents, header, problem)`` for such a message, else ``None``:
    well-formed messages, and messages that are unsigned, badly signed or have
    an unreadable header, are left to ipykernel (which drops the latter).
    """
    if len(frames) < 2:
        return None
    try:
        idents, parts = session.feed_identities(frames, copy=False)
        parts = [bytes(part) for part in parts[:5]]
        if len(parts) < 5:
            return None
        if session.auth is not None and not hmac.compare_digest(parts[0], session.sign(parts[1:5])):
            return None
        header = session.unpack(parts[1])
        if not isinstance(header, dict) or not isinstance(header.get("msg_type"), str):
            return None
    except Exception:
        return None
    problems = []
    if "version" in header and not _is_protocol_version(header["version"]):
        # jupyter_client cannot deserialize such a message at all
        problems.append(f"header 'version' is not a protocol version: {header['version']!r:.40}")
    if not isinstance(header.get("subshell_id"), str | None):
        # ipykernel cannot route it to a subshell (nor to the main shell)
        problems.append("header 'subshell_id' is neither a string nor null")
    for name, part in zip(("parent_header", "metadata", "content"), parts[2:5], strict=True):
        try:
            value = session.unpack(part)
        except Exception as exc:
            problems.append(f"{name} is not valid JSON ({exc})")
            continue
        if name != "content" and not isinstance(value, dict):
            problems.append(f"{name} is not a JSON object")
    if not problems:
        return None
    return list(idents), header, "; ".join(problems)


def _is_protocol_version(version: Any) -> bool:
    """Whether jupyter_client can read ``version`` (it parses the part before the first dot)."""
    if not isinstance(version, str):
        return False
    try:
        int(version.split(".")[0])
    except ValueError:
        return False
    return True


def pack_exception(exc: BaseException, reply_content: dict[str, Any]) -> list[Any]:
    """Attach the exception object itself to an error reply, when it can be pickled.

    A client can then re-raise or inspect the original exception (its class
    importable there); the error content stays complete without it.
    """
    try:
        parts, buffers = serialize.pack_result(exc)
    except serialize.SerializationError:
        return []
    reply_content.update(parts)
    return buffers


def peek_header(session: Any, frames: list[Any]) -> dict[str, Any] | None:
    """The header of a raw message, read without checking its signature
    (``Session.deserialize`` checks it, and records it against replays, so the
    message can be deserialized only once, where it is handled)."""
    try:
        _, rest = session.feed_identities(frames, copy=False)
        header = session.unpack(bytes(rest[1]))
    except Exception:
        return None
    return header if isinstance(header, dict) else None
