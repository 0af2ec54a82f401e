"""process.py: the handler table, request by request (op, payload -> reply), in-process."""

import pytest

from pyxen.xenstore.perms import Caller
from pyxen.xenstore.testing import RecordingConnection, memory_daemon
from pyxen.xenstore.wire import Op
from pyxen.xenstore.xenstored import Xenstored

ERR = Op.ERROR


@pytest.fixture
def xs() -> Xenstored:
    return memory_daemon()


@pytest.fixture
def c(xs: Xenstored) -> RecordingConnection:
    return RecordingConnection(xs)


# (setup writes, op, payload, expected reply type, expected payload)
CASES = [
    ([], Op.READ, b"/local/domain/0/name\0", Op.READ, b"Domain-0"),
    ([], Op.READ, b"/nope\0", ERR, b"ENOENT\0"),
    ([], Op.READ, b"/a/\0", ERR, b"EINVAL\0"),
    ([], Op.READ, b"/a\0extra\0", ERR, b"EINVAL\0"),
    ([], Op.READ, b"/a", ERR, b"EINVAL\0"),
    ([], Op.READ, b"@introduceDomain\0", ERR, b"EINVAL\0"),
    ([], Op.WRITE, b"/w\0", Op.WRITE, b"OK\0"),
    ([], Op.WRITE, b"/w", ERR, b"EINVAL\0"),
    ([("/v", b"a\0b")], Op.READ, b"/v\0", Op.READ, b"a\0b"),
    ([("/v", b"")], Op.READ, b"/v\0", Op.READ, b""),
    ([], Op.MKDIR, b"/m/n\0", Op.MKDIR, b"OK\0"),
    ([], Op.RM, b"/\0", ERR, b"EINVAL\0"),
    ([], Op.RM, b"/tool/none\0", Op.RM, b"OK\0"),
    ([], Op.RM, b"/none/none\0", ERR, b"ENOENT\0"),
    ([], Op.DIRECTORY, b"/\0", Op.DIRECTORY, b"tool\0local\0"),
    ([], Op.DIRECTORY, b"/tool/xenstored\0", Op.DIRECTORY, b""),
    ([], Op.DIRECTORY, b"/none\0", ERR, b"ENOENT\0"),
    ([], Op.GET_PERMS, b"/\0", Op.GET_PERMS, b"n0\0"),
    ([("/p", b"")], Op.SET_PERMS, b"/p\0b0\0r5\0", Op.SET_PERMS, b"OK\0"),
    ([("/p", b"")], Op.SET_PERMS, b"/p\0", ERR, b"EINVAL\0"),
    ([("/p", b"")], Op.SET_PERMS, b"/p\0x5\0", ERR, b"EINVAL\0"),
    ([], Op.GET_DOMAIN_PATH, b"999\0", Op.GET_DOMAIN_PATH, b"/local/domain/999\0"),
    ([], Op.IS_DOMAIN_INTRODUCED, b"0\0", Op.IS_DOMAIN_INTRODUCED, b"T\0"),
    ([], Op.IS_DOMAIN_INTRODUCED, b"999\0", Op.IS_DOMAIN_INTRODUCED, b"F\0"),
    ([], Op.RELEASE, b"0\0", ERR, b"EINVAL\0"),
    ([], Op.RELEASE, b"12\0", ERR, b"ENOENT\0"),
    ([], Op.INTRODUCE, b"3\0" b"0\0" b"0\0", ERR, b"EINVAL\0"),
    ([], Op.INTRODUCE, b"3\0" b"0\0" b"1\0", Op.INTRODUCE, b"OK\0"),
    ([], Op.UNWATCH, b"/a\0t\0", ERR, b"ENOENT\0"),
    ([], Op.WATCH, b"/a\0t\0" b"1\0", ERR, b"EINVAL\0"),
    ([], Op.TRANSACTION_END, b"T\0", ERR, b"ENOENT\0"),
    ([], Op.RESET_WATCHES, b"\0", Op.RESET_WATCHES, b"OK\0"),
    ([], Op.RESTRICT, b"1\0", ERR, b"ENOSYS\0"),
    ([], Op.WATCH_EVENT, b"/a\0t\0", ERR, b"ENOSYS\0"),
    ([], Op.ERROR, b"x\0", ERR, b"ENOSYS\0"),
    ([], 99, b"", ERR, b"ENOSYS\0"),
    ([], Op.GET_QUOTA, b"", ERR, b"ENOSYS\0"),
    ([], Op.CONTROL, b"bogus\0", ERR, b"EINVAL\0"),
]


