"""``parallel-kernel status``: running kernels at a glance, from their connection files.

Each kernel is asked on its control channel (answered at once, even while it
runs a task) for its figures (``stats_request``) and for what it runs
(``stack_request``), twice half a second apart so that CPU use can be told;
nothing else of it is touched, and no pool is needed.
"""

from __future__ import annotations

import time
from typing import Any

from .. import protocol
from .arguments import connection_file_path
from .connection import kernel_client
from .stacks import _reply_to

#: Seconds between the two samples.
GAP = 0.5


def status_of_files(paths: list[str], timeout: float = 5.0) -> str:
    """A table of the kernels behind these connection files (bare names are looked up
    as ``jupyter console --existing`` does); one that does not answer says so."""
    clients = []
    for name in paths:
        path = connection_file_path(name)
        client = kernel_client(path)
        client.start_channels(shell=False, iopub=False, stdin=False, hb=False, control=True)
        clients.append((path, client))
    try:
        first = [_ask(client, protocol.STATS_REQUEST, timeout) for _, client in clients]
        time.sleep(GAP)
        rows = [["kernel", "engine", "state", "running request", "RSS", "CPU"]]
        for (path, client), before in zip(clients, first, strict=True):
            rows.append(_row(str(path), client, before, timeout))
    finally:
        for _, client in clients:
            client.stop_channels()
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _row(path: str, client: Any, before: dict[str, Any] | None, timeout: float) -> list[str]:
    after = _ask(client, protocol.STATS_REQUEST, timeout)
    stack = _ask(client, protocol.STACK_REQUEST, timeout)
    if after is None or stack is None:
        return [path, "-", f"no answer within {timeout:g} s", "-", "-", "-"]
    if after.get("status") != "ok":
        return [path, "-", f"{after.get('ename')}: {after.get('evalue')}", "-", "-", "-"]
    running = stack.get("running") if stack.get("status") == "ok" else None
    cpu = "-"
    if before is not None and before.get("status") == "ok":
        elapsed = after["wall_seconds"] - before["wall_seconds"]
        if elapsed > 0:
            cpu = f"{100 * (after['cpu_seconds'] - before['cpu_seconds']) / elapsed:.0f} %"
    return [
        path,
        str(after.get("engine_id", "-")),
        "busy" if running else "idle",
        running or "-",
        f"{after['rss'] / 1e6:.0f} MB",
        cpu,
    ]


def _ask(client: Any, msg_type: str, timeout: float) -> dict[str, Any] | None:
    request = client.session.msg(msg_type, {})
    client.control_channel.send(request)
    return _reply_to(client, request["header"]["msg_id"], timeout)
