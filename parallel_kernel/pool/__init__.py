"""The client side: :class:`Pool` and the machinery behind it.  Never imports the kernel side.

Where to look (``docs/architecture.md`` tells the whole story):

- :mod:`.api`: ``Pool``, the public face (arguments, packing, shutdown);
- :mod:`.mapping`, :mod:`.all_engines`: ``map``; the calls that go to every engine;
- :mod:`.core`: the loop-thread side of one pool, wiring the parts below;
- :mod:`.engines`, :mod:`.engine_state`: engines' lives and the engine state machine;
- :mod:`.tasks`: the task state machine, attempts and the one retry policy;
- :mod:`.dispatch`: tasks to engines, replies and output to futures;
- :mod:`.control`: cancel, interrupt, timeouts;
- :mod:`.scheduler`, :mod:`.costs`: placement and slot shares;
- :mod:`.connection`, :mod:`.heartbeat`, :mod:`.requests`: one engine's sockets;
- :mod:`.launch`: engine processes; :mod:`.loop`: the loop thread;
- :mod:`.futures`, :mod:`.output`: what the user holds and sees;
- :mod:`.stacks`, :mod:`.postmortem`, :mod:`.death`: live stacks, ``future.debug()``,
  why an engine died; :mod:`.prompts`: a task's ``input()`` asked here.
"""

from .api import Engine, Pool
from .launch import HUGE_PAGES_TUNABLE, engine_environment

__all__ = ["HUGE_PAGES_TUNABLE", "Engine", "Pool", "engine_environment"]
