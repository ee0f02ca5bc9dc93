"""Results kept on the engine that computed them, and inputs taken from where they are kept.

A request may ask (content ``"keep_over": N``) that a result of at least
``N`` bytes, as packed, stay here instead of travelling back: its reply then
says ``kept`` (the key, which is the request's msg_id, and the size) and
carries no result.  A kept value is

* served by ``fetch_request`` on the control channel, answered on the
  control thread while tasks run: to the pool, for ``future.result()``, and
  to other engines, for the inputs of their tasks;
* used in place by a task here that takes it as an input;
* dropped on ``release_request`` (the pool sends it when the last future that
  refers to the value is gone).

An input kept on another engine is fetched from that engine's control
channel, by the thread that runs the task, with the address and signing key
the request carries for it (and CurveZMQ when that engine uses it).  An
interrupt of the task while it waits for that engine ends the wait: the task
ends interrupted, its code never run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import zmq
from jupyter_client.session import Session

from .. import serialize, shared_memory
from ..errors import DeserializationError
from ..protocol import FETCH_REQUEST

#: Seconds an engine waits for another engine to answer a fetch of a kept input.
PEER_FETCH_TIMEOUT = 120.0
#: Seconds between two looks for an interrupt while an engine waits for another.
PEER_POLL_INTERVAL = 0.1


class ResultStore:
    """The values kept here, by key (thread-safe: the control thread serves them)."""

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}
        self._sizes: dict[str, int] = {}
        self._lock = threading.Lock()
        #: How many times a value was fetched from here (by the pool or another engine).
        self.fetches = 0

    def keep(self, key: str, value: Any, nbytes: int) -> None:
        """Keep ``value`` (``nbytes`` as packed) under ``key``."""
        with self._lock:
            self._values[key] = value
            self._sizes[key] = nbytes

    def get(self, key: str) -> Any:
        """The value kept under ``key``; ``KeyError`` if there is none."""
        with self._lock:
            return self._values[key]

    def fetch(self, key: str) -> Any:
        """:meth:`get`, counted as a fetch from elsewhere."""
        value = self.get(key)
        self.fetches += 1
        return value

    def release(self, keys: list[str]) -> list[str]:
        """Drop the values of ``keys``; return those that were here."""
        with self._lock:
            dropped = [key for key in keys if self._values.pop(key, None) is not None]
            for key in dropped:
                self._sizes.pop(key, None)
        return dropped

    def summary(self) -> dict[str, int]:
        """How many values are kept here, their bytes as packed, and the fetches so far."""
        with self._lock:
            return {
                "values": len(self._values),
                "nbytes": sum(self._sizes.values()),
                "fetches": self.fetches,
            }


def packed_size(frames: list[Any]) -> int:
    """Bytes of a packed value's frames."""
    return sum(memoryview(frame).nbytes for frame in frames)


def fetch_reply_content(store: ResultStore, content: Any) -> tuple[dict[str, Any], list[Any]]:
    """The ``fetch_reply`` content and buffers for a ``fetch_request`` content."""
    key = content.get("key") if isinstance(content, dict) else None
    if not isinstance(key, str):
        raise TypeError(f"{FETCH_REQUEST} 'key' must be a string, got {type(key).__name__}")
    try:
        value = store.fetch(key)
    except KeyError:
        raise KeyError(
            f"no value is kept here under {key!r} (released, or kept by a kernel "
            "that has restarted since)"
        ) from None
    result_content, buffers = serialize.pack_result(value)
    return shared_memory.toward(
        content.get("shared_memory"), {"status": "ok", **result_content}, buffers
    )


class InputResolver:
    """Gives a task the values of its inputs that are kept, here or on another engine.

    ``interrupted()`` says whether the task being given them was interrupted
    meanwhile (a fetch from another engine then stops waiting).
    """

    def __init__(self, store: ResultStore, interrupted: Callable[[], bool] = bool) -> None:
        self.store = store
        self.interrupted = interrupted

    def __call__(self, index: int, spec: Any) -> Any:
        """The value of input ``index``, kept as ``spec`` says (``{"key": ..., "peer": ...}``)."""
        if not isinstance(spec, dict) or not isinstance(spec.get("key"), str):
            raise DeserializationError(
                f"kept input {index} must be described by a dict with a 'key', got {spec!r}",
                "arguments",
            )
        peer = spec.get("peer")
        if peer is None:
            try:
                return self.store.get(spec["key"])
            except KeyError:
                raise DeserializationError(
                    f"input {index} is not kept on this engine any more (key {spec['key']!r})",
                    "arguments",
                ) from None
        return fetch_from_peer(index, spec["key"], peer, self.interrupted)


def fetch_from_peer(
    index: int, key: str, peer: dict[str, Any], interrupted: Callable[[], bool] = bool
) -> Any:
    """Fetch the value kept under ``key`` on the engine ``peer`` describes.

    Raises ``KeyboardInterrupt`` as soon as ``interrupted()`` is true while
    waiting for the answer.
    """
    try:
        url = peer["url"]
        session = Session(
            key=peer["key"].encode(), signature_scheme=peer.get("signature_scheme", "hmac-sha256")
        )
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise DeserializationError(
            f"input {index}: the engine it is kept on is not described right ({exc})", "arguments"
        ) from None
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.linger = 0
    try:
        server_key = peer.get("curve_serverkey")
        if server_key:
            public, secret = zmq.curve_keypair()
            socket.curve_publickey, socket.curve_secretkey = public, secret
            socket.curve_serverkey = server_key.encode()
        socket.connect(url)
        session.send(socket, FETCH_REQUEST, {"key": key, "shared_memory": shared_memory.place()})
        _wait_for_answer(socket, index, url, interrupted)
        _, reply = session.recv(socket, copy=False)
    finally:
        socket.close()
    content = reply["content"]
    if content.get("status") != "ok":
        raise DeserializationError(
            f"input {index} could not be fetched from the engine it is kept on: "
            f"{content.get('ename')}: {content.get('evalue')}",
            "arguments",
        )
    return serialize.unpack_result(content, reply["buffers"])


def _wait_for_answer(
    socket: zmq.Socket[Any], index: int, url: str, interrupted: Callable[[], bool]
) -> None:
    """Wait for the peer's answer on ``socket``, as long as the task is not interrupted."""
    deadline = time.monotonic() + PEER_FETCH_TIMEOUT
    while not socket.poll(PEER_POLL_INTERVAL * 1000):
        if interrupted():
            raise KeyboardInterrupt(
                f"interrupted while fetching input {index} from the engine it is kept on ({url})"
            )
        if time.monotonic() >= deadline:
            raise DeserializationError(
                f"input {index}: the engine it is kept on ({url}) did not answer within "
                f"{PEER_FETCH_TIMEOUT:g} s",
                "arguments",
            )
