"""Property test of the device-side split virtqueue against the virtio 1.1 rules (2.6), with the
declared-fake driver ring of pyxen.testing checking every used element:

- the device sees exactly the buffers of each chain the driver made available, whatever its
  shape (direct chains over descriptors in any order, indirect tables, one to many segments,
  readable then writable);
- the used ring carries only head ids of outstanding chains, each returned once, with a length
  within the chain's writable bytes;
- all of it across the 16-bit wrap of the free-running indices (start indices near 65535);
- a chain given back unused (``unpop``) is taken again, the same;
- misuse by the device (a push of a head it does not hold, twice) is refused, not written.
"""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyxen.backends.common.virtqueue import Chain, Virtqueue, VirtqueueError
from pyxen.testing.vhost_user_frontend import DriverRing, GuestRam, Segment, device_queue

SIZES = [1, 2, 4, 8, 16, 64]

shape = st.tuples(
    st.integers(0, 4),            # readable segments
    st.integers(0, 4),            # writable segments
    st.booleans(),                # indirect
    st.integers(1, 300),          # segment length
)


def contents(views: list[memoryview]) -> bytes:
    return b"".join(bytes(v) for v in views)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=st.sampled_from(SIZES),
       start=st.one_of(st.integers(65535 - 70, 65535), st.integers(0, 65535)),
       shapes=st.lists(shape, min_size=1, max_size=60),
       seed=st.integers(0, 2**32 - 1))
def test_used_ring_follows_the_spec(size: int, start: int, shapes: list[tuple[int, int, bool, int]],
                                    seed: int) -> None:
    rnd = random.Random(seed)
    ram = GuestRam(4 << 20)
    ring = DriverRing(ram, size, start=start, max_indirect=8)
    vq = device_queue(ram, ring)
    expected: dict[int, tuple[bytes, int]] = {}  # token -> (readable bytes, writable length)
    held: list[Chain] = []
    done = 0
    for token, (nr, nw, indirect, length) in enumerate(shapes):
        if nr + nw == 0:
            nr = 1
        if nr + nw > size:
            indirect = True  # a direct chain longer than the ring cannot exist (2.6.5)
        need = 1 if indirect else nr + nw
        while ring.num_free < need:  # the ring is full: the device works, the driver reaps
            if not held:
                held += [c for c in iter(vq.pop, None)]
            rnd.shuffle(held)
            chain = held.pop()
            data, wlen = expected[chain.head]
            assert contents(chain.readable) == data and chain.writable_len == wlen
            n = rnd.randint(0, wlen)
            for v in chain.writable:  # the device fills part of the writable buffers
                k = min(len(v), n)
                v[:k] = b"\xab" * k
                n -= k
            chain.release()
            vq.push(chain.head, min(wlen, rnd.randint(0, wlen)))
            for used in ring.reap():  # RingViolation on any broken rule
                done += 1
        segs = []
        readable = b""
        for i in range(nr + nw):
            addr = ram.alloc(length, 1)
            if i < nr:
                data = bytes([(token + i) & 0xFF]) * length
                ram.write(addr, data)
                readable += data
            segs.append(Segment(addr, length, i >= nr))
        head = ring.post(segs, indirect=indirect, token=token)
        expected[head] = (readable, nw * length)
        # Now and then the device takes a chain and gives it back unused (netback RX, no frame).
        if rnd.random() < 0.2:
            taken = vq.pop()
            if taken is not None:
                vq.unpop(taken)
    # Drain: everything posted comes back once.
    held += [c for c in iter(vq.pop, None)]
    for chain in held:
        data, wlen = expected[chain.head]
        assert contents(chain.readable) == data and chain.writable_len == wlen
        chain.release()
        vq.push(chain.head, wlen)
    done += len(ring.reap())
    assert done == len(shapes)
    assert ring.outstanding == {} and ring.num_free == size and vq.in_flight == 0
    assert ring.used_idx() == (start + len(shapes)) & 0xFFFF == vq.last_avail
    vq.mem.close()
    ram.close()


def test_device_misuse_is_refused_not_written() -> None:
    ram = GuestRam(4 << 20)
    ring = DriverRing(ram, 8, start=65534)
    vq = device_queue(ram, ring)
    buf = ram.alloc(64)
    ring.post([Segment(buf, 64, True)])
    ring.post([Segment(buf, 64, True)])
    a = vq.pop()
    assert a is not None
    with pytest.raises(VirtqueueError):
        vq.push((a.head + 1) % 8, 0)  # never popped
    vq.push(a.head, 64)
    with pytest.raises(VirtqueueError):
        vq.push(a.head, 64)  # twice
    b = vq.pop()
    assert b is not None
    with pytest.raises(VirtqueueError):
        vq.unpop(a)  # not the last one popped
    vq.unpop(b)
    assert [u.head for u in ring.reap()] == [a.head]
    assert ring.used_idx() == 65535


