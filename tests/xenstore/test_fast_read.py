"""Property test: process.fast_read answers exactly as the general READ path does.

Two daemons get the same random requests: in one, READs take the fast path whenever their
path was parsed before (the daemon as it runs); in the other the parsed-path memo never keeps
anything, so every READ goes through the handler table and a Transaction.  Writes, removals
and permission changes from Dom0 are interleaved with READs from Dom0, guests and a guest
with a SET_TARGET target, with valid, relative, malformed and non-ASCII paths.  Every reply
(type, ids, payload) must be the same, READ twice in a row included (the second one is the
fast path's case).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pyxen.xenstore.perms import Caller
from pyxen.xenstore.testing import RecordingConnection, memory_daemon
from pyxen.xenstore.wire import Op
from pyxen.xenstore.xenstored import Xenstored


class NoMemo(dict):  # type: ignore[type-arg]
    """A read_paths that forgets: process.fast_read never finds a parsed path."""

    def __setitem__(self, key: Any, value: Any) -> None:
        pass


CALLERS = [Caller(0, True), Caller(1, False), Caller(2, False), Caller(3, False, 1)]
NAMES = ["a", "b", "name", "local", "domain", "1", "2"]
path_text = st.one_of(
    st.lists(st.sampled_from(NAMES), min_size=0, max_size=4).map(lambda p: "/" + "/".join(p)),
    st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map("/".join),  # relative
    st.sampled_from(["/local/domain/1/a", "/local/domain/2/name", "a/", "//a", "/a/", "",
                     "@releaseDomain", "/a b", "/a\u00e9", "/" + "x" * 3100]),
)
read_payload = st.one_of(
    path_text.map(lambda p: p.encode("utf-8") + b"\0"),
    st.sampled_from([b"/a", b"/a\0\0", b"/a\0b\0", b"\0", b"", b"/\xff\0"]),
)
perm = st.tuples(st.sampled_from("nrwb"), st.integers(0, 3)).map(lambda t: f"{t[0]}{t[1]}")
request = st.one_of(
    st.tuples(st.just("read"), st.integers(0, len(CALLERS) - 1), read_payload),
    st.tuples(st.just("write"), path_text, st.binary(max_size=8)),
    st.tuples(st.just("rm"), path_text, st.none()),
    st.tuples(st.just("perms"), path_text, st.lists(perm, min_size=1, max_size=3)),
)


def _daemons() -> tuple[Xenstored, Xenstored]:
    fast, general = memory_daemon(), memory_daemon()
    general.read_paths = NoMemo()
    return fast, general


def _reply(c: RecordingConnection, op: int, payload: bytes) -> tuple[int, int, int, bytes]:
    r = c.call(op, payload)
    return (r.op, r.req_id, r.tx_id, r.payload)


@settings(max_examples=60, deadline=None)
@given(st.lists(request, min_size=1, max_size=20))
def test_fast_read_answers_as_the_general_path(reqs: list[tuple[Any, Any, Any]]) -> None:
    fast, general = _daemons()
    conns = [[RecordingConnection(xs, caller) for caller in CALLERS] for xs in (fast, general)]
    for xs in (fast, general):
        RecordingConnection(xs).call(Op.SET_TARGET, b"3\x001\0")
    for kind, a, b in reqs:
        if kind == "read":
            for _ in range(2):  # the second READ of a path is the fast path's case
                got = [_reply(cs[a], Op.READ, b) for cs in conns]
                assert got[0] == got[1], (CALLERS[a], b)
        else:
            path = a.encode("utf-8") + b"\0"
            if kind == "write":
                op, payload = Op.WRITE, path + b
            elif kind == "rm":
                op, payload = Op.RM, path
            else:
                op, payload = Op.SET_PERMS, path + b"".join(p.encode() + b"\0" for p in b)
            got = [_reply(cs[0], op, payload) for cs in conns]
            assert got[0] == got[1], (op, payload)
    assert not general.read_paths  # the reference never took the fast path
