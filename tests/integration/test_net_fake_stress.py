"""netback under sustained load, 1 GiB each way: two declared-fake guests (the vhost-user
front-end and virtio driver of pyxen.testing.vhost_user_frontend, each in its own process)
exchange Ethernet frames through the real netback (NetDevice + VhostUserServer in a third
process, as backendd serves vifs), two real TAPs and a real Linux bridge.

Real TCG guests move under 1 MB/s each way with parallel flows on the CI box (see
test_net_stress.py), so 1 GiB each way with them would take far over the 5-minute budget; the
fake drivers keep everything below the guest kernel real and check more than a guest can:
every used element against the split-ring rules (RingViolation: "id N is not a head!") and
every payload byte of every frame, in order, per flow.

Traffic: FLOWS flows each way at once, jumbo frames (MTU 9000, as a real storage network might
run), RX buffers split over three descriptors (header, a page, the rest) and every third one
through an indirect table, TX chains of header + frame, every other one indirect (Linux's
layout for a cloned skb). Flow control keeps the frames in flight below what the TAP queues
hold, so a lost frame is a bug, not congestion: per flow the sender keeps at most WINDOW frames
unacknowledged and the receiver acknowledges every ACK_EVERY frames.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import random
import select
import signal
import struct
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

import pytest

from pyxen.backends.common.transport import VhostUserServer
from pyxen.backends.common.vhost_user import Feature
from pyxen.backends.net import NET_HDR_LEN, RX_QUEUE, TX_QUEUE
from pyxen.backends.net.device import NetDevice, open_tap
from pyxen.testing.bridge import link_local_bridge
from pyxen.testing.vhost_user_frontend import DriverRing, GuestRam, Segment, VhostUserFrontend

pytestmark = pytest.mark.integration

#: Payload bytes moved each way (at least 1 GiB); PYXEN_NET_FAKE_STRESS_MIB overrides it.
EACH_WAY = int(os.environ.get("PYXEN_NET_FAKE_STRESS_MIB", "1024")) << 20
MTU = 9000
FLOWS = 4
WINDOW = 48
ACK_EVERY = 16
RING = 256
#: RX buffers posted (of up to three descriptors each, so fewer than the ring's 256 entries).
RX_BUFFERS = 96
ETHERTYPE = 0x88B5  # IEEE local experimental: nothing else on the bridge uses it
PROTO = struct.Struct("!6s6sHBBHI")  # dst, src, type, kind, flow, pad, seq (or next expected)
DATA, ACK = 1, 2
PAYLOAD = MTU - (PROTO.size - 14)
FRAMES_PER_FLOW = -(-EACH_WAY // (FLOWS * PAYLOAD))
RXBUF = NET_HDR_LEN + 14 + MTU
NBLOCKS = 61
TIME_LIMIT = float(os.environ.get("PYXEN_NET_FAKE_STRESS_LIMIT", "280"))


def blocks(seed: int) -> list[bytes]:
    """The payloads both sides know: flow f's frame s carries blocks[(f * 17 + s) % NBLOCKS]."""
    rnd = random.Random(seed)
    return [rnd.randbytes(PAYLOAD) for _ in range(NBLOCKS)]


