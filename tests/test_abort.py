"""abort_request: by id, by string, everything queued; bounded, thread-safe, one reply each."""

from __future__ import annotations

import random
import uuid

import pytest
from conftest import Driver
from jupyter_client.session import Session

from parallel_kernel import serialize


def record(tag):
    """A task whose only job is to leave a trace on the engine that it ran."""
    global ran
    try:
        ran.append(tag)
    except NameError:
        ran = [tag]
    return tag


def ran_tags(kernel: Driver) -> list:
    return kernel.call(lambda: list(globals().get("ran", [])))


def queue_behind_a_busy_engine(kernel: Driver, seconds: float = 1.0) -> str:
    """Occupy the engine so that what is sent next stays queued."""
    kernel.call(lambda: globals().pop("ran", None))
    return kernel.start_busy_task(seconds)


def test_abort_by_id_list(kernel: Driver) -> None:
    busy = queue_behind_a_busy_engine(kernel)
    doomed = kernel.send_apply(record, "doomed")
    kept = kernel.send_apply(record, "kept")
    reply = kernel.control("abort_request", {"msg_ids": [doomed]})
    assert reply["content"] == {"status": "ok", "all": False, "pending": [doomed], "started": []}
    assert kernel.reply(busy)["content"]["status"] == "ok"
    aborted = kernel.reply(doomed)
    assert aborted["msg_type"] == "apply_reply"
    assert aborted["content"] == {"status": "aborted"}
    assert aborted["metadata"]["status"] == "aborted"
    assert aborted["metadata"]["engine_id"] == 3
    assert kernel.reply(kept)["content"]["status"] == "ok"
    assert ran_tags(kernel) == ["kept"]
    assert kernel.no_reply() == []  # exactly one reply each


def test_abort_by_single_string(kernel: Driver) -> None:
    busy = queue_behind_a_busy_engine(kernel, 0.5)
    doomed = kernel.send_apply(record, "doomed")
    assert kernel.control("abort_request", {"msg_ids": doomed})["content"]["status"] == "ok"
    assert kernel.reply(busy)["content"]["status"] == "ok"
    assert kernel.reply(doomed)["content"]["status"] == "aborted"
    assert ran_tags(kernel) == []


@pytest.mark.parametrize("msg_ids", [None, []], ids=["null", "empty"])
def test_abort_everything_queued(kernel: Driver, msg_ids) -> None:
    busy = queue_behind_a_busy_engine(kernel)
    queued_applies = [kernel.send_apply(record, i) for i in range(5)]
    queued_execute = kernel.client.execute("record('execute')")
    content = {} if msg_ids is None else {"msg_ids": msg_ids}
    reply = kernel.control("abort_request", content)
    assert reply["content"] == {"status": "ok", "all": True, "pending": [], "started": []}
    later = kernel.send_apply(record, "sent after the abort")
    assert kernel.reply(busy)["content"]["status"] == "ok"  # a running task is not stopped
    for msg_id in queued_applies:
        assert kernel.reply(msg_id)["content"]["status"] == "aborted"
    execute_reply = kernel.reply(queued_execute)
    assert execute_reply["msg_type"] == "execute_reply"
    assert execute_reply["content"]["status"] == "aborted"
    assert kernel.reply(later)["content"]["status"] == "ok"
    assert ran_tags(kernel) == ["sent after the abort"]
    assert kernel.no_reply() == []


def test_abort_all_leaves_other_request_types_alone(kernel: Driver) -> None:
    busy = queue_behind_a_busy_engine(kernel, 0.5)
    info = kernel.client.kernel_info()
    kernel.control("abort_request", {"msg_ids": None})
    kernel.reply(busy)
    assert kernel.reply(info)["content"]["status"] == "ok"


def test_abort_of_an_id_that_already_ran_is_reported_and_not_kept(kernel: Driver) -> None:
    done = kernel.send_apply(record, "done")
    kernel.reply(done)
    before = kernel.call(lambda: get_ipython().kernel.aborts.sizes())  # noqa: F821
    reply = kernel.control("abort_request", {"msg_ids": [done]})
    assert reply["content"] == {"status": "ok", "all": False, "pending": [], "started": [done]}
    after = kernel.call(lambda: get_ipython().kernel.aborts.sizes())  # noqa: F821
    assert after["pending"] == before["pending"]


