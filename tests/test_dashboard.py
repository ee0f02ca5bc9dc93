"""A pool at a glance: ``pool.status()``, the dashboard widget, ``parallel-kernel status``.

Real engines throughout; the dashboard's widgets are made in this process
(ipywidgets works without a frontend) and read as the frontend would draw
them, and in kernels run by nbclient and driven through jupyter_client.
"""

from __future__ import annotations

import gc
import json
import sys
import time
import weakref
from queue import Empty

import nbformat
import pytest
from conftest import TIMEOUT, Driver, cli, run, wait_until
from nbclient import NotebookClient

from parallel_kernel import EngineDied, Pool, TaskInterrupted
from parallel_kernel.dashboard import render

pytestmark = pytest.mark.timeout(180)

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def nap(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


def spin(seconds: float) -> int:
    import time

    end, n = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        n += 1
    return n


def fail() -> None:
    raise ValueError("on purpose")


@pytest.fixture(scope="module")
def pool():
    with Pool(2) as pool:
        yield pool


def running(future) -> None:
    wait_until(future.running, TIMEOUT)


def test_status_shows_each_engines_state_counts_memory_and_running_task(pool: Pool) -> None:
    before = pool.status()
    done_before = sum(e.done for e in before.engines)
    assert [e.id for e in before.engines] == [0, 1]
    assert all(e.rss and e.rss > 10e6 for e in before.engines)
    assert pool.submit(nap, 0, engine=0).result(TIMEOUT) == 0
    long = pool.submit(nap, 3, engine=1)
    running(long)
    status = pool.status()
    one = status.engines[1]
    assert (one.state, one.running) == ("busy", "nap")
    assert one.running_for is not None
    assert one.running_for > 0
    assert status.engines[0].done >= 1
    assert sum(e.done for e in status.engines) == done_before + 1
    text = str(status)
    assert text.splitlines()[0].startswith("2 engines (")
    assert "1 running" in text
    assert "nap" in text
    assert "busy" in text
    long.result(TIMEOUT)
    assert pool.status().engines[1].running is None


def test_a_failed_task_counts_as_failed_on_its_engine(pool: Pool) -> None:
    failed_before = pool.status().engines[0].failed
    with pytest.raises(ValueError, match="on purpose"):
        pool.submit(fail, engine=0).result(TIMEOUT)
    status = pool.status()
    assert status.engines[0].failed == failed_before + 1
    [span] = [s for s in status.recent if s.label == "fail"]
    assert (span.engine_id, span.ok) == (0, False)
    assert f"fill='{render.FAILED}'" in render.task_stream(status)


def test_cpu_use_is_seen_while_an_engine_computes(pool: Pool) -> None:
    busy = pool.submit(spin, 4, engine=0)
    running(busy)
    pool.status()
    time.sleep(1)
    status = pool.status()
    assert status.engines[0].cpu_percent is not None
    assert status.engines[0].cpu_percent > 30, str(status)
    busy.result(TIMEOUT)


def test_the_dashboard_updates_while_a_map_runs(pool: Pool) -> None:
    dashboard = pool.dashboard()
    try:
        first = dashboard.totals.value
        draws = dashboard.draws
        results = pool.map(nap, [0.3] * 8, chunksize=1)
        seen = set()
        for _ in results:
            seen.add(dashboard.totals.value)
        wait_until(lambda: "0 running" in dashboard.totals.value, TIMEOUT)
        assert dashboard.draws > draws
        assert len(seen | {first, dashboard.totals.value}) >= 3  # counts changed as it ran
        assert "nap (map)" in dashboard.stream.value
        rows = [row.children[0].value for row in dashboard.rows.children]
        assert len(rows) == 2
        assert "engine 0" in rows[0]
        assert "engine 1" in rows[1]
    finally:
        dashboard.close()


def test_a_pool_has_one_dashboard_however_often_it_is_shown(pool: Pool) -> None:
    first = pool.dashboard()
    try:
        assert pool.dashboard() is first
        watchers = len(pool._core.activity.watchers)
        pool.dashboard()
        assert len(pool._core.activity.watchers) == watchers  # drawn once, not per display
    finally:
        first.close()
    assert first.closed
    second = pool.dashboard()
    try:
        assert second is not first
        assert not second.closed
    finally:
        second.close()


def test_a_dashboard_does_not_keep_its_pool_alive() -> None:
    pool = Pool(1)
    dashboard = pool.dashboard()
    core = pool._core
    dropped = weakref.ref(pool)
    del pool
    gc.collect()
    assert dropped() is None
    wait_until(lambda: core.closed, TIMEOUT)  # the dropped pool wound down, as without one
    dashboard.interrupt(0)
    assert dashboard.message.value == "the pool is gone"
    dashboard.close()


def test_the_dashboards_interrupt_button_interrupts_a_busy_engine(pool: Pool) -> None:
    dashboard = pool.dashboard()
    try:
        task = pool.submit(nap, 60, engine=1)
        running(task)
        _, interrupt, _ = dashboard._rows[1]
        wait_until(lambda: not interrupt.disabled, TIMEOUT)
        interrupt.click()
        with pytest.raises(TaskInterrupted):
            task.result(TIMEOUT)
        assert dashboard.message.value == "engine 1: interrupted"
    finally:
        dashboard.close()


def test_the_dashboards_restart_button_restarts_its_engine() -> None:
    with Pool(2) as pool:
        dashboard = pool.dashboard()
        try:
            task = pool.submit(nap, 60, engine=0)
            running(task)
            _, _, restart = dashboard._rows[0]
            restart.click()
            with pytest.raises(EngineDied, match="restarted on request"):
                task.result(TIMEOUT)
            assert dashboard.message.value == "engine 0: restarted"
            assert pool.submit(nap, 0, engine=0).result(TIMEOUT) == 0
        finally:
            dashboard.close()


def test_restart_engine_gives_a_fresh_engine_and_its_running_task_fails() -> None:
    with Pool(2) as pool:
        pool.push({"x": 1})
        task = pool.submit(nap, 60, engine=0)
        running(task)
        pool.restart_engine(0)
        with pytest.raises(EngineDied, match="restarted on request"):
            task.result(TIMEOUT)
        assert pool.submit(nap, 0, engine=0).result(TIMEOUT) == 0
        assert [e.state for e in pool.engines] == ["idle", "idle"]
        assert pool.broadcast(lambda: "x" in globals()) == [False, True]
        with pytest.raises(ValueError, match="no engine 5 in this pool"):
            pool.restart_engine(5)


def test_an_attached_engine_is_not_restarted_by_the_pool() -> None:
    with (
        Pool(1) as owner,
        Pool.connect([owner.engines[0].connection_file]) as attached,
        pytest.raises(ValueError, match=r"attached with Pool\.connect"),
    ):
        attached.restart_engine(0)


def test_stats_request_answers_with_the_engines_figures_while_it_runs() -> None:
    driver = Driver()
    try:
        driver.start_busy_task(3)
        reply = driver.control("stats_request")["content"]
        assert reply["status"] == "ok"
        assert reply["pid"] == driver.manager.provisioner.pid
        assert reply["rss"] > 10e6
        assert reply["cpu_seconds"] > 0
        info = driver.reply(driver.send("kernel_info_request"))["content"]
        assert "stats_request" in info["parallel"]["control_requests"]
    finally:
        driver.stop()


def test_parallel_kernel_status_prints_busy_and_idle_kernels(pool: Pool) -> None:
    task = pool.submit(nap, 5, engine=1)
    running(task)
    files = [e.connection_file for e in pool.engines]
    result = cli("status", *files)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["kernel", "engine", "state", "running"]
    by_engine = {line.split()[1]: line.split() for line in lines[1:]}
    assert by_engine["0"][2] == "idle"
    assert by_engine["1"][2] == "busy"
    assert by_engine["1"][3] == task.msg_id
    assert by_engine["0"][4].isdigit()
    assert by_engine["0"][5] == "MB"
    missing = cli("status", "kernel-nosuch.json")
    assert missing.returncode != 0
    assert "kernel-nosuch.json" in missing.stderr
    task.result(TIMEOUT)


@pytest.mark.parametrize("kernel_name", ["parallel", "python3"])
def test_a_pool_as_a_cells_last_value_shows_the_dashboard(kernel_name: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("from parallel_kernel import Pool\npool = Pool(2)"),
        nbformat.v4.new_code_cell("pool"),
        nbformat.v4.new_code_cell("print(pool.status())"),
        nbformat.v4.new_code_cell("pool"),
        nbformat.v4.new_code_cell("pool.shutdown()"),
    ]
    NotebookClient(nb, timeout=120, kernel_name=kernel_name).execute()
    [view] = [o for o in nb.cells[1].outputs if WIDGET_VIEW in o.get("data", {})]
    model_id = view.data[WIDGET_VIEW]["model_id"]
    [again] = [o for o in nb.cells[3].outputs if WIDGET_VIEW in o.get("data", {})]
    assert again.data[WIDGET_VIEW]["model_id"] == model_id  # one dashboard, shown twice
    state = nb.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]
    assert state[model_id]["model_name"] == "VBoxModel"
    texts = json.dumps([m["state"].get("value", "") for m in state.values()])
    assert "parallel_kernel pool" in texts
    assert "engine 0" in texts
    assert "engine 1" in texts
    printed = "".join(o.get("text", "") for o in nb.cells[2].outputs)
    assert printed.startswith("2 engines (2 idle)")


