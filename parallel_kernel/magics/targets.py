"""Which engines a parallel magic runs on: ``--targets all``, ``0,2``, ``::2``, ``1:3``, ``-1``.

Numbers are engine ids; a slice picks from the pool's engine ids in order
(``::2`` is every other engine, ``-1`` alone the last one, as in a list).
Items may be mixed (``0,4:6``); an engine named twice runs the code once.
"""

from __future__ import annotations

from collections.abc import Sequence


class TargetError(ValueError):
    """A ``--targets`` value that does not name engines of the pool."""


def select(spec: str, engine_ids: Sequence[int]) -> list[int]:
    """The engine ids ``spec`` names among ``engine_ids``, in engine order."""
    ids = sorted(engine_ids)
    text = spec.strip()
    if text in ("", "all", "*"):
        return ids
    chosen: set[int] = set()
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise TargetError(f"--targets {spec!r}: an empty item")
        if ":" in item:
            chosen.update(ids[_slice(item, spec)])
            continue
        number = _integer(item, spec)
        if number < 0:
            if -number > len(ids):
                raise TargetError(f"--targets {spec!r}: the pool has only {len(ids)} engines")
            chosen.add(ids[number])
        elif number in ids:
            chosen.add(number)
        else:
            known = ", ".join(str(i) for i in ids) or "none"
            raise TargetError(f"--targets {spec!r}: no engine {number} (engines: {known})")
    if not chosen:
        raise TargetError(f"--targets {spec!r} names no engine of the pool")
    return sorted(chosen)


def _slice(item: str, spec: str) -> slice:
    parts = item.split(":")
    if len(parts) > 3:
        raise TargetError(f"--targets {spec!r}: {item!r} is not a slice")
    bounds = [_integer(p, spec) if p.strip() else None for p in parts]
    if len(bounds) == 3 and bounds[2] == 0:
        raise TargetError(f"--targets {spec!r}: a slice step cannot be zero")
    return slice(*bounds)


def _integer(text: str, spec: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise TargetError(
            f"--targets {spec!r}: {text.strip()!r} is not an engine id or a slice "
            "(examples: all, 0,2, ::2, 1:3, -1)"
        ) from None