@pytest.mark.parametrize("setup,op,payload,rtype,rpayload", CASES)
def test_request_table(c: RecordingConnection, setup: list, op: int, payload: bytes,
                       rtype: int, rpayload: bytes) -> None:
    for path, value in setup:
        assert c.call(Op.WRITE, path.encode() + b"\0" + value).op == Op.WRITE
    reply = c.call(op, payload)
    assert (reply.op, reply.payload) == (rtype, rpayload)
    assert reply.req_id == c._req


def test_reply_echoes_tx_id_even_for_errors(c: RecordingConnection) -> None:
    tid = int(c.call(Op.TRANSACTION_START, b"\0").payload[:-1])
    r = c.call(Op.READ, b"/nope\0", tx=tid)
    assert (r.op, r.tx_id, r.payload) == (ERR, tid, b"ENOENT\0")
    r = c.call(Op.WRITE, b"/x\0", tx=128)
    assert (r.op, r.tx_id, r.payload) == (ERR, 128, b"ENOENT\0")


def test_nested_transaction_start_is_ebusy(c: RecordingConnection) -> None:
    tid = int(c.call(Op.TRANSACTION_START, b"\0").payload[:-1])
    assert tid != 0
    assert c.call(Op.TRANSACTION_START, b"\0", tx=tid).payload == b"EBUSY\0"
    assert c.call(Op.TRANSACTION_END, b"X\0", tx=tid).payload == b"EINVAL\0"
    assert c.call(Op.TRANSACTION_END, b"F\0", tx=tid).payload == b"OK\0"
    assert c.call(Op.TRANSACTION_END, b"F\0", tx=tid).payload == b"ENOENT\0"


def test_watch_replies_then_fires_initial_event(c: RecordingConnection) -> None:
    out = c.send(Op.WATCH, b"/w\0tok\0")
    assert [p.op for p in out] == [Op.WATCH, Op.WATCH_EVENT]
    assert out[1].payload == b"/w\0tok\0"
    assert c.call(Op.WATCH, b"/w\0tok\0").payload == b"EEXIST\0"


def test_events_precede_the_reply_that_caused_them(c: RecordingConnection) -> None:
    c.send(Op.WATCH, b"/w\0tok\0")
    out = c.send(Op.WRITE, b"/w/x\0v")
    assert [p.op for p in out] == [Op.WATCH_EVENT, Op.WRITE]
    assert out[0].payload == b"/w/x\0tok\0"


def test_transaction_events_only_on_commit(c: RecordingConnection) -> None:
    c.send(Op.WATCH, b"/t\0k\0")
    c.events()
    tid = int(c.call(Op.TRANSACTION_START, b"\0").payload[:-1])
    c.call(Op.WRITE, b"/t/a\0" b"1", tx=tid)
    c.call(Op.WRITE, b"/t/a\0" b"2", tx=tid)
    assert c.events() == []
    out = c.send(Op.TRANSACTION_END, b"T\0", tx=tid)
    assert [p.op for p in out] == [Op.WATCH_EVENT, Op.TRANSACTION_END]
    assert out[0].payload == b"/t/a\0k\0"


def test_conflict_is_eagain_and_invisible(xs: Xenstored, c: RecordingConnection) -> None:
    other = RecordingConnection(xs)
    c.call(Op.WRITE, b"/c\0" b"0")
    tid = int(c.call(Op.TRANSACTION_START, b"\0").payload[:-1])
    assert c.call(Op.READ, b"/c\0", tx=tid).payload == b"0"
    other.call(Op.WRITE, b"/c\0" b"1")
    c.call(Op.WRITE, b"/c\0" b"2", tx=tid)
    c.call(Op.WRITE, b"/c2\0" b"2", tx=tid)
    assert c.call(Op.TRANSACTION_END, b"T\0", tx=tid).payload == b"EAGAIN\0"
    assert c.call(Op.READ, b"/c\0").payload == b"1"
    assert c.call(Op.READ, b"/c2\0").payload == b"ENOENT\0"


def test_rm_fires_watches_on_removed_descendants(c: RecordingConnection) -> None:
    c.call(Op.WRITE, b"/a/b/c\0" b"")
    c.send(Op.WATCH, b"/a/b/c\0deep\0")
    c.send(Op.WATCH, b"/\0root\0")
    c.events()
    c.call(Op.RM, b"/a\0")
    assert sorted(c.events()) == [(b"/a", b"root"), (b"/a/b/c", b"deep")]


