"""ParallelKernel: an IPython kernel that is also a task-queue engine.

Everything ``IPythonKernel`` does is inherited unchanged.  On top of it this
class answers three messages (``docs/protocol.md`` is the reference):

* ``apply_request`` (shell): call a serialized function in the user namespace
  and send the result back in the buffers of ``apply_reply``;
* ``clear_request`` (shell or control): reset the user namespace and re-run the
  start-up code, never while user code runs;
* ``abort_request`` (control): answer queued requests ``aborted`` instead of
  running them, by id or all at once.

Every request it receives gets exactly one reply, including messages of types
it does not know, which get an error reply instead of silence.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import inspect
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from signal import SIGINT, default_int_handler
from types import TracebackType
from typing import Any

from ipykernel.ipkernel import IPythonKernel
from jupyter_client.session import utcnow
from traitlets import Integer, List, Unicode

from .. import serialize
from .._version import __version__
from ..namespace import NamespaceGate, bind_to_namespace, carried_names
from . import compat, ipyparallel_format
from .aborts import AbortRecord
from .compat import set_signal_handler
from .replies import HandlerTable, error_content, find_malformed, reply_type, send_tracked
from .taskchannel import TaskChannel, bind_task_socket

#: Reply metadata keys copied from the request when present (scheduler bookkeeping).
ECHOED_METADATA = ("original_msg_id", "is_broadcast", "is_coalescing", "label")
#: Shell messages without replies.
COMM_TYPES = frozenset({"comm_open", "comm_msg", "comm_close"})

_MISSING = object()
#: The context a call runs in when its function carried no names.
_NOTHING_CARRIED = nullcontext()
#: Seconds after which a task's output is flushed even if its buffers look empty.
FORCED_FLUSH_AFTER = 0.05
#: Longest interval, in seconds, between checks that a zero-copy reply has been sent.
SENT_POLL_INTERVAL = 0.0005

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


class ApplyCall:
    """One apply request between its call and its reply."""

    __slots__ = (
        "error",
        "failure",
        "metadata",
        "name",
        "native",
        "parent",
        "pending",
        "result",
        "started",
    )

    def __init__(self, parent: dict[str, Any], metadata: dict[str, Any]) -> None:
        self.parent = parent
        self.metadata = metadata
        self.name = "the function"
        self.result: Any = None
        self.error: ExcInfo | None = None
        self.pending: Any = None
        self.failure: BaseException | None = None
        self.started = time.perf_counter()
        # the request's wire format: this package's, or ipyparallel's (see ipyparallel_format)
        self.native = True


class ParallelKernel(compat.PrivateOverrides, IPythonKernel):
    """An ``IPythonKernel`` that also runs ``apply_request`` tasks as a parallel engine."""

    engine_id = Integer(
        0,
        help="Integer id of this engine in a pool; reported in reply metadata and kernel_info.",
    ).tag(config=True)

    @property
    def int_id(self) -> int:
        """ipykernel's name for the engine id (it puts it in errors' ``engine_info``)."""
        return self.engine_id

    exec_lines = List(
        Unicode(),
        help="Lines of code run in the user namespace at start-up and after every clear_request.",
    ).tag(config=True)

    exec_files = List(
        Unicode(),
        help="Files (.py or .ipy) run in the user namespace after exec_lines, at start-up and "
        "after every clear_request.",
    ).tag(config=True)

    abort_capacity = Integer(
        100_000,
        help="Most aborted msg_ids remembered before they arrive; the oldest are forgotten "
        "beyond this, so aborting ids that never arrive cannot grow memory without bound.",
    ).tag(config=True)

    #: The task channel's socket and port, given by the application (none when embedded).
    task_socket: Any = None
    task_port: int | None = None
    task_channel: TaskChannel | None = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.aborts = AbortRecord(capacity=self.abort_capacity, history=self.abort_capacity)
        self.namespace_gate = NamespaceGate()
        self._traceback_lock = threading.Lock()
        self.shell_handlers = HandlerTable(
            {
                **self.shell_handlers,
                "apply_request": self.apply_request,
                "clear_request": self.clear_request,
            },
            unknown=functools.partial(self._unknown_request, "shell"),
            send_error=self._send_error_reply,
            log=self.log,
        )
        self.control_handlers = HandlerTable(
            {
                **self.control_handlers,
                "abort_request": self.abort_request,
                "clear_request": self.control_clear_request,
            },
            unknown=functools.partial(self._unknown_request, "control"),
            send_error=self._send_error_reply,
            log=self.log,
            answered_later=["clear_request"],
        )

    # ------------------------------------------------------------------ identity

    @property
    def kernel_info(self) -> dict[str, Any]:
        """ipykernel's kernel_info plus the ``parallel`` feature and its details."""
        info = super().kernel_info
        info["supported_features"] = [*info["supported_features"], "parallel"]
        info["parallel"] = {
            "version": __version__,
            "format": serialize.FORMAT,
            "format_version": serialize.FORMAT_VERSION,
            "engine_id": self.engine_id,
            "engine_uuid": self.ident,
            "shell_requests": ["apply_request", "clear_request"],
            "task_port": self.task_port,
            "task_requests": ["apply_request"],
            "control_requests": ["abort_request", "clear_request"],
        }
        return info

    def init_metadata(self, parent: dict[str, Any]) -> dict[str, Any]:
        """Reply metadata common to every request that runs code."""
        metadata = super().init_metadata(parent)
        metadata["engine_id"] = self.engine_id
        return metadata

    def finish_metadata(
        self, parent: dict[str, Any], metadata: dict[str, Any], reply_content: dict[str, Any]
    ) -> dict[str, Any]:
        """Add completion time and echo the request's scheduler bookkeeping."""
        metadata = super().finish_metadata(parent, metadata, reply_content)
        metadata["completed"] = utcnow()
        request_metadata = parent.get("metadata")
        if isinstance(request_metadata, dict):
            for key in ECHOED_METADATA:
                if key in request_metadata:
                    metadata[key] = request_metadata[key]
        return metadata

    # ------------------------------------------------------------------ start-up

    def start(self) -> None:
        """Start serving (task channel included), after running the start-up code once."""
        super().start()
        if self.task_socket is None:
            self._open_task_socket()
        if self.task_socket is not None:
            self.task_channel = TaskChannel(self, self.task_socket, self.task_port)
        self.run_startup_code()

    def _open_task_socket(self) -> None:
        """Open the task channel when the application did not (a plain ``IPKernelApp``).

        Launchers that run ipykernel's application with ``kernel_class`` set to
        this class (gateway_provisioners' ``launch_ipykernel.py`` with
        ``--kernel-class-name``) get the task channel too, on a free port of the
        kernel's address, advertised in ``kernel_info``.  Embedded kernels and
        other applications (ipyparallel's engine) have none.
        """
        from ipykernel.kernelapp import IPKernelApp

        app = self.parent
        if not isinstance(app, IPKernelApp) or getattr(app, "shell_socket", None) is None:
            return
        self.task_socket, self.task_port = bind_task_socket(app)
        self.log.debug("task ROUTER Channel on port: %i", self.task_port)
        # registered after the application's own close, so it runs first: the
        # application's context cannot terminate while this socket is open
        atexit.register(self._close_task_socket, app)

    def _close_task_socket(self, app: Any) -> None:
        if self.task_channel is not None:
            self.task_channel.close()
        if not self.task_socket.closed:
            self.task_socket.close(linger=0)
            if app.transport == "ipc":
                Path(f"{app.ip}-{self.task_port}").unlink(missing_ok=True)

    def run_startup_code(self) -> list[str]:
        """Run ``exec_lines`` then ``exec_files`` in the user namespace.

        Errors are shown (IOPub ``error``) and logged, and do not stop the rest
        from running.  Returns one message per failure.
        """
        failures = []
        for line in self.exec_lines:
            result = self.shell.run_cell(line, store_history=False, silent=True)
            if not result.success:
                failures.append(
                    f"exec_lines {line!r}: {result.error_before_exec or result.error_in_exec!r}"
                )
        for path in self.exec_files:
            try:
                if path.endswith(".ipy"):
                    self.shell.safe_execfile_ipy(path, raise_exceptions=True)
                else:
                    self.shell.safe_execfile(path, self.shell.user_ns, raise_exceptions=True)
            except BaseException as exc:
                self.shell.showtraceback()
                failures.append(f"exec_files {path!r}: {exc!r}")
        for failure in failures:
            self.log.error("Start-up code failed: %s", failure)
        return failures

    # ------------------------------------------------------------------ apply

    async def apply_request(self, stream: Any, ident: list[bytes], parent: dict[str, Any]) -> None:
        """Run a serialized function in the user namespace and reply with its result."""
        call = self.start_apply(parent)
        if call.pending is not None:
            call.result, call.error = await self._await_interruptibly(call.pending, call.name)
        reply, buffers = self.finish_apply(call)
        if not buffers:
            self.session.send(stream, "apply_reply", ident=ident, **reply)
            return
        sent = send_tracked(
            self.session, stream, "apply_reply", ident=ident, buffers=buffers, **reply
        )
        tracker = sent.get("tracker") if sent else None
        if tracker is not None:
            await self._wait_until_sent(tracker)

    def start_apply(self, parent: dict[str, Any]) -> ApplyCall:
        """Unpack an apply request and call its function (up to its first ``await``).

        A function that returns an awaitable leaves it in ``pending`` for the
        caller to await; everything else is finished here.
        """
        call = ApplyCall(parent, self.init_metadata(parent))
        try:
            content = parent["content"]
            if serialize.is_native_apply(content) or content:
                f, args, kwargs = serialize.unpack_apply(content, parent["buffers"])
            else:
                call.native = False
                f, args, kwargs = ipyparallel_format.unpack_apply(
                    parent["buffers"], self.shell.user_ns
                )
            # the request stays referenced as the kernel's parent until the next
            # one: drop its frames so large arguments live only as long as the call
            parent["buffers"] = []
            if not callable(f):
                raise TypeError(
                    f"apply_request: the function is not callable: {serialize.describe(f)}"
                )
            call.name = _name(f)
            call.result, call.error, call.pending = self._call(f, args, kwargs, rebind=call.native)
        except BaseException as exc:
            exc.__cause__ = None
            exc.__suppress_context__ = True
            call.failure = exc
        return call

    def finish_apply(self, call: ApplyCall) -> tuple[dict[str, Any], list[Any]]:
        """Build the reply of a finished call: its keyword arguments for ``send``, and buffers.

        Output is flushed first, so everything the task printed precedes its reply.
        """
        self._restore_idle_sigint()
        buffers: list[Any] = []
        try:
            if call.failure is not None:
                raise call.failure
            if call.error is not None:
                reply_content = self._error_reply(*call.error)
                if call.native:
                    buffers = self._pack_exception(call.error[1], reply_content)
            elif not call.native:
                try:
                    buffers = ipyparallel_format.pack_result(call.result, self.session)
                except serialize.SerializationError as exc:
                    raise serialize.SerializationError(
                        f"the result of {call.name}: {exc}"
                    ) from None
                reply_content = {"status": "ok"}
            else:
                try:
                    result_content, buffers = serialize.pack_result(call.result)
                except serialize.SerializationError as exc:
                    raise serialize.SerializationError(
                        f"the result of {call.name}: {exc}"
                    ) from None
                reply_content = {"status": "ok", **result_content}
        except BaseException as exc:
            self._restore_idle_sigint()
            exc.__cause__ = None
            exc.__suppress_context__ = True
            reply_content = self._error_reply(type(exc), exc, None)
            buffers = []
        call.result = None
        try:
            # a task long enough for ipykernel's timed flush to have started sending its
            # output (which empties the buffers before the send) is flushed for certain
            compat.flush_output(force=time.perf_counter() - call.started > FORCED_FLUSH_AFTER)
        except Exception:
            self.log.exception("Could not flush a task's output")
        metadata = self.finish_metadata(call.parent, call.metadata, reply_content)
        return {"content": reply_content, "parent": call.parent, "metadata": metadata}, buffers

    def _call(
        self,
        f: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        rebind: bool = True,
    ) -> tuple[Any, ExcInfo | None, Any]:
        """Call ``f`` in the user namespace: ``(result, exc_info, awaitable)``.

        The traceback in ``exc_info`` starts at the user's code: the frame of
        this method is cut off.  An awaitable result is returned third, to be
        awaited by the caller.  Without ``rebind``, ``f`` runs with the globals
        it was unpickled with, as on a stock ipyparallel engine (whose clients
        expect cloudpickled functions to keep the values they carried).
        """
        namespace = self.shell.user_ns
        f, carried = bind_to_namespace(f, namespace) if rebind else (f, {})
        with carried_names(namespace, carried) if carried else _NOTHING_CARRIED:
            try:
                result = f(*args, **kwargs)
            except BaseException as exc:
                return None, (type(exc), exc, exc.__traceback__.tb_next), None
        if inspect.isawaitable(result):
            return None, None, _awaited_with_names(result, namespace, carried)
        return result, None, None

    async def _await_interruptibly(self, awaitable: Any, name: str) -> tuple[Any, ExcInfo | None]:
        """Await a task's coroutine; an interrupt cancels it and reports KeyboardInterrupt.

        SIGINT while the event loop runs would otherwise raise inside the loop
        machinery and stop the kernel.
        """
        future = asyncio.ensure_future(awaitable)
        interrupted = False
        previous = None
        if threading.current_thread() is threading.main_thread():
            loop = asyncio.get_running_loop()

            def cancel_on_sigint(signum: int, frame: Any) -> None:
                nonlocal interrupted
                interrupted = True
                loop.call_soon_threadsafe(future.cancel)

            previous = set_signal_handler(SIGINT, cancel_on_sigint)
        try:
            return await future, None
        except BaseException as exc:
            if interrupted and isinstance(exc, asyncio.CancelledError):
                interrupt = KeyboardInterrupt(f"interrupted while awaiting {name}")
                return None, (KeyboardInterrupt, interrupt, None)
            return None, (type(exc), exc, _user_frames(exc.__traceback__))
        finally:
            if previous is not None:
                set_signal_handler(SIGINT, previous)

    @staticmethod
    def _pack_exception(exc: BaseException, reply_content: dict[str, Any]) -> list[Any]:
        """Attach the exception object itself to an error reply, when it can be pickled.

        A client can then re-raise or inspect the original exception; the
        error content stays complete without it.
        """
        try:
            parts, buffers = serialize.pack_result(exc)
        except serialize.SerializationError:
            return []
        reply_content.update(parts)
        return buffers

    def _error_reply(
        self, etype: type[BaseException], evalue: BaseException, tb: TracebackType | None
    ) -> dict[str, Any]:
        """Publish an IOPub ``error`` for the exception and build the error reply content."""
        shell = self.shell
        with self._traceback_lock:
            formatted = None
            # IPython cannot render exception groups from an exc_info tuple (it prints
            # "NoneType: None" to stderr), so those go straight to the standard library.
            if not isinstance(evalue, BaseExceptionGroup):
                formatted = compat.render_traceback(shell, (etype, evalue, tb), self.log)
            if formatted is None:
                formatted = traceback.format_exception(etype, evalue, tb)
                compat.show_rendered_traceback(shell, (etype, evalue, tb), formatted)
        return {
            "status": "error",
            "ename": etype.__name__,
            "evalue": _safe_str(evalue),
            "traceback": formatted,
            "engine_info": {
                "engine_uuid": self.ident,
                "engine_id": self.engine_id,
                "method": "apply",
            },
        }

    def pre_handler_hook(self) -> None:
        """ipykernel's hook (SIGINT raises KeyboardInterrupt during a handler), at C speed."""
        self.saved_sigint_handler = set_signal_handler(SIGINT, default_int_handler)

    def post_handler_hook(self) -> None:
        """ipykernel's hook: the handler that was there before ``pre_handler_hook``."""
        saved = getattr(self, "saved_sigint_handler", None)
        if saved is not None:
            set_signal_handler(SIGINT, saved)

    def _restore_idle_sigint(self) -> None:
        """Stop turning SIGINT into KeyboardInterrupt once the user's code has returned.

        ipykernel installs the interrupting handler for the whole handler call;
        an interrupt that arrives while the reply is being built would escape
        into ipykernel, which swallows it and sends no reply at all.
        """
        saved = getattr(self, "saved_sigint_handler", None)
        if saved is not None and threading.current_thread() is threading.main_thread():
            set_signal_handler(SIGINT, saved)

    async def _wait_until_sent(self, tracker: Any) -> None:
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

    # ------------------------------------------------------------------ clear

    async def clear_request(self, stream: Any, ident: list[bytes], parent: dict[str, Any]) -> None:
        """Clear on shell: runs in queue order, after the requests sent before it."""
        if parent["header"].get("subshell_id") is not None:
            content = error_content(
                "SubshellError",
                "clear_request resets the namespace that all shells share: send it to the "
                "main shell (no subshell_id) or on the control channel",
            )
        else:
            content = self._clear()
        self.session.send(stream, "clear_reply", content, parent=parent, ident=ident)

    async def control_clear_request(
        self, stream: Any, ident: list[bytes], parent: dict[str, Any]
    ) -> None:
        """Clear on control: takes effect once no user code is running.

        The clear is handed to the main thread, where it waits for the main
        shell's lock; this control handler returns at once so aborts and
        interrupts keep being served, and the reply is sent from the control
        thread when the clear is done.
        """
        control_stream = self.control_stream

        async def clear_in_main_thread() -> None:
            async with compat.main_shell_lock(self):
                previous_ident, previous_parent = compat.shell_parent(self)
                self.set_parent(ident, parent, channel="shell")
                try:
                    content = self._clear()
                except Exception as exc:
                    self.log.exception("clear_request failed")
                    content = error_content(type(exc).__name__, _safe_str(exc))
                finally:
                    self.set_parent(previous_ident, previous_parent, channel="shell")
            control_stream.io_loop.add_callback(
                self.session.send, control_stream, "clear_reply", content, parent, ident
            )

        self.io_loop.add_callback(clear_in_main_thread)

    def _clear(self) -> dict[str, Any]:
        """Reset the user namespace and re-run the start-up code, once no subshell runs code."""
        with self.namespace_gate.clearing():
            self.shell.reset(new_session=False)
            failures = self.run_startup_code()
        if failures:
            return {
                "status": "error",
                "ename": "StartupError",
                "evalue": "; ".join(failures),
                "traceback": failures,
            }
        return {"status": "ok"}

    # ------------------------------------------------------------------ abort

    async def abort_request(self, stream: Any, ident: list[bytes], parent: dict[str, Any]) -> None:
        """Abort queued requests by id (a list or one string), or all of them (null or []).

        "All" means all of the sender's session, or every session's when the
        content has ``"every_session": true``.
        """
        request = parent["content"]
        msg_ids = request.get("msg_ids") if isinstance(request, dict) else _MISSING
        every_session = request.get("every_session", False) if isinstance(request, dict) else False
        if not isinstance(every_session, bool):
            content: dict[str, Any] = error_content(
                "TypeError",
                "abort_request 'every_session' must be true or false; got "
                + _short_repr(every_session),
            )
        elif msg_ids is None or msg_ids == []:
            header = parent["header"]
            date = header.get("date")
            self.aborts.abort_all(
                str(header.get("session", "")),
                date if _is_aware(date) else utcnow(),
                every_session=every_session,
            )
            content = {"status": "ok", "all": True, "pending": [], "started": []}
        else:
            if isinstance(msg_ids, str):
                msg_ids = [msg_ids]
            if not isinstance(msg_ids, list) or not all(isinstance(i, str) for i in msg_ids):
                content = error_content(
                    "TypeError",
                    "abort_request content must be an object whose 'msg_ids' is a list "
                    "of strings, a string, an empty list or null; got "
                    + (_short_repr(msg_ids) if msg_ids is not _MISSING else _short_repr(request)),
                )
            else:
                content = {"status": "ok", "all": False, **self.aborts.abort(msg_ids)}
        self.session.send(stream, "abort_reply", content, parent=parent, ident=ident)

    def should_handle(self, stream: Any, msg: dict[str, Any], idents: list[bytes]) -> bool:
        """Answer an aborted request with its reply type and ``status: aborted``.

        Comm messages have no reply and are never aborted; a request whose
        msg_id is not a string cannot have been named by an abort.
        """
        header = msg["header"]
        msg_id, msg_type = header["msg_id"], header["msg_type"]
        if (
            not isinstance(msg_id, str)
            or msg_type in COMM_TYPES
            or not self.aborts.check(msg_id, msg_type, header.get("session"), header.get("date"))
        ):
            return True
        self._restore_idle_sigint()  # an interrupt must not cut the reply short
        content = {"status": "aborted"}
        metadata = self.init_metadata(msg)
        metadata = self.finish_metadata(msg, metadata, content)
        self.session.send(
            stream,
            reply_type(header["msg_type"]),
            content,
            parent=msg,
            ident=idents,
            metadata=metadata,
        )
        return False

    # ------------------------------------------------------------------ unknown

    async def _unknown_request(
        self, channel: str, stream: Any, ident: list[bytes], parent: dict[str, Any]
    ) -> None:
        """Reply with a specific error to a message type this kernel does not handle."""
        msg_type = parent["header"]["msg_type"]
        self.log.warning("Unknown %s message type: %r", channel, msg_type)
        self._send_error_reply(
            stream,
            ident,
            parent,
            error_content(
                "UnknownMessageType",
                f"this kernel does not handle {msg_type!r} on the {channel} channel",
            ),
        )

    def _send_error_reply(
        self, stream: Any, ident: list[bytes], parent: dict[str, Any], content: dict[str, Any]
    ) -> None:
        """Answer ``parent`` with an error reply of the matching type."""
        self.session.send(
            stream, reply_type(parent["header"]["msg_type"]), content, parent=parent, ident=ident
        )

    # ------------------------------------------------------------------ malformed

    async def dispatch_shell(
        self, msg: list[Any], /, subshell_id: str | None = None, *, concurrent: bool = False
    ) -> None:
        """ipykernel's dispatch, after answering signed messages whose JSON is malformed.

        Requests in subshells hold the namespace gate while they run, so a
        clear waits for them.
        """
        # with a shell-channel thread, shell_channel_thread_main has answered them already
        if not self.shell_channel_thread and self._reject_malformed(
            msg, self.shell_stream, "shell"
        ):
            return
        if subshell_id is None or concurrent:
            await super().dispatch_shell(msg, subshell_id=subshell_id, concurrent=concurrent)
            return
        with self.namespace_gate.running():
            await super().dispatch_shell(msg, subshell_id=subshell_id, concurrent=concurrent)

    async def shell_channel_thread_main(self, msg: list[Any]) -> None:
        """ipykernel's routing of shell messages to subshells, after answering malformed ones.

        ipykernel would log a message it cannot deserialize and drop it, so
        its sender would wait for a reply forever.
        """
        if not self._reject_malformed(msg, self.shell_stream, "shell"):
            await super().shell_channel_thread_main(msg)

    async def process_control(self, msg: list[Any]) -> None:
        """ipykernel's control processing, after answering malformed signed messages."""
        if not self._reject_malformed(msg, self.control_stream, "control"):
            await super().process_control(msg)

    def _reject_malformed(self, frames: list[Any], stream: Any, channel: str) -> bool:
        """Send an error reply for a signed message whose JSON does not decode."""
        found = find_malformed(self.session, frames)
        if found is None:
            return False
        idents, header, problem = found
        self.log.error("Malformed %s message %s: %s", channel, header.get("msg_id"), problem)
        parent = {"header": header}
        compat.publish_status(self, "busy", channel, parent)
        self._send_error_reply(
            stream,
            idents,
            parent,
            error_content(
                "MalformedMessage",
                f"{header['msg_type']} {header.get('msg_id')!r} cannot be decoded: {problem}",
            ),
        )
        compat.publish_status(self, "idle", channel, parent)
        return True


async def _awaited_with_names(awaitable: Any, namespace: dict[str, Any], carried: Any) -> Any:
    """Await a task's coroutine with its carried names bound, as during its call."""
    with carried_names(namespace, carried):
        return await awaitable


def _user_frames(tb: TracebackType | None) -> TracebackType | None:
    """Drop this module's frames from the start of a traceback of an awaited task."""
    own = (ParallelKernel._await_interruptibly.__code__, _awaited_with_names.__code__)
    while tb is not None and tb.tb_frame.f_code in own:
        tb = tb.tb_next
    return tb


def _name(f: Any) -> str:
    return getattr(f, "__qualname__", None) or type(f).__qualname__


def _safe_str(obj: Any) -> str:
    try:
        return str(obj)
    except Exception:
        return f"<unprintable {type(obj).__qualname__} object>"


def _short_repr(obj: Any) -> str:
    text = _safe_str(repr(obj)) if not isinstance(obj, str) else repr(obj)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_aware(date: Any) -> bool:
    return getattr(date, "tzinfo", None) is not None
