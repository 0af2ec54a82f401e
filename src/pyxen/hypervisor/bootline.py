"""The Xen boot line (xen_commandline), parsed as Xen parses it.

Options used by pyxen: ``dom0_mem`` (xen/arch/x86/dom0_build.c: a comma list of ``N``,
``min:N``, ``max:N``; sizes take K/M/G/T suffixes, a bare number is bytes in Xen but every real
boot line carries a suffix), ``dom0_max_vcpus`` (``N`` or ``min-max``), ``sched``
(credit, credit2, ...), ``loglvl``, ``sched_credit_tslice_ms``, ``sched_ratelimit_us``.
Unknown options are kept and ignored, as Xen does.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

SCHEDULERS = ("credit", "credit2", "rtds", "null", "arinc653")
LOGLEVELS = ("none", "error", "warning", "info", "debug", "all")
_SUFFIX = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class BootLineError(ValueError):
    """An option of the boot line with a value Xen would reject."""


def parse_size(text: str) -> int:
    """A Xen size (parse_size_and_unit): a number with an optional K/M/G/T suffix, in bytes."""
    m = re.fullmatch(r"(\d+)([bBkKmMgGtT]?)", text.strip())
    if not m:
        raise BootLineError(f"invalid size '{text}'")
    return int(m.group(1)) * _SUFFIX[m.group(2).lower()]


@dataclass(frozen=True)
class Dom0Mem:
    """dom0_mem: the amount, and the optional bounds, in bytes."""

    amount: int | None = None
    min: int | None = None
    max: int | None = None

    def resolve(self, host_bytes: int) -> int:
        """Dom0's reservation on a host with ``host_bytes`` of RAM.

        With no amount Xen gives Dom0 all memory but a reserve; pyxen, which shares the host with
        Linux, defaults to 1 GiB. The result is clamped to [min, max] and to the host.
        """
        amount = self.amount if self.amount is not None else (self.max or 1 << 30)
        if self.min is not None:
            amount = max(amount, self.min)
        if self.max is not None:
            amount = min(amount, self.max)
        return min(amount, host_bytes)


@dataclass(frozen=True)
class BootLine:
    """The parsed boot line; ``text`` is what ``xl info`` shows as xen_commandline."""

    text: str = ""
    dom0_mem: Dom0Mem = Dom0Mem()
    dom0_max_vcpus: tuple[int, int] | None = None
    sched: str = "credit"
    loglvl: str = "warning"
    tslice_ms: int = 30
    ratelimit_us: int = 1000
    other: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "BootLine":
        dom0_mem, vcpus, sched, loglvl = Dom0Mem(), None, "credit", "warning"
        tslice, ratelimit = 30, 1000
        other: dict[str, str] = {}
        for word in shlex.split(text):
            key, _, value = word.partition("=")
            if key == "dom0_mem":
                dom0_mem = _parse_dom0_mem(value)
            elif key == "dom0_max_vcpus":
                m = re.fullmatch(r"(\d+)(?:-(\d+))?", value)
                if not m or int(m.group(1)) < 1:
                    raise BootLineError(f"dom0_max_vcpus: invalid value '{value}'")
                lo = int(m.group(1))
                vcpus = (lo, int(m.group(2)) if m.group(2) else lo)
            elif key == "sched":
                if value not in SCHEDULERS:
                    raise BootLineError(f"sched: unknown scheduler '{value}'")
                sched = value
            elif key == "loglvl":
                level = value.split("/")[0]
                if level not in LOGLEVELS:
                    raise BootLineError(f"loglvl: unknown level '{value}'")
                loglvl = level
            elif key == "sched_credit_tslice_ms":
                tslice = _bounded(key, value, 1, 1000)
            elif key == "sched_ratelimit_us":
                ratelimit = int(value) if value == "0" else _bounded(key, value, 100, 500000)
            else:
                other[key] = value
        return cls(text, dom0_mem, vcpus, sched, loglvl, tslice, ratelimit, other)

    def dom0_vcpus(self, host_cpus: int) -> int:
        if self.dom0_max_vcpus is None:
            return host_cpus
        lo, hi = self.dom0_max_vcpus
        return max(1, min(hi, max(lo, host_cpus), host_cpus))


def _bounded(key: str, value: str, lo: int, hi: int) -> int:
    if not value.isdigit() or not lo <= int(value) <= hi:
        raise BootLineError(f"{key}: '{value}' is out of range {lo}..{hi}")
    return int(value)


def _parse_dom0_mem(value: str) -> Dom0Mem:
    amount = lo = hi = None
    for part in value.split(","):
        if part.startswith("min:"):
            lo = parse_size(part[4:])
        elif part.startswith("max:"):
            hi = parse_size(part[4:])
        else:
            amount = parse_size(part)
    if not value:
        raise BootLineError("dom0_mem: empty value")
    return Dom0Mem(amount, lo, hi)
