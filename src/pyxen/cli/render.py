"""xl's exact output formats (tools/xl/xl_info.c, xl_misc.c), as pure functions of data."""

from __future__ import annotations

import os

from ..records import TYPE_CHECKING, NamedTuple
from ..libxlu.cpumap import format_cpumap

if TYPE_CHECKING:
    from typing import Any, Iterable

LIST_HEADER = "Name                                        ID   Mem VCPUs\tState\tTime(s)"


class DomainRow(NamedTuple):
    """One line of ``xl list``."""

    name: str
    domid: int
    mem_mib: int
    vcpus: int
    state: str
    cpu_seconds: float

    @classmethod
    def from_info(cls, d: dict[str, Any]) -> "DomainRow":
        # Mem is what the domain holds now (current pages), as in xl; the balloon reports it.
        return cls(d["name"], d["domid"], d.get("current_kb", d["memory_kb"]) // 1024, d["online_vcpus"], d["state"],
                   d["cpu_time_ns"] / 1e9)

    def render(self) -> str:
        return "%-40s %5d %5d %5d     %s  %8.1f" % (self.name, self.domid, self.mem_mib, self.vcpus,
                                                   self.state, self.cpu_seconds)


def xl_list(rows: Iterable[DomainRow]) -> str:
    return "\n".join([LIST_HEADER, *(r.render() for r in rows)]) + "\n"


def xl_list_long(entries: Iterable[tuple[int, dict[str, Any]]]) -> str:
    """``xl list -l``: a JSON array of {"domid": N, "config": libxl_domain_config}, in libxl's
    yajl layout (the configs come from pyxen.toolstack.libxl_json.live_config)."""
    from ..toolstack.libxl_json import list_long  # (only list -l needs the JSON writer)
    return list_long(entries)


