"""pyxen's xenstore client library: a blocking client and an asyncio client.

Spec: xen/include/public/io/xs_wire.h and docs/misc/xenstore.txt (the client side of the
protocol, as libxenstore and pyxs speak it).  Both flavours send requests with increasing
req_ids, keep watch events that arrive between replies, and raise the ``errors`` class named
by an ERROR reply (``NoEntry`` for ENOENT, ``Conflict`` for EAGAIN, ...)::

    from pyxen.xenstore.client import XenstoreClient
    with XenstoreClient(paths.xenstored_socket) as xs:
        xs.write("/a", b"1")
        xs.transact(lambda t: t.write("/b", t.read("/a") + b"2"))   # retried on EAGAIN
        xs.watch("/a", "tok")
        for path, token in xs.watch_events(timeout=5):
            ...

    async with AsyncXenstoreClient(paths.xenstored_socket) as xs:
        await xs.write("/a", b"1")
        async for path, token in xs.watch_events(): ...

Paths are ``str`` (relative ones resolve under the caller's /local/domain/<id>); values are
``bytes`` (a ``str`` is UTF-8 encoded).  A client object is for one thread / one task at a
time; open several for concurrency (one connection each, like libxenstore handles).
"""

from __future__ import annotations

import asyncio
import collections
import os
import select
import socket
import threading
import time
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable, Iterator, Sequence, TypeVar

from .errors import Conflict, NoEntry, XenstoreError, error_from_wire
from .wire import HEADER, Op, Packet, PacketReader, encode, split_strings

T = TypeVar("T")
Value = bytes | str
Event = tuple[str, str]

__all__ = ["XenstoreClient", "AsyncXenstoreClient", "ClientTransaction",
           "AsyncClientTransaction", "default_socket_path"]


def default_socket_path() -> Path:
    """``$XENSTORED_PATH`` (as libxenstore), else this pyxen host's Dom0 socket."""
    env = os.environ.get("XENSTORED_PATH")
    if env:
        return Path(env)
    from ..paths import Paths
    return Paths.from_env().xenstored_socket


# --- payload building and reply parsing, shared by both flavours -------------------------------
def _s(text: str | int) -> bytes:
    return str(text).encode() + b"\0"


def _v(value: Value) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def _strings(reply: bytes) -> list[str]:
    return [p.decode() for p in split_strings(reply)]


def _check(pkt: Packet, op: int, path: str = "") -> bytes:
    if pkt.op == Op.ERROR:
        raise error_from_wire(pkt.payload.rstrip(b"\0").decode("ascii", "replace"), path)
    if pkt.op != op:
        raise XenstoreError(f"reply type {pkt.op} to request {op}")
    return pkt.payload


def _event(pkt: Packet) -> Event:
    parts = split_strings(pkt.payload)
    return parts[0].decode(), (parts[1].decode() if len(parts) > 1 else "")


