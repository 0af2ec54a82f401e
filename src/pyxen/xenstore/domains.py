"""The table of introduced domains (INTRODUCE / RELEASE / RESUME / SET_TARGET).

Spec: docs/misc/xenstore.txt "INTRODUCE", "RELEASE", "IS_DOMAIN_INTRODUCED", "SET_TARGET".
Without a hypervisor ring, introducing a domain records it (durably), fires
``@introduceDomain`` and -- through the ``on_introduce`` hook the server installs -- opens the
domain's own socket under run/xenstored/domains/<domid>.  Dom0 is always introduced.
"""

from __future__ import annotations

import logging
from typing import Callable

from .errors import InvalidArgument, NoEntry
from .persistence import DomainRecord
from .store import Record
from .wire import DOMID_SELF

log = logging.getLogger(__name__)

#: Domain ids a guest can have (DOMID_FIRST_RESERVED is 0x7FF0).
DOMID_MAX = 0x7FEF


class Domains:
    """Introduced domains; changes are journaled through ``persist``."""

    def __init__(self, records: dict[int, DomainRecord] | None = None) -> None:
        self.table: dict[int, DomainRecord] = dict(records or {})
        self.persist: Callable[[list[Record]], None] | None = None
        self.on_introduce: Callable[[int], None] | None = None
        self.on_release: Callable[[int], None] | None = None

    def is_introduced(self, domid: int) -> bool:
        return domid in (0, DOMID_SELF) or domid in self.table

    def introduce(self, domid: int) -> bool:
        """Record ``domid``; returns True if it is new (then @introduceDomain fires)."""
        if domid == 0 or domid > DOMID_MAX:
            raise InvalidArgument(f"cannot introduce domain {domid}")
        new = domid not in self.table
        if new:
            self.table[domid] = DomainRecord(domid)
            self._persist([("I", domid, None)])
        if self.on_introduce is not None:
            self.on_introduce(domid)
        return new

    def release(self, domid: int) -> None:
        """:raise InvalidArgument: for Dom0.  :raise NoEntry: for an unknown domain."""
        if domid == 0:
            raise InvalidArgument("cannot release Dom0")
        if domid not in self.table:
            raise NoEntry(f"domain {domid} not introduced")
        del self.table[domid]
        self._persist([("R", domid)])
        if self.on_release is not None:
            self.on_release(domid)

    def set_target(self, domid: int, target: int) -> None:
        for d in (domid, target):
            if d != 0 and d not in self.table:
                raise NoEntry(f"domain {d} not introduced")
        if domid == 0:
            raise InvalidArgument("Dom0 has no target")
        self.table[domid] = DomainRecord(domid, target)
        self._persist([("I", domid, target)])

    def target_of(self, domid: int) -> int | None:
        rec = self.table.get(domid)
        return None if rec is None else rec.target

    def _persist(self, records: list[Record]) -> None:
        if self.persist is not None:
            self.persist(records)
