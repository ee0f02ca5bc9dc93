"""The parallel magics in notebooks run by nbclient, in our kernel and in the stock one.

Each kernel runs one notebook that exercises every magic and option; the
tests read its cells' outputs as a person would see them, and the moments at
which the outputs arrived (to check that output streams while a cell runs).
"""

from __future__ import annotations

import re
import sys
import time
from typing import Any

import nbformat
import pytest
from conftest import run
from jupyter_client.manager import start_new_kernel
from nbclient import NotebookClient

from parallel_kernel.magics import settings, targets

pytestmark = pytest.mark.timeout(300)

SETUP = """\
%load_ext parallel_kernel
from parallel_kernel import Pool
pool = Pool(2).activate()
"""

#: Cells by name, run in this order.
CELLS: dict[str, str] = {
    "setup": SETUP,
    "define": "%px import os, sys, time; from IPython import get_ipython; here = os.getpid()",
    "print": "%%px\nprint('hello', here == os.getpid())",
    "result": "%px here",
    "stream": (
        "%%px --targets 0\nfor i in range(3):\n    print('tick', i, flush=True)\n    time.sleep(1)"
    ),
    "errors": "%%px\n1/0",
    "target_one": "%px --targets 1 print('engine', get_ipython().kernel.engine_id)",
    "target_slice": "%px --targets ::2 print('engine', get_ipython().kernel.engine_id)",
    "timeout": "%px --timeout 1 time.sleep(60)",
    "after_timeout": "%px print('still serving')",
    "noblock": "run = %px --noblock time.sleep(1); print('later')",
    "noblock_ready": "print('ready at once:', run.ready())",
    "pxresult": "%pxresult",
    "noblock_timeout": "late = %px --noblock --timeout 1 time.sleep(60)",
    "noblock_timed_out": (
        "import time\nfor _ in range(300):\n    if late.ready():\n        break\n"
        "    time.sleep(0.1)\nprint('ended by the timeout:', late.ready())"
    ),
    "pxresult_timed_out": "%pxresult",
    "group_engine": (
        "%%px --group-outputs engine\n"
        "print('first'); time.sleep(0.3 * (1 + get_ipython().kernel.engine_id)); print('second')"
    ),
    "group_type": (
        "%%px --group-outputs type\n"
        "print('out'); print('err', file=sys.stderr); get_ipython().kernel.engine_id"
    ),
    "stop_on_error": (
        "%%px --stop-on-error\n"
        "if get_ipython().kernel.engine_id == 0:\n    1/0\nelse:\n    time.sleep(60)"
    ),
    "rich": (
        "%%px --targets 0\nfrom IPython.display import HTML, display\ndisplay(HTML('<b>bold</b>'))"
    ),
    "timeit": "%%px --targets 0\n%timeit -n 1 -r 1 sum(range(10))",
    "progress_bar": (
        "%%px --targets 0\nfor p in (50, 100):\n    print(f'\\r{p}%', end='', flush=True)\n"
        "    time.sleep(0.2)\nprint()"
    ),
    "display_update": (
        "%%px\nfrom IPython.display import display\n"
        "shown = display(f'first {get_ipython().kernel.engine_id}', display_id=True)\n"
        "shown.update(f'second {get_ipython().kernel.engine_id}')"
    ),
    "figure": (
        "%%px --targets 1\n%matplotlib inline\nimport matplotlib.pyplot as plt\n"
        "plt.plot([1, 3, 2]); plt.show()"
    ),
    "autopx_on": "%autopx",
    "auto_cell": "on_engines = 5",
    "autopx_off": "%autopx",
    "auto_check": "print('local', 'on_engines' in globals())\n%px print('remote', on_engines)",
    "config": "%pxconfig --targets 1 --no-progress",
    "configured": "%px print('configured')",
    "config_back": "%pxconfig --targets all --progress",
    "bad_targets": "%px --targets 7 print(1)",
    "bad_option": "%px --colour red print(1)",
}
RAISES = {"errors", "timeout", "pxresult_timed_out", "stop_on_error", "bad_targets", "bad_option"}


