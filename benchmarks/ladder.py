"""Where a small task's round trip goes: a ladder of latency floors, measured in one run.

``python -m benchmarks.ladder [--rounds N]`` times a sequential no-op round
trip on one worker, adding one layer at a time, from a bare ZMQ echo up to our
``Pool``, with ``ProcessPoolExecutor`` beside them:

1. ``zmq``: a DEALER/ROUTER echo over an ipc socket, sent and received in the
   calling thread (the transport alone);
2. ``zmq + client thread``: the same echo driven the way a pool must be when
   it serves scripts, notebooks and asyncio code alike: the caller hands the
   request to a background event-loop thread and waits on a
   ``concurrent.futures.Future`` that the loop thread resolves;
3. ``+ signed Jupyter messages``: the echo server and the client encode,
   sign, check and decode a real Jupyter message each way (HMAC-SHA256, JSON
   headers, one ZMQ frame per part), with the codec of our task channel;
4. ``... packed in one frame``: the same messages in the codec's compact
   framing, as the pool sends them;
5. ``+ pickled call``: the server unpickles a function and its arguments,
   calls it and pickles the result, as an engine does;
6. ``parallel_kernel Pool``: the real thing (scheduling, futures, a
   ParallelKernel with its namespace, abort and interrupt bookkeeping).

Each step's increase is what that layer costs; steps 1 to 4 are the floor
that any Jupyter-protocol pool with a background client thread pays.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import zmq

from .workloads import noop

SERVER = """
import pickle, sys, zmq
from jupyter_client.session import Session
from parallel_kernel import wire

endpoint, mode = sys.argv[1], sys.argv[2]
socket = zmq.Context().socket(zmq.ROUTER)
socket.bind(endpoint)
codec = wire.Codec(Session(key=b"ladder-key"))
print("ready", flush=True)
while True:
    frames = wire.receive(socket) if wire.readable(socket) else socket.recv_multipart(copy=False)
    if mode == "raw":
        socket.send_multipart(frames, copy=False)
        continue
    idents, msg = codec.decode(frames)
    result = []
    if mode == "call":
        f, args = pickle.loads(msg["buffers"][0])
        result = [pickle.dumps(f(*args), protocol=5)]
    _, reply = codec.encode(
        "apply_reply",
        {"status": "ok"},
        parent=msg["raw_header"],
        metadata={},
        idents=idents,
        buffers=result,
        compact=msg["compact"],
    )
    codec.send(socket, reply)
"""


class _Echo:
    """A client of the echo server, driven from the calling thread or from a loop thread."""

    def __init__(self, mode: str) -> None:
        from jupyter_client.session import Session

        from parallel_kernel import wire

        self.wire = wire
        self.mode = mode
        self.directory = tempfile.TemporaryDirectory(prefix="ladder-")
        endpoint = f"ipc://{self.directory.name}/echo"
        self.server = subprocess.Popen(
            [sys.executable, "-c", SERVER, endpoint, mode], stdout=subprocess.PIPE, text=True
        )
        self.server.stdout.readline()
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.connect(endpoint)
        self.codec = wire.Codec(Session(key=b"ladder-key"))
        self.payload = __import__("pickle").dumps((noop, ()), protocol=5)

    def send(self) -> None:
        if self.mode == "raw":
            self.socket.send(b"x" * 64)
            return
        _, frames = self.codec.encode(
            "apply_request",
            {"kind": "ladder"},
            metadata={},
            buffers=[self.payload] if self.mode == "call" else [],
            compact=self.mode != "signed",
        )
        self.codec.send(self.socket, frames)

    def handle(self, frames: list[Any]) -> None:
        if self.mode != "raw":
            _, msg = self.codec.decode(frames)
            if self.mode == "call":
                __import__("pickle").loads(msg["buffers"][0])

    def round_trip(self) -> None:
        self.send()
        self.handle(self.socket.recv_multipart(copy=False))

    def close(self) -> None:
        self.socket.close(linger=0)
        self.context.term()
        self.server.kill()
        self.server.wait()
        self.directory.cleanup()


class _Threaded:
    """``_Echo`` driven from a background asyncio loop, as a pool's client thread does."""

    def __init__(self, echo: _Echo) -> None:
        self.echo = echo
        self.waiting: list[concurrent.futures.Future[None]] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        started = concurrent.futures.Future()
        self.loop.call_soon_threadsafe(self._start, started)
        started.result(10)

    def _start(self, started: concurrent.futures.Future[None]) -> None:
        self.loop.add_reader(self.echo.socket.getsockopt(zmq.FD), self._readable)
        started.set_result(None)

    def _readable(self) -> None:
        wire = self.echo.wire
        while wire.readable(self.echo.socket):
            self.echo.handle(wire.receive(self.echo.socket))
            self.waiting.pop(0).set_result(None)

    def _send(self, future: concurrent.futures.Future[None]) -> None:
        self.waiting.append(future)
        self.echo.send()
        self._readable()  # reading the events re-arms the edge-triggered descriptor

    def round_trip(self) -> None:
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.loop.call_soon_threadsafe(self._send, future)
        future.result(10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.echo.close()


def _median_us(round_trip: Callable[[], Any], rounds: int) -> float:
    for _ in range(max(50, rounds // 10)):
        round_trip()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        round_trip()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def _processpool(rounds: int) -> float:
    with ProcessPoolExecutor(1) as executor:
        return _median_us(lambda: executor.submit(noop).result(), rounds)


def _echo(rounds: int, mode: str, threaded: bool) -> float:
    echo = _Echo(mode)
    if not threaded:
        try:
            return _median_us(echo.round_trip, rounds)
        finally:
            echo.close()
    client = _Threaded(echo)
    try:
        return _median_us(client.round_trip, rounds)
    finally:
        client.close()


def _pool(rounds: int) -> float:
    from parallel_kernel import Pool

    with Pool(1) as pool:
        return _median_us(lambda: pool.submit(noop).result(), rounds)


#: The steps: label, and how to measure it given the number of rounds.
STEPS: list[tuple[str, Callable[[int], float]]] = [
    ("ProcessPoolExecutor(1)", _processpool),
    ("zmq echo (ipc), calling thread", lambda n: _echo(n, "raw", threaded=False)),
    ("zmq echo + client loop thread", lambda n: _echo(n, "raw", threaded=True)),
    ("+ signed Jupyter messages both ways", lambda n: _echo(n, "signed", threaded=True)),
    ("... packed in one frame", lambda n: _echo(n, "compact", threaded=True)),
    ("+ pickled call on the server", lambda n: _echo(n, "call", threaded=True)),
    ("parallel_kernel Pool(1)", _pool),
]


def measure(rounds: int) -> list[tuple[str, float]]:
    """The ladder's steps and their median round trip in microseconds.

    Each step runs in a process of its own: measured one after another in one
    process, a step's latency depends on the steps before it.
    """
    steps = []
    for index, (label, _) in enumerate(STEPS):
        child = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.ladder",
                "--rounds",
                str(rounds),
                "--step",
                str(index),
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        steps.append((label, float(child.stdout.strip())))
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ladder", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3000, help="round trips per step")
    parser.add_argument("--step", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import cloudpickle

    from . import workloads

    cloudpickle.register_pickle_by_value(workloads)
    if args.step is not None:
        print(STEPS[args.step][1](args.rounds))
        return 0
    steps = measure(args.rounds)
    reference = steps[0][1]
    print("| step | median µs | ratio to ProcessPoolExecutor |\n|---|---:|---:|")
    for label, value in steps:
        print(f"| {label} | {value:,.0f} | {value / reference:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
