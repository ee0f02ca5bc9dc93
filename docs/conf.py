"""Sphinx configuration of the parallel_kernel documentation.

Build it with ``python -m sphinx -W --keep-going -b html docs docs/_build/html``.
Everything is local: no intersphinx, nothing fetched while building.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# document the source tree, not whatever copy of the package is installed
sys.path.insert(0, str(ROOT))

from parallel_kernel import __version__  # noqa: E402

project = "parallel_kernel"
author = "the parallel_kernel developers"
copyright = "the parallel_kernel developers"
version = release = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# The Markdown pages are also read on GitHub: their links between pages are
# GitHub-style heading anchors (``protocol.md#the-task-channel``), so MyST
# makes the same anchors for every heading down to level 3.
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"show-inheritance": True}

html_theme = "pydata_sphinx_theme"
html_title = f"parallel_kernel {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
# the pages form one flat list, which the top bar shows: no section sidebar
html_sidebars = {"**": []}
html_show_sourcelink = False


def _trait_docstring(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """Document a configurable trait by its ``help``, default and command-line option."""
    from traitlets import TraitType

    if not isinstance(obj, TraitType):
        return
    owner, _, attribute = name.rpartition(".")
    cls = owner.rpartition(".")[2]
    default = obj.default()
    shown = default.__qualname__ if isinstance(default, type) else repr(default)
    lines[:] = [
        *(obj.help or "").splitlines(),
        "",
        f"Configurable (``{type(obj).__name__}``, default ``{shown}``): "
        f"``--{cls}.{attribute}=...`` on the command line, or "
        f"``c.{cls}.{attribute} = ...`` in ``ipython_kernel_config.py``.",
    ]


def _hide_private_parameters(
    app: Any, what: str, name: str, obj: Any, options: Any, signature: str | None, ret: str | None
) -> tuple[str | None, str | None] | None:
    """Leave parameters whose names start with ``_`` (internal ones) out of signatures."""
    if not signature or ", _" not in signature:
        return None
    return re.sub(r", _\w+(: [^,=)]+)?( = [^,)]+)?(?=[,)])", "", signature), ret


def setup(app: Any) -> None:
    app.connect("autodoc-process-docstring", _trait_docstring)
    app.connect("autodoc-process-signature", _hide_private_parameters)
