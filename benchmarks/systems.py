"""The systems under test, behind one small interface.

Each system starts the same number of workers, runs the functions of
:mod:`benchmarks.workloads` and hands back results; :mod:`benchmarks.suite`
does the timing, so every system is measured by the same code.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
from abc import ABC, abstractmethod
from typing import Any

from parallel_kernel.pool.launch import HUGE_PAGES_TUNABLE

from .workloads import noop, worker_pid

#: Seconds any one result may take before the system is reported as failed
#: (a peer that loses a task must not stall the whole run).
RESULT_TIMEOUT = 120


class System(ABC):
    """One way of running Python functions on ``workers`` worker processes."""

    #: Short name used on the command line and in the JSON file.
    name: str
    #: Human-readable label for the table and the plot.
    label: str
    #: Whether :meth:`map_many` exists (a batched map), besides single submits.
    has_map = False
    #: Environment variables of the process that measures it (and of its workers).
    environment: dict[str, str] = {}

    def __init__(self, workers: int) -> None:
        self.workers = workers

    @abstractmethod
    def start(self) -> None:
        """Start the workers (returning as soon as the system says it can take work)."""

    @abstractmethod
    def submit(self, fn: Any, *args: Any) -> Any:
        """Submit ``fn(*args)``; return a handle for :meth:`result`."""

    @abstractmethod
    def result(self, handle: Any) -> Any:
        """Wait for a submitted task and return its result."""

    def run_many(self, n: int) -> None:
        """Submit ``n`` no-op tasks at once, then wait for all their results."""
        handles = [self.submit(noop) for _ in range(n)]
        for handle in handles:
            self.result(handle)

    def map_many(self, n: int) -> None:
        """Run ``n`` no-op tasks through the system's map."""
        raise NotImplementedError

    @abstractmethod
    def worker_pids(self) -> list[int]:
        """Process ids of the workers (for memory readings)."""

    @abstractmethod
    def close(self) -> None:
        """Stop the workers."""


class _Executor(System):
    """A system that is a ``concurrent.futures.Executor``: ``self.executor`` once started."""

    has_map = True
    executor: Any

    def submit(self, fn: Any, *args: Any) -> Any:
        return self.executor.submit(fn, *args)

    def result(self, handle: Any) -> Any:
        return handle.result(timeout=RESULT_TIMEOUT)

    def map_many(self, n: int) -> None:
        for _ in self.executor.map(noop, range(n), timeout=RESULT_TIMEOUT):
            pass

    def close(self) -> None:
        self.executor.shutdown()


class ParallelKernelPool(_Executor):
    """Our pool as a user gets it: local engines on ipc sockets."""

    name = "parallel_kernel"
    label = "parallel_kernel Pool"
    transport = "auto"
    encryption = "auto"

    def start(self) -> None:
        from parallel_kernel import Pool

        self.executor = Pool(
            self.workers, transport=self.transport, transport_encryption=self.encryption
        )

    def worker_pids(self) -> list[int]:
        return [
            self.executor.submit(worker_pid, engine=engine.id).result(60)
            for engine in self.executor.engines
        ]


class ParallelKernelPoolTcp(ParallelKernelPool):
    """Our pool on plain loopback TCP, the transport of ipyparallel, Dask and the zmq floor."""

    name = "parallel_kernel-tcp"
    label = "parallel_kernel Pool (TCP)"
    transport = "tcp"
    encryption = "disabled"


class ParallelKernelPoolCurve(ParallelKernelPool):
    """Our pool on CurveZMQ-encrypted TCP, as for engines on other hosts."""

    name = "parallel_kernel-curve"
    label = "parallel_kernel Pool (CurveZMQ)"
    transport = "tcp"
    encryption = "required"


class ProcessPool(_Executor):
    name = "processpool"
    label = "ProcessPoolExecutor"

    def start(self) -> None:
        from concurrent.futures import ProcessPoolExecutor

        self.executor = ProcessPoolExecutor(self.workers)

    def worker_pids(self) -> list[int]:
        return list(self.executor._processes)


class Dask(System):
    name = "dask"
    label = "dask LocalCluster"
    has_map = True

    def start(self) -> None:
        from distributed import Client, LocalCluster

        logging.getLogger("distributed").setLevel(logging.ERROR)
        self.cluster = LocalCluster(
            n_workers=self.workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        )
        self.client = Client(self.cluster)

    def submit(self, fn: Any, *args: Any) -> Any:
        return self.client.submit(fn, *args, pure=False)

    def result(self, handle: Any) -> Any:
        return handle.result(timeout=RESULT_TIMEOUT)

    def run_many(self, n: int) -> None:
        self.client.gather([self.client.submit(noop, pure=False) for _ in range(n)])

    def map_many(self, n: int) -> None:
        self.client.gather(self.client.map(noop, range(n), pure=False))

    def worker_pids(self) -> list[int]:
        return list(self.client.run(worker_pid).values())

    def close(self) -> None:
        self.client.close()
        self.cluster.close()