def test_relative_watch_reports_relative_path(c: RecordingConnection) -> None:
    c.send(Op.WATCH, b"device\0rel\0")
    assert c.events() == [(b"device", b"rel")]
    c.call(Op.WRITE, b"/local/domain/0/device/vbd\0" b"")
    assert c.events() == [(b"device/vbd", b"rel")]


def test_no_event_on_failure_and_no_event_for_reads(c: RecordingConnection) -> None:
    c.send(Op.WATCH, b"/\0all\0")
    c.events()
    c.call(Op.READ, b"/tool\0")
    c.call(Op.RM, b"/\0")
    c.call(Op.MKDIR, b"/tool\0")  # exists: OK and no event
    assert c.events() == []


def test_reply_too_big_is_e2big_and_directory_part_pages(c: RecordingConnection) -> None:
    names = [f"child-number-{i:04d}" for i in range(400)]
    for n in names:
        c.call(Op.WRITE, f"/big/{n}\0".encode())
    assert c.call(Op.DIRECTORY, b"/big\0").payload == b"E2BIG\0"
    got: list[bytes] = []
    offset = 0
    while True:
        r = c.call(Op.DIRECTORY_PART, f"/big\0{offset}\0".encode())
        assert r.op == Op.DIRECTORY_PART and len(r.payload) <= 4096
        gen, _, rest = r.payload.partition(b"\0")
        chunk = rest.split(b"\0")
        if rest.endswith(b"\0\0"):
            got += chunk[:-2]
            break
        got += chunk[:-1]
        offset += len(rest)
    assert [g.decode() for g in got] == names


def test_introduce_and_release_fire_special_watches(xs: Xenstored,
                                                    c: RecordingConnection) -> None:
    c.send(Op.WATCH, b"@introduceDomain\0i\0")
    c.send(Op.WATCH, b"@releaseDomain\0r\0")
    c.events()
    out = c.send(Op.INTRODUCE, b"4\0" b"0\0" b"1\0")
    assert [p.op for p in out] == [Op.WATCH_EVENT, Op.INTRODUCE]
    assert c.events() == [(b"@introduceDomain", b"i")]
    c.call(Op.INTRODUCE, b"4\0" b"0\0" b"1\0")  # already known: no second event
    assert c.events() == []
    assert c.call(Op.IS_DOMAIN_INTRODUCED, b"4\0").payload == b"T\0"
    c.call(Op.RELEASE, b"4\0")
    assert c.events() == [(b"@releaseDomain", b"r")]
    assert c.call(Op.IS_DOMAIN_INTRODUCED, b"4\0").payload == b"F\0"


def test_unprivileged_connection(xs: Xenstored, c: RecordingConnection) -> None:
    c.call(Op.INTRODUCE, b"5\0" b"0\0" b"1\0")
    c.call(Op.WRITE, b"/local/domain/5\0")
    c.call(Op.SET_PERMS, b"/local/domain/5\0n5\0r0\0")
    u = RecordingConnection(xs, Caller(5, False))
    assert u.call(Op.WRITE, b"data\0" b"1").op == Op.WRITE  # relative: /local/domain/5/data
    assert c.call(Op.GET_PERMS, b"/local/domain/5/data\0").payload == b"n5\0r0\0"
    assert u.call(Op.READ, b"/local/domain/0/name\0").payload == b"EACCES\0"
    assert u.call(Op.WRITE, b"/tool/x\0" b"1").payload == b"EACCES\0"
    assert u.call(Op.INTRODUCE, b"6\0" b"0\0" b"1\0").payload == b"EACCES\0"
    assert u.call(Op.IS_DOMAIN_INTRODUCED, b"6\0").payload == b"EACCES\0"
    assert u.call(Op.SET_PERMS, b"data\0n6\0").payload == b"EPERM\0"
    # a domU is told only about nodes it can read
    u.send(Op.WATCH, b"/\0all\0")
    u.events()
    c.call(Op.WRITE, b"/tool/secret\0" b"1")
    c.call(Op.WRITE, b"/local/domain/5/data\0" b"2")
    assert u.events() == [(b"/local/domain/5/data", b"all")]


def test_unexpected_exception_becomes_eio(monkeypatch: pytest.MonkeyPatch, xs: Xenstored,
                                          c: RecordingConnection) -> None:
    from pyxen.xenstore import process

    def boom(*a: object) -> bytes:
        raise RuntimeError("bug")
    monkeypatch.setitem(process.HANDLERS, Op.READ, boom)
    assert c.call(Op.READ, b"/\0").payload == b"EIO\0"
    assert c.call(Op.DIRECTORY, b"/\0").op == Op.DIRECTORY  # still serving


