"""The split virtqueue, device side (virtio 1.1 spec, 2.6 "Split Virtqueues").

The three areas live in guest memory: the descriptor table (``<QIHH`` addr, len, flags, next),
the available ring (``u16 flags, idx, ring[N]``) written by the driver, and the used ring
(``u16 flags, idx, {u32 id, u32 len}[N]``) written by the device. In Xen's words this is the
shared ring of a split driver: the avail ring is the request producer, the used ring the
response producer, and the kick/call eventfds are the event channel's two directions.

Rules the device keeps (virtio 1.1 2.6, checked here rather than trusted to the callers):

- the used ring carries only HEAD descriptor ids, each of a chain the driver made available and
  each returned exactly once: ``pop`` marks a head in flight, ``push`` refuses a head that is not,
  and a head the driver makes available while it is still in flight is a broken ring;
- an available chain the device cannot serve yet (netback: a posted RX buffer with no frame on the
  TAP) goes back with ``unpop``, never by editing ``last_avail`` from outside, so the index only
  ever moves past chains that reached the used ring;
- indices are 16-bit and free-running: slots are ``idx % size`` and differences are taken
  modulo 65536, so a ring keeps working across the wrap;
- the ring indices and flags are read and written with single, naturally aligned 16-bit
  accesses (a ``memoryview`` cast to ``H``: one ``mov`` each), never with ``struct``:
  ``struct.pack_into("<H")`` stores the two bytes one at a time, low byte first, so a driver
  reading the used index while it went from 0x01FF to 0x0200 saw 0x0100, took 255 stale used
  elements for new ones and reported "id N is not a head!" (then spun in
  virtqueue_enable_cb_delayed: the soft lockup); ``struct.unpack_from`` reads the high byte
  first, so the device could see an avail index 255 behind the truth;
- the used element is written before the used index; x86-64 (TSO) keeps store order. Reading VRING_AVAIL_F_NO_INTERRUPT after that store needs a full
  (store-load) fence, as Linux's vhost does with smp_mb() before reading the flags: without it a
  driver that just cleared the flag and found no new used element, and a device that still saw
  the flag set, both wait (a lost interrupt). ``_fence`` gives that fence.
- with VIRTIO_RING_F_EVENT_IDX (virtio 1.1 2.6.7.2, 2.6.10): the device interrupts only when the
  used index passes the driver's ``used_event`` (the u16 after the avail ring) since the last
  interrupt, and publishes ``avail_event`` (the u16 after the used ring): the avail index at
  which the driver should kick again. It is published when the device finds the ring empty,
  then (after a full fence) the avail index is read once more, as Linux's vhost does
  (vhost_enable_notify): a chain the driver made available meanwhile without a kick, having
  read the older avail_event, is taken then. While the device is busy the older value keeps
  the driver from kicking.
"""

from __future__ import annotations

import _thread
import mmap
import struct
import sys
from operator import add

from .memory import DirtyLog, GuestMemory, GuestMemoryError

DESC = struct.Struct("<QIHH")
VRING_DESC_F_NEXT = 1
VRING_DESC_F_WRITE = 2
VRING_DESC_F_INDIRECT = 4
VRING_AVAIL_F_NO_INTERRUPT = 1
#: Longest chain followed; a longer one is a loop a hostile driver built (spec 2.6.5.3.1).
MAX_CHAIN = 1024
#: Largest index difference (avail - used) a ring can show: the queue size, at most 32768.
MAX_QUEUE_SIZE = 32768
if sys.byteorder != "little":  # the ring views below are native-endian; virtio 1.x is little-endian
    raise ImportError("pyxen's virtqueue needs a little-endian host")


class VirtqueueError(Exception):
    """The driver broke the ring's rules (bad index, loop, write before read): fatal for the
    ring, as Firecracker's InvalidAvailIdx, because only a buggy or malicious driver does it."""


