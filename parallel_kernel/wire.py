"""Lean encoding and decoding of signed Jupyter messages, for the task channel.

``jupyter_client.Session`` is general: it parses every date of both headers
with dateutil, re-encodes the parent header, and adapts protocol versions.
That costs more than the rest of a small task's round trip, so both ends of
the task channel use a :class:`Codec` instead.  The messages are the same
Jupyter messages (same frames, same HMAC signature, same replay protection),
so either side can still be a plain ``Session`` user:

* :meth:`Codec.encode` builds a message with the session's key and identity; a
  reply can pass the request's header frame as its parent verbatim;
* :meth:`Codec.decode` checks the signature and replay history exactly as
  ``Session.deserialize`` does, parses the JSON with the session's unpacker,
  and turns only the header's date into a ``datetime`` (the parent's stays a string).

Each ZMQ frame of a message costs several microseconds more to send and
receive than the bytes in it, and a small task's request and reply have eight
frames each.  So the codec also speaks a *compact* framing of the very same
message, which the pool uses on the task channel: the signature, the four JSON
parts and any small buffers packed into one frame (see ``docs/protocol.md``)::

    b"PKM\x01" | u16 n | n u32 lengths | the n parts, back to back

Buffers of ``protocol.LARGE_BUFFER`` bytes or more still travel as frames of
their own, after the packed one, sent without copying.  :meth:`Codec.decode` reads
either framing; a reply uses the framing of its request.
"""

from __future__ import annotations

import contextlib
import hmac
import itertools
import json
import os
import struct
from datetime import UTC, datetime
from typing import Any

import zmq
from jupyter_client.jsonutil import json_default
from jupyter_client.session import DELIM
from jupyter_client.session import protocol_version as PROTOCOL_VERSION

from .protocol import LARGE_BUFFER

_DELIM = DELIM.encode() if isinstance(DELIM, str) else DELIM

#: First bytes of a compact message's packed frame (no JSON header or routing id starts so).
COMPACT_MAGIC = b"PKM\x01"
_COUNT = struct.Struct("<H")
_PREFIX = len(COMPACT_MAGIC) + _COUNT.size


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
        compact: bool = False,
    ) -> None:
        super().__init__(message)
        self.signed = signed
        self.idents = idents or []
        self.header = header
        self.compact = compact


_encoder = json.JSONEncoder(default=json_default, ensure_ascii=False, allow_nan=False)


_decoder = json.JSONDecoder()


def _dumps(obj: Any) -> bytes:
    # one encoder for all: json.dumps builds a new one per call when given options
    return _encoder.encode(obj).encode()


def _loads(data: bytes) -> Any:
    # json.loads would first sniff the encoding of bytes; the protocol says UTF-8
    return _decoder.decode(data.decode())


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


