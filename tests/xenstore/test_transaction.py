"""transaction.py: snapshot isolation, conflict detection, replay, quota accounting."""

import pytest

from pyxen.xenstore.config import XenstoredConfig
from pyxen.xenstore.errors import (Conflict, InvalidArgument, NoEntry, NotPermitted,
                                   PermissionDenied, QuotaExceeded)
from pyxen.xenstore.perms import DOM0, Caller, PermEntry
from pyxen.xenstore.store import Store, split
from pyxen.xenstore.transaction import Transaction

CFG = XenstoredConfig()


def op(store: Store, caller: Caller = DOM0) -> Transaction:
    return Transaction(store, 0, caller, CFG)


def do(store: Store, fn: str, path: str, *args: object, caller: Caller = DOM0) -> object:
    t = op(store, caller)
    result = getattr(t, fn)(split(path), *args)
    t.commit()
    return result


def test_write_creates_parents_with_inherited_perms() -> None:
    s = Store()
    do(s, "write", "/a/b/c", b"v")
    assert s.read("/a/b/c") == b"v"
    assert s.read("/a") == b""
    t = op(s)
    assert t.get_perms(split("/a/b")) == (PermEntry("n", 0),)


def test_domu_created_nodes_are_owned_by_the_domu() -> None:
    s = Store()
    do(s, "write", "/local/domain/5", b"")
    do(s, "set_perms", "/local/domain/5", (PermEntry("n", 5),))
    dom5 = Caller(5, False)
    do(s, "write", "/local/domain/5/x/y", b"1", caller=dom5)
    assert op(s).get_perms(split("/local/domain/5/x/y"))[0] == PermEntry("n", 5)
    assert s.owned[5] == 3  # domain/5 itself plus x and y


def test_unprivileged_denied_and_existence_hidden() -> None:
    s = Store()
    do(s, "write", "/secret/a", b"1")
    dom5 = Caller(5, False)
    with pytest.raises(PermissionDenied):
        do(s, "read", "/secret/a", caller=dom5)
    with pytest.raises(PermissionDenied):  # missing, but the parent is unreadable
        do(s, "read", "/secret/nope", caller=dom5)
    with pytest.raises(PermissionDenied):
        do(s, "write", "/secret/b", b"", caller=dom5)
    with pytest.raises(NoEntry):
        do(s, "read", "/secret/nope")


def test_only_privileged_may_change_owner() -> None:
    s = Store()
    do(s, "write", "/d", b"")
    do(s, "set_perms", "/d", (PermEntry("n", 5),))
    dom5 = Caller(5, False)
    do(s, "set_perms", "/d", (PermEntry("r", 5), PermEntry("w", 6)), caller=dom5)
    with pytest.raises(NotPermitted):
        do(s, "set_perms", "/d", (PermEntry("b", 6),), caller=dom5)


def test_rm_rules() -> None:
    s = Store()
    do(s, "write", "/a/b", b"")
    do(s, "rm", "/a/nothing")  # missing node, parent exists: OK
    with pytest.raises(NoEntry):
        do(s, "rm", "/nothing/x")
    with pytest.raises(InvalidArgument):
        do(s, "rm", "/")
    do(s, "rm", "/a")
    assert s.read("/a/b") is None


def test_transaction_isolation_and_commit() -> None:
    s = Store()
    t = Transaction(s, 1, DOM0, CFG)
    t.write(split("/x"), b"1")
    assert s.read("/x") is None
    assert t.read(split("/x")) == b"1"
    changes = t.commit()
    assert s.read("/x") == b"1"
    assert [c.path for c in changes] == ["/x"]


def test_snapshot_conflict_like_pyxs_commit_retry() -> None:
    s = Store()
    do(s, "write", "/foo/bar", b"0")
    t = Transaction(s, 1, DOM0, CFG)
    do(s, "write", "/foo/bar", b"outside")
    t.write(split("/foo/bar"), b"inside")
    with pytest.raises(Conflict):
        t.commit()
    assert s.read("/foo/bar") == b"outside"


def test_ta_err_read_then_outside_write_conflicts() -> None:
    s = Store()
    do(s, "write", "/t/a", b"a")
    t = Transaction(s, 1, DOM0, CFG)
    assert t.read(split("/t/a")) == b"a"
    do(s, "write", "/t/a", b"b")
    assert t.read(split("/t/a")) == b"a"
    t.write(split("/t/a"), b"c")
    with pytest.raises(Conflict):
        t.commit()
    assert s.read("/t/a") == b"b"


def test_disjoint_transactions_both_commit() -> None:
    s = Store()
    do(s, "write", "/p/a", b"")
    do(s, "write", "/p/b", b"")
    t1 = Transaction(s, 1, DOM0, CFG)
    t2 = Transaction(s, 2, DOM0, CFG)
    t1.write(split("/p/a"), b"1")
    t2.write(split("/p/b"), b"2")
    t1.commit()
    t2.commit()  # replayed onto the new root
    assert (s.read("/p/a"), s.read("/p/b")) == (b"1", b"2")


def test_events_deduplicated_per_node() -> None:
    s = Store()
    t = Transaction(s, 1, DOM0, CFG)
    t.write(split("/x"), b"1")
    t.write(split("/x"), b"2")
    t.write(split("/y"), b"3")
    assert [c.path for c in t.commit()] == ["/x", "/y"]


def test_node_quota_and_transaction_accounting() -> None:
    cfg = CFG.replace(quota_nodes=3)
    s = Store()
    do(s, "write", "/local/domain/5", b"")
    do(s, "set_perms", "/local/domain/5", (PermEntry("n", 5),))
    dom5 = Caller(5, False)
    t = Transaction(s, 0, dom5, cfg)
    t.write(split("/local/domain/5/a"), b"")
    t.commit()
    t = Transaction(s, 0, dom5, cfg)
    t.write(split("/local/domain/5/b"), b"")
    t.commit()
    t = Transaction(s, 0, dom5, cfg)
    with pytest.raises(QuotaExceeded):
        t.write(split("/local/domain/5/c"), b"")
    do(s, "rm", "/local/domain/5/a")
    assert s.owned[5] == 2


def test_node_size_quota_for_domu_only() -> None:
    s = Store()
    do(s, "write", "/local/domain/5", b"")
    do(s, "set_perms", "/local/domain/5", (PermEntry("n", 5),))
    t = Transaction(s, 0, Caller(5, False), CFG)
    with pytest.raises(QuotaExceeded):
        t.write(split("/local/domain/5/big"), b"x" * 2048)
    do(s, "write", "/big", b"x" * 4000)  # Dom0 is not limited
