"""Bad input gets a specific error reply, never silence, and the kernel keeps serving."""

from __future__ import annotations

import sys
import textwrap
import threading

import numpy as np
import pytest
from conftest import Driver
from jupyter_client.session import Session

from parallel_kernel import serialize


def assert_still_serving(kernel: Driver) -> None:
    assert kernel.call(lambda: "still serving") == "still serving"


def error_of(kernel: Driver, content, buffers) -> dict:
    reply = kernel.reply(kernel.send("apply_request", content, buffers=buffers))
    assert reply["msg_type"] == "apply_reply"
    assert reply["content"]["status"] == "error"
    assert reply["metadata"]["status"] == "error"
    content = reply["content"]
    if not serialize.is_native_apply(content):  # an ipyparallel-format request's
        assert reply["buffers"] == []
        return content
    # the exception itself travels too, for a client to raise it
    exception = serialize.unpack_result(content, reply["buffers"])
    assert type(exception).__name__ == content["ename"]
    assert str(exception) == content["evalue"]
    return content


NATIVE = {"format": serialize.FORMAT, "version": serialize.FORMAT_VERSION}


def test_no_buffers(kernel: Driver) -> None:
    error = error_of(kernel, {**NATIVE, "parts": [1, 1]}, [])
    assert error["ename"] == "DeserializationError"
    assert error["evalue"] == (
        "message declares 2 buffers ({'function': 1, 'arguments': 1}) but carries 0"
    )
    assert_still_serving(kernel)


def test_content_without_a_format(kernel: Driver) -> None:
    error = error_of(kernel, {"format": "other"}, [b"whatever"])
    assert error["ename"] == "DeserializationError"
    assert "does not declare format 'parallel_kernel'" in error["evalue"]
    assert_still_serving(kernel)


def test_empty_content_with_buffers_that_are_not_ipyparallel_format(kernel: Driver) -> None:
    """Empty content is ipyparallel's apply_request format; junk buffers are refused clearly."""
    error = error_of(kernel, {}, [b"whatever"])
    assert error["ename"] == "DeserializationError"
    assert (
        "neither the parallel_kernel format nor is it valid ipyparallel format" in (error["evalue"])
    )
    assert_still_serving(kernel)


def test_unsupported_version(kernel: Driver) -> None:
    error = error_of(kernel, {**NATIVE, "version": 99, "parts": [1, 1]}, [b"x", b"y"])
    assert "unsupported parallel_kernel format version 99" in error["evalue"]


@pytest.mark.parametrize("parts", [None, [1], [0, 2], ["1", 1], [True, 1]])
def test_bad_parts(kernel: Driver, parts) -> None:
    error = error_of(kernel, {**NATIVE, "parts": parts}, [b"x", b"y"])
    assert "'parts' must be a list of 2 positive integers" in error["evalue"]


def test_garbage_bytes(kernel: Driver) -> None:
    error = error_of(kernel, {**NATIVE, "parts": [1, 1]}, [b"\x00garbage", b"\xffmore"])
    assert error["ename"] == "DeserializationError"
    assert error["evalue"].startswith("cannot deserialize the function: UnpicklingError")
    assert_still_serving(kernel)


def test_truncated_buffer_list(kernel: Driver) -> None:
    content, buffers = serialize.pack_apply(np.sum, (np.zeros(100_000),))
    assert len(buffers) == 3  # function, arguments, the array's own frame
    error = error_of(kernel, content, buffers[:-1])
    assert error["evalue"] == (
        "message declares 3 buffers ({'function': 1, 'arguments': 2}) but carries 2"
    )
    assert_still_serving(kernel)


def test_arguments_that_are_not_an_args_kwargs_pair(kernel: Driver) -> None:
    frames = serialize.pack(len) + serialize.pack("not a pair")
    error = error_of(kernel, {**NATIVE, "parts": [1, 1]}, frames)
    assert "the arguments must unpickle to a (tuple, dict) pair" in error["evalue"]


def test_function_that_is_not_callable(kernel: Driver) -> None:
    frames = serialize.pack(42) + serialize.pack(((), {}))
    error = error_of(kernel, {**NATIVE, "parts": [1, 1]}, frames)
    assert error["ename"] == "TypeError"
    assert error["evalue"] == "apply_request: the function is not callable: int 42"
    assert_still_serving(kernel)


def test_unpicklable_result(kernel: Driver) -> None:
    reply = kernel.apply(threading.Lock)
    error = reply["content"]
    # what pickling raised, said to be about the result
    assert error["ename"] == "TypeError"
    assert error["evalue"] == "cannot pickle '_thread.lock' object"
    assert "(raised while pickling the result of allocate_lock)" in error["plain_traceback"]
    assert error["engine_info"]["method"] == "apply"
    assert_still_serving(kernel)


