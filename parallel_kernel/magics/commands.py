"""The magics themselves: each parses its line and hands the work to its module."""

from __future__ import annotations

import shlex
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

from . import active, settings
from .autopx import AutoPx
from .run import ParallelRun
from .targets import TargetError


@magics_class
class ParallelMagics(Magics):
    """``%px``, ``%%px``, ``%pxresult``, ``%autopx``, ``%pxconfig`` and ``%pool``."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.defaults = settings.Settings()
        self.last: ParallelRun | None = None
        self.autopx = AutoPx(shell)
        self.started: Any = None

    @line_magic
    def px(self, line: str) -> ParallelRun | None:
        """Run code on the engines: ``%px [options] CODE`` (see ``%pxconfig?``)."""
        options, code = self._parse(line, "%px")
        if not code.strip():
            raise UsageError("%px: no code to run (%px [options] CODE, or %%px for a cell)")
        return self._run(code, options)

    @cell_magic("px")
    def px_cell(self, line: str, cell: str) -> ParallelRun | None:
        """Run the cell on the engines: ``%%px [options]``."""
        options, rest = self._parse(line, "%%px")
        if rest.strip():
            raise UsageError(f"%%px: {rest.strip()!r} is not an option (the code goes below)")
        return self._run(cell, options)

    @line_magic
    def pxresult(self, line: str) -> None:
        """Show the output of the last ``%px --noblock`` (waiting for it is up to you)."""
        if line.strip():
            raise UsageError("%pxresult takes no arguments")
        if self.last is None:
            raise UsageError("%pxresult: no %px has run yet")
        self.last.show()

    @line_magic
    def autopx(self, line: str) -> None:
        """Run every following cell on the engines, until ``%autopx`` again."""
        if line.strip():
            raise UsageError("%autopx takes no arguments")
        if not self.autopx.on:
            _active()
        on = self.autopx.toggle()
        print("%autopx on: cells run on the engines" if on else "%autopx off")

    @line_magic
    def pxconfig(self, line: str) -> None:
        """Set the default options of ``%px``; without options, show them.

        Options: ``--targets SPEC`` (all, 0,2, ::2, 1:3, -1), ``--block`` /
        ``--noblock``, ``--group-outputs order|engine|type``, ``--timeout S``
        (or none), ``--stop-on-error`` / ``--no-stop-on-error``,
        ``--progress`` / ``--no-progress``.
        """
        options, rest = self._parse(line, "%pxconfig")
        if rest.strip():
            raise UsageError(f"%pxconfig: {rest.strip()!r} is not an option")
        self.defaults = options
        print(f"%px defaults: {options.describe()}")

    @line_magic
    def pool(self, line: str) -> Any:
        """The active pool: ``%pool start N [KERNEL]``, ``%pool connect FILE...``,
        ``%pool stop``, or ``%pool`` alone to show it."""
        from ..pool import Pool

        words = shlex.split(line)
        if not words:
            return _active()
        command, args = words[0], words[1:]
        if command == "start":
            if not 1 <= len(args) <= 2 or not args[0].isdigit() or int(args[0]) < 1:
                raise UsageError("%pool start N [KERNEL_NAME]: N engines, at least 1")
            kernel = {"kernel_name": args[1]} if len(args) == 2 else {}
            self._started(Pool(int(args[0]), **kernel))
        elif command == "connect":
            if not args:
                raise UsageError("%pool connect FILE...: the engines' connection files")
            self._started(Pool.connect(args))
        elif command == "stop":
            pool = _active()
            active.deactivate(pool)
            pool.shutdown()
            print(f"stopped {pool!r}")
            return None
        else:
            raise UsageError(f"%pool: unknown command {command!r} (start, connect, stop)")
        return _active()

    def _started(self, pool: Any) -> None:
        pool.activate()
        self.started = pool

    def _parse(self, line: str, magic: str) -> tuple[settings.Settings, str]:
        try:
            return settings.parse(line, self.defaults, magic)
        except settings.OptionError as error:
            raise UsageError(str(error)) from None

    def _run(self, code: str, options: settings.Settings) -> ParallelRun | None:
        pool = _active()
        try:
            run = ParallelRun(pool, code, options)
        except TargetError as error:
            raise UsageError(str(error)) from None
        self.last = run
        if not options.block:
            return run
        run.wait()
        return None


def _active() -> Any:
    """The active pool, or a usage error that says how to get one."""
    try:
        return active.current()
    except active.NoActivePool as error:
        raise UsageError(str(error)) from None