class _Ipyparallel(System):
    def start(self) -> None:
        import ipyparallel

        self.cluster = ipyparallel.Cluster(n=self.workers, log_level=logging.ERROR)
        self.client = self.cluster.start_and_connect_sync()
        self.client.wait_for_engines(self.workers, timeout=120)

    def result(self, handle: Any) -> Any:
        return handle.get(timeout=RESULT_TIMEOUT)

    def worker_pids(self) -> list[int]:
        return list(self.client[:].apply_sync(worker_pid))

    def close(self) -> None:
        self.client.close()
        self.cluster.stop_cluster_sync()


class IpyparallelLoadBalanced(_Ipyparallel):
    name = "ipyparallel-lb"
    label = "ipyparallel load-balanced"

    def start(self) -> None:
        super().start()
        self.view = self.client.load_balanced_view()

    def submit(self, fn: Any, *args: Any) -> Any:
        return self.view.apply_async(fn, *args)


class IpyparallelDirect(_Ipyparallel):
    name = "ipyparallel-direct"
    label = "ipyparallel direct view"

    def start(self) -> None:
        super().start()
        self.views = [self.client[i] for i in self.client.ids]
        self.next = 0

    def submit(self, fn: Any, *args: Any) -> Any:
        """Round robin over single-engine direct views (engine 0 when tasks are sequential)."""
        view = self.views[self.next % len(self.views)]
        self.next += 1
        return view.apply_async(fn, *args)

    def run_many(self, n: int) -> None:
        self.next = 0
        super().run_many(n)
        self.next = 0


ECHO_SERVER = """
import sys, zmq
socket = zmq.Context().socket(zmq.ROUTER)
socket.bind(sys.argv[1])
print(socket.last_endpoint.decode(), flush=True)
while True:
    socket.send_multipart(socket.recv_multipart(copy=False), copy=False)
"""


class RawZmq(System):
    """The floor: a DEALER/ROUTER echo between two processes, no signing, no pickling."""

    name = "zmq"
    label = "raw pyzmq echo, TCP (floor)"
    # both sides of the floor allocate with the setting the pool gives its engines
    environment = {"GLIBC_TUNABLES": HUGE_PAGES_TUNABLE}

    def endpoint(self) -> str:
        return "tcp://127.0.0.1:*"

    def start(self) -> None:
        import zmq

        self.server = subprocess.Popen(
            [sys.executable, "-c", ECHO_SERVER, self.endpoint()], stdout=subprocess.PIPE, text=True
        )
        endpoint = self.server.stdout.readline().strip()
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.rcvtimeo = RESULT_TIMEOUT * 1000  # a lost reply fails the system, not the run
        self.socket.connect(endpoint)

    def submit(self, fn: Any, *args: Any) -> Any:
        if args:
            self.socket.send(args[0], copy=False)
        else:
            self.socket.send(b"x" * 64)

    def result(self, handle: Any) -> Any:
        return self.socket.recv(copy=False)

    def run_many(self, n: int) -> None:
        # a window of messages in flight: past the high-water marks a ROUTER drops them
        window = 500
        for i in range(n):
            if i >= window:
                self.socket.recv(copy=False)
            self.socket.send(b"x" * 64)
        for _ in range(min(n, window)):
            self.socket.recv(copy=False)

    def worker_pids(self) -> list[int]:
        return [self.server.pid]

    def close(self) -> None:
        self.socket.close(linger=0)
        self.context.term()
        self.server.kill()
        self.server.wait()


class RawZmqIpc(RawZmq):
    """The floor on the transport of our default pool: a Unix socket."""

    name = "zmq-ipc"
    label = "raw pyzmq echo, ipc (floor)"

    def endpoint(self) -> str:
        self.directory = tempfile.TemporaryDirectory(prefix="bench-zmq-")
        return f"ipc://{self.directory.name}/echo"

    def close(self) -> None:
        super().close()
        self.directory.cleanup()


SYSTEMS: dict[str, type[System]] = {
    cls.name: cls
    for cls in (
        ParallelKernelPool,
        ParallelKernelPoolTcp,
        ParallelKernelPoolCurve,
        ProcessPool,
        IpyparallelLoadBalanced,
        IpyparallelDirect,
        Dask,
        RawZmq,
        RawZmqIpc,
    )
}
