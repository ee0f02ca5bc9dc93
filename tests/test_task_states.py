"""The task and engine state machines and the retry policy, without engines."""

from __future__ import annotations

import pytest

from parallel_kernel.pool import futures
from parallel_kernel.pool.engine_state import EngineRecord, EngineState
from parallel_kernel.pool.futures import TaskFuture
from parallel_kernel.pool.scheduler import Job, Scheduler
from parallel_kernel.pool.tasks import (
    Decision,
    Setback,
    StateError,
    Task,
    TaskState,
    decide,
    kind_of,
)


def make_task(**options: object) -> Task:
    return Task(TaskFuture(), "apply_request", {}, [], Job(), **options)


# -- tasks


def test_a_task_goes_from_pending_to_done_through_each_state() -> None:
    task = make_task()
    assert task.state is TaskState.PENDING
    attempt = task.send(0, "task", "m1")
    assert task.state is TaskState.SENT
    assert task.future.engine_id == 0
    assert task.future.msg_id == "m1"
    assert not task.future.running()
    assert task.start(attempt)
    assert task.state is TaskState.RUNNING
    assert task.future.running()
    assert task.answer(attempt, {"content": {"status": "ok"}})
    assert task.state is TaskState.ANSWERED
    assert task.finish()
    assert task.state is TaskState.DONE
    assert not task.finish()


def test_states_keep_their_string_values() -> None:
    assert TaskState.RUNNING == "running"
    assert EngineState.IDLE == "idle"
    assert f"{EngineState.RESTARTING}" == "restarting"


def test_a_reply_may_come_without_a_start() -> None:
    task = make_task()
    attempt = task.send(1, "shell", "m1")
    assert task.answer(attempt, {"content": {}})
    assert attempt.started
    assert task.state is TaskState.ANSWERED


def test_events_of_an_earlier_attempt_are_recognised_by_identity() -> None:
    task = make_task()
    first = task.send(0, "task", "same-id")
    task.retry()
    second = task.send(1, "task", "same-id")
    assert not first.current
    assert second.current
    assert not task.start(first)
    assert not task.answer(first, {"content": {}})
    assert task.state is TaskState.SENT
    assert task.answer(second, {"content": {}})


def test_a_retry_forgets_the_output_of_the_last_attempt() -> None:
    task = make_task()
    task.send(0, "task", "m1")
    task.future.stdout = "partial"
    task.future.outputs.append({"data": {}})
    task.retry()
    assert task.state is TaskState.PENDING
    assert task.attempt is None
    assert task.future.stdout == ""
    assert task.future.outputs == []
    assert task.attempts == 1


def test_illegal_moves_are_refused() -> None:
    task = make_task()
    with pytest.raises(StateError):
        task.retry()
    task.send(0, "task", "m1")
    with pytest.raises(StateError):
        task.send(1, "task", "m2")
    task.finish()
    with pytest.raises(StateError):
        task.retry()


def test_finishing_cancels_the_attempts_timer() -> None:
    class Timer:
        cancelled = False

        def cancel(self) -> None:
            self.cancelled = True

    task = make_task()
    attempt = task.send(0, "shell", "m1")
    attempt.timer = timer = Timer()
    task.finish()
    assert timer.cancelled
    assert attempt.timer is None


# -- the retry policy


def test_an_attempt_that_never_started_runs_elsewhere_without_using_a_retry() -> None:
    task = make_task(retries=0)
    task.send(3, "task", "m1")
    assert decide(task, Setback.NEVER_STARTED, 3) == Decision(retry=True, avoid=3)


def test_an_attempt_that_may_have_run_uses_a_retry_or_fails() -> None:
    task = make_task(retries=1)
    task.send(0, "task", "m1")
    assert decide(task, Setback.ENGINE_LOST, 0) == Decision(retry=True, consumes=True, avoid=0)
    task.retries = 0
    assert decide(task, Setback.ENGINE_LOST, 0) == Decision(retry=False)


def test_a_task_error_is_retried_only_with_retry_on_error() -> None:
    plain = make_task(retries=2)
    plain.send(0, "task", "m1")
    assert not decide(plain, Setback.TASK_ERROR, 0).retry
    eager = make_task(retries=2, retry_on_error=True)
    eager.send(0, "task", "m1")
    assert decide(eager, Setback.TASK_ERROR, 0) == Decision(retry=True, consumes=True, avoid=0)
    eager.retries = 0
    assert not decide(eager, Setback.TASK_ERROR, 0).retry


def test_a_timed_out_task_is_never_retried_on_its_error() -> None:
    task = make_task(retries=2, retry_on_error=True, timeout=1.0)
    attempt = task.send(0, "shell", "m1")
    attempt.timed_out = True
    assert not decide(task, Setback.TASK_ERROR, 0).retry


