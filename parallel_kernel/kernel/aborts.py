"""The kernel's record of aborted requests: thread-safe and bounded.

``abort_request`` arrives on the control thread while the shell side (the main
thread, or a subshell thread) decides, message by message, whether to run a
request.  This module is the one piece of state they share.

Two kinds of abort are recorded:

* **by id** — the ids a client named.  An id that already started is not
  recorded (it is reported back as such); an id that never arrives is forgotten
  once ``capacity`` newer ids have been recorded, so a client that aborts ids
  the kernel never sees cannot grow the kernel's memory without limit.
* **everything queued** — a time stamp per client session: every queued
  request of an abortable type from the same session (header ``session``)
  whose header ``date`` is not later than the abort request's own ``date`` is
  aborted.  Requests created after the abort run normally.  Both dates come
  from the same client's clock, so the cut is exact, and it covers requests
  still in ZMQ buffers as well as those already read.  Other clients' requests
  are left alone unless the abort asks for every session, where the
  comparison crosses clocks.  The sessions remembered are bounded too.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from jupyter_client.session import utcnow

from .replies import error_content

#: Request types that an "abort everything" applies to: the ones that run user code.
ABORT_ALL_TYPES = frozenset({"execute_request", "apply_request"})


class AbortRecord:
    """Which queued shell requests must be answered ``aborted`` instead of run."""

    def __init__(self, capacity: int = 100_000, history: int = 100_000) -> None:
        """``capacity`` bounds pending by-id aborts, ``history`` the ids remembered as started."""
        self._lock = threading.Lock()
        self._capacity = capacity
        self._history = history
        self._pending: OrderedDict[str, None] = OrderedDict()
        self._started: OrderedDict[str, None] = OrderedDict()
        self._abort_before: OrderedDict[str, datetime] = OrderedDict()
        self._abort_every_session_before: datetime | None = None
        self.evicted = 0

    def abort(self, msg_ids: Iterable[str]) -> dict[str, list[str]]:
        """Record ``msg_ids`` as aborted.

        Returns ``{"pending": [...], "started": [...]}``: the ids that will be
        aborted when they arrive (or are already queued), and those that
        already started or finished, which an abort cannot affect.
        """
        pending: list[str] = []
        started: list[str] = []
        with self._lock:
            for msg_id in msg_ids:
                if msg_id in self._started:
                    started.append(msg_id)
                    continue
                pending.append(msg_id)
                self._pending[msg_id] = None
                self._pending.move_to_end(msg_id)
            while len(self._pending) > self._capacity:
                self._pending.popitem(last=False)
                self.evicted += 1
        return {"pending": pending, "started": started}

    def abort_all(self, session: str, before: datetime, every_session: bool = False) -> None:
        """Abort the queued requests of ``session`` (or of all) created at or before ``before``."""
        with self._lock:
            if every_session:
                latest = self._abort_every_session_before
                if latest is None or before > latest:
                    self._abort_every_session_before = before
                return
            latest = self._abort_before.get(session)
            if latest is None or before > latest:
                self._abort_before[session] = before
            self._abort_before.move_to_end(session)
            while len(self._abort_before) > self._capacity:
                self._abort_before.popitem(last=False)

    def check(self, msg_id: str, msg_type: str, session: object, date: object) -> bool:
        """Decide whether the request about to run must be aborted.

        A request that is not aborted is remembered as started, so a later
        abort of its id is reported as too late instead of being kept.
        """
        with self._lock:
            if msg_id in self._pending:
                del self._pending[msg_id]
                return True
            if msg_type in ABORT_ALL_TYPES and isinstance(date, datetime) and date.tzinfo:
                cutoffs = [
                    self._abort_before.get(session) if isinstance(session, str) else None,
                    self._abort_every_session_before,
                ]
                if any(cutoff is not None and date <= cutoff for cutoff in cutoffs):
                    return True
            self._started[msg_id] = None
            if len(self._started) > self._history:
                self._started.popitem(last=False)
            return False

    def sizes(self) -> dict[str, int]:
        """How many ids each structure holds (for tests and diagnostics)."""
        with self._lock:
            return {
                "pending": len(self._pending),
                "started": len(self._started),
                "sessions": len(self._abort_before),
                "evicted": self.evicted,
            }


_MISSING = object()


def answer_abort_request(record: AbortRecord, parent: dict[str, Any]) -> dict[str, Any]:
    """Record what an ``abort_request`` asks for; return its ``abort_reply`` content.

    Queued requests are aborted by id (a list or one string), or all of them
    (null or []): all of the sender's session, or every session's when the
    content has ``"every_session": true``.  Content of another shape gets an
    error reply that says what is expected.
    """
    request = parent["content"]
    msg_ids = request.get("msg_ids") if isinstance(request, dict) else _MISSING
    every_session = request.get("every_session", False) if isinstance(request, dict) else False
    if not isinstance(every_session, bool):
        return error_content(
            "TypeError",
            "abort_request 'every_session' must be true or false; got "
            + _short_repr(every_session),
        )
    if msg_ids is None or msg_ids == []:
        header = parent["header"]
        date = header.get("date")
        record.abort_all(
            str(header.get("session", "")),
            date if getattr(date, "tzinfo", None) is not None else utcnow(),
            every_session=every_session,
        )
        return {"status": "ok", "all": True, "pending": [], "started": []}
    if isinstance(msg_ids, str):
        msg_ids = [msg_ids]
    if not isinstance(msg_ids, list) or not all(isinstance(i, str) for i in msg_ids):
        return error_content(
            "TypeError",
            "abort_request content must be an object whose 'msg_ids' is a list "
            "of strings, a string, an empty list or null; got "
            + (_short_repr(msg_ids) if msg_ids is not _MISSING else _short_repr(request)),
        )
    return {"status": "ok", "all": False, **record.abort(msg_ids)}


def _short_repr(obj: Any) -> str:
    """A repr for error messages, at most 80 characters (and never raising)."""
    try:
        text = repr(obj)
    except Exception:
        text = f"<unprintable {type(obj).__qualname__} object>"
    return text if len(text) <= 80 else text[:77] + "..."
