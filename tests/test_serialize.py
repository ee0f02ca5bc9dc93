"""The wire format on its own: round trips, out-of-band frames without copies, errors."""

from __future__ import annotations

import email
import pickle
import threading

import numpy as np
import pytest

from parallel_kernel import serialize


def test_small_objects_stay_in_one_frame() -> None:
    obj = {"a": [1, 2.5, "x"], "b": b"bytes", "c": np.arange(10)}
    frames = serialize.pack(obj)
    assert len(frames) == 1
    out = serialize.unpack(frames)
    assert out["a"] == obj["a"]
    assert out["b"] == obj["b"]
    np.testing.assert_array_equal(out["c"], obj["c"])


def test_large_buffers_become_frames_that_view_the_original_memory() -> None:
    array = np.arange(100_000, dtype=np.int64)
    view = memoryview(bytearray(range(256)) * 1024).cast("I")
    frames = serialize.pack([array, view, b"small", bytearray(b"small")])
    assert len(frames) == 3
    assert np.shares_memory(np.frombuffer(frames[1], dtype=np.int64), array)
    assert np.shares_memory(np.frombuffer(frames[2], np.uint8), np.frombuffer(view.obj, np.uint8))
    out = serialize.unpack(frames)
    np.testing.assert_array_equal(out[0], array)
    assert out[1].format == "I"
    assert out[1].tolist() == view.tolist()
    assert out[2:] == [b"small", bytearray(b"small")]


def test_large_bytes_arguments_and_results_travel_out_of_band() -> None:
    blob = b"z" * serialize.INLINE_THRESHOLD
    mutable = bytearray(blob)
    content, buffers = serialize.pack_apply(len, (blob,), {"data": mutable})
    assert content["parts"] == [1, 3]
    assert buffers[2].obj is blob
    assert buffers[3].obj is mutable
    _, args, kwargs = serialize.unpack_apply(content, buffers)
    assert args == (blob,)
    assert kwargs == {"data": mutable}
    assert type(kwargs["data"]) is bytearray
    for result in (blob, [blob, 1], (1, blob), {"k": mutable}):
        content, buffers = serialize.pack_result(result)
        assert len(buffers) == 2
        out = serialize.unpack_result(content, buffers)
        assert out == result
        assert type(out) is type(result)


def test_memoryviews_that_cannot_be_rebuilt_are_refused() -> None:
    for array in (np.zeros(20_000, dtype=">i4"), np.zeros(10, dtype=np.complex128)):
        with pytest.raises(serialize.SerializationError, match="cannot be rebuilt"):
            serialize.pack(memoryview(array))


def test_memoryviews_of_any_layout_round_trip() -> None:
    small = memoryview(b"abc")
    strided = memoryview(np.arange(40_000, dtype=np.int16))[::2]
    out_small, out_strided = serialize.unpack(serialize.pack((small, strided)))
    assert out_small.tobytes() == b"abc"
    assert out_strided.tolist() == strided.tolist()


def test_unpacked_arrays_are_built_on_the_received_frames() -> None:
    array = np.arange(100_000, dtype=np.float32)
    frames = serialize.pack(array)
    received = [frames[0], bytearray(frames[1])]  # as if it came off the wire
    out = serialize.unpack(received)
    received[1][:4] = b"\xff\xff\xff\xff"  # the array is a view of the frame
    assert out.flags.writeable
    assert np.isnan(out[0])
    np.testing.assert_array_equal(out[1:], array[1:])


def test_non_contiguous_arrays_are_copied_in_band() -> None:
    array = np.arange(200_000).reshape(400, 500)[:, ::2]
    frames = serialize.pack(array)
    assert len(frames) == 1
    np.testing.assert_array_equal(serialize.unpack(frames), array)


def test_lambdas_closures_and_main_functions_round_trip() -> None:
    factor = 3

    def scale(x):
        return x * factor

    for f, arg, expected in [(lambda x: x + 1, 1, 2), (scale, 2, 6)]:
        content, buffers = serialize.pack_apply(f, (arg,))
        g, args, kwargs = serialize.unpack_apply(content, buffers)
        assert g(*args, **kwargs) == expected


def test_apply_layout() -> None:
    array = np.ones(50_000)
    content, buffers = serialize.pack_apply(np.add, (array,), {"out": None})
    assert content == {"format": "parallel_kernel", "version": 1, "parts": [1, 2]}
    f, args, kwargs = serialize.unpack_apply(content, buffers)
    assert f is np.add
    np.testing.assert_array_equal(args[0], array)
    assert kwargs == {"out": None}


def test_function_frames_can_be_reused() -> None:
    frames = serialize.pack(abs)
    content, buffers = serialize.pack_apply(abs, (-3,), function_frames=frames)
    assert buffers[0] is frames[0]
    f, args, _ = serialize.unpack_apply(content, buffers)
    assert f(*args) == 3


def test_result_round_trip() -> None:
    content, buffers = serialize.pack_result({"x": np.zeros(20_000)})
    assert content["parts"] == [2]
    assert serialize.unpack_result(content, buffers)["x"].shape == (20_000,)


def test_unpicklable_objects_name_the_part() -> None:
    with pytest.raises(serialize.SerializationError, match=r"^the function: cannot serialize"):
        serialize.pack_apply(_Unpicklable())
    with pytest.raises(serialize.SerializationError, match=r"^the arguments: .*_thread.lock"):
        serialize.pack_apply(print, (threading.Lock(),))
    with pytest.raises(serialize.SerializationError, match=r"is not callable"):
        serialize.pack_apply(42)


class _Unpicklable:
    def __call__(self):
        return None

    def __reduce__(self):
        raise pickle.PicklingError("no pickling for you")


