"""XenbusState and the backend's side of the xenbus handshake (xen/include/public/io/xenbus.h,
docs/xl.md 3.3). Kept apart from the data path: rings never see xenstore, and this module never
sees a ring.

pyxen's mapping of the handshake onto vhost-user: the backend publishes its keys and goes to
InitWait when its vhost-user socket listens; it goes to Connected when the guest's driver is live
(the first ring starts: SET_VRING_KICK after DRIVER_OK); Closing/Closed when the toolstack asks
(online=0 / state=5) or the domain dies.
"""

from __future__ import annotations

import enum


class XenbusState(enum.IntEnum):
    UNKNOWN = 0
    INITIALISING = 1
    INIT_WAIT = 2
    INITIALISED = 3
    CONNECTED = 4
    CLOSING = 5
    CLOSED = 6
    RECONFIGURING = 7
    RECONFIGURED = 8


S = XenbusState
#: Backend transitions pyxen makes. Connected -> InitWait is the guest driver going away while the
#: device stays (guest reboot, backend reconnect); Xen's blkback also re-enters InitWait then.
BACKEND_TRANSITIONS: dict[XenbusState, frozenset[XenbusState]] = {
    S.UNKNOWN: frozenset({S.INITIALISING, S.INIT_WAIT, S.CLOSED}),
    S.INITIALISING: frozenset({S.INIT_WAIT, S.CLOSING, S.CLOSED}),
    S.INIT_WAIT: frozenset({S.CONNECTED, S.CLOSING, S.CLOSED}),
    S.INITIALISED: frozenset({S.CONNECTED, S.CLOSING, S.CLOSED}),
    S.CONNECTED: frozenset({S.INIT_WAIT, S.CLOSING, S.CLOSED}),
    S.CLOSING: frozenset({S.CLOSED}),
    S.CLOSED: frozenset({S.INIT_WAIT}),
    S.RECONFIGURING: frozenset({S.RECONFIGURED, S.CLOSING, S.CLOSED}),
    S.RECONFIGURED: frozenset({S.CONNECTED, S.CLOSING, S.CLOSED}),
}


class XenbusTransitionError(ValueError):
    """A state change the handshake does not allow."""


def check_transition(old: XenbusState, new: XenbusState) -> None:
    """:raise XenbusTransitionError: ``old -> new`` is not in BACKEND_TRANSITIONS."""
    if old != new and new not in BACKEND_TRANSITIONS[old]:
        raise XenbusTransitionError(f"backend state {old.name} -> {new.name} is not allowed")


def parse_state(raw: bytes | None) -> XenbusState:
    try:
        return XenbusState(int(raw or b"0"))
    except ValueError:
        return XenbusState.UNKNOWN
