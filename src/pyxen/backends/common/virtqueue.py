"""The split virtqueue, device side (virtio 1.1 spec, 2.6 "Split Virtqueues").

The three areas live in guest memory: the descriptor table (``<QIHH`` addr, len, flags, next),
the available ring (``u16 flags, idx, ring[N]``) written by the driver, and the used ring
(``u16 flags, idx, {u32 id, u32 len}[N]``) written by the device. In Xen's words this is the
shared ring of a split driver: the avail ring is the request producer, the used ring the
response producer, and the kick/call eventfds are the event channel's two directions.

Ordering: the device writes a used element, then the used index. CPython's ``struct.pack_into``
on x86-64 (TSO) keeps store order, and the eventfd write that follows is a syscall and so a
barrier. EVENT_IDX is not offered, so no store-to-load fence is ever needed.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field

from .memory import GuestMemory, GuestMemoryError

DESC = struct.Struct("<QIHH")
VRING_DESC_F_NEXT = 1
VRING_DESC_F_WRITE = 2
VRING_DESC_F_INDIRECT = 4
VRING_AVAIL_F_NO_INTERRUPT = 1
#: Longest chain followed; a longer one is a loop a hostile driver built (spec 2.6.5.3.1).
MAX_CHAIN = 1024
U16 = struct.Struct("<H")
USED_ELEM = struct.Struct("<II")


class VirtqueueError(Exception):
    """The driver broke the ring's rules (bad index, loop, write before read): fatal for the
    ring, as Firecracker's InvalidAvailIdx, because only a buggy or malicious driver does it."""


@dataclass
class Chain:
    """One request: its head index and its device-readable and device-writable buffers."""

    head: int
    readable: list[memoryview] = field(default_factory=list)
    writable: list[memoryview] = field(default_factory=list)

    @property
    def readable_len(self) -> int:
        return sum(len(v) for v in self.readable)

    @property
    def writable_len(self) -> int:
        return sum(len(v) for v in self.writable)

    def release(self) -> None:
        """Drop the views so SET_MEM_TABLE can unmap the memory under them."""
        for v in self.readable + self.writable:
            v.release()
        self.readable.clear()
        self.writable.clear()


