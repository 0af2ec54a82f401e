"""``xentop`` (and ``xl top``): the host's domains and what they use, refreshed every few
seconds (tools/xentop/xentop.c over libxenstat).

Columns, widths, options and the batch format are xentop's. Numbers are real: CPU time and
memory from the hypervisor (getdomaininfolist, physinfo), vif byte counters from the host's
/proc/net/dev for the TAPs ``vif<domid>.<devid>`` (swapped, as libxenstat does, so that they are
the guest's view: what Dom0 sends is what the guest receives). pyxen's block backends keep no
per-device request counters (Xen's /sys/bus/xen-backend/.../statistics), so the VBD columns
show ``-`` as xentop does for a VBD whose statistics cannot be read. SSID is 0 (no FLASK).

Interactive mode is a plain refresh of the summary and table on the terminal (no curses keys);
q or Ctrl-C quits.
"""

from __future__ import annotations

import argparse
import os
import select
import sys
import termios
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..hypervisor.client import XenCtrl
from ..libxlu.cfg import atoi
from ..paths import Paths
from ..toolstack import hotplug

VERSION = "1.0"
#: (header, width) of xentop's fields[], in its order.
FIELDS = (("NAME", 10), ("STATE", 6), ("CPU(sec)", 10), ("CPU(%)", 6), ("MEM(k)", 10), ("MEM(%)", 6),
          ("MAXMEM(k)", 10), ("MAXMEM(%)", 9), ("VCPUS", 5), ("NETS", 4), ("NETTX(k)", 8),
          ("NETRX(k)", 8), ("VBDS", 4), ("VBD_OO", 8), ("VBD_RD", 8), ("VBD_WR", 8),
          ("VBD_RSECT", 10), ("VBD_WSECT", 10), ("SSID", 4))
USAGE = """Usage: {prog} [OPTION]
Displays ongoing information about xen vm resources \n
-h, --help           display this help and exit
-V, --version        output version information and exit
-d, --delay=SECONDS  seconds between updates (default 3)
-n, --networks       output vif network data
-x, --vbds           output vbd block device data
-r, --repeat-header  repeat table header before each domain
-v, --vcpus          output vcpu data
-b, --batch\t     output in batch mode, no user input accepted
-i, --iterations     number of iterations before exiting
-f, --full-name      output the full domain name (not truncated)

Report bugs to <xen-devel@lists.xen.org>.
"""


@dataclass
class Net:
    """One vif, as the guest sees it (bytes, packets, errors, drops each way)."""

    rbytes: int = 0
    rpackets: int = 0
    rerrs: int = 0
    rdrop: int = 0
    tbytes: int = 0
    tpackets: int = 0
    terrs: int = 0
    tdrop: int = 0


@dataclass
class DomainStats:
    """xenstat_domain: what one domain row and its detail lines show."""

    domid: int
    name: str
    dying: bool
    shutdown: bool
    crashed: bool
    blocked: bool
    paused: bool
    running: bool
    cpu_ns: int
    cur_mem: int  # bytes
    max_mem: int  # bytes
    num_vcpus: int = 0
    vcpus: list[tuple[bool, int]] = field(default_factory=list)  # (online, ns)
    nets: list[Net] = field(default_factory=list)
    vbds: list[int] = field(default_factory=list)  # virtual device numbers; no counters
    ssid: int = 0

    def state(self) -> str:
        """xentop's letters, in its order: d s b c p r."""
        flags = (self.dying, self.shutdown, self.blocked, self.crashed, self.paused, self.running)
        return "".join(ch if on else "-" for ch, on in zip("dsbcpr", flags))


@dataclass
class NodeStats:
    """xenstat_node: one sample of the host."""

    when: float
    version: str
    tot_mem: int  # bytes
    free_mem: int
    num_cpus: int
    cpu_hz: int
    domains: list[DomainStats]