def test_dashboard_buttons_are_served_while_a_cell_waits_for_the_pool() -> None:
    """A click on *interrupt* reaches the kernel while a cell blocks on a task."""
    driver = Driver()
    try:
        setup = driver.execute(
            "from parallel_kernel import Pool\n"
            "import time\n"
            "pool = Pool(1)\n"
            "dashboard = pool.dashboard()\n"
            "display(dashboard)"
        )
        assert setup["content"]["status"] == "ok", setup["content"]
        buttons = _interrupt_buttons(driver)
        assert buttons, "no interrupt button was opened"
        blocked = driver.client.execute("pool.submit(time.sleep, 60).result()")
        click = {"comm_id": buttons[0], "data": {"method": "custom", "content": {"event": "click"}}}
        # click until the cell ends: a click before the task started interrupts nothing
        deadline = time.monotonic() + TIMEOUT
        while blocked not in driver._replies and time.monotonic() < deadline:
            driver.send("comm_msg", click)
            try:
                msg = driver.client.get_shell_msg(timeout=1)
            except Empty:
                continue
            driver._replies[msg["parent_header"]["msg_id"]] = msg
        reply = driver.reply(blocked, timeout=TIMEOUT)
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "TaskInterrupted"
    finally:
        driver.stop()


def _interrupt_buttons(driver: Driver) -> list[str]:
    """Comm ids of the interrupt buttons the kernel opened so far."""
    found = []
    deadline = time.monotonic() + TIMEOUT
    while not found and time.monotonic() < deadline:
        try:
            msg = driver.client.get_iopub_msg(timeout=1)
        except Exception:
            continue
        if msg["msg_type"] == "comm_open":
            state = msg["content"].get("data", {}).get("state", {})
            if state.get("description") == "interrupt":
                found.append(msg["content"]["comm_id"])
    return found


def test_status_works_without_a_kernel_or_ipywidgets_in_a_script(tmp_path) -> None:
    script = tmp_path / "status.py"
    script.write_text(
        "import sys\n"
        "sys.modules['ipywidgets'] = None  # as if it were not installed\n"
        "from parallel_kernel import Pool\n"
        "with Pool(1) as pool:\n"
        "    print(pool.status())\n"
        "    try:\n"
        "        pool.dashboard()\n"
        "    except ImportError as e:\n"
        "        print('dashboard:', e)\n"
    )
    out = run([sys.executable, str(script)], timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("1 engines (1 idle)")
    assert "pip install 'parallel_kernel[notebook]'" in out.stdout
