"""What a task's errors look like to its caller: the task's own exception, pickling failures,
and user code that raises on the pools' loop thread (real pools)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import threading
import traceback

import pytest
from conftest import TIMEOUT

from parallel_kernel import ParallelError, Pool, RemoteError
from parallel_kernel.errors import DeserializationError, RemoteTraceback, SerializationError


@pytest.fixture(scope="module")
def pool():
    with Pool(2) as pool:
        yield pool


def _raise_with_a_comment():
    raise RuntimeError(123)  # some comment


class NeedsTwoArguments(Exception):
    """An exception that pickles but cannot be rebuilt (its __init__ wants two arguments)."""

    def __init__(self, a, b):
        super().__init__(a)


class HoldsALock(Exception):
    """An exception that cannot be pickled."""

    def __init__(self):
        super().__init__("with a lock")
        self.lock = threading.Lock()


def _exit_when_called(code):
    sys.exit(code)


class ExitsWhenPickled:
    def __reduce__(self):
        sys.exit(5)


class ExitsWhenUnpickled:
    """Pickles fine; unpickling it calls sys.exit."""

    def __reduce__(self):
        return _exit_when_called, (6,)


class ExitsWhenUnpickledElsewhere:
    """Pickles fine; unpickling it in any process but ``pid`` calls sys.exit."""

    def __init__(self, pid):
        self.pid = pid

    def __reduce__(self):
        return _exit_unless_in, (self.pid,)


def _exit_unless_in(pid):
    if os.getpid() != pid:
        sys.exit(7)
    return "unpickled"


class RefusesPickling:
    def __reduce__(self):
        raise ValueError("no pickling for me")


def test_the_task_s_own_exception_is_raised(pool: Pool) -> None:
    future = pool.submit(divmod, 1, 0)
    with pytest.raises(ZeroDivisionError) as info:
        future.result(TIMEOUT)
    error = info.value
    assert type(error) is ZeroDivisionError
    assert error.args == ("integer division or modulo by zero",)
    assert error.engine_id == future.engine_id
    cause = error.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert isinstance(cause, RemoteError)
    assert cause.engine_id == future.engine_id
    assert cause.ename == "ZeroDivisionError"
    assert "ZeroDivisionError" in cause.tb
    assert "\x1b[" not in cause.tb
    assert cause.tb.rstrip() in str(cause)
    assert future.exception() is error


def test_the_remote_source_lines_show_through_the_cause(pool: Pool) -> None:
    with pytest.raises(RuntimeError) as info:
        pool.submit(_raise_with_a_comment).result(TIMEOUT)
    assert info.value.args == (123,)
    printed = "".join(traceback.format_exception(info.value))
    assert "raise RuntimeError(123)  # some comment" in printed
    assert "The above exception was the direct cause of the following exception" in printed
    assert "RemoteTraceback" in printed


def test_an_exception_that_cannot_be_rebuilt_is_a_remote_error(pool: Pool) -> None:
    def raise_unrebuildable():
        raise NeedsTwoArguments("a", "b")

    def raise_unpicklable():
        raise HoldsALock()

    for task, evalue in ((raise_unrebuildable, "a"), (raise_unpicklable, "with a lock")):
        future = pool.submit(task)
        with pytest.raises(RemoteError) as info:
            future.result(TIMEOUT)
        error = info.value
        assert type(error) is RemoteError
        assert error.original is None
        assert error.evalue == evalue
        assert error.engine_id == future.engine_id
        assert str(error).startswith(f"{error.ename}: {evalue} (raised on engine")


def test_system_exit_in_a_task_is_an_error_and_the_engine_keeps_serving(pool: Pool) -> None:
    def leave(code):
        sys.exit(code)

    future = pool.submit(leave, 3, engine=0)
    with pytest.raises(SystemExit) as info:
        future.result(TIMEOUT)
    assert info.value.code == 3
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert pool.submit(lambda: "still here", engine=0).result(TIMEOUT) == "still here"


def test_an_unpicklable_argument_fails_at_submit_and_leaves_the_pool_as_it_was(
    pool: Pool,
) -> None:
    before = [e.outstanding for e in pool.engines]
    with pytest.raises(SerializationError, match="the arguments") as info:
        pool.submit(print, RefusesPickling())
    error = info.value
    assert isinstance(error, pickle.PicklingError)
    assert isinstance(error, ParallelError)
    assert isinstance(error.__cause__, ValueError)
    assert str(error.__cause__) == "no pickling for me"
    with pytest.raises(pickle.PicklingError):
        pool.submit(print, threading.Lock())
    assert pool.futures() == []
    assert [e.outstanding for e in pool.engines] == before
    assert pool.submit(abs, -1).result(TIMEOUT) == 1


def test_a_result_that_cannot_be_pickled_raises_what_pickling_raised(pool: Pool) -> None:
    with pytest.raises(TypeError, match=r"cannot pickle '_thread\.lock' object") as info:
        pool.submit(threading.Lock).result(TIMEOUT)
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "while pickling the result of" in info.value.__cause__.tb
    with pytest.raises(SystemExit) as info:
        pool.submit(ExitsWhenPickled).result(TIMEOUT)
    assert info.value.code == 5
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "sys.exit(5)" in info.value.__cause__.tb
    assert pool.broadcast(lambda: "serving") == ["serving", "serving"]


def test_a_result_that_cannot_be_unpickled_here_fails_its_future_only() -> None:
    pool = Pool(1)
    future = pool.submit(ExitsWhenUnpickled)
    with pytest.raises(DeserializationError) as info:
        future.result(TIMEOUT)
    error = info.value
    assert isinstance(error, pickle.UnpicklingError)
    assert isinstance(error, ParallelError)
    assert error.part == "result"
    assert "engine 0" in str(error)
    assert "ExitsWhenUnpickled" in str(error)
    assert isinstance(error.__cause__, SystemExit)
    assert error.__cause__.code == 6
    assert pool.submit(abs, -2).result(TIMEOUT) == 2
    pool.shutdown()
    assert {e.state for e in pool.engines} == {"stopped"}


def test_arguments_that_cannot_be_unpickled_on_the_engine(pool: Pool) -> None:
    future = pool.submit(str, ExitsWhenUnpickledElsewhere(os.getpid()), engine=0)
    with pytest.raises(DeserializationError, match="cannot deserialize the arguments") as info:
        future.result(TIMEOUT)
    assert info.value.part == "arguments"
    assert "SystemExit" in str(info.value)
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert pool.submit(lambda: "served", engine=0).result(TIMEOUT) == "served"


def test_a_done_callback_raising_system_exit_is_logged_and_ignored(pool: Pool, caplog) -> None:
    ran = threading.Event()

    def leave(_future):
        sys.exit(1)

    future = pool.submit(_nap, 0.5)
    future.add_done_callback(leave)
    future.add_done_callback(lambda _f: ran.set())
    assert future.result(TIMEOUT) == "rested"
    assert ran.wait(TIMEOUT)
    assert any("exception calling callback" in r.getMessage() for r in caplog.records)
    assert pool.submit(abs, -3).result(TIMEOUT) == 3


def test_the_loop_thread_outlives_a_system_exit_escaping_any_callback(pool: Pool) -> None:
    # what no guard of the pool's own catches still leaves the thread serving every pool
    pool._core.bridge.call_soon(sys.exit, 1)
    assert pool.submit(abs, -4).result(TIMEOUT) == 4


def _nap(seconds):
    import time

    time.sleep(seconds)
    return "rested"


def test_wrap_errors_raises_every_task_error_as_remote_error() -> None:
    with Pool(1, wrap_errors=True) as pool:
        assert pool.wrap_errors is True
        with pytest.raises(RemoteError) as info:
            pool.submit(divmod, 1, 0).result(TIMEOUT)
        error = info.value
        assert error.ename == "ZeroDivisionError"
        assert isinstance(error.original, ZeroDivisionError)
        assert error.engine_id == 0
        assert str(error).startswith("ZeroDivisionError: integer division or modulo by zero")


SCRIPT = """
import json
import sys

from parallel_kernel import Pool


class ScriptError(Exception):
    pass


class Record:
    def __init__(self, value):
        self.value = value

    def __getstate__(self):
        return {"encoded": json.dumps(self.value)}

    def __setstate__(self, state):
        self.value = json.loads(state["encoded"])


def make_record(value):
    return Record(value)


def fail():
    raise ScriptError("from the script", 42)


if __name__ == "__main__":
    with Pool(1) as pool:
        record = pool.submit(make_record, {"a": [1, 2]}).result(60)
        assert type(record) is Record and record.value == {"a": [1, 2]}, record
        try:
            pool.submit(fail).result(60)
        except ScriptError as error:
            assert error.args == ("from the script", 42), error.args
            assert error.engine_id == 0
        else:
            sys.exit("no ScriptError")
        # the carried names are gone again: the engine's namespace has no json
        assert pool.submit(lambda: "json" in globals()).result(60) is False
    print("script ok")
"""


@pytest.mark.timeout(120)
def test_a_script_s_classes_and_carried_names(tmp_path) -> None:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "script ok"
