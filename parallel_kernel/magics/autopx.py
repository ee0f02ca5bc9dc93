"""``%autopx``: every following cell runs on the engines, until ``%autopx`` again.

A cell transformer (IPython's ``input_transformers_cleanup``, which see the
cell as typed) puts ``%%px`` above each cell; a cell that starts with
``%autopx`` (to switch the mode off), ``%pxconfig``, ``%pool`` or ``%%px`` is
left alone.
"""

from __future__ import annotations

from typing import Any


class AutoPx:
    """The transformer; installed while ``%autopx`` is on."""

    def __init__(self, ipython: Any) -> None:
        self.ipython = ipython

    @property
    def on(self) -> bool:
        """Whether cells run on the engines now."""
        return self in self.ipython.input_transformers_cleanup

    def toggle(self) -> bool:
        """Switch the mode; whether it is on now."""
        transformers = self.ipython.input_transformers_cleanup
        if self.on:
            transformers.remove(self)
        else:
            transformers.append(self)
        return self.on

    def __call__(self, lines: list[str]) -> list[str]:
        source = "".join(lines)
        first = source.lstrip().split("\n", 1)[0].strip()
        if not source.strip() or first.startswith(("%autopx", "%pxconfig", "%pool", "%%px")):
            return lines
        return ["%%px\n", *lines]
