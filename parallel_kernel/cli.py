"""The ``parallel-kernel`` command (also ``python -m parallel_kernel``).

Subcommands: ``install``, ``uninstall``, ``demo``, ``clean``, ``kernel``,
``engine`` and ``ipengine``.  Options
without a subcommand, for instance ``-f connection.json`` as in kernel.json,
start the kernel with those options, the way ``python -m ipykernel`` does.
``kernel install`` is ``install`` (not ipykernel's own subcommand, which would
install the stock ``python3`` kernelspec).
"""

from __future__ import annotations

import argparse
import sys

from jupyter_client.kernelspec import NoSuchKernel

from . import kernelspec
from ._version import __version__


def _location_options(parser: argparse.ArgumentParser) -> None:
    """The options saying where a kernelspec goes (``--user``/``--sys-prefix``/``--prefix``)
    and under which name, shared by ``install`` and ``uninstall``."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="the current user's Jupyter data dir")
    where.add_argument(
        "--sys-prefix",
        action="store_const",
        const=sys.prefix,
        dest="prefix",
        help=f"this environment's prefix ({sys.prefix})",
    )
    where.add_argument("--prefix", help="another prefix, e.g. a virtualenv's")
    parser.add_argument(
        "--name",
        default=kernelspec.KERNEL_NAME,
        help=f"the kernelspec's name (default {kernelspec.KERNEL_NAME!r})",
    )


def _kernel_files(parser: argparse.ArgumentParser) -> None:
    """The arguments of a command that asks running kernels: their files, and a timeout."""
    parser.add_argument("connection_files", nargs="+", metavar="CONNECTION_FILE")
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds each kernel has to answer (5)"
    )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for the subcommands."""
    parser = argparse.ArgumentParser(
        prog="parallel-kernel",
        description="A Jupyter kernel that is also a parallel task-queue engine. "
        "Without a subcommand, the arguments are passed to the kernel application "
        "(see 'parallel-kernel kernel --help-all').",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    install = commands.add_parser(
        "install",
        help="install the kernelspec",
        description="Install the kernelspec so Jupyter launches this Python with the parallel "
        "kernel. Without a location option, installs system-wide.",
    )
    _location_options(install)
    install.add_argument(
        "--display-name", help=f"the name frontends show (default {kernelspec.DISPLAY_NAME!r})"
    )
    install.add_argument(
        "--env",
        nargs=2,
        action="append",
        metavar=("KEY", "VALUE"),
        default=[],
        help="set an environment variable for the kernel (repeatable)",
    )

    uninstall = commands.add_parser(
        "uninstall",
        help="remove an installed kernelspec",
        description="Remove the kernelspec installed with the same location options.",
    )
    _location_options(uninstall)

    demo = commands.add_parser(
        "demo",
        help="start local engines and run a small parallel job on them",
        description="Start engines from the installed kernelspec, run a small workload on them "
        "through apply_request, and print what happened.",
    )
    demo.add_argument(
        "-n", "--engines", type=_positive, default=2, help="number of engines (default 2)"
    )
    demo.add_argument(
        "--kernel-name",
        default=kernelspec.KERNEL_NAME,
        help=f"kernelspec to start engines from (default {kernelspec.KERNEL_NAME!r})",
    )

    clean = commands.add_parser(
        "clean",
        help="remove files that pools' engines which no longer run left in the runtime dir",
        description="Remove the connection files and ipc socket files that engines started by "
        "a pool left in the Jupyter runtime directory when their client was killed (a pool "
        "that ends removes its own, and a new pool cleans up on start). A connection file is "
        "removed only if it names the client process that started its engine, that process "
        "is gone and nothing accepts a connection on the engine's heartbeat socket; a socket "
        "file without its connection file only if nothing listens on it. Files of live "
        "kernels, and of kernels not started by a pool, are never touched.",
    )
    clean.add_argument(
        "--runtime-dir", help="the directory to clean (default: jupyter's runtime directory)"
    )
    clean.add_argument("--dry-run", action="store_true", help="only list what would be removed")

    stacks = commands.add_parser(
        "stacks",
        help="print the live Python stack of what running engines are doing",
        description="Ask each kernel (a connection file, or a bare name looked up in the "
        "Jupyter runtime directory) for the stack of what it runs, user frames only, "
        "innermost last; it is read without stopping or slowing the task. An idle kernel "
        "says so.",
    )
    _kernel_files(stacks)

    status = commands.add_parser(
        "status",
        help="print the state, running request, memory and CPU use of running kernels",
        description="Ask each kernel (a connection file, or a bare name looked up in the "
        "Jupyter runtime directory) on its control channel for its memory and CPU time and "
        "for what it runs, twice half a second apart, and print a table. A busy kernel "
        "answers too. Inside a program, print(pool.status()) shows a pool's engines.",
    )
    _kernel_files(status)

    console = commands.add_parser(
        "console",
        help="a terminal console in a subshell of a running kernel (answers while it is busy)",
        description="Attach a jupyter console to a new subshell of a running kernel (a "
        "connection file, or a bare name looked up in the Jupyter runtime directory), so it "
        "answers while the kernel's main shell runs a task or a cell: look at the globals "
        "tasks left, module state or memory use. Reading is safe; changing what a running "
        "task uses is at your risk. The subshell is deleted when the console exits, and the "
        "kernel keeps running. Arguments after -- go to jupyter console.",
    )
    console.add_argument("connection_file", metavar="CONNECTION_FILE")
    console.add_argument("console_args", nargs="*", help=argparse.SUPPRESS)

    commands.add_parser(
        "kernel",
        help="run the kernel (arguments as for ipykernel, e.g. -f connection.json)",
        add_help=False,
    )
    engine = commands.add_parser(
        "engine",
        help="run the kernel as an engine for pools on other hosts (Pool.connect)",
        description="Listen on an address of this host and serve as an engine for "
        "Pool.connect: write a connection file (free ports, a fresh key and, by default, "
        "CurveZMQ keys) unless it exists, then run the kernel with it. Copy the file to "
        "the client. Arguments after -- go to the kernel application, e.g. "
        "-- --ParallelKernel.exec_lines='import numpy'.",
    )
    engine.add_argument("--ip", required=True, help="the address to listen on, e.g. 10.0.0.5")
    engine.add_argument(
        "--connection-file",
        help="connection file to write or use (default: ./engine-ID.json)",
    )
    engine.add_argument(
        "--encryption",
        choices=["curve", "none"],
        default="curve",
        help="CurveZMQ-encrypt the sockets (default) or only sign messages",
    )
    engine.add_argument(
        "--engine-id", type=int, default=0, help="the id in replies and logs (default 0)"
    )
    engine.add_argument("kernel_args", nargs="*", help=argparse.SUPPRESS)

    commands.add_parser(
        "ipengine",
        help="run the kernel as an ipyparallel engine (arguments as for ipengine)",
        add_help=False,
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:2] == ["kernel", "install"]:
        argv = argv[1:]  # ipykernel's own subcommand would install the stock python3 spec
    elif argv and argv[0] == "kernel":
        return _run_kernel(argv[1:])
    if argv and argv[0] == "ipengine":
        from .ipengine import main as run_engine

        run_engine(argv[1:])
        return 0
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        return _run_kernel(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return _run_command(args)


def _run_kernel(argv: list[str]) -> int:
    from .kernel import launch

    launch(argv)
    return 0


def _run_command(args: argparse.Namespace) -> int:
    """Run the ``install``/``uninstall``/``clean``/... subcommand; its exit status
    (a failure is one line on stderr, not a traceback)."""
    try:
        if args.command == "install":
            path = kernelspec.install(
                user=args.user,
                prefix=args.prefix,
                kernel_name=args.name,
                display_name=args.display_name,
                env=dict(args.env),
            )
            print(f"Installed kernelspec {args.name} in {path}")
        elif args.command == "uninstall":
            path = kernelspec.uninstall(user=args.user, prefix=args.prefix, kernel_name=args.name)
            print(f"Removed kernelspec {args.name} from {path}")
        elif args.command == "engine":
            from .engine import run_engine

            run_engine(
                args.connection_file or f"engine-{args.engine_id}.json",
                args.ip,
                encryption=args.encryption,
                engine_id=args.engine_id,
                kernel_args=args.kernel_args,
            )
        elif args.command == "demo":
            from .demo import run_demo

            return run_demo(engines=args.engines, kernel_name=args.kernel_name)
        elif args.command == "console":
            from .pool.arguments import connection_file_path
            from .subshell_console import main as run_console

            run_console(connection_file_path(args.connection_file), args.console_args)
        elif args.command == "stacks":
            from .pool.stacks import stacks_of_files

            print("\n".join(stacks_of_files(args.connection_files, args.timeout)), end="")
        elif args.command == "status":
            from .pool.engine_status import status_of_files

            print(status_of_files(args.connection_files, args.timeout))
        elif args.command == "clean":
            from .pool import runtime_files

            for path in runtime_files.clean(args.runtime_dir, dry_run=args.dry_run):
                print(f"{'would remove' if args.dry_run else 'removed'} {path}")
    except NoSuchKernel as exc:
        print(
            f"parallel-kernel {args.command}: error: no kernelspec named {exc.name!r}",
            file=sys.stderr,
        )
        return 1
    except (OSError, ValueError, ImportError, RuntimeError) as exc:
        print(f"parallel-kernel {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0
