"""The kernel side: a Jupyter kernel that is also a task-queue engine.

It never imports the client side (``parallel_kernel.pool``); the two meet in
``serialize``, ``wire`` and ``protocol`` and in the protocol ``docs/protocol.md``
describes.

* :mod:`.parallelkernel`: :class:`ParallelKernel`, its traits and message handlers;
* :mod:`.control_requests`: the control requests it adds (abort, targeted interrupt, stacks);
* :mod:`.apply`: running one ``apply_request``, the same on both channels;
* :mod:`.interrupts`: where a SIGINT may land (only in a request's user code);
* :mod:`.stacks`, :mod:`.postmortem`, :mod:`.task_input`: live stacks, post-mortem
  debugging, ``input()`` in a task (asked of its caller);
* :mod:`.taskchannel`: the task channel, the fast path for ``apply_request``;
* :mod:`.aborts`: the record of aborted requests;
* :mod:`.replies`: one reply for every request; :mod:`.shell_order`: replies to a
  client in the order of its requests (``kernel_info_request`` answered at once otherwise);
* :mod:`.compat`: every private name of ipykernel and IPython the kernel uses;
* :mod:`.ipyparallel_format`: ipyparallel's ``apply_request`` format;
* :mod:`.app`: :class:`ParallelKernelApp`, the application that launches the kernel.
"""

from .app import ParallelKernelApp, launch
from .parallelkernel import ParallelKernel

__all__ = ["ParallelKernel", "ParallelKernelApp", "launch"]
