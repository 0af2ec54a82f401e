"""The host's NUMA topology, as Xen's sysctls report it to ``xl info -n``: cputopoinfo (each
CPU's core, socket and node), numainfo (each node's memory and distances) and pcitopoinfo (each
PCI device's node). Read from Linux's sysfs (``/sys/devices/system/{cpu,node}``,
``/sys/bus/pci/devices``), which knows what Xen learns from the ACPI SRAT and SLIT tables.

The readers take the sysfs root, so they are tested against a made-up tree.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..libxlu.cpumap import parse_cpulist
from .core import Hypervisor, hypercall

#: libxl's LIBXL_CPUTOPOLOGY_INVALID_ENTRY / LIBXL_PCITOPOLOGY_INVALID_ENTRY (~0U): not known.
INVALID = 0xFFFFFFFF
SYSFS = Path("/sys")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _int(text: str | None) -> int:
    return int(text) if text is not None and re.fullmatch(r"-?\d+", text) else INVALID


def node_dirs(sysfs: Path = SYSFS) -> dict[int, Path]:
    """The host's NUMA nodes by number (a host without the node folder is one node, 0)."""
    found = {int(p.name[4:]): p for p in (sysfs / "devices/system/node").glob("node[0-9]*")}
    return dict(sorted(found.items()))


def cpu_topology(sysfs: Path = SYSFS) -> list[dict[str, int]]:
    """sysctl cputopoinfo: one entry per CPU id up to the highest, {core, socket, node};
    INVALID where the CPU is absent (offline CPUs have no topology folder)."""
    cpus = {int(p.name[3:]): p for p in (sysfs / "devices/system/cpu").glob("cpu[0-9]*")}
    node_of: dict[int, int] = {}
    for node, path in node_dirs(sysfs).items():
        cpulist = _read(path / "cpulist")
        if cpulist:
            for cpu in parse_cpulist(cpulist, max(cpus, default=0) + 1):
                node_of[cpu] = node
    out = []
    for cpu in range(max(cpus, default=-1) + 1):
        topo = cpus[cpu] / "topology" if cpu in cpus else None
        core = _int(_read(topo / "core_id")) if topo else INVALID
        out.append({"core": core,
                    "socket": _int(_read(topo / "physical_package_id")) if topo else INVALID,
                    "node": node_of.get(cpu, 0 if core != INVALID else INVALID)})
    return out


def numa_info(sysfs: Path = SYSFS) -> list[dict[str, Any]]:
    """sysctl numainfo: per node {size, free} in bytes and the distance to each node."""
    out = []
    for node, path in node_dirs(sysfs).items():
        meminfo = _read(path / "meminfo") or ""
        total = re.search(r"MemTotal:\s+(\d+) kB", meminfo)
        free = re.search(r"MemFree:\s+(\d+) kB", meminfo)
        dists = [int(d) for d in (_read(path / "distance") or "10").split()]
        out.append({"node": node, "size": int(total.group(1)) << 10 if total else INVALID,
                    "free": int(free.group(1)) << 10 if free else INVALID, "dists": dists})
    return out


def pci_topology(sysfs: Path = SYSFS) -> list[dict[str, int]]:
    """sysctl pcitopoinfo: each PCI device's segment, bus, devfn and node (INVALID when the
    firmware gives no proximity, numa_node -1)."""
    out = []
    for dev in sorted((sysfs / "bus/pci/devices").glob("*")):
        m = re.fullmatch(r"([0-9a-f]{4}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])", dev.name)
        if not m:
            continue
        node = _int(_read(dev / "numa_node"))
        out.append({"seg": int(m.group(1), 16), "bus": int(m.group(2), 16),
                    "devfn": int(m.group(3), 16) << 3 | int(m.group(4)),
                    "node": INVALID if node == INVALID or node < 0 else node})
    return out


@hypercall("sysctl.cputopoinfo")
async def _cputopoinfo(hv: Hypervisor, args: dict[str, Any]) -> list[dict[str, int]]:
    return cpu_topology()


@hypercall("sysctl.numainfo")
async def _numainfo(hv: Hypervisor, args: dict[str, Any]) -> list[dict[str, Any]]:
    """Node sizes are the host's; on a one-node host they are the hypervisor's own pool (what
    ``xl info`` calls total_memory and free_memory), since that is the memory it hands out."""
    nodes = numa_info()
    if len(nodes) == 1:
        nodes[0].update(size=hv.pool.total_kb << 10, free=hv.pool.free_kb << 10)
    return nodes


@hypercall("sysctl.pcitopoinfo")
async def _pcitopoinfo(hv: Hypervisor, args: dict[str, Any]) -> list[dict[str, int]]:
    return pci_topology()