# ---- the back-end process: netback as backendd runs it ------------------------------------
def serve_vifs(vifs: list[tuple[str, str, str]], bridge: str, logfile: str, ready: Connection) -> None:
    """(device name, TAP name, socket path) each: open the TAP on ``bridge`` and serve it; on
    SIGTERM log each vif's counters and ring state to ``logfile``."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    servers = []
    for name, ifname, path in vifs:
        dev = NetDevice(name, open_tap(ifname, bridge, MTU), ifname)
        server = VhostUserServer(Path(path), dev)
        loop.run_until_complete(server.start())
        servers.append((server, dev))
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    logging.basicConfig(filename=logfile, level=logging.INFO, force=True)
    ready.send("ready")
    loop.run_forever()
    for server, dev in servers:
        sess = server.session
        logging.info("%s stats %s reading %s", dev.name, dev.handler.stats, dev.handler.reading)
        if sess is not None:
            for ring in sess.rings:
                vq = ring.vq
                logging.info("%s vq %d enabled %s vq %s last_avail %s used %s in_flight %s avail %s kick %s",
                             dev.name, ring.index, ring.enabled, vq is not None, vq and vq.last_avail,
                             vq and vq.used_idx, vq and vq.in_flight, vq and vq.avail_idx(), ring.kick)
    for server, dev in servers:
        loop.run_until_complete(server.close())
        dev.close()


# ---- one fake guest -------------------------------------------------------------------------
class FakeGuest:
    def __init__(self, path: str, mac: bytes, peer: bytes, seed: int) -> None:
        self.mac, self.peer = mac, peer
        self.blocks = blocks(seed)
        self.ram = GuestRam(96 << 20)
        self.fe = VhostUserFrontend(path, timeout=10)
        self.fe.connect_sequence()
        self.rx, self.tx = DriverRing(self.ram, RING), DriverRing(self.ram, RING)
        self.fe.start(self.ram, {RX_QUEUE: self.rx, TX_QUEUE: self.tx},
                      features=Feature.VERSION_1 | Feature.PROTOCOL_FEATURES | Feature.RING_INDIRECT_DESC)
        self.tx.set_no_interrupt(True)  # as Linux's napi TX: completions are polled
        self.txbufs = [self.ram.alloc(NET_HDR_LEN + 14 + MTU, 64) for _ in range(RING)]
        self.tx_free = list(range(RING))
        self.bytes_in = self.bytes_out = self.foreign = self.rx_posts = 0
        for i in range(RX_BUFFERS):  # RX buffers: header | one page | the rest
            b = self.ram.alloc(RXBUF, 4096)
            self.post_rx(i, b)
        self.rx.kick()
        self.sent = [0] * FLOWS          # next seq to send, per flow
        self.acked = [0] * FLOWS         # peer's next expected, per flow
        self.expect = [0] * FLOWS        # next seq to receive, per flow
        self.last_ack = [0] * FLOWS
        self.errors: list[str] = []

    def post_rx(self, i: int, b: int) -> None:
        segs = [Segment(b, NET_HDR_LEN, True), Segment(b + NET_HDR_LEN, 4096 - NET_HDR_LEN, True),
                Segment(b + 4096, RXBUF - 4096, True)]
        self.rx.post(segs, indirect=self.rx_posts % 3 == 0, token=(i, b))
        self.rx_posts += 1

    def send(self, kind: int, flow: int, seq: int, payload: bytes = b"") -> bool:
        if not self.tx_free or self.tx.num_free < 2:
            return False
        slot = self.tx_free.pop()
        b = self.txbufs[slot]
        frame = PROTO.pack(self.peer, self.mac, ETHERTYPE, kind, flow, 0, seq) + payload
        self.ram.mm[b + NET_HDR_LEN:b + NET_HDR_LEN + len(frame)] = frame
        self.tx.post([Segment(b, NET_HDR_LEN), Segment(b + NET_HDR_LEN, len(frame))],
                     indirect=bool(seq & 1), token=slot)
        return True

    def receive(self) -> int:
        used = self.rx.reap()
        mm = self.ram.mm
        for u in used:
            i, b = cast(tuple[int, int], u.token)
            frame_len = u.length - NET_HDR_LEN
            if mm[b:b + NET_HDR_LEN] != bytes(10) + b"\x01\x00":
                self.errors.append(f"RX header {mm[b:b + NET_HDR_LEN].hex()}")
            f = b + NET_HDR_LEN
            dst, src, etype, kind, flow, _pad, seq = PROTO.unpack_from(mm, f)
            if etype != ETHERTYPE or dst != self.mac:
                self.foreign += 1  # the host's own IPv6 chatter on the port
                if etype == ETHERTYPE and len(self.errors) < 5:
                    self.errors.append(f"frame for {dst.hex()} from {src.hex()} kind {kind} flow {flow} seq {seq}")
            elif kind == DATA:
                if flow >= FLOWS or seq != self.expect[flow]:
                    self.errors.append(f"flow {flow}: frame {seq}, expected {self.expect[flow:flow + 1]}")
                elif frame_len != PROTO.size + PAYLOAD or \
                        mm[f + PROTO.size:f + PROTO.size + PAYLOAD] != self.blocks[(flow * 17 + seq) % NBLOCKS]:
                    self.errors.append(f"flow {flow}: frame {seq} has wrong bytes ({frame_len} long)")
                else:
                    self.expect[flow] += 1
                    self.bytes_in += PAYLOAD
            elif kind == ACK and flow < FLOWS:
                self.acked[flow] = max(self.acked[flow], seq)
            self.post_rx(i, b)
        if used:
            self.rx.kick()
        return len(used)

    def run(self) -> dict[str, Any]:
        t0 = time.monotonic()
        deadline = t0 + TIME_LIMIT
        while not self.errors:
            work = 0
            for u in self.tx.reap():
                self.tx_free.append(u.token)  # type: ignore[arg-type]
                work += 1
            work += self.receive()
            posted = 0
            for flow in range(FLOWS):  # acknowledgements first: they open the peer's window
                e = self.expect[flow]
                if e - self.last_ack[flow] >= ACK_EVERY or (e == FRAMES_PER_FLOW and self.last_ack[flow] < e):
                    if self.send(ACK, flow, e):
                        self.last_ack[flow] = e
                        posted += 1
            for flow in range(FLOWS):
                while self.sent[flow] < FRAMES_PER_FLOW and self.sent[flow] - self.acked[flow] < WINDOW:
                    s = self.sent[flow]
                    if not self.send(DATA, flow, s, self.blocks[(flow * 17 + s) % NBLOCKS]):
                        break
                    self.sent[flow] += 1
                    self.bytes_out += PAYLOAD
                    posted += 1
            if posted:
                self.tx.kick()
            done = (all(a == FRAMES_PER_FLOW for a in self.acked)
                    and all(e == FRAMES_PER_FLOW for e in self.expect)
                    and all(la == FRAMES_PER_FLOW for la in self.last_ack)
                    and not self.tx.outstanding)
            if done:
                break
            if time.monotonic() > deadline:
                self.errors.append(
                    f"timed out: sent {self.sent} acked {self.acked} received {self.expect}; "
                    f"rx avail {self.rx.avail_idx} used {self.rx.used_idx()} outstanding {len(self.rx.outstanding)}; "
                    f"tx avail {self.tx.avail_idx} used {self.tx.used_idx()} outstanding {len(self.tx.outstanding)}")
                break
            if not work and not posted:
                select.select([self.rx.call_fd], [], [], 0.002)
                try:
                    os.eventfd_read(self.rx.call_fd)
                except BlockingIOError:
                    pass
        return {"seconds": time.monotonic() - t0, "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
                "foreign": self.foreign, "errors": self.errors[:5],
                "rx_outstanding": len(self.rx.outstanding), "tx_outstanding": len(self.tx.outstanding)}


def guest_main(path: str, mac: bytes, peer: bytes, seed: int, out: Connection) -> None:
    g = None
    try:
        g = FakeGuest(path, mac, peer, seed)
        out.send(g.run())
    except BaseException as err:  # the parent reports it
        diag = ""
        if g is not None:
            mm = g.ram.mm
            diag = f" tx.used@{g.tx.used:#x}: {mm[g.tx.used:g.tx.used + 48].hex()} rx.used@{g.rx.used:#x}"
            for name, ring in (("rx", g.rx), ("tx", g.tx)):
                for d in range(ring.size):
                    addr, ln, fl, nx = struct.unpack_from("<QIHH", mm, ring.desc + 16 * d)
                    if addr <= g.tx.used < addr + ln + 4096:
                        diag += f" {name}.desc[{d}]=({addr:#x},{ln},{fl},{nx})"
                for t in range(ring.size * ring.max_indirect):
                    addr, ln, fl, nx = struct.unpack_from("<QIHH", mm, ring.tables + 16 * t)
                    if addr and addr <= g.tx.used < addr + ln + 4096:
                        diag += f" {name}.table[{t // ring.max_indirect}][{t % ring.max_indirect}]=({addr:#x},{ln},{fl},{nx})"
        out.send({"errors": [f"{type(err).__name__}: {err}{diag}"]})


def test_one_gib_each_way_through_netback_tap_and_bridge(tmp_path: Path) -> None:
    assert EACH_WAY >= 1 << 30 or "PYXEN_NET_FAKE_STRESS_MIB" in os.environ
    ctx = multiprocessing.get_context("fork")
    tag = f"{os.getpid() % 10000}"
    vifs = [(f"vif-fake-{n}", f"pxf{tag}{n}", str(tmp_path / f"vif{n}.sock")) for n in "ab"]
    macs = [b"\x02\x00\x00\x00\xaa\x01", b"\x02\x00\x00\x00\xaa\x02"]
    procs: list[Any] = []
    with link_local_bridge(tag=f"f{tag}") as (bridge, _):
        try:
            ready_r, ready_w = ctx.Pipe(duplex=False)
            backend = ctx.Process(target=serve_vifs, args=(vifs, bridge, str(tmp_path / "netback.log"), ready_w),
                                  daemon=True)
            backend.start()
            procs.append(backend)
            assert ready_r.poll(30), "netback did not start"
            assert ready_r.recv() == "ready"
            pipes = []
            for me, (peer_mac, (_, _, path)) in enumerate(zip(reversed(macs), vifs)):
                r, w = ctx.Pipe(duplex=False)
                p = ctx.Process(target=guest_main, args=(path, macs[me], peer_mac, 1234, w), daemon=True)
                p.start()
                procs.append(p)
                pipes.append(r)
            results = []
            for r in pipes:
                assert r.poll(TIME_LIMIT + 60), "a fake guest never reported"
                results.append(r.recv())
            drops = {ifname: {k: int(Path(f"/sys/class/net/{ifname}/statistics/{k}").read_text())
                              for k in ("tx_dropped", "rx_dropped", "tx_packets", "rx_packets")}
                     for _, ifname, _ in vifs}
        finally:
            for p in procs:
                if p.is_alive():
                    p.terminate()
                p.join(10)
                if p.is_alive():
                    p.kill()
    log = (tmp_path / "netback.log").read_text() if (tmp_path / "netback.log").exists() else ""
    for name, res in zip("ab", results):
        assert not res["errors"], (name, res, drops, log[-3000:])
        print(f"guest {name}: {res['bytes_out'] >> 20} MiB out, {res['bytes_in'] >> 20} MiB in, checked, "
              f"in {res['seconds']:.1f} s ({res['bytes_in'] / res['seconds'] / 1e6:.0f} MB/s in), "
              f"{res['foreign']} foreign frames")
        assert res["bytes_in"] >= EACH_WAY and res["bytes_out"] >= EACH_WAY
        assert res["rx_outstanding"] == RX_BUFFERS and res["tx_outstanding"] == 0  # every buffer back
