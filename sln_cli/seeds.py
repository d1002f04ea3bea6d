"""Seeds: the range every random generator on sln's path accepts, and seed lists counted before they are built.

`train`, `sweep` (and any later command that draws seeds, e.g. a tuner) check seeds here, so a seed that one
library would refuse halfway through a run is refused at the start, in one line.
"""

from __future__ import annotations

import re
from typing import Any

from sln_cli.errors import SlnError

# 0 .. 2^32 - 1: numpy's legacy seeding and DataLoader workers take 32 bits; torch takes 64 (and sln adds offsets,
# e.g. co-teaching's peer at seed + 1,000,003), numpy's Generator any size. 32 bits fit all of them.
MAX_SEED = 2**32 - 1
MAX_SEEDS = 10_000  # seeds of one command (a sweep's cells are bounded the same: spec.MAX_CELLS)


def seed_problem(value: Any, key: str) -> str | None:
    """Why `value` is not a usable seed for `key`, or None when it is."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        return f"{key} must be an integer from 0 to {MAX_SEED} (2^32 - 1), got {_short(value)}"
    return None


def parse_seeds(text: str, *, flag: str = "--seeds", limit: int = MAX_SEEDS) -> list[int]:
    """`0,1,2` or `0-4` (inclusive) or a mix (`0-2,7`), counted from its ranges before any list is built: a
    range of a billion seeds costs nothing to refuse."""
    ranges: list[tuple[int, int]] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise SlnError(f"{flag} takes seeds like 0,1,2 or 0-4, got {_short(text)}")
        if any(len(digits.lstrip("0")) > len(str(MAX_SEED)) or int(digits) > MAX_SEED
               for digits in (match[1], match[2] or "0")):  # lengths first: int() of 5,000 digits raises
            raise SlnError(f"{flag}: seeds go from 0 to {MAX_SEED} (2^32 - 1), got {_short(part.strip())}")
        low, high = int(match[1]), int(match[2] or match[1])
        if high < low:
            raise SlnError(f"{flag} takes seeds like 0,1,2 or 0-4, got {_short(text)}")
        ranges.append((low, high))
    count = sum(high - low + 1 for low, high in ranges)
    if count > limit:
        raise SlnError(f"{flag} names {count:,} seeds, more than {limit:,}; give fewer")
    seeds = [seed for low, high in ranges for seed in range(low, high + 1)]
    if len(seeds) != len(set(seeds)):
        raise SlnError(f"{flag} names a seed twice: {_short(text)}")
    return seeds


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."
