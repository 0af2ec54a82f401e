"""netback's ring work: frames between the TAP fd and the guest's virtqueues.

TX (queue 1, guest -> bridge): each chain is header + frame; the frame goes to the TAP with one
``writev`` straight from guest memory. RX (queue 0, bridge -> guest): while the guest has posted
buffers, ``readv`` one frame from the TAP straight into the buffer after a 12-byte header. When
the guest has no buffer left the TAP reader is paused (the kernel queues frames) until the
guest posts more and kicks queue 0 -- netback's "rx ring full, stop the queue".

Every chain taken from a ring ends in exactly one of two ways before the callback returns: it is
used (``push``), or, for an RX buffer with no frame to put in it yet, given back unused
(``Virtqueue.unpop``). The RX path runs from two callbacks (the TAP's readiness and the RX
kick) on the one event loop, so nothing is ever held across them, and a ring stopped between
two callbacks (GET_VRING_BASE, a new memory table) has nothing in flight.
"""

from __future__ import annotations

import asyncio
import logging
import os

from ..common.memory import GuestMemoryError
from ..common.transport import VhostUserSession
from ..common.virtqueue import Chain, Virtqueue, VirtqueueError, split_views
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
        self.stats = {"tx": 0, "rx": 0, "tx_drop": 0, "rx_error": 0}

    # ---- TX ---------------------------------------------------------------------------
    def transmit(self, vq: Virtqueue) -> int:
        """Send every available TX chain to the TAP; return how many were used."""
        done = 0
        while (chain := vq.pop()) is not None:
            try:
                _, frame = split_views(chain.readable, NET_HDR_LEN)
                os.writev(self.tap, frame)
                self.stats["tx"] += 1
            except OSError:  # TAP down or queue full: drop, as a NIC would
                self.stats["tx_drop"] += 1
            finally:
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

    @staticmethod
    def _rx_body(chain: Chain) -> list[memoryview] | None:
        """Write the virtio-net header at the start of the buffer; return the views after it
        (None: the buffer cannot even hold the header, a driver bug)."""
        if chain.writable_len < NET_HDR_LEN:
            return None
        hdr = chain.writable[0]
        if len(hdr) >= NET_HDR_LEN:  # Linux: one buffer for header and frame
            hdr[:NET_HDR_LEN] = _RX_HDR
            return ([hdr[NET_HDR_LEN:]] if len(hdr) > NET_HDR_LEN else []) + chain.writable[1:]
        head, body = split_views(chain.writable, NET_HDR_LEN)
        done = 0
        for v in head:
            v[:] = _RX_HDR[done:done + len(v)]
            done += len(v)
        return body

    def _tap_readable(self) -> None:
        session = self.session
        vq = session.ring_ready(RX_QUEUE) if session is not None else None
        if session is None or vq is None:
            # The ring is started but not yet enabled (SET_VRING_ENABLE follows the kick) or
            # was disabled: leave the frames in the TAP's queue, as vhost-net does; enabling
            # the ring kicks it and reading resumes. The kernel drops what overflows the queue.
            self._stop_reading()
            return
        done = 0
        try:
            for _ in range(RX_BATCH):
                chain = vq.pop()
                if chain is None:
                    self._stop_reading()  # no buffers: let the kernel queue until the next kick
                    break
                body = self._rx_body(chain)
                if body is None:
                    chain.release()
                    vq.push(chain.head, 0)
                    self.stats["rx_error"] += 1
                    done += 1
                    continue
                try:
                    n = os.readv(self.tap, body)
                except BlockingIOError:  # no frame for this buffer: it stays the guest's, unused
                    vq.unpop(chain)
                    break
                except OSError as err:  # TAP gone or detached: keep the buffer, stop reading
                    vq.unpop(chain)
                    log.warning("%s: TAP read failed: %s", session.device.name, err)
                    self._stop_reading()
                    break
                chain.release()
                vq.push(chain.head, NET_HDR_LEN + n)
                self.stats["rx"] += 1
                done += 1
        except (VirtqueueError, GuestMemoryError) as err:
            self._stop_reading()
            session.ring_failed(RX_QUEUE, err)
        finally:
            if done:
                session.signal(RX_QUEUE)
