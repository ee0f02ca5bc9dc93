"""Every Python example in the user guides runs as a script and prints what it says."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from conftest import run

DOCS = Path(__file__).resolve().parent.parent / "docs"
#: The guides whose Python examples are scripts that run as they are.
GUIDES = ("pool.md", "data.md", "debugging.md")
EXAMPLES = {
    f"{guide.removesuffix('.md')}-{i}": source
    for guide in GUIDES
    for i, source in enumerate(re.findall(r"```python\n(.*?)```", (DOCS / guide).read_text(), re.S))
}


def expected_output(source: str) -> list[str]:
    """The values the example's comments promise, in order (``print(x)  # value``)."""
    return [
        m.group(1).strip()
        for line in source.splitlines()
        if "print(" in line
        and (m := re.search(r"#\s*(.+)$", line))
        and not m.group(1).startswith(("True:", "noqa"))
    ]


@pytest.mark.parametrize("source", EXAMPLES.values(), ids=EXAMPLES.keys())
def test_guide_example(source: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(source)
    result = run([sys.executable, str(script)], timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for value in expected_output(source):
        assert value in out, f"{value!r} not printed:\n{out}"
