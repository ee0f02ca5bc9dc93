"""jupyter_kernel_test's conformance suite against kernelspec ``parallel``.

Every attribute jupyter_kernel_test supports for a Python kernel is set, so
the parallel kernel is held to the same checks as the standard Python kernel.
"""

from __future__ import annotations

import jupyter_kernel_test


class ParallelKernelConformance(jupyter_kernel_test.KernelTests):
    kernel_name = "parallel"
    language_name = "python"
    file_extension = ".py"

    code_hello_world = "print('hello, world')"
    code_stderr = "import sys; print('test', file=sys.stderr)"
    completion_samples = [
        {"text": "zi", "matches": {"zip"}},
        {"text": "import itertoo", "matches": {"itertools"}},
    ]
    complete_code_samples = ["1", "print('hello, world')", "def f(x):\n  return x*2\n\n\n"]
    incomplete_code_samples = ["print('''hello", "def f(x):\n  x*2"]
    invalid_code_samples = ["import = 7q"]
    code_page_something = "zip?"
    code_generate_error = "raise"
    code_execute_result = [
        {"code": "1+2+3", "result": "6"},
        {"code": "[n*n for n in range(1, 4)]", "result": "[1, 4, 9]"},
    ]
    code_display_data = [
        {
            "code": "from IPython.display import HTML, display; display(HTML('<b>test</b>'))",
            "mime": "text/html",
        },
        {
            "code": "from IPython.display import Math, display; display(Math('\\\\frac{1}{2}'))",
            "mime": "text/latex",
        },
    ]
    code_history_pattern = "1?2*"
    # "range" is left out as in jupyter_kernel_test's own ipykernel test: IPython answers
    # a range query for the current session with session number 0, and the stock
    # python3 kernel fails that subtest exactly as this one would.
    supported_history_operations = ("tail", "search")
    code_inspect_sample = "zip"
    code_clear_output = "from IPython.display import clear_output; clear_output()"


class ParallelKernelIopubWelcome(jupyter_kernel_test.IopubWelcomeTests):
    kernel_name = "parallel"
    support_iopub_welcome = True
