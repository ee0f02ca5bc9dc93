"""The control-channel requests a parallel kernel adds to ipykernel's.

``abort_request`` (by msg_id, or all), ``interrupt_request`` naming the
request it is for, ``stack_request``, and ``fetch_request`` and
``release_request`` for kept results, ``stats_request``; ``docs/protocol.md``
describes each.
They are answered on the control thread, while the main thread may be busy.
"""

from __future__ import annotations

import functools
from typing import Any

from ..protocol import FETCH_REQUEST, RELEASE_REQUEST, STACK_REQUEST, STATS_REQUEST
from . import compat
from .aborts import answer_abort_request
from .apply import safe_str
from .kept import fetch_reply_content
from .replies import error_content, reply_type
from .stacks import stack_content
from .stats import stats_content


class ControlRequests:
    """The handlers of the control requests ``ParallelKernel`` adds (a mixin of it)."""

    session: Any
    aborts: Any
    apply_runner: Any
    engine_id: int
    kept: Any

    # ------------------------------------------------------------------ abort

    async def abort_request(self, stream: Any, ident: list[bytes], parent: dict[str, Any]) -> None:
        """Abort queued requests by id (a list or one string), or all of them (null or []).

        "All" means all of the sender's session, or every session's when the
        content has ``"every_session": true``.
        """
        content = answer_abort_request(self.aborts, parent)
        self.session.send(stream, "abort_reply", content, parent=parent, ident=ident)

    # ------------------------------------------------------------------ interrupt

    async def interrupt_request(
        self, stream: Any, ident: list[bytes], parent: dict[str, Any]
    ) -> None:
        """Interrupt what runs; with ``{"msg_id": id}``, only that request, if it runs now.

        The reply says ``"interrupted"``: false when the named request is not
        running (queued, finished, unknown), and nothing was signalled.
        """
        request = parent["content"]
        target = request.get("msg_id") if isinstance(request, dict) else None
        if target is None:
            await super().interrupt_request(stream, ident, parent)
            return
        if not isinstance(target, str):
            content = error_content(
                "TypeError",
                "interrupt_request 'msg_id' must be a msg_id string or absent; got "
                + type(target).__name__,
            )
        else:
            try:
                signal = functools.partial(compat.signal_interrupt, self)
                hit = self.apply_runner.gate.aim(target, signal)
                content = {"status": "ok", "interrupted": hit}
            except OSError as exc:
                content = error_content(type(exc).__name__, safe_str(exc))
        self.session.send(stream, "interrupt_reply", content, parent, ident=ident)

    # ------------------------------------------------------------------ stacks

    async def stack_request(self, stream: Any, ident: list[bytes], parent: dict[str, Any]) -> None:
        """The Python stack of what runs (user frames), read without stopping it.

        With ``{"msg_id": id}``, the frames are given only if that request runs
        now; ``running`` names what runs (``null``: the engine is idle).
        """
        request = parent["content"]
        wanted = request.get("msg_id") if isinstance(request, dict) else None
        if wanted is not None and not isinstance(wanted, str):
            content = error_content(
                "TypeError",
                "stack_request 'msg_id' must be a msg_id string or absent; got "
                + type(wanted).__name__,
            )
        else:
            content = {**stack_content(self.apply_runner, wanted), "engine_id": self.engine_id}
        self.session.send(stream, reply_type(STACK_REQUEST), content, parent, ident=ident)

    # ------------------------------------------------------------------ kept results

    async def fetch_request(self, stream: Any, ident: list[bytes], parent: dict[str, Any]) -> None:
        """The value kept under ``{"key": msg_id}``, as an ``apply_reply`` carries a result."""
        try:
            content, buffers = fetch_reply_content(self.kept, parent["content"])
        except (TypeError, KeyError) as exc:
            content, buffers = error_content(type(exc).__name__, safe_str(exc.args[0])), []
        except Exception as exc:  # the value cannot be pickled (any more)
            content, buffers = error_content(type(exc).__name__, safe_str(exc)), []
        # the frames are views that keep the value alive until they are sent
        self.session.send(
            stream, reply_type(FETCH_REQUEST), content, parent, ident=ident, buffers=buffers
        )

    async def release_request(
        self, stream: Any, ident: list[bytes], parent: dict[str, Any]
    ) -> None:
        """Drop the values kept under ``{"keys": [...]}``; the reply names those dropped."""
        keys = parent["content"].get("keys") if isinstance(parent["content"], dict) else None
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            content = error_content("TypeError", "release_request 'keys' must be a list of keys")
        else:
            content = {"status": "ok", "released": self.kept.release(keys), **self.kept.summary()}
        self.session.send(stream, reply_type(RELEASE_REQUEST), content, parent, ident=ident)

    # ------------------------------------------------------------------ stats

    async def stats_request(self, stream: Any, ident: list[bytes], parent: dict[str, Any]) -> None:
        """The engine process's resident memory and CPU time (what a dashboard shows)."""
        content = {**stats_content(), "engine_id": self.engine_id}
        self.session.send(stream, reply_type(STATS_REQUEST), content, parent, ident=ident)
