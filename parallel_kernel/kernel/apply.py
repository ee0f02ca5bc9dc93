"""Running one ``apply_request``, from its request to its reply, for both channels.

The shell channel (``ParallelKernel.apply_request``) and the task channel
(:mod:`.taskchannel`) run tasks the same way; only how a reply travels
differs.  :class:`ApplyRunner` is that common way:

* :meth:`ApplyRunner.start` unpacks the request (this package's format or
  ipyparallel's, per message) and calls the function in the user namespace,
  up to its first ``await``;
* :meth:`ApplyRunner.complete` awaits a coroutine's remainder (an interrupt
  cancels it), builds the reply (the result, or the error with its IPython
  traceback, published on IOPub too), flushes the task's output so it
  precedes the reply, hands the reply to the channel's ``send`` and, when
  ``send`` returns a ZMQ tracker, holds the shell until the reply's zero-copy
  buffers (views of the result itself) are sent.

A task that returns at once takes no ``await`` and no loop turn: ``complete``
returns ``None`` when all is done, or an awaitable for the rest.  The runner
also owns the SIGINT handler switching around user code (ipykernel's
``pre_handler_hook`` / ``post_handler_hook``).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from signal import SIGINT
from types import TracebackType
from typing import Any, Protocol

from .. import serialize, shared_memory
from ..namespace import bind_to_namespace, carried_names
from . import compat, ipyparallel_format
from .compat import set_signal_handler
from .interrupts import InterruptGate, Phase
from .kept import packed_size
from .replies import pack_exception, send_tracked
from .task_input import TaskInput

#: The context a call runs in when its function carried no names.
_NOTHING_CARRIED = nullcontext()
#: ``input()`` as it is, for a call outside the main thread (a subshell's), whose
#: function is called as it came.
_AS_IT_IS = nullcontext(lambda f: f)
#: Seconds after which a task's output is flushed even if its buffers look empty.
FORCED_FLUSH_AFTER = 0.05
#: Longest interval, in seconds, between checks that a zero-copy reply has been sent.
SENT_POLL_INTERVAL = 0.0005

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


class ApplyHost(Protocol):
    """What the runner needs of the kernel (``ParallelKernel`` is one)."""

    shell: Any
    session: Any
    stdin_socket: Any
    log: Any
    #: Results kept here, and the resolver of a task's kept inputs (see :mod:`.kept`).
    kept: Any
    kept_inputs: Any
    ident: str
    engine_id: int

    def init_metadata(self, parent: dict[str, Any]) -> dict[str, Any]:
        """Reply metadata of a request, before it runs."""
        ...

    def finish_metadata(
        self, parent: dict[str, Any], metadata: dict[str, Any], reply_content: dict[str, Any]
    ) -> dict[str, Any]:
        """Reply metadata of a request, completed once its reply content is known."""
        ...


#: A channel's way to send a reply: ``send(call, content, metadata, buffers)``,
#: returning a ZMQ ``MessageTracker`` for zero-copy buffers still being sent, or ``None``.
Send = Callable[["ApplyCall", dict[str, Any], dict[str, Any], list[Any]], Any]
#: A channel's way to answer a call whose handling failed after its start.
Fail = Callable[["ApplyCall", BaseException], None]


class ApplyCall:
    """One apply request between its call and its reply."""

    __slots__ = (
        "carried",
        "error",
        "failure",
        "metadata",
        "name",
        "native",
        "parent",
        "pending",
        "result",
        "route",
        "runtime",
        "started",
    )

    def __init__(self, parent: dict[str, Any], metadata: dict[str, Any], route: Any) -> None:
        self.parent = parent
        self.metadata = metadata
        #: Where the channel sends the reply (its own business).
        self.route = route
        self.name = "the function"
        self.result: Any = None
        self.error: ExcInfo | None = None
        self.pending: Any = None
        self.failure: BaseException | None = None
        #: Names the function carried from the client (bound again to pickle the outcome).
        self.carried: dict[str, Any] = {}
        self.started = time.perf_counter()
        #: Seconds from the start to the end of the function (set when the reply is built).
        self.runtime = 0.0
        # the request's wire format: this package's, or ipyparallel's (see ipyparallel_format)
        self.native = True


class ApplyRunner:
    """Starts apply calls, finishes them and sends their replies, for any channel."""

    def __init__(self, host: ApplyHost) -> None:
        self.host = host
        self.saved_sigint: Any = None
        self.gate = InterruptGate()
        #: ``(msg_id, coroutine)`` of the task whose coroutine the main thread awaits.
        self.awaiting: tuple[str | None, Any] | None = None
        #: ``(msg_id, exc_info)`` of the last task that raised here (for post-mortems).
        self.last_failure: tuple[str | None, ExcInfo] | None = None
        #: Where a task's user code begins on the main thread's stack (see :mod:`.stacks`).
        self.call_code = ApplyRunner._call.__code__
        self._traceback_lock = threading.Lock()

    # ------------------------------------------------------------------ SIGINT

    def sigint_interrupts(self, msg_id: str | None, phase: Phase = Phase.ADMITTING) -> None:
        """Let SIGINT interrupt request ``msg_id``'s user code (see :mod:`.interrupts`).

        ``phase``: where the request is.  The task channel's requests are
        being admitted (their start not reported yet); a shell request has
        started (ipykernel published ``busy``): an apply request's user code
        is only the call (:meth:`_call`), while any other request (a cell) may
        run user code anywhere in its handler.  Outside the main thread (a
        subshell) setting the handler raises, before the gate records
        anything: only the main thread's requests are its.
        """
        self.saved_sigint = set_signal_handler(SIGINT, self.gate.handler)
        self.gate.enter(msg_id, phase)

    def interrupted_before_code(self) -> bool:
        """Whether the request this thread serves was interrupted before its user code
        (while its arguments are unpacked: a kept input fetched from another engine)."""
        return threading.current_thread() is threading.main_thread() and self.gate.pending

    def sigint_restore(self) -> None:
        """Put back the SIGINT handler from before :meth:`sigint_interrupts`.

        Only on the main thread: a subshell's request never had the handler,
        and the gate is the main thread's.
        """
        if self.saved_sigint is not None and threading.current_thread() is threading.main_thread():
            self.gate.leave()
            set_signal_handler(SIGINT, self.saved_sigint)

    def sigint_idle(self) -> None:
        """Stop turning SIGINT into KeyboardInterrupt once the user's code has returned.

        ipykernel keeps the handler in for the whole handler call; an interrupt
        that arrives while the reply is being built would escape into
        ipykernel, which swallows it and sends no reply at all.
        """
        self.sigint_restore()

    # ------------------------------------------------------------------ the call

    def start(self, parent: dict[str, Any], route: Any = None) -> ApplyCall:
        """Unpack an apply request and call its function (up to its first ``await``).

        A function that returns an awaitable leaves it in ``pending``, for
        :meth:`complete` to await; a failure to unpack is kept in ``failure``
        and becomes the error reply.  ``route`` is stored for the channel.
        """
        host = self.host
        call = ApplyCall(parent, host.init_metadata(parent), route)
        try:
            content = parent["content"]
            if serialize.is_native_apply(content) or content:
                f, args, kwargs = serialize.unpack_apply(
                    content, parent["buffers"], host.kept_inputs
                )
            else:
                call.native = False
                f, args, kwargs = ipyparallel_format.unpack_apply(
                    parent["buffers"], host.shell.user_ns
                )
            # the request stays referenced as the kernel's parent until the next
            # one: drop its frames so large arguments live only as long as the call
            parent["buffers"] = []
            if not callable(f):
                raise TypeError(
                    f"apply_request: the function is not callable: {serialize.describe(f)}"
                )
            call.name = _name(f)
            call.result, call.error, call.pending = self._call(call, f, args, kwargs)
        except BaseException as exc:
            exc.__cause__ = None
            exc.__suppress_context__ = True
            call.failure = exc
        return call

    def _call(
        self,
        call: ApplyCall,
        f: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[Any, ExcInfo | None, Any]:
        """Call ``f`` in the user namespace: ``(result, exc_info, awaitable)``.

        The traceback in ``exc_info`` starts at the user's code: the frame of
        this method is cut off.  An awaitable result is returned third, to be
        awaited by the caller.  The names ``f`` carried are kept in
        ``call.carried``.  A request in ipyparallel's format runs ``f`` with
        the globals it was unpickled with, as on a stock ipyparallel engine
        (whose clients expect cloudpickled functions to keep the values they
        carried).
        """
        namespace = self.host.shell.user_ns
        f, carried = bind_to_namespace(f, namespace) if call.native else (f, {})
        call.carried = carried
        gate = self.gate if threading.current_thread() is threading.main_thread() else None
        task_input = TaskInput(self.host, call.parent) if gate is not None else _AS_IT_IS
        with carried_names(namespace, carried) if carried else _NOTHING_CARRIED:
            try:
                try:
                    if gate is not None and not gate.arm():
                        raise KeyboardInterrupt
                    with task_input as own:
                        result = own(f)(*args, **kwargs)
                finally:
                    if gate is not None:
                        gate.disarm()
            except BaseException as exc:
                # the user's frames only, for its traceback and a post-mortem debugger
                exc.__traceback__ = _without_own_tail(exc.__traceback__.tb_next)
                return None, (type(exc), exc, exc.__traceback__), None
        if inspect.isawaitable(result):
            return None, None, _awaited_with_names(result, namespace, carried)
        return result, None, None

    def complete(
        self, call: ApplyCall, send: Send, fail: Fail | None = None
    ) -> Awaitable[None] | None:
        """Finish ``call``, build its reply and ``send`` it.

        Returns ``None`` when all is done, else an awaitable for the rest: the
        call's coroutine and then its reply, or the zero-copy send of a reply.
        A failure before the reply is sent raises here, or, once awaiting,
        goes to ``fail`` (raised too without it).
        """
        if call.pending is not None:
            return self._complete_later(call, send, fail)
        return self._send(call, send)

    async def _complete_later(self, call: ApplyCall, send: Send, fail: Fail | None) -> None:
        """Await the call's coroutine, then send its reply."""
        try:
            call.result, call.error = await self._await_interruptibly(
                call.pending, call.name, call.parent["header"].get("msg_id")
            )
            waiting = self._send(call, send)
        except BaseException as exc:
            if fail is None:
                raise
            fail(call, exc)
            return
        if waiting is not None:
            await waiting

    def _send(self, call: ApplyCall, send: Send) -> Awaitable[None] | None:
        """Send the reply of a finished call; return the wait for its buffers, if any."""
        content, metadata, buffers = self.reply(call)
        tracker = send(call, content, metadata, buffers)
        if tracker is not None and not tracker.done:
            return self.wait_until_sent(tracker)
        return None

    def send_on_stream(
        self,
        call: ApplyCall,
        content: dict[str, Any],
        metadata: dict[str, Any],
        buffers: list[Any],
    ) -> Any:
        """Send a reply with the kernel's session, on the stream of a shell handler.

        ``call.route`` is the handler's ``(stream, ident)``; returns the
        tracker of the reply's zero-copy buffers, if it has any.
        """
        stream, ident = call.route
        session = self.host.session
        if not buffers:
            session.send(
                stream, "apply_reply", content, call.parent, ident=ident, metadata=metadata
            )
            return None
        sent = send_tracked(
            session,
            stream,
            "apply_reply",
            content=content,
            parent=call.parent,
            ident=ident,
            metadata=metadata,
            buffers=buffers,
        )
        return sent.get("tracker") if sent else None

    async def _await_interruptibly(
        self, awaitable: Any, name: str, msg_id: str | None
    ) -> tuple[Any, ExcInfo | None]:
        """Await a task's coroutine; an interrupt cancels it and reports KeyboardInterrupt.

        SIGINT while the event loop runs would otherwise raise inside the loop
        machinery and stop the kernel.
        """
        future = asyncio.ensure_future(awaitable)
        interrupted = False
        previous = None
        if threading.current_thread() is threading.main_thread():
            loop = asyncio.get_running_loop()
            gate = self.gate

            def cancel_on_sigint(signum: int, frame: Any) -> None:
                nonlocal interrupted
                if gate.wanted():
                    interrupted = True
                    loop.call_soon_threadsafe(future.cancel)

            gate.enter(msg_id, Phase.USER_CODE)
            previous = set_signal_handler(SIGINT, cancel_on_sigint)
            self.awaiting = (msg_id, awaitable)
        try:
            return await future, None
        except BaseException as exc:
            if interrupted and isinstance(exc, asyncio.CancelledError):
                interrupt = KeyboardInterrupt(f"interrupted while awaiting {name}")
                return None, (KeyboardInterrupt, interrupt, None)
            exc.__traceback__ = _user_frames(exc.__traceback__)
            return None, (type(exc), exc, exc.__traceback__)
        finally:
            if previous is not None:
                self.awaiting = None
                self.gate.leave()
                set_signal_handler(SIGINT, previous)

    @staticmethod
    async def wait_until_sent(tracker: Any) -> None:
        """Hold this shell until ZMQ has released the reply's zero-copy buffers.

        The buffers are views of the result itself; the next task must not be
        able to mutate an object that is still being sent.  Control messages
        keep being served meanwhile.
        """
        # a short poll: the client may already be waiting for the next task to start
        # (a 64 MiB reply takes about 30 ms to send; a 10 ms backoff cost up to 10 of those)
        delay = 1e-4
        while not tracker.done:
            await asyncio.sleep(delay)
            delay = min(delay * 2, SENT_POLL_INTERVAL)

    # ------------------------------------------------------------------ the reply

    def reply(self, call: ApplyCall) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
        """The reply of a finished call: ``(content, metadata, buffers)``.

        Sets ``call.runtime``.  Output is flushed first, so everything the
        task printed precedes its reply.
        """
        call.runtime = time.perf_counter() - call.started
        self.sigint_idle()
        buffers: list[Any] = []
        try:
            if call.failure is not None:
                raise call.failure
            with self._carried_bound(call):
                if call.error is not None:
                    self.last_failure = (call.parent["header"].get("msg_id"), call.error)
                    content = self._error_content(*call.error)
                    if call.native:
                        buffers = pack_exception(call.error[1], content)
                else:
                    content, buffers = self._result_content(call)
        except BaseException as exc:
            self.sigint_idle()
            exc.__cause__ = None
            exc.__suppress_context__ = True
            # a result that cannot be pickled is reported as what its pickling raised,
            # with where (its __reduce__ ...); anything else as itself
            error = exc.original if isinstance(exc, _ResultNotPickled) else exc
            tb = error.__traceback__ if error is not exc else None
            content = self._error_content(type(error), error, tb)
            buffers = pack_exception(error, content) if call.native else []
        call.result = None
        try:
            # a task long enough for ipykernel's timed flush to have started sending its
            # output (which empties the buffers before the send) is flushed for certain
            compat.flush_output(force=call.runtime > FORCED_FLUSH_AFTER)
        except Exception:
            self.host.log.exception("Could not flush a task's output")
        metadata = self.host.finish_metadata(call.parent, call.metadata, content)
        return content, metadata, buffers

    def _carried_bound(self, call: ApplyCall) -> Any:
        """Bind again the carried names the call's end removed, while its outcome is pickled.

        A result's ``__reduce__`` or ``__getstate__`` may use a name its
        function carried (a module imported at the top of the user's script).
        Names the task assigned itself are left as they are.
        """
        namespace = self.host.shell.user_ns
        missing = {k: v for k, v in call.carried.items() if k not in namespace}
        return carried_names(namespace, missing) if missing else _NOTHING_CARRIED

    def _result_content(self, call: ApplyCall) -> tuple[dict[str, Any], list[Any]]:
        """The reply content and buffers of a call's result.

        Raises :class:`_ResultNotPickled` with what pickling raised, so the
        reply reports that exception itself (a ``PicklingError``, a
        ``TypeError``, even the ``SystemExit`` of a ``__reduce__``).
        """
        try:
            if not call.native:
                return {"status": "ok"}, ipyparallel_format.pack_result(
                    call.result, self.host.session
                )
            result_content, buffers = serialize.pack_result(call.result)
        except serialize.SerializationError as exc:
            original = exc.__cause__ or exc
            original.add_note(f"(raised while pickling the result of {call.name})")
            raise _ResultNotPickled(original) from None
        keep_over = call.parent["content"].get("keep_over")
        if type(keep_over) is int and (nbytes := packed_size(buffers)) >= keep_over:
            key = call.parent["header"]["msg_id"]
            self.host.kept.keep(key, call.result, nbytes)
            kept = {"key": key, "nbytes": nbytes, "type": type(call.result).__qualname__}
            return {"status": "ok", **result_content, "parts": [], "kept": kept}, []
        return shared_memory.toward(
            call.parent["content"].get("shared_memory"), {"status": "ok", **result_content}, buffers
        )

    def _error_content(
        self, etype: type[BaseException], evalue: BaseException, tb: TracebackType | None
    ) -> dict[str, Any]:
        """Publish an IOPub ``error`` for the exception and build the error reply content."""
        host = self.host
        shell = host.shell
        with self._traceback_lock:
            formatted = None
            # IPython cannot render exception groups from an exc_info tuple (it prints
            # "NoneType: None" to stderr), so those go straight to the standard library.
            if not isinstance(evalue, BaseExceptionGroup):
                formatted = compat.render_traceback(shell, (etype, evalue, tb), host.log)
            if formatted is None:
                formatted = traceback.format_exception(etype, evalue, tb)
                compat.show_rendered_traceback(shell, (etype, evalue, tb), formatted)
        return {
            "status": "error",
            "ename": etype.__name__,
            "evalue": safe_str(evalue),
            "traceback": formatted,
            "plain_traceback": "".join(traceback.format_exception(etype, evalue, tb)),
            "engine_info": {
                "engine_uuid": host.ident,
                "engine_id": host.engine_id,
                "method": "apply",
            },
        }


