"""``parallel-kernel console``: a terminal console in a subshell of a running kernel.

A kernel subshell (ipykernel 7, JEP 91) runs code on a thread of its own, so
a console attached to one answers while the kernel's main shell is busy:
with a task on an engine, with a long cell in a notebook.  That is the way to
look at the globals tasks left, at module state or at memory use while a long
task runs.  ``jupyter console --existing`` talks to the main shell (it waits
for the task); this command asks the kernel for a subshell, runs
``jupyter console`` with every shell message addressed to it, and deletes the
subshell when the console exits.  It never shuts the kernel down.

Reading is safe; changing what a running task uses is at the user's risk,
exactly as with two threads of one program.
"""

from __future__ import annotations

import queue
import time
from typing import Any

try:
    from jupyter_console.app import ZMQTerminalIPythonApp
except ImportError as exc:  # an optional dependency: the "console" extra
    raise ImportError(
        "parallel-kernel console needs jupyter_console: pip install 'parallel-kernel[console]'"
    ) from exc

#: Seconds the kernel has to answer a subshell request.
CONTROL_WAIT = 10.0
#: What leaves the console (the kernel keeps running).
LEAVE = frozenset({"exit", "exit()", "quit", "quit()"})


def control_request(client: Any, msg_type: str, content: dict[str, Any]) -> dict[str, Any]:
    """Send a control request and return its reply's content (``TimeoutError`` if none)."""
    request = client.session.msg(msg_type, content)
    client.control_channel.send(request)
    deadline = time.monotonic() + CONTROL_WAIT
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            reply = client.control_channel.get_msg(timeout=remaining)
        except queue.Empty:
            break
        if reply["parent_header"].get("msg_id") == request["header"]["msg_id"]:
            return reply["content"]
    raise TimeoutError(f"the kernel did not answer {msg_type} within {CONTROL_WAIT:g} s")


def create_subshell(client: Any) -> str:
    """Ask the kernel for a new subshell; its id (``RuntimeError`` if the kernel has none)."""
    content = control_request(client, "create_subshell_request", {})
    subshell_id = content.get("subshell_id")
    if content.get("status") != "ok" or not isinstance(subshell_id, str):
        raise RuntimeError(
            "this kernel cannot create a subshell (kernel subshells need ipykernel 7): "
            f"{content.get('evalue', content)}"
        )
    return subshell_id


class SubshellConsoleApp(ZMQTerminalIPythonApp):
    """``jupyter console --existing FILE`` whose shell messages go to a new subshell."""

    name = "parallel-kernel-console"
    description = __doc__
    subshell_id: str | None = None

    def init_kernel_client(self) -> None:
        """Connect, create the subshell and address every shell message to it."""
        super().init_kernel_client()
        client = self.kernel_client
        self.subshell_id = subshell_id = create_subshell(client)
        make_header = client.session.msg_header

        def msg_header(msg_type: str) -> dict[str, Any]:
            return {**make_header(msg_type), "subshell_id": subshell_id}

        client.session.msg_header = msg_header

    def init_shell(self) -> None:
        """jupyter console's shell, whose ``exit`` and ``quit`` leave the console only.

        Sent to the kernel, they would stop the kernel itself (ipykernel's
        ``exit_now``), and the kernel is not this console's.
        """
        super().init_shell()
        shell = self.shell
        run_cell = shell.run_cell

        def run_cell_or_leave(cell: str, store_history: bool = True) -> Any:
            if cell.strip() in LEAVE:
                shell.ask_exit()
                return None
            return run_cell(cell, store_history)

        shell.run_cell = run_cell_or_leave

    def start(self) -> None:
        """Run the console; delete the subshell when it exits."""
        try:
            super().start()
        finally:
            if self.subshell_id is not None:
                control_request(
                    self.kernel_client,
                    "delete_subshell_request",
                    {"subshell_id": self.subshell_id},
                )


def main(connection_file: str, extra: list[str]) -> None:
    """Run the console on the kernel of ``connection_file`` (``extra``: console options)."""
    SubshellConsoleApp.launch_instance(argv=["--existing", connection_file, *extra])
