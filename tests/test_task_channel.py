"""The task channel: apply_request on the kernel's extra socket, served by its main thread."""

from __future__ import annotations

import json
import struct
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import zmq
from conftest import KERNEL_ARGS, Driver
from jupyter_client.manager import KernelManager

from parallel_kernel import Pool, serialize, wire

TIMEOUT = 30


def shout(text):
    print(text)
    return text.upper()


def fail():
    raise ValueError("from a task")


def add(a, b):
    return a + b


def lookup(name):
    return globals()[name]


class TaskSocket:
    """A DEALER on a kernel's task channel, signing with the kernel's session."""

    def __init__(self, driver: Driver) -> None:
        info = driver.client.kernel_info(reply=True, timeout=TIMEOUT)["content"]["parallel"]
        self.port = info["task_port"]
        self.session = driver.session
        self.socket = zmq.Context.instance().socket(zmq.DEALER)
        self.socket.linger = 0
        self.socket.connect(f"tcp://{driver.client.ip}:{self.port}")

    def send_apply(self, f: Any, *args: Any) -> str:
        content, buffers = serialize.pack_apply(f, args, {})
        msg = self.session.msg("apply_request", content)
        self.session.send(self.socket, msg, buffers=buffers)
        return msg["header"]["msg_id"]

    def reply(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        assert self.socket.poll(timeout * 1000), "no reply on the task channel"
        _, parts = self.session.feed_identities(self.socket.recv_multipart(copy=False), copy=False)
        return self.session.deserialize(parts, copy=False)

    def result(self, reply: dict[str, Any]) -> Any:
        assert reply["content"]["status"] == "ok", reply["content"]
        return serialize.unpack_result(reply["content"], reply["buffers"])

    def close(self) -> None:
        self.socket.close()


@pytest.fixture
def tasks(kernel: Driver) -> Any:
    channel = TaskSocket(kernel)
    yield channel
    channel.close()


def test_the_port_is_advertised_in_kernel_info_not_in_the_managers_file(kernel: Driver) -> None:
    info = kernel.client.kernel_info(reply=True, timeout=TIMEOUT)["content"]["parallel"]
    assert info["task_requests"] == ["apply_request"]
    assert info["task_port"] > 0
    connection = json.loads(Path(kernel.manager.connection_file).read_text())
    assert "task_port" not in connection


def test_a_kernel_managers_connection_file_is_left_byte_for_byte(tmp_path: Path) -> None:
    """The file is the manager's: the kernel serves its task channel without writing to it."""
    manager = KernelManager(kernel_name="parallel", connection_file=str(tmp_path / "kernel.json"))
    manager.start_kernel(extra_arguments=KERNEL_ARGS)
    # written by the manager before it launched the kernel, which is still starting Python
    written = Path(manager.connection_file).read_bytes()
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        tasks = TaskSocket(SimpleNamespace(client=client, session=client.session))
        tasks.send_apply(add, 2, 3)
        assert tasks.result(tasks.reply()) == 5
        tasks.close()
        assert Path(manager.connection_file).read_bytes() == written
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def test_apply_runs_in_the_user_namespace(kernel: Driver, tasks: TaskSocket) -> None:
    kernel.execute("offset = 100")
    msg_id = tasks.send_apply(add, 1, 2)
    reply = tasks.reply()
    assert reply["parent_header"]["msg_id"] == msg_id
    assert reply["msg_type"] == "apply_reply"
    assert tasks.result(reply) == 3
    assert reply["metadata"]["outputs"] == 0
    assert reply["metadata"]["engine_id"] == 3
    tasks.send_apply(lookup, "offset")
    assert tasks.result(tasks.reply()) == 100


def test_output_is_parented_to_the_task_and_followed_by_idle(
    kernel: Driver, tasks: TaskSocket
) -> None:
    msg_id = tasks.send_apply(shout, "hello")
    reply = tasks.reply()
    assert tasks.result(reply) == "HELLO"
    assert reply["metadata"]["outputs"] == 1
    messages = kernel.iopub(msg_id)
    assert [m["content"]["text"] for m in messages if m["msg_type"] == "stream"] == ["hello\n"]
    assert messages[-1]["msg_type"] == "status"
    assert messages[-1]["content"]["execution_state"] == "idle"


def test_errors_reply_with_a_traceback_and_publish_it(kernel: Driver, tasks: TaskSocket) -> None:
    msg_id = tasks.send_apply(fail)
    reply = tasks.reply()
    content = reply["content"]
    assert (content["status"], content["ename"], content["evalue"]) == (
        "error",
        "ValueError",
        "from a task",
    )
    assert "fail" in "".join(content["traceback"])
    assert [m["msg_type"] for m in kernel.iopub(msg_id)] == ["error", "status"]
    tasks.send_apply(add, 2, 2)
    assert tasks.result(tasks.reply()) == 4


def test_a_task_waits_for_a_running_cell(kernel: Driver, tasks: TaskSocket) -> None:
    kernel.execute("import asyncio")
    cell = kernel.client.execute(
        "print('cell started', flush=True); await asyncio.sleep(1); marker = 'cell done'"
    )
    kernel.wait_for_output(cell, "cell started")  # the cell holds the main shell now
    tasks.send_apply(lookup, "marker")
    reply = tasks.reply()
    assert tasks.result(reply) == "cell done"
    assert kernel.reply(cell)["content"]["status"] == "ok"


def test_queued_tasks_can_be_aborted_by_id(kernel: Driver, tasks: TaskSocket) -> None:
    busy = tasks.send_apply(time.sleep, 3)  # long enough for the abort to arrive first
    queued = tasks.send_apply(add, 1, 1)
    abort = kernel.control("abort_request", {"msg_ids": [queued]})
    assert abort["content"]["pending"] == [queued]
    replies = {r["parent_header"]["msg_id"]: r for r in (tasks.reply(), tasks.reply())}
    assert replies[busy]["content"]["status"] == "ok"
    assert replies[queued]["content"]["status"] == "aborted"
    assert replies[queued]["msg_type"] == "apply_reply"


def test_other_message_types_get_an_error_reply(kernel: Driver, tasks: TaskSocket) -> None:
    msg = tasks.session.msg("execute_request", {"code": "1"})
    tasks.session.send(tasks.socket, msg)
    reply = tasks.reply()
    assert reply["msg_type"] == "execute_reply"
    assert reply["content"]["ename"] == "UnknownMessageType"


def test_unsigned_messages_are_dropped_and_the_channel_keeps_serving(
    kernel: Driver, tasks: TaskSocket
) -> None:
    tasks.socket.send_multipart([b"<IDS|MSG>", b"bad signature", b"{}", b"{}", b"{}", b"{}"])
    tasks.send_apply(add, 20, 22)
    assert tasks.result(tasks.reply()) == 42


def test_large_results_travel_as_buffers(kernel: Driver, tasks: TaskSocket) -> None:
    blob = bytes(range(256)) * 4096
    tasks.send_apply(bytes, blob)
    reply = tasks.reply()
    assert any(len(buffer) == len(blob) for buffer in reply["buffers"])
    assert tasks.result(reply) == blob


def send_batch(tasks: TaskSocket, calls: list[tuple[Any, tuple]]) -> list[str]:
    entries, buffers, ids = [], [], []
    for i, (f, args) in enumerate(calls):
        content, task_buffers = serialize.pack_apply(f, args, {})
        ids.append(f"task-{i}-{time.monotonic_ns()}")
        entries.append({"msg_id": ids[-1], "content": content, "buffers": len(task_buffers)})
        buffers += task_buffers
    msg = tasks.session.msg("apply_batch_request", {"tasks": entries})
    tasks.session.send(tasks.socket, msg, buffers=buffers)
    return ids


def batch_replies(tasks: TaskSocket, count: int) -> dict[str, tuple[dict, list]]:
    """Collect ``count`` task replies from batch replies (and single aborted replies)."""
    found: dict[str, tuple[dict, list]] = {}
    while len(found) < count:
        reply = tasks.reply()
        if reply["msg_type"] == "apply_reply":
            found[reply["parent_header"]["msg_id"]] = (reply, reply["buffers"])
            continue
        assert reply["msg_type"] == "apply_batch_reply"
        start = 0
        for entry in reply["content"]["replies"]:
            end = start + entry["buffers"]
            found[entry["msg_id"]] = (entry, reply["buffers"][start:end])
            start = end
    return found


def test_a_batch_runs_each_task_as_its_own_request(kernel: Driver, tasks: TaskSocket) -> None:
    ids = send_batch(tasks, [(add, (1, 2)), (fail, ()), (shout, ("hi",))])
    found = batch_replies(tasks, 3)
    ok, error, printed = (found[i] for i in ids)
    assert serialize.unpack_result(ok[0]["content"], ok[1]) == 3
    assert error[0]["content"]["ename"] == "ValueError"
    assert serialize.unpack_result(printed[0]["content"], printed[1]) == "HI"
    assert printed[0]["metadata"]["outputs"] == 1
    assert all(isinstance(found[i][0]["metadata"]["runtime"], float) for i in ids)
    stream = [m for m in kernel.iopub(ids[2]) if m["msg_type"] == "stream"]
    assert stream[0]["content"]["text"] == "hi\n"
    assert stream[0]["parent_header"]["msg_id"] == ids[2]


def test_a_member_of_a_batch_can_be_aborted(kernel: Driver, tasks: TaskSocket) -> None:
    ids = send_batch(tasks, [(time.sleep, (3,)), (add, (1, 1)), (add, (2, 2))])
    time.sleep(0.2)
    assert kernel.control("abort_request", {"msg_ids": [ids[1]]})["content"]["pending"] == [ids[1]]
    found = batch_replies(tasks, 3)
    assert [found[i][0]["content"]["status"] for i in ids] == ["ok", "aborted", "ok"]


def test_a_malformed_batch_gets_an_error_reply(kernel: Driver, tasks: TaskSocket) -> None:
    msg = tasks.session.msg("apply_batch_request", {"tasks": [{"msg_id": 5}]})
    tasks.session.send(tasks.socket, msg)
    reply = tasks.reply()
    assert reply["msg_type"] == "apply_batch_reply"
    assert reply["content"]["ename"] == "MalformedMessage"
    tasks.send_apply(add, 1, 1)
    assert tasks.result(tasks.reply()) == 2


class CompactTaskSocket(TaskSocket):
    """The same socket, speaking the codec's compact framing (as the Pool does)."""

    def __init__(self, driver: Driver) -> None:
        super().__init__(driver)
        self.codec = wire.Codec(self.session)

    def send_apply(self, f: Any, *args: Any) -> str:
        content, buffers = serialize.pack_apply(f, args, {})
        msg_id, frames = self.codec.encode("apply_request", content, buffers=buffers, compact=True)
        self.codec.send(self.socket, frames)
        return msg_id

    def reply(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        assert self.socket.poll(timeout * 1000), "no reply on the task channel"
        frames = self.socket.recv_multipart(copy=False)
        assert frames[0].bytes.startswith(wire.COMPACT_MAGIC)  # answered in its framing
        return self.codec.decode(frames)[1]


@pytest.fixture
def compact(kernel: Driver) -> Any:
    channel = CompactTaskSocket(kernel)
    yield channel
    channel.close()


def test_compact_framing_packs_a_small_call_into_one_frame(
    kernel: Driver, compact: CompactTaskSocket
) -> None:
    content, buffers = serialize.pack_apply(add, (1, 2), {})
    _, frames = compact.codec.encode("apply_request", content, buffers=buffers, compact=True)
    assert len(frames) == 1
    kernel.execute("offset = 100")
    compact.send_apply(lookup, "offset")
    assert compact.result(compact.reply()) == 100
    msg_id = compact.send_apply(fail)
    reply = compact.reply()
    assert reply["parent_header"]["msg_id"] == msg_id
    assert reply["content"]["ename"] == "ValueError"


def test_compact_framing_sends_large_buffers_as_frames_of_their_own(
    kernel: Driver, compact: CompactTaskSocket
) -> None:
    blob = bytes(range(256)) * 4096
    content, buffers = serialize.pack_apply(bytes, (blob,), {})
    _, frames = compact.codec.encode("apply_request", content, buffers=buffers, compact=True)
    assert len(frames) == 1 + len(buffers)
    compact.send_apply(bytes, blob)
    reply = compact.reply()
    assert any(buffer.nbytes == len(blob) for buffer in reply["buffers"])
    assert compact.result(reply) == blob


def test_broken_or_forged_packed_frames_are_dropped(
    kernel: Driver, compact: CompactTaskSocket
) -> None:
    content, buffers = serialize.pack_apply(add, (1, 2), {})
    _, frames = compact.codec.encode("apply_request", content, buffers=buffers, compact=True)
    packed = frames[0]
    compact.socket.send(packed[:-3])  # lengths no longer add up
    compact.socket.send(wire.COMPACT_MAGIC + b"\xff")  # truncated
    (count,) = struct.unpack_from("<H", packed, len(wire.COMPACT_MAGIC))
    signature = len(wire.COMPACT_MAGIC) + 2 + 4 * count
    forged = packed[:signature] + b"0" * 10 + packed[signature + 10 :]  # a wrong signature
    compact.socket.send(forged)
    compact.send_apply(add, 20, 22)
    assert compact.result(compact.reply()) == 42
    assert not compact.socket.poll(300)  # nothing was answered (or run) for the others


def test_a_plain_ipykernel_application_running_the_class_opens_the_channel_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As launchers that run ipykernel's application with ``kernel_class`` do."""
    spec = tmp_path / "kernels" / "parallel-in-ipkernelapp"
    spec.mkdir(parents=True)
    argv = [
        sys.executable,
        "-m",
        "ipykernel_launcher",
        "--IPKernelApp.kernel_class=parallel_kernel.kernel.ParallelKernel",
        "-f",
        "{connection_file}",
    ]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "plain app", "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    driver = Driver("parallel-in-ipkernelapp")
    # a busy machine may take longer than jupyter_client's 5 s to exit cleanly;
    # a context left unterminated would still hang past this and be killed
    driver.manager.shutdown_wait_time = TIMEOUT
    process = driver.manager.provisioner.process
    try:
        tasks = TaskSocket(driver)
        assert tasks.port > 0
        tasks.send_apply(add, 1, 2)
        assert tasks.result(tasks.reply()) == 3
        tasks.close()
        with Pool.connect([driver.manager.connection_file]) as pool:
            assert pool.submit(add, 2, 3).result(TIMEOUT) == 5
    finally:
        driver.stop()
    # the kernel closed its own socket before its context terminated: a clean exit, no kill
    assert process.wait(TIMEOUT) == 0


def test_a_request_that_asks_is_reported_started_before_it_runs(
    kernel: Driver, tasks: TaskSocket
) -> None:
    info = kernel.client.kernel_info(reply=True, timeout=TIMEOUT)["content"]["parallel"]
    assert info["task_events"] == ["apply_started"]
    content, buffers = serialize.pack_apply(add, (1, 2), {})
    msg = tasks.session.msg("apply_request", content, metadata={"report_start": True})
    tasks.session.send(tasks.socket, msg, buffers=buffers)
    started = tasks.reply()
    assert started["msg_type"] == "apply_started"
    assert started["content"] == {"msg_ids": [msg["header"]["msg_id"]]}
    assert started["parent_header"]["msg_id"] == msg["header"]["msg_id"]
    assert tasks.result(tasks.reply()) == 3
    tasks.send_apply(add, 2, 2)  # without asking, no report: the reply comes first
    assert tasks.result(tasks.reply()) == 4


def test_a_batch_is_reported_started_once_with_the_starting_task_first(
    kernel: Driver, tasks: TaskSocket
) -> None:
    entries, buffers, ids = [], [], []
    for i, args in enumerate(((1, 1), (2, 2), (3, 3))):
        content, task_buffers = serialize.pack_apply(add, args, {})
        ids.append(f"reported-{i}-{time.monotonic_ns()}")
        entries.append({"msg_id": ids[-1], "content": content, "buffers": len(task_buffers)})
        buffers += task_buffers
    abort = kernel.client.session.msg("abort_request", {"msg_ids": [ids[0]]})
    kernel.client.control_channel.send(abort)
    assert kernel.client.get_control_msg(timeout=TIMEOUT)["content"]["pending"] == [ids[0]]
    msg = tasks.session.msg(
        "apply_batch_request", {"tasks": entries}, metadata={"report_start": True}
    )
    tasks.session.send(tasks.socket, msg, buffers=buffers)
    reports, answered = [], {}
    while len(answered) < 3:
        message = tasks.reply()
        if message["msg_type"] == "apply_started":
            assert not answered.keys() - {ids[0]}, "reported after a reply of its batch"
            reports.append(message["content"])
        elif message["msg_type"] == "apply_reply":
            answered[message["parent_header"]["msg_id"]] = message["content"]["status"]
        else:
            for reply in message["content"]["replies"]:
                answered[reply["msg_id"]] = reply["content"]["status"]
    assert answered == {ids[0]: "aborted", ids[1]: "ok", ids[2]: "ok"}
    assert reports == [{"msg_ids": [ids[1], ids[2]]}]
