"""joblib.Parallel on the pool, through the registered backend."""

from __future__ import annotations

import joblib
import pytest

import parallel_kernel.integrations.joblib  # noqa: F401  (registers the backend)
from parallel_kernel import Pool


def square(x):
    return x * x


def test_parallel_on_an_existing_pool() -> None:
    with Pool(2) as pool:
        with joblib.parallel_config(backend="parallel_kernel", pool=pool):
            results = joblib.Parallel(n_jobs=2)(joblib.delayed(square)(i) for i in range(200))
        assert results == [i * i for i in range(200)]
        assert all(e.state != "stopped" for e in pool.engines)
        assert pool.submit(abs, -1).result(30) == 1


def test_parallel_starts_and_stops_its_own_pool() -> None:
    with joblib.parallel_config(backend="parallel_kernel", n_jobs=2):
        results = joblib.Parallel()(joblib.delayed(square)(i) for i in range(20))
    assert results == [i * i for i in range(20)]


def test_errors_propagate() -> None:
    def fail(x):
        raise ValueError(f"bad {x}")

    with (
        Pool(1) as pool,
        joblib.parallel_config(backend="parallel_kernel", pool=pool),
        pytest.raises(ValueError, match="bad 0"),
    ):
        # joblib carries the task's exception back as a value and re-raises it here
        joblib.Parallel(n_jobs=1)(joblib.delayed(fail)(i) for i in range(3))
