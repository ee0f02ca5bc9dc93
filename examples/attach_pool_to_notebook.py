"""Attach a pool to the kernel behind a running notebook, read its variables, run code on them.

Open a notebook on the "Python 3 (parallel)" kernel (getting-started.ipynb
defines ``shared_value`` and ``squares``), then from a terminal:

    python examples/attach_pool_to_notebook.py                   # the newest kernel
    python examples/attach_pool_to_notebook.py kernel-1a2b.json  # a given one

A connection file may be given by path, by name in the Jupyter runtime
directory, or by a unique part of its name; ``%connect_info`` in the notebook
shows the notebook's own.  The notebook keeps running and keeps its state:
the pool only sends tasks to it, and leaves it running when it shuts down.
"""

from __future__ import annotations

import argparse

from jupyter_client import find_connection_file

from parallel_kernel import Pool


def defined(names: list[str]) -> list[str]:
    """Runs in the notebook's kernel, whose namespace is this function's globals."""
    return [name for name in names if name in globals()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "connection_file",
        nargs="?",
        default="kernel-*.json",
        help="a kernel's connection file (default: the newest in the runtime directory)",
    )
    parser.add_argument(
        "names", nargs="*", default=["shared_value", "squares"], help="variables to read"
    )
    args = parser.parse_args()

    path = find_connection_file(args.connection_file)
    print(f"attaching to {path}")
    with Pool.connect([path]) as notebook:
        found = notebook.submit(defined, args.names).result(timeout=60)
        for name in args.names:
            if name not in found:
                print(f"the notebook has no variable {name!r}")
        [values] = notebook.pull(found)
        for name, value in zip(found, values, strict=True):
            print(f"{name} = {value!r}")
        if "squares" in found:
            total = notebook.submit(lambda: sum(squares)).result(timeout=60)  # noqa: F821
            print("computed in the notebook's kernel: sum(squares) =", total)


if __name__ == "__main__":
    main()
