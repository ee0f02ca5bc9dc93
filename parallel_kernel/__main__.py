"""``python -m parallel_kernel``: run the kernel, or a subcommand (install, demo, ...)."""

import sys

from parallel_kernel.cli import main

if __name__ == "__main__":
    sys.exit(main())
