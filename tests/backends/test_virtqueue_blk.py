"""Split virtqueue over real shared memory (a memfd, as QEMU's guest RAM) and blkback requests."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from pyxen.backends.block import (VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID,
                                  VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT)
from pyxen.backends.block.handler import BlockHandler
from pyxen.backends.common.virtqueue import VirtqueueError
from pyxen.testing.vhost_user_frontend import DriverRing, GuestRam, Segment, device_queue

N = 16


class Driver:
    """The guest driver's half of a split ring (pyxen.testing's fake) and the device's Virtqueue
    over the same memory, for tests of blkback's request handling without a session."""

    def __init__(self) -> None:
        self.ram = GuestRam(4 << 20)
        self.ring = DriverRing(self.ram, N)
        self.mm = self.ram.mm
        self.vq = device_queue(self.ram, self.ring)

    def buf(self, data: bytes | int) -> int:
        n = data if isinstance(data, int) else len(data)
        addr = self.ram.alloc(n)
        if not isinstance(data, int):
            self.ram.write(addr, data)
        return addr

    def submit(self, parts: list[tuple[int, int, bool]], indirect: bool = False,
               order: list[int] | None = None) -> int:
        return self.ring.post([Segment(a, n, w) for a, n, w in parts], indirect=indirect, order=order)

    def used(self) -> list[tuple[int, int]]:
        return [(u.head, u.length) for u in self.ring.reap()]


def blk_req(d: Driver, rtype: int, sector: int, data: bytes = b"", read_len: int = 0) -> tuple[int, int]:
    hdr = d.buf(struct.pack("<IIQ", rtype, 0, sector))
    parts = [(hdr, 16, False)]
    if data:
        parts.append((d.buf(data), len(data), False))
    rd = d.buf(read_len) if read_len else 0
    if read_len:
        parts.append((rd, read_len, True))
    status = d.buf(1)
    parts.append((status, 1, True))
    d.submit(parts)
    return rd, status


@pytest.fixture
def image(tmp_path: Path) -> Path:
    p = tmp_path / "disk.img"
    p.write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    return p


def handler(image: Path, readonly: bool = False) -> BlockHandler:
    fd = os.open(image, os.O_RDONLY if readonly else os.O_RDWR)
    return BlockHandler(fd, image.stat().st_size, readonly, b"xvdb", False)


def test_write_flush_read_get_id(image: Path) -> None:
    d, h = Driver(), handler(image)
    pattern = os.urandom(8192)
    _, s1 = blk_req(d, VIRTIO_BLK_T_OUT, 16, pattern)
    _, s2 = blk_req(d, VIRTIO_BLK_T_FLUSH, 0)
    rd, s3 = blk_req(d, VIRTIO_BLK_T_IN, 16, read_len=8192)
    idb, s4 = blk_req(d, VIRTIO_BLK_T_GET_ID, 0, read_len=20)
    assert h.process(d.vq) == 4
    assert [d.mm[s] for s in (s1, s2, s3, s4)] == [VIRTIO_BLK_S_OK] * 4
    assert image.read_bytes()[16 * 512:16 * 512 + 8192] == pattern
    assert bytes(d.mm[rd:rd + 8192]) == pattern
    assert bytes(d.mm[idb:idb + 20]).rstrip(b"\0") == b"xvdb"
    used = d.used()
    assert used[2][1] == 8192 + 1 and used[0][1] == 1


def test_header_and_data_in_one_descriptor(image: Path) -> None:
    """ANY_LAYOUT: segment boundaries mean nothing (qtest sends header+data together)."""
    d, h = Driver(), handler(image)
    both = d.buf(struct.pack("<IIQ", VIRTIO_BLK_T_OUT, 0, 1) + b"A" * 512)
    status = d.buf(1)
    d.submit([(both, 16 + 512, False), (status, 1, True)])
    h.process(d.vq)
    assert d.mm[status] == VIRTIO_BLK_S_OK
    assert image.read_bytes()[512:1024] == b"A" * 512