def from_info(d: dict[str, Any]) -> DomainStats:
    """A domain's stats from the hypervisor's domain info (crash is a shutdown reason, 3)."""
    crashed = bool(d["shutdown"]) and d["shutdown_reason"] == 3
    state = d["state"]
    return DomainStats(
        domid=d["domid"], name=d["name"], dying=bool(d["dying"]),
        shutdown=bool(d["shutdown"]) and not crashed, crashed=crashed,
        blocked=state[1] == "b", paused=bool(d["paused"]), running=state[0] == "r",
        cpu_ns=int(d["cpu_time_ns"]), cur_mem=int(d.get("current_kb", d["memory_kb"])) * 1024,
        max_mem=int(d["max_memkb"]) * 1024, num_vcpus=int(d["max_vcpus"]))


def read_proc_net_dev(text: str) -> dict[str, Net]:
    """/proc/net/dev's counters by interface, swapped into the guest's view (libxenstat)."""
    out = {}
    for line in text.splitlines()[2:]:
        name, _, rest = line.partition(":")
        v = [int(x) for x in rest.split()]
        if len(v) < 12:
            continue
        # Dom0's receive columns are the guest's transmit, and the other way round.
        out[name.strip()] = Net(rbytes=v[8], rpackets=v[9], rerrs=v[10], rdrop=v[11],
                                tbytes=v[0], tpackets=v[1], terrs=v[2], tdrop=v[3])
    return out


def sample(xc: XenCtrl, paths: Paths, vcpus: bool = False) -> NodeStats:
    """One sample of the host and every domain, now."""
    phys = xc.call("sysctl.physinfo")
    ver = xc.call("xen_version")
    try:
        netdev = read_proc_net_dev(Path("/proc/net/dev").read_text())
    except OSError:
        netdev = {}
    doms = []
    for info in xc.call("sysctl.getdomaininfolist"):
        d = from_info(info)
        if d.domid != 0:
            try:
                vifs = hotplug.list_devices(paths, d.domid, ("vif",))
                vbds = hotplug.list_devices(paths, d.domid, ("vbd", "qdisk"))
            except OSError:
                vifs = vbds = []
            d.nets = [netdev.get(f"vif{d.domid}.{v['devid']}", Net()) for v in vifs]
            d.vbds = [int(v.get("virtual-device", v["devid"])) for v in vbds]
        if vcpus:
            d.vcpus = [(bool(v["online"]), int(v["cpu_time_ns"]))
                       for v in xc.call("domctl.getvcpuinfo", domid=d.domid)]
        doms.append(d)
    page = int(ver.get("pagesize", 4096))
    return NodeStats(time.time(), "%d.%d%s" % (ver["major"], ver["minor"], ver["extra"]),
                     int(phys["total_pages"]) * page, int(phys["free_pages"]) * page,
                     int(phys["nr_cpus"]), int(phys["cpu_khz"]) * 1000, doms)


@dataclass
class Options:
    delay: int = 3
    networks: bool = False
    vbds: bool = False
    repeat_header: bool = False
    vcpus: bool = False
    batch: bool = False
    iterations: int = 0
    full_name: bool = False


def cpu_pct(d: DomainStats, prev: NodeStats | None, now: NodeStats) -> float:
    """get_cpu_pct: CPU time used since the previous sample over the time elapsed, in %."""
    if prev is None:
        return 0.0
    old = next((o for o in prev.domains if o.domid == d.domid), None)
    us = (now.when - prev.when) * 1e6
    if old is None or us <= 0:
        return 0.0
    return ((d.cpu_ns - old.cpu_ns) / 10.0) / us