def test_unmet_dependencies_ban_the_engine_without_using_a_retry() -> None:
    task = make_task(retries=0)
    task.send(2, "task", "m1")
    assert decide(task, Setback.UNMET_DEPENDENCY, 2) == Decision(retry=True, avoid=2, ban=True)


def test_a_done_future_is_never_retried() -> None:
    task = make_task(retries=5)
    task.send(0, "task", "m1")
    futures.resolve(task.future, None, RuntimeError("resolved elsewhere"))
    for setback in Setback:
        assert not decide(task, setback, 0).retry


def test_kinds_tell_lambdas_apart_and_see_through_partials() -> None:
    import functools

    def f(x: int) -> int:
        return x

    first, second = (lambda: 1), (lambda: 2)
    assert kind_of(first) != kind_of(second)
    assert kind_of(functools.partial(f, 1)) == kind_of(f)
    assert kind_of(object()) is None


# -- engines


def make_engine(scheduler: Scheduler, engine_id: int = 0) -> EngineRecord:
    return EngineRecord(engine_id, scheduler, 2, None, "kernel.json")


def test_an_engine_takes_tasks_only_while_it_serves() -> None:
    scheduler = Scheduler()
    engine = make_engine(scheduler)
    assert engine.state is EngineState.STARTING
    assert not scheduler.engines[0].available
    engine.ready()
    assert engine.state is EngineState.IDLE
    assert scheduler.engines[0].available
    engine.busy()
    assert engine.state is EngineState.BUSY
    assert scheduler.engines[0].available
    engine.lose()
    assert engine.state is EngineState.DEAD
    assert not scheduler.engines[0].available
    engine.restart()
    assert engine.state is EngineState.RESTARTING
    assert not scheduler.engines[0].available
    engine.ready()
    assert scheduler.engines[0].available
    engine.stop()
    assert engine.state is EngineState.STOPPED
    assert not scheduler.engines[0].available
    assert 0 in scheduler.retired


def test_an_engine_is_idle_again_only_with_nothing_in_flight() -> None:
    engine = make_engine(Scheduler())
    engine.ready()
    engine.inflight["m1"] = object()  # type: ignore[assignment]
    engine.busy()
    engine.idle()
    assert engine.state is EngineState.BUSY
    engine.inflight.clear()
    engine.idle()
    assert engine.state is EngineState.IDLE


def test_illegal_engine_moves_are_refused() -> None:
    engine = make_engine(Scheduler())
    with pytest.raises(StateError):
        engine.restart()
    engine.ready()
    with pytest.raises(StateError):
        engine.ready()


def test_a_lost_engine_hands_back_its_attempts_and_its_load() -> None:
    scheduler = Scheduler()
    engine = make_engine(scheduler)
    engine.ready()
    engine.reports_start = True
    tasks = [make_task() for _ in range(3)]
    for i, task in enumerate(tasks):
        engine.inflight[f"m{i}"] = task.send(0, "task", f"m{i}")
    scheduler.engines[0].outstanding = 3
    tasks[0].start(tasks[0].attempt)
    lost = engine.lose()
    assert [a.task for a in lost] == tasks
    assert [a.started for a in lost] == [True, False, False]
    assert engine.inflight == {}
    assert scheduler.engines[0].outstanding == 0


def test_without_start_reports_the_head_of_the_task_channel_may_have_run() -> None:
    engine = make_engine(Scheduler())
    engine.ready()
    shell, head, mate, later = (make_task() for _ in range(4))
    engine.inflight["s"] = shell.send(0, "shell", "s")
    for task, msg_id, batch in ((head, "h", "h"), (mate, "b", "h"), (later, "l", None)):
        attempt = task.send(0, "task", msg_id)
        attempt.batch = batch
        engine.inflight[msg_id] = attempt
    started = {a.msg_id: a.started for a in engine.lose()}
    assert started == {"s": False, "h": True, "b": True, "l": False}


def test_a_retired_engines_tasks_fail_with_engine_died() -> None:
    from parallel_kernel.errors import EngineDied

    scheduler = Scheduler()
    engine = make_engine(scheduler)
    engine.ready()
    engine.lose()
    engine.retire()
    job = Job(target=0)
    assert scheduler.check(job) == "its engine 0 is dead"
    assert isinstance(scheduler.reason(job), EngineDied)


def test_an_engine_that_ended_by_itself_may_have_run_the_head_of_each_channel() -> None:
    """Its start reports may not have left the process: a task that crashes the engine
    at once must not count as never started (and run again for free)."""
    engine = make_engine(Scheduler())
    engine.ready()
    engine.reports_start = True
    tasks = [make_task() for _ in range(4)]
    for task, channel, msg_id in zip(
        tasks, ("task", "task", "shell", "shell"), ("t1", "t2", "s1", "s2"), strict=True
    ):
        engine.inflight[msg_id] = task.send(0, channel, msg_id)
    started = {a.msg_id: a.started for a in engine.lose(by_itself=True)}
    assert started == {"t1": True, "t2": False, "s1": True, "s2": False}
