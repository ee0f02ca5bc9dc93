"""ParallelKernel: an IPython kernel that is also a task-queue engine.

Everything ``IPythonKernel`` does is inherited unchanged.  On top of it this
class answers four messages (``docs/protocol.md`` is the reference):

* ``apply_request`` (shell): call a serialized function in the user namespace
  and send the result back in the buffers of ``apply_reply``;
* ``clear_request`` (shell or control): reset the user namespace and re-run the
  start-up code, never while user code runs;
* ``abort_request`` (control): answer queued requests ``aborted`` instead of
  running them, by id or all at once;
* ``interrupt_request`` (control) naming a ``msg_id``: interrupt that request
  only if it runs now (:mod:`.interrupts`).

Every request it receives gets exactly one reply, including messages of types
it does not know, which get an error reply instead of silence.
"""

from __future__ import annotations

import asyncio
import atexit
import faulthandler
import functools
from typing import Any

from ipykernel.ipkernel import IPythonKernel
from jupyter_client.session import utcnow
from traitlets import Integer, List, Unicode

from .. import serialize, shared_memory
from .._version import __version__
from ..namespace import NamespaceGate
from ..protocol import (
    APPLY_REQUEST,
    FETCH_REQUEST,
    RELEASE_REQUEST,
    STACK_REQUEST,
    STATS_REQUEST,
    TASK_EVENTS,
)
from . import compat
from .aborts import AbortRecord
from .apply import ApplyRunner, safe_str
from .control_requests import ControlRequests
from .interrupts import Phase
from .kept import InputResolver, ResultStore
from .postmortem import post_mortem
from .replies import HandlerTable, error_content, find_malformed, peek_header, reply_type
from .shell_order import ClearsOnTheWay, MainShellQueue
from .taskchannel import TaskChannel
from .tasksocket import bind_task_socket, close_task_socket

#: Reply metadata keys copied from the request when present (scheduler bookkeeping).
ECHOED_METADATA = ("original_msg_id", "is_broadcast", "is_coalescing", "label")
#: Shell messages without replies.
COMM_TYPES = frozenset({"comm_open", "comm_msg", "comm_close"})


