"""Dirty-page logging for QEMU's migration (vhost-user.rst "Dirty pages logging", LOG_SHMFD):
the declared-fake front-end (pyxen.testing.vhost_user_frontend) gives the back-end a memfd log
with SET_LOG_BASE, turns VHOST_F_LOG_ALL on and the rings' VHOST_VRING_F_LOG, and checks that
every guest page blkback and netback write is marked, and nothing is marked when logging is off."""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path
from typing import Iterator

import pytest

from pyxen.backends.block import VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT
from pyxen.backends.block.device import BlockDevice, open_target
from pyxen.backends.common.memory import DirtyLog
from pyxen.backends.common.vhost_user import Feature, ProtocolFeature, Request
from pyxen.backends.net import NET_HDR_LEN, RX_QUEUE, TX_QUEUE
from pyxen.backends.net.device import NetDevice
from pyxen.testing.vhost_user_frontend import (DriverRing, FrontendError, GuestRam, LogBitmap, Refused, Segment,
                                               VhostUserFrontend, serve_in_thread)

PAGE = 4096


@pytest.fixture
def blk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk.img"
    disk.write_bytes(os.urandom(1 << 20))
    dev = BlockDevice("vbd-log", open_target(str(disk), False), "xvdb")
    path = tmp_path / "vbd.sock"
    with serve_in_thread(dev, path):
        yield path
    dev.close()


@pytest.fixture
def vif(tmp_path: Path) -> Iterator[tuple[Path, socket.socket]]:
    ours, bridge = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    dev = NetDevice("vif-log", os.dup(ours.fileno()), "viflog")
    ours.close()
    path = tmp_path / "vif.sock"
    with serve_in_thread(dev, path):
        yield path, bridge
    dev.close()
    bridge.close()


def used_pages(ring: DriverRing, slots: range) -> set[int]:
    """Pages of the used ring's index and of the elements in ``slots``."""
    pages = LogBitmap.pages_of(ring.used + 2, 2)
    for s in slots:
        pages |= LogBitmap.pages_of(ring.used + 4 + 8 * (s % ring.size), 8)
    return pages


def blk_read(ram: GuestRam, ring: DriverRing, sector: int, length: int, indirect: bool = False) -> tuple[int, int]:
    hdr = ram.alloc(16)
    ram.write(hdr, struct.pack("<IIQ", VIRTIO_BLK_T_IN, 0, sector))
    buf = ram.alloc(length, PAGE)
    status = ram.alloc(1, PAGE)
    ring.post([Segment(hdr, 16), Segment(buf, length, True), Segment(status, 1, True)], indirect=indirect)
    return buf, status


def test_both_backends_offer_log_all_and_log_shmfd(blk: Path, vif: tuple[Path, socket.socket]) -> None:
    for path in (blk, vif[0]):
        fe = VhostUserFrontend(path)
        assert fe.get_features() & Feature.LOG_ALL
        assert fe.get_protocol_features() & ProtocolFeature.LOG_SHMFD
        fe.close()


def test_blk_reads_mark_data_status_and_used_ring_pages_only_while_logging(blk: Path) -> None:
    ram = GuestRam(8 << 20)
    fe = VhostUserFrontend(blk)
    fe.connect_sequence()
    ring = DriverRing(ram, 16)
    fe.start(ram, {0: ring}, features=Feature.VERSION_1 | Feature.PROTOCOL_FEATURES | Feature.RING_INDIRECT_DESC)
    log = LogBitmap(ram.size)
    # Not migrating: no log, nothing marked.
    blk_read(ram, ring, 0, 3 * PAGE)
    ring.kick()
    ring.reap_until(1)
    fe.set_log_base(log)
    blk_read(ram, ring, 0, PAGE)  # a log, but LOG_ALL not acked: still nothing
    ring.kick()
    ring.reap_until(1)
    assert log.pages() == set()

    fe.log_start(log, {0: ring})
    expect: set[int] = set()
    for i, (length, indirect) in enumerate([(3 * PAGE + 100, False), (512, True), (2 * PAGE, True)]):
        buf, status = blk_read(ram, ring, 8 * i, length, indirect)
        expect |= LogBitmap.pages_of(buf, length) | LogBitmap.pages_of(status, 1)
    ring.kick()
    ring.reap_until(3)
    expect |= used_pages(ring, range(2, 5))
    got = log.sync()
    assert got == expect
    # Written pages only: the header, the descriptor table and the avail ring are the driver's.
    assert ring.desc // PAGE not in got and ring.avail // PAGE not in got

    # A write request (the device writes only the status byte into guest memory).
    hdr, data, status = ram.alloc(16), ram.alloc(512, PAGE), ram.alloc(1, PAGE)
    ram.write(hdr, struct.pack("<IIQ", VIRTIO_BLK_T_OUT, 0, 100))
    ring.post([Segment(hdr, 16), Segment(data, 512), Segment(status, 1, True)])
    ring.kick()
    ring.reap_until(1)
    assert log.sync() == LogBitmap.pages_of(status, 1) | used_pages(ring, range(5, 6))

    fe.log_stop({0: ring})  # migration over: the ring runs on, unlogged
    blk_read(ram, ring, 0, PAGE)
    ring.kick()
    ring.reap_until(1)
    assert log.pages() == set()
    fe.close()
    log.close()