# --- blocking client --------------------------------------------------------------------------
class XenstoreClient:
    """A blocking connection to xenstored.

    :param path: the socket; default ``default_socket_path()``.
    :param timeout: seconds to wait for a reply (None: forever).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None,
                 timeout: float | None = 30.0) -> None:
        self.path = Path(path) if path is not None else default_socket_path()
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._reader = PacketReader(max_payload=1 << 20)
        self._req_id = 0
        self._events: collections.deque[Event] = collections.deque()
        self._lock = threading.RLock()

    # lifecycle
    def connect(self) -> "XenstoreClient":
        """:raise OSError: nothing listens at ``path``."""
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.path))
            except OSError:
                sock.close()
                raise
            self._sock = sock
        return self

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> "XenstoreClient":
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # transport
    def _recv_packets(self, timeout: float | None) -> list[Packet] | None:
        """Packets from one recv (maybe none: a partial packet); None on timeout."""
        sock = self._sock
        if sock is None:
            raise ConnectionError("not connected")
        if timeout is not None:
            ready, _, _ = select.select([sock], [], [], timeout)
            if not ready:
                return None
        data = sock.recv(65536)
        if not data:
            self.close()
            raise ConnectionResetError("xenstored closed the connection")
        return self._reader.feed(data)

    def request(self, op: Op, payload: bytes, tx: int = 0) -> Packet:
        """Send one request and return its reply packet (events are kept for later)."""
        with self._lock:
            if self._sock is None:
                self.connect()
            assert self._sock is not None
            self._req_id = (self._req_id + 1) & 0xFFFFFFFF
            req_id = self._req_id
            self._sock.sendall(HEADER.pack(op, req_id, tx, len(payload)) + payload)
            while True:
                packets = self._recv_packets(self.timeout)
                if packets is None:
                    raise TimeoutError(f"no reply from xenstored in {self.timeout}s")
                reply = None
                for pkt in packets:
                    if pkt.op == Op.WATCH_EVENT:
                        self._events.append(_event(pkt))
                    elif pkt.req_id == req_id:
                        reply = pkt
                if reply is not None:
                    return reply

    def _call(self, op: Op, payload: bytes, tx: int, path: str,
              parse: Callable[[bytes], T]) -> T:
        return parse(_check(self.request(op, payload, tx), op, path))

    # node operations
    def read(self, path: str, tx: int = 0) -> bytes:
        """:raise NoEntry: absent.  :raise PermissionDenied: not readable."""
        return self._call(Op.READ, _s(path), tx, path, bytes)

    def get(self, path: str, default: bytes | None = None, tx: int = 0) -> bytes | None:
        """``read`` that returns ``default`` for a missing node."""
        try:
            return self.read(path, tx)
        except NoEntry:
            return default

    def write(self, path: str, value: Value, tx: int = 0) -> None:
        self._call(Op.WRITE, path.encode() + b"\0" + _v(value), tx, path, bytes)

    def mkdir(self, path: str, tx: int = 0) -> None:
        self._call(Op.MKDIR, _s(path), tx, path, bytes)

    def rm(self, path: str, tx: int = 0) -> None:
        self._call(Op.RM, _s(path), tx, path, bytes)

    def directory(self, path: str, tx: int = 0) -> list[str]:
        return self._call(Op.DIRECTORY, _s(path), tx, path, _strings)

    ls = directory

    def exists(self, path: str, tx: int = 0) -> bool:
        try:
            self.read(path, tx)
            return True
        except NoEntry:
            return False

    def get_perms(self, path: str, tx: int = 0) -> list[str]:
        return self._call(Op.GET_PERMS, _s(path), tx, path, _strings)

    def set_perms(self, path: str, perms: Sequence[str], tx: int = 0) -> None:
        self._call(Op.SET_PERMS, _s(path) + b"".join(_s(p) for p in perms), tx, path, bytes)

    # transactions
    def transaction_start(self) -> int:
        return self._call(Op.TRANSACTION_START, b"\0", 0, "", lambda r: int(r.rstrip(b"\0")))

    def transaction_end(self, tx: int, commit: bool = True) -> None:
        """:raise Conflict: (EAGAIN) the transaction conflicted; nothing of it is visible."""
        self._call(Op.TRANSACTION_END, b"T\0" if commit else b"F\0", tx, "", bytes)

    def transaction(self) -> "ClientTransaction":
        """``with xs.transaction() as t: t.write(...)`` -- commits on normal exit (raises
        Conflict on EAGAIN), aborts on an exception.  Use ``transact`` to retry."""
        return ClientTransaction(self)

    def transact(self, body: Callable[["ClientTransaction"], T], retries: int = 100) -> T:
        """Run ``body(t)`` in a transaction, redoing it on EAGAIN (as xenstore-* tools do)."""
        for _ in range(retries):
            t = ClientTransaction(self)
            t.start()
            try:
                result = body(t)
            except BaseException:
                t.abort()
                raise
            try:
                t.commit()
                return result
            except Conflict:
                continue
        raise Conflict(f"transaction still conflicting after {retries} attempts")

    # watches
    def watch(self, path: str, token: str = "") -> None:
        """Register; xenstored sends one initial event for it (read by ``watch_events``)."""
        self._call(Op.WATCH, _s(path) + _s(token or path), 0, path, bytes)

    def unwatch(self, path: str, token: str = "") -> None:
        self._call(Op.UNWATCH, _s(path) + _s(token or path), 0, path, bytes)

    def reset_watches(self) -> None:
        self._call(Op.RESET_WATCHES, b"\0", 0, "", bytes)

    def wait_event(self, timeout: float | None = None) -> Event | None:
        """The next (path, token) watch event, or None after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not self._events:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                for pkt in self._recv_packets(left) or ():
                    if pkt.op == Op.WATCH_EVENT:
                        self._events.append(_event(pkt))
                if not self._events and deadline is not None and time.monotonic() >= deadline:
                    return None
            return self._events.popleft()

    def watch_events(self, timeout: float | None = None) -> Iterator[Event]:
        """Yield (path, token) events; stops after ``timeout`` seconds without one."""
        while True:
            ev = self.wait_event(timeout)
            if ev is None:
                return
            yield ev

    # domains
    def introduce(self, domid: int, gfn: int = 0, evtchn: int = 1) -> None:
        """INTRODUCE: the store accepts the domain's own socket; fires @introduceDomain."""
        self._call(Op.INTRODUCE, _s(domid) + _s(gfn) + _s(evtchn), 0, "", bytes)

    def release(self, domid: int) -> None:
        """RELEASE: closes the domain's connection; fires @releaseDomain."""
        self._call(Op.RELEASE, _s(domid), 0, "", bytes)

    def resume(self, domid: int) -> None:
        self._call(Op.RESUME, _s(domid), 0, "", bytes)

    def set_target(self, domid: int, target: int) -> None:
        self._call(Op.SET_TARGET, _s(domid) + _s(target), 0, "", bytes)

    def get_domain_path(self, domid: int) -> str:
        return self._call(Op.GET_DOMAIN_PATH, _s(domid), 0, "",
                          lambda r: r.rstrip(b"\0").decode())

    def is_domain_introduced(self, domid: int) -> bool:
        return self._call(Op.IS_DOMAIN_INTRODUCED, _s(domid), 0, "",
                          lambda r: r.rstrip(b"\0") == b"T")

    def control(self, *words: str) -> bytes:
        return self._call(Op.CONTROL, b"".join(_s(w) for w in words), 0, "", bytes)


