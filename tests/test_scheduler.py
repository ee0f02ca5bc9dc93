"""Scheduling rules on their own: no engines, no sockets."""

from __future__ import annotations

import concurrent.futures

from parallel_kernel.pool.scheduler import Dependency, Job, Scheduler


class Done(concurrent.futures.Future):
    def __init__(self, engine_id: int | None = None, error: bool = False) -> None:
        super().__init__()
        self.engine_id = engine_id
        self.set_running_or_notify_cancel()
        if error:
            self.set_exception(RuntimeError("failed"))
        else:
            self.set_result(None)


def pending() -> concurrent.futures.Future:
    future = concurrent.futures.Future()
    future.engine_id = None
    return future


def scheduler(engines: int = 2, hwm: int = 2) -> Scheduler:
    s = Scheduler()
    for i in range(engines):
        s.add_engine(i, hwm)
    return s


def test_least_loaded_then_least_recently_used_up_to_hwm() -> None:
    s = scheduler()
    s.queue.extend(Job() for _ in range(5))
    placed = [engine for _, engine in s.assignments()]
    assert placed == [0, 1, 0, 1]
    assert len(s.queue) == 1
    s.finished(1)
    assert [engine for _, engine in s.assignments()] == [1]


def test_an_idle_pool_reuses_the_engine_that_ran_last() -> None:
    s = scheduler()
    for expected in (0, 0, 0):
        s.queue.append(Job())
        assert [engine for _, engine in s.assignments()] == [expected]
        s.finished(expected)
    s.queue.extend([Job(target=1), Job()])
    assert [engine for _, engine in s.assignments()] == [1, 0]
    s.finished(1)
    s.finished(0)
    s.queue.append(Job())
    assert [engine for _, engine in s.assignments()] == [0]


def test_targets_and_unavailable_engines() -> None:
    s = scheduler()
    s.set_available(0, False)
    s.queue.extend([Job(target=0), Job()])
    assert [engine for _, engine in s.assignments()] == [1]
    s.set_available(0, True)
    assert [engine for _, engine in s.assignments()] == [0]


def test_dependency_states() -> None:
    ok, bad, waiting = Done(), Done(error=True), pending()
    assert Dependency([ok]).state() == "met"
    assert Dependency([bad]).state() == "impossible"
    assert Dependency([bad], failure=True).state() == "met"
    assert Dependency([ok, waiting]).state() == "waiting"
    assert Dependency([bad, waiting], all=False).state() == "waiting"
    assert Dependency([bad, ok], all=False).state() == "met"
    assert Dependency([bad, Done(error=True)], all=False).state() == "impossible"


def test_follow_places_the_job_and_impossible_jobs_are_reported() -> None:
    s = scheduler()
    s.queue.append(Job(follow=Dependency([Done(engine_id=1)])))
    assert [engine for _, engine in s.assignments()] == [1]
    split = Job(follow=Dependency([Done(engine_id=0), Done(engine_id=1)]))
    assert "follow=all needs one engine" in s.check(split)
    s.queue.append(split)
    assert [engine for _, engine in s.assignments()] == [-1]
    assert "no engine 5" in s.check(Job(target=5))
    assert s.check(Job(blacklist={0, 1})) == "no engine is eligible to run it"


def test_waiting_jobs_keep_their_place() -> None:
    s = scheduler()
    blocker = pending()
    s.queue.extend([Job(after=Dependency([blocker])), Job()])
    assert [engine for _, engine in s.assignments()] == [0]
    blocker.set_running_or_notify_cancel()
    blocker.set_result(None)
    assert [engine for _, engine in s.assignments()] == [1]
