"""Fuzzing the kernel's message decoding: every well-signed message is answered, none kills it.

Hypothesis generates the messages (derandomized, so CI sees the same ones
every run). Each example is sent to one long-lived kernel; afterwards the
kernel must still answer a real task.
"""

from __future__ import annotations

import json
import struct
import uuid
from typing import Any

import pytest
import zmq
from conftest import Driver
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parallel_kernel import serialize, wire

TIMEOUT = 30
#: Seconds a fuzzed request may take to be answered (a missing answer fails fast).
REPLY = 5

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
#: apply_request contents that look more or less like ours
apply_contents = st.fixed_dictionaries(
    {},
    optional={
        "format": st.sampled_from([serialize.FORMAT, "ipyparallel", ""]) | st.text(max_size=10),
        "version": st.sampled_from([serialize.FORMAT_VERSION, 0, 2]) | json_values,
        "parts": st.lists(st.integers(-2, 4), max_size=3) | json_values,
    },
).flatmap(
    lambda c: st.dictionaries(st.text(max_size=8), json_values, max_size=3).map(
        lambda x: {**x, **c}
    )
)
buffer_lists = st.lists(st.binary(max_size=200), max_size=4)


def still_serving(kernel: Driver) -> None:
    assert kernel.call(lambda: "alive") == "alive"


def task_socket(kernel: Driver) -> zmq.Socket:
    port = kernel.client.kernel_info(reply=True, timeout=TIMEOUT)["content"]["parallel"][
        "task_port"
    ]
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.linger = 0
    socket.connect(f"tcp://{kernel.client.ip}:{port}")
    return socket


@FUZZ
@given(
    content=apply_contents,
    buffers=buffer_lists,
    metadata=st.dictionaries(st.text(max_size=8), json_values, max_size=3),
)
def test_apply_requests_with_random_content_and_buffers(
    kernel: Driver, content: dict, buffers: list[bytes], metadata: dict
) -> None:
    msg_id = kernel.send("apply_request", content, buffers=buffers, metadata=metadata)
    reply = kernel.reply(msg_id, timeout=REPLY)
    assert reply["msg_type"] == "apply_reply"
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"]
    assert reply["content"]["evalue"]


@FUZZ
@given(content=json_values | st.binary(max_size=50), channel=st.sampled_from(["shell", "control"]))
def test_abort_and_clear_requests_with_random_content(
    kernel: Driver, content: Any, channel: str
) -> None:
    # packed here: jupyter_client's Session refuses to pack content that is not an object
    packed = content if isinstance(content, bytes) else kernel.session.pack(content)
    for msg_type in ("abort_request", "clear_request"):
        if channel == "shell" and msg_type == "abort_request":
            continue
        msg_id = kernel.send(msg_type, packed, channel=channel)
        reply = kernel.reply(msg_id, channel=channel, timeout=REPLY)
        assert reply["msg_type"] == msg_type.replace("_request", "_reply")
        assert reply["content"]["status"] in ("ok", "error")
        if reply["content"]["status"] == "error":
            assert reply["content"]["evalue"]


@FUZZ
@given(
    header=st.dictionaries(
        st.sampled_from(
            ["msg_id", "msg_type", "session", "username", "date", "version", "subshell_id"]
        ),
        json_values,
        max_size=3,
    )
)
def test_apply_requests_with_random_header_fields(kernel: Driver, header: dict) -> None:
    header.pop("msg_type", None)  # the reply type is named after it; covered below
    content, buffers = serialize.pack_apply(abs, (-3,), {})
    # a nonce: hypothesis may repeat a header, and the kernel drops a replayed signature
    nonce = {"nonce": str(uuid.uuid4())}
    msg_id = kernel.send("apply_request", content, buffers=buffers, header=header, metadata=nonce)
    if isinstance(msg_id, str):
        reply = kernel.reply(msg_id, timeout=REPLY)
    else:  # the driver files replies by msg_id; an unhashable one is read here
        reply = kernel.client.get_shell_msg(timeout=REPLY)
        assert reply["parent_header"]["msg_id"] == msg_id
    assert reply["msg_type"] == "apply_reply"
    assert reply["content"]["status"] in ("ok", "error")


@FUZZ
@given(msg_type=st.text(min_size=1, max_size=30), content=json_values)
def test_random_message_types(kernel: Driver, msg_type: str, content: Any) -> None:
    if not msg_type.endswith("_request"):
        msg_type += "_request"
    known = {"execute_request", "shutdown_request", "debug_request", "abort_request"}
    if msg_type in known:
        return
    kernel.send(msg_type, content if isinstance(content, dict) else {"value": content})
    still_serving(kernel)


@FUZZ
@given(frames=st.lists(st.binary(max_size=100), min_size=1, max_size=8))
def test_random_unsigned_frames_are_dropped(kernel: Driver, frames: list[bytes]) -> None:
    kernel.client.shell_channel.socket.send_multipart(frames)
    socket = task_socket(kernel)
    try:
        socket.send_multipart(frames)
        socket.send(wire.COMPACT_MAGIC + b"".join(frames))
        assert not socket.poll(50)  # nothing is answered for them
    finally:
        socket.close()
    still_serving(kernel)


@FUZZ
@given(
    parts=st.lists(st.binary(max_size=60), min_size=4, max_size=4),
    buffers=buffer_lists,
    compact=st.booleans(),
)
def test_signed_task_channel_messages_with_random_json_parts(
    kernel: Driver, parts: list[bytes], buffers: list[bytes], compact: bool
) -> None:
    """Signed with the right key but undecodable: an error reply when the header names a type."""
    codec = wire.Codec(kernel.session)
    # a fresh id: the kernel drops a signature it has seen (replay protection)
    header = json.dumps({"msg_id": str(uuid.uuid4()), "msg_type": "apply_request"}).encode()
    head = [header, *parts[1:]]
    digest = kernel.session.auth.copy()
    for part in head:
        digest.update(part)
    signature = digest.hexdigest().encode()
    socket = task_socket(kernel)
    try:
        if compact:
            packed = [signature, *head, *buffers]
            lengths = struct.pack(f"<H{len(packed)}I", len(packed), *(len(p) for p in packed))
            socket.send(wire.COMPACT_MAGIC + lengths + b"".join(packed))
        else:
            socket.send_multipart([b"<IDS|MSG>", signature, *head, *buffers])
        assert socket.poll(REPLY * 1000), "a signed message got no answer"
        _, msg = codec.decode(socket.recv_multipart(copy=False))
        assert msg["msg_type"] == "apply_reply"
        assert msg["content"]["status"] in ("ok", "error")
    finally:
        socket.close()


@pytest.fixture(autouse=True)
def _serving_after_the_module(kernel: Driver):
    yield
    still_serving(kernel)
