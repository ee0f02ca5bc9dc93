"""The options of the parallel magics, their defaults (``%pxconfig``) and their parsing.

Options come first on the magic's line, each starting with ``--``; the rest of
the line is code, taken as it is (``%px --targets 0 print(-1)``)::

    --targets SPEC          engines to run on (see :mod:`.targets`); default all
    --block / --noblock     wait for the engines (default) or return at once
    --group-outputs WAY     order (as it arrives), engine, or type
    --timeout S             interrupt engines still running after S seconds
                            (``none``: no limit, the default)
    --stop-on-error         on the first error, interrupt the other engines
    --no-stop-on-error      let every engine finish (the default)
    --progress / --no-progress   the line that counts finished engines
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

#: The ways of grouping output (``--group-outputs``).
GROUPINGS = ("order", "engine", "type")


class OptionError(ValueError):
    """A magic's options that cannot be understood; the message says why."""


@dataclasses.dataclass
class Settings:
    """How a ``%px`` runs; ``%pxconfig`` changes the defaults of the session."""

    targets: str = "all"
    block: bool = True
    group_outputs: str = "order"
    timeout: float | None = None
    stop_on_error: bool = False
    progress: bool = True

    def describe(self) -> str:
        """The settings as the options that give them."""
        timeout = "none" if self.timeout is None else f"{self.timeout:g}"
        return " ".join(
            [
                f"--targets {self.targets}",
                "--block" if self.block else "--noblock",
                f"--group-outputs {self.group_outputs}",
                f"--timeout {timeout}",
                "--stop-on-error" if self.stop_on_error else "--no-stop-on-error",
                "--progress" if self.progress else "--no-progress",
            ]
        )


_FLAGS: dict[str, tuple[str, bool]] = {
    "--block": ("block", True),
    "--noblock": ("block", False),
    "--stop-on-error": ("stop_on_error", True),
    "--no-stop-on-error": ("stop_on_error", False),
    "--progress": ("progress", True),
    "--no-progress": ("progress", False),
}
_VALUED = ("--targets", "--group-outputs", "--timeout")


def parse(line: str, defaults: Settings, magic: str) -> tuple[Settings, str]:
    """The settings a magic's ``line`` asks for (over ``defaults``), and the code after them."""
    changes: dict[str, Any] = {}
    rest = line.lstrip()
    while rest.startswith("--"):
        word, _, after = rest.partition(" ")
        name, equals, value = word.partition("=")
        if name in _FLAGS:
            if equals:
                raise OptionError(f"{magic}: {name} takes no value")
            field, flag = _FLAGS[name]
            changes[field] = flag
            rest = after.lstrip()
            continue
        if name not in _VALUED:
            known = ", ".join([*_VALUED, *_FLAGS])
            raise OptionError(f"{magic}: unknown option {name!r} (options: {known})")
        if not equals:
            value, _, after = after.lstrip().partition(" ")
        if not value:
            raise OptionError(f"{magic}: {name} needs a value")
        changes.update(_valued(name, value, magic))
        rest = after.lstrip()
    return dataclasses.replace(defaults, **changes), rest


def _valued(name: str, value: str, magic: str) -> dict[str, Any]:
    if name == "--targets":
        return {"targets": value}
    if name == "--group-outputs":
        if value not in GROUPINGS:
            raise OptionError(
                f"{magic}: --group-outputs is one of {', '.join(GROUPINGS)}, not {value!r}"
            )
        return {"group_outputs": value}
    if value.lower() == "none":
        return {"timeout": None}
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not seconds > 0 or math.isinf(seconds):
        raise OptionError(
            f"{magic}: --timeout is a number of seconds above 0 or none, not {value!r}"
        )
    return {"timeout": seconds}