@pytest.mark.parametrize("build", ["loop", "head_range", "next_range", "nested_indirect", "read_after_write",
                                   "head_twice", "avail_too_far"])
def test_hostile_driver_breaks_only_its_ring(build: str) -> None:
    """A driver that breaks the rules gets VirtqueueError (the ring stops); nothing is used."""
    import struct
    ram = GuestRam(4 << 20)
    ring = DriverRing(ram, 8)
    vq = device_queue(ram, ring)
    mm, buf = ram.mm, ram.alloc(64)
    d = lambda i, addr, ln, fl, nx: struct.pack_into("<QIHH", mm, ring.desc + 16 * i, addr, ln, fl, nx)  # noqa: E731
    avail = lambda slot, head: struct.pack_into("<H", mm, ring.avail + 4 + 2 * slot, head)  # noqa: E731
    n_avail = 1
    if build == "loop":
        d(0, buf, 8, 1, 1)
        d(1, buf, 8, 1, 0)
        avail(0, 0)
    elif build == "head_range":
        avail(0, 8)
    elif build == "next_range":
        d(0, buf, 8, 1, 9)
        avail(0, 0)
    elif build == "nested_indirect":
        table = ram.alloc(32)
        struct.pack_into("<QIHH", mm, table, table, 16, 4, 0)
        d(0, table, 16, 4, 0)
        avail(0, 0)
    elif build == "read_after_write":
        d(0, buf, 8, 3, 1)
        d(1, buf, 8, 0, 0)
        avail(0, 0)
    elif build == "head_twice":
        d(0, buf, 8, 0, 0)
        avail(0, 0)
        avail(1, 0)
        struct.pack_into("<H", mm, ring.avail + 2, 2)
        assert vq.pop() is not None  # the first is fine; the second names a head still held
        n_avail = 2
    elif build == "avail_too_far":
        n_avail = 9
    struct.pack_into("<H", mm, ring.avail + 2, n_avail)
    with pytest.raises(VirtqueueError):
        vq.pop()
    assert ring.used_idx() == 0 and vq.in_flight == (1 if build == "head_twice" else 0)


def test_the_driver_never_sees_a_torn_used_index() -> None:
    """The used index must change with one 16-bit store. Written a byte at a time (what
    ``struct.pack_into("<H")`` does, low byte first), a driver reading it as it goes from 0x01FF
    to 0x0200 sees 0x0100 and takes stale used elements for new ones: Linux's "id N is not a
    head!" under sustained load. A second process, as the guest's CPU, watches the index while
    this one pushes across a few hundred low-byte wraps; it must never see it go backwards."""
    import multiprocessing
    import time
    ram = GuestRam(4 << 20)
    ring = DriverRing(ram, 256, start=0xF0)
    vq = device_queue(ram, ring)
    stop = ram.alloc(1)
    buf = ram.alloc(64)

    def watch(out: "multiprocessing.connection.Connection") -> None:
        hdr = memoryview(ram.mm)[ring.used:ring.used + 4].cast("H")
        prev, torn, reads = hdr[1], 0, 0
        while not ram.mm[stop]:
            v = hdr[1]
            if (v - prev) & 0xFFFF >= 0x8000:  # backwards (a lag of the watcher only looks forward)
                torn += 1
            prev = v
            reads += 1
        out.send((torn, reads))

    ctx = multiprocessing.get_context("fork")
    r, w = ctx.Pipe(duplex=False)
    watcher = ctx.Process(target=watch, args=(w,), daemon=True)
    watcher.start()
    deadline, pushed = time.monotonic() + 2.0, 0
    try:
        while time.monotonic() < deadline or pushed < 300 * 256:
            for _ in range(64):
                ring.post([Segment(buf, 64, True)])
            for chain in iter(vq.pop, None):
                chain.release()
                vq.push(chain.head, 0)
                pushed += 1
            ring.reap()
    finally:
        ram.mm[stop] = 1
        watcher.join(10)
    torn, reads = r.recv()
    assert reads > 1000 and pushed >= 300 * 256
    assert torn == 0, f"the watcher saw the used index go backwards {torn} times in {pushed} pushes"
