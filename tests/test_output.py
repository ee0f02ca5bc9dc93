"""What tasks print and display reaches the notebook cell or script that asked for it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import nbformat
import pytest
from conftest import Driver, outputs_of
from nbclient import NotebookClient

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

pytestmark = pytest.mark.timeout(240)


def run_notebook(*sources: str):
    nb = nbformat.v4.new_notebook()
    nb.metadata.kernelspec = {"name": "parallel", "display_name": "x", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(source)) for source in sources]
    NotebookClient(nb, timeout=120).execute()
    return nb.cells


def test_engine_output_becomes_output_of_the_cell_that_submitted_the_task() -> None:
    cells = run_notebook(
        """
        from parallel_kernel import Pool
        pool = Pool(2, forward_output=True)
        """,
        """
        def report(x):
            import matplotlib.pyplot as plt
            from IPython.display import HTML, display
            print("value", x)
            display(HTML(f"<b>{x}</b>"))
            plt.plot([0, x])
            plt.show()
            return x * 6
        pool.submit(report, 7).result()
        """,
        """
        import time
        late = pool.submit(lambda: (time.sleep(1), print("late output"))[0])
        """,
        "late.result(); late.display_outputs()",
        """
        def show_slider():
            import ipywidgets
            from IPython.display import display
            display(ipywidgets.IntSlider(value=3))
        pool.submit(show_slider).result()
        """,
        "pool.shutdown()",
    )
    report = cells[1].outputs
    kinds = [o.output_type for o in report]
    assert kinds.count("display_data") == 2, kinds
    assert kinds[-1] == "execute_result", kinds
    stream = "".join(o.text for o in report if o.output_type == "stream")
    assert stream.startswith("[engine ")
    assert stream.endswith("] value 7\n")
    html, figure = (o for o in report if o.output_type == "display_data")
    assert html.data["text/html"] == "<b>7</b>"
    assert figure.data["image/png"]  # the engine's inline matplotlib figure
    assert report[-1].data["text/plain"] == "42"

    # shown again later, in the cell that asks
    assert outputs_of(cells[3]).endswith("] late output\n")

    # a widget lives on the engine: its view is not forwarded, its text is
    shown = [o for o in cells[4].outputs if o.output_type == "display_data"]
    assert [o.data["text/plain"] for o in shown] == ["IntSlider(value=3)"]
    assert all(WIDGET_VIEW not in o.data for o in shown)


def test_late_output_is_parented_to_the_cell_that_submitted_the_task(
    fresh_kernel: Driver,
) -> None:
    """A frontend shows output where its parent header says: the submitting cell's."""
    notebook = fresh_kernel
    notebook.execute("from parallel_kernel import Pool\npool = Pool(1, forward_output=True)")
    submitting = notebook.client.execute(
        "late = pool.submit(lambda: (__import__('time').sleep(1), print('late output'))[0])"
    )
    assert notebook.reply(submitting)["content"]["status"] == "ok"
    running = notebook.client.execute(
        "import time\nprint(pool.submit(abs, -7).result())\ntime.sleep(3)\nprint('still running')"
    )
    assert notebook.reply(running, timeout=60)["content"]["status"] == "ok"
    streams = {
        msg_id: "".join(
            m["content"]["text"] for m in notebook.iopub(msg_id) if m["msg_type"] == "stream"
        )
        for msg_id in (running, submitting)
    }
    assert streams[running] == "7\nstill running\n"
    assert streams[submitting] == "[engine 0] late output\n"
    notebook.execute("pool.shutdown()")


def test_a_script_sees_engine_output_prefixed_with_the_engine() -> None:
    script = textwrap.dedent(
        """
        from parallel_kernel import Pool

        def work():
            from IPython.display import HTML, display
            print("from the engine")
            display(HTML("<i>rich</i>"))
            return 1

        with Pool(1, forward_output=True) as pool:
            pool.submit(work).result(timeout=60)
            print("---")
            quiet = Pool.connect([pool.engines[0].connection_file])
            future = quiet.submit(work)
            future.result(timeout=60)
            future.display_outputs()
            quiet.shutdown()
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=180, check=True
    )
    forwarded, shown = result.stdout.split("---\n")
    expected = "[engine 0] from the engine\n[engine 0] <IPython.core.display.HTML object>\n"
    assert forwarded == expected
    assert shown == expected
