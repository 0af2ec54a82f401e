"""xl's CPU list syntax and bitmap text (Xen's libxlu cpumap parsing and xl's print_bitmap).

``all``, ``3``, ``0-3,5``, ``^1`` (remove) in; ``all`` / ``none`` / ``0-3,8`` out. Pure: the
caller supplies the host's CPU count.
"""

from __future__ import annotations

import re

#: ASCII digits only: Python's ``\\d`` also matches other scripts' digits, which strtoul does not.
_RANGE = re.compile(r"([0-9]+)(?:-([0-9]+))?")


def parse_cpulist(text: str, nr_cpus: int) -> set[int]:
    """xl's CPU list: ``all``, ``3``, ``0-3,5``, ``^1`` (remove); raises ValueError."""
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        neg = part.startswith("^")
        part = part.lstrip("^")
        if part == "all":
            chosen = set(range(nr_cpus))
        else:
            m = _RANGE.fullmatch(part)
            if not m:
                raise ValueError(f"invalid cpu list '{text}'")
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            if lo > hi or hi >= nr_cpus:
                raise ValueError(f"cpu list '{text}' names CPUs outside 0-{nr_cpus - 1}")
            chosen = set(range(lo, hi + 1))
        cpus = cpus - chosen if neg else cpus | chosen
    return cpus


def format_cpumap(cpus: set[int] | list[int], nr_cpus: int) -> str:
    """xl's bitmap text: ``all`` when every CPU is set, ``none`` when none, else ranges."""
    cpus = sorted(set(cpus))
    if not cpus:
        return "none"
    if cpus == list(range(nr_cpus)):
        return "all"
    ranges: list[str] = []
    start = prev = cpus[0]
    for c in cpus[1:] + [-2]:
        if c == prev + 1:
            prev = c
            continue
        ranges.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = c
    return ",".join(ranges)
