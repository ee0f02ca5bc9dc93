"""The kernel's interrupt gate, without engines: which SIGINT raises where, and which is dropped.

A ``KeyboardInterrupt`` may only surface in a request's user code: never in the
kernel's own bookkeeping around it (the abort check, the start report, the
reply), where it would cost the reply or end the process.
"""

from __future__ import annotations

import pytest

from parallel_kernel.kernel.interrupts import InterruptGate, Phase

pytestmark = pytest.mark.timeout(10)


def signal_for(gate: InterruptGate, target: str | None = None) -> bool:
    """Deliver one SIGINT (aimed at ``target``) to the gate's handler; True if it raised."""
    gate.target = target
    try:
        gate.handler(2, None)
    except KeyboardInterrupt:
        return True
    return False


def test_idle_drops_every_signal() -> None:
    gate = InterruptGate()
    assert not signal_for(gate)
    assert not signal_for(gate, "a")
    assert not gate.pending


def test_an_untargeted_signal_while_admitting_is_dropped() -> None:
    """Whoever sent it cannot know of a request whose start was not reported yet."""
    gate = InterruptGate()
    gate.enter("b")
    assert not signal_for(gate)
    gate.started()
    assert gate.arm()
    assert gate.phase is Phase.USER_CODE


def test_a_signal_aimed_at_the_request_while_admitting_waits_for_its_code() -> None:
    gate = InterruptGate()
    gate.enter("a")
    assert not signal_for(gate, "a")
    gate.started()
    assert not gate.arm()  # the code counts as interrupted before it began
    assert gate.phase is Phase.STARTED
    assert not gate.pending


def test_a_signal_after_the_start_waits_for_the_code() -> None:
    gate = InterruptGate()
    gate.enter("a")
    gate.started()
    assert not signal_for(gate)
    assert not gate.arm()


def test_user_code_raises() -> None:
    gate = InterruptGate()
    gate.enter("a")
    gate.started()
    assert gate.arm()
    assert signal_for(gate)
    assert signal_for(gate, "a")


def test_a_signal_aimed_at_an_earlier_request_is_dropped() -> None:
    gate = InterruptGate()
    gate.enter("b")
    gate.started()
    assert gate.arm()
    assert not signal_for(gate, "a")


def test_after_the_code_signals_are_dropped_with_the_request() -> None:
    gate = InterruptGate()
    gate.enter("a")
    gate.started()
    assert gate.arm()
    gate.disarm()
    assert not signal_for(gate)  # the reply is being built: no raise
    gate.leave()
    assert gate.phase is Phase.IDLE
    gate.enter("b")
    gate.started()
    assert gate.arm()  # nothing carried over to the next request


def test_a_shell_handler_enters_in_user_code() -> None:
    """A cell's code may be anywhere in its handler (ipykernel's semantics)."""
    gate = InterruptGate()
    gate.enter("cell", Phase.USER_CODE)
    assert signal_for(gate)


def test_aim_signals_only_the_running_request() -> None:
    gate = InterruptGate()
    sent = []
    assert not gate.aim("a", lambda: sent.append(1))
    gate.enter("a")
    assert not gate.aim("b", lambda: sent.append(1))
    assert gate.aim("a", lambda: sent.append(1))
    assert sent == [1]
    assert gate.target == "a"