def info_fields(phys: dict[str, Any], ver: dict[str, Any]) -> list[tuple[str, str]]:
    """``xl info``'s fields, in xl's order, from physinfo, xen_version and uname."""
    u = os.uname()
    khz = phys["cpu_khz"]
    mib = lambda pages: str(pages * 4096 >> 20)  # noqa: E731
    return [
        ("host", u.nodename), ("release", u.release), ("version", u.version), ("machine", u.machine),
        ("nr_cpus", str(phys["nr_cpus"])), ("max_cpu_id", str(phys["max_cpu_id"])),
        ("nr_nodes", str(phys["nr_nodes"])), ("cores_per_socket", str(phys["cores_per_socket"])),
        ("threads_per_core", str(phys["threads_per_core"])),
        ("cpu_mhz", "%d.%03d" % (khz // 1000, khz % 1000)),
        ("hw_caps", ":".join("%08x" % w for w in phys["hw_cap"])),
        ("virt_caps", "".join(" " + c for c in phys["virt_caps"])),
        ("total_memory", mib(phys["total_pages"])),
        ("free_memory", mib(phys["free_pages"] - phys["outstanding_pages"])),
        ("sharing_freed_memory", mib(phys["sharing_freed_pages"])),
        ("sharing_used_memory", mib(phys["sharing_used_frames"])),
        ("outstanding_claims", mib(phys["outstanding_pages"])),
        ("free_cpus", str(phys["free_cpus"])),
        ("xen_major", str(ver["major"])), ("xen_minor", str(ver["minor"])),
        ("xen_extra", ver["extra"]), ("xen_version", "%d.%d%s" % (ver["major"], ver["minor"], ver["extra"])),
        ("xen_caps", ver["capabilities"]), ("xen_scheduler", ver["scheduler"]),
        ("xen_pagesize", str(ver["pagesize"])), ("platform_params", "virt_start=0x%x" % ver["virt_start"]),
        ("xen_changeset", ver["changeset"]), ("xen_commandline", ver["commandline"]),
        ("cc_compiler", ver["compiler"]), ("cc_compile_by", ver["compile_by"]),
        ("cc_compile_domain", ver["compile_domain"]), ("cc_compile_date", ver["compile_date"]),
        ("build_id", ver["build_id"]), ("xend_config_format", "4"),
    ]


def xl_info(fields: list[tuple[str, str]], only: str | None = None) -> str:
    """Every field as ``%-23s: value``; with ``only``, the values of fields starting with it."""
    if only is not None:
        return "".join(v.lstrip() + "\n" for k, v in fields if k.startswith(only))
    # virt_caps' words each carry their leading space in xl, so its line has no ": ".
    return "".join(("%-23s:%s\n" if k == "virt_caps" else "%-23s: %s\n") % (k, v) for k, v in fields)


def uptime_text(seconds: float) -> str:
    """xl uptime's H:MM:SS, with days when a day or more has passed."""
    s = int(seconds)
    days, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if days == 0:
        return "%2d:%02d:%02d" % (h, m, s)
    return "%d day%s, %2d:%02d:%02d" % (days, "" if days == 1 else "s", h, m, s)


def xl_uptime(rows: Iterable[tuple[str, int, float]]) -> str:
    lines = ["%-33s %4s %s" % ("Name", "ID", "Uptime")]
    lines += ["%-33s %4d %s" % (name, domid, uptime_text(secs)) for name, domid, secs in rows]
    return "\n".join(lines) + "\n"


def _num(rec: dict[str, str], *keys: str) -> int:
    """The first of ``keys`` that holds a number, else -1 (xl prints -1 for what is missing)."""
    for key in keys:
        value = rec.get(key, "")
        if value.lstrip("-").isdigit():
            return int(value)
    return -1


def xl_block_list(recs: Iterable[dict[str, str]]) -> str:
    """``xl block-list``: Vdev BE handle state evt-ch ring-ref BE-path (the handle is the domid)."""
    lines = ["%-5s %-3s %-6s %-5s %-6s %-8s %-30s" % ("Vdev", "BE", "handle", "state", "evt-ch",
                                                      "ring-ref", "BE-path")]
    for r in recs:
        lines.append("%-5d %-3d %-6d %-5d %-6d %-8d %-30s" % (
            _num(r, "devid"), _num(r, "backend-id"), _num(r, "frontend-id"), _num(r, "state"),
            _num(r, "event-channel"), _num(r, "ring-ref"), r.get("backend", "")))
    return "\n".join(lines) + "\n"


def xl_channel_list(recs: Iterable[dict[str, str]]) -> str:
    """``xl channel-list``: Idx BE state evt-ch ring-ref connection, then the pty path for a
    pty channel (xl_console.c main_channellist, its trailing spaces included)."""
    lines = ["%-3s %-2s %-5s %-6s %8s %-10s %-30s" % ("Idx", "BE", "state", "evt-ch", "ring-ref",
                                                     "connection", "")]
    for r in recs:
        row = "%-3d %-2d %-5d %-6d %-8d %-10s " % (
            _num(r, "devid"), _num(r, "backend-id"), _num(r, "state"), _num(r, "event-channel"),
            _num(r, "ring-ref"), r.get("connection", ""))
        if r.get("connection") == "pty":
            row += "%-30s " % r.get("tty", "")
        lines.append(row)
    return "\n".join(lines) + "\n"


def xl_network_list(recs: Iterable[dict[str, str]]) -> str:
    """``xl network-list``: Idx BE Mac Addr. handle state evt-ch tx-/rx-ring-ref BE-path
    (the header's "%-17s" column is not the rows': a row's MAC runs into its "%6d" handle)."""
    lines = ["%-3s %-2s %-17s %-6s %-5s %-6s %5s/%-5s %-30s" % (
        "Idx", "BE", "Mac Addr.", "handle", "state", "evt-ch", "tx-", "rx-ring-ref", "BE-path")]
    for r in recs:
        # xl_nic.c: "%-3d %-2d " then LIBXL_MAC_FMT, then "%6d ..." with no space between
        lines.append("%-3d %-2d %s%6d %5d %6d %5d/%-11d %-30s" % (
            _num(r, "devid"), _num(r, "backend-id"), r.get("mac", "-"), _num(r, "handle", "devid"),
            _num(r, "state"), _num(r, "event-channel", "event-channel-tx"), _num(r, "tx-ring-ref"),
            _num(r, "rx-ring-ref"), r.get("backend", "")))
    return "\n".join(lines) + "\n"


def xl_vcpu_list(rows: Iterable[tuple[str, int, dict[str, Any]]], nr_cpus: int) -> str:
    """``xl vcpu-list``: Name ID VCPU CPU State Time(s) Affinity (Hard / Soft)."""
    lines = ["%-32s %5s %5s %5s %5s %9s %s" % ("Name", "ID", "VCPU", "CPU", "State", "Time(s)",
                                                "Affinity (Hard / Soft)")]
    for name, domid, v in rows:
        head = "%-32s %5u %5u" % (name, domid, v["vcpu"])
        if v["online"]:
            state = "%5u %3c%c- " % (max(v["cpu"], 0), "r" if v["running"] else "-", "b" if v["blocked"] else "-")
        else:
            state = "%5c %3c%cp " % ("-", "-", "-")
        lines.append(head + state + "%9.1f  " % (v["cpu_time_ns"] / 1e9)
                     + format_cpumap(v["hard"], nr_cpus) + " / " + format_cpumap(v.get("soft") or list(range(nr_cpus)), nr_cpus))
    return "\n".join(lines) + "\n"


def xl_sched_credit(pool_line: str | None, rows: Iterable[tuple[str, int, int, int]]) -> str:
    """``xl sched-credit``: the pool line (when listing all), then Name ID Weight Cap."""
    lines = [pool_line] if pool_line else []
    lines.append("%-33s %4s %6s %4s" % ("Name", "ID", "Weight", "Cap"))
    lines += ["%-33s %4d %6d %4d" % row for row in rows]
    return "\n".join(lines) + "\n"