class Virtqueue:
    """One started split ring over a GuestMemory."""

    def __init__(self, mem: GuestMemory, size: int, desc: int, avail: int, used: int,
                 last_avail: int) -> None:
        """Resolve the ring addresses (QEMU virtual addresses) into the guest's mapping.

        :raise GuestMemoryError: an address outside guest memory.
        """
        if size == 0 or size & (size - 1) or size > 32768:
            raise VirtqueueError(f"queue size {size} is not a power of two <= 32768")
        self.mem = mem
        self.size = size
        self.desc_mm, self.desc_off = mem.qva(desc)
        self.avail_mm, self.avail_off = mem.qva(avail)
        self.used_mm, self.used_off = mem.qva(used)
        self.last_avail = last_avail & 0xFFFF
        self.used_idx = U16.unpack_from(self.used_mm, self.used_off + 2)[0]

    def avail_idx(self) -> int:
        return int(U16.unpack_from(self.avail_mm, self.avail_off + 2)[0])

    def pending(self) -> int:
        """Requests the driver made available that the device has not taken."""
        n = (self.avail_idx() - self.last_avail) & 0xFFFF
        if n > self.size:
            raise VirtqueueError(f"avail idx is {n} ahead of the device on a ring of {self.size}")
        return n

    def pop(self) -> Chain | None:
        """Take the next available chain, or None when the ring is empty."""
        if not self.pending():
            return None
        slot = self.last_avail % self.size
        head = U16.unpack_from(self.avail_mm, self.avail_off + 4 + 2 * slot)[0]
        self.last_avail = (self.last_avail + 1) & 0xFFFF
        if head >= self.size:
            raise VirtqueueError(f"head {head} out of range")
        chain = Chain(head)
        try:
            self._walk(chain, self.desc_mm, self.desc_off, self.size, head, allow_indirect=True)
        except GuestMemoryError as err:
            chain.release()
            raise VirtqueueError(str(err)) from err
        return chain

    def _walk(self, chain: Chain, mm: object, base: int, table_size: int, index: int,
              allow_indirect: bool) -> None:
        # Hot path (a 1 MiB guest request is ~128 descriptors): locals only, and descriptors
        # that continue the previous buffer in guest-physical memory (common for a guest's
        # page-cache and DMA pages) become one view, so preadv/pwritev get fewer iovecs.
        unpack = DESC.unpack_from
        views = self.mem.views
        writable = chain.writable
        readable = chain.readable
        run_addr = run_len = 0
        run_write = False
        for _ in range(MAX_CHAIN):
            addr, length, flags, nxt = unpack(mm, base + 16 * index)  # type: ignore[arg-type]
            if flags & VRING_DESC_F_INDIRECT:
                if not allow_indirect or length % 16 or length == 0:
                    raise VirtqueueError("bad indirect descriptor")
                imm, ioff, left = self.mem.gpa(addr)
                if left < length:
                    raise VirtqueueError("indirect table crosses a memory region")
                if run_len:
                    (writable if run_write else readable).extend(views(run_addr, run_len))
                    run_len = 0
                if not self._walk_in_order(chain, imm, ioff, length // 16):
                    self._walk(chain, imm, ioff, length // 16, 0, allow_indirect=False)
            else:
                write = bool(flags & VRING_DESC_F_WRITE)
                if not write and (writable or run_write and run_len):
                    raise VirtqueueError("readable descriptor after a writable one")
                if run_len and write == run_write and run_addr + run_len == addr:
                    run_len += length
                else:
                    if run_len:
                        (writable if run_write else readable).extend(views(run_addr, run_len))
                    run_addr, run_len, run_write = addr, length, write
            if not flags & VRING_DESC_F_NEXT:
                break
            index = nxt
            if index >= table_size:
                raise VirtqueueError(f"next {index} out of range")
        else:
            raise VirtqueueError("descriptor chain loops")
        if run_len:
            (writable if run_write else readable).extend(views(run_addr, run_len))

    def _walk_in_order(self, chain: Chain, mm: mmap.mmap, base: int, n: int) -> bool:
        """An indirect table as Linux fills it (descriptor i chains to i + 1): parsed with one
        ``iter_unpack``, the region lookup inlined. Returns False, leaving the chain as it was,
        at the first descriptor of any other shape; the general walk then checks and serves it."""
        writable, readable = chain.writable, chain.readable
        marks = len(readable), len(writable)
        views = self.mem.views
        last = self.mem._last
        run_addr = run_len = 0
        run_write = ok = False
        i = 0
        for addr, length, flags, nxt in DESC.iter_unpack(mm[base:base + 16 * n]):
            i += 1
            if flags & ~(VRING_DESC_F_WRITE | VRING_DESC_F_NEXT) or (flags & VRING_DESC_F_NEXT and nxt != i):
                break
            write = bool(flags & VRING_DESC_F_WRITE)
            if not write and (writable or run_write and run_len):
                break
            if run_len and write == run_write and run_addr + run_len == addr:
                run_len += length
                if not flags & VRING_DESC_F_NEXT:
                    ok = True
                    break
                continue
            if run_len:
                out = writable if run_write else readable
                if last is not None and last.gpa_start <= run_addr and run_addr + run_len <= last.gpa_stop:
                    off = run_addr + last.delta
                    out.append(last.mv[off:off + run_len])
                else:
                    out.extend(views(run_addr, run_len))
                    last = self.mem._last
            run_addr, run_len, run_write = addr, length, write
            if not flags & VRING_DESC_F_NEXT:
                ok = True
                break
        if ok:
            if run_len:
                (writable if run_write else readable).extend(views(run_addr, run_len))
            return True
        for v in readable[marks[0]:] + writable[marks[1]:]:
            v.release()
        del readable[marks[0]:], writable[marks[1]:]
        return False

    def push(self, head: int, written: int) -> None:
        """Return a chain to the driver: the used element, then the used index."""
        slot = self.used_idx % self.size
        USED_ELEM.pack_into(self.used_mm, self.used_off + 4 + 8 * slot, head, written)
        self.used_idx = (self.used_idx + 1) & 0xFFFF
        U16.pack_into(self.used_mm, self.used_off + 2, self.used_idx)

    def needs_interrupt(self) -> bool:
        return not U16.unpack_from(self.avail_mm, self.avail_off)[0] & VRING_AVAIL_F_NO_INTERRUPT
