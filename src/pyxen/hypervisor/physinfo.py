"""The host's physical facts, as Xen's sysctl physinfo reports them.

CPU topology and speed come from /proc/cpuinfo and sysfs, memory from /proc/meminfo, and the
capability words from the CPUID instruction itself (run through a few bytes of machine code,
since Python has no cpuid), in the order of Xen's featureset words 0..7.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import re
from dataclasses import dataclass
from pathlib import Path

PAGE_SIZE = 4096

# cpuid(leaf=edi, subleaf=esi, out=rdx) -> out[0..3] = eax, ebx, ecx, edx; System V ABI.
_CPUID_CODE = bytes([
    0x53,                    # push rbx
    0x49, 0x89, 0xd0,        # mov r8, rdx
    0x89, 0xf8,              # mov eax, edi
    0x89, 0xf1,              # mov ecx, esi
    0x0f, 0xa2,              # cpuid
    0x41, 0x89, 0x00,        # mov [r8], eax
    0x41, 0x89, 0x58, 0x04,  # mov [r8+4], ebx
    0x41, 0x89, 0x48, 0x08,  # mov [r8+8], ecx
    0x41, 0x89, 0x50, 0x0c,  # mov [r8+12], edx
    0x5b,                    # pop rbx
    0xc3,                    # ret
])
_cpuid_fn = None


def cpuid(leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
    """Execute CPUID on this CPU; (eax, ebx, ecx, edx)."""
    global _cpuid_fn
    if os.uname().machine != "x86_64":
        return (0, 0, 0, 0)
    if _cpuid_fn is None:
        buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        buf.write(_CPUID_CODE)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        proto = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32))
        _cpuid_fn = (buf, proto(addr))
    out = (ctypes.c_uint32 * 4)()
    _cpuid_fn[1](leaf, subleaf, out)
    return (out[0], out[1], out[2], out[3])


def hw_caps() -> tuple[int, ...]:
    """Xen's featureset words 0-7: 1.edx, 1.ecx, e1.edx, e1.ecx, Da1.eax, 7b0.ebx, 7c0.ecx, e7.edx."""
    max_basic = cpuid(0)[0]
    max_ext = cpuid(0x80000000)[0]
    b1 = cpuid(1)
    e1 = cpuid(0x80000001) if max_ext >= 0x80000001 else (0, 0, 0, 0)
    d1 = cpuid(0xD, 1) if max_basic >= 0xD else (0, 0, 0, 0)
    l7 = cpuid(7, 0) if max_basic >= 7 else (0, 0, 0, 0)
    e7 = cpuid(0x80000007) if max_ext >= 0x80000007 else (0, 0, 0, 0)
    return (b1[3], b1[2], e1[3], e1[2], d1[0], l7[1], l7[2], e7[3])


@dataclass(frozen=True)
class PhysInfo:
    """sysctl physinfo: CPUs, topology, speed, capabilities and memory of the host."""

    nr_cpus: int
    max_cpu_id: int
    nr_nodes: int
    cores_per_socket: int
    threads_per_core: int
    cpu_khz: int
    hw_caps: tuple[int, ...]
    total_pages: int

    @property
    def total_mib(self) -> int:
        return self.total_pages * PAGE_SIZE >> 20


def _cpuinfo() -> list[dict[str, str]]:
    cpus: list[dict[str, str]] = [{}]
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if not line.strip():
            cpus.append({})
            continue
        key, _, value = line.partition(":")
        cpus[-1][key.strip()] = value.strip()
    return [c for c in cpus if c]


def read() -> PhysInfo:
    """Read the host's facts now."""
    cpus = _cpuinfo()
    nr_cpus = len(cpus) or os.cpu_count() or 1
    first = cpus[0] if cpus else {}
    siblings = int(first.get("siblings", nr_cpus))
    cores = int(first.get("cpu cores", siblings))
    threads = max(1, siblings // max(cores, 1))
    nodes = len(list(Path("/sys/devices/system/node").glob("node[0-9]*"))) or 1
    khz = int(float(first.get("cpu MHz", "0")) * 1000)
    meminfo = Path("/proc/meminfo").read_text()
    m = re.search(r"MemTotal:\s+(\d+) kB", meminfo)
    total_kb = int(m.group(1)) if m else 0
    return PhysInfo(nr_cpus, nr_cpus - 1, nodes, cores, threads, khz, hw_caps(),
                    total_kb * 1024 // PAGE_SIZE)
