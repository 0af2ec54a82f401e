"""xl's CPU list syntax and bitmap text (xl_parse.c's parse_cpurange and xl's print_bitmap).

``all``, ``3``, ``0-3,5``, ``^1`` (remove), ``node:0``/``nodes:0-1`` (every CPU of those NUMA
nodes) in; ``all`` / ``none`` / ``0-3,8`` out. Pure: the caller supplies the host's CPU count
and, for ``node:``, which CPUs a node has.
"""

from __future__ import annotations

from ..records import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Callable


class CpuRangeError(ValueError):
    """A cpus= / cpus_soft= value xl refuses; str() is xl's line (xl then exits 1)."""


def _parse_range(text: str) -> tuple[int, int] | None:
    """xl_parse.c parse_range: ``A`` or ``A-B`` (strtoul base 10 each, B >= A), nothing after."""
    from .cfg import ULONG_MAX, strtoul_prefix  # (here: format_cpumap's users, xl list's renderer, skip the parser)
    a, used = strtoul_prefix(text, 10)
    if a is None or a == ULONG_MAX:
        return None
    b, rest = a, text[used:]
    if rest.startswith("-"):
        end, used = strtoul_prefix(rest[1:], 10)
        if end is None or end == ULONG_MAX or end < a:
            return None
        b, rest = end, rest[1 + used:]
    return None if rest else (a, b)


def parse_cpurange(text: str, nr_cpus: int,
                   node_cpus: Callable[[int], set[int]] = lambda node: set()) -> set[int]:
    """xl's parse_cpurange: comma-separated items, each ``[^][node:|nodes:](all|A|A-B)``,
    applied in order (``^`` removes). ``all`` is every CPU of the host (``nr_cpus``); a CPU
    beyond the host is kept in the set (libxl's bitmap is the caller's business).

    :raise CpuRangeError: ``Can't combine "^" and "all".`` or ``Invalid pcpu range: <item>.``
    """
    cpus: set[int] = set()
    for item in (t for t in text.split(",") if t):  # strtok_r: empty items are skipped
        body = item
        is_not = body.startswith("^")
        body = body[1:] if is_not else body
        is_nodes = body.startswith(("node:", "nodes:"))
        if is_nodes:
            body = body.split(":", 1)[1]
        if body == "all":
            if is_not:
                raise CpuRangeError('Can\'t combine "^" and "all".')
            cpus |= set(range(nr_cpus))
            continue
        bounds = _parse_range(body)
        if bounds is None:
            raise CpuRangeError(f"Invalid pcpu range: {body}.")
        a, b = bounds
        if is_nodes:
            chosen = set().union(*(node_cpus(n) for n in range(a, min(b, a + 4096) + 1)))
        else:
            chosen = set(range(a, min(b, a + (1 << 20)) + 1))
        cpus = cpus - chosen if is_not else cpus | chosen
    return cpus


def parse_cpulist(text: str, nr_cpus: int,
                  node_cpus: Callable[[int], set[int]] = lambda node: set()) -> set[int]:
    """``parse_cpurange`` for pinning on this host: a CPU the host lacks is refused here
    (pyxen's check; Xen's bitmap would drop it or the hypervisor refuse the affinity).

    :raise ValueError: xl's message (CpuRangeError), or the CPUs outside the host."""
    cpus = parse_cpurange(text, nr_cpus, node_cpus)
    if any(c >= nr_cpus for c in cpus):
        raise ValueError(f"cpu list '{text}' names CPUs outside 0-{nr_cpus - 1}")
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