def test_used_ring_is_logged_only_with_the_vring_log_flag(blk: Path) -> None:
    ram = GuestRam(8 << 20)
    fe = VhostUserFrontend(blk)
    fe.connect_sequence()
    ring = DriverRing(ram, 16)
    fe.start(ram, {0: ring}, features=Feature.VERSION_1 | Feature.PROTOCOL_FEATURES)
    log = LogBitmap(ram.size)
    fe.set_log_base(log)
    fe.set_features(fe.features | Feature.LOG_ALL)  # data logged, ring addresses not flagged
    buf, status = blk_read(ram, ring, 0, PAGE)
    ring.kick()
    ring.reap_until(1)
    assert log.sync() == LogBitmap.pages_of(buf, PAGE) | LogBitmap.pages_of(status, 1)
    fe.close()
    log.close()


def test_set_log_base_needs_log_shmfd_and_an_fd(blk: Path) -> None:
    ram = GuestRam(4 << 20)
    log = LogBitmap(ram.size)
    fe = VhostUserFrontend(blk)
    fe.get_features()
    fe.set_protocol_features(ProtocolFeature.REPLY_ACK)  # LOG_SHMFD not negotiated
    fe.set_owner()
    with pytest.raises(FrontendError):  # no reply: the back-end drops the front-end
        fe.set_log_base(log)
    fe.close()
    fe = VhostUserFrontend(blk)
    fe.connect_sequence()
    with pytest.raises(FrontendError):
        fe.request(Request.SET_LOG_BASE, struct.pack("<QQ", log.size, 0))  # no fd
    fe.close()
    log.close()


def test_set_log_fd_is_accepted(blk: Path) -> None:
    fe = VhostUserFrontend(blk)
    fe.connect_sequence()
    efd = os.eventfd(0, os.EFD_CLOEXEC)
    fe.request(Request.SET_LOG_FD, b"", [efd])
    os.close(efd)
    with pytest.raises(Refused):
        fe.request(Request.SET_VRING_NUM, struct.pack("<II", 9, 16))  # the session still answers
    fe.close()


def test_net_rx_buffers_and_used_ring_are_logged(vif: tuple[Path, socket.socket]) -> None:
    path, bridge = vif
    ram = GuestRam(8 << 20)
    fe = VhostUserFrontend(path)
    fe.connect_sequence()
    rx, tx = DriverRing(ram, 16), DriverRing(ram, 16)
    rings = {RX_QUEUE: rx, TX_QUEUE: tx}
    fe.start(ram, rings, features=Feature.VERSION_1 | Feature.PROTOCOL_FEATURES | Feature.RING_INDIRECT_DESC)
    log = LogBitmap(ram.size)
    fe.log_start(log, rings)
    bufs = [ram.alloc(NET_HDR_LEN + 1518, PAGE) for _ in range(3)]
    for b in bufs:
        rx.post([Segment(b, NET_HDR_LEN + 1518, True)], token=b)
    rx.kick()
    assert not rx.wait_call(0.2)
    # A buffer taken and given back unused (no frame yet) may hold the header already: logged.
    unused = log.sync()
    assert unused <= set().union(*(LogBitmap.pages_of(b, NET_HDR_LEN) for b in bufs))
    frames = [os.urandom(100), os.urandom(1400)]
    for f in frames:
        bridge.send(f)
    got = rx.reap_until(2)
    assert [ram.read(u.token, u.length)[NET_HDR_LEN:] for u in got] == frames  # type: ignore[arg-type]
    # TX: the device writes nothing into guest buffers, only the used ring.
    hdr, body = ram.alloc(NET_HDR_LEN, PAGE), ram.alloc(64, PAGE)
    tx.post([Segment(hdr, NET_HDR_LEN), Segment(body, 64)])
    tx.kick()
    tx.reap_until(1)
    bridge.settimeout(5)
    bridge.recv(2048)
    expect = used_pages(rx, range(0, 2)) | used_pages(tx, range(0, 1))
    for u in got:
        expect |= LogBitmap.pages_of(u.token, NET_HDR_LEN + 1518)  # type: ignore[arg-type]
    dirty = log.sync()
    assert expect <= dirty
    assert hdr // PAGE not in dirty and body // PAGE not in dirty
    fe.close()
    log.close()


def test_dirty_log_mark_sets_bits_across_bytes_and_ignores_pages_past_its_end() -> None:
    fd = os.memfd_create("t", os.MFD_CLOEXEC)
    os.ftruncate(fd, 4096)
    log = DirtyLog(os.dup(fd), 16, 0)
    log.mark(3 * PAGE + 5, 20 * PAGE)  # pages 3..23
    log.mark(0, 1)
    log.mark(127 * PAGE, 10 * PAGE)  # page 127 is the log's last
    log.mark(500 * PAGE, PAGE)
    log.mark(PAGE, 0)
    bits = {p for p in range(128) if log.is_dirty(p * PAGE)}
    assert bits == {0, 127} | set(range(3, 24))
    raw = os.pread(fd, 16, 0)
    assert raw[1] == 0xFF and raw[0] == 0b11111001
    log.close()
    os.close(fd)


def test_send_rarp_announces_the_guest_mac_on_the_bridge(vif: tuple[Path, socket.socket]) -> None:
    path, bridge = vif
    fe = VhostUserFrontend(path)
    assert fe.get_protocol_features() & ProtocolFeature.RARP
    fe.connect_sequence()
    mac = bytes.fromhex("00163e007902")
    fe.request(Request.SEND_RARP, mac + b"\0\0")
    bridge.settimeout(5)
    frame = bridge.recv(2048)
    assert len(frame) == 60 and frame[:6] == b"\xff" * 6 and frame[6:12] == mac
    assert frame[12:14] == b"\x80\x35" and frame[20:22] == b"\x00\x03"  # RARP, reverse request
    assert frame[22:28] == mac and frame[32:38] == mac
    fe.close()