def test_repeated_read_takes_the_fast_path_and_sees_every_change(
        xs: Xenstored, c: RecordingConnection) -> None:
    """A READ whose path was parsed before is answered by process.fast_read (no Transaction);
    its answer must still follow writes, removals and permission changes at once."""
    c.call(Op.WRITE, b"/f\0" b"1")
    assert c.call(Op.READ, b"/f\0").payload == b"1"  # general path: remembers /f
    assert (0, b"/f\0") in xs.read_paths
    guest = RecordingConnection(xs, Caller(5, False, None))
    assert guest.call(Op.READ, b"/f\0").payload == b"EACCES\0"
    assert guest.call(Op.READ, b"/f\0").payload == b"EACCES\0"  # path known: rights re-checked
    assert xs.read_paths[(5, b"/f\0")] == ("f",)
    assert guest.call(Op.READ, b"/f/\0").payload == b"EINVAL\0"  # invalid: never remembered
    assert (5, b"/f/\0") not in xs.read_paths
    c.call(Op.SET_PERMS, b"/f\0n0\0r5\0")
    assert guest.call(Op.READ, b"/f\0").payload == b"1"
    c.call(Op.WRITE, b"/f\0" b"2")
    r = c.call(Op.READ, b"/f\0")
    assert (r.op, r.req_id, r.tx_id, r.payload) == (Op.READ, c._req, 0, b"2")
    assert guest.call(Op.READ, b"/f\0").payload == b"2"
    c.call(Op.SET_PERMS, b"/f\0n0\0")  # the guest loses read access: fast path must not answer
    assert guest.call(Op.READ, b"/f\0").payload == b"EACCES\0"
    c.call(Op.RM, b"/f\0")
    assert c.call(Op.READ, b"/f\0").payload == b"ENOENT\0"


def test_remembered_relative_read_paths_are_per_domain(xs: Xenstored) -> None:
    """A relative READ resolves under the caller's own /local/domain/N: the remembered parse
    is keyed by domid, so domain 2 never gets domain 1's node."""
    dom0 = RecordingConnection(xs)
    for domid in (1, 2):
        dom0.call(Op.WRITE, b"/local/domain/%d/name\0d%d" % (domid, domid))
        dom0.call(Op.SET_PERMS, b"/local/domain/%d/name\0n%d\0" % (domid, domid))
    one, two = (RecordingConnection(xs, Caller(d, False, None)) for d in (1, 2))
    for _ in range(2):  # second time round: fast path
        assert one.call(Op.READ, b"name\0").payload == b"d1"
        assert two.call(Op.READ, b"name\0").payload == b"d2"


def test_fast_read_keeps_transactions_and_size_limit_exact(c: RecordingConnection) -> None:
    c.call(Op.WRITE, b"/t\0" b"old")
    c.call(Op.READ, b"/t\0")
    tid = int(c.call(Op.TRANSACTION_START, b"\0").payload[:-1])
    c.call(Op.WRITE, b"/t\0" b"new", tx=tid)
    r = c.call(Op.READ, b"/t\0", tx=tid)  # in the transaction: its own view, its tx_id
    assert (r.payload, r.tx_id) == (b"new", tid)
    assert c.call(Op.READ, b"/t\0").payload == b"old"
    c.call(Op.TRANSACTION_END, b"F\0", tx=tid)
    assert c.call(Op.READ, b"/t\0", tx=tid).payload == b"ENOENT\0"


def test_fast_read_writes_the_same_access_log_line(caplog: pytest.LogCaptureFixture) -> None:
    """With reads logged (access_log_reads), the fast path logs them as the general path
    does; without, neither does."""
    from pyxen.xenstore.config import XenstoredConfig
    for log_reads, lines in ((True, 2), (False, 0)):
        c = RecordingConnection(memory_daemon(XenstoredConfig(access_log_reads=log_reads)))
        with caplog.at_level("INFO", logger="pyxen.xenstore.access"):
            caplog.clear()
            for _ in range(2):  # general path, then fast path
                assert c.call(Op.READ, b"/local/domain/0/name\0").payload == b"Domain-0"
        got = [r.getMessage() for r in caplog.records if r.name == "pyxen.xenstore.access"]
        assert len(got) == lines
        assert len(set(got)) <= 1 and all("READ" in g and "OK" in g for g in got)
