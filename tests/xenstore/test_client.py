"""The blocking and the asyncio clients: one set of operations, the same behaviour.

Parity is pinned structurally (both get every operation from ``ops``, with the same
signatures) and by running one script of requests through each client against a real
xenstored and comparing every answer.  Timeouts and unreachable sockets are proven with real
sockets: one that accepts and never answers, one that answers by hanging up, and none.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from pyxen.xenstore import ops
from pyxen.xenstore.client import (DEFAULT_TIMEOUT, AsyncClientTransaction,
                                   AsyncXenstoreClient, ClientTransaction, XenstoreClient)
from pyxen.xenstore.errors import (Conflict, Disconnected, NoEntry, NoReply, Unreachable,
                                   XenstoreError)
from pyxen.xenstore.testing import DaemonProcess


# --- structure --------------------------------------------------------------------------------
def public(cls: type) -> dict[str, Any]:
    return {n: getattr(cls, n) for n in dir(cls) if not n.startswith("_")
            and callable(getattr(cls, n))}


def test_both_clients_offer_the_same_operations() -> None:
    sync_ops = ops.operation_names(XenstoreClient)
    assert sync_ops == ops.operation_names(AsyncXenstoreClient)
    assert {"resume", "control", "exists", "transaction_start", "watch", "set_target",
            "is_domain_introduced", "get_domain_path"} <= sync_ops
    tx_ops = ops.operation_names(ClientTransaction)
    assert tx_ops == ops.operation_names(AsyncClientTransaction)
    assert {"read", "get", "exists", "write", "mkdir", "rm", "directory", "get_perms",
            "set_perms", "commit", "abort"} <= tx_ops
    # Every node operation of a client is also one of its transactions.
    assert ops.operation_names(ops.NodeOperations) <= tx_ops


def test_both_clients_have_the_same_public_methods_and_signatures() -> None:
    for sync_cls, async_cls in ((XenstoreClient, AsyncXenstoreClient),
                                (ClientTransaction, AsyncClientTransaction)):
        s, a = public(sync_cls), public(async_cls)
        assert set(s) == set(a), set(s) ^ set(a)
        for name in s:
            if isinstance(inspect.getattr_static(sync_cls, name), ops.operation):
                continue  # the same object's function: identical by construction
            ps = list(inspect.signature(s[name]).parameters)
            pa = list(inspect.signature(a[name]).parameters)
            assert ps == pa, (sync_cls.__name__, name, ps, pa)


def test_operations_are_shared_not_copied() -> None:
    for name in ops.operation_names(XenstoreClient):
        assert inspect.getattr_static(XenstoreClient, name) is \
            inspect.getattr_static(AsyncXenstoreClient, name)
    for name in ops.operation_names(ClientTransaction):
        assert inspect.getattr_static(ClientTransaction, name) is \
            inspect.getattr_static(AsyncClientTransaction, name)


def test_default_timeout() -> None:
    assert XenstoreClient("/nonexistent").timeout == DEFAULT_TIMEOUT == 10.0
    assert AsyncXenstoreClient("/nonexistent").timeout == DEFAULT_TIMEOUT
    assert XenstoreClient("/x", timeout=3).timeout == 3


# --- behaviour against a real xenstored ----------------------------------------------------
def script(base: str, domid: int) -> list[tuple[str, tuple[Any, ...]]]:
    """Requests with every outcome kind: values, lists, booleans, errors."""
    return [
        ("write", (f"{base}/a", b"1")),
        ("write", (f"{base}/s", "text")),
        ("read", (f"{base}/a",)),
        ("read", (f"{base}/s",)),
        ("read", (f"{base}/missing",)),
        ("get", (f"{base}/missing", b"dflt")),
        ("get", (f"{base}/a",)),
        ("exists", (f"{base}/a",)),
        ("exists", (f"{base}/missing",)),
        ("mkdir", (f"{base}/d",)),
        ("directory", (base,)),
        ("ls", (base,)),
        ("set_perms", (f"{base}/a", ["n0", "r5"])),
        ("get_perms", (f"{base}/a",)),
        ("set_perms", (f"{base}/a", ["bogus"])),
        ("rm", (f"{base}/d",)),
        ("rm", ("/",)),
        ("directory", (base,)),
        ("control", ("help",)),
        ("control", ("nonsense",)),
        ("introduce", (domid, 0, 1)),
        ("is_domain_introduced", (domid,)),
        ("get_domain_path", (domid,)),
        ("resume", (domid,)),
        ("set_target", (domid, 0)),
        ("release", (domid,)),
        ("is_domain_introduced", (domid,)),
        ("resume", (domid,)),
        ("unwatch", (f"{base}/a", "never")),
        ("transaction_end", (4242, True)),
    ]


def outcome(fn: Any, *args: Any) -> Any:
    try:
        return ("ok", fn(*args))
    except XenstoreError as err:
        return ("err", type(err).__name__)


async def aoutcome(fn: Any, *args: Any) -> Any:
    try:
        return ("ok", await fn(*args))
    except XenstoreError as err:
        return ("err", type(err).__name__)


def test_sync_and_async_answer_alike(daemon: DaemonProcess) -> None:
    with XenstoreClient(daemon.socket) as xs:
        sync_results = [outcome(getattr(xs, name), *args)
                        for name, args in script("/parity/sync", 11)]

    async def run_async() -> list[Any]:
        async with AsyncXenstoreClient(daemon.socket) as axs:
            return [await aoutcome(getattr(axs, name), *args)
                    for name, args in script("/parity/async", 11)]

    async_results = asyncio.run(run_async())
    assert sync_results == async_results
    kinds = {r[0] for r in sync_results}
    assert kinds == {"ok", "err"}  # the script reached both outcomes
    assert ("err", "NoEntry") in sync_results


def test_transactions_alike(daemon: DaemonProcess) -> None:
    """transact retries on EAGAIN in both; transaction objects expose exists in both."""
    with XenstoreClient(daemon.socket) as xs, XenstoreClient(daemon.socket) as other:
        xs.write("/tx/n", b"0")
        attempts = []

        def body(t: ClientTransaction) -> bytes:
            attempts.append(t.tx)
            value = t.read("/tx/n")
            assert t.exists("/tx/n") and not t.exists("/tx/none")
            if len(attempts) == 1:
                other.write("/tx/n", b"5")  # makes this attempt conflict
            t.write("/tx/n", value + b"+")
            return value

        assert xs.transact(body) == b"5"
        assert len(attempts) == 2 and all(attempts)
        assert xs.read("/tx/n") == b"5+"
        with pytest.raises(RuntimeError), xs.transaction() as t:
            t.write("/tx/n", b"aborted")
            raise RuntimeError
        assert xs.read("/tx/n") == b"5+"

    async def run_async() -> None:
        async with AsyncXenstoreClient(daemon.socket) as xs, \
                AsyncXenstoreClient(daemon.socket) as other:
            attempts = []

            async def body(t: AsyncClientTransaction) -> bytes:
                attempts.append(t.tx)
                value = await t.read("/tx/n")
                assert await t.exists("/tx/n") and not await t.exists("/tx/none")
                if len(attempts) == 1:
                    await other.write("/tx/n", b"6")
                await t.write("/tx/n", value + b"+")
                return value

            assert await xs.transact(body) == b"6"
            assert len(attempts) == 2
            assert await xs.read("/tx/n") == b"6+"
            with pytest.raises(RuntimeError):
                async with xs.transaction() as t:
                    await t.write("/tx/n", b"aborted")
                    raise RuntimeError
            assert await xs.read("/tx/n") == b"6+"

            async def always_conflicts(t: AsyncClientTransaction) -> None:
                await t.read("/tx/n")
                await other.write("/tx/n", b"x")
                await t.write("/tx/n", b"y")

            with pytest.raises(Conflict, match="after 3 attempts"):
                await xs.transact(always_conflicts, retries=3)

    asyncio.run(run_async())


def test_watch_events_alike(daemon: DaemonProcess) -> None:
    with XenstoreClient(daemon.socket) as xs:
        xs.watch("/ev", "t")
        xs.write("/ev/a", b"1")
        sync_events = list(xs.watch_events(timeout=0.3))

    async def run_async() -> list[Any]:
        async with AsyncXenstoreClient(daemon.socket) as xs:
            await xs.watch("/ev", "t")
            await xs.write("/ev/a", b"1")
            return [ev async for ev in xs.watch_events(timeout=0.3)]

    assert sync_events == asyncio.run(run_async()) == [("/ev", "t"), ("/ev/a", "t")]


# --- timeouts and unreachable daemons ---------------------------------------------------
@pytest.fixture
def silent(tmp_path: Path) -> Iterator[Path]:
    """A socket that accepts connections, reads requests and never answers."""
    path = tmp_path / "silent.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(8)
    srv.settimeout(0.2)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except TimeoutError:
                continue

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield path
    stop.set()
    t.join()
    for c in conns:
        c.close()
    srv.close()


MSG = "xenstored did not answer READ /local/domain/1/name within 0.5 s"


def test_sync_request_times_out_with_a_clear_error(silent: Path) -> None:
    with XenstoreClient(silent, timeout=0.5) as xs:
        t0 = time.monotonic()
        with pytest.raises(NoReply) as info:
            xs.read("/local/domain/1/name")
        assert 0.4 < time.monotonic() - t0 < 3
    assert str(info.value) == MSG
    assert isinstance(info.value, OSError) and isinstance(info.value, TimeoutError)
    assert isinstance(info.value, XenstoreError)


def test_async_request_times_out_with_a_clear_error(silent: Path) -> None:
    async def run() -> None:
        async with AsyncXenstoreClient(silent, timeout=0.5) as xs:
            t0 = time.monotonic()
            with pytest.raises(NoReply, match=f"^{MSG}$"):
                await xs.read("/local/domain/1/name")
            assert 0.4 < time.monotonic() - t0 < 3
            with pytest.raises(NoReply, match="did not answer TRANSACTION_START within 0.5 s"):
                await xs.transact(lambda t: t.write("/x", b"1"))
            assert not xs._pending  # nothing left behind

    asyncio.run(run())


def test_unreachable_socket(tmp_path: Path) -> None:
    path = tmp_path / "nobody"
    expected = (f"cannot reach xenstored at {path} (No such file or directory); "
                f"is the host started? (pyxen host start)")
    with pytest.raises(Unreachable) as info:
        XenstoreClient(path).read("/a")
    assert str(info.value) == expected and info.value.errno == 2
    assert isinstance(info.value, ConnectionError)

    async def run() -> None:
        with pytest.raises(Unreachable) as ainfo:
            await AsyncXenstoreClient(path).read("/a")
        assert str(ainfo.value) == expected

    asyncio.run(run())


def test_hang_up_is_disconnected(tmp_path: Path) -> None:
    path = tmp_path / "hangup.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(8)

    def hang_up() -> None:
        for _ in range(2):
            c, _ = srv.accept()
            c.recv(100)
            c.close()

    t = threading.Thread(target=hang_up, daemon=True)
    t.start()
    try:
        with pytest.raises(Disconnected, match="during READ /a"):
            XenstoreClient(path, timeout=5).read("/a")

        async def run() -> None:
            with pytest.raises(Disconnected, match="during READ /b"):
                await AsyncXenstoreClient(path, timeout=5).read("/b")

        asyncio.run(run())
    finally:
        t.join(5)
        srv.close()


def test_daemon_restart_reconnects_and_tells_the_watcher(daemon: DaemonProcess) -> None:
    """kill -9 of xenstored: a waiting watcher gets Disconnected; the next request
    reconnects to the restarted daemon."""
    with XenstoreClient(daemon.socket, timeout=5) as xs:
        xs.write("/r", b"1")
        xs.watch("/r", "t")
        assert xs.wait_event(1) == ("/r", "t")
        daemon.kill()
        with pytest.raises(Disconnected):
            xs.wait_event(5)
        with pytest.raises(Unreachable):
            xs.read("/r")
        daemon.start()
        assert xs.read("/r") == b"1"
        with pytest.raises(NoEntry):
            xs.read("/r/none")


def test_async_daemon_restart_reconnects_and_tells_the_watcher(daemon: DaemonProcess) -> None:
    """The asyncio client behaves as the blocking one above; concurrent requests of many
    tasks share its one connection."""
    async def run() -> None:
        async with AsyncXenstoreClient(daemon.socket, timeout=5) as xs:
            await xs.write("/r", b"1")
            await xs.watch("/r", "t")
            assert await xs.wait_event(1) == ("/r", "t")
            daemon.kill()
            with pytest.raises(Disconnected):
                await xs.wait_event(5)
            with pytest.raises(Unreachable):
                await xs.read("/r")
            daemon.start()
            values = await asyncio.gather(*(xs.read("/r") for _ in range(200)))
            assert values == [b"1"] * 200
            assert not xs._pending

    asyncio.run(run())
