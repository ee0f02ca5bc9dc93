"""A task's traceback shows the user's file name, line numbers and source lines on any engine.

The function's source need not exist on the engine: a notebook cell, code given
to ``exec``, a file on another host.  The client carries the lines it knows.
"""

from __future__ import annotations

import linecache

import nbformat
import pytest
from conftest import outputs_of
from nbclient import NotebookClient

from parallel_kernel import Pool, RemoteError

pytestmark = pytest.mark.timeout(120)

SOURCE = "def analyse(x):\n    y = x * 2\n    raise ValueError(f'bad {y}')  # the failing line\n"
NOWHERE = "/nonexistent/analysis.py"  # no engine can read it


def code_only_the_client_knows():
    """``analyse`` compiled from a file name no engine can read; its lines in linecache here,
    as IPython does for a cell."""
    linecache.cache[NOWHERE] = (len(SOURCE), None, SOURCE.splitlines(True), NOWHERE)
    namespace: dict = {}
    exec(compile(SOURCE, NOWHERE, "exec"), namespace)
    return namespace["analyse"]


@pytest.mark.parametrize("channel", ["task", "shell"])
def test_the_remote_traceback_shows_source_the_engine_cannot_read(channel: str) -> None:
    analyse = code_only_the_client_knows()
    options = {"timeout": 60} if channel == "shell" else {}
    with Pool(1) as pool:
        with pytest.raises(ValueError, match="bad 2") as raised:
            pool.submit(analyse, 1, **options).result(60)
        tb = raised.value.__cause__.tb
        assert f'File "{NOWHERE}", line 3, in analyse' in tb
        assert "raise ValueError(f'bad {y}')  # the failing line" in tb
    # IPython's rendering (the reply's and IOPub's ``traceback``) shows it too
    with Pool(1, wrap_errors=True) as pool, pytest.raises(RemoteError) as wrapped:
        pool.submit(analyse, 2, **options).result(60)
    assert "the failing line" in "\n".join(wrapped.value.traceback)


def test_a_notebook_cells_function_fails_with_its_cells_lines() -> None:
    """A function defined in a notebook (here the stock python3 kernel) and run on a pool."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from parallel_kernel import Pool\n"
            "def risky(n):\n"
            "    total = sum(range(n))\n"
            "    return total / (n - n)  # divides by zero\n"
        ),
        nbformat.v4.new_code_cell(
            "with Pool(1) as pool:\n"
            "    try:\n"
            "        pool.submit(risky, 3).result(60)\n"
            "    except ZeroDivisionError as exc:\n"
            "        print(exc.__cause__.tb)\n"
        ),
    ]
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    shown = outputs_of(nb.cells[1])
    assert "in risky" in shown
    assert "return total / (n - n)  # divides by zero" in shown