class ClientTransaction:
    """Operations bound to one transaction id of a ``XenstoreClient``."""

    def __init__(self, client: XenstoreClient) -> None:
        self.client = client
        self.tx = 0

    def start(self) -> "ClientTransaction":
        self.tx = self.client.transaction_start()
        return self

    def commit(self) -> None:
        tx, self.tx = self.tx, 0
        self.client.transaction_end(tx, True)

    def abort(self) -> None:
        tx, self.tx = self.tx, 0
        if tx:
            try:
                self.client.transaction_end(tx, False)
            except (XenstoreError, OSError):
                pass

    def __enter__(self) -> "ClientTransaction":
        return self.start()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def read(self, path: str) -> bytes:
        return self.client.read(path, self.tx)

    def get(self, path: str, default: bytes | None = None) -> bytes | None:
        return self.client.get(path, default, self.tx)

    def write(self, path: str, value: Value) -> None:
        self.client.write(path, value, self.tx)

    def mkdir(self, path: str) -> None:
        self.client.mkdir(path, self.tx)

    def rm(self, path: str) -> None:
        self.client.rm(path, self.tx)

    def directory(self, path: str) -> list[str]:
        return self.client.directory(path, self.tx)

    def exists(self, path: str) -> bool:
        return self.client.exists(path, self.tx)

    def get_perms(self, path: str) -> list[str]:
        return self.client.get_perms(path, self.tx)

    def set_perms(self, path: str, perms: Sequence[str]) -> None:
        self.client.set_perms(path, perms, self.tx)


