"""Send a function to a parallel kernel from a plain script, with jupyter_client only.

    python examples/apply_from_script.py                      # starts its own kernel
    python examples/apply_from_script.py --existing FILE.json # uses a running kernel

The second form attaches to any running parallel kernel, for instance the one
behind a notebook (``%connect_info`` in the notebook prints its connection file);
the task then sees the notebook's variables.
"""

from __future__ import annotations

import argparse
import statistics

from jupyter_client import BlockingKernelClient
from jupyter_client.manager import KernelManager

from parallel_kernel import serialize

OFFSET = 100  # a global of this script; the function carries it to the kernel


def summarize(values: list[float]) -> dict:
    """Runs on the kernel: its globals are the kernel's namespace."""
    return {
        "mean": statistics.mean(values) + OFFSET,
        "notebook says": globals().get("shared_value", "<no shared_value here>"),
    }


def apply(client: BlockingKernelClient, f, *args, **kwargs):
    """Send one apply_request and return the function's result (or raise on error)."""
    content, buffers = serialize.pack_apply(f, args, kwargs)
    msg = client.session.msg("apply_request", content)
    msg["buffers"] = buffers
    client.shell_channel.send(msg)
    while True:
        reply = client.get_shell_msg(timeout=60)
        if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            break
    if reply["content"]["status"] != "ok":
        raise RuntimeError("\n".join(reply["content"].get("traceback", [])) or reply["content"])
    return serialize.unpack_result(reply["content"], reply["buffers"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--existing", metavar="FILE", help="connection file of a running kernel")
    args = parser.parse_args()

    manager = None
    if args.existing:
        client = BlockingKernelClient(connection_file=args.existing)
        client.load_connection_file()
    else:
        manager = KernelManager(kernel_name="parallel")
        manager.start_kernel()
        client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        print(apply(client, summarize, [1.0, 2.0, 3.0, 4.0]))
    finally:
        client.stop_channels()
        if manager is not None:
            manager.shutdown_kernel()


if __name__ == "__main__":
    main()
