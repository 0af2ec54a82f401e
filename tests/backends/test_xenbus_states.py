"""The backend's XenbusState table (xen/include/public/io/xenbus.h; the moves of Linux's
netback/blkback): allowed moves pass, the others are refused, and every walk ``path_to`` gives is
made of allowed moves only."""

from __future__ import annotations

import itertools

import pytest

from pyxen.backends.common.xenbus import (BACKEND_TRANSITIONS, XenbusState, XenbusTransitionError,
                                          check_transition, parse_state, path_to)

S = XenbusState


@pytest.mark.parametrize("old,new", [(o, n) for o, ns in BACKEND_TRANSITIONS.items() for n in ns])
def test_allowed_moves_pass(old: XenbusState, new: XenbusState) -> None:
    check_transition(old, new)


@pytest.mark.parametrize("old,new", [
    (S.CONNECTED, S.INIT_WAIT),     # a guest reboot goes through Closing and Closed
    (S.CONNECTED, S.CLOSED),        # closing a live device goes through Closing
    (S.INIT_WAIT, S.CLOSED),
    (S.CLOSING, S.INIT_WAIT),
    (S.CLOSING, S.CONNECTED),
    (S.CLOSED, S.CONNECTED),
    (S.CLOSED, S.INITIALISING),
    (S.INIT_WAIT, S.INITIALISING),
    (S.CONNECTED, S.INITIALISED),
])
def test_bad_moves_are_refused(old: XenbusState, new: XenbusState) -> None:
    with pytest.raises(XenbusTransitionError, match=f"{old.name} -> {new.name} is not allowed"):
        check_transition(old, new)


def test_staying_is_not_a_move() -> None:
    for state in S:
        check_transition(state, state)
        assert path_to(state, state) == []


@pytest.mark.parametrize("old,new,walk", [
    (S.INITIALISING, S.INIT_WAIT, [S.INIT_WAIT]),
    (S.INIT_WAIT, S.CONNECTED, [S.CONNECTED]),
    (S.CONNECTED, S.INIT_WAIT, [S.CLOSING, S.CLOSED, S.INIT_WAIT]),
    (S.CONNECTED, S.CLOSED, [S.CLOSING, S.CLOSED]),
    (S.INIT_WAIT, S.CLOSED, [S.CLOSING, S.CLOSED]),
    (S.INITIALISING, S.CLOSED, [S.CLOSED]),
    (S.CLOSING, S.INIT_WAIT, [S.CLOSED, S.INIT_WAIT]),
    (S.CLOSED, S.CONNECTED, [S.INIT_WAIT, S.CONNECTED]),
    (S.UNKNOWN, S.CONNECTED, [S.INIT_WAIT, S.CONNECTED]),
])
def test_shortest_walks(old: XenbusState, new: XenbusState, walk: list[XenbusState]) -> None:
    assert path_to(old, new) == walk


def test_every_walk_is_made_of_allowed_moves() -> None:
    for old, new in itertools.product(S, S):
        try:
            walk = path_to(old, new)
        except XenbusTransitionError:
            continue
        state = old
        for step in walk:
            check_transition(state, step)
            state = step
        assert state == new


def test_unreachable_is_refused() -> None:
    with pytest.raises(XenbusTransitionError, match="INITIALISING cannot be reached from CONNECTED"):
        path_to(S.CONNECTED, S.INITIALISING)


@pytest.mark.parametrize("raw,state", [(b"4", S.CONNECTED), (None, S.UNKNOWN), (b"", S.UNKNOWN),
                                       (b"9", S.UNKNOWN), (b"x", S.UNKNOWN)])
def test_parse_state(raw: bytes | None, state: XenbusState) -> None:
    assert parse_state(raw) == state
