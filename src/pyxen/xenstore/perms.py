"""Node permissions: owner first, then per-domain entries; letters n/r/w/b.

Spec: docs/misc/xenstore.txt "Permissions" and C xenstored's ``perm_for_conn``: a privileged
connection (Dom0 or the local socket) may do everything; the owner (or a domain whose
SET_TARGET target is the owner) may do everything; otherwise the first later entry naming the
domain (or its target) applies; otherwise the owner entry's letter is everyone's default.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .errors import InvalidArgument

READ = 1
WRITE = 2
OWNER = 4
ALL = READ | WRITE | OWNER

_LETTER_BITS = {"n": 0, "r": READ, "w": WRITE, "b": READ | WRITE}
_PERM_RE = re.compile(r"[nrwb](0|[1-9][0-9]{0,9})")


class PermEntry(NamedTuple):
    """One entry such as ``r5``: ``letter`` in n/r/w/b, ``domid`` the domain it names."""

    letter: str
    domid: int

    def __str__(self) -> str:
        return f"{self.letter}{self.domid}"

    @property
    def bits(self) -> int:
        return _LETTER_BITS[self.letter]


#: A node's permission list; the first entry is the owner and everyone's default.
Perms = tuple[PermEntry, ...]

#: ``n0``: owner Dom0, nobody else may read or write (C xenstored's root and default).
DEFAULT_PERMS: Perms = (PermEntry("n", 0),)


def parse_entry(text: str) -> PermEntry:
    """``"b5"`` -> PermEntry("b", 5); :raise InvalidArgument: on anything else."""
    if not _PERM_RE.fullmatch(text):
        raise InvalidArgument(f"bad permission {text!r}")
    domid = int(text[1:])
    if domid > 0xFFFF:
        raise InvalidArgument(f"bad domid in permission {text!r}")
    return PermEntry(text[0], domid)


def parse(items: list[str] | tuple[str, ...]) -> Perms:
    """A SET_PERMS argument list; :raise InvalidArgument: if empty or malformed."""
    if not items:
        raise InvalidArgument("no permissions")
    return tuple(parse_entry(i) for i in items)


def format_perms(perms: Perms) -> list[str]:
    return [f"{e.letter}{e.domid}" for e in perms]


def rights(perms: Perms, domid: int, privileged: bool, target: int | None = None) -> int:
    """The READ/WRITE/OWNER bits ``domid`` holds on a node with ``perms``."""
    if privileged:
        return ALL
    owner = perms[0].domid
    if owner == domid or (target is not None and owner == target):
        return ALL
    for entry in perms[1:]:
        if entry.domid == domid or (target is not None and entry.domid == target):
            return _LETTER_BITS[entry.letter]
    return _LETTER_BITS[perms[0].letter]


def with_owner(perms: Perms, domid: int) -> Perms:
    """``perms`` with the owner replaced by ``domid`` (nodes a domU creates are its own)."""
    if perms[0].domid == domid:
        return perms
    return (PermEntry(perms[0].letter, domid),) + perms[1:]


class Caller(NamedTuple):
    """Who is asking: the connection's domain, whether it is privileged (Dom0 socket),
    and its SET_TARGET target (a device-model stubdom acting for its guest)."""

    domid: int
    privileged: bool
    target: int | None = None


DOM0 = Caller(0, True, None)