class ParallelKernel(ControlRequests, compat.PrivateOverrides, IPythonKernel):
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
        self.kept = ResultStore()
        self.apply_runner = ApplyRunner(self)
        self.kept_inputs = InputResolver(self.kept, self.apply_runner.interrupted_before_code)
        self.main_shell_queue = MainShellQueue()
        self.clears_on_the_way = ClearsOnTheWay()
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
                "interrupt_request": self.interrupt_request,
                STACK_REQUEST: self.stack_request,
                FETCH_REQUEST: self.fetch_request,
                RELEASE_REQUEST: self.release_request,
                STATS_REQUEST: self.stats_request,
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
            "shared_memory": shared_memory.place(),
            "task_requests": ["apply_request"],
            "task_events": list(TASK_EVENTS),
            "control_requests": [
                "abort_request",
                "clear_request",
                "interrupt_request",
                STACK_REQUEST,
                FETCH_REQUEST,
                RELEASE_REQUEST,
                STATS_REQUEST,
            ],
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
        self._dump_stacks_on_fault()
        shared_memory.sweep()
        atexit.register(shared_memory.sweep, True)
        if self.task_socket is None:
            self._open_task_socket()
        if self.task_socket is not None:
            self.task_channel = TaskChannel(
                self, self.apply_runner, self.task_socket, self.io_loop.asyncio_loop
            )
        self.run_startup_code()

    @staticmethod
    def _dump_stacks_on_fault() -> None:
        """At a fatal signal (SIGSEGV, SIGABRT ...), write every thread's Python stack to
        the process's own standard error, where a pool reads why its engine died.

        fd 2 may be ipykernel's pipe to IOPub, read by a thread that dies with
        the process, so the dump goes to the file the kernel was started with.
        """
        fd = compat.original_stderr_fd()
        if fd is not None:
            faulthandler.enable(file=fd, all_threads=True)

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
        # registered after the application's own close, so it runs first: the
        # application's context cannot terminate while this socket is open
        atexit.register(self.close_task_channel, app)

    def close_task_channel(self, app: Any) -> None:
        """Stop serving the task channel and close its socket (``app`` bound it)."""
        if self.task_channel is not None:
            self.task_channel.close()
        if self.task_socket is not None:
            close_task_socket(app, self.task_socket, self.task_port)

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
        runner = self.apply_runner
        waiting = runner.complete(runner.start(parent, (stream, ident)), runner.send_on_stream)
        if waiting is not None:
            await waiting

    def pre_handler_hook(self) -> None:
        """ipykernel's hook (SIGINT raises KeyboardInterrupt during a handler), at C speed."""
        header = self.get_parent("shell").get("header", {})
        msg_id = header.get("msg_id")
        self.apply_runner.sigint_interrupts(
            msg_id if isinstance(msg_id, str) else None,
            Phase.STARTED if header.get("msg_type") == APPLY_REQUEST else Phase.USER_CODE,
        )

    def post_handler_hook(self) -> None:
        """ipykernel's hook: the handler that was there before ``pre_handler_hook``."""
        self.apply_runner.sigint_restore()

    # ------------------------------------------------------------------ the task channel's view

    @property
    def shell_lock(self) -> asyncio.Lock:
        """The lock the main shell holds while it runs a request (a cell, a clear)."""
        return compat.main_shell_lock(self)

    def clear_on_the_way(self) -> bool:
        """Whether a clear from the control channel is on its way to the main shell's lock."""
        return bool(self.clears_on_the_way)

    def admit(self, stream: Any, idents: list[bytes], msg: dict[str, Any]) -> bool:
        """Parent the kernel's output to a task-channel request and decide whether it runs.

        What ``dispatch_shell`` does for a shell request before its handler:
        ``False`` means it was aborted, and has been answered.
        """
        self.set_parent(idents, msg, channel="shell")
        return self.should_handle(stream, msg, idents)

    def publish_idle(self, parent: dict[str, Any]) -> None:
        """Tell IOPub listeners that ``parent``'s output is complete (shell ``idle``)."""
        compat.publish_status(self, "idle", "shell", parent)

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
            self.clears_on_the_way.arrived()  # the lock is held or awaited from here on
            async with compat.main_shell_lock(self):
                previous_ident, previous_parent = compat.shell_parent(self)
                self.set_parent(ident, parent, channel="shell")
                try:
                    content = self._clear()
                except Exception as exc:
                    self.log.exception("clear_request failed")
                    content = error_content(type(exc).__name__, safe_str(exc))
                finally:
                    self.set_parent(previous_ident, previous_parent, channel="shell")
            control_stream.io_loop.add_callback(
                self.session.send, control_stream, "clear_reply", content, parent, ident
            )

        self.clears_on_the_way.handed_over()
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

    # ------------------------------------------------------------------ debugging

    def post_mortem(self, msg_id: str) -> None:
        """Debug the last task that failed here, which must be ``msg_id`` (see
        :mod:`.postmortem`); ``TaskFuture.debug()`` runs this as a cell."""
        post_mortem(self.apply_runner, self.shell, msg_id)

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
        self.apply_runner.sigint_idle()  # an interrupt must not cut the reply short
        shared_memory.discard(msg["content"])
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
        header = peek_header(self.session, msg) or {}
        try:
            if subshell_id is None or concurrent:
                await super().dispatch_shell(msg, subshell_id=subshell_id, concurrent=concurrent)
                return
            with self.namespace_gate.running():
                await super().dispatch_shell(msg, subshell_id=subshell_id, concurrent=concurrent)
        finally:
            if header.get("subshell_id") is None:
                self.main_shell_queue.handled(str(header.get("session")))

    async def shell_channel_thread_main(self, msg: list[Any]) -> None:
        """ipykernel's routing of shell messages to subshells, after answering malformed
        ones and ``kernel_info_request``.

        ipykernel would log a message it cannot deserialize and drop it, so
        its sender would wait for a reply forever.  A ``kernel_info_request``
        from a client with nothing waiting for the main shell is answered
        here, on the shell channel's thread, whatever the main shell runs (see
        :mod:`.shell_order`).
        """
        if self._reject_malformed(msg, self.shell_stream, "shell"):
            return
        header = peek_header(self.session, msg) or {}
        client = str(header.get("session"))
        if header.get("msg_type") == "kernel_info_request" and not (
            self.main_shell_queue.waiting(client)
        ):
            async with self.shell_channel_thread.asyncio_lock:
                self._answer_kernel_info(msg)
            return
        if header.get("subshell_id") is None:
            self.main_shell_queue.routed(client)
        await super().shell_channel_thread_main(msg)

    def _answer_kernel_info(self, frames: list[Any]) -> None:
        """Reply to a ``kernel_info_request`` from the shell channel's thread."""
        try:
            idents, rest = self.session.feed_identities(frames, copy=False)
            parent = self.session.deserialize(rest, content=True, copy=False)
        except Exception:  # a bad signature, as ipykernel's own routing would find
            self.log.error("Invalid message", exc_info=True)
            return
        compat.publish_status(self, "busy", "shell", parent)
        content = {"status": "ok", **self.kernel_info}
        self.session.send(self.shell_stream, "kernel_info_reply", content, parent, idents)
        compat.publish_status(self, "idle", "shell", parent)

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
