"""netback's ring work: frames between the TAP fd and the guest's virtqueues.

TX (queue 1, guest -> bridge): each chain is header + frame; the frame goes to the TAP with one
``writev`` straight from guest memory. RX (queue 0, bridge -> guest): while the guest has posted
buffers, ``readv`` one frame from the TAP straight into the buffer after a 12-byte header. When
the guest has no buffer left the TAP reader is paused (the kernel queues frames) until the
guest posts more and kicks queue 0 -- netback's "rx ring full, stop the queue".
"""

from __future__ import annotations

import asyncio
import logging
import os

from ..common.transport import VhostUserSession
from ..common.virtqueue import Virtqueue
from . import NET_HDR_LEN, RX_QUEUE

log = logging.getLogger(__name__)

#: Frames moved per TAP readiness callback before yielding to the loop (fairness between vifs).
RX_BATCH = 64
_RX_HDR = bytes(10) + b"\x01\x00"  # flags, gso_type, hdr_len, gso_size, csum_start/offset = 0; num_buffers = 1


class NetHandler:
    def __init__(self, tap: int) -> None:
        self.tap = tap
        self.session: VhostUserSession | None = None
        self.reading = False
        self.stats = {"tx": 0, "rx": 0, "tx_drop": 0}

    # ---- TX ---------------------------------------------------------------------------
    def transmit(self, vq: Virtqueue) -> int:
        done = 0
        while (chain := vq.pop()) is not None:
            views = chain.readable
            skip = NET_HDR_LEN
            while views and skip:
                if len(views[0]) <= skip:
                    skip -= len(views[0])
                    views = views[1:]
                else:
                    views = [views[0][skip:]] + views[1:]
                    skip = 0
            try:
                os.writev(self.tap, views)
                self.stats["tx"] += 1
            except OSError:  # TAP down or queue full: drop, as a NIC would
                self.stats["tx_drop"] += 1
            chain.release()
            vq.push(chain.head, 0)
            done += 1
        return done

    # ---- RX ---------------------------------------------------------------------------
    def attach(self, session: VhostUserSession) -> None:
        self.session = session
        self._start_reading()

    def detach(self) -> None:
        self._stop_reading()
        self.session = None

    def _start_reading(self) -> None:
        if not self.reading and self.session is not None:
            self.session.loop.add_reader(self.tap, self._tap_readable)
            self.reading = True

    def _stop_reading(self) -> None:
        if self.reading:
            try:
                asyncio.get_event_loop().remove_reader(self.tap)
            except (ValueError, OSError, RuntimeError):
                pass
            self.reading = False

    def rx_buffers_posted(self, session: VhostUserSession) -> int:
        """The guest kicked the RX queue: it posted buffers; resume reading the TAP."""
        self.session = session
        self._start_reading()
        self._tap_readable()
        return 0

    def _tap_readable(self) -> None:
        session = self.session
        vq = session.ring_ready(RX_QUEUE) if session is not None else None
        if vq is None:
            self._drain_drop()
            return
        done = 0
        for _ in range(RX_BATCH):
            if not vq.pending():
                self._stop_reading()  # no buffers: let the kernel queue until the next kick
                break
            chain = vq.pop()
            if chain is None:
                break
            hdr, rest = chain.writable[0], chain.writable
            if len(hdr) >= NET_HDR_LEN:
                hdr[:NET_HDR_LEN] = _RX_HDR
                body = ([hdr[NET_HDR_LEN:]] if len(hdr) > NET_HDR_LEN else []) + rest[1:]
            else:  # header split over descriptors: not seen from Linux; copy slowly
                body = []
                need = NET_HDR_LEN
                for v in rest:
                    if need >= len(v):
                        v[:] = _RX_HDR[NET_HDR_LEN - need:NET_HDR_LEN - need + len(v)]
                        need -= len(v)
                    elif need:
                        v[:need] = _RX_HDR[NET_HDR_LEN - need:]
                        body.append(v[need:])
                        need = 0
                    else:
                        body.append(v)
            try:
                n = os.readv(self.tap, body)
            except BlockingIOError:
                vq.last_avail = (vq.last_avail - 1) & 0xFFFF  # give the buffer back unused
                chain.release()
                break
            chain.release()
            vq.push(chain.head, NET_HDR_LEN + n)
            self.stats["rx"] += 1
            done += 1
        if done and session is not None:
            session.signal(RX_QUEUE)

    def _drain_drop(self) -> None:
        """No live RX ring: drop what the bridge sends, as a vif whose frontend is down."""
        for _ in range(RX_BATCH):
            try:
                os.read(self.tap, 65536)
            except OSError:
                return
