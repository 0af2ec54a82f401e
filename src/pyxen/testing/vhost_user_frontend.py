"""A declared fake: the guest side of a vhost-user device, for tests without QEMU.

It plays both parts QEMU and the guest's virtio driver play in front of a pyxen back-end:

- ``VhostUserFrontend`` is QEMU's vhost-user front-end (hw/virtio/vhost-user.c, message order as
  docs/vhost.md section 0 records it for QEMU 7.2): it connects to the back-end's socket and
  sends GET_FEATURES, SET_OWNER, SET_MEM_TABLE with a memfd it owns, SET_VRING_NUM/BASE/ADDR/
  KICK/CALL, GET_VRING_BASE... Every request that has no reply of its own goes with NEED_REPLY
  once REPLY_ACK is negotiated, so each call returns after the back-end did the work, and a
  refused request raises ``Refused``.
- ``GuestRam`` is the guest's RAM: a memfd split in two regions as QEMU's pc machine does
  (0-640 KiB and 768 KiB-end, the VGA hole between), with a bump allocator for rings and buffers.
- ``DriverRing`` is a split virtqueue as Linux's virtio_ring lays it out (virtio 1.1 2.6): it posts
  chains (direct, with descriptors taken from a free list that returns in any order, or through
  an indirect table) and reaps used elements, checking the device against the spec as it goes:
  only head ids of chains it made available, each returned once, used length within the
  writable part, the used index never ahead of what was made available. A violation raises
  ``RingViolation`` with the message Linux would print ("id 21 is not a head!").

Everything here is synchronous with timeouts; the back-end under test runs in another thread or
process (``serve_in_thread``).
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import struct
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from pyxen.backends.common.memory import GuestMemory
from pyxen.backends.common.transport import VhostUserServer, VirtioDevice
from pyxen.backends.common.vhost_user import (FLAG_NEED_REPLY, HEADER, REPLY_REQUESTS, VERSION, Feature,
                                              MemoryRegion, ProtocolFeature, Request, VringState, encode,
                                              pack_mem_table)
from pyxen.backends.common.virtqueue import Virtqueue

#: A full fence for the driver side of EVENT_IDX (as pyxen.backends.common.virtqueue._fence).
_FENCE = threading.Lock()

#: Where QEMU's mapping of guest RAM sits in its address space (any value works; it is opaque).
QVA_BASE = 0x7F12_3400_0000
#: The pc machine's hole between low RAM and the BIOS area (docs/vhost.md: two regions).
LOW_END, HIGH_START = 0xA0000, 0xC0000
VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_DESC_F_INDIRECT = 1, 2, 4
VRING_AVAIL_F_NO_INTERRUPT = 1
DESC = struct.Struct("<QIHH")


class FrontendError(Exception):
    """The back-end did not answer as vhost-user says (no reply, a bad reply, a timeout)."""


class Refused(FrontendError):
    """The back-end answered a request with a non-zero REPLY_ACK."""


class RingViolation(AssertionError):
    """The device broke a split-ring rule the driver checks."""


class GuestRam:
    """The guest's RAM: a memfd (QEMU's memory-backend-memfd, share=on), mapped here."""

    def __init__(self, size: int = 64 << 20) -> None:
        import mmap
        self.size = size
        self.fd = os.memfd_create("pyxen-fake-guest-ram", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, size)
        self.mm = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._next = 0x100000  # above the BIOS area, as the kernel's own allocations

    def regions(self) -> list[MemoryRegion]:
        """QEMU's table for a pc machine: guest-physical = memfd offset, QEMU's address = base + offset."""
        return [MemoryRegion(0, LOW_END, QVA_BASE, 0),
                MemoryRegion(HIGH_START, self.size - HIGH_START, QVA_BASE + HIGH_START, HIGH_START)]

    def alloc(self, length: int, align: int = 16) -> int:
        """Guest-physical address of ``length`` fresh bytes."""
        addr = (self._next + align - 1) & ~(align - 1)
        if addr + length > self.size:
            raise MemoryError(f"fake guest RAM of {self.size} bytes is full")
        self._next = addr + length
        return addr

    @staticmethod
    def qva(gpa: int) -> int:
        return QVA_BASE + gpa

    def write(self, gpa: int, data: bytes) -> None:
        self.mm[gpa:gpa + len(data)] = data

    def read(self, gpa: int, length: int) -> bytes:
        return self.mm[gpa:gpa + length]

    def close(self) -> None:
        try:
            self.mm.close()
        except BufferError:  # a ring not closed still has views: the GC unmaps it later
            pass
        os.close(self.fd)


class LogBitmap:
    """QEMU's dirty log for a migration (hw/virtio/vhost.c vhost_log_alloc with a memfd): one
    bit per 4 KiB page of guest-physical memory, shared with the back-end by SET_LOG_BASE."""

    PAGE = 4096

    def __init__(self, ram_size: int) -> None:
        import mmap
        pages = (ram_size + self.PAGE - 1) // self.PAGE
        self.size = max(8, (pages + 63) // 64 * 8)  # QEMU sizes it in u64 chunks
        self.fd = os.memfd_create("pyxen-fake-vhost-log", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, self.size)
        self.mm = mmap.mmap(self.fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    def pages(self) -> set[int]:
        """The dirty page numbers (guest-physical address // 4096)."""
        out = set()
        for i, byte in enumerate(self.mm[:]):
            for bit in range(8):
                if byte >> bit & 1:
                    out.add(i * 8 + bit)
        return out

    def sync(self) -> set[int]:
        """Read and clear, as QEMU's vhost_log_sync does at each migration pass."""
        got = self.pages()
        self.mm[:] = bytes(self.size)
        return got

    @classmethod
    def pages_of(cls, addr: int, length: int) -> set[int]:
        return set(range(addr // cls.PAGE, (addr + length - 1) // cls.PAGE + 1)) if length > 0 else set()

    def close(self) -> None:
        self.mm.close()
        os.close(self.fd)


@dataclass
class Segment:
    """One buffer of a chain: guest-physical address, length, device-writable or not."""

    addr: int
    length: int
    writable: bool = False


@dataclass
class Posted:
    """A chain the driver made available and the device has not returned."""

    head: int
    descs: list[int]
    segments: list[Segment]
    token: object
    writable_len: int


@dataclass
class Used:
    head: int
    length: int
    token: object
    segments: list[Segment] = field(default_factory=list)


class DriverRing:
    """The driver's half of one split virtqueue in ``ram``, checking what the device returns.

    ``start`` sets both indices as after a long run (start near 65535 to cross the 16-bit wrap);
    the front-end then gives the same value in SET_VRING_BASE, as QEMU does after a migration.
    """

    def __init__(self, ram: GuestRam, size: int = 256, start: int = 0, max_indirect: int = 64) -> None:
        self.ram, self.size = ram, size
        self.desc = ram.alloc(16 * size, 16)
        self.avail = ram.alloc(6 + 2 * size, 2)
        self.used = ram.alloc(6 + 8 * size, 4096)
        self.max_indirect = max_indirect
        self.tables = ram.alloc(16 * max_indirect * size, 16)  # one indirect table per head
        self.free: list[int] = list(range(size))
        # Indices and flags with single 16-bit accesses, as a real driver's READ_ONCE/WRITE_ONCE
        # (struct would move them a byte at a time and the device could read a torn index).
        self._avail = memoryview(ram.mm)[self.avail:self.avail + 4 + 2 * size].cast("H")
        self._used_hdr = memoryview(ram.mm)[self.used:self.used + 4].cast("H")
        self._used_ring = memoryview(ram.mm)[self.used + 4:self.used + 4 + 8 * size].cast("I")
        self.avail_idx = self.last_used = start & 0xFFFF
        self._avail[1] = self.avail_idx
        self._used_hdr[1] = self.last_used
        self.outstanding: dict[int, Posted] = {}
        # VIRTIO_RING_F_EVENT_IDX (set by VhostUserFrontend.start when negotiated): used_event
        # after the avail ring (written here), avail_event after the used ring (the device's).
        self.event_idx = False
        self._used_event = memoryview(ram.mm)[self.avail + 4 + 2 * size:self.avail + 6 + 2 * size].cast("H")
        self._avail_event = memoryview(ram.mm)[self.used + 4 + 8 * size:self.used + 6 + 8 * size].cast("H")
        self.kicked_idx = self.avail_idx
        self.kicks = self.kicks_suppressed = 0
        self.kick_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.call_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    # ---- what the front-end tells the back-end ----------------------------------------
    @property
    def base(self) -> int:
        """The index SET_VRING_BASE carries: the driver's view of the next chain to serve."""
        return self.last_used

    def addresses(self) -> tuple[int, int, int]:
        """(desc, used, avail) as QEMU virtual addresses, in SET_VRING_ADDR's order."""
        return self.ram.qva(self.desc), self.ram.qva(self.used), self.ram.qva(self.avail)

    # ---- posting ----------------------------------------------------------------------
    @property
    def num_free(self) -> int:
        return len(self.free)

    def post(self, segments: Sequence[Segment], indirect: bool = False, token: object = None,
             order: Sequence[int] | None = None) -> int:
        """Make one chain available (not yet kicked); return its head.

        Readable segments must come before writable ones (virtio 1.1 2.6.4.2); the descriptors
        of a direct chain are whatever the free list gives, so chains get every shape. For an
        indirect chain ``order`` places segment k at table slot order[k] (default: in order, as
        Linux fills its tables).
        """
        if not segments:
            raise ValueError("a chain needs at least one segment")
        need = 1 if indirect else len(segments)
        if need > len(self.free):
            raise ValueError(f"{need} descriptors wanted, {len(self.free)} free")
        if indirect and len(segments) > self.max_indirect:
            raise ValueError(f"indirect table of {len(segments)} > {self.max_indirect}")
        mm = self.ram.mm
        descs = [self.free.pop() for _ in range(need)]
        head = descs[0]
        if indirect:
            table = self.tables + 16 * self.max_indirect * head
            slots = list(order) if order is not None else list(range(len(segments)))
            if sorted(slots) != list(range(len(segments))):
                raise ValueError(f"order {slots} is not a permutation of the table slots")
            for i, s in enumerate(segments):
                last = i == len(segments) - 1
                # The last descriptor's next as Linux leaves it in its in-order tables (i + 1,
                # never followed: no NEXT flag); 0 in a shuffled one.
                DESC.pack_into(mm, table + 16 * slots[i], s.addr, s.length,
                               (0 if last else VRING_DESC_F_NEXT) | (VRING_DESC_F_WRITE if s.writable else 0),
                               (len(segments) if order is None else 0) if last else slots[i + 1])
            DESC.pack_into(mm, self.desc + 16 * head, table, 16 * len(segments), VRING_DESC_F_INDIRECT, 0)
        else:
            for i, (d, s) in enumerate(zip(descs, segments)):
                last = i == len(segments) - 1
                DESC.pack_into(mm, self.desc + 16 * d, s.addr, s.length,
                               (0 if last else VRING_DESC_F_NEXT) | (VRING_DESC_F_WRITE if s.writable else 0),
                               0 if last else descs[i + 1])
        self.outstanding[head] = Posted(head, descs, list(segments), token,
                                        sum(s.length for s in segments if s.writable))
        self._avail[2 + self.avail_idx % self.size] = head
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self._avail[1] = self.avail_idx  # after the slot (x86: stores in order)
        return head

    def use_event_idx(self) -> None:
        """EVENT_IDX was negotiated: from now on kick and ask for interrupts as Linux's
        virtio_ring does (an interrupt for the next used element)."""
        self.event_idx = True
        self._used_event[0] = self.last_used
        self.kicked_idx = self.avail_idx

    def avail_event(self) -> int:
        return int(self._avail_event[0])

    def set_used_event(self, idx: int) -> None:
        """Ask for the next interrupt once the used index passes ``idx``."""
        self._used_event[0] = idx & 0xFFFF

    def kick(self) -> None:
        """Notify the device; with EVENT_IDX only if the chains made available since the last
        kick passed the device's avail_event (vring_need_event, after a full fence)."""
        if self.event_idx:
            _FENCE.acquire()
            _FENCE.release()
            new, old = self.avail_idx, self.kicked_idx
            self.kicked_idx = new
            if not (new - self.avail_event() - 1) & 0xFFFF < (new - old) & 0xFFFF:
                self.kicks_suppressed += 1
                return
        self.kicks += 1
        os.eventfd_write(self.kick_fd, 1)

    def set_no_interrupt(self, on: bool) -> None:
        self._avail[0] = VRING_AVAIL_F_NO_INTERRUPT if on else 0

    # ---- reaping ------------------------------------------------------------------------
    def used_idx(self) -> int:
        return int(self._used_hdr[1])

    def reap(self) -> list[Used]:
        """Every used element the device wrote since the last reap, checked against the rules.

        :raise RingViolation: an id that is not an outstanding head (Linux: "id N is not a
            head!"), an id out of range, a length beyond the chain's writable bytes, or a used
            index further ahead than the chains made available.
        """
        idx = self.used_idx()
        n = (idx - self.last_used) & 0xFFFF
        if n > len(self.outstanding):
            raise RingViolation(f"used idx {idx} is {n} ahead of {self.last_used}, "
                                f"but only {len(self.outstanding)} chains are outstanding")
        out: list[Used] = []
        for _ in range(n):
            slot = self.last_used % self.size
            head, length = self._used_ring[2 * slot], self._used_ring[2 * slot + 1]
            if head >= self.size:
                raise RingViolation(f"id {head} out of range")
            posted = self.outstanding.pop(head, None)
            if posted is None:
                raise RingViolation(f"id {head} is not a head!")
            if length > posted.writable_len:
                raise RingViolation(f"id {head}: used len {length} > {posted.writable_len} writable bytes")
            self.free.extend(posted.descs)
            self.last_used = (self.last_used + 1) & 0xFFFF
            out.append(Used(head, length, posted.token, posted.segments))
        if self.event_idx:
            self._used_event[0] = self.last_used  # interrupt at the next used element
        return out

    def wait_call(self, timeout: float) -> bool:
        """Wait for the device's interrupt (the call eventfd); True if it came."""
        ready, _, _ = select.select([self.call_fd], [], [], timeout)
        if ready:
            try:
                os.eventfd_read(self.call_fd)
            except BlockingIOError:
                return False
            return True
        return False

    def reap_until(self, count: int, timeout: float = 5.0) -> list[Used]:
        """Reap until ``count`` elements came back (polling the used index, as NAPI does).

        :raise FrontendError: fewer came back within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        got: list[Used] = []
        while len(got) < count:
            got += self.reap()
            if len(got) >= count:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise FrontendError(f"{len(got)} of {count} chains used within {timeout} s")
            self.wait_call(min(left, 0.05))
        return got

    def close(self) -> None:
        for v in (self._avail, self._used_hdr, self._used_ring, self._used_event, self._avail_event):
            v.release()
        for fd in (self.kick_fd, self.call_fd):
            try:
                os.close(fd)
            except OSError:
                pass


def device_queue(ram: GuestRam, ring: DriverRing, event_idx: bool = False) -> Virtqueue:
    """The back-end's Virtqueue over ``ring``, with ``ram`` mapped as SET_MEM_TABLE maps it:
    for tests of the ring code without a session (``event_idx``: both sides use EVENT_IDX)."""
    regions = ram.regions()
    mem = GuestMemory(regions, [os.dup(ram.fd) for _ in regions])
    desc, used, avail = ring.addresses()
    if event_idx:
        ring.use_event_idx()
    return Virtqueue(mem, ring.size, desc, avail, used, ring.base, event_idx=event_idx)


class VhostUserFrontend:
    """QEMU's side of one vhost-user connection to a back-end socket."""

    def __init__(self, path: Path | str, timeout: float = 5.0) -> None:
        """Connect (retrying while the socket is not there yet, for up to ``timeout``).

        :raise FrontendError: nobody listens on ``path``.
        """
        self.path = str(path)
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock.connect(self.path)
                break
            except (FileNotFoundError, ConnectionRefusedError) as err:
                if time.monotonic() > deadline:
                    self.sock.close()
                    raise FrontendError(f"no vhost-user back-end at {self.path}: {err}") from err
                time.sleep(0.02)
        self.features = 0
        self.protocol_features = 0

    @property
    def reply_ack(self) -> bool:
        return bool(self.protocol_features & ProtocolFeature.REPLY_ACK)

    # ---- transport ----------------------------------------------------------------------
    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except socket.timeout as err:
                raise FrontendError(f"no reply from {self.path} within {self.timeout} s") from err
            if not chunk:
                raise FrontendError(f"{self.path}: the back-end closed the connection")
            buf += chunk
        return buf

    def request(self, request: int, payload: bytes = b"", fds: Sequence[int] = (),
                need_reply: bool | None = None) -> bytes | None:
        """Send one message; return the reply payload (requests with a reply) or None.

        With REPLY_ACK negotiated every other request asks for an ack (``need_reply`` None).

        :raise Refused: a non-zero ack.  :raise FrontendError: no or a malformed reply.
        """
        ack = self.reply_ack if need_reply is None else need_reply
        ack = ack and request not in REPLY_REQUESTS
        flags = VERSION | (FLAG_NEED_REPLY if ack else 0)
        data = encode(request, payload, flags)
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))] if fds else []
        self.sock.sendmsg([data], anc)
        if request not in REPLY_REQUESTS and not ack:
            return None
        req, rflags, size = HEADER.unpack(self._recv_exact(HEADER.size))
        body = self._recv_exact(size)
        if req != request or rflags != VERSION | 0x4:
            raise FrontendError(f"reply {req} flags {rflags:#x} to request {request}")
        if ack:
            (value,) = struct.unpack("<Q", body)
            if value:
                raise Refused(f"{Request(request).name} refused (ack {value})")
            return None
        return body

    def _u64(self, request: int, value: int, fds: Sequence[int] = ()) -> None:
        self.request(request, struct.pack("<Q", value), fds)

    # ---- messages (names as vhost-user.rst) ------------------------------------------------
    def get_features(self) -> int:
        return int(struct.unpack("<Q", self.request(Request.GET_FEATURES) or b"")[0])

    def set_features(self, value: int) -> None:
        self._u64(Request.SET_FEATURES, value)
        self.features = value

    def get_protocol_features(self) -> int:
        return int(struct.unpack("<Q", self.request(Request.GET_PROTOCOL_FEATURES) or b"")[0])

    def set_protocol_features(self, value: int) -> None:
        self._u64(Request.SET_PROTOCOL_FEATURES, value)
        self.protocol_features = value

    def set_owner(self) -> None:
        self.request(Request.SET_OWNER)

    def set_mem_table(self, ram: GuestRam) -> None:
        regions = ram.regions()
        self.request(Request.SET_MEM_TABLE, pack_mem_table(regions), [ram.fd] * len(regions))

    def set_vring_num(self, index: int, num: int) -> None:
        self.request(Request.SET_VRING_NUM, VringState(index, num).pack())

    def set_vring_base(self, index: int, base: int) -> None:
        self.request(Request.SET_VRING_BASE, VringState(index, base).pack())

    def set_vring_addr(self, index: int, ring: DriverRing, log: bool = False) -> None:
        """With ``log``, VHOST_VRING_F_LOG and the used ring's guest-physical address, as
        QEMU's vhost_virtqueue_set_addr(enable_log) sends them while it migrates."""
        desc, used, avail = ring.addresses()
        self.request(Request.SET_VRING_ADDR, struct.pack("<IIQQQQ", index, int(log), desc, used, avail,
                                                         ring.used if log else 0))

    def set_log_base(self, log: LogBitmap, offset: int = 0) -> None:
        """SET_LOG_BASE with the log's memfd (LOG_SHMFD); QEMU waits for the back-end's reply."""
        body = self.request(Request.SET_LOG_BASE, struct.pack("<QQ", log.size, offset), [log.fd])
        if body is None or len(body) != 8:
            raise FrontendError(f"SET_LOG_BASE reply {body!r}")

    def log_start(self, log: LogBitmap, rings: dict[int, DriverRing]) -> None:
        """QEMU's migration start on running rings (vhost_migration_log(true)): the log, then
        SET_FEATURES with LOG_ALL, then each ring's addresses with VHOST_VRING_F_LOG."""
        self.set_log_base(log)
        self.set_features(self.features | Feature.LOG_ALL)
        for index, ring in sorted(rings.items()):
            self.set_vring_addr(index, ring, log=True)

    def log_stop(self, rings: dict[int, DriverRing]) -> None:
        """Migration end or cancel: LOG_ALL off, ring addresses without the log flag."""
        self.set_features(self.features & ~Feature.LOG_ALL)
        for index, ring in sorted(rings.items()):
            self.set_vring_addr(index, ring, log=False)

    def set_vring_kick(self, index: int, fd: int) -> None:
        self._u64(Request.SET_VRING_KICK, index, [fd])

    def set_vring_call(self, index: int, fd: int) -> None:
        self._u64(Request.SET_VRING_CALL, index, [fd])

    def set_vring_enable(self, index: int, on: bool) -> None:
        self.request(Request.SET_VRING_ENABLE, VringState(index, int(on)).pack())

    def get_vring_base(self, index: int) -> int:
        """Stop ring ``index``; return where it stopped (the next avail index to serve)."""
        body = self.request(Request.GET_VRING_BASE, VringState(index, 0).pack()) or b""
        st = VringState.unpack(body)
        if st.index != index:
            raise FrontendError(f"GET_VRING_BASE for vq {index} answered for vq {st.index}")
        return st.num

    def get_config(self, offset: int, size: int) -> bytes:
        body = self.request(Request.GET_CONFIG, struct.pack("<III", offset, size, 0)) or b""
        return body[12:12 + size]

    # ---- QEMU's sequences ----------------------------------------------------------------
    def connect_sequence(self) -> int:
        """What QEMU sends at realize: features, protocol features (REPLY_ACK kept), owner.
        Returns the device's features."""
        offered = self.get_features()
        if offered & Feature.PROTOCOL_FEATURES:
            proto = self.get_protocol_features()
            self.set_protocol_features(proto & (ProtocolFeature.REPLY_ACK | ProtocolFeature.MQ
                                                | ProtocolFeature.CONFIG | ProtocolFeature.LOG_SHMFD))
        self.set_owner()
        return offered

    def start(self, ram: GuestRam, rings: dict[int, DriverRing], features: int | None = None,
              enable: bool = True) -> None:
        """QEMU's driver-start sequence: SET_FEATURES, SET_MEM_TABLE, then per ring NUM, BASE,
        ADDR, KICK, CALL, and SET_VRING_ENABLE(1) when protocol features were negotiated."""
        offered = self.get_features()
        self.set_features(offered if features is None else features)
        if self.features & Feature.RING_EVENT_IDX:
            for ring in rings.values():
                ring.use_event_idx()
        self.set_mem_table(ram)
        for index, ring in sorted(rings.items()):
            self.set_vring_num(index, ring.size)
            self.set_vring_base(index, ring.base)
            self.set_vring_addr(index, ring)
            self.set_vring_kick(index, ring.kick_fd)
            self.set_vring_call(index, ring.call_fd)
        if enable and self.features & Feature.PROTOCOL_FEATURES:
            for index in sorted(rings):
                self.set_vring_enable(index, True)

    def close(self) -> None:
        self.sock.close()


@contextmanager
def serve_in_thread(device: VirtioDevice, path: Path) -> Iterator[VhostUserServer]:
    """Serve ``device`` on ``path`` with the real VhostUserServer, its asyncio loop in a thread
    (the back-end under test; the test's own thread is the guest)."""
    loop = asyncio.new_event_loop()
    server = VhostUserServer(path, device)
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name=f"backend-{device.name}", daemon=True)
    thread.start()
    if not started.wait(5):
        raise FrontendError(f"back-end for {device.name} did not start")
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


__all__ = ["device_queue", "DriverRing", "FrontendError", "GuestRam", "LogBitmap", "Posted", "Refused", "RingViolation", "Segment",
           "Used", "VhostUserFrontend", "serve_in_thread"]