def test_readonly_write_is_ioerr(image: Path) -> None:
    d, h = Driver(), handler(image, readonly=True)
    before = image.read_bytes()
    _, s = blk_req(d, VIRTIO_BLK_T_OUT, 0, b"x" * 512)
    h.process(d.vq)
    assert d.mm[s] == VIRTIO_BLK_S_IOERR
    assert image.read_bytes() == before


def test_read_beyond_end_is_ioerr(image: Path) -> None:
    d, h = Driver(), handler(image)
    _, s = blk_req(d, VIRTIO_BLK_T_IN, 2048, read_len=512)
    h.process(d.vq)
    assert d.mm[s] == VIRTIO_BLK_S_IOERR


def test_bad_avail_index_is_fatal(image: Path) -> None:
    d = Driver()
    struct.pack_into("<H", d.mm, d.ring.avail + 2, N + 1)
    with pytest.raises(VirtqueueError):
        d.vq.pop()


def test_descriptor_loop_is_detected(image: Path) -> None:
    d = Driver()
    struct.pack_into("<QIHH", d.mm, d.ring.desc, d.buf(16), 16, 1, 0)  # next -> itself
    struct.pack_into("<H", d.mm, d.ring.avail + 2, 1)
    with pytest.raises(VirtqueueError):
        d.vq.pop()


def test_guest_contiguous_descriptors_become_one_view(image: Path) -> None:
    """Descriptors that continue each other in guest memory are one iovec; a gap splits them;
    data and status merged into one writable view still leave the status as the last byte."""
    d, h = Driver(), handler(image)
    hdr = d.buf(struct.pack("<IIQ", VIRTIO_BLK_T_IN, 0, 0))
    base = d.ram.alloc(3 * 4096 + 4096 + 4096 + 1)  # three pages, a gap, one page, the status right after
    parts = [(hdr, 16, False), (base, 4096, True), (base + 4096, 4096, True), (base + 8192, 4096, True),
             (base + 16384, 4096, True), (base + 20480, 1, True)]
    d.submit(parts)
    chain = d.vq.pop()
    assert chain is not None
    assert [len(v) for v in chain.readable] == [16]
    assert [len(v) for v in chain.writable] == [3 * 4096, 4096 + 1]
    d.vq.unpop(chain)
    assert h.process(d.vq) == 1
    assert d.mm[base + 20480] == VIRTIO_BLK_S_OK
    data = image.read_bytes()
    assert bytes(d.mm[base:base + 12288]) == data[:12288]
    assert bytes(d.mm[base + 16384:base + 20480]) == data[12288:16384]
    assert d.used()[0][1] == 4 * 4096 + 1


def _indirect(d: Driver, parts: list[tuple[int, int, bool]], order: list[int] | None = None) -> None:
    """Submit ``parts`` as one indirect table; ``order`` places part k at table slot order[k]."""
    d.submit(parts, indirect=True, order=order)


@pytest.mark.parametrize("order", [None, [0, 3, 1, 4, 2, 5]])
def test_indirect_read_in_table_order_and_shuffled(image: Path, order: list[int] | None) -> None:
    """Linux's in-order indirect tables take the fast walk; any other order the general one."""
    d, h = Driver(), handler(image)
    hdr = d.buf(struct.pack("<IIQ", VIRTIO_BLK_T_IN, 0, 2))
    segs = [d.buf(4096 + 16) for _ in range(4)]  # gaps: four views
    status = d.buf(1)
    _indirect(d, [(hdr, 16, False)] + [(s, 4096, True) for s in segs] + [(status, 1, True)], order)
    assert h.process(d.vq) == 1
    assert d.mm[status] == VIRTIO_BLK_S_OK
    data = image.read_bytes()[1024:1024 + 4 * 4096]
    assert b"".join(bytes(d.mm[s:s + 4096]) for s in segs) == data
    assert d.used()[0][1] == 4 * 4096 + 1


def test_indirect_readable_after_writable_is_fatal(image: Path) -> None:
    d = Driver()
    a, b, c = d.buf(16), d.buf(512), d.buf(1)
    _indirect(d, [(a, 16, False), (b, 512, True), (c, 1, False)])
    with pytest.raises(VirtqueueError):
        d.vq.pop()