def test_function_whose_module_is_missing_on_the_engine(kernel: Driver, tmp_path, monkeypatch):
    (tmp_path / "only_on_the_client.py").write_text(
        textwrap.dedent(
            """
            def task():
                return "client-only module"
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import only_on_the_client

    try:
        reply = kernel.apply(only_on_the_client.task)
    finally:
        sys.modules.pop("only_on_the_client", None)
    error = reply["content"]
    assert error["ename"] == "DeserializationError"
    assert error["evalue"] == (
        "cannot deserialize the function: ModuleNotFoundError: No module named 'only_on_the_client'"
    )
    assert_still_serving(kernel)


def test_unpicklable_argument_fails_on_the_client() -> None:
    with pytest.raises(serialize.SerializationError, match="the arguments: cannot serialize"):
        serialize.pack_apply(print, (threading.Lock(),))


def test_unknown_message_types_get_an_error_reply(kernel: Driver) -> None:
    for channel in ("shell", "control"):
        msg_id = kernel.send("frobnicate_request", {"x": 1}, channel=channel)
        reply = kernel.reply(msg_id, channel=channel)
        assert reply["msg_type"] == "frobnicate_reply"
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "UnknownMessageType"
        assert reply["content"]["evalue"] == (
            f"this kernel does not handle 'frobnicate_request' on the {channel} channel"
        )
    # abort is a control message; on shell it is refused instead of queued uselessly
    reply = kernel.reply(kernel.send("abort_request", {"msg_ids": []}))
    assert reply["content"]["ename"] == "UnknownMessageType"
    assert_still_serving(kernel)


@pytest.mark.parametrize("channel", ["shell", "control"])
def test_badly_signed_messages_are_dropped(kernel: Driver, channel: str) -> None:
    kernel.execute("signed_marker = 'untouched'")
    forger = Session(key=b"not-the-key", username="mallory")
    socket = getattr(kernel.client, f"{channel}_channel").socket
    msg_type = "execute_request" if channel == "shell" else "clear_request"
    forger.send(socket, msg_type, {"code": "signed_marker = 'forged'", "silent": False})
    assert kernel.no_reply(channel, wait=1.5) == []
    assert kernel.call(lambda: signed_marker) == "untouched"  # noqa: F821


@pytest.mark.parametrize("channel", ["shell", "control"])
def test_signed_message_with_malformed_json_gets_an_error_reply(kernel: Driver, channel) -> None:
    msg_id = kernel.send("execute_request", b"{not json", channel=channel)  # packed as is
    reply = kernel.reply(msg_id, channel=channel)
    assert reply["msg_type"] == "execute_reply"
    assert reply["content"]["ename"] == "MalformedMessage"
    assert reply["content"]["evalue"].startswith(
        f"execute_request '{msg_id}' cannot be decoded: content is not valid JSON"
    )
    statuses = [m["content"]["execution_state"] for m in kernel.iopub(msg_id)]
    assert statuses == ["busy", "idle"]
    assert_still_serving(kernel)


@pytest.mark.parametrize(
    ("msg_type", "content"),
    [
        ("execute_request", {"no_code": 1}),
        ("execute_request", b"[1, 2]"),
        ("complete_request", {}),
        ("inspect_request", {"code": "x"}),
        ("is_complete_request", {}),
    ],
)
def test_standard_requests_with_missing_fields_get_an_error_reply(
    kernel: Driver, msg_type, content
) -> None:
    reply = kernel.reply(kernel.send(msg_type, content))
    assert reply["msg_type"] == msg_type.replace("_request", "_reply")
    assert reply["content"]["status"] == "error"
    assert msg_type in reply["content"]["evalue"]
    assert kernel.no_reply(wait=0.3) == []
    assert_still_serving(kernel)


@pytest.mark.parametrize("msg_id", [[1], {"a": 1}, 7])
def test_a_request_whose_msg_id_is_not_a_string_still_gets_a_reply(kernel: Driver, msg_id):
    msg = kernel.session.msg("kernel_info_request", {})
    msg["header"]["msg_id"] = msg_id
    kernel.client.shell_channel.send(msg)
    reply = kernel.client.get_shell_msg(timeout=10)
    assert reply["msg_type"] == "kernel_info_reply"
    assert reply["parent_header"]["msg_id"] == msg_id
    assert_still_serving(kernel)
