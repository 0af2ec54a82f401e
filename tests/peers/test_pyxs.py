"""pyxs 0.4.1 (a pure-Python xenstore client written by others) against our daemon."""

from __future__ import annotations

import errno
import threading

import pytest
from pyxs import Client, PyXSError
from pyxs.connection import UnixSocketConnection
from pyxs.client import Router

from pyxen.xenstore.testing import DaemonProcess

pytestmark = pytest.mark.integration


def client(daemon: DaemonProcess) -> Client:
    return Client(router=Router(UnixSocketConnection(str(daemon.socket))))


def test_basic_io(daemon: DaemonProcess, base: str) -> None:
    b = base.encode()
    with client(daemon) as c:
        c.write(b + b"/x", b"1")
        assert c.read(b + b"/x") == b"1"
        assert c[b + b"/x"] == b"1"
        c.mkdir(b + b"/dir")
        assert set(c.list(b)) == {b"x", b"dir"}
        assert c.read(b + b"/dir") == b""
        assert c.exists(b + b"/x") and not c.exists(b + b"/nope")
        c.delete(b + b"/x")
        with pytest.raises(PyXSError) as info:
            c.read(b + b"/x")
        assert info.value.args[0] == errno.ENOENT
        assert c.read(b"/local") == b""
        assert c.list(b + b"/dir") == []


def test_perms(daemon: DaemonProcess, base: str) -> None:
    b = base.encode()
    with client(daemon) as c:
        c.mkdir(b"/" + base.replace("/", "-").encode())
        assert c.get_perms(b"/" + base.replace("/", "-").encode()) == [b"n0"]
        c.write(b + b"/p", b"v")
        c.set_perms(b + b"/p", [b"b0", b"n0", b"r0"])
        assert c.get_perms(b + b"/p") == [b"b0", b"n0", b"r0"]


def test_domains(daemon: DaemonProcess) -> None:
    with client(daemon) as c:
        assert c.get_domain_path(0) == b"/local/domain/0"
        assert c.get_domain_path(999) == b"/local/domain/999"
        for domid in c.list(b"/local/domain"):
            assert c.is_domain_introduced(int(domid))
        assert not c.is_domain_introduced(999)


def test_transactions_commit_rollback_and_forced_conflict(daemon: DaemonProcess,
                                                          base: str) -> None:
    b = base.encode()
    with client(daemon) as c, client(daemon) as other:
        c.transaction()
        c.write(b + b"/t", b"hidden")
        assert not other.exists(b + b"/t")
        c.rollback()
        assert not other.exists(b + b"/t")
        c.transaction()
        c.write(b + b"/t", b"v")
        assert c.commit()
        assert other.read(b + b"/t") == b"v"
        # pyxs' commit_retry: tx started, then another client writes, then the tx writes
        c.transaction()
        other.write(b + b"/t", b"outside")
        c.write(b + b"/t", b"inside")
        assert c.commit() is False
        assert other.read(b + b"/t") == b"outside"


def test_bogus_transaction_id_is_an_error(daemon: DaemonProcess, base: str) -> None:
    with client(daemon) as c:
        c.tx_id = 128
        with pytest.raises(PyXSError) as info:
            c.write(base.encode() + b"/x", b"1")
        assert info.value.args[0] == errno.ENOENT
        c.tx_id = 0


def test_watch_order_and_tokens(daemon: DaemonProcess, base: str) -> None:
    b = base.encode()
    with client(daemon) as c, client(daemon) as writer:
        writer.mkdir(b)
        m = c.monitor()
        m.watch(b, b"one")
        m.watch(b, b"two")
        events = m.wait()
        first = {next(events), next(events)}
        assert {(e.path, e.token) for e in first} == {(b, b"one"), (b, b"two")}
        for i in range(5):
            writer.write(b + b"/n%d" % i, b"x")
        got = [next(events) for _ in range(10)]
        paths = [e.path for e in got if e.token == b"one"]
        assert paths == [b + b"/n%d" % i for i in range(5)]
        m.unwatch(b, b"one")
        m.unwatch(b, b"two")


def test_monitors_in_threads(daemon: DaemonProcess, base: str) -> None:
    b = base.encode()
    results: list[int] = []
    ready = threading.Barrier(3)

    def watcher(tok: bytes) -> None:
        with client(daemon) as c:
            m = c.monitor()
            m.watch(b, tok)
            events = m.wait()
            next(events)  # initial
            ready.wait(5)
            results.append(sum(1 for _, e in zip(range(5), events) if e.token == tok))

    threads = [threading.Thread(target=watcher, args=(t,)) for t in (b"a", b"b")]
    for t in threads:
        t.start()
    ready.wait(5)
    with client(daemon) as w:
        for i in range(5):
            w.write(b + b"/%d" % i, b"v")
    for t in threads:
        t.join(10)
    assert results == [5, 5]
