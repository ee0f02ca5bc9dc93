"""Results kept on engines: fetched on first use, passed on from where they are, released.

A task's request asks its engine to keep a result of at least
``Pool(keep_over=...)`` bytes (see :mod:`parallel_kernel.kernel.kept`): its
reply then says where the value is, and the future holds a
:class:`KeptResult` instead of the value.  ``future.result()`` fetches the
value once, over the engine's control channel: callers that ask meanwhile
wait for the same fetch, and fetches of different values run side by side
(one engine that does not answer holds up no other).  A task that takes the
future as an argument gets the value on its own engine in place, or fetched
by its engine from the one that keeps it, never through this process.  When
the last reference to the future is gone, the engine is told to drop the
value.  Values still referred to when the pool shuts down are fetched first,
so a future outlives its pool as any Executor's does.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import TYPE_CHECKING, Any

from .. import protocol, serialize
from ..errors import DependencyError, EngineDied

if TYPE_CHECKING:
    from .core import PoolCore
    from .engine_state import EngineRecord
    from .recompute import Recipe

#: Results of at least this many bytes, as packed, stay on their engine by default.
KEEP_OVER = 1 << 20
#: Seconds a fetch may take when the caller gave no timeout: an engine answers on its
#: control thread at once, and a large value then takes its transfer time.
FETCH_WAIT = 300.0


class KeptResult:
    """A task's result kept on engine ``engine_id`` (its kernel ``uuid``) under ``key``."""

    __slots__ = (
        "__weakref__",
        "core",
        "engine_id",
        "fetching",
        "key",
        "nbytes",
        "recipe",
        "type_name",
        "uuid",
    )

    def __init__(
        self,
        core: PoolCore,
        engine: EngineRecord,
        kept: dict[str, Any],
        recipe: Recipe | None = None,
    ) -> None:
        self.core = weakref.proxy(core)
        #: How to make the value again if its engine dies (see :mod:`.recompute`).
        self.recipe = recipe
        self.engine_id = engine.id
        self.uuid = engine.uuid
        self.key = str(kept["key"])
        self.nbytes = int(kept.get("nbytes", 0))
        self.type_name = str(kept.get("type", "object"))
        #: The fetch of the value under way, if one is (loop thread).
        self.fetching: asyncio.Future[Any] | None = None

    def __repr__(self) -> str:
        return f"<{self.type_name} of {self.nbytes:,} bytes kept on engine {self.engine_id}>"


def kept_of(future: Any) -> KeptResult | None:
    """Where ``future``'s value is kept on an engine, if it is."""
    return getattr(future, "_kept", None)


def copies_of(future: Any) -> list[KeptResult]:
    """Every engine's copy of ``future``'s kept value: its own, then those of its
    replicas (``scatter(broadcast=True)``) that are placed already."""
    kept = kept_of(future)
    if kept is None:
        return []
    return [kept, *filter(None, map(kept_of, getattr(future, "_replicas", ())))]


def value_of(future: Any, timeout: float | None) -> Any:
    """``future``'s value, fetched from its engine (once) if it is kept there.

    The fetch runs on the pool's loop; the calling thread waits for it (a
    timeout leaves it running, for the next call to wait for).
    """
    value = future._result
    if type(value) is not KeptResult:
        return value
    try:
        core = value.core
        return core.bridge.run(core.kept.value(future), timeout or FETCH_WAIT)
    except ReferenceError:
        raise EngineDied(f"the pool is gone, and the {value!r} with it") from None


