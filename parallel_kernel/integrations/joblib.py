"""A joblib backend that runs ``joblib.Parallel`` batches on a :class:`~parallel_kernel.Pool`.

Importing this module registers the backend under the name ``"parallel_kernel"``::

    import joblib
    import parallel_kernel.integrations.joblib  # noqa: F401  (registers the backend)

    with joblib.parallel_config(backend="parallel_kernel", n_jobs=4):
        results = joblib.Parallel()(joblib.delayed(f)(x) for x in data)

With ``pool=an_existing_pool`` the backend uses that pool and leaves it
running; otherwise it starts ``n_jobs`` engines for each ``Parallel`` call and
stops them afterwards.  joblib must be importable on the engines.
"""

from __future__ import annotations

import os
from typing import Any

from joblib import register_parallel_backend
from joblib._parallel_backends import AutoBatchingMixin, ParallelBackendBase

from ..pool import Pool
from ..pool.futures import TaskFuture

NAME = "parallel_kernel"


class PoolBackend(AutoBatchingMixin, ParallelBackendBase):
    """joblib's backend interface on top of a Pool."""

    supports_retrieve_callback = True

    def __init__(self, pool: Pool | None = None, **kwargs: Any) -> None:
        self._pool_options = {
            key: kwargs.pop(key) for key in ("kernel_name", "hwm") if key in kwargs
        }
        super().__init__(**kwargs)
        self._pool = pool
        self._owns_pool = pool is None

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """How many tasks joblib may run at once: the pool's engines, or ``n_jobs``."""
        if self._pool is not None:
            return len(self._pool.engines)
        if n_jobs is None or n_jobs < 0:
            return os.cpu_count() or 1
        return max(1, n_jobs)

    def configure(self, n_jobs: int = 1, parallel: Any = None, **backend_kwargs: Any) -> int:
        """Start the pool for a ``Parallel`` call unless one was given; its engine count."""
        self.parallel = parallel
        if self._pool is None:
            self._pool = Pool(self.effective_n_jobs(n_jobs), **self._pool_options)
        return self.effective_n_jobs(n_jobs)

    def submit(self, func: Any, callback: Any = None) -> TaskFuture:
        """Run one joblib batch on the pool; ``callback(future)`` once it is done."""
        future = self._pool.submit(func)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, out: TaskFuture) -> Any:
        """The batch's results, or its own exception (joblib re-raises it as is)."""
        return out.result()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """A batch failed: cancel what has not started, and stop the pool unless reused."""
        if self._pool is not None:
            for future in self._pool.futures():
                future.cancel()
        if not ensure_ready:
            self.terminate()

    def terminate(self) -> None:
        """Stop a pool this backend started (what still runs finishes, queued work is dropped)."""
        if self._owns_pool and self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def register() -> None:
    """Register the backend with joblib as ``"parallel_kernel"`` (done on import)."""
    register_parallel_backend(NAME, PoolBackend)


register()