def test_malformed_frames_raise_deserialization_errors() -> None:
    content, buffers = serialize.pack_apply(len, ([1],))
    with pytest.raises(serialize.DeserializationError, match="declares 2 buffers"):
        serialize.unpack_apply(content, [*buffers, b"extra"])
    with pytest.raises(serialize.DeserializationError) as info:
        serialize.unpack_apply(content, [b"junk", buffers[1]])
    assert info.value.part == "function"
    with pytest.raises(serialize.DeserializationError, match="no frames"):
        serialize.unpack([])


# -- a function sent many times is pickled once, unless pickling again could differ

SCALE = 2
HISTORY = [1]


def scaled(x):
    return x * SCALE


def history():
    return list(HISTORY)


def call_through_the_wire(f, *args):
    content, buffers = serialize.pack_apply(f, args)
    g, a, k = serialize.unpack_apply(content, buffers)
    return g(*a, **k)


def test_rebinding_a_global_a_function_reads_is_seen_by_the_next_call() -> None:
    global SCALE
    assert call_through_the_wire(scaled, 5) == 10
    assert call_through_the_wire(scaled, 5) == 10
    SCALE = 3
    try:
        assert call_through_the_wire(scaled, 5) == 15
    finally:
        SCALE = 2


def test_mutating_a_global_a_function_reads_is_seen_by_the_next_call() -> None:
    assert call_through_the_wire(history) == [1]
    HISTORY.append(2)
    try:
        assert call_through_the_wire(history) == [1, 2]
    finally:
        HISTORY.pop()


def test_changed_defaults_and_a_redefined_function_are_seen() -> None:
    def offset(x, by=1):
        return x + by

    assert call_through_the_wire(offset, 1) == 2
    offset.__defaults__ = (10,)
    assert call_through_the_wire(offset, 1) == 11

    def offset(x, by=100):  # redefined, as when a notebook cell runs again
        return x + by

    assert call_through_the_wire(offset, 1) == 101


def test_a_cached_function_pickle_is_reused_only_for_the_same_function() -> None:
    first = serialize.pack_apply(scaled, (1,))[1][0]
    again = serialize.pack_apply(scaled, (1,))[1][0]
    assert first is again  # the same frames: pickled once
    assert serialize.pack_apply(history, ())[1][0] is not serialize.pack_apply(history, ())[1][0]


def documented(x):
    """Version one."""
    return x


def test_a_changed_name_module_or_doc_is_pickled_again() -> None:
    f = documented
    first = serialize.pack_apply(f, (1,))[1][0]
    f.__doc__ = "Version two."
    try:
        again = serialize.pack_apply(f, (1,))
        assert again[1][0] is not first
        g, _, _ = serialize.unpack_apply(*again)
        assert g.__doc__ == "Version two."
    finally:
        f.__doc__ = "Version one."


def subject(text):
    return email.message_from_string(text)["Subject"]


def test_a_function_reaching_through_a_package_is_never_cached() -> None:
    # which submodules of a package are imported can change between two pickles
    assert (
        serialize.pack_apply(subject, ("",))[1][0] is not serialize.pack_apply(subject, ("",))[1][0]
    )
    assert serialize.pack_apply(scaled, (1,))[1][0] is serialize.pack_apply(scaled, (1,))[1][0]


def remember(x):
    HISTORY.append(x)
    return list(HISTORY)


def collect(x, seen=[]):  # noqa: B006 - the shared default is the point
    seen.append(x)
    return list(seen)


def unpacked_function(f):
    content, buffers = serialize.pack_apply(f, (1,))
    return serialize.unpack_apply(content, buffers)[0]


def test_an_engine_reuses_a_function_unpickled_from_the_same_bytes_only_if_stateless() -> None:
    assert unpacked_function(scaled) is unpacked_function(scaled)
    assert unpacked_function(remember) is not unpacked_function(remember)
    assert unpacked_function(collect) is not unpacked_function(collect)


def test_state_a_function_carries_is_fresh_for_every_call() -> None:
    assert call_through_the_wire(remember, 2) == [1, 2]
    assert call_through_the_wire(remember, 3) == [1, 3]
    assert call_through_the_wire(collect, 1) == [1]
    assert call_through_the_wire(collect, 2) == [2]


def test_inputs_travel_as_parts_after_the_arguments_and_take_their_places() -> None:
    array = np.arange(100_000, dtype=np.float64)
    args = ([serialize.input_placeholder(0), "x"],)
    content, buffers = serialize.pack_apply(dict, args, {"k": serialize.input_placeholder(1)})
    content, buffers = serialize.with_inputs(content, buffers, [array, "second"])
    assert content["inputs"] == 2
    assert len(content["parts"]) == 4
    _, (items,), kwargs = serialize.unpack_apply(content, buffers)
    assert items[1] == "x"
    assert kwargs == {"k": "second"}
    assert np.shares_memory(items[0], np.frombuffer(buffers[-2], dtype=np.float64))


def test_malformed_inputs_are_refused_naming_what_is_wrong() -> None:
    content, buffers = serialize.pack_apply(abs, (serialize.input_placeholder(1),))
    complete, frames = serialize.with_inputs(content, buffers, [-1])
    with pytest.raises(serialize.DeserializationError, match="refer to input 1, which the"):
        serialize.unpack_apply(complete, frames)
    with pytest.raises(serialize.DeserializationError, match="'inputs' must be a count"):
        serialize.unpack_apply({**complete, "inputs": "two"}, frames)
    with pytest.raises(
        serialize.DeserializationError,
        match="must be a list of 4 positive integers, got \\[1, 1, 1\\]",
    ):
        serialize.unpack_apply({**complete, "inputs": 2}, frames)
    with pytest.raises(serialize.SerializationError, match="input 0: cannot serialize"):
        serialize.with_inputs(content, buffers, [threading.Lock()])