def table(now: NodeStats, prev: NodeStats | None, opts: Options) -> str:
    """The header and one row per domain (sorted by name, xentop's default sort field), with
    the -v/-n/-x detail lines; widths of the counter columns grow to fit, as xentop's do."""
    widths = {h: w for h, w in FIELDS}
    doms = sorted(now.domains, key=lambda d: d.name.lower())
    if opts.full_name:
        widths["NAME"] = max([10] + [len(d.name) for d in doms])
    for d in doms:
        for h, value in (("NETTX(k)", sum(n.tbytes for n in d.nets) // 1024),
                         ("NETRX(k)", sum(n.rbytes for n in d.nets) // 1024)):
            widths[h] = max(widths[h], len(str(value + 1)))
    header = " ".join("%*s" % (widths[h], h) for h, _ in FIELDS) + "\n"
    out = []
    for i, d in enumerate(doms):
        if i == 0 or opts.repeat_header:
            out.append(header)
        out.append(row(d, now, prev, widths, opts.full_name) + "\n")
        if opts.vcpus:
            out.append(vcpu_line(d))
        if opts.networks:
            out += [("Net%d RX: %8dbytes %8dpkts %8derr %8ddrop  " % (i2, n.rbytes, n.rpackets, n.rerrs, n.rdrop))
                    + ("TX: %8dbytes %8dpkts %8derr %8ddrop\n" % (n.tbytes, n.tpackets, n.terrs, n.tdrop))
                    for i2, n in enumerate(d.nets)]
        if opts.vbds:
            out += ["VBD %s %4d [%2x:%2x]  OO: %8c   RD: %8c   WR: %8c   RSECT: %10c   WSECT: %10c\n"
                    % ("Unidentified", dev, dev >> 8, dev & 0xFF, "-", "-", "-", "-", "-") for dev in d.vbds]
    return "".join(out)


def row(d: DomainStats, now: NodeStats, prev: NodeStats | None, widths: dict[str, int],
        full_name: bool) -> str:
    """do_domain: one domain's fields, each printed as xentop's print_* function does."""
    vbd = "%*d" if not d.vbds else "%*c"
    vbd_value: Any = 0 if not d.vbds else "-"
    cells = [
        "%*s" % (widths["NAME"], d.name) if full_name else "%10.10s" % d.name,
        d.state(),
        "%10d" % (d.cpu_ns // 1_000_000_000),
        "%6.1f" % cpu_pct(d, prev, now),
        "%10d" % (d.cur_mem // 1024),
        "%6.1f" % (d.cur_mem / now.tot_mem * 100 if now.tot_mem else 0.0),
        "%10d" % (d.max_mem // 1024),
        "%9.1f" % (d.max_mem / now.tot_mem * 100 if now.tot_mem else 0.0),
        "%5d" % d.num_vcpus,
        "%4d" % len(d.nets),
        "%*d" % (widths["NETTX(k)"], sum(n.tbytes for n in d.nets) // 1024),
        "%*d" % (widths["NETRX(k)"], sum(n.rbytes for n in d.nets) // 1024),
        "%4d" % len(d.vbds),
        ("%8d" if not d.vbds else "%8c") % vbd_value,
        *(vbd % (widths[h], vbd_value) for h in ("VBD_RD", "VBD_WR", "VBD_RSECT", "VBD_WSECT")),
        "%4d" % d.ssid,
    ]
    return " ".join(cells)


def vcpu_line(d: DomainStats) -> str:
    """do_vcpu: each online vCPU's seconds, five to a line."""
    out = "VCPUs(sec): "
    for i, (online, ns) in enumerate(d.vcpus):
        if online:
            if i != 0 and i % 5 == 0:
                out += "\n        "
            out += " %2d: %10ds" % (i, ns // 1_000_000_000)
    return out + "\n"


def summary(now: NodeStats) -> str:
    """do_summary: the lines above the table in interactive mode."""
    counts = {"run": 0, "block": 0, "pause": 0, "shutdown": 0, "crash": 0, "dying": 0}
    for d in now.domains:
        key = next((k for k, on in (("run", d.running), ("block", d.blocked), ("pause", d.paused),
                                    ("shutdown", d.shutdown), ("crash", d.crashed), ("dying", d.dying)) if on), None)
        if key:
            counts[key] += 1
    used = now.tot_mem - now.free_mem
    return (f"xentop - {time.strftime('%H:%M:%S', time.localtime(now.when))}   Xen {now.version}\n"
            f"{len(now.domains)} domains: {counts['run']} running, {counts['block']} blocked, "
            f"{counts['pause']} paused, {counts['crash']} crashed, {counts['dying']} dying, "
            f"{counts['shutdown']} shutdown \n"
            f"Mem: {now.tot_mem // 1024}k total, {used // 1024}k used, {now.free_mem // 1024}k free    "
            f"CPUs: {now.num_cpus} @ {now.cpu_hz // 1_000_000}MHz\n")


def parse_args(argv: Sequence[str], prog: str) -> Options | int:
    """xentop's getopt; an exit status for -h, -V and bad options (usage printed)."""
    p = argparse.ArgumentParser(prog=prog, add_help=False)
    p.add_argument("-h", "--help", action="store_true")
    p.add_argument("-V", "--version", action="store_true")
    p.add_argument("-n", "--networks", action="store_true")
    p.add_argument("-x", "--vbds", action="store_true")
    p.add_argument("-r", "--repeat-header", action="store_true")
    p.add_argument("-v", "--vcpus", action="store_true")
    p.add_argument("-d", "--delay")
    p.add_argument("-b", "--batch", action="store_true")
    p.add_argument("-i", "--iterations")
    p.add_argument("-f", "--full-name", action="store_true")
    try:
        ns, _ = p.parse_known_args(list(argv))
    except SystemExit:
        sys.stdout.write(USAGE.format(prog=prog))
        return 0  # getopt's '?' lands on xentop's usage-and-exit(0)
    if ns.help:
        sys.stdout.write(USAGE.format(prog=prog))
        return 0
    if ns.version:
        sys.stdout.write(f"xentop {VERSION}\nWritten by Judy Fischbach, David Hendricks, Josh Triplett\n\n"
                         "This is free software; see the source for copying conditions. There is NO\n"
                         "WARRANTY; not even for MERCHANTABILITY or FITNESS FOR A PARTICULAR PURPOSE.\n")
        return 0
    opts = Options(networks=ns.networks, vbds=ns.vbds, repeat_header=ns.repeat_header, vcpus=ns.vcpus,
                   batch=ns.batch, full_name=ns.full_name)
    if ns.delay is not None:
        opts.delay = atoi(ns.delay)
    if ns.iterations is not None:
        opts.iterations = atoi(ns.iterations)
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    prog = "xentop"
    parsed = parse_args(sys.argv[1:] if argv is None else argv, prog)
    if isinstance(parsed, int):
        return parsed
    opts = parsed
    paths = Paths.from_env()
    try:
        xc = XenCtrl(paths.hypervisor_socket)
    except OSError:
        sys.stderr.write("Failed to initialize xenstat library\n")
        return 1
    prev: NodeStats | None = None
    left = opts.iterations
    interactive = not opts.batch and os.isatty(0) and os.isatty(1)
    saved = termios.tcgetattr(0) if interactive else None
    try:
        if saved is not None:
            tty.setcbreak(0)
        while True:
            try:
                now = sample(xc, paths, vcpus=opts.vcpus)
            except OSError:
                sys.stderr.write("Failed to retrieve statistics from libxenstat\n")
                return 1
            text = table(now, prev, opts)
            if not opts.batch:
                text = summary(now) + text
                if interactive:
                    text = "\x1b[H\x1b[2J" + text
            sys.stdout.write(text)
            sys.stdout.flush()
            prev = now
            if opts.iterations:
                left -= 1
                if left <= 0:
                    return 0
            if interactive:
                ready, _, _ = select.select([0], [], [], max(opts.delay, 0))
                if ready and os.read(0, 16)[:1] in (b"q", b"Q", b"\x1b"):
                    return 0
            else:
                time.sleep(max(opts.delay, 0))
    except KeyboardInterrupt:
        return 0
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        xc.close()


if __name__ == "__main__":
    raise SystemExit(main())
