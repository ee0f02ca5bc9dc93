"""The Pool against real engines: futures, map, broadcast, cancel, interrupt, timeouts."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time

import numpy as np
import pytest
from jupyter_client import BlockingKernelClient

import parallel_kernel
from parallel_kernel import (
    Dependency,
    DependencyError,
    Pool,
    RemoteError,
    RemoteTraceback,
    TaskInterrupted,
    TaskTimeout,
    require,
    serialize,
)


@pytest.fixture(scope="module")
def pool():
    with Pool(2) as pool:
        yield pool


def started_marker(seconds: float) -> str:
    """A task that says when it started, then sleeps."""
    print("started", flush=True)
    time.sleep(seconds)
    return "slept"


def wait_started(future, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while "started" not in future.stdout:
        assert time.monotonic() < deadline, "the task did not start"
        time.sleep(0.01)


def test_submit_returns_a_concurrent_future_with_what_the_engine_sent(pool: Pool) -> None:
    def work(x):
        import sys

        from IPython.display import HTML, display

        print("out", x)
        print("err", x, file=sys.stderr)
        display(HTML("<i>rich</i>"))
        return x * 2

    future = pool.submit(work, 21)
    assert isinstance(future, concurrent.futures.Future)
    assert future.result(timeout=30) == 42
    assert future.stdout == "out 21\n"
    assert future.stderr == "err 21\n"
    assert future.outputs[0]["data"]["text/html"] == "<i>rich</i>"
    assert future.engine_id in (0, 1)
    assert future.metadata["engine_id"] == future.engine_id
    assert future.metadata["started"] <= future.metadata["completed"]


def test_figures_and_rich_reprs_a_task_displays_are_on_its_future(pool: Pool) -> None:
    def draw(n):
        import matplotlib.pyplot as plt
        from IPython.display import display

        class Table:
            def _repr_html_(self):
                return f"<table><tr><td>{n}</td></tr></table>"

            def _repr_markdown_(self):
                return f"| {n} |"

        display(Table())
        plt.plot(range(n))
        plt.show()
        return n

    futures = [pool.submit(draw, n) for n in (3, 4)]
    for n, future in zip((3, 4), futures, strict=True):
        assert future.result(timeout=60) == n
        table, figure = future.outputs
        assert table["data"]["text/html"] == f"<table><tr><td>{n}</td></tr></table>"
        assert table["data"]["text/markdown"] == f"| {n} |"
        assert figure["data"]["image/png"]


def test_futures_work_with_wait_as_completed_and_asyncio(pool: Pool) -> None:
    futures = [pool.submit(pow, 2, i) for i in range(20)]
    _, not_done = concurrent.futures.wait(futures, timeout=30)
    assert not not_done
    assert sorted(f.result() for f in concurrent.futures.as_completed(futures)) == [
        2**i for i in range(20)
    ]

    async def main():
        return await asyncio.gather(pool.submit(pow, 3, 2), pool.submit(pow, 3, 3))

    assert asyncio.run(main()) == [9, 27]


def test_map_gives_every_result_in_order(pool: Pool) -> None:
    expected = [i * i for i in range(1000)]
    assert list(pool.map(lambda x: x * x, range(1000))) == expected
    assert list(pool.map(lambda x: x * x, range(1000), chunksize=1)) == expected
    assert list(pool.map(lambda x, y: x + y, range(5), range(10, 15), chunksize=2)) == [
        10,
        12,
        14,
        16,
        18,
    ]
    assert list(pool.map(abs, [])) == []


def test_map_uses_the_engine_namespace_and_batches(pool: Pool) -> None:
    pool.push({"offset": 1000})
    results = list(pool.map(lambda x: x + offset, range(100)))  # noqa: F821
    assert results == [x + 1000 for x in range(100)]


def test_the_same_function_sent_again_sees_the_namespace_and_fresh_state(pool: Pool) -> None:
    def read_offset():
        return offset  # noqa: F821

    def count_calls(seen=[]):  # noqa: B006 - the shared default is the point
        seen.append(1)
        return len(seen)

    for value in (1, 2, 3):
        pool.push({"offset": value})
        assert pool.broadcast(read_offset) == [value, value]
    assert [pool.submit(count_calls).result(timeout=30) for _ in range(6)] == [1] * 6


def test_map_timeout_and_errors(pool: Pool) -> None:
    with pytest.raises(TimeoutError):
        list(pool.map(time.sleep, [0.1, 5], chunksize=1, timeout=1))

    def fail_on_three(x):
        if x == 3:
            raise ValueError(f"bad item {x}")
        return x

    results = pool.map(fail_on_three, range(6), chunksize=1)
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match=r"^bad item 3$") as info:
        next(results)
    assert isinstance(info.value.__cause__, RemoteTraceback)


def test_remote_errors_show_the_remote_traceback(pool: Pool) -> None:
    def inner():
        raise KeyError("missing")

    def outer():
        inner()

    with pytest.raises(KeyError) as info:
        pool.submit(outer).result(timeout=30)
    assert info.value.engine_id in (0, 1)
    remote = info.value.__cause__
    assert isinstance(remote, RemoteError)
    assert isinstance(remote, parallel_kernel.ParallelError)
    assert remote.ename == "KeyError"
    assert remote.engine_id == info.value.engine_id
    text = str(remote)
    assert text.startswith(f"the task raised on engine {remote.engine_id}:\n")
    assert "outer" in text
    assert "inner" in text
    assert "KeyError: 'missing'" in text
    assert "\x1b[" not in text


def test_unpicklable_input_fails_at_submit_and_nothing_is_sent(pool: Pool) -> None:
    import threading

    before = [e.outstanding for e in pool.engines]
    with pytest.raises(serialize.SerializationError, match="the arguments"):
        pool.submit(print, threading.Lock())
    assert [e.outstanding for e in pool.engines] == before


def test_targeting_broadcast_push_pull_execute(pool: Pool) -> None:
    assert [pool.submit(os.getpid, engine=i).result(30) for i in (0, 1)] == pool.broadcast(
        os.getpid
    )
    pool.push({"shared_name": "pushed"})
    assert pool.pull("shared_name") == ["pushed", "pushed"]
    assert pool.pull(["shared_name"]) == [["pushed"], ["pushed"]]
    futures = pool.execute("executed = 6 * 7\nprint(executed)")
    assert [f.stdout for f in futures] == ["42\n", "42\n"]
    assert pool.pull("executed") == [42, 42]
    with pytest.raises(RemoteError, match="NameError"):
        pool.execute("undefined_name_here")


def test_submit_cell_runs_code_as_a_cell_on_one_engine(pool: Pool) -> None:
    first = pool.submit_cell("answer = 6 * 7\nanswer", engine=1)
    assert first.result(30) is None
    assert first.engine_id == 1
    [result] = [o for o in first.outputs if "execution_count" in o]
    assert result["data"]["text/plain"] == "42"
    # the engine's namespace, In/Out and IPython magics, as in a notebook
    count = result["execution_count"]
    second = pool.submit_cell(f"print(answer, Out[{count}], In[{count}])\n%time 1", engine=1)
    second.result(30)
    assert second.stdout.splitlines()[0] == "42 42 answer = 6 * 7"
    assert "Wall time" in second.stdout
    with pytest.raises(RemoteError, match="ZeroDivisionError"):
        pool.submit_cell("1 / 0").result(30)


def test_submit_cell_streams_output_to_on_output_as_it_arrives(pool: Pool) -> None:
    seen: list[tuple[float, int, str, dict]] = []

    def on_output(engine_id: int, msg_type: str, content: dict) -> None:
        seen.append((time.monotonic(), engine_id, msg_type, content))

    code = "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.5)\ni"
    future = pool.submit_cell(code, engine=0, on_output=on_output)
    future.result(30)
    done = time.monotonic()
    streams = [(e, c["text"]) for _, e, t, c in seen if t == "stream"]
    assert "".join(text for _, text in streams) == "0\n1\n2\n"
    assert {e for e, _ in streams} == {0}
    assert seen[0][0] < done - 0.8  # the first line came while the cell ran
    assert [t for _, _, t, _ in seen][-1] == "execute_result"


def test_submit_cell_timeout_bad_input_and_a_failing_on_output(pool: Pool) -> None:
    with pytest.raises(TaskTimeout):
        pool.submit_cell("import time; time.sleep(30)", engine=0, timeout=1).result(20)
    with pytest.raises(TypeError, match="code is a str"):
        pool.submit_cell(b"1")
    with pytest.raises(TypeError, match="on_output is a callable"):
        pool.submit_cell("1", on_output="print")
    with pytest.raises(TypeError, match="engine must be an engine id"):
        pool.submit_cell("1", engine="0")

    def broken(engine_id: int, msg_type: str, content: dict) -> None:
        raise RuntimeError("the callback's own bug")

    future = pool.submit_cell("print('still runs')", on_output=broken)
    assert future.result(30) is None
    assert future.stdout == "still runs\n"


def test_clear_resets_every_engine(pool: Pool) -> None:
    pool.push({"to_be_cleared": 1})
    pool.clear()
    assert pool.broadcast(lambda: "to_be_cleared" in globals()) == [False, False]


def test_engines_expose_connection_files_to_inspect_the_namespace(pool: Pool) -> None:
    pool.submit(lambda: globals().update(left_by_task="look here"), engine=0).result(30)
    engine = pool.engines[0]
    assert engine.id == 0
    assert engine.owned is True
    assert engine.state in ("idle", "busy")
    client = BlockingKernelClient(connection_file=engine.connection_file)
    client.load_connection_file()
    client.start_channels()
    try:
        reply = client.execute_interactive("left_by_task", timeout=30, output_hook=lambda m: None)
        assert reply["content"]["status"] == "ok"
        content, buffers = serialize.pack_apply(lambda: left_by_task, ())  # noqa: F821
        msg = client.session.msg("apply_request", content)
        msg["buffers"] = buffers
        client.shell_channel.send(msg)
        while True:
            reply = client.get_shell_msg(timeout=30)
            if reply["parent_header"]["msg_id"] == msg["header"]["msg_id"]:
                break
        assert serialize.unpack_result(reply["content"], reply["buffers"]) == "look here"
    finally:
        client.stop_channels()


def test_cancel_a_task_queued_at_an_engine_and_it_never_runs(pool: Pool) -> None:
    pool.broadcast(lambda: globals().update(side_effects=[]))
    busy = pool.submit(started_marker, 3, engine=0)
    queued = pool.submit(lambda: side_effects.append("ran"), engine=0)  # noqa: F821
    wait_started(busy)
    assert queued.msg_id is not None  # sent: it waits in the engine's queue
    assert queued.cancel() is True
    assert queued.cancelled()
    # wait() and as_completed() see a cancelled future as done at once
    assert concurrent.futures.wait([queued], timeout=1).done == {queued}
    assert list(concurrent.futures.as_completed([queued], timeout=1)) == [queued]
    assert busy.result(timeout=30) == "slept"
    assert pool.submit(lambda: list(side_effects), engine=0).result(30) == []  # noqa: F821


def test_cancel_a_task_not_sent_yet(pool: Pool) -> None:
    blockers = [pool.submit(started_marker, 3, engine=1) for _ in range(pool.hwm)]
    waiting = pool.submit(lambda: "never", engine=1)
    time.sleep(0.2)
    assert waiting.msg_id is None
    assert waiting.cancel() is True
    assert concurrent.futures.wait([waiting], timeout=1).done == {waiting}
    assert [b.result(30) for b in blockers] == ["slept"] * pool.hwm
    assert waiting.cancelled()


def test_cancel_after_the_task_started_returns_false(pool: Pool) -> None:
    running = pool.submit(started_marker, 0.5)
    wait_started(running)
    assert running.cancel() is False
    assert running.result(timeout=30) == "slept"


def test_interrupt_a_running_task(pool: Pool) -> None:
    future = pool.submit(started_marker, 30)
    wait_started(future)
    assert future.interrupt() is True
    with pytest.raises(TaskInterrupted) as info:
        future.result(timeout=10)
    assert info.value.ename == "KeyboardInterrupt"
    assert pool.submit(lambda: "usable", engine=future.engine_id).result(30) == "usable"


def test_interrupt_right_after_submit_never_gets_lost(pool: Pool) -> None:
    # the task may still be on its way to the engine, or just starting
    for _ in range(10):
        future = pool.submit(time.sleep, 30, engine=0)
        assert future.interrupt() is True
        with pytest.raises(TaskInterrupted):
            future.result(timeout=10)
    assert pool.submit(lambda: "usable", engine=0).result(30) == "usable"


def test_timeout_interrupts_a_task_that_runs_too_long(pool: Pool) -> None:
    t0 = time.monotonic()
    future = pool.submit(time.sleep, 30, timeout=1)
    with pytest.raises(TaskTimeout) as info:
        future.result(timeout=15)
    assert isinstance(info.value, TimeoutError)
    assert time.monotonic() - t0 < 10
    assert pool.submit(lambda: "usable", engine=future.engine_id).result(30) == "usable"
    assert pool.submit(time.sleep, 0.1, timeout=5).result(30) is None


def test_after_and_follow(pool: Pool) -> None:
    first = pool.submit(started_marker, 0.5, engine=1)
    follower = pool.submit(lambda: "beside", follow=[first])
    later = pool.submit(time.time, after=[first])
    assert follower.result(30) == "beside"
    assert follower.engine_id == first.engine_id == 1
    assert later.result(30) >= time.time() - 60
    assert later.metadata["started"] >= first.metadata["completed"]


def test_impossible_dependencies_fail_fast(pool: Pool) -> None:
    failed = pool.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failed.result(30)
    dependent = pool.submit(lambda: "never", after=[failed])
    with pytest.raises(DependencyError, match="after dependency can no longer be met"):
        dependent.result(10)
    tolerant = pool.submit(lambda: "runs", after=Dependency([failed], failure=True))
    assert tolerant.result(30) == "runs"
    a = pool.submit(lambda: 0, engine=0)
    b = pool.submit(lambda: 1, engine=1)
    both = pool.submit(lambda: "never", follow=[a, b])
    with pytest.raises(DependencyError, match="follow=all needs one engine"):
        both.result(30)
    with pytest.raises(DependencyError, match="no engine 7"):
        pool.submit(abs, 1, engine=7).result(10)


def test_require_runs_where_the_module_imports(pool: Pool, tmp_path) -> None:
    (tmp_path / "only_on_engine_one.py").write_text("VALUE = 'here'\n")
    pool.submit(lambda p: __import__("sys").path.insert(0, p), str(tmp_path), engine=1).result(30)

    @require("only_on_engine_one")
    def task():
        import only_on_engine_one

        return only_on_engine_one.VALUE

    futures = [pool.submit(task) for _ in range(4)]
    assert [f.result(30) for f in futures] == ["here"] * 4
    assert {f.engine_id for f in futures} == {1}

    @require("no_such_module_anywhere")
    def impossible():
        return "never"

    with pytest.raises(DependencyError, match="no engine is eligible"):
        pool.submit(impossible).result(30)


def test_progress_bars(pool: Pool, capsys) -> None:
    assert list(pool.map(abs, range(-50, 0), progress=True)) == list(range(50, 0, -1))
    futures = [pool.submit(abs, -i) for i in range(10)]
    done, _ = parallel_kernel.wait(futures, progress={"desc": "waiting"})
    assert len(done) == 10
    err = capsys.readouterr().err
    assert "map: 100%" in err
    assert "waiting: 100%" in err
    assert "50/50" in err


def test_large_arrays_round_trip(pool: Pool) -> None:
    array = np.arange(10_000_000, dtype=np.float64)
    result = pool.submit(lambda a: a * 2, array).result(timeout=60)
    np.testing.assert_array_equal(result, array * 2)
    assert result.flags.owndata is False  # a view of the received frame


def test_wrong_kernel_name_lists_the_available_ones() -> None:
    with pytest.raises(ValueError, match=r"no kernelspec named 'nope'; available: .*parallel"):
        Pool(1, kernel_name="nope")


def test_hwm_must_be_positive() -> None:
    with pytest.raises(ValueError, match="hwm"):
        Pool(1, hwm=0)


def test_a_pool_inside_a_notebook() -> None:
    """In a notebook a loop is already running; the pool's own loop thread does not care."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.metadata.kernelspec = {"name": "parallel", "display_name": "x", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from parallel_kernel import Pool\n"
            "pool = Pool(2)\n"
            "results = list(pool.map(lambda x: x * 3, range(100), progress=True))\n"
            "print(sum(results))"
        ),
        nbformat.v4.new_code_cell("await pool.submit(pow, 2, 10)"),
        nbformat.v4.new_code_cell("pool.shutdown()\nprint(pool)"),
    ]
    NotebookClient(nb, timeout=120).execute()
    printed = "".join(o.get("text", "") for o in nb.cells[0].outputs if o.output_type == "stream")
    assert "14850" in printed
    assert nb.cells[1].outputs[0].data["text/plain"] == "1024"
    assert "stopped" in nb.cells[2].outputs[0].text


def test_a_result_is_freed_as_soon_as_its_future_is_dropped(pool: Pool) -> None:
    """No reference cycle keeps a large result (or argument) alive until a garbage collection."""
    import gc
    import weakref

    gc.disable()
    try:
        argument = np.ones(2_000_000)
        future = pool.submit(np.negative, argument)
        result = future.result(30)
        assert result[0] == -1.0
        freed = weakref.ref(result)
        del future, result
        assert freed() is None
    finally:
        gc.enable()


def test_a_pool_can_keep_every_task_on_the_shell_channel() -> None:
    with Pool(1, task_channel=False) as shell_only:
        future = shell_only.submit(print, "by shell")
        assert future.result(30) is None
        assert future.stdout == "by shell\n"
        assert "runtime" not in future.metadata  # a task-channel reply would carry it
        assert list(shell_only.map(abs, [-1, -2])) == [1, 2]