# --- asyncio client ---------------------------------------------------------------------------
class _AsyncProtocol(asyncio.Protocol):
    def __init__(self, owner: "AsyncXenstoreClient") -> None:
        self.owner = owner
        self.reader = PacketReader(max_payload=1 << 20)

    def data_received(self, data: bytes) -> None:
        for pkt in self.reader.feed(data):
            self.owner._dispatch(pkt)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._lost(exc)


class AsyncXenstoreClient:
    """An asyncio connection to xenstored; many requests may be outstanding at once,
    replies are matched by req_id (``_pending[req_id]`` futures fail on disconnect)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_socket_path()
        self._transport: asyncio.Transport | None = None
        self._pending: dict[int, asyncio.Future[Packet]] = {}
        self._req_id = 0
        self._events: asyncio.Queue[Event | None] = asyncio.Queue()
        self._closed = False

    async def connect(self) -> "AsyncXenstoreClient":
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_unix_connection(
            lambda: _AsyncProtocol(self), str(self.path))
        self._transport = transport  # type: ignore[assignment]
        return self

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def __aenter__(self) -> "AsyncXenstoreClient":
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _dispatch(self, pkt: Packet) -> None:
        if pkt.op == Op.WATCH_EVENT:
            self._events.put_nowait(_event(pkt))
            return
        fut = self._pending.pop(pkt.req_id, None)
        if fut is not None and not fut.done():
            fut.set_result(pkt)

    def _lost(self, exc: Exception | None) -> None:
        self._closed = True
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionResetError("xenstored closed the connection"))
        self._pending.clear()
        self._events.put_nowait(None)

    async def request(self, op: Op, payload: bytes, tx: int = 0) -> Packet:
        if self._transport is None:
            await self.connect()
        assert self._transport is not None
        if self._closed:
            raise ConnectionResetError("xenstored closed the connection")
        self._req_id = (self._req_id + 1) & 0xFFFFFFFF
        req_id = self._req_id
        fut: asyncio.Future[Packet] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        self._transport.write(encode(op, req_id, tx, payload))
        return await fut

    async def _call(self, op: Op, payload: bytes, tx: int, path: str,
                    parse: Callable[[bytes], T]) -> T:
        return parse(_check(await self.request(op, payload, tx), op, path))

    async def read(self, path: str, tx: int = 0) -> bytes:
        return await self._call(Op.READ, _s(path), tx, path, bytes)

    async def get(self, path: str, default: bytes | None = None, tx: int = 0) -> bytes | None:
        try:
            return await self.read(path, tx)
        except NoEntry:
            return default

    async def write(self, path: str, value: Value, tx: int = 0) -> None:
        await self._call(Op.WRITE, path.encode() + b"\0" + _v(value), tx, path, bytes)

    async def mkdir(self, path: str, tx: int = 0) -> None:
        await self._call(Op.MKDIR, _s(path), tx, path, bytes)

    async def rm(self, path: str, tx: int = 0) -> None:
        await self._call(Op.RM, _s(path), tx, path, bytes)

    async def directory(self, path: str, tx: int = 0) -> list[str]:
        return await self._call(Op.DIRECTORY, _s(path), tx, path, _strings)

    async def exists(self, path: str, tx: int = 0) -> bool:
        try:
            await self.read(path, tx)
            return True
        except NoEntry:
            return False

    async def get_perms(self, path: str, tx: int = 0) -> list[str]:
        return await self._call(Op.GET_PERMS, _s(path), tx, path, _strings)

    async def set_perms(self, path: str, perms: Sequence[str], tx: int = 0) -> None:
        await self._call(Op.SET_PERMS, _s(path) + b"".join(_s(p) for p in perms), tx, path,
                         bytes)

    async def transaction_start(self) -> int:
        return await self._call(Op.TRANSACTION_START, b"\0", 0, "",
                                lambda r: int(r.rstrip(b"\0")))

    async def transaction_end(self, tx: int, commit: bool = True) -> None:
        await self._call(Op.TRANSACTION_END, b"T\0" if commit else b"F\0", tx, "", bytes)

    async def transact(self, body: Callable[["AsyncClientTransaction"], Awaitable[T]],
                       retries: int = 100) -> T:
        """Run ``await body(t)`` in a transaction, redoing it on EAGAIN."""
        for _ in range(retries):
            t = AsyncClientTransaction(self, await self.transaction_start())
            try:
                result = await body(t)
            except BaseException:
                try:
                    await self.transaction_end(t.tx, False)
                except (XenstoreError, OSError):
                    pass
                raise
            try:
                await self.transaction_end(t.tx, True)
                return result
            except Conflict:
                continue
        raise Conflict(f"transaction still conflicting after {retries} attempts")

    async def watch(self, path: str, token: str = "") -> None:
        await self._call(Op.WATCH, _s(path) + _s(token or path), 0, path, bytes)

    async def unwatch(self, path: str, token: str = "") -> None:
        await self._call(Op.UNWATCH, _s(path) + _s(token or path), 0, path, bytes)

    async def reset_watches(self) -> None:
        await self._call(Op.RESET_WATCHES, b"\0", 0, "", bytes)

    async def wait_event(self, timeout: float | None = None) -> Event | None:
        try:
            ev = await asyncio.wait_for(self._events.get(), timeout)
        except asyncio.TimeoutError:
            return None
        if ev is None:
            raise ConnectionResetError("xenstored closed the connection")
        return ev

    async def watch_events(self, timeout: float | None = None) -> AsyncIterator[Event]:
        while True:
            ev = await self.wait_event(timeout)
            if ev is None:
                return
            yield ev

    async def introduce(self, domid: int, gfn: int = 0, evtchn: int = 1) -> None:
        await self._call(Op.INTRODUCE, _s(domid) + _s(gfn) + _s(evtchn), 0, "", bytes)

    async def release(self, domid: int) -> None:
        await self._call(Op.RELEASE, _s(domid), 0, "", bytes)

    async def set_target(self, domid: int, target: int) -> None:
        await self._call(Op.SET_TARGET, _s(domid) + _s(target), 0, "", bytes)

    async def get_domain_path(self, domid: int) -> str:
        return await self._call(Op.GET_DOMAIN_PATH, _s(domid), 0, "",
                                lambda r: r.rstrip(b"\0").decode())

    async def is_domain_introduced(self, domid: int) -> bool:
        return await self._call(Op.IS_DOMAIN_INTRODUCED, _s(domid), 0, "",
                                lambda r: r.rstrip(b"\0") == b"T")


class AsyncClientTransaction:
    """Operations bound to one transaction id of an ``AsyncXenstoreClient``."""

    def __init__(self, client: AsyncXenstoreClient, tx: int) -> None:
        self.client = client
        self.tx = tx

    async def read(self, path: str) -> bytes:
        return await self.client.read(path, self.tx)

    async def get(self, path: str, default: bytes | None = None) -> bytes | None:
        return await self.client.get(path, default, self.tx)

    async def write(self, path: str, value: Value) -> None:
        await self.client.write(path, value, self.tx)

    async def mkdir(self, path: str) -> None:
        await self.client.mkdir(path, self.tx)

    async def rm(self, path: str) -> None:
        await self.client.rm(path, self.tx)

    async def directory(self, path: str) -> list[str]:
        return await self.client.directory(path, self.tx)

    async def set_perms(self, path: str, perms: Sequence[str]) -> None:
        await self.client.set_perms(path, perms, self.tx)

    async def get_perms(self, path: str) -> list[str]:
        return await self.client.get_perms(path, self.tx)
