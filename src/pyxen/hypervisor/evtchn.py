"""Event channels (xen/include/public/event_channel.h, docs/xl.md 5.5), interdomain kind.

In pyxen each virtqueue's kick (guest -> backend) and call (backend -> guest) travel over
eventfds that QEMU and the backend share; the hypervisor owns the *channel*: a frontend port
allocated unbound for the backend domain (EVTCHNOP_alloc_unbound, done by the toolstack for the
virtio frontend, which has no Xen ABI), bound by the backend (EVTCHNOP_bind_interdomain) when
the ring starts, closed (EVTCHNOP_close) when it stops. Binding is refused unless the port was
allocated for the caller's domain, so a backend cannot attach to a domain it does not serve.
All ports of a domain close when it dies, and the peers' ends with them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .core import DESTROY_HOOKS, Hypervisor, hypercall
from .errors import HypercallError, InvalidArgument, PermissionDenied
from .evtchn_abi import Status, dump_evtchn_info

#: Ports per domain (the 2-level ABI's limit on 64-bit guests).
MAX_PORTS = 4096


@dataclass
class Port:
    dom: int
    port: int
    status: Status
    remote_dom: int
    remote_port: int = 0
    label: str = ""
    pending: int = 0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.name.lower()
        return d


class EventChannels:
    """Every domain's port table."""

    def __init__(self) -> None:
        self.ports: dict[int, dict[int, Port]] = {}

    def _alloc(self, dom: int) -> int:
        table = self.ports.setdefault(dom, {})
        for p in range(1, MAX_PORTS):  # port 0 is never used (Xen reserves it)
            if p not in table:
                return p
        raise HypercallError(f"domain {dom} has no free event channel port")

    def alloc_unbound(self, dom: int, remote_dom: int, label: str = "") -> Port:
        port = Port(dom, self._alloc(dom), Status.UNBOUND, remote_dom, label=label)
        self.ports[dom][port.port] = port
        return port

    def get(self, dom: int, port: int) -> Port:
        try:
            return self.ports[dom][port]
        except KeyError:
            raise InvalidArgument(f"domain {dom} has no event channel port {port}") from None

    def bind_interdomain(self, dom: int, remote_dom: int, remote_port: int, label: str = "") -> Port:
        """:raise PermissionDenied: the remote port was not allocated for ``dom``."""
        remote = self.get(remote_dom, remote_port)
        if remote.status != Status.UNBOUND:
            raise InvalidArgument(f"port {remote_port} of domain {remote_dom} is not unbound")
        if remote.remote_dom != dom:
            raise PermissionDenied(f"port {remote_port} of domain {remote_dom} is for domain "
                                   f"{remote.remote_dom}, not {dom}")
        local = Port(dom, self._alloc(dom), Status.INTERDOMAIN, remote_dom, remote_port, label or remote.label)
        self.ports[dom][local.port] = local
        remote.status, remote.remote_port = Status.INTERDOMAIN, local.port
        return local

    def close(self, dom: int, port: int) -> None:
        """Close a port; an interdomain peer goes back to unbound (as Xen's evtchn_close)."""
        p = self.ports.get(dom, {}).pop(port, None)
        if p is None or p.status != Status.INTERDOMAIN:
            return
        peer = self.ports.get(p.remote_dom, {}).get(p.remote_port)
        if peer is not None and peer.status == Status.INTERDOMAIN and peer.remote_port == port:
            peer.status, peer.remote_port = Status.UNBOUND, 0

    def domain_destroyed(self, dom: int) -> None:
        """A dead domain's ports close, and so do the backends' ports bound to them."""
        for port in list(self.ports.get(dom, {})):
            p = self.ports[dom][port]
            if p.status == Status.INTERDOMAIN:
                self.ports.get(p.remote_dom, {}).pop(p.remote_port, None)
        self.ports.pop(dom, None)
        for other in self.ports.values():
            for port in [k for k, p in other.items() if p.remote_dom == dom]:
                other.pop(port)

    def list(self, dom: int | None = None) -> list[Port]:
        doms = [dom] if dom is not None else sorted(self.ports)
        return [p for d in doms for _, p in sorted(self.ports.get(d, {}).items())]


