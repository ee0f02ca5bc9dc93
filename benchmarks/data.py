"""Data kept where it is used: large values placed on engines and passed between tasks.

Measured for our pool, Dask and Ray (when installed), each in a process of
its own, in the same run as the rest of the suite:

* **broadcast**: one array (1 GiB; 256 MiB with ``--quick``) placed on every
  one of the 2 local workers: our ``scatter(a, broadcast=True)``, Dask's
  ``scatter(a, broadcast=True)``, Ray's ``put``; against one numpy copy of
  the array into new memory (the ``memcpy`` floor) and against our
  ``Pool.push`` over sockets (as before shared memory: the array sent to each
  engine; also reported through shared memory); plus how many bytes of
  shared memory hold it afterwards (once, not once per engine).  Our first
  broadcast writes into new shared memory; the next ones reuse the segment
  (see ``parallel_kernel.shared_memory``): both are reported.
* **chain**: ``f`` makes a 256 MiB array (64 MiB with ``--quick``), ``g``
  adds one to it, ``h`` sums a sample of it, each a task taking the previous
  one's future: wall time, and how many bytes of the intermediates reached
  the client (ours: fetches counted on the engines).
"""

from __future__ import annotations

import gc
import logging
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

MiB = 1 << 20
#: Workers of every system.
WORKERS = 2


def make(nbytes: int) -> np.ndarray:
    """The first step of the chain: a new array."""
    return np.ones(nbytes, dtype=np.uint8)


def step(x: np.ndarray) -> np.ndarray:
    """The middle step: a new array of the same size."""
    return x + 1


def total(x: np.ndarray) -> int:
    """The last step: a small result."""
    return int(x[:: 1 << 12].sum())


def nothing() -> None:
    """A task that does nothing (to wait until workers serve)."""


def _timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def memcpy(nbytes: int, rounds: int = 3) -> float:
    """Seconds to copy an array of ``nbytes`` into new memory (median)."""
    a = np.ones(nbytes, dtype=np.uint8)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        b = a.copy()
        times.append(time.perf_counter() - started)
        del b
    return statistics.median(times)


def _mapped_segments() -> dict[int, int]:
    """Runs on an engine: the shared memory segments it maps (inode -> size)."""
    from parallel_kernel import shared_memory

    folder = shared_memory.directory()
    found = {}
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if folder is not None and len(fields) == 6 and fields[5].startswith(f"{folder}/"):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                found[int(fields[4])] = max(found.get(int(fields[4]), 0), end - start)
    return found


def _shared_bytes(pool: Any) -> int:
    """Bytes of the distinct shared memory segments the engines of ``pool`` map."""
    sizes: dict[int, int] = {}
    for mapped in pool.broadcast(_mapped_segments):
        sizes.update(mapped)
    return sum(sizes.values())


def ours(broadcast_bytes: int, chain_bytes: int) -> dict[str, float]:
    from parallel_kernel import Pool

    out: dict[str, float] = {}
    a = np.ones(broadcast_bytes, dtype=np.uint8)
    with Pool(WORKERS) as pool:
        pool.broadcast(nothing)

        def place() -> Any:
            placed = pool.scatter(a, broadcast=True)
            for future in [placed, *placed._replicas]:
                future.exception(120)
            return placed

        times = []
        for _ in range(3):
            gc.collect()
            _wait_for_spares()
            started = time.perf_counter()
            placed = place()
            times.append(time.perf_counter() - started)
            out["broadcast_shared_bytes"] = _shared_bytes(pool)
            del placed
            gc.collect()
        out["broadcast_first_s"] = times[0]
        out["broadcast_again_s"] = statistics.median(times[1:])
        out["push_shared_s"] = _timed(lambda: pool.push({"a": a}))
        pool.push({"a": None})

        def fetches() -> int:
            return sum(pool.broadcast(_fetches_here))

        before = fetches()
        chain_times = []
        for _ in range(3):
            started = time.perf_counter()
            f = pool.submit(make, chain_bytes)
            g = pool.submit(step, f)
            h = pool.submit(total, g)
            h.result(120)
            chain_times.append(time.perf_counter() - started)
            if f.kept is None or g.kept is None:
                raise AssertionError("an intermediate of the chain came back to the client")
            del f, g, h
        out["chain_s"] = statistics.median(chain_times)
        out["chain_client_bytes"] = float(fetches() - before)  # fetches of intermediates
    with Pool(WORKERS, shared_memory=False) as pool:
        pool.broadcast(nothing)
        out["push_s"] = _timed(lambda: pool.push({"a": a}))
    return out


def _fetches_here() -> int:
    return get_ipython().kernel.kept.fetches  # type: ignore[name-defined]  # noqa: F821


