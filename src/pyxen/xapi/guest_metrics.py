"""VM_guest_metrics from what a guest agent writes into its xenstore area: xapi's
ocaml/xapi/xapi_guest_agent.ml and the part of xenopsd (ocaml/xenopsd/xc/xenops_server_xen.ml)
that decides which nodes xapi gets to see, as pure functions (no xenstore, no database, no clock).

The flow on XenServer, which pyxen's xapi follows:

1. xenopsd watches a few directories of each domain (:func:`watch_paths`); on any event it
   reads the domain's guest-agent nodes, limited per directory in depth (:data:`GUEST_AGENT_DIRS`,
   :func:`guest_agent_nodes`), into a flat list of (path relative to the domain, value).
2. xapi turns that list into the record's maps (:func:`derive`): ``os_version`` from
   ``data/os_*``, ``PV_drivers_version`` from ``attr/PVAddons/*`` (and Windows' ``drivers/N``),
   ``networks`` from ``attr/vif/<devid>/ipv4|ipv6/<n>`` (or the older ``attr/eth<n>/ip``),
   ``other`` from every child of ``control`` (the ``feature-*`` flags among them),
   ``can_use_hotplug_vbd/vif`` from ``feature/hotplug/*``.
3. xapi writes the record only when something other than the memory figures changed
   (:meth:`GuestMetrics.differs`); ``last_updated`` is then the time of that update.

``PV_drivers_detected`` is xenopsd's, not the agent's: it turns true when a backend of the
domain reaches XenbusState Connected and false when the last connected one leaves it
(:func:`pv_drivers_detected`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

#: The tristate_type enum of can_use_hotplug_vbd/vif.
YES, NO, UNSPECIFIED = "yes", "no", "unspecified"

#: xapi_guest_agent.ml ``pv_drivers_version``: xenstore key -> PV_drivers_version key.
PV_DRIVERS_VERSION = (
    ("attr/PVAddons/MajorVersion", "major"),
    ("attr/PVAddons/MinorVersion", "minor"),
    ("attr/PVAddons/MicroVersion", "micro"),
    ("attr/PVAddons/BuildVersion", "build"),
    ("attr/PVAddons/Application", "application"),
)
#: ``os_version``: xenstore key -> os_version key.
OS_VERSION = (
    ("data/os_name", "name"),
    ("data/os_uname", "uname"),
    ("data/os_distro", "distro"),
    ("data/os_majorver", "major"),
    ("data/os_minorver", "minor"),
    ("attr/os/spmajor", "spmajor"),
    ("attr/os/spminor", "spminor"),
)
NETBIOS_NAME = (("data/host_name_dns", "host_name"),)
DNS_DOMAIN = (("data/domain", "dns_domain"),)
MEMORY = (("data/meminfo_free", "free"), ("data/meminfo_total", "total"))
DEVICE_ID = (("data/device_id", "device_id"),)
#: Xapi_globs.guest_service_keys: data/<key> copied into ``services`` as is.
GUEST_SERVICE_KEYS = ("pvs_target/target_software_version",)
#: The interface-name prefixes of the older layout (attr/eth0/ip): find_eths.
IFACE_PREFIXES = ("eth", "xenbr", "eno", "ens", "emp", "enx")

#: xenopsd's reading of the guest-agent nodes: (directory, excluded subtrees, depth). Depth is
#: the number of directory levels descended into below the directory; the entries one level
#: further down are still read (so depth 0 reads the directory's children, not theirs).
GUEST_AGENT_DIRS: tuple[tuple[str, frozenset[str], int], ...] = (
    ("control", frozenset(), 0),
    ("feature/hotplug", frozenset(), 0),
    ("xenserver/attr", frozenset(), 3),     # xenserver/attr/net-sriov-vf/0/ipv4/1
    ("attr", frozenset({"attr/os/hotfixes"}), 3),  # attr/vif/0/ipv4/0, attr/eth0/ipv6/0/addr
    ("drivers", frozenset(), 0),
    ("data", frozenset(), 0),               # not data/volumes/...: many entries per disk
    ("data/service", frozenset(), 1),       # data/service/<service-name>/<key>
    ("data/pvs_target", frozenset(), 0),
)

#: The guest-agent directories xenopsd watches (interesting_paths_for_domain), relative to the
#: domain's path. data/os_* and data/updated are not among them: they are read again whenever
#: one of these fires (a guest agent writes its attr/ nodes after its data/ ones).
WATCHED = ("attr", "data/ts", "data/service", "data/pvs_target", "control", "feature",
           "xenserver/attr")
#: Keys whose change alone does not count as a change of the agent's data (xapi_xenops.ml).
IGNORED_KEYS = ("data/meminfo_free", "data/updated", "data/update_cnt")
#: XenbusState Connected: a backend in this state is evidence of PV drivers in the guest.
XENBUS_CONNECTED = "4"


def watch_paths(domid: int) -> list[str]:
    """The xenstore paths to watch for a domain's guest-agent updates (xenopsd's list).
    Backend ``state`` nodes, which decide PV_drivers_detected, are watched with the devices."""
    return [f"/local/domain/{domid}/{p}" for p in WATCHED]


def guest_agent_nodes(tree: Mapping[str, str]) -> dict[str, str]:
    """The part of a domain's xenstore subtree (path relative to /local/domain/<domid> ->
    value) that xenopsd hands to xapi: each directory of GUEST_AGENT_DIRS to its depth, minus
    its excluded subtrees. (xenopsd also stops at a quota of 25 MiB of encoded entries; pyxen's
    xenstored quota per domain is far below that, so it is not applied here.)"""
    out: dict[str, str] = {}
    for top, excludes, depth in GUEST_AGENT_DIRS:
        for path, value in tree.items():
            if path != top and not path.startswith(top + "/"):
                continue
            rel = path[len(top):].strip("/")
            # Levels below ``top``: a child is level 1 and is read at depth 0.
            if rel and rel.count("/") > depth:
                continue
            if any(path == ex or path.startswith(ex + "/") for ex in excludes):
                continue
            out[path] = value
    return out


def _ocaml_int(text: str) -> int | None:
    """OCaml's int_of_string (xapi sorts IP indices with it): an optional sign, 0x/0o/0b/0u
    prefixes, underscores between digits; None where OCaml raises Failure."""
    m = re.fullmatch(r"([-+]?)(0[xX][0-9a-fA-F][0-9a-fA-F_]*|0[oO][0-7][0-7_]*|0[bB][01][01_]*"
                     r"|0[uU][0-9][0-9_]*|[0-9][0-9_]*)", text)
    if m is None:
        return None
    sign, body = m.groups()
    body = body.replace("_", "")
    if len(body) > 1 and body[1] in "xXoObBuU":
        n = int(body[2:], {"x": 16, "o": 8, "b": 2, "u": 10}[body[1].lower()])
    else:
        n = int(body)
    return -n if sign == "-" else n


def _lister(nodes: Mapping[str, str]) -> Callable[[str], list[str]]:
    """xapi_xenops.ml's ``list``: the first components after ``dir`` of every path that starts
    with it, without duplicates, in the order met. As in xapi the prefix test has no
    separator ("attr/vif" also lists under "attr/vifs"); paths here are all guest-agent ones."""
    def list_(d: str) -> list[str]:
        d = d.lstrip("/")
        seen: list[str] = []
        for path in nodes:
            if path.startswith(d):
                parts = [p for p in path[len(d):].split("/") if p]
                if parts and parts[0] not in seen:
                    seen.append(parts[0])
        return seen
    return list_


def _networks(path: str, vif_type: str, list_: Callable[[str], list[str]]) -> list[tuple[str, str]]:
    """xapi_guest_agent.ml ``networks``: (xenstore key, networks key) pairs, both layouts."""
    vifs = [(f"{path}/{vif_type}/{v}", v) for v in list_(f"{path}/{vif_type}")]
    if not vifs:  # the older layout: attr/eth0/ip, attr/eth0/ipv6/<n>/addr
        pairs: list[tuple[str, str]] = []
        for eth in list_(path):
            prefix = next((eth[len(p):] for p in IFACE_PREFIXES if eth.startswith(p)), None)
            if prefix is None:
                continue
            base = f"{path}/{eth}"
            pairs += [(f"{base}/ip", f"{prefix}/ip"), (f"{base}/ip", f"{prefix}/ipv4/0")]
            if "ipv6" in list_(base):
                pairs += [(f"{base}/ipv6/{s}/addr", f"{prefix}/ipv6/{s}") for s in list_(f"{base}/ipv6")]
        return pairs
    out: list[tuple[str, str]] = []
    for vif_path, vif_id in vifs:
        acc: list[tuple[str, str]] = []
        for ip_ver in (v for v in list_(vif_path) if v in ("ipv4", "ipv6")):
            ids = list_(f"{vif_path}/{ip_ver}")
            # xapi sorts the indices with a compare that fails on a non-integer; OCaml's
            # stable_sort compares every element once there are two. On failure xapi logs
            # "Failed to extract IP address for vif" and the vif's pairs so far are dropped.
            if len(ids) > 1 and any(_ocaml_int(i) is None for i in ids):
                acc = []
                continue
            ids.sort(key=lambda i: _ocaml_int(i) or 0)
            pairs = []
            for n, ip_id in enumerate(ids):
                left = f"{vif_path}/{ip_ver}/{ip_id}"
                if n == 0 and ip_ver == "ipv4":  # the first IPv4 address is also "<devid>/ip"
                    pairs += [(left, f"{vif_id}/ip")]
                pairs.append((left, f"{vif_id}/{ip_ver}/{ip_id}"))
            acc = pairs + acc
        out += acc
    return out


def _scan_driver(text: str) -> tuple[str, str]:
    """Scanf "%s@ %s@ %s@ %s@\\n" of a Windows ``drivers/N`` value ("XenServer XENBUS 9.1.9.105 "):
    (lower-case driver name, "vendor version attributes"). As OCaml's scanner, a missing field
    is empty rather than an error."""
    fields: list[str] = []
    rest = text
    for stop in (" ", " ", " ", "\n"):
        head, _, rest = rest.partition(stop)
        fields.append(head)
    vendor, driver, version, attr = fields
    return driver.lower(), " ".join((vendor, version, attr))


@dataclass(frozen=True)
class GuestMetrics:
    """The maps xapi derives from a guest agent's nodes (xapi_guest_agent.ml guest_metrics_t).
    Maps are dicts in xapi's order; compare with :meth:`differs`, as xapi does."""

    os_version: dict[str, str] = field(default_factory=dict)
    PV_drivers_version: dict[str, str] = field(default_factory=dict)
    networks: dict[str, str] = field(default_factory=dict)
    other: dict[str, str] = field(default_factory=dict)
    #: Read but never stored in VM_guest_metrics.memory (xapi sends it to RRDs instead).
    memory: dict[str, str] = field(default_factory=dict)
    #: netbios_name and services: fields of newer datamodels than pyxen's xenapi.json.
    netbios_name: dict[str, str] = field(default_factory=dict)
    services: dict[str, str] = field(default_factory=dict)
    #: data/device_id: xapi copies it into VM.platform["device_id"].
    device_id: dict[str, str] = field(default_factory=dict)
    can_use_hotplug_vbd: str = UNSPECIFIED
    can_use_hotplug_vif: str = UNSPECIFIED

    def differs(self, other: "GuestMetrics") -> bool:
        """xapi's test before it writes: any map but ``memory`` changed."""
        keys = ("os_version", "PV_drivers_version", "networks", "other", "netbios_name",
                "services", "device_id", "can_use_hotplug_vbd", "can_use_hotplug_vif")
        return any(getattr(self, k) != getattr(other, k) for k in keys)

    def record(self, *, last_updated: str, pv_drivers_detected: bool) -> dict[str, Any]:
        """The VM_guest_metrics fields of pyxen's datamodel, as create_and_set_guest_metrics
        fills them (``last_updated`` in xapi's datetime format; memory and disks empty;
        PV_drivers_up_to_date is PV_drivers_detected; live)."""
        return {"os_version": dict(self.os_version), "PV_drivers_version": dict(self.PV_drivers_version),
                "PV_drivers_up_to_date": pv_drivers_detected, "memory": {}, "disks": {},
                "networks": dict(self.networks), "other": dict(self.other),
                "last_updated": last_updated, "other_config": {}, "live": True,
                "can_use_hotplug_vbd": self.can_use_hotplug_vbd,
                "can_use_hotplug_vif": self.can_use_hotplug_vif,
                "PV_drivers_detected": pv_drivers_detected}


