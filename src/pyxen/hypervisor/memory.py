"""The host memory pool: total RAM, what each domain holds, what is free.

Xen hands out pages from one heap; a domain's reservation is taken whole when it is created and
given back when it is destroyed, and creation fails (ENOMEM) rather than overcommit. pyxen keeps
the same books in MiB-granular KiB: the host's RAM is the pool, Domain-0 holds dom0_mem of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import OutOfMemory


@dataclass
class MemoryPool:
    """Reservations by domid against the host total, all in KiB."""

    total_kb: int
    reserved: dict[int, int] = field(default_factory=dict)

    @property
    def free_kb(self) -> int:
        return self.total_kb - sum(self.reserved.values())

    def claim(self, domid: int, kb: int, name: str = "") -> None:
        """Reserve ``kb`` for ``domid`` or raise OutOfMemory, changing nothing."""
        if kb > self.free_kb:
            who = f"domain '{name}'" if name else f"domain {domid}"
            raise OutOfMemory(
                f"not enough free memory for {who}: {kb // 1024} MiB needed, "
                f"{self.free_kb // 1024} MiB free", "domctl.createdomain")
        self.reserved[domid] = self.reserved.get(domid, 0) + kb

    def resize(self, domid: int, kb: int, name: str = "", op: str = "") -> None:
        """Make ``domid``'s reservation exactly ``kb``: growing claims the difference (raising
        OutOfMemory and changing nothing if it is not free), shrinking gives it back."""
        held = self.held(domid)
        if kb > held:
            try:
                self.claim(domid, kb - held, name)
            except OutOfMemory as err:
                raise OutOfMemory(err.message, op or err.op) from None
        else:
            self.reserved[domid] = kb

    def release(self, domid: int) -> None:
        self.reserved.pop(domid, None)

    def held(self, domid: int) -> int:
        return self.reserved.get(domid, 0)