class Chain:
    """One request: its head index and its device-readable and device-writable buffers.
    (A plain slotted class: one is made per request, on the data path.)"""

    __slots__ = ("head", "readable", "writable")

    def __init__(self, head: int, readable: list[memoryview] | None = None,
                 writable: list[memoryview] | None = None) -> None:
        self.head = head
        self.readable: list[memoryview] = readable if readable is not None else []
        self.writable: list[memoryview] = writable if writable is not None else []

    def __repr__(self) -> str:
        return f"Chain(head={self.head}, readable={self.readable_len} bytes, writable={self.writable_len} bytes)"

    @property
    def readable_len(self) -> int:
        return sum(map(len, self.readable))

    @property
    def writable_len(self) -> int:
        return sum(map(len, self.writable))

    def release(self) -> None:
        """Drop the views so SET_MEM_TABLE can unmap the memory under them."""
        for v in self.readable:
            v.release()
        for v in self.writable:
            v.release()
        self.readable.clear()
        self.writable.clear()


class IovChain:
    """One request in Linux's usual shape (an in-order indirect table: ``readable`` device-
    readable descriptors, then device-writable ones, all in one memory region), taken without
    a view per buffer: the guest-physical ``addrs`` and ``lens`` as lists, and ``iov``, the
    same buffers as the kernel's ``struct iovec`` array (host address, length) for preadv/
    pwritev through ctypes. A 1 MiB request is ~130 descriptors: a memoryview each cost more
    than the I/O's own system call on the slow machine (bench/blk.py, py-spy). ``mv`` and
    ``delta`` reach single bytes (the header, the status). The host addresses are valid while
    the ring runs: the transport stops the ring's thread before it unmaps guest memory."""

    __slots__ = ("head", "addrs", "lens", "readable", "iov", "mv", "delta")

    def __init__(self, head: int, addrs: list[int], lens: list[int], readable: int, iov: bytes,
                 mv: memoryview, delta: int) -> None:
        self.head = head
        self.addrs = addrs
        self.lens = lens
        self.readable = readable
        self.iov = iov
        self.mv = mv
        self.delta = delta

    def views(self, start: int = 0, stop: int | None = None) -> list[memoryview]:
        """Views of descriptors ``start:stop`` (the slow paths: other request types, a short
        transfer)."""
        mv, d = self.mv, self.delta
        return [mv[a + d:a + d + ln] for a, ln in zip(self.addrs[start:stop], self.lens[start:stop])]

    def as_chain(self) -> Chain:
        """The same request as a Chain of views (release it after use)."""
        views = self.views()
        return Chain(self.head, views[:self.readable], views[self.readable:])

    def release(self) -> None:
        """Nothing to release: no view is held."""


def _table_shape(n: int, readable: int) -> tuple[bytes, bytes, bytes, bytes]:
    """Bytes 12 and 13 (flags) of each descriptor, and 14 and 15 (next) of all but the last, of
    an in-order table of ``n`` descriptors whose first ``readable`` are device-readable
    (n <= 256)."""
    writable = n - readable
    flags = b"\x01" * readable + b"\x03" * writable
    flags = flags[:-1] + (b"\x02" if writable else b"\x00")
    return flags, bytes(n), bytes(range(1, n)), bytes(n - 1)


#: _table_shape's answers, by (n, readable): a handful of request sizes recur.
_SHAPES: dict[tuple[int, int], tuple[bytes, bytes, bytes, bytes]] = {}
#: Most shapes kept (a guest uses a handful; a hostile one cannot grow the cache past this).
CACHE_MAX = 256


#: A lock whose acquire is a LOCK-prefixed instruction on x86 (CPython's semaphore/mutex fast
#: path): the one full memory fence pure Python can issue, ~50 ns.
_FENCE_LOCK = _thread.allocate_lock()


def _fence() -> None:
    """A full memory barrier (store-load included) between the used-index store and the flags load."""
    _FENCE_LOCK.acquire()
    _FENCE_LOCK.release()


