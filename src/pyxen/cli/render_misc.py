"""Output formats of the rest of xl's commands (tools/xl/xl_info.c: list_domains' extra
columns, list_vm, claims, output_topologyinfo, output_numainfo, uptime -s) and of xentop
(tools/xentop/xentop.c), as pure functions of data.
"""

from __future__ import annotations

import time

from ..records import TYPE_CHECKING, NamedTuple
from ..libxlu.cpumap import format_cpumap
from .render import LIST_HEADER, DomainRow

if TYPE_CHECKING:
    from typing import Any, Iterable, Sequence

#: libxl's ~0U marker of an unknown topology entry (LIBXL_CPUTOPOLOGY_INVALID_ENTRY).
INVALID = 0xFFFFFFFF
NULL_UUID = "00000000-0000-0000-0000-000000000000"


class ListColumns(NamedTuple):
    """``xl list``'s optional columns: -v (UUID, Reason-Code, Security Label), -Z (Security
    Label), claims' Claimed, -c (Cpupool), -n (NODE Affinity)."""

    verbose: bool = False
    context: bool = False
    claim: bool = False
    cpupool: bool = False
    numa: bool = False

    def header(self) -> str:
        h = LIST_HEADER
        if self.verbose:
            h += "   UUID                            Reason-Code\tSecurity Label"
        if self.context and not self.verbose:
            h += "   Security Label"
        if self.claim:
            h += "  Claimed"
        if self.cpupool:
            h += "         Cpupool"
        if self.numa:
            h += " NODE Affinity"
        return h


def list_row_extra(cols: ListColumns, info: dict[str, Any], pool: str = "Pool-0",
                   nodes: str = "all", ssid_label: str | None = None) -> str:
    """What list_domains prints after a row's Time(s): the uuid and ``%8x`` shutdown reason
    (``-`` while running), the outstanding claim in MiB, the ``%16s`` security label (``-``
    without FLASK), the ``%16s`` pool name and the node bitmap."""
    out = ""
    if cols.verbose:
        out += " " + info["uuid"]
        out += " %8x" % info["shutdown_reason"] if info["shutdown"] else " %8s" % "-"
    if cols.claim:
        out += " %5d" % (info.get("outstanding_kb", 0) // 1024)
    if cols.verbose or cols.context:
        out += " %16s" % (ssid_label or "-")
    if cols.cpupool:
        out += "%16s" % pool
    if cols.numa:
        out += " " + nodes
    return out


def xl_list_columns(cols: ListColumns, infos: Sequence[dict[str, Any]],
                    pools: dict[int, str] | None = None, nodes: dict[int, str] | None = None) -> str:
    """``xl list`` with its optional columns (``pools``/``nodes``: by domid)."""
    lines = [cols.header()]
    for d in infos:
        lines.append(DomainRow.from_info(d).render() + list_row_extra(
            cols, d, (pools or {}).get(d["domid"], "Pool-0"), (nodes or {}).get(d["domid"], "all")))
    return "\n".join(lines) + "\n"


def node_affinity(hard_maps: Iterable[Iterable[int]], cpu_nodes: Sequence[int], nr_nodes: int) -> str:
    """A domain's NODE Affinity as Xen computes it by default (the nodes of the CPUs its vCPUs
    may run on), in print_bitmap's text over ``nr_nodes``."""
    nodes = {cpu_nodes[c] for m in hard_maps for c in m if c < len(cpu_nodes) and cpu_nodes[c] != INVALID}
    return format_cpumap(nodes, nr_nodes)


def xl_vm_list(rows: Iterable[tuple[str, int, str]]) -> str:
    """``xl vm-list`` (list_vm): uuid, domid, name."""
    lines = ["UUID                                  ID    name"]
    lines += ["%s  %d    %-30s" % (uuid, domid, name) for uuid, domid, name in rows]
    return "\n".join(lines) + "\n"


def topology_block(cpus: Sequence[dict[str, int]], pci: Sequence[dict[str, int]]) -> str:
    """``xl info -n``'s cpu_topology and device topology blocks (output_topologyinfo)."""
    lines = ["cpu_topology           :", "cpu:    core    socket     node"]
    lines += ["%3d:    %4d     %4d     %4d" % (i, c["core"], c["socket"], _signed(c["node"]))
              for i, c in enumerate(cpus) if c["core"] != INVALID]
    lines += ["device topology        :", "device           node"]
    valid = [d for d in pci if d["node"] != INVALID]
    lines += ["%04x:%02x:%02x.%01x      %d" % (d["seg"], d["bus"], (d["devfn"] >> 3) & 0x1F, d["devfn"] & 7,
                                              d["node"]) for d in valid]
    if not valid:
        lines.append("No device topology data available")
    return "\n".join(lines) + "\n"


def _signed(v: int) -> int:
    """An unsigned 32-bit field printed with %d, as C does."""
    return v - (1 << 32) if v >= 1 << 31 else v


def numa_block(nodes: Sequence[dict[str, Any]]) -> str:
    """``xl info -n``'s numa_info block (output_numainfo): sizes in MiB, distances."""
    lines = ["numa_info              :", "node:    memsize    memfree    distances"]
    for i, n in enumerate(nodes):
        if n["size"] == INVALID:
            continue
        lines.append("%4d:    %6d     %6d      %s" % (i, n["size"] >> 20, n["free"] >> 20,
                                                     ",".join(str(d) for d in n["dists"])))
    return "\n".join(lines) + "\n"


def xl_info_full(fields: list[tuple[str, str]], only: str | None, numa: str = "",
                 xenstore_features: int | None = None) -> str:
    """``xl info`` with -n's blocks after free_cpus and -x's xenstore_features line before
    xend_config_format, in print_info's order; ``only`` as xl's field filter (Xen ignores it
    with -n)."""
    from .render import xl_info
    extra = [] if xenstore_features is None else [("xenstore_features", "0x%08x" % xenstore_features)]
    head = [f for f in fields if f[0] != "xend_config_format"]
    tail = extra + [f for f in fields if f[0] == "xend_config_format"]
    if only is not None and not numa:
        return xl_info(head + tail, only)
    split = next(i for i, (k, _) in enumerate(head) if k == "free_cpus") + 1
    return xl_info(head[:split]) + numa + xl_info(head[split:] + tail)


def uptime_short_text(seconds: float) -> str:
    """uptime_to_string's short mode: the seconds dropped, hours still padded to 2."""
    s = int(seconds)
    days, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m = s // 60
    if days > 1:
        return "%d days, %2d:%02d" % (days, h, m)
    if days == 1:
        return "%d day, %2d:%02d" % (days, h, m)
    return "%2d:%02d" % (h, m)


def xl_uptime_short(rows: Iterable[tuple[str, int, float]], now: float) -> str:
    """``xl uptime -s``: `` HH:MM:SS up <uptime>, <name> (<id>)`` (local time, no header)."""
    clock = time.strftime("%H:%M:%S", time.localtime(now))
    return "".join(" %s up %s, %s (%d)\n" % (clock, uptime_short_text(secs), name, domid)
                   for name, domid, secs in rows)