def _warm(d: Driver, h: BlockHandler) -> None:
    """One request through the general walk: it learns the region later requests are in (the
    iovec path, Virtqueue.pop_iov, starts from there)."""
    blk_req(d, VIRTIO_BLK_T_FLUSH, 0)
    assert h.process(d.vq) == 1
    d.used()


@pytest.mark.parametrize("segments", [1, 3])
def test_iovec_path_reads_and_writes_linux_requests(image: Path, segments: int) -> None:
    """Linux's in-order indirect requests are served from iovecs built from the table (one
    os.preadv for one buffer, a ctypes preadv/pwritev for several): same data, status and used
    length as the general path, and the chain is an IovChain."""
    d, h = Driver(), handler(image)
    _warm(d, h)
    payload = os.urandom(4096 * segments)
    hdr = d.buf(struct.pack("<IIQ", VIRTIO_BLK_T_OUT, 0, 16))
    srcs = [d.buf(payload[i * 4096:(i + 1) * 4096]) for i in range(segments)]
    status = d.buf(1)
    _indirect(d, [(hdr, 16, False)] + [(s, 4096, False) for s in srcs] + [(status, 1, True)])
    chain = d.vq.pop_iov()
    assert type(chain).__name__ == "IovChain"
    written = h.request_iov(chain)  # type: ignore[arg-type]
    d.vq.push(chain.head, written)
    assert d.mm[status] == VIRTIO_BLK_S_OK and d.used()[0][1] == 1
    assert image.read_bytes()[16 * 512:16 * 512 + len(payload)] == payload
    hdr = d.buf(struct.pack("<IIQ", VIRTIO_BLK_T_IN, 0, 16))
    dsts = [d.buf(4096) for _ in range(segments)]
    status = d.buf(1)
    _indirect(d, [(hdr, 16, False)] + [(s, 4096, True) for s in dsts] + [(status, 1, True)])
    assert h.process(d.vq) == 1
    assert d.mm[status] == VIRTIO_BLK_S_OK and d.used()[0][1] == len(payload) + 1
    assert b"".join(bytes(d.mm[s:s + 4096]) for s in dsts) == payload
    assert h.stats["read"] == 1 and h.stats["write"] == 1


def test_iovec_path_other_requests_and_errors(image: Path) -> None:
    """GET_ID goes through views; a read past the end is IOERR; a readonly write is IOERR."""
    d, h = Driver(), handler(image, readonly=True)
    _warm(d, h)
    for rtype, sector, writable, want in ((VIRTIO_BLK_T_GET_ID, 0, True, VIRTIO_BLK_S_OK),
                                          (VIRTIO_BLK_T_IN, 2047, True, VIRTIO_BLK_S_IOERR),
                                          (VIRTIO_BLK_T_OUT, 0, False, VIRTIO_BLK_S_IOERR)):
        hdr = d.buf(struct.pack("<IIQ", rtype, 0, sector))
        data = d.buf(4096)
        status = d.buf(1)
        _indirect(d, [(hdr, 16, False), (data, 4096, writable), (status, 1, True)])
        assert h.process(d.vq) == 1
        assert d.mm[status] == want, rtype
        d.used()
    assert h.stats["error"] == 2


def test_iovec_path_refuses_a_buffer_outside_guest_memory(image: Path) -> None:
    """A table whose buffer leaves the region is not turned into iovecs: the general walk
    refuses it (the ring is broken), and nothing is read into host memory."""
    d, h = Driver(), handler(image)
    _warm(d, h)
    hdr = d.buf(struct.pack("<IIQ", VIRTIO_BLK_T_IN, 0, 0))
    status = d.buf(1)
    _indirect(d, [(hdr, 16, False), (len(d.mm) - 2048, 4096, True), (status, 1, True)])
    with pytest.raises(VirtqueueError):
        d.vq.pop_iov()