class TimedClient(NotebookClient):
    """Records when each output of each cell arrived."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrivals: list[tuple[float, int, dict[str, Any]]] = []
        self.finished: dict[int, float] = {}

    def output(self, outs: Any, msg: dict[str, Any], display_id: Any, cell_index: int) -> Any:
        self.arrivals.append((time.monotonic(), cell_index, msg["content"]))
        return super().output(outs, msg, display_id, cell_index)

    async def async_execute_cell(self, cell: Any, cell_index: int, *args: Any, **kw: Any) -> Any:
        result = await super().async_execute_cell(cell, cell_index, *args, **kw)
        self.finished[cell_index] = time.monotonic()
        return result


class Ran:
    """A notebook that ran: each cell's outputs, by the cell's name."""

    def __init__(self, nb: Any, client: TimedClient) -> None:
        self.nb = nb
        self.client = client
        self.index = {name: i for i, name in enumerate(CELLS)}

    def outputs(self, name: str) -> list[dict[str, Any]]:
        return self.nb.cells[self.index[name]].outputs

    def text(self, name: str, stream: str | None = None) -> str:
        """The cell's stream text (one stream, or both) and plain-text displays, in order."""
        parts = []
        for out in self.outputs(name):
            if out.output_type == "stream" and stream in (None, out.name):
                parts.append(out.text)
            elif out.output_type in ("display_data", "execute_result") and stream is None:
                parts.append(out.data.get("text/plain", "") + "\n")
        return "".join(parts)

    def error(self, name: str) -> dict[str, Any]:
        [error] = [o for o in self.outputs(name) if o.output_type == "error"]
        return error


@pytest.fixture(scope="module", params=["parallel", "python3"])
def ran(request: pytest.FixtureRequest) -> Ran:
    nb = nbformat.v4.new_notebook()
    for name, source in CELLS.items():
        cell = nbformat.v4.new_code_cell(source)
        if name in RAISES:
            cell.metadata["tags"] = ["raises-exception"]
        nb.cells.append(cell)
    nb.cells.append(nbformat.v4.new_code_cell("pool.shutdown()"))
    client = TimedClient(nb, timeout=120, kernel_name=request.param)
    client.execute()
    return Ran(nb, client)


def test_code_runs_in_each_engine_namespace_with_labelled_output(ran: Ran) -> None:
    text = ran.text("print", "stdout")
    assert sorted(text.splitlines()) == ["[stdout:0] hello True", "[stdout:1] hello True"]


def test_a_result_is_shown_with_its_engine_and_execution_count(ran: Ran) -> None:
    labels = re.findall(r"Out\[(\d+):(\d+)\]: (\d+)", ran.text("result"))
    assert sorted(engine for engine, _, _ in labels) == ["0", "1"]
    assert len({pid for _, _, pid in labels}) == 2


def test_output_streams_into_the_cell_while_it_runs(ran: Ran) -> None:
    cell = ran.index["stream"]
    ticks = [
        (when, content["text"])
        for when, index, content in ran.client.arrivals
        if index == cell and "tick" in content.get("text", "")
    ]
    assert ticks, "no output arrived"
    first_at, first = ticks[0]
    assert first.startswith("[stdout:0] tick 0")
    # the first line came about two seconds before the cell (which printed for three) ended
    assert ran.client.finished[cell] - first_at > 1.0
    assert ran.text("stream", "stdout").splitlines() == [
        "[stdout:0] tick 0",
        "[stdout:0] tick 1",
        "[stdout:0] tick 2",
    ]


def test_the_progress_line_counts_finished_engines(ran: Ran) -> None:
    [progress] = [o for o in ran.outputs("print") if o.output_type == "display_data"]
    assert progress.data["text/plain"].startswith("%px: 2 of 2 engines finished")


def test_errors_of_every_engine_are_shown_once_and_raise_one_exception(ran: Ran) -> None:
    errors = ran.text("errors", "stderr")
    assert errors.count("[error:0]") == 1
    assert errors.count("[error:1]") == 1
    assert errors.count("ZeroDivisionError") >= 2
    error = ran.error("errors")
    assert error.ename == "ParallelCellError"
    assert "engine 0: ZeroDivisionError: division by zero" in error.evalue
    assert "engine 1: ZeroDivisionError: division by zero" in error.evalue


def test_targets_pick_engines_by_id_and_by_slice(ran: Ran) -> None:
    assert ran.text("target_one", "stdout") == "[stdout:1] engine 1\n"
    assert ran.text("target_slice", "stdout") == "[stdout:0] engine 0\n"