def _wait_for_spares(timeout: float = 10.0) -> None:
    """Let the engines drop what the previous round placed (releases are not awaited),
    so the next round may write into the spare segment again."""
    from parallel_kernel import shared_memory

    folder = shared_memory.directory()
    deadline = time.monotonic() + timeout
    while folder is not None and time.monotonic() < deadline:
        links = []
        for name in os.listdir(folder):
            try:
                links.append(os.stat(folder / name).st_nlink)
            except OSError:
                continue
        if all(n == 1 for n in links):
            return
        time.sleep(0.05)


def dask(broadcast_bytes: int, chain_bytes: int) -> dict[str, float]:
    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)
    out: dict[str, float] = {}
    a = np.ones(broadcast_bytes, dtype=np.uint8)
    with (
        LocalCluster(
            n_workers=WORKERS, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.submit(nothing, pure=False).result()
        times = []
        for _ in range(3):
            started = time.perf_counter()
            placed = client.scatter(a, broadcast=True)
            times.append(time.perf_counter() - started)
            del placed
        out["broadcast_first_s"] = times[0]
        out["broadcast_again_s"] = statistics.median(times[1:])
        chain_times = []
        for _ in range(3):
            started = time.perf_counter()
            f = client.submit(make, chain_bytes, pure=False)
            g = client.submit(step, f, pure=False)
            client.submit(total, g, pure=False).result()
            chain_times.append(time.perf_counter() - started)
            del f, g
        out["chain_s"] = statistics.median(chain_times)
    return out


def ray(broadcast_bytes: int, chain_bytes: int) -> dict[str, float]:
    import ray as ray_module

    out: dict[str, float] = {}
    a = np.ones(broadcast_bytes, dtype=np.uint8)
    ray_module.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False)
    try:
        remote_make = ray_module.remote(make)
        remote_step = ray_module.remote(step)
        remote_total = ray_module.remote(total)
        ray_module.get(ray_module.remote(nothing).remote())
        times = []
        for _ in range(3):
            started = time.perf_counter()
            placed = ray_module.put(a)
            times.append(time.perf_counter() - started)
            del placed
        out["broadcast_first_s"] = times[0]
        out["broadcast_again_s"] = statistics.median(times[1:])
        chain_times = []
        for _ in range(3):
            started = time.perf_counter()
            ray_module.get(remote_total.remote(remote_step.remote(remote_make.remote(chain_bytes))))
            chain_times.append(time.perf_counter() - started)
        out["chain_s"] = statistics.median(chain_times)
    finally:
        ray_module.shutdown()
    return out


SYSTEMS: dict[str, Callable[[int, int], dict[str, float]]] = {
    "parallel_kernel": ours,
    "dask": dask,
    "ray": ray,
}


def sizes(quick: bool) -> tuple[int, int]:
    """Bytes of the broadcast array and of the chain's intermediates."""
    return (256 * MiB, 64 * MiB) if quick else (1024 * MiB, 256 * MiB)


def measure(name: str, quick: bool) -> dict[str, float]:
    """Measure system ``name`` (plus, for ours, the memcpy floor)."""
    broadcast_bytes, chain_bytes = sizes(quick)
    out = SYSTEMS[name](broadcast_bytes, chain_bytes)
    if name == "parallel_kernel":
        out["memcpy_s"] = memcpy(broadcast_bytes)
        out["broadcast_array_bytes"] = broadcast_bytes
    return out


def table(results: dict[str, dict[str, Any]], quick: bool) -> str:
    """A Markdown table of the data benchmarks."""
    broadcast_bytes, chain_bytes = sizes(quick)
    header = [
        "system",
        f"broadcast {broadcast_bytes // MiB} MiB s (first / again)",
        "shared memory after, in arrays",
        f"chain over {chain_bytes // MiB} MiB s",
        "intermediate bytes to client",
    ]
    rows = [header, ["---"] * len(header)]
    for name, r in results.items():
        if "error" in r:
            rows.append([name, "failed: " + str(r["error"]).splitlines()[0], "", "", ""])
            continue
        shared = r.get("broadcast_shared_bytes")
        received = r.get("chain_client_bytes")
        rows.append(
            [
                name,
                f"{r['broadcast_first_s']:.3f} / {r['broadcast_again_s']:.3f}",
                f"{shared / broadcast_bytes:.2f}" if shared is not None else "n/a",
                f"{r['chain_s']:.3f}",
                f"{received:.0f}" if received is not None else "n/a",
            ]
        )
    ours_result = results.get("parallel_kernel", {})
    if "memcpy_s" in ours_result:
        rows.append(["numpy copy (memcpy floor)", f"{ours_result['memcpy_s']:.3f}", "", "", ""])
        rows.append(
            [
                "parallel_kernel push to every engine (sockets / shared memory)",
                f"{ours_result['push_s']:.3f} / {ours_result['push_shared_s']:.3f}",
                "",
                "",
                "",
            ]
        )
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)