class KeptResults:
    """The pool's kept results: recorded from replies, fetched, passed on, released."""

    def __init__(self, core: PoolCore) -> None:
        self.core = core
        #: Keys kept on each engine (by id) for this pool's futures.
        self.keys: dict[int, set[str]] = {}

    def record(
        self,
        future: Any,
        engine: EngineRecord,
        kept: dict[str, Any],
        recipe: Recipe | None = None,
    ) -> KeptResult:
        """``future``'s result is kept on ``engine`` (a reply's ``kept``): note it, and
        release it there once the future is gone."""
        result = KeptResult(self.core, engine, kept, recipe)
        future._kept = result
        self.keys.setdefault(engine.id, set()).add(result.key)
        weakref.finalize(future, self._release_soon, engine.id, engine.uuid, result.key)
        return result

    async def value(self, future: Any) -> Any:
        """``future``'s value: fetched into it the first time, the same fetch for every
        caller while it is under way (a failed fetch is tried again by the next call)."""
        kept = future._result
        if type(kept) is not KeptResult:
            return kept
        if kept.fetching is None:
            kept.fetching = asyncio.ensure_future(self._fetch_into(future, kept))
        return await asyncio.shield(kept.fetching)

    async def _fetch_into(self, future: Any, kept: KeptResult) -> Any:
        try:
            future._result = await self.fetch(kept)
        finally:
            kept.fetching = None
        return future._result

    async def fetch(self, kept: KeptResult) -> Any:
        """The value of ``kept``, from its engine's control channel."""
        engine = self._holder(kept, "the value")
        reply = await self.core.requests.send(
            engine,
            "control",
            protocol.FETCH_REQUEST,
            {"key": kept.key, "shared_memory": self.core.place},
        )
        content = reply["content"]
        if content.get("status") != "ok":
            raise EngineDied(
                f"engine {kept.engine_id} no longer has the {kept!r}: "
                f"{content.get('ename')}: {content.get('evalue')}"
            )
        return serialize.unpack_result(content, reply["buffers"])

    def input_for(self, name: str, future: Any, engine: EngineRecord) -> serialize.Kept:
        """How a task on ``engine`` gets its input ``name``, the kept value of ``future``:
        the copy on ``engine`` if there is one, else from an engine that keeps one."""
        copies = copies_of(future)
        for kept in copies:
            if kept.engine_id == engine.id and kept.uuid == engine.uuid:
                return serialize.Kept(kept.key)
        lost: DependencyError | None = None
        for kept in copies:
            try:
                holder = self._holder(kept, f"its input {name}", DependencyError)
            except DependencyError as exc:
                lost = lost or exc
                continue
            return serialize.Kept(kept.key, peer=peer_address(holder))
        raise lost or DependencyError(f"its input {name} is kept nowhere")

    def holders(self, inputs: list[tuple[str, Any]]) -> dict[int, int]:
        """Bytes of these inputs kept on each engine (to place their task there)."""
        held: dict[int, int] = {}
        for _, future in inputs:
            for kept in copies_of(future):
                held[kept.engine_id] = held.get(kept.engine_id, 0) + kept.nbytes
        return held

    async def fetch_all(self) -> None:
        """Fetch every kept value a future still refers to (the engines are about to stop)."""
        pending = [f for f in list(self.core.futures) if type(f._result) is KeptResult]

        async def fetch_into(future: Any) -> None:
            with contextlib.suppress(Exception):  # lost with its engine: result() says so
                await self.value(future)

        await asyncio.gather(*(fetch_into(f) for f in pending))

    def release_all(self) -> None:
        """Release every value this pool keeps (engines it attached to keep running)."""
        for engine_id, keys in self.keys.items():
            engine = self.core.records.get(engine_id)
            if keys and engine is not None:
                _send_release(engine, sorted(keys))
        self.keys.clear()

    def _holder(
        self, kept: KeptResult, what: str, error: type[Exception] = EngineDied
    ) -> EngineRecord:
        """The engine that keeps ``kept``, if it still does."""
        engine = self.core.records.get(kept.engine_id)
        if engine is None or engine.uuid != kept.uuid or not engine.serving:
            raise error(
                f"{what} was kept on engine {kept.engine_id}, which has died or restarted "
                "since: the value is lost"
            )
        return engine

    def _release_soon(self, engine_id: int, uuid: str | None, key: str) -> None:
        """From any thread (a future was collected): release ``key`` on the loop."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: the process ends
            self.core.bridge.call_soon(self._release, engine_id, uuid, key)

    def _release(self, engine_id: int, uuid: str | None, key: str) -> None:
        keys = self.keys.get(engine_id)
        if keys is not None:
            keys.discard(key)
        engine = self.core.records.get(engine_id)
        if engine is not None and engine.uuid == uuid:
            _send_release(engine, [key])


def _send_release(engine: EngineRecord, keys: list[str]) -> None:
    """Tell ``engine`` to drop the values kept under ``keys`` (its reply is not awaited)."""
    if engine.connection is None:
        return
    with contextlib.suppress(ConnectionError):  # going away, and its values with it
        engine.connection.send("control", protocol.RELEASE_REQUEST, {"keys": keys})


def peer_address(engine: EngineRecord) -> dict[str, Any]:
    """What another engine needs to fetch a value kept on ``engine``: its control
    channel's address, signing key and CurveZMQ server key."""
    client = engine.connection.kernel_client
    session = client.session
    peer = {
        "url": protocol.socket_url(client.transport, client.ip, client.control_port),
        "key": session.key.decode(),
        "signature_scheme": session.signature_scheme,
    }
    if client.curve_publickey is not None:
        key = client.curve_publickey
        peer["curve_serverkey"] = key.decode() if isinstance(key, bytes) else key
    return peer