def test_event_idx_kicks_and_interrupts_only_when_asked(image: Path) -> None:
    """VIRTIO_RING_F_EVENT_IDX (virtio 1.1 2.6.7.2, 2.6.10), both halves: the device publishes
    avail_event when it finds the ring empty, so a driver adding chains while the device has
    not caught up does not kick; the device interrupts only when the used index passes the
    driver's used_event, and ignores VRING_AVAIL_F_NO_INTERRUPT."""
    d, h = Driver(), handler(image)
    d.vq.close()
    d.vq = device_queue(d.ram, d.ring, event_idx=True)
    blk_req(d, VIRTIO_BLK_T_FLUSH, 0)
    d.ring.kick()
    assert d.ring.kicks == 1
    assert h.process(d.vq) == 1
    assert d.ring.avail_event() == 1  # published when the ring was found empty
    assert d.vq.needs_interrupt()  # the first interrupt
    d.used()  # the driver asks for an interrupt at the next used element
    blk_req(d, VIRTIO_BLK_T_FLUSH, 0)
    d.ring.kick()
    blk_req(d, VIRTIO_BLK_T_FLUSH, 0)
    d.ring.kick()  # the device has not looked since avail_event 1: no kick needed
    assert (d.ring.kicks, d.ring.kicks_suppressed) == (2, 1)
    assert h.process(d.vq) == 2 and d.ring.avail_event() == 3
    assert d.vq.needs_interrupt()
    d.used()
    d.ring.set_used_event(d.ring.last_used + 1)  # the driver wants an interrupt after two more
    asked = []
    for _ in range(2):
        blk_req(d, VIRTIO_BLK_T_FLUSH, 0)
        d.ring.kick()
        assert h.process(d.vq) == 1
        asked.append(d.vq.needs_interrupt())
    assert asked == [False, True]
    blk_req(d, VIRTIO_BLK_T_FLUSH, 0)
    d.ring.set_used_event(d.ring.avail_idx + 5)  # far ahead: no interrupt, flag or not
    d.ring.set_no_interrupt(False)
    assert h.process(d.vq) == 1
    assert not d.vq.needs_interrupt()
    assert len(d.used()) == 3 and d.ring.num_free == N


def test_event_idx_empty_ring_rechecks_after_publishing(image: Path) -> None:
    """A chain made available after the device's last look but before it published
    avail_event (the driver saw the old value and did not kick) is still taken: pop publishes,
    fences and looks again."""
    d, h = Driver(), handler(image)
    d.vq.close()
    d.vq = device_queue(d.ram, d.ring, event_idx=True)
    d.ring._avail_event[0] = 40  # stale: the driver will not kick for index 0
    blk_req(d, VIRTIO_BLK_T_FLUSH, 0)
    d.ring.kick()
    assert d.ring.kicks_suppressed == 1
    assert d.vq._ring_refilled(0)  # publishing avail_event 0 finds the chain
    assert h.process(d.vq) == 1 and d.ring.avail_event() == 1
    assert d.vq.pop() is None and d.vq.pop_iov() is None


def test_iovec_path_shape_cache_is_bounded(image: Path) -> None:
    """A driver sending tables of every size and direction cannot grow the table-shape cache
    past CACHE_MAX (it starts again), and the request is still served."""
    from pyxen.backends.common import virtqueue

    d, h = Driver(), handler(image)
    _warm(d, h)
    virtqueue._SHAPES.clear()
    virtqueue._SHAPES.update({(1000 + i, 0): (b"", b"", b"", b"") for i in range(virtqueue.CACHE_MAX)})
    rd, status = d.buf(512), d.buf(1)
    _indirect(d, [(d.buf(struct.pack("<IIQ", VIRTIO_BLK_T_IN, 0, 1)), 16, False), (rd, 512, True), (status, 1, True)])
    assert h.process(d.vq) == 1 and d.mm[status] == VIRTIO_BLK_S_OK
    assert len(virtqueue._SHAPES) == 1
    assert bytes(d.mm[rd:rd + 512]) == image.read_bytes()[512:1024]