# pyzmq's backend calls with plain int constants: its Python-level wrappers
# convert every option and flag to an enum, a noticeable cost per frame
_SNDMORE = int(zmq.SNDMORE)
_NOBLOCK = int(zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_RCVMORE = int(zmq.RCVMORE)
_raw_send = zmq.backend.Socket.send
_raw_recv = zmq.backend.Socket.recv
_raw_get = zmq.backend.Socket.get


def readable(socket: zmq.Socket[Any]) -> bool:
    """Whether a message is waiting (reading ``ZMQ_EVENTS`` also re-arms the socket's FD)."""
    return bool(_raw_get(socket, _EVENTS) & _POLLIN)


def receive(socket: zmq.Socket[Any]) -> list[zmq.Frame]:
    """Receive one waiting multipart message, as ``zmq.Frame`` objects (not copied)."""
    frames = [_raw_recv(socket, _NOBLOCK, False)]
    while _raw_get(socket, _RCVMORE):
        frames.append(_raw_recv(socket, _NOBLOCK, False))
    return frames


class Codec:
    """Encodes and decodes one session's messages (its key, identity and packer).

    The session's settings are read once: traitlets attribute access would
    otherwise be a noticeable share of a small message's cost.
    """

    def __init__(self, session: Any) -> None:
        self.session = session
        self.auth = session.auth
        self.username = session.username
        self.session_id = session.session
        self.unpack = _loads if session.unpacker == "json" else session.unpack
        # every header differs only in msg_id, msg_type and date: the rest is encoded once
        head = _dumps(
            {
                "username": self.username,
                "session": self.session_id,
                "version": PROTOCOL_VERSION,
            }
        )
        self._header_tail = b", " + head[1:]
        self._types: dict[str, bytes] = {}
        # msg_ids: a random prefix per codec and a counter (as Session numbers its messages)
        self._id_prefix = os.urandom(12).hex() + "_"
        self._count = itertools.count()
        self.digests = session.digest_history
        self.history_size = session.digest_history_size

    def encode(
        self,
        msg_type: str,
        content: dict[str, Any],
        *,
        parent: bytes | dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        idents: list[Any] | None = None,
        buffers: list[Any] | tuple[Any, ...] = (),
        compact: bool = False,
    ) -> tuple[str, list[Any]]:
        """Build a signed message; return its msg_id and all its frames, buffers included.

        ``parent`` is the parent header, as a dict or as its already-encoded
        JSON.  ``compact`` packs everything but large buffers into one frame.
        """
        msg_id = f"{self._id_prefix}{next(self._count)}"
        encoded_type = self._types.get(msg_type)
        if encoded_type is None:
            encoded_type = self._types[msg_type] = _dumps(msg_type)
        header = b'{"msg_id": "%s", "msg_type": %s, "date": "%s"%s' % (
            msg_id.encode(),
            encoded_type,
            _now().encode(),
            self._header_tail,
        )
        if parent is None:
            parent_frame = b"{}"
        elif isinstance(parent, bytes):
            parent_frame = parent
        else:
            parent_frame = _dumps(parent)
        parts = [header, parent_frame, _dumps(metadata) if metadata else b"{}", _dumps(content)]
        signature = b""
        if self.auth is not None:
            digest = self.auth.copy()
            for part in parts:
                digest.update(part)
            signature = digest.hexdigest().encode()
        if not compact:
            return msg_id, [*(idents or ()), _DELIM, signature, *parts, *buffers]
        separate = any(memoryview(b).nbytes >= LARGE_BUFFER for b in buffers)
        packed = [signature, *parts] if separate else [signature, *parts, *buffers]
        lengths = [memoryview(p).nbytes for p in packed]
        head = COMPACT_MAGIC + _COUNT.pack(len(packed)) + struct.pack(f"<{len(packed)}I", *lengths)
        frame = b"".join([head, *packed])
        return msg_id, [*(idents or ()), frame, *(buffers if separate else ())]

    @staticmethod
    def send(socket: zmq.Socket[Any], frames: list[Any], track: bool = False):
        """Send a message's frames; if any is large, all go without a copy.

        Returns a ``MessageTracker`` when ``track`` is set and frames went
        without a copy, else ``None``.
        """
        last = len(frames) - 1
        if not any(memoryview(f).nbytes >= LARGE_BUFFER for f in frames):
            for i, frame in enumerate(frames):
                _raw_send(socket, frame, _SNDMORE if i < last else 0)
            return None
        tracker = socket.send_multipart(frames, copy=False, track=track)
        return tracker if track else None

    def _remember(self, signature: bytes) -> None:
        """Add a signature to the session's replay history (``Session._add_digest``)."""
        if not self.history_size:
            return
        self.digests.add(signature)
        if len(self.digests) > self.history_size:
            self.session._cull_digest_history()
            self.digests = self.session.digest_history

    def decode(self, frames: list[Any]) -> tuple[list[bytes], dict[str, Any]]:
        """Check and decode a received message: its routing identities and the message dict.

        ``frames`` are ``zmq.Frame`` objects (``recv_multipart(copy=False)``)
        in either framing; buffers come back as memoryviews of them, and
        ``msg["compact"]`` tells which framing it was.  The signature and
        replay checks are those of ``Session.deserialize``.
        """
        index = 0
        compact = False
        for frame in frames:
            data = frame.bytes
            if data == _DELIM:
                break
            if data[:4] == COMPACT_MAGIC:
                compact = True
                break
            index += 1
        else:
            raise WireError("neither an <IDS|MSG> delimiter nor a packed frame", signed=False)
        idents = [frame.bytes for frame in frames[:index]]
        if compact:
            parts = _unpack_frame(memoryview(frames[index]))
            buffers = parts[5:] + [memoryview(frame) for frame in frames[index + 1 :]]
        else:
            parts = frames[index + 1 :]
            buffers = [memoryview(frame) for frame in parts[5:]]
        if len(parts) < 5:
            raise WireError("fewer than five message parts", signed=False)
        signature = bytes(parts[0])
        head = [bytes(part) for part in parts[1:5]]
        if self.auth is not None:
            if not signature:
                raise WireError("unsigned message", signed=False)
            if signature in self.digests:
                raise WireError("duplicate signature (a replayed message)", signed=False)
            digest = self.auth.copy()
            for part in head:
                digest.update(part)
            if not hmac.compare_digest(signature, digest.hexdigest().encode()):
                raise WireError("invalid signature", signed=False)
            self._remember(signature)
        unpack = self.unpack
        try:
            header = unpack(head[0])
            parent = unpack(head[1])
            metadata = unpack(head[2])
            content = unpack(head[3])
        except Exception as exc:
            raise WireError(f"undecodable JSON: {exc}", True, idents, head[0], compact) from None
        if not isinstance(header, dict) or not isinstance(parent, dict):
            raise WireError("a header is not a JSON object", True, idents, head[0], compact)
        date = header.get("date")
        if isinstance(date, str):
            with contextlib.suppress(ValueError):
                header["date"] = datetime.fromisoformat(date)
        msg = {
            "header": header,
            "msg_id": header.get("msg_id"),
            "msg_type": header.get("msg_type"),
            "parent_header": parent,
            "metadata": metadata,
            "content": content,
            "buffers": buffers,
            "raw_header": head[0],
            "compact": compact,
        }
        return idents, msg


def _unpack_frame(view: memoryview) -> list[memoryview]:
    """The parts of a compact message's packed frame, as views into it."""
    try:
        (count,) = _COUNT.unpack_from(view, len(COMPACT_MAGIC))
        lengths = struct.unpack_from(f"<{count}I", view, _PREFIX)
    except struct.error:
        raise WireError("a truncated packed frame", signed=False) from None
    offset = _PREFIX + 4 * count
    if offset + sum(lengths) != view.nbytes:
        raise WireError("a packed frame whose lengths do not add up", signed=False)
    parts = []
    for length in lengths:
        parts.append(view[offset : offset + length])
        offset += length
    return parts