def split_views(views: list[memoryview], n: int) -> tuple[list[memoryview], list[memoryview]]:
    """The first ``n`` bytes of a scatter list and the rest, cutting a view where needed
    (descriptor boundaries carry no meaning under VERSION_1/ANY_LAYOUT)."""
    head: list[memoryview] = []
    for i, v in enumerate(views):
        if n <= 0:
            return head, views[i:]
        if len(v) <= n:
            head.append(v)
            n -= len(v)
        else:
            head.append(v[:n])
            return head, [v[n:]] + views[i + 1:]
    return head, []


class Virtqueue:
    """One started split ring over a GuestMemory."""

    def __init__(self, mem: GuestMemory, size: int, desc: int, avail: int, used: int,
                 last_avail: int, event_idx: bool = False) -> None:
        """Resolve the ring addresses (QEMU virtual addresses) into the guest's mapping.

        :raise GuestMemoryError: an address outside guest memory.
        """
        if size == 0 or size & (size - 1) or size > MAX_QUEUE_SIZE:
            raise VirtqueueError(f"queue size {size} is not a power of two <= {MAX_QUEUE_SIZE}")
        self.mem = mem
        self.size = size
        self.desc_mm, self.desc_off = mem.qva(desc)
        self.avail_mm, self.avail_off = mem.qva(avail)
        self.used_mm, self.used_off = mem.qva(used)
        self.last_avail = last_avail & 0xFFFF
        # Single-access views (module docstring): avail = flags, idx, ring[size] (u16); used
        # header = flags, idx (u16); used ring = {id, len}[size] (u32).
        avail_len, used_len = 4 + 2 * size, 4 + 8 * size
        if event_idx:  # used_event after the avail ring, avail_event after the used ring
            avail_len, used_len = avail_len + 2, used_len + 2
        if self.avail_off + avail_len > len(self.avail_mm) or self.used_off + used_len > len(self.used_mm) \
                or self.desc_off + 16 * size > len(self.desc_mm):
            raise GuestMemoryError("a ring of this size runs past the end of its memory region")
        if self.avail_off % 2 or self.used_off % 4:
            raise VirtqueueError("misaligned avail or used ring")
        self._avail = memoryview(self.avail_mm)[self.avail_off:self.avail_off + avail_len].cast("H")
        uview = memoryview(self.used_mm)[self.used_off:self.used_off + used_len]
        self._used_hdr = uview[:4].cast("H")
        self._used_ring = uview[4:4 + 8 * size].cast("I")
        #: EVENT_IDX: the avail_event the device publishes (None: not negotiated), and the
        #: used index of the last interrupt (None: none yet, so the next one is raised).
        self.event_idx = event_idx
        self._avail_event = uview[4 + 8 * size:].cast("H") if event_idx else None
        self.signalled_used: int | None = None
        uview.release()
        self.used_idx = int(self._used_hdr[1])
        #: inflight[head] is 1 from pop to push (or unpop): the chains the device holds.
        self.inflight = bytearray(size)
        self.in_flight = 0
        #: Dirty-page logging while the front-end migrates (VHOST_F_LOG_ALL and SET_LOG_BASE;
        #: the session sets it): every device-writable buffer of a chain is logged when the
        #: chain is used or given back, and with ``log_used`` (the used ring's guest-physical
        #: address, SET_VRING_ADDR's log_guest_addr under VHOST_VRING_F_LOG) the used-ring
        #: writes too. None: no logging, and the data path does nothing more.
        self.dirty: DirtyLog | None = None
        self.log_used: int | None = None
        self._dirty_ranges: dict[int, list[tuple[int, int]]] = {}

    def avail_idx(self) -> int:
        return int(self._avail[1])

    def pending(self) -> int:
        """Requests the driver made available that the device has not taken."""
        n = (self.avail_idx() - self.last_avail) & 0xFFFF
        if n > self.size:
            raise VirtqueueError(f"avail idx is {n} ahead of the device on a ring of {self.size}")
        return n

    def pop(self) -> Chain | None:
        """Take the next available chain, or None when the ring is empty.

        :raise VirtqueueError: a bad index, head or chain; ``last_avail`` does not move then.
        """
        last = self.last_avail
        n = (self._avail[1] - last) & 0xFFFF  # pending(), inlined: the data path's first step
        if not n:
            if self._avail_event is None or not self._ring_refilled(last):
                return None
            n = (self._avail[1] - last) & 0xFFFF
        if n > self.size:
            raise VirtqueueError(f"avail idx is {n} ahead of the device on a ring of {self.size}")
        slot = last & (self.size - 1)
        head = self._avail[2 + slot]
        if head >= self.size:
            raise VirtqueueError(f"avail[{slot}] holds head {head}, out of range for size {self.size}")
        if self.inflight[head]:
            raise VirtqueueError(f"head {head} made available again while the device holds it")
        chain = Chain(head)
        try:
            self._walk(chain, self.desc_mm, self.desc_off, self.size, head, allow_indirect=True)
        except GuestMemoryError as err:
            chain.release()
            raise VirtqueueError(str(err)) from err
        except BaseException:
            chain.release()
            raise
        if self.dirty is not None:
            self._dirty_ranges[head] = self._writable_ranges(head)
        self.last_avail = (self.last_avail + 1) & 0xFFFF
        self.inflight[head] = 1
        self.in_flight += 1
        return chain

    def _ring_refilled(self, last: int) -> bool:
        """EVENT_IDX, the ring found empty: ask for a kick at ``last`` (avail_event), then
        look once more (module docstring). True if chains came meanwhile."""
        assert self._avail_event is not None
        self._avail_event[0] = last
        if self.dirty is not None and self.log_used is not None:
            self.dirty.mark(self.log_used + 4 + 8 * self.size, 2)
        _fence()
        return self._avail[1] != last

    def pop_iov(self) -> "IovChain | Chain | None":
        """``pop`` for a device that does its I/O through iovecs (blkback): Linux's usual
        request comes back as an IovChain, anything else (and everything while dirty pages are
        logged) as ``pop`` gives it, after ``pop``'s checks. The fast path checks the same
        rules: the head and indices as ``pop``, the table's flags and next fields exactly as
        an in-order table has them (so no loop, no readable after writable), every buffer
        inside the table's memory region.

        :raise VirtqueueError: as ``pop``.
        """
        if self.dirty is not None:
            return self.pop()
        last = self.last_avail
        n = (self._avail[1] - last) & 0xFFFF
        if not n:  # the usual end of a batch: no second look through pop
            if self._avail_event is None or not self._ring_refilled(last):
                return None
            return self.pop()
        if n > self.size:
            return self.pop()  # the error
        head = self._avail[2 + (last & (self.size - 1))]
        if head >= self.size or self.inflight[head]:
            return self.pop()  # the error
        addr, length, flags, _ = DESC.unpack_from(self.desc_mm, self.desc_off + 16 * head)
        r = self.mem._last
        if flags != VRING_DESC_F_INDIRECT or length % 16 or not 32 <= length <= 4096 or r is None \
                or not r.gpa_start <= addr or addr + length > r.gpa_stop or r.host_delta < 0:
            return self.pop()
        off = addr + r.delta
        raw = r.mm[off:off + length]
        n = length >> 4
        flo = raw[12::16]
        readable = flo.count(1)
        shape = _SHAPES.get((n, readable))
        if shape is None:
            if len(_SHAPES) >= CACHE_MAX:  # a driver making every shape: bounded all the same
                _SHAPES.clear()
            shape = _SHAPES[(n, readable)] = _table_shape(n, readable)
        end = length - 16  # the last descriptor's next is not looked at (Linux leaves n there)
        if flo != shape[0] or raw[13::16] != shape[1] or raw[14:end:16] != shape[2] or raw[15:end:16] != shape[3]:
            return self.pop()
        addrs = memoryview(raw).cast("Q")[0::2].tolist()
        lens = memoryview(raw).cast("I")[2::4].tolist()
        if min(addrs) < r.gpa_start or max(addrs) + sum(lens) > r.gpa_stop:
            return self.pop()  # (conservative: pop checks each buffer on its own)
        # The iovecs: each descriptor with flags and next zeroed is {u64 addr, u64 len}; the
        # table read as one little-endian integer plus host_delta in every 128-bit record
        # turns each addr into a host address (no carry or borrow: host_delta >= 0 and the
        # sum is a host address, below 2^57).
        table = bytearray(raw)
        zeros = shape[1]
        table[12::16] = zeros
        table[14::16] = zeros
        table[15::16] = zeros
        add = r.iov_add.get(n)
        if add is None:
            add = r.iov_add[n] = sum(r.host_delta << (128 * i) for i in range(n))
        iov = (int.from_bytes(table, "little") + add).to_bytes(length, "little")
        self.last_avail = (last + 1) & 0xFFFF
        self.inflight[head] = 1
        self.in_flight += 1
        return IovChain(head, addrs, lens, readable, iov, r.mv, r.delta)

    def _writable_ranges(self, head: int) -> list[tuple[int, int]]:
        """The guest-physical (address, length) of every device-writable descriptor of the
        chain at ``head`` (only while logging; ``_walk`` has checked the chain's shape)."""
        out: list[tuple[int, int]] = []
        tables = [(self.desc_mm, self.desc_off, self.size, head, True)]
        while tables:
            mm, base, table_size, index, top = tables.pop()
            for _ in range(MAX_CHAIN):
                addr, length, flags, nxt = DESC.unpack_from(mm, base + 16 * index)
                if flags & VRING_DESC_F_INDIRECT:
                    if top and length % 16 == 0 and 0 < length <= 16 * MAX_CHAIN:
                        imm, ioff, left = self.mem.gpa(addr)
                        if left >= length:
                            tables.append((imm, ioff, length // 16, 0, False))
                elif flags & VRING_DESC_F_WRITE:
                    out.append((addr, length))
                if not flags & VRING_DESC_F_NEXT or nxt >= table_size:
                    break
                index = nxt
        return out

    def _log_chain(self, head: int) -> None:
        dirty = self.dirty
        ranges = self._dirty_ranges.pop(head, None)
        if dirty is not None and ranges:
            for addr, length in ranges:
                dirty.mark(addr, length)

    def unpop(self, chain: Chain) -> None:
        """Give back the chain ``pop`` just returned, unused: the driver keeps it available and
        the device takes it again later (its slot cannot be rewritten meanwhile, as its head is
        still outstanding from the driver's view).

        :raise VirtqueueError: ``chain`` is not the last one popped (a device bug).
        """
        slot = (self.last_avail - 1) & (self.size - 1)
        head = self._avail[2 + slot]
        if head != chain.head or not self.inflight[head]:
            raise VirtqueueError(f"unpop of head {chain.head}, but the last chain popped is {head}")
        chain.release()
        if self.dirty is not None:  # the device may have written into it (netback's header)
            self._log_chain(head)
        self.inflight[head] = 0
        self.in_flight -= 1
        self.last_avail = (self.last_avail - 1) & 0xFFFF

    def _walk(self, chain: Chain, mm: object, base: int, table_size: int, index: int,
              allow_indirect: bool) -> None:
        # Hot path (a 1 MiB guest request is ~128 descriptors): locals only, and descriptors
        # that continue the previous buffer in guest-physical memory (common for a guest's
        # page-cache and DMA pages) become one view, so preadv/pwritev get fewer iovecs.
        unpack = DESC.unpack_from
        if allow_indirect:
            # Linux's usual request: one indirect descriptor, alone, in order inside.
            addr, length, flags, _ = unpack(mm, base + 16 * index)  # type: ignore[arg-type]
            if flags == VRING_DESC_F_INDIRECT and length % 16 == 0 and 0 < length <= 16 * MAX_CHAIN:
                imm, ioff, left = self.mem.gpa(addr)
                if left >= length and self._walk_in_order(chain, imm, ioff, length // 16):
                    return
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
                if length > 16 * MAX_CHAIN:
                    raise VirtqueueError(f"indirect table of {length // 16} descriptors")
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
        """An indirect table as Linux fills it: descriptor i chains to i + 1, the last ends the
        chain, readable ones first. Returns False, leaving the chain as it was, for a table of
        any other shape; the general walk then checks and serves it.

        The data path of every request, and a 1 MiB request is ~128 descriptors: the table is
        read as columns (addresses, lengths, flags, nexts) with C-level slices of one copy,
        checked against the expected shape with list comparisons, and cut into views with one
        comprehension, instead of a Python loop per descriptor (ten times slower). Each
        descriptor becomes a view of its own (no merging of adjacent buffers): preadv/pwritev
        take up to 1024 iovecs, and a chain is at most MAX_CHAIN descriptors."""
        table = memoryview(mm[base:base + 16 * n])
        flags = table.cast("H")[6::8].tolist()
        writes = flags.count(3) + flags.count(2)
        first_w = n - writes
        if first_w and chain.writable:
            return False  # readable after writable: the general walk refuses it
        expected = [1] * first_w + [3] * writes
        expected[-1] &= 2  # the last one ends the chain
        if flags != expected or table.cast("H")[7::8].tolist()[:-1] != list(range(1, n)):
            return False
        addrs = table.cast("Q")[0::2].tolist()
        lens = table.cast("I")[2::4].tolist()
        mem = self.mem
        last = mem._last
        if last is not None and last.gpa_start <= min(addrs) and \
                max(map(add, addrs, lens)) <= last.gpa_stop:
            mv, d = last.mv, last.delta
            views = [mv[a + d:a + d + ln] for a, ln in zip(addrs, lens)]
        else:  # the first request, or buffers in another region: one lookup each
            views = []
            try:
                for a, ln in zip(addrs, lens):
                    views += mem.views(a, ln)
            except GuestMemoryError:
                for v in views:
                    v.release()
                raise
            if len(views) != n:  # a buffer across two regions: keep the readable/writable cut exact
                for v in views:
                    v.release()
                return False
        chain.readable.extend(views[:first_w])
        chain.writable.extend(views[first_w:])
        return True

    def push(self, head: int, written: int) -> None:
        """Return a chain to the driver: the used element, then the used index.

        :raise VirtqueueError: ``head`` is not a chain the device holds (it would corrupt the
            driver's ring: Linux reports "id N is not a head!" and stops the queue).
        """
        inflight = self.inflight
        if not 0 <= head < self.size or not inflight[head]:
            raise VirtqueueError(f"device bug: push of head {head}, which is not in flight")
        inflight[head] = 0
        self.in_flight -= 1
        idx = self.used_idx
        slot = idx & (self.size - 1)
        used = self._used_ring
        used[2 * slot] = head
        used[2 * slot + 1] = written
        self.used_idx = idx = (idx + 1) & 0xFFFF
        self._used_hdr[1] = idx  # one 16-bit store, after the element
        if self.dirty is not None:
            # The data reached guest memory before push; logged after the write, so a sync
            # that clears the bits in between cannot lose it (vhost-user.rst).
            self._log_chain(head)
            if self.log_used is not None:
                self.dirty.mark(self.log_used + 4 + 8 * slot, 8)
                self.dirty.mark(self.log_used + 2, 2)

    def needs_interrupt(self) -> bool:
        """Whether the driver wants an interrupt for what was just pushed, read after a full
        fence (virtio 1.1 2.6.7.2): without EVENT_IDX the VRING_AVAIL_F_NO_INTERRUPT flag;
        with it, whether the used index passed ``used_event`` since the last interrupt
        (vring_need_event; the flag is then ignored, as the spec requires)."""
        _fence()
        if not self.event_idx:
            return not self._avail[0] & VRING_AVAIL_F_NO_INTERRUPT
        old, new = self.signalled_used, self.used_idx
        self.signalled_used = new
        if old is None:
            return True
        return (new - self._avail[2 + self.size] - 1) & 0xFFFF < (new - old) & 0xFFFF

    def close(self) -> None:
        """Drop the ring views so the memory under them can be unmapped (the ring stopped)."""
        for v in (self._avail, self._used_hdr, self._used_ring, self._avail_event):
            if v is not None:
                v.release()
