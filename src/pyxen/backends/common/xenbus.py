"""XenbusState and the backend's side of the xenbus handshake (xen/include/public/io/xenbus.h,
docs/xl.md 3.3). Kept apart from the data path: rings never see xenstore, and this module never
sees a ring.

pyxen's mapping of the handshake onto vhost-user: the backend publishes its keys and goes to
InitWait when its vhost-user socket listens; it goes to Connected when the guest's driver is live
(the first ring starts: SET_VRING_KICK after DRIVER_OK); when the driver goes away (guest reboot,
QEMU gone) it walks Connected -> Closing -> Closed -> InitWait, as Linux's blkback and netback do
when their frontend closes while the device stays online; Closing/Closed when the toolstack asks
(``online=0``) or the domain dies.

Transitions are strict: ``check_transition`` refuses any move not in ``BACKEND_TRANSITIONS``, and
the daemon never asks for one directly: it names the state it wants and ``path_to`` gives the
shortest walk through allowed moves (netback's ``set_backend_state`` does the same).
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Protocol


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
#: The backend's moves, from the diagram in Linux's xen-netback/xenbus.c (blkback makes the same
#: ones): Initialising -> InitWait -> Connected; Closing only after InitWait or Connected; Closed
#: <-> Closing; a Closed device that stays online may go back to InitWait (reconnect). Unknown (0:
#: the node is missing or unreadable) behaves as Initialising. Connected never goes straight back
#: to InitWait or to Closed: a frontend that goes away takes Connected -> Closing -> Closed first.
BACKEND_TRANSITIONS: dict[XenbusState, frozenset[XenbusState]] = {
    S.UNKNOWN: frozenset({S.INITIALISING, S.INIT_WAIT, S.CLOSING, S.CLOSED}),
    S.INITIALISING: frozenset({S.INIT_WAIT, S.CLOSING, S.CLOSED}),
    S.INIT_WAIT: frozenset({S.CONNECTED, S.CLOSING}),
    S.INITIALISED: frozenset({S.CONNECTED, S.CLOSING}),
    S.CONNECTED: frozenset({S.CLOSING, S.RECONFIGURING}),
    S.CLOSING: frozenset({S.CLOSED}),
    S.CLOSED: frozenset({S.INIT_WAIT, S.CLOSING}),
    S.RECONFIGURING: frozenset({S.RECONFIGURED, S.CLOSING}),
    S.RECONFIGURED: frozenset({S.CONNECTED, S.CLOSING}),
}

#: What the backend writes as the frontend's state on the guest's behalf (its virtio driver does
#: not speak xenbus) when the backend itself reaches a state: the frontend leads a reconnect
#: (Closed -> Initialising) and follows a close (Closing, Closed), as blkfront/netfront do.
FRONTEND_FOLLOWS: dict[XenbusState, XenbusState] = {
    S.CONNECTED: S.CONNECTED,
    S.CLOSING: S.CLOSING,
    S.CLOSED: S.CLOSED,
}


class XenbusTransitionError(ValueError):
    """A state change the handshake does not allow."""


def check_transition(old: XenbusState, new: XenbusState) -> None:
    """:raise XenbusTransitionError: ``old -> new`` is not in BACKEND_TRANSITIONS (staying in
    the same state is not a transition and is allowed)."""
    if old != new and new not in BACKEND_TRANSITIONS[old]:
        raise XenbusTransitionError(f"backend state {old.name} -> {new.name} is not allowed")


def path_to(old: XenbusState, new: XenbusState) -> list[XenbusState]:
    """The shortest walk of allowed moves from ``old`` to ``new``, without ``old``: empty when
    they are equal.

    :raise XenbusTransitionError: ``new`` cannot be reached from ``old`` (e.g. back to
        Initialising).
    """
    if old == new:
        return []
    came_from: dict[XenbusState, XenbusState] = {old: old}
    todo = deque([old])
    while todo:
        state = todo.popleft()
        for nxt in sorted(BACKEND_TRANSITIONS[state]):
            if nxt in came_from:
                continue
            came_from[nxt] = state
            if nxt == new:
                walk = [new]
                while came_from[walk[-1]] != old:
                    walk.append(came_from[walk[-1]])
                return walk[::-1]
            todo.append(nxt)
    raise XenbusTransitionError(f"backend state {new.name} cannot be reached from {old.name}")


def parse_state(raw: bytes | None) -> XenbusState:
    """A ``state`` node's value; missing or not a XenbusState reads as Unknown."""
    try:
        return XenbusState(int(raw or b"0"))
    except ValueError:
        return XenbusState.UNKNOWN


class BackendNode(Protocol):
    """What a device type's xenbus side reads to set a device up: the device's identity and its
    backend keys. The daemon's DeviceBackend is one; so is a dict in a test."""

    domid: int
    devid: int

    async def read(self, key: str, default: str = "") -> str:
        """The backend key ``key`` (relative to the device's backend directory), or ``default``."""
        ...
