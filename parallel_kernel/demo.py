"""``parallel-kernel demo``: start local engines and run a small job through apply_request.

The demo uses nothing but jupyter_client and :mod:`parallel_kernel.serialize`,
so it doubles as an example of driving the kernel from a plain script: start
kernels from the kernelspec, send ``apply_request`` messages, read the replies
and the output each task printed.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from typing import Any

import cloudpickle
from jupyter_client.manager import KernelManager

from . import serialize

# The tasks below are defined in this module, which the engines could import;
# sending them by value instead makes them behave like functions written in a
# script or notebook: their globals are the engine's namespace.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

READY_TIMEOUT = 60
REPLY_TIMEOUT = 120


def count_primes(start: int, stop: int) -> int:
    """Count primes in ``[start, stop)`` by trial division (deliberately CPU-bound)."""
    global tasks_done
    count = 0
    for n in range(max(start, 2), stop):
        if all(n % d for d in range(2, int(n**0.5) + 1)):
            count += 1
    tasks_done = globals().get("tasks_done", 0) + 1  # engine state, kept between tasks
    print(f"primes in [{start:,}, {stop:,}): {count:,}")
    return count


def tasks_done_here() -> int:
    """Read a variable that earlier tasks left in the engine's namespace."""
    return tasks_done


def fail() -> None:
    """A task that raises, to show how remote errors come back."""
    raise ValueError("this task fails on purpose")


class Engine:
    """One kernel started from a kernelspec, and a blocking client to it."""

    def __init__(self, kernel_name: str, engine_id: int) -> None:
        self.engine_id = engine_id
        self.manager = KernelManager(kernel_name=kernel_name)
        # CurveZMQ, which the kernelspec declares: the engines' traffic is encrypted.
        self.manager.start_kernel(
            transport_encryption="auto",
            extra_arguments=[
                f"--ParallelKernel.engine_id={engine_id}",
                "--HistoryManager.hist_file=:memory:",
            ],
        )
        self.client = self.manager.client()
        self.client.start_channels()

    def send(self, f: Any, *args: Any) -> str:
        """Send ``apply_request`` for ``f(*args)``; return its msg_id."""
        content, buffers = serialize.pack_apply(f, args)
        msg = self.client.session.msg("apply_request", content)
        msg["buffers"] = buffers
        self.client.shell_channel.send(msg)
        return msg["header"]["msg_id"]

    def replies(self, msg_ids: set[str]) -> dict[str, dict[str, Any]]:
        """Wait for the replies to ``msg_ids`` and for all their output."""
        replies: dict[str, dict[str, Any]] = {}
        while len(replies) < len(msg_ids):
            reply = self.client.get_shell_msg(timeout=REPLY_TIMEOUT)
            replies[reply["parent_header"]["msg_id"]] = reply
        idle: set[str] = set()
        output: dict[str, list[str]] = defaultdict(list)
        while not msg_ids <= idle:
            msg = self.client.get_iopub_msg(timeout=REPLY_TIMEOUT)
            parent = msg["parent_header"].get("msg_id")
            if parent not in msg_ids:
                continue
            if msg["msg_type"] == "stream":
                output[parent].append(msg["content"]["text"])
            elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                idle.add(parent)
        for msg_id, reply in replies.items():
            reply["output"] = "".join(output[msg_id])
        return replies

    def stop(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=False)


def run_demo(engines: int = 2, kernel_name: str = "parallel", limit: int = 400_000) -> int:
    """Run the demo on ``engines`` local engines; return an exit status."""
    print(f"Starting {engines} engines from kernelspec {kernel_name!r} ...")
    t0 = time.perf_counter()
    pool: list[Engine] = []
    try:
        for i in range(engines):
            pool.append(Engine(kernel_name, i))
        for engine in pool:
            engine.client.wait_for_ready(timeout=READY_TIMEOUT)
        encrypted = all(e.manager.get_connection_info().get("curve_publickey") for e in pool)
        print(
            f"  ready in {time.perf_counter() - t0:.2f} s"
            + (", traffic encrypted with CurveZMQ" if encrypted else "")
        )
        for engine in pool:
            info = engine.client.kernel_info(reply=True, timeout=READY_TIMEOUT)["content"]
            print(
                f"  engine {info['parallel']['engine_id']}: uuid {info['parallel']['engine_uuid']}"
            )

        chunks = 8 * engines
        step = limit // chunks
        ranges = [(i * step, (i + 1) * step) for i in range(chunks)]
        print(f"\nCounting primes below {limit:,} in {chunks} tasks, pipelined to the engines:")
        t0 = time.perf_counter()
        sent: dict[str, tuple[Engine, tuple[int, int]]] = {}
        for i, bounds in enumerate(ranges):
            engine = pool[i % engines]
            sent[engine.send(count_primes, *bounds)] = (engine, bounds)
        total = 0
        for engine in pool:
            mine = {msg_id for msg_id, (owner, _) in sent.items() if owner is engine}
            for reply in engine.replies(mine).values():
                meta = reply["metadata"]
                result = serialize.unpack_result(reply["content"], reply["buffers"])
                total += result
                print(
                    f"  engine {meta['engine_id']}  {meta['started'][11:23]}"
                    f" -> {meta['completed'][11:23]}  printed: {reply['output'].strip()}"
                )
        elapsed = time.perf_counter() - t0
        print(f"  total: {total:,} primes in {elapsed:.2f} s on {engines} engines")

        print("\nEngine state survives between tasks:")
        for engine in pool:
            msg_id = engine.send(tasks_done_here)
            reply = engine.replies({msg_id})[msg_id]
            done = serialize.unpack_result(reply["content"], reply["buffers"])
            print(f"  engine {engine.engine_id} ran {done} tasks")

        print("\nA failing task comes back as an error reply; the engine keeps serving:")
        msg_id = pool[0].send(fail)
        content = pool[0].replies({msg_id})[msg_id]["content"]
        print(f"  {content['status']}: {content['ename']}: {content['evalue']}")
        msg_id = pool[0].send(count_primes, 0, 100)
        reply = pool[0].replies({msg_id})[msg_id]
        print(f"  next task: {serialize.unpack_result(reply['content'], reply['buffers'])} primes")
    finally:
        for engine in pool:
            engine.stop()
    print("\nDone.")
    return 0
