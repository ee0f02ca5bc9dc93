"""``parallel-kernel demo``: start local engines and run a small job on them with a Pool.

It shows the main things the package does: engines started from the kernelspec,
tasks sent as ``apply_request``s and pipelined to the engines with a progress
bar, what each task printed and where it ran, engine state that survives
between tasks, and a failing task that comes back as an error while the
engines keep serving.
"""

from __future__ import annotations

import sys
import time

import cloudpickle

# The tasks below are defined in this module, which the engines could import;
# sending them by value instead makes them behave like functions written in a
# script or notebook: their globals are the engine's namespace.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


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


def run_demo(engines: int = 2, kernel_name: str = "parallel", limit: int = 400_000) -> int:
    """Run the demo on ``engines`` local engines; return an exit status."""
    from .pool import Pool

    print(f"Starting {engines} engines from kernelspec {kernel_name!r} ...")
    t0 = time.perf_counter()
    with Pool(engines, kernel_name=kernel_name) as pool:
        print(f"  ready in {time.perf_counter() - t0:.2f} s")
        for engine in pool.engines:
            print(f"  engine {engine.id}: uuid {engine.uuid}")
            print(f"    inspect it: jupyter console --existing {engine.connection_file}")

        chunks = 8 * engines
        step = limit // chunks
        print(f"\nCounting primes below {limit:,} in {chunks} tasks, pipelined to the engines:")
        t0 = time.perf_counter()
        futures = [pool.submit(count_primes, i * step, (i + 1) * step) for i in range(chunks)]
        from .pool.futures import wait

        wait(futures, progress={"desc": "  tasks", "file": sys.stdout, "ascii": True})
        for future in futures:
            started, completed = future.metadata["started"], future.metadata["completed"]
            print(
                f"  engine {future.engine_id}  {started[11:23]} -> {completed[11:23]}"
                f"  printed: {future.stdout.strip()}"
            )
        total = sum(f.result() for f in futures)
        elapsed = time.perf_counter() - t0
        print(f"  total: {total:,} primes in {elapsed:.2f} s on {engines} engines")

        print("\nThe same count with map, batched automatically:")
        t0 = time.perf_counter()
        starts = range(0, limit, step)
        total = sum(pool.map(count_primes, starts, [s + step for s in starts]))
        print(f"  total: {total:,} primes in {time.perf_counter() - t0:.2f} s")

        print("\nEngine state survives between tasks:")
        for engine_id, done in enumerate(pool.broadcast(tasks_done_here)):
            print(f"  engine {engine_id} ran {done} tasks")

        print("\nA failing task raises its own exception here; the engines keep serving:")
        try:
            pool.submit(fail).result()
        except ValueError as error:
            print(f"  {type(error).__name__}: {error} (raised on engine {error.engine_id})")
        print(f"  next task: {pool.submit(count_primes, 0, 100).result()} primes")
    print("\nDone.")
    return 0
