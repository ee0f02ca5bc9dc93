"""What the kernel and the pool agree on beyond the Jupyter protocol, in one place.

Message type names, the schema of the task channel's batches, the address
rule of the task channel's socket and the size above which a buffer travels
as a frame of its own.  Both sides import this module and nothing of each
other; ``docs/protocol.md`` is the reference for writers of other clients.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

APPLY_REQUEST = "apply_request"
APPLY_REPLY = "apply_reply"
APPLY_BATCH_REQUEST = "apply_batch_request"
APPLY_BATCH_REPLY = "apply_batch_reply"
#: Task channel, engine to pool: the engine starts running the first of these requests
#: (content ``{"msg_ids": [...]}``); for a batch, the rest are its other tasks, which
#: may start from then on without another notice.  Sent when the request's metadata
#: has ``REPORT_START: true``, before the request runs.
APPLY_STARTED = "apply_started"
#: Request metadata key asking the task channel for an ``apply_started``.
REPORT_START = "report_start"
#: ``kernel_info_reply["parallel"]["task_events"]``: what the task channel can report.
TASK_EVENTS = (APPLY_STARTED,)
ABORT_REQUEST = "abort_request"
CLEAR_REQUEST = "clear_request"
#: Control channel: the Python stack of what the engine's main thread runs, user frames only
#: (content ``{"msg_id": id}`` to ask for that request's only); answered at once.
STACK_REQUEST = "stack_request"
#: Control channel: the value of a result kept on the engine (content ``{"key": msg_id}``);
#: the reply carries it as an ``apply_reply`` carries a result.
FETCH_REQUEST = "fetch_request"
#: Control channel: drop the results kept under these keys (content ``{"keys": [...]}``).
RELEASE_REQUEST = "release_request"
#: Control channel: the engine's process figures (memory, CPU time), answered at once.
STATS_REQUEST = "stats_request"

#: Buffers of at least this many bytes travel as message frames of their own,
#: sent without copying; smaller ones are pickled inline or packed into one frame.
#: It matches jupyter_client's ``Session.copy_threshold``, below which ZMQ copies anyway.
LARGE_BUFFER = 64 * 1024

#: The connection-file key (and ``kernel_info_reply["parallel"]`` key) of the task channel.
TASK_PORT_KEY = "task_port"


class BatchError(ValueError):
    """A batch message whose content does not have the batch schema."""


class BatchEntry(NamedTuple):
    """One task of an ``apply_batch_request``, or one reply of an ``apply_batch_reply``."""

    msg_id: str
    content: dict[str, Any]
    metadata: dict[str, Any]
    buffers: list[Any]


def ipc_path(ip: str, port: int) -> str:
    """The file of an ipc socket: jupyter_client's rule, ``<ip>-<port>``."""
    return f"{ip}-{port}"


def socket_url(transport: str, ip: str, port: int) -> str:
    """The ZMQ address of ``port`` on ``ip`` over ``transport`` (``tcp`` or ``ipc``)."""
    if transport == "tcp":
        return f"tcp://{ip}:{port}"
    return f"{transport}://{ipc_path(ip, port)}"


def pack_batch(entries: Sequence[BatchEntry], key: str) -> tuple[dict[str, Any], list[Any]]:
    """The content and buffers of a batch message of ``entries`` under ``key``.

    ``key`` is ``"tasks"`` for a request and ``"replies"`` for a reply; each
    entry says how many of the message's buffers, in order, are its own.
    """
    items: list[dict[str, Any]] = []
    buffers: list[Any] = []
    for entry in entries:
        item: dict[str, Any] = {
            "msg_id": entry.msg_id,
            "content": entry.content,
            "buffers": len(entry.buffers),
        }
        if entry.metadata or key == "replies":
            item["metadata"] = entry.metadata
        items.append(item)
        buffers.extend(entry.buffers)
    return {key: items}, buffers


def unpack_batch(content: Any, buffers: Sequence[Any], key: str) -> list[BatchEntry]:
    """The entries of a batch message, checked against the schema (:class:`BatchError`)."""
    items = content.get(key) if isinstance(content, dict) else None
    valid = isinstance(items, list) and all(
        isinstance(item, dict)
        and isinstance(item.get("msg_id"), str)
        and isinstance(item.get("content"), dict)
        and isinstance(item.get("buffers"), int)
        and item["buffers"] >= 0
        and isinstance(item.get("metadata", {}), dict)
        for item in items
    )
    if not valid or sum(item["buffers"] for item in items) != len(buffers):
        raise BatchError(
            f"batch content must be {{{key!r}: [{{'msg_id': str, 'content': {{...}}, "
            "'buffers': int, 'metadata': {...}}, ...]} with the buffer counts adding up "
            "to the message's buffers"
        )
    entries = []
    start = 0
    for item in items:
        end = start + item["buffers"]
        entries.append(
            BatchEntry(
                item["msg_id"], item["content"], item.get("metadata", {}), list(buffers[start:end])
            )
        )
        start = end
    return entries
