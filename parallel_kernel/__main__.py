"""``python -m parallel_kernel``: run the kernel, or a subcommand (install, demo, ...)."""

import sys

if __name__ == "__main__":
    # As ipykernel's launcher does: a kernel started from a directory must not
    # import that directory's modules in place of installed ones by accident.
    if sys.path and sys.path[0] == "":
        del sys.path[0]

    from parallel_kernel.cli import main

    sys.exit(main())