def test_a_timeout_interrupts_the_engines_and_the_pool_keeps_serving(ran: Ran) -> None:
    cell = ran.index["timeout"]
    error = ran.error("timeout")
    assert error.ename == "EngineTimeout"
    assert "engines 0, 1 still ran after 1 s and were interrupted" in error.evalue
    assert "KeyboardInterrupt" in ran.text("timeout", "stderr")
    started = min(when for when, index, _ in ran.client.arrivals if index == cell)
    assert ran.client.finished[cell] - started < 30  # not the minute the code asked for
    assert sorted(ran.text("after_timeout", "stdout").splitlines()) == [
        "[stdout:0] still serving",
        "[stdout:1] still serving",
    ]


def test_noblock_returns_at_once_and_pxresult_shows_the_output(ran: Ran) -> None:
    assert ran.text("noblock") == ""
    assert ran.text("noblock_ready", "stdout") == "ready at once: False\n"
    assert sorted(ran.text("pxresult", "stdout").splitlines()) == [
        "[stdout:0] later",
        "[stdout:1] later",
    ]


def test_a_noblock_run_is_interrupted_at_its_timeout_without_pxresult(ran: Ran) -> None:
    assert ran.text("noblock_timeout") == ""
    assert ran.text("noblock_timed_out", "stdout") == "ended by the timeout: True\n"
    error = ran.error("pxresult_timed_out")
    assert error.ename == "EngineTimeout"
    assert "engines 0, 1 still ran after 1 s and were interrupted" in error.evalue


def test_group_outputs_engine_keeps_each_engines_lines_together(ran: Ran) -> None:
    lines = ran.text("group_engine", "stdout").splitlines()
    assert lines == [
        "[stdout:0] first",
        "[stdout:0] second",
        "[stdout:1] first",
        "[stdout:1] second",
    ]


def test_group_outputs_type_shows_stdout_then_stderr_then_results(ran: Ran) -> None:
    kinds = []
    for out in ran.outputs("group_type"):
        if out.output_type == "stream":
            kinds += [out.name] * out.text.count("\n")
        elif "Out[" in out.data.get("text/plain", ""):
            kinds.append("result")
    assert kinds == ["stdout", "stdout", "stderr", "stderr", "result", "result"]


def test_stop_on_error_interrupts_the_other_engines(ran: Ran) -> None:
    error = ran.error("stop_on_error")
    assert error.ename == "ParallelCellError"
    assert "engine 0: ZeroDivisionError" in error.evalue
    assert "engine 1: KeyboardInterrupt" in error.evalue


def test_rich_output_is_shown_as_itself(ran: Ran) -> None:
    [html] = [o for o in ran.outputs("rich") if "text/html" in o.get("data", {})]
    assert html.data["text/html"] == "<b>bold</b>"
    assert "[output:0]" in ran.text("rich", "stdout")


def test_a_line_redrawn_with_carriage_returns_keeps_its_label(ran: Ran) -> None:
    text = ran.text("progress_bar", "stdout")
    # what a frontend shows: each line from its last carriage return
    shown = [line.rsplit("\r", 1)[-1] for line in text.split("\n")]
    assert shown == ["[stdout:0] 100%", ""]


def test_a_display_an_engine_updates_is_updated_in_place(ran: Ran) -> None:
    shown = [
        o.data["text/plain"]
        for o in ran.outputs("display_update")
        if o.output_type == "display_data" and not o.data["text/plain"].startswith("%px:")
    ]
    assert sorted(shown) == ["'second 0'", "'second 1'"]  # no 'first', no third output
    labels = ran.text("display_update", "stdout").split()
    assert sorted(labels) == ["[output:0]", "[output:1]"]


def test_a_figure_drawn_on_an_engine_is_shown_as_an_image(ran: Ran) -> None:
    [image] = [o for o in ran.outputs("figure") if "image/png" in o.get("data", {})]
    assert len(image.data["image/png"]) > 1000
    assert "[output:1]" in ran.text("figure", "stdout")


def test_engine_magics_run_on_the_engine(ran: Ran) -> None:
    assert "per loop" in ran.text("timeit", "stdout")


def test_autopx_runs_cells_on_the_engines_until_switched_off(ran: Ran) -> None:
    assert "%autopx on" in ran.text("autopx_on", "stdout")
    assert "%autopx off" in ran.text("autopx_off", "stdout")
    text = ran.text("auto_check", "stdout")
    assert "local False" in text
    assert "[stdout:0] remote 5" in text
    assert "[stdout:1] remote 5" in text


