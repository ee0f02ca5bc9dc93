"""Every example in examples/ runs as its README or docstring says, so none of them rots."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import nbformat
import pytest
from conftest import EXAMPLES, Driver, outputs_of
from jupyter_client.manager import KernelManager
from jupyter_core.paths import jupyter_runtime_dir
from nbclient import NotebookClient

NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

pytestmark = pytest.mark.timeout(300)


def code_cells(nb) -> list:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def run_example(*args: str, timeout: float = 180) -> str:
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_examples_are_the_ones_tested_here() -> None:
    assert {path.name for path in NOTEBOOKS} == {
        "getting-started.ipynb",
        "parallel-magics.ipynb",
        "pool-in-a-notebook.ipynb",
    }
    assert {path.name for path in EXAMPLES.glob("*.py")} == {
        "apply_from_script.py",
        "attach_pool_to_notebook.py",
    }
    # example kernelspecs, each installed and used by its own test module
    directories = {p.name for p in EXAMPLES.iterdir() if p.is_dir() and p.name[0] not in "._"}
    assert directories == {"ssh-provisioner"}  # tests/test_ssh_provisioner.py
    assert {p.name for p in (EXAMPLES / "ssh-provisioner").iterdir()} == {
        "README.md",
        "kernel.json",
    }


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_every_example_notebook_runs_on_the_parallel_kernel_without_errors(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.kernelspec.name == "parallel"
    assert all(not cell.get("outputs") for cell in code_cells(nb)), "commit notebooks unexecuted"
    NotebookClient(nb, timeout=120, resources={"metadata": {"path": str(EXAMPLES)}}).execute()
    errors = [o for cell in code_cells(nb) for o in cell.outputs if o.output_type == "error"]
    assert errors == []


def test_getting_started_shows_the_kernel_and_rich_output() -> None:
    nb = nbformat.read(EXAMPLES / "getting-started.ipynb", as_version=4)
    NotebookClient(nb, timeout=60, resources={"metadata": {"path": str(EXAMPLES)}}).execute()
    code = code_cells(nb)
    assert outputs_of(code[0]) == "ParallelKernel | parallel features: True\n"
    assert outputs_of(code[1]) == "285"
    assert code[2].outputs[0].data["text/html"] == "<b>rich output works</b>"
    assert outputs_of(code[3]) == "(0, 36)"


def test_pool_in_a_notebook_with_papermill_parameters(tmp_path: Path) -> None:
    """A notebook on our kernel starts engines, maps with a progress bar, shows their plots."""
    import papermill

    output = tmp_path / "out.ipynb"
    papermill.execute_notebook(
        str(EXAMPLES / "pool-in-a-notebook.ipynb"),
        str(output),
        parameters={"items": 50, "engines": 2},
        kernel_name="parallel",
        progress_bar=False,
        cwd=str(EXAMPLES),
    )
    nb = nbformat.read(output, as_version=4)
    assert nb.metadata.papermill.parameters == {"items": 50, "engines": 2}
    cells = {cell.source.splitlines()[0]: cell for cell in code_cells(nb) if cell.source}

    mapped = cells["import math"]
    [bar] = [o for o in mapped.outputs if o.output_type == "display_data"]
    # tqdm's notebook progress bar, a widget: its last state, saved in the notebook,
    # shows the map complete (the updates came from the pool's thread, as the cell's)
    widgets = nb.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]
    box = widgets[bar.data[WIDGET_VIEW]["model_id"]]["state"]
    parts = [widgets[child.removeprefix("IPY_MODEL_")] for child in box["children"]]
    [progress] = [part["state"] for part in parts if part["model_name"] == "FloatProgressModel"]
    assert progress["value"] == progress["max"] == 50
    assert progress["bar_style"] == "success"
    assert outputs_of(mapped).endswith("50 roots, the last 7.000\n")

    completed = cells["futures = [pool.submit(pow, 2, n) for n in range(20)]"]
    assert completed.outputs[-1].data["text/plain"] == str(2**20 - 1)

    plotted = cells["def histogram(seed):"]
    streams = [o.text for o in plotted.outputs if o.output_type == "stream"]
    assert all(re.fullmatch(r"\[engine [01]\] seed [12]: mean [-+]\d\.\d{3}\n", s) for s in streams)
    assert sorted(s.split("] ")[1][:6] for s in streams) == ["seed 1", "seed 2"]
    figures = [o for o in plotted.outputs if o.output_type == "display_data"]
    assert len(figures) == 2
    assert all(figure.data["image/png"] for figure in figures)

    shown_later = cells["quiet = Pool.connect([pool.engines[0].connection_file])"]
    assert "] seed 3: mean" in outputs_of(shown_later)
    assert [o.output_type for o in shown_later.outputs].count("display_data") == 1

    assert "stopped" in outputs_of(cells["pool.shutdown()"])


def test_a_script_attaches_a_pool_to_a_running_notebook_and_reads_its_variables() -> None:
    # a notebook server's kernel: its connection file in the Jupyter runtime directory
    connection_file = Path(jupyter_runtime_dir()) / f"kernel-{uuid.uuid4()}.json"
    manager = KernelManager(kernel_name="parallel", connection_file=str(connection_file))
    nb = nbformat.read(EXAMPLES / "getting-started.ipynb", as_version=4)
    notebook = NotebookClient(nb, timeout=60, km=manager)
    try:
        with notebook.setup_kernel():
            for index, cell in enumerate(nb.cells):
                notebook.execute_cell(cell, index)
            script = str(EXAMPLES / "attach_pool_to_notebook.py")
            printed = run_example(script, connection_file.name)
            assert f"attaching to {connection_file}" in printed
            assert "shared_value = 'defined in the notebook'" in printed
            assert "squares = [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in printed
            assert "sum(squares) = 285" in printed

            # the notebook goes on, with its state, after the script's pool has closed
            nb.cells.append(nbformat.v4.new_code_cell("len(squares), shared_value"))
            notebook.execute_cell(nb.cells[-1], len(nb.cells) - 1)
            assert outputs_of(nb.cells[-1]) == "(10, 'defined in the notebook')"
            notebook.kc.stop_channels()
    finally:
        manager.shutdown_kernel(now=True)
        manager.cleanup_resources()


def test_the_attach_script_reports_names_the_notebook_lacks(kernel: Driver) -> None:
    kernel.execute("found_here = 42")
    printed = run_example(
        str(EXAMPLES / "attach_pool_to_notebook.py"),
        kernel.manager.connection_file,
        "found_here",
        "not_defined",
    )
    assert "found_here = 42" in printed
    assert "the notebook has no variable 'not_defined'" in printed


def test_apply_from_a_script_starts_its_own_kernel() -> None:
    printed = run_example(str(EXAMPLES / "apply_from_script.py"))
    assert "{'mean': 102.5, 'notebook says': '<no shared_value here>'}" in printed


def test_apply_from_a_script_reaches_a_running_kernel(kernel: Driver) -> None:
    kernel.execute("shared_value = 'defined in the notebook'")
    printed = run_example(
        str(EXAMPLES / "apply_from_script.py"), "--existing", kernel.manager.connection_file
    )
    assert "'notebook says': 'defined in the notebook'" in printed
    assert kernel.manager.is_alive()
