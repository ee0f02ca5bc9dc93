"""Values lost with their engine, made again from the task that produced them.

A result kept on an engine (see :mod:`.kept`) dies with that engine.  When
the task that produced it may run again (it was submitted with ``retries``
and has some left), the pool keeps its *recipe*: the request as submitted
(function, arguments) and its job's inputs and dependencies.  A task that
needs the lost value then waits for the recipe's task to run once more,
elsewhere, instead of failing; tasks that need the same lost value share that
one run, which uses up one of the producer's retries, and its own inputs, if
lost too, are made again the same way.  Without a recipe, or with no retries
left, the task fails with ``DependencyError`` naming the lost input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import protocol
from . import futures
from .control import TaskHandle
from .futures import TaskFuture
from .scheduler import Dependency, Job
from .tasks import Task

if TYPE_CHECKING:
    from .core import PoolCore


@dataclass
class Recipe:
    """What it takes to run a task again."""

    content: dict[str, Any]
    buffers: list[Any]
    inputs: list[tuple[str, Any]] = field(default_factory=list)
    after: Dependency | None = None
    follow: Dependency | None = None
    #: Runs it may still have.
    retries: int = 0
    retry_on_error: bool = False
    timeout: float | None = None
    kind: str | None = None


def recipe_of(task: Task) -> Recipe | None:
    """The recipe of ``task`` if it may run again (an ``apply_request`` with retries left)."""
    if task.msg_type != protocol.APPLY_REQUEST or task.retries <= 0:
        return None
    job = task.job
    return Recipe(
        task.content,
        task.buffers,
        list(job.inputs),
        job.after,
        job.follow,
        task.retries,
        task.retry_on_error,
        task.timeout,
        task.kind,
    )


class Recomputer:
    """Runs recipes again for the values that tasks need and engines lost (loop thread)."""

    def __init__(self, core: PoolCore) -> None:
        self.core = core

    def redo(self, future: TaskFuture) -> TaskFuture | None:
        """A future of ``future``'s value made again (one per lost value), or ``None``
        if it cannot be made again."""
        again = getattr(future, "_again", None)
        if again is not None and not (again.done() and again.exception() is not None):
            return again
        kept = future._kept
        recipe = kept.recipe if kept is not None else None
        if recipe is None or recipe.retries <= 0:
            return None
        again = self._submit(recipe)
        recipe.retries -= 1
        future._again = again
        again.add_done_callback(lambda done: self._adopt(future, done))
        return again

    def _submit(self, recipe: Recipe) -> TaskFuture:
        core = self.core
        future = TaskFuture()
        job = Job(after=recipe.after, follow=recipe.follow, inputs=list(recipe.inputs))
        task = Task(
            future,
            protocol.APPLY_REQUEST,
            recipe.content,
            recipe.buffers,
            job,
            retries=recipe.retries - 1,
            retry_on_error=recipe.retry_on_error,
            timeout=recipe.timeout,
            kind=recipe.kind,
        )
        futures.attach(future, TaskHandle(core.control, task), core.token)
        core.futures.add(future)
        needed = [f for d in (job.after, job.follow) if d for f in d.futures]
        for dep in needed + [f for _, f in job.inputs]:
            dep.add_done_callback(lambda _f: core.bridge.call_soon(core.dispatch.schedule))
        core.dispatch.submit(task)
        return future

    def _adopt(self, future: TaskFuture, again: TaskFuture) -> None:
        """``future``'s value is now where ``again`` put it (if it was made again);
        the tasks that waited for it may go."""
        if not again.cancelled() and again.exception() is None:
            future._kept = again._kept
            future._result = again._result
        self.core.bridge.call_soon(self.core.dispatch.schedule)
