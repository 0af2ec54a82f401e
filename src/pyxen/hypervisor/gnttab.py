"""Grant tables (xen/include/public/grant_table.h v1, docs/xl.md 5.4).

A grant is a domain's permission for one other domain to map some of its memory. In pyxen the
memory a backend maps is the guest's RAM memfd, which QEMU hands the backend over vhost-user
(SET_MEM_TABLE); the hypervisor decides whether that mapping may exist. The toolstack grants a
device's ring (``ring-ref``) to the backend domain for the frontend (gnttab grant_access); the
backend maps it (GNTTABOP_map_grant_ref) before it maps any guest memory, naming the process
that offered the memory. The map is refused unless the grant exists, names the caller's
domain, and that process is the granting domain's own device model. When the domain dies every
grant it issued is revoked and every mapping of them is gone.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

from .core import DESTROY_HOOKS, Hypervisor, hypercall
from .errors import HypercallError, PermissionDenied

#: Refs 0..7 are reserved (GNTTAB_NR_RESERVED_ENTRIES: 0 console ring, 1 xenstore ring).
FIRST_REF = 8
MAX_REFS = 512 * 32


class GntSt(enum.IntEnum):
    """GNTST_* status codes."""

    OKAY = 0
    GENERAL_ERROR = -1
    BAD_DOMAIN = -2
    BAD_GNTREF = -3
    BAD_HANDLE = -4
    PERMISSION_DENIED = -8


class GrantError(HypercallError):
    """A refused grant operation, with its GNTST code."""

    def __init__(self, status: GntSt, message: str, op: str = "") -> None:
        super().__init__(f"{message} (GNTST {status.name.lower()})", op)
        self.status = status


class GrantDenied(GrantError, PermissionDenied):
    pass


@dataclass
class Grant:
    dom: int
    ref: int
    remote_dom: int
    readonly: bool
    label: str = ""
    mappings: list[int] = field(default_factory=list)


@dataclass
class Mapping:
    handle: int
    dom: int
    ref: int
    mapper: int
    pid: int


class GrantTables:
    def __init__(self) -> None:
        self.grants: dict[int, dict[int, Grant]] = {}
        self.maps: dict[int, Mapping] = {}
        self._next_handle = 1

    def grant_access(self, dom: int, remote_dom: int, readonly: bool, label: str) -> Grant:
        table = self.grants.setdefault(dom, {})
        ref = next(r for r in range(FIRST_REF, MAX_REFS) if r not in table)
        g = table[ref] = Grant(dom, ref, remote_dom, readonly, label)
        return g

    def map(self, dom: int, ref: int, mapper: int, pid: int, model_pid: int | None) -> Mapping:
        g = self.grants.get(dom, {}).get(ref)
        if g is None:
            raise GrantError(GntSt.BAD_GNTREF, f"domain {dom} has no grant {ref}")
        if g.remote_dom != mapper:
            raise GrantDenied(GntSt.PERMISSION_DENIED,
                              f"grant {ref} of domain {dom} is for domain {g.remote_dom}, not {mapper}")
        if pid and pid != model_pid:
            raise GrantDenied(GntSt.PERMISSION_DENIED,
                              f"process {pid} is not domain {dom}'s device model; its memory is not granted")
        m = Mapping(self._next_handle, dom, ref, mapper, pid)
        self._next_handle += 1
        self.maps[m.handle] = m
        g.mappings.append(m.handle)
        return m

    def unmap(self, handle: int) -> None:
        m = self.maps.pop(handle, None)
        if m is None:
            raise GrantError(GntSt.BAD_HANDLE, f"no grant mapping {handle}")
        g = self.grants.get(m.dom, {}).get(m.ref)
        if g is not None and handle in g.mappings:
            g.mappings.remove(handle)

    def end_access(self, dom: int, ref: int) -> None:
        g = self.grants.get(dom, {}).pop(ref, None)
        if g is not None:
            for h in g.mappings:
                self.maps.pop(h, None)

    def domain_destroyed(self, dom: int) -> None:
        for g in self.grants.pop(dom, {}).values():
            for h in g.mappings:
                self.maps.pop(h, None)
        for h in [h for h, m in self.maps.items() if m.mapper == dom]:
            self.maps.pop(h)

    def to_json(self) -> dict[str, Any]:
        return {"next_handle": self._next_handle,
                "grants": [asdict(g) for t in self.grants.values() for g in t.values()],
                "maps": [asdict(m) for m in self.maps.values()]}

    @classmethod
    def from_json(cls, data: dict[str, Any], live: set[int]) -> "GrantTables":
        """The tables as saved, less what belongs to domains no longer in ``live``."""
        t = cls()
        t._next_handle = int(data.get("next_handle", 1))
        for g in data.get("grants", []):
            if g["dom"] in live:
                t.grants.setdefault(g["dom"], {})[g["ref"]] = Grant(**g)
        for m in data.get("maps", []):
            if m["dom"] in live and m["mapper"] in live:
                t.maps[m["handle"]] = Mapping(**m)
        return t

    def list(self, dom: int | None) -> dict[str, list[dict[str, Any]]]:
        doms = [dom] if dom is not None else sorted(self.grants)
        return {"grants": [asdict(g) for d in doms for g in self.grants.get(d, {}).values()],
                "maps": [asdict(m) for m in self.maps.values()
                         if dom is None or m.dom == dom or m.mapper == dom]}


def tables(hv: Hypervisor) -> GrantTables:
    """The grant tables (created on first use, from what an earlier daemon saved)."""
    t = getattr(hv, "gnttab", None)
    if t is None:
        saved = hv.load_table("gnttab")
        t = GrantTables.from_json(saved, set(hv.domains)) if isinstance(saved, dict) else GrantTables()
        hv.gnttab = t  # type: ignore[attr-defined]
    return t


def save(hv: Hypervisor) -> None:
    hv.save_table("gnttab", tables(hv).to_json())


@hypercall("grant_table_op.grant_access")
async def _grant_access(hv: Hypervisor, args: dict[str, Any]) -> int:
    op = "grant_table_op.grant_access"
    dom, remote = hv.domain(args, op, "dom").domid, hv.domain(args, op, "remote_dom").domid
    ref = tables(hv).grant_access(dom, remote, bool(args.get("readonly")), str(args.get("label", ""))).ref
    save(hv)
    return ref


@hypercall("grant_table_op.map_grant_ref")
async def _map_grant_ref(hv: Hypervisor, args: dict[str, Any]) -> dict[str, Any]:
    op = "grant_table_op.map_grant_ref"
    dom = hv.domain(args, op, "dom").domid
    mapper = int(args.get("mapper", 0))
    try:
        m = tables(hv).map(dom, int(args.get("ref", -1)), mapper, int(args.get("pid", 0)), hv.domains[dom].pid)
    except HypercallError as err:
        err.op = op
        raise
    save(hv)
    return {"handle": m.handle, "status": int(GntSt.OKAY)}


@hypercall("grant_table_op.unmap_grant_ref")
async def _unmap_grant_ref(hv: Hypervisor, args: dict[str, Any]) -> None:
    tables(hv).unmap(int(args.get("handle", -1)))
    save(hv)


@hypercall("grant_table_op.end_access")
async def _end_access(hv: Hypervisor, args: dict[str, Any]) -> None:
    tables(hv).end_access(int(args.get("dom", -1)), int(args.get("ref", -1)))
    save(hv)


@hypercall("grant_table_op.list")
async def _list(hv: Hypervisor, args: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    dom = args.get("dom")
    return tables(hv).list(int(dom) if dom is not None else None)


def _on_destroy(hv: Hypervisor, domid: int) -> None:
    tables(hv).domain_destroyed(domid)
    save(hv)


DESTROY_HOOKS.append(_on_destroy)
