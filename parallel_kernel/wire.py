"""Lean encoding and decoding of signed Jupyter messages, for the task channel.

``jupyter_client.Session`` is general: it parses every date of both headers
with dateutil, re-encodes the parent header, and adapts protocol versions.
That costs more than the rest of a small task's round trip, so both ends of
the task channel use these two functions instead.  The messages are the same
Jupyter messages (same frames, same HMAC signature, same replay protection),
so either side can still be a plain ``Session`` user:

* :func:`encode` builds a message with the session's key and identity; a reply
  can pass the request's header frame as its parent verbatim;
* :func:`decode` checks the signature and replay history exactly as
  ``Session.deserialize`` does, parses the JSON with the session's unpacker,
  and turns only the two header dates into ``datetime`` objects.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import zmq
from jupyter_client.jsonutil import json_default
from jupyter_client.session import DELIM

#: Frames of at least this many bytes are sent without copying (as Session does).
COPY_THRESHOLD = 2**16

_DELIM = DELIM.encode() if isinstance(DELIM, str) else DELIM


class WireError(ValueError):
    """A message that cannot be decoded.

    ``signed`` tells whether its signature was valid (then its sender can be
    answered, as with malformed JSON) or not (then it must be dropped).
    """

    def __init__(
        self,
        message: str,
        signed: bool,
        idents: list[Any] | None = None,
        header: bytes | None = None,
    ) -> None:
        super().__init__(message)
        self.signed = signed
        self.idents = idents or []
        self.header = header


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, default=json_default, ensure_ascii=False, allow_nan=False).encode()


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def encode(
    session: Any,
    msg_type: str,
    content: dict[str, Any],
    *,
    parent: bytes | dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    idents: list[Any] | None = None,
) -> tuple[str, list[Any]]:
    """Build a signed message; return its msg_id and its frames (buffers not included).

    ``parent`` is the parent header, as a dict or as its already-encoded JSON.
    """
    msg_id = uuid.uuid4().hex
    header = _dumps(
        {
            "msg_id": msg_id,
            "msg_type": msg_type,
            "username": session.username,
            "session": session.session,
            "date": _now(),
            "version": "5.3",
        }
    )
    if parent is None:
        parent_frame = b"{}"
    elif isinstance(parent, bytes):
        parent_frame = parent
    else:
        parent_frame = _dumps(parent)
    parts = [header, parent_frame, _dumps(metadata or {}), _dumps(content)]
    signature = b""
    if session.auth is not None:
        digest = session.auth.copy()
        for part in parts:
            digest.update(part)
        signature = digest.hexdigest().encode()
    return msg_id, [*(idents or []), _DELIM, signature, *parts]


def send(socket: zmq.Socket[Any], frames: list[Any], buffers: list[Any], track: bool = False):
    """Send a message's frames and buffers; large buffers go without a copy.

    Returns a ``MessageTracker`` when ``track`` is set and a buffer went
    without a copy, else ``None``.
    """
    large = any(memoryview(b).nbytes >= COPY_THRESHOLD for b in buffers)
    if not large:
        socket.send_multipart([*frames, *buffers])
        return None
    tracker = socket.send_multipart([*frames, *buffers], copy=False, track=track)
    return tracker if track else None


def decode(session: Any, frames: list[Any]) -> tuple[list[Any], dict[str, Any]]:
    """Check and decode a received message: its routing identities and the message dict.

    ``frames`` are ``zmq.Frame`` objects (``recv_multipart(copy=False)``);
    buffers come back as memoryviews of them.
    """
    index = next((i for i, frame in enumerate(frames) if frame.bytes == _DELIM), None)
    if index is None:
        raise WireError("no <IDS|MSG> delimiter", signed=False)
    idents = [frame.bytes for frame in frames[:index]]
    parts = frames[index + 1 :]
    if len(parts) < 5:
        raise WireError("fewer than five message frames", signed=False)
    signature = parts[0].bytes
    head = [part.bytes for part in parts[1:5]]
    if session.auth is not None:
        if not signature:
            raise WireError("unsigned message", signed=False)
        if signature in session.digest_history:
            raise WireError("duplicate signature (a replayed message)", signed=False)
        digest = session.auth.copy()
        for part in head:
            digest.update(part)
        if not hmac.compare_digest(signature, digest.hexdigest().encode()):
            raise WireError("invalid signature", signed=False)
        session._add_digest(signature)
    try:
        header = session.unpack(head[0])
        parent = session.unpack(head[1])
        metadata = session.unpack(head[2])
        content = session.unpack(head[3])
    except Exception as exc:
        raise WireError(f"undecodable JSON: {exc}", True, idents, head[0]) from None
    if not isinstance(header, dict) or not isinstance(parent, dict):
        raise WireError("a header is not a JSON object", True, idents, head[0])
    for h in (header, parent):
        date = h.get("date")
        if isinstance(date, str):
            with contextlib.suppress(ValueError):
                h["date"] = datetime.fromisoformat(date)
    msg = {
        "header": header,
        "msg_id": header.get("msg_id"),
        "msg_type": header.get("msg_type"),
        "parent_header": parent,
        "metadata": metadata,
        "content": content,
        "buffers": [memoryview(frame) for frame in parts[5:]],
        "raw_header": head[0],
    }
    return idents, msg