def channels(hv: Hypervisor) -> EventChannels:
    """The hypervisor's event channel table (created on first use, from what an earlier daemon
    saved, less the ports of domains that are gone)."""
    table = getattr(hv, "evtchn", None)
    if table is None:
        table = EventChannels()
        saved = hv.load_table("evtchn")
        for p in saved if isinstance(saved, list) else []:
            if p["dom"] in hv.domains and p["remote_dom"] in hv.domains:
                table.ports.setdefault(p["dom"], {})[p["port"]] = Port(**{**p, "status": Status[p["status"].upper()]})
        hv.evtchn = table  # type: ignore[attr-defined]
    return table


def save(hv: Hypervisor) -> None:
    hv.save_table("evtchn", [p.to_json() for p in channels(hv).list()])


@hypercall("event_channel_op.alloc_unbound")
async def _alloc_unbound(hv: Hypervisor, args: dict[str, Any]) -> int:
    op = "event_channel_op.alloc_unbound"
    dom, remote = hv.domain(args, op, "dom").domid, hv.domain(args, op, "remote_dom").domid
    port = channels(hv).alloc_unbound(dom, remote, str(args.get("label", ""))).port
    save(hv)
    return port


@hypercall("event_channel_op.bind_interdomain")
async def _bind_interdomain(hv: Hypervisor, args: dict[str, Any]) -> int:
    op = "event_channel_op.bind_interdomain"
    dom, remote = hv.domain(args, op, "dom").domid, hv.domain(args, op, "remote_dom").domid
    try:
        port = channels(hv).bind_interdomain(dom, remote, int(args.get("remote_port", -1)),
                                             str(args.get("label", ""))).port
    except HypercallError as err:
        err.op = op
        raise
    save(hv)
    return port


@hypercall("event_channel_op.close")
async def _close(hv: Hypervisor, args: dict[str, Any]) -> None:
    channels(hv).close(int(args.get("dom", 0)), int(args.get("port", 0)))
    save(hv)


@hypercall("event_channel_op.send")
async def _send(hv: Hypervisor, args: dict[str, Any]) -> None:
    p = channels(hv).get(int(args.get("dom", 0)), int(args.get("port", 0)))
    peer = channels(hv).ports.get(p.remote_dom, {}).get(p.remote_port)
    if peer is not None:
        peer.pending += 1


@hypercall("event_channel_op.status")
async def _status(hv: Hypervisor, args: dict[str, Any]) -> dict[str, Any]:
    return channels(hv).get(int(args.get("dom", 0)), int(args.get("port", 0))).to_json()


@hypercall("event_channel_op.list")
async def _list(hv: Hypervisor, args: dict[str, Any]) -> list[dict[str, Any]]:
    dom = args.get("dom")
    return [p.to_json() for p in channels(hv).list(int(dom) if dom is not None else None)]


def _on_destroy(hv: Hypervisor, domid: int) -> None:
    channels(hv).domain_destroyed(domid)
    save(hv)


@hypercall("sysctl.debug_keys")
async def _debug_keys(hv: Hypervisor, args: dict[str, Any]) -> None:
    """``xl debug-keys <keys>`` (XEN_SYSCTL_debug_keys): each key's handler prints into the
    console ring, read back with ``xl dmesg``. Only 'e' (dump_evtchn_info) has a handler here;
    other keys are logged as unhandled, as Xen does for a key with no handler."""
    keys = args.get("keys")
    if not isinstance(keys, str):
        raise InvalidArgument("argument 'keys' must be a string", "sysctl.debug_keys")
    for key in keys:
        if key == "e":
            table = channels(hv)
            doms = sorted(set(hv.domains) | set(table.ports))
            text = dump_evtchn_info([p.to_json() for p in table.list()], doms)
            hv.conring.lines.append("(XEN) 'e' pressed -> dumping event-channel info")
            hv.conring.lines.extend(f"(XEN) {line}" for line in text.splitlines())
        else:
            hv.conring.lines.append(f"(XEN) '{key}' pressed -> no handler")


DESTROY_HOOKS.append(_on_destroy)
