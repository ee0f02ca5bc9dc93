"""docs/protocol.md is enough to write a client: its code, used alone, talks to the kernel."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from conftest import Driver

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


def documented_packer() -> dict:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    [source] = [b for b in blocks if "def pack(obj)" in b]
    namespace: dict = {}
    exec(source, namespace)
    return namespace


def test_a_client_built_from_the_document(kernel: Driver) -> None:
    doc = documented_packer()
    pack, unpack = doc["pack"], doc["unpack"]
    array = np.arange(50_000, dtype=np.float64)
    fn = pack(lambda a, scale=1: a * scale)
    call = pack(((array,), {"scale": 3}))
    assert len(call) == 2  # the array went out of band
    content = {"format": "parallel_kernel", "version": 1, "parts": [len(fn), len(call)]}
    reply = kernel.reply(kernel.send("apply_request", content, buffers=fn + call))
    assert reply["content"]["status"] == "ok"
    assert reply["content"]["parts"] == [len(reply["buffers"])]
    np.testing.assert_array_equal(unpack(reply["buffers"]), array * 3)