def derive(nodes: Mapping[str, str]) -> GuestMetrics:
    """get_initial_guest_metrics: the maps from the guest-agent nodes (path relative to the
    domain -> value; pass the domain's whole subtree through :func:`guest_agent_nodes` first,
    as xenopsd filters what xapi sees)."""
    list_ = _lister(nodes)
    lookup = nodes.get
    cant_suspend_reason = lookup("data/cant_suspend_reason")

    def to_map(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
        out: dict[str, str] = {}
        for xskey, mapkey in pairs:
            value = lookup(xskey)
            if value is None:
                continue
            if xskey == "control/feature-suspend" and cant_suspend_reason is not None:
                out["data-cant-suspend-reason"] = cant_suspend_reason
            else:
                out.setdefault(mapkey, value)
        return out

    def tristate(xskey: str) -> str:
        return {"0": NO, "1": YES}.get(lookup(xskey) or "", UNSPECIFIED)

    windows = [(f"drivers/{x}", x) for x in list_("drivers") if _ocaml_int(x) is not None]
    pv_drivers = to_map(PV_DRIVERS_VERSION)
    for _, text in to_map(windows).items():
        name, version = _scan_driver(text)
        pv_drivers.setdefault(name, version)
    # "to avoid breakage whilst 'micro' is added to linux and windows agents"
    if pv_drivers and "micro" not in pv_drivers:
        pv_drivers = {"micro": "-1", **pv_drivers}

    netbios = to_map(NETBIOS_NAME)
    domain = to_map(DNS_DOMAIN)
    if domain:
        netbios = {k: f"{v}.{domain['dns_domain']}" for k, v in netbios.items()}

    other = to_map((f"control/{x}", x) for x in list_("control"))
    if "data/ts" in nodes:
        other["data-ts"] = nodes["data/ts"]

    services: dict[str, str] = {}
    for service in list_("data/service"):
        for key in list_(f"data/service/{service}"):
            services[f"{service}/{key}"] = lookup(f"data/service/{service}/{key}") or ""
    for key in GUEST_SERVICE_KEYS:
        if f"data/{key}" in nodes:
            services.setdefault(key, nodes[f"data/{key}"])

    return GuestMetrics(
        os_version=to_map(OS_VERSION), PV_drivers_version=pv_drivers,
        networks=to_map(_networks("attr", "vif", list_) + _networks("xenserver/attr", "net-sriov-vf", list_)),
        other=other, memory=to_map(MEMORY), netbios_name=netbios, services=services,
        device_id=to_map(DEVICE_ID),
        can_use_hotplug_vbd=tristate("feature/hotplug/vbd"),
        can_use_hotplug_vif=tristate("feature/hotplug/vif"))


def agent_data_changed(old: Mapping[str, str], new: Mapping[str, str]) -> bool:
    """Whether the guest-agent nodes changed other than in IGNORED_KEYS (xapi_xenops.ml: only
    then are the VM's allowed_operations worked out again)."""
    def strip(nodes: Mapping[str, str]) -> dict[str, str]:
        return {k: v for k, v in nodes.items() if k not in IGNORED_KEYS}
    return strip(old) != strip(new)


def pv_drivers_detected(previous: bool, state: str, all_states: Iterable[str]) -> bool:
    """xenopsd's maybe_update_pv_drivers_detected, run when a backend's ``state`` node of the
    domain changes to ``state``: Connected is evidence of PV drivers; a device leaving
    Connected after drivers were seen keeps the verdict only while another backend of the
    domain (``all_states``: every backend's state now) is Connected."""
    connected = state == XENBUS_CONNECTED
    if connected and not previous:
        return True
    if not connected and previous:
        return any(s == XENBUS_CONNECTED for s in all_states)
    return previous
