"""Guest memory as a vhost-user back-end sees it: the regions of SET_MEM_TABLE, mmapped.

Spec: vhost-user.rst "Memory regions" and section 1.7 of docs/vhost.md. Each region is a slice of
the guest's RAM memfd (QEMU ``memory-backend-memfd,share=on``). It is mapped from file offset 0
with length ``memory_size + mmap_offset``, as libvhost-user does, so no offset needs page
alignment. Two address spaces point into it: guest-physical addresses (descriptor ``addr``
fields) and QEMU's virtual addresses (SET_VRING_ADDR). In Xen terms this mapping is the
backend's grant mapping of the frontend's pages; the hypervisor records it (gnttab.py).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import threading
from dataclasses import dataclass

from .vhost_user import MemoryRegion


class GuestMemoryError(Exception):
    """An address outside every region: a buggy or hostile guest driver."""


def mapping_address(mm: mmap.mmap) -> int:
    """The host virtual address of a mapping's first byte (the export taken to learn it is
    released at once, so the mapping can still be closed)."""
    probe = (ctypes.c_char * 1).from_buffer(mm)
    try:
        return ctypes.addressof(probe)
    finally:
        del probe


@dataclass
class MappedRegion:
    region: MemoryRegion
    mm: mmap.mmap

    def __post_init__(self) -> None:
        # Hot-path copies: one exported view to slice (no new buffer export per descriptor),
        # the guest-physical range, and gpa -> mapping offset as one addition.
        self.mv = memoryview(self.mm)
        self.gpa_start = self.region.guest_phys_addr
        self.gpa_stop = self.region.guest_phys_addr + self.region.memory_size
        self.delta = self.region.mmap_offset - self.region.guest_phys_addr
        #: gpa -> host virtual address, for iovecs handed to the kernel without a view per
        #: buffer (Virtqueue.pop_iov). Valid while the mapping is: the transport unmaps a
        #: session's memory only after its ring threads stopped.
        self.host_delta = mapping_address(self.mm) + self.delta
        #: host_delta in each of n 128-bit records, by n (at most 256: Virtqueue.pop_iov).
        self.iov_add: dict[int, int] = {}

    @property
    def gpa_end(self) -> int:
        return self.region.guest_phys_addr + self.region.memory_size

    @property
    def qva_end(self) -> int:
        return self.region.userspace_addr + self.region.memory_size


class GuestMemory:
    """The mapped regions of one front-end session; replaced wholesale by each SET_MEM_TABLE."""

    def __init__(self, regions: list[MemoryRegion], fds: list[int]) -> None:
        """Map each region from its fd (closed here: the mapping keeps the memory alive).

        :raise OSError: mmap failed (the fds are closed anyway).
        """
        self.regions: list[MappedRegion] = []
        self._last: MappedRegion | None = None
        try:
            for region, fd in zip(regions, fds):
                mm = mmap.mmap(fd, region.memory_size + region.mmap_offset, mmap.MAP_SHARED,
                               mmap.PROT_READ | mmap.PROT_WRITE)
                self.regions.append(MappedRegion(region, mm))
        except BaseException:
            self.close()
            raise
        finally:
            for fd in fds:
                os.close(fd)

    @property
    def size(self) -> int:
        return sum(r.region.memory_size for r in self.regions)

    def close(self) -> None:
        self._last = None
        for r in self.regions:
            r.mv.release()
            try:
                r.mm.close()
            except BufferError:  # a view still exported; the GC unmaps it when it is dropped
                pass
        self.regions = []

    def qva(self, addr: int) -> tuple[mmap.mmap, int]:
        """(mapping, offset) of a QEMU virtual address (the vring addresses)."""
        for r in self.regions:
            if r.region.userspace_addr <= addr < r.qva_end:
                return r.mm, r.region.mmap_offset + addr - r.region.userspace_addr
        raise GuestMemoryError(f"QEMU address {addr:#x} is in no memory region")

    def gpa(self, addr: int) -> tuple[mmap.mmap, int, int]:
        """(mapping, offset, bytes left in the region) of a guest-physical address."""
        for r in self.regions:
            if r.gpa_start <= addr < r.gpa_stop:
                return r.mm, addr + r.delta, r.gpa_stop - addr
        raise GuestMemoryError(f"guest address {addr:#x} is in no memory region")

    def views(self, addr: int, length: int) -> list[memoryview]:
        """Zero-copy views of ``length`` guest bytes at ``addr``, split where regions end."""
        r = self._last
        if r is not None and r.gpa_start <= addr and addr + length <= r.gpa_stop and length > 0:
            off = addr + r.delta
            return [r.mv[off:off + length]]
        for r in self.regions:
            if r.gpa_start <= addr and addr + length <= r.gpa_stop and length > 0:
                self._last = r
                off = addr + r.delta
                return [r.mv[off:off + length]]
        out: list[memoryview] = []
        while length > 0:
            mm, off, left = self.gpa(addr)
            n = min(length, left)
            out.append(memoryview(mm)[off:off + n])  # rare: a buffer across two regions
            addr += n
            length -= n
        return out


#: The dirty log's granule: one bit per 4 KiB page of guest-physical memory (vhost-user.rst,
#: "Dirty pages logging"; VHOST_LOG_PAGE in QEMU's hw/virtio/vhost.c).
LOG_PAGE_SHIFT = 12
#: Serialises DirtyLog.mark between ring threads (see DirtyLog).
_MARK_LOCK = threading.Lock()


class DirtyLog:
    """The shared dirty-page bitmap of SET_LOG_BASE: bit ``p % 8`` of byte ``p // 8`` is set
    for every guest page ``p`` (guest-physical address >> 12) the back-end writes while the
    front-end migrates (VHOST_F_LOG_ALL). QEMU reads and clears it with atomic exchanges when
    it syncs; a bit set here is never lost by that (at worst a page is sent twice). QEMU shares
    one log among a guest's devices, and blkback serves each ring from a thread of its own
    (transport.RingWorker), so the read-modify-write of a byte is under one process-wide lock:
    two rings marking pages of the same byte must not lose each other's bit."""

    def __init__(self, fd: int, size: int, offset: int) -> None:
        """Map ``size`` bytes of ``fd`` at ``offset`` (fd closed here).

        :raise OSError: mmap failed (the fd is closed anyway).
        """
        try:
            aligned = offset - offset % mmap.ALLOCATIONGRANULARITY
            self.mm = mmap.mmap(fd, size + offset - aligned, mmap.MAP_SHARED,
                                mmap.PROT_READ | mmap.PROT_WRITE, offset=aligned)
        finally:
            os.close(fd)
        self.base = offset - aligned
        self.size = size

    def mark(self, gpa: int, length: int) -> None:
        """Log a write of ``length`` bytes at guest-physical ``gpa`` (pages past the log's end,
        which covers all of guest RAM, are ignored)."""
        if length <= 0:
            return
        with _MARK_LOCK:
            self._mark(gpa, length)

    def _mark(self, gpa: int, length: int) -> None:
        mm, base, size = self.mm, self.base, self.size
        page = gpa >> LOG_PAGE_SHIFT
        last = (gpa + length - 1) >> LOG_PAGE_SHIFT
        while page <= last:
            byte = page >> 3
            if byte >= size:
                return
            if not page & 7 and page + 7 <= last:
                mm[base + byte] = 0xFF
                page += 8
            else:
                mm[base + byte] |= 1 << (page & 7)
                page += 1

    def is_dirty(self, gpa: int) -> bool:
        page = gpa >> LOG_PAGE_SHIFT
        return page >> 3 < self.size and bool(self.mm[self.base + (page >> 3)] >> (page & 7) & 1)

    def close(self) -> None:
        try:
            self.mm.close()
        except BufferError:
            pass
