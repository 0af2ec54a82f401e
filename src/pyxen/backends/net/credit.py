"""netback's transmit rate limit: Xen's credit scheduler for a vif (Linux drivers/net/xen-netback
netback.c, ``tx_add_credit`` / ``tx_credit_exceeded``; the vif's ``rate`` backend node,
"<bytes>,<usecs>", read as ``xen_net_read_rate`` reads it).

The guest's transmit path spends credit: each frame costs its length in bytes. Every
``credit_usec`` the credit is topped up by ``credit_bytes``, capped at max(128 KiB,
``credit_bytes``) so a burst never exceeds one jumbo frame's worth beyond the rate. A frame
larger than the credit left stays in the guest's ring (it is not dropped): the queue stops until
the next window opens, when a timer refills the credit and transmission resumes. So a guest
sending as fast as it can gets ``credit_bytes`` per ``credit_usec`` on average, as on Xen.

Pure (the clock is the caller's): NetHandler asks ``delay`` before each frame and arms its
event loop's timer with the answer.
"""

from __future__ import annotations

#: tx_add_credit: allow a burst big enough for a 128 KiB jumbo packet.
MIN_BURST = 131072


class TxCredit:
    """One vif's transmit credit (xenvif_queue's remaining_credit, credit_window_start)."""

    def __init__(self, credit_bytes: int, credit_usec: int, now: float) -> None:
        self.credit_bytes = credit_bytes
        self.credit_usec = credit_usec
        self.remaining = credit_bytes
        self.window_start = now
        #: The time the stopped queue may go on (a pending credit timer), else None.
        self.timer: float | None = None

    @property
    def _window(self) -> float:
        return self.credit_usec / 1e6

    def add_credit(self) -> None:
        """tx_add_credit: one interval's bytes more, capped at the burst size."""
        max_burst = max(MIN_BURST, self.credit_bytes)
        self.remaining = min(self.remaining + self.credit_bytes, max_burst)

    def delay(self, size: int, now: float) -> float | None:
        """Before sending a frame of ``size`` bytes: None if it may go now (its cost is taken),
        else the time at which to try again (the queue stops until then)."""
        if self.timer is not None:
            if now < self.timer:
                return self.timer
            self.timer_fired(now)
        if self.remaining < size:
            next_credit = self.window_start + self._window
            if now >= next_credit:
                self.window_start = now
                self.add_credit()
            if size > self.remaining:
                self.timer = next_credit if next_credit > now else now + self._window
                self.window_start = self.timer
                return self.timer
        self.remaining -= size
        return None

    def timer_fired(self, now: float) -> None:
        """tx_credit_callback: the window opened; refill and let the queue go on."""
        self.timer = None
        self.add_credit()


__all__ = ["MIN_BURST", "TxCredit"]