class _ResultNotPickled(Exception):
    """Pickling a call's result raised ``original`` (which the reply reports)."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(original)
        self.original = original


async def _awaited_with_names(awaitable: Any, namespace: dict[str, Any], carried: Any) -> Any:
    """Await a task's coroutine with its carried names bound, as during its call."""
    with carried_names(namespace, carried):
        return await awaitable


#: Modules whose frames below the user's code are the kernel's, not the user's: a task's
#: ``input()`` (one call, as Python's own builtin is) and the SIGINT handler that raised
#: ``KeyboardInterrupt`` where the task was.
_OWN_BELOW_USER = frozenset(
    {"parallel_kernel.kernel.task_input", "parallel_kernel.kernel.interrupts"}
)


def _without_own_tail(tb: TracebackType | None) -> TracebackType | None:
    """``tb`` ending at the user's last frame: the kernel's frames below it cut off, so a
    traceback and a post-mortem debugger end where the user's code was."""
    last_user = None
    entry = tb
    while entry is not None:
        if entry.tb_frame.f_globals.get("__name__") not in _OWN_BELOW_USER:
            last_user = entry
        elif last_user is not None:
            last_user.tb_next = None
            break
        entry = entry.tb_next
    return tb


def _user_frames(tb: TracebackType | None) -> TracebackType | None:
    """Drop this module's frames from the start of a traceback of an awaited task."""
    own = (ApplyRunner._await_interruptibly.__code__, _awaited_with_names.__code__)
    while tb is not None and tb.tb_frame.f_code in own:
        tb = tb.tb_next
    return tb


def _name(f: Any) -> str:
    """The name a reply's errors use for the task's function."""
    return getattr(f, "__qualname__", None) or type(f).__qualname__


def safe_str(obj: Any) -> str:
    """``str(obj)``, or a placeholder when that raises."""
    try:
        return str(obj)
    except Exception:
        return f"<unprintable {type(obj).__qualname__} object>"
