"""The vhost-user session's state machine and ring life cycle, driven by the declared-fake
front-end (pyxen.testing.vhost_user_frontend) against the real VhostUserServer and blkback /
netback devices: no QEMU, no guest."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from pyxen.backends.block import VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT
from pyxen.backends.block.device import BlockDevice, open_target
from pyxen.backends.common.vhost_user import Feature, Request
from pyxen.backends.net import NET_HDR_LEN, RX_QUEUE, TX_QUEUE
from pyxen.backends.net.device import NetDevice
from pyxen.testing.vhost_user_frontend import (DriverRing, GuestRam, Refused, Segment, VhostUserFrontend,
                                               serve_in_thread)

SECTOR = 512


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    p = tmp_path / "disk.img"
    p.write_bytes(bytes(range(256)) * 8192)  # 2 MiB
    return p


@pytest.fixture
def blk(disk: Path, tmp_path: Path) -> Iterator[tuple[Path, BlockDevice]]:
    dev = BlockDevice("vbd-test", open_target(str(disk), False), "xvdb")
    path = tmp_path / "vbd.sock"
    with serve_in_thread(dev, path):
        yield path, dev
    dev.close()


def connect(path: Path) -> VhostUserFrontend:
    fe = VhostUserFrontend(path)
    fe.connect_sequence()
    assert fe.reply_ack
    return fe


def blk_request(ram: GuestRam, ring: DriverRing, rtype: int, sector: int, data: bytes = b"",
                read_len: int = 0, indirect: bool = False) -> tuple[int, int]:
    """Post one virtio-blk request; return (data-in address, status address)."""
    hdr = ram.alloc(16)
    ram.write(hdr, struct.pack("<IIQ", rtype, 0, sector))
    segs = [Segment(hdr, 16)]
    if data:
        out = ram.alloc(len(data))
        ram.write(out, data)
        segs.append(Segment(out, len(data)))
    rd = ram.alloc(read_len) if read_len else 0
    if read_len:
        segs.append(Segment(rd, read_len, True))
    status = ram.alloc(1)
    ram.write(status, b"\xff")
    segs.append(Segment(status, 1, True))
    ring.post(segs, indirect=indirect)
    return rd, status


# ---- the state machine -------------------------------------------------------------------
def test_requests_out_of_order_are_refused_and_change_nothing(blk: tuple[Path, BlockDevice], disk: Path) -> None:
    path, _ = blk
    ram, ring = GuestRam(4 << 20), None
    fe = VhostUserFrontend(path)
    offered = fe.get_features()
    fe.set_protocol_features(fe.get_protocol_features())  # allowed before SET_OWNER (QEMU's probe)
    with pytest.raises(Refused):
        fe.set_mem_table(ram)  # before SET_OWNER
    fe.set_owner()
    with pytest.raises(Refused):
        fe.set_owner()  # twice
    with pytest.raises(Refused):
        fe.set_features(offered | 1 << 63)  # a bit that was not offered
    ring = DriverRing(ram, 16)
    with pytest.raises(Refused):
        fe.set_vring_num(0, 24)  # not a power of two
    fe.set_vring_num(0, 16)
    with pytest.raises(Refused):
        fe.set_vring_addr(0, ring)  # before SET_MEM_TABLE
    with pytest.raises(Refused):
        fe.set_vring_kick(0, ring.kick_fd)  # before the ring's addresses
    with pytest.raises(Refused):
        fe.set_vring_num(5, 16)  # no such ring
    fe.start(ram, {0: ring})
    with pytest.raises(Refused):
        fe.set_vring_base(0, 7)  # while the ring runs
    with pytest.raises(Refused):
        fe.set_vring_num(0, 32)
    # Nothing of the above changed the ring: I/O works from index 0.
    _, status = blk_request(ram, ring, VIRTIO_BLK_T_OUT, 0, b"Z" * SECTOR)
    ring.kick()
    (used,) = ring.reap_until(1)
    assert used.length == 1 and ram.read(status, 1) == bytes([VIRTIO_BLK_S_OK])
    assert disk.read_bytes()[:SECTOR] == b"Z" * SECTOR
    fe.close()


def test_ring_addresses_outside_memory_are_refused(blk: tuple[Path, BlockDevice]) -> None:
    path, _ = blk
    fe = connect(path)
    ram = GuestRam(4 << 20)
    fe.set_features(fe.get_features())
    fe.set_mem_table(ram)
    fe.set_vring_num(0, 16)
    with pytest.raises(Refused):
        fe.request(Request.SET_VRING_ADDR, struct.pack("<IIQQQQ", 0, 0, 0x1000, 0x2000, 0x3000, 0))
    fe.close()


def test_get_vring_base_stops_the_ring_and_a_restart_resumes(blk: tuple[Path, BlockDevice], disk: Path) -> None:
    path, _ = blk
    fe = connect(path)
    ram = GuestRam(8 << 20)
    ring = DriverRing(ram, 32)
    fe.start(ram, {0: ring})
    for i in range(5):
        blk_request(ram, ring, VIRTIO_BLK_T_OUT, i, bytes([i]) * SECTOR)
    ring.kick()
    assert len(ring.reap_until(5)) == 5
    assert fe.get_vring_base(0) == 5  # stopped; the next chain to take is 5
    # The interrupt for the last chains may land after the used index reap_until polled; the
    # ring thread has stopped once GET_VRING_BASE answered, so nothing can come after this.
    ring.wait_call(0)
    _, status = blk_request(ram, ring, VIRTIO_BLK_T_OUT, 9, b"S" * SECTOR)
    ring.kick()
    assert not ring.wait_call(0.3) and ring.reap() == []  # a stopped ring serves nothing
    assert ram.read(status, 1) == b"\xff"
    fe.set_vring_num(0, ring.size)
    fe.set_vring_base(0, 5)
    fe.set_vring_addr(0, ring)
    fe.set_vring_kick(0, ring.kick_fd)  # started: the queued request is served at once
    fe.set_vring_call(0, ring.call_fd)
    assert len(ring.reap_until(1)) == 1
    assert disk.read_bytes()[9 * SECTOR:10 * SECTOR] == b"S" * SECTOR
    fe.close()


@pytest.mark.parametrize("saved", ["clean", "stale"])
def test_reconnect_after_the_backend_died_resumes_after_the_last_used(disk: Path, tmp_path: Path, saved: str) -> None:
    """A restarted back-end gets QEMU's start sequence again. With a clean stop the base is what
    GET_VRING_BASE said; after a crash QEMU may send an older copy (virtio_queue_restore_last_
    avail_idx): the back-end must resume after the last used chain, never hand a head back twice."""
    path = tmp_path / "vbd.sock"
    ram = GuestRam(8 << 20)
    ring = DriverRing(ram, 32, start=65530)  # and cross the 16-bit wrap on the way
    dev = BlockDevice("vbd-test", open_target(str(disk), False), "xvdb")
    with serve_in_thread(dev, path):
        fe = connect(path)
        fe.start(ram, {0: ring})
        for i in range(6):
            blk_request(ram, ring, VIRTIO_BLK_T_OUT, i, bytes([0x40 + i]) * SECTOR)
        ring.kick()
        assert len(ring.reap_until(6)) == 6
        base = fe.get_vring_base(0) if saved == "clean" else 65530  # a crash: QEMU's stale copy
        fe.close()
    dev.close()
    assert ring.used_idx() == (65530 + 6) & 0xFFFF
    # The guest queues more while the back-end is away.
    rd, status = blk_request(ram, ring, VIRTIO_BLK_T_IN, 0, read_len=6 * SECTOR, indirect=True)
    dev = BlockDevice("vbd-test", open_target(str(disk), False), "xvdb")
    with serve_in_thread(dev, path):
        fe = connect(path)
        fe.set_features(fe.get_features())
        fe.set_mem_table(ram)
        fe.set_vring_num(0, ring.size)
        fe.set_vring_base(0, base)
        fe.set_vring_addr(0, ring)
        fe.set_vring_kick(0, ring.kick_fd)
        fe.set_vring_call(0, ring.call_fd)
        fe.set_vring_enable(0, True)
        (used,) = ring.reap_until(1)  # RingViolation if an old head came back again
        assert ram.read(status, 1) == bytes([VIRTIO_BLK_S_OK])
        assert ram.read(rd, 6 * SECTOR) == b"".join(bytes([0x40 + i]) * SECTOR for i in range(6))
        assert ring.reap() == [] and fe.get_vring_base(0) == (65530 + 7) & 0xFFFF
        fe.close()
    dev.close()


def test_blk_chains_direct_indirect_and_out_of_order_descriptors(blk: tuple[Path, BlockDevice], disk: Path) -> None:
    path, _ = blk
    fe = connect(path)
    ram = GuestRam(16 << 20)
    ring = DriverRing(ram, 16)
    fe.start(ram, {0: ring})
    expect = bytearray(disk.read_bytes())
    for rnd in range(40):  # 40 rounds on a 16-entry ring: the free list returns in any order
        posted = []
        for k in range(5 if rnd % 2 else 2):
            sector = (rnd * 7 + k * 3) % 2000
            payload = os.urandom(SECTOR * (1 + k % 3))
            blk_request(ram, ring, VIRTIO_BLK_T_OUT, sector, payload, indirect=bool(k % 2))
            expect[sector * SECTOR:sector * SECTOR + len(payload)] = payload
            posted.append(sector)
        ring.kick()
        ring.reap_until(len(posted))
    assert disk.read_bytes() == bytes(expect)
    assert ring.num_free == ring.size
    fe.close()


# ---- netback over a packet socket standing in for the TAP ----------------------------------
@pytest.fixture
def vif(tmp_path: Path) -> Iterator[tuple[Path, socket.socket, NetDevice]]:
    """NetDevice whose 'TAP' is one end of a SOCK_SEQPACKET pair (a frame per message, as a TAP
    fd); the test holds the other end as the bridge."""
    ours, bridge = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    dev = NetDevice("vif-test", os.dup(ours.fileno()), "viftest")
    ours.close()
    path = tmp_path / "vif.sock"
    with serve_in_thread(dev, path):
        yield path, bridge, dev
    dev.close()
    bridge.close()


def net_start(path: Path, ram: GuestRam, size: int = 16, start: int = 0) -> tuple[VhostUserFrontend, DriverRing, DriverRing]:
    fe = connect(path)
    rx, tx = DriverRing(ram, size, start), DriverRing(ram, size, start)
    fe.start(ram, {RX_QUEUE: rx, TX_QUEUE: tx}, features=Feature.VERSION_1 | Feature.PROTOCOL_FEATURES
             | Feature.RING_INDIRECT_DESC)
    return fe, rx, tx


def test_netback_tx_and_rx_frames(vif: tuple[Path, socket.socket, NetDevice]) -> None:
    path, bridge, _ = vif
    ram = GuestRam(8 << 20)
    fe, rx, tx = net_start(path, ram)
    # TX: header + frame, split over descriptors as Linux does for a cloned skb (indirect).
    frames = [os.urandom(60 + 97 * i) for i in range(10)]
    for i, f in enumerate(frames):
        hdr, body = ram.alloc(NET_HDR_LEN), ram.alloc(len(f))
        ram.write(body, f)
        tx.post([Segment(hdr, NET_HDR_LEN), Segment(body, len(f))], indirect=bool(i % 2))
    tx.kick()
    assert all(u.length == 0 for u in tx.reap_until(10))
    bridge.settimeout(5)
    assert [bridge.recv(2048) for _ in frames] == frames
    # RX: buffers posted before any frame are not used; each frame fills one, header first.
    bufs = {}
    for _ in range(4):
        b = ram.alloc(NET_HDR_LEN + 1518)
        bufs[rx.post([Segment(b, NET_HDR_LEN + 1518, True)], token=b)] = b
    rx.kick()
    assert not rx.wait_call(0.3) and rx.reap() == []
    sent = [os.urandom(64 + 300 * i) for i in range(3)]
    for f in sent:
        bridge.send(f)
    got = rx.reap_until(3)
    for u, f in zip(got, sent):
        assert u.length == NET_HDR_LEN + len(f)
        data = ram.read(u.token, u.length)  # type: ignore[arg-type]
        assert data[:NET_HDR_LEN] == bytes(10) + b"\x01\x00" and data[NET_HDR_LEN:] == f
    assert len(rx.outstanding) == 1  # the fourth buffer is still the guest's, unused
    assert fe.get_vring_base(RX_QUEUE) == 3  # and the stopped ring's base excludes it
    fe.close()


def test_netback_keeps_frames_queued_until_the_rx_ring_is_enabled(vif: tuple[Path, socket.socket, NetDevice]) -> None:
    """Frames the bridge sends before the guest's RX ring is enabled wait in the TAP's queue (as
    with vhost-net): the ring starts at its kick and is enabled a message later, and a netback
    that dropped in that gap lost the first frames of every new guest."""
    path, bridge, _ = vif
    sent = [os.urandom(64 + 100 * i) for i in range(5)]
    for f in sent:
        bridge.send(f)
    ram = GuestRam(8 << 20)
    fe, rx, _tx = net_start(path, ram)
    for _ in range(len(sent)):
        b = ram.alloc(NET_HDR_LEN + 1518)
        rx.post([Segment(b, NET_HDR_LEN + 1518, True)], token=b)
    rx.kick()
    got = rx.reap_until(len(sent))
    assert [ram.read(u.token, u.length)[NET_HDR_LEN:] for u in got] == sent  # type: ignore[arg-type]
    fe.close()


def test_netback_rx_across_the_16bit_wrap(vif: tuple[Path, socket.socket, NetDevice]) -> None:
    path, bridge, _ = vif
    ram = GuestRam(8 << 20)
    fe, rx, _tx = net_start(path, ram, size=8, start=65533)
    for n in range(40):
        b = ram.alloc(NET_HDR_LEN + 200)
        rx.post([Segment(b, NET_HDR_LEN + 200, True)], token=b)
        rx.kick()
        frame = struct.pack("<I", n) * 16
        bridge.send(frame)
        (u,) = rx.reap_until(1)
        assert ram.read(u.token, u.length)[NET_HDR_LEN:] == frame  # type: ignore[arg-type]
    assert rx.used_idx() == (65533 + 40) & 0xFFFF
    fe.close()


def test_a_disk_ring_is_served_while_the_event_loop_is_held_up(disk: Path, tmp_path: Path) -> None:
    """blkback serves each ring from a thread of its own (transport.RingWorker): requests
    complete while the daemon's event loop is busy elsewhere (a slow callback, another device),
    and a stop (GET_VRING_BASE) still finds nothing in flight."""
    dev = BlockDevice("vbd-test", open_target(str(disk), False), "xvdb")
    path = tmp_path / "vbd.sock"
    with serve_in_thread(dev, path) as server:
        fe = connect(path)
        ram = GuestRam(8 << 20)
        ring = DriverRing(ram, 32)
        fe.start(ram, {0: ring})
        for _ in range(50):  # the session exists once the first messages were served
            if server.session is not None:
                break
            time.sleep(0.01)
        assert server.session is not None
        release = threading.Event()
        server.session.loop.call_soon_threadsafe(release.wait, 5)  # the loop is stuck until set
        try:
            for i in range(4):
                blk_request(ram, ring, VIRTIO_BLK_T_OUT, i, bytes([0x60 + i]) * SECTOR)
            ring.kick()
            assert len(ring.reap_until(4, timeout=3)) == 4
        finally:
            release.set()
        assert fe.get_vring_base(0) == 4
        fe.close()
    dev.close()
    assert disk.read_bytes()[:4 * SECTOR] == b"".join(bytes([0x60 + i]) * SECTOR for i in range(4))


def test_blk_event_idx_negotiated_and_honoured(blk: tuple[Path, BlockDevice], disk: Path) -> None:
    """blkback offers VIRTIO_RING_F_EVENT_IDX; with it acked the ring thread interrupts only
    when the used index passes used_event and asks for kicks with avail_event (the fake driver
    follows both, as Linux's virtio_ring)."""
    path, _ = blk
    fe = connect(path)
    assert fe.get_features() & Feature.RING_EVENT_IDX
    ram = GuestRam(16 << 20)
    ring = DriverRing(ram, 16)
    fe.start(ram, {0: ring})
    assert ring.event_idx
    data = os.urandom(SECTOR)
    blk_request(ram, ring, VIRTIO_BLK_T_OUT, 3, data)
    ring.kick()
    assert ring.wait_call(5) and len(ring.reap()) == 1
    deadline = time.monotonic() + 5
    while ring.avail_event() != ring.avail_idx and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ring.avail_event() == ring.avail_idx  # published once the ring was found empty
    ring.set_used_event(ring.last_used + 1)  # an interrupt after two more, not one
    _, st1 = blk_request(ram, ring, VIRTIO_BLK_T_IN, 3, read_len=SECTOR)
    ring.kick()
    assert not ring.wait_call(0.5)
    assert ring.used_idx() == ring.last_used + 1 and ram.read(st1, 1) == b"\0"  # served, no interrupt
    rd, _ = blk_request(ram, ring, VIRTIO_BLK_T_IN, 3, read_len=SECTOR)
    ring.kick()
    assert ring.wait_call(5)
    assert len(ring.reap()) == 2 and ram.read(rd, SECTOR) == data
    assert disk.read_bytes()[3 * SECTOR:4 * SECTOR] == data
    fe.close()