@pytest.mark.kernel_args(["--ParallelKernel.abort_capacity=100"])
def test_aborted_ids_that_never_arrive_do_not_grow_memory(fresh_kernel: Driver) -> None:
    ghosts = [str(uuid.uuid4()) for _ in range(5000)]
    for start in range(0, len(ghosts), 500):
        reply = fresh_kernel.control("abort_request", {"msg_ids": ghosts[start : start + 500]})
        assert reply["content"]["status"] == "ok"
    sizes = fresh_kernel.call(lambda: get_ipython().kernel.aborts.sizes())  # noqa: F821
    assert sizes["pending"] == 100
    assert sizes["evicted"] == 4900
    assert sizes["started"] <= 100
    # a recent abort still works after all that churn
    busy = fresh_kernel.start_busy_task(0.5)
    doomed = fresh_kernel.send_apply(record, "doomed")
    fresh_kernel.control("abort_request", {"msg_ids": [doomed]})
    fresh_kernel.reply(busy)
    assert fresh_kernel.reply(doomed)["content"]["status"] == "aborted"


@pytest.mark.parametrize(
    "content",
    [{"msg_ids": 5}, {"msg_ids": {"a": 1}}, {"msg_ids": [1, 2]}, {"msg_ids": ["ok", None]}],
    ids=["int", "dict", "list-of-int", "list-with-null"],
)
def test_abort_with_wrong_types_gets_an_error_reply(kernel: Driver, content) -> None:
    reply = kernel.control("abort_request", content)
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "TypeError"
    assert "msg_ids" in reply["content"]["evalue"]
    assert kernel.call(lambda: "still serving") == "still serving"


def test_abort_with_content_that_is_not_an_object(kernel: Driver) -> None:
    reply = kernel.control("abort_request", b'["not", "an", "object"]')  # packed JSON
    assert reply["content"]["status"] == "error"
    assert "must be an object" in reply["content"]["evalue"]


def test_random_aborts_give_every_request_exactly_one_outcome(kernel: Driver) -> None:
    """Requests and aborts interleaved at random: aborted ones never run, the rest do."""
    kernel.call(lambda: globals().pop("ran", None))
    rng = random.Random(20261124)
    sent = []
    aborted_ids: set[str] = set()
    for i in range(300):
        content, buffers = serialize.pack_apply(record, (i,))
        sent.append((i, kernel.send("apply_request", content, buffers=buffers)))
        if rng.random() < 0.3:
            victims = rng.sample([m for _, m in sent[-20:]], k=min(3, len(sent)))
            reply = kernel.control("abort_request", {"msg_ids": victims})
            aborted_ids.update(reply["content"]["pending"])
    outcomes = {}
    for i, msg_id in sent:
        outcomes[i] = kernel.reply(msg_id)["content"]["status"]
    assert kernel.no_reply() == []
    assert set(outcomes.values()) == {"ok", "aborted"}
    ran = set(ran_tags(kernel))
    for i, msg_id in sent:
        if outcomes[i] == "aborted":
            assert msg_id in aborted_ids
            assert i not in ran
        else:
            assert outcomes[i] == "ok"
            assert i in ran
    assert ran == {i for i, status in outcomes.items() if status == "ok"}


THEIR_CELL = {"code": "globals().setdefault('ran', []).append('theirs')", "silent": False}


def test_abort_all_covers_the_senders_session_unless_told_otherwise(kernel: Driver) -> None:
    """Another client's queued work (a notebook's cells, say) survives a pool's abort-all."""
    other = Session(key=kernel.session.key, username="other-client")
    busy = queue_behind_a_busy_engine(kernel, 1.0)
    mine = kernel.send_apply(record, "mine")
    theirs_msg = other.msg(
        "execute_request",
        {"code": "globals().setdefault('ran', []).append('theirs')", "silent": False},
    )
    kernel.client.shell_channel.send(theirs_msg)
    theirs = theirs_msg["header"]["msg_id"]
    assert kernel.control("abort_request", {"msg_ids": None})["content"]["all"] is True
    kernel.reply(busy)
    assert kernel.reply(mine)["content"]["status"] == "aborted"
    assert kernel.reply(theirs)["content"]["status"] == "ok"
    assert ran_tags(kernel) == ["theirs"]

    busy = queue_behind_a_busy_engine(kernel, 1.0)
    theirs_msg = other.msg(
        "execute_request",
        {"code": "globals().setdefault('ran', []).append('theirs')", "silent": False},
    )
    kernel.client.shell_channel.send(theirs_msg)
    reply = kernel.control("abort_request", {"msg_ids": [], "every_session": True})
    assert reply["content"]["status"] == "ok"
    kernel.reply(busy)
    assert kernel.reply(theirs_msg["header"]["msg_id"])["content"]["status"] == "aborted"
    assert ran_tags(kernel) == []


def test_every_session_must_be_a_boolean(kernel: Driver) -> None:
    reply = kernel.control("abort_request", {"msg_ids": None, "every_session": "yes"})
    assert reply["content"]["ename"] == "TypeError"
    assert "every_session" in reply["content"]["evalue"]