def test_pxconfig_sets_the_defaults(ran: Ran) -> None:
    assert "--targets 1" in ran.text("config", "stdout")
    assert ran.text("configured") == "[stdout:1] configured\n"  # and no progress line


def test_bad_targets_and_options_are_clear_errors(ran: Ran) -> None:
    assert "UsageError: --targets '7': no engine 7 (engines: 0, 1)" in ran.text("bad_targets")
    assert "UsageError: %px: unknown option '--colour'" in ran.text("bad_option")


def test_interrupting_the_cell_interrupts_the_engines_promptly() -> None:
    km, kc = start_new_kernel(kernel_name="parallel")
    try:
        reply = kc.execute_interactive(SETUP, timeout=120)
        assert reply["content"]["status"] == "ok"
        msg_id = kc.execute("%px import time; time.sleep(120)")
        time.sleep(3)
        km.interrupt_kernel()
        reply = kc.get_shell_msg(timeout=30)
        assert reply["parent_header"]["msg_id"] == msg_id
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        reply = kc.execute_interactive("%px print('served')", timeout=60)
        assert reply["content"]["status"] == "ok"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_targets_are_read_like_list_indexes() -> None:
    ids = [0, 1, 2, 3, 4]
    assert targets.select("all", ids) == ids
    assert targets.select("0,2", ids) == [0, 2]
    assert targets.select("::2", ids) == [0, 2, 4]
    assert targets.select("1:3", ids) == [1, 2]
    assert targets.select("-1", ids) == [4]
    assert targets.select("0,3:", ids) == [0, 3, 4]
    for bad, message in [
        ("9", "no engine 9"),
        ("x", "'x' is not an engine id"),
        ("::0", "step cannot be zero"),
        ("3:1", "names no engine"),
    ]:
        with pytest.raises(targets.TargetError, match=message):
            targets.select(bad, ids)


def test_options_are_parsed_and_the_code_is_left_as_written() -> None:
    options, code = settings.parse(
        "--targets ::2 --noblock --timeout=2.5 print(-1 --2)", settings.Settings(), "%px"
    )
    assert (options.targets, options.block, options.timeout) == ("::2", False, 2.5)
    assert code == "print(-1 --2)"
    with pytest.raises(settings.OptionError, match="--group-outputs is one of"):
        settings.parse("--group-outputs colour x", settings.Settings(), "%px")
    with pytest.raises(settings.OptionError, match="--timeout is a number"):
        settings.parse("--timeout -1 x", settings.Settings(), "%px")


def test_pool_magic_starts_attaches_and_stops_the_magics_pool() -> None:
    nb = nbformat.v4.new_notebook()
    sources = [
        "%load_ext parallel_kernel\nfrom parallel_kernel import Pool\nowner = Pool(1)",
        "%pool connect {owner.engines[0].connection_file}",
        "%px print('attached', get_ipython().kernel.engine_id)",
        "%pool stop",
        "print(owner.submit(pow, 2, 3).result())",
        "%pool start 2",
        "%px print('started')",
        "%pool stop",
        "%px print(1)",
        "owner.shutdown()",
    ]
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    nb.cells[8].metadata["tags"] = ["raises-exception"]
    NotebookClient(nb, timeout=120, kernel_name="parallel").execute()

    def text(i: int) -> str:
        return "".join(o.get("text", "") for o in nb.cells[i].outputs)

    assert text(2) == "[stdout:0] attached 0\n"
    assert "stopped <Pool" in text(3)
    assert text(4) == "8\n"  # the attached engine was left running
    assert sorted(text(6).splitlines()) == ["[stdout:0] started", "[stdout:1] started"]
    assert "no pool is active for the parallel magics" in text(8)


def test_the_magics_in_a_terminal_ipython_print_labelled_lines(tmp_path) -> None:
    code = (
        "%load_ext parallel_kernel\n"
        "from parallel_kernel import Pool\n"
        "pool = Pool(2).activate()\n"
        "%px import os; print('pid', os.getpid() > 0)\n"
        "%px 6 * 7\n"
        "pool.shutdown()\n"
    )
    out = run(
        [sys.executable, "-m", "IPython", "--quick", "--no-banner", "-c", code],
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert sorted(lines[:2]) == ["[stdout:0] pid True", "[stdout:1] pid True"]
    assert sorted(lines[2:4]) == ["Out[0:2]: 42", "Out[1:2]: 42"]
    assert "%px:" not in out.stdout  # no progress line outside a kernel
