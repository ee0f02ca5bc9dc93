"""Start-up file run by ParallelKernel.exec_files in test_clear.py."""

from_file = "file ran"
