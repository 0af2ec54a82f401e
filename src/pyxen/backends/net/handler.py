"""netback's ring work: frames between the TAP fd and the guest's virtqueues.

TX (queue 1, guest -> bridge): each chain is header + frame; the frame goes to the TAP with one
``writev`` straight from guest memory. With a ``rate`` (credit.py, Xen's credit-based limit) a
frame that finds too little credit stays in the ring: the chain is given back unused and a timer
on the event loop resumes the queue when the next window opens. RX (queue 0, bridge -> guest): while the guest has posted
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
from . import NET_HDR_LEN, RX_QUEUE, TX_QUEUE
from .credit import TxCredit

log = logging.getLogger(__name__)

#: Frames moved per TAP readiness callback before yielding to the loop (fairness between vifs).
RX_BATCH = 64
_RX_HDR = bytes(10) + b"\x01\x00"  # flags, gso_type, hdr_len, gso_size, csum_start/offset = 0; num_buffers = 1


class NetHandler:
    def __init__(self, tap: int, rate: tuple[int, int] | None = None) -> None:
        """``rate``: the vif's (bytes per interval, interval in microseconds), or None."""
        self.tap = tap
        self.session: VhostUserSession | None = None
        self.reading = False
        self.stats = {"tx": 0, "rx": 0, "tx_drop": 0, "rx_error": 0, "tx_rate_limited": 0}
        self.rate = rate
        self.credit: TxCredit | None = None
        self._credit_timer: asyncio.TimerHandle | None = None

    # ---- TX ---------------------------------------------------------------------------
    def transmit(self, vq: Virtqueue, session: VhostUserSession | None = None) -> int:
        """Send the available TX chains to the TAP (all of them, or, rate-limited, as many as
        the credit allows); return how many were used."""
        done = 0
        loop = session.loop if session is not None else None
        if self.rate is not None and self.credit is None and loop is not None:
            self.credit = TxCredit(self.rate[0], self.rate[1], loop.time())
        while (chain := vq.pop()) is not None:
            if self.credit is not None and loop is not None and session is not None:
                size = chain.readable_len - NET_HDR_LEN
                resume = self.credit.delay(max(size, 0), loop.time())
                if resume is not None:
                    vq.unpop(chain)
                    self.stats["tx_rate_limited"] += 1
                    if self._credit_timer is None:
                        self._credit_timer = loop.call_at(resume, self._credit_due, session)
                    break
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

    def set_rate(self, rate: tuple[int, int] | None) -> None:
        """A new limit, applied at once as Linux's xen_net_rate_changed does: the interval's
        bytes and length change and the credit left is one full interval's; None lifts the
        limit (a queue waiting for its timer goes on when it fires). The same rate again
        changes nothing."""
        if rate == self.rate:
            return
        self.rate = rate
        if rate is None:
            self.credit = None
        elif self.credit is not None:
            self.credit.credit_bytes, self.credit.credit_usec = rate
            self.credit.remaining = rate[0]

    def _credit_due(self, session: VhostUserSession) -> None:
        """The credit timer: the next window opened; send what waits in the TX ring."""
        self._credit_timer = None
        if self.credit is not None and self.credit.timer is not None:
            self.credit.timer_fired(session.loop.time())
        vq = session.ring_ready(TX_QUEUE)
        if vq is None:
            return
        try:
            if self.transmit(vq, session) and vq.needs_interrupt():
                session.signal(TX_QUEUE)
        except (VirtqueueError, GuestMemoryError) as err:
            session.ring_failed(TX_QUEUE, err)

    def cancel_credit_timer(self) -> None:
        if self._credit_timer is not None:
            self._credit_timer.cancel()
            self._credit_timer = None

    # ---- RX ---------------------------------------------------------------------------
    def attach(self, session: VhostUserSession) -> None:
        self.session = session
        self._start_reading()

    def detach(self) -> None:
        self._stop_reading()
        self.cancel_credit_timer()
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
