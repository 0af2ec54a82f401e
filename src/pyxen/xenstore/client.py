"""pyxen's xenstore client library: a blocking client and an asyncio client.

Spec: xen/include/public/io/xs_wire.h and docs/misc/xenstore.txt (the client side of the
protocol, as libxenstore and pyxs speak it).  Every operation is defined once, in ``ops.py``
(what to send, how to decode the reply); this module holds only the two drivers that carry
requests to xenstored -- blocking sockets or asyncio -- so both clients offer the very same
operations with the very same semantics::

    from pyxen.xenstore.client import XenstoreClient
    with XenstoreClient(paths.xenstored_socket) as xs:
        xs.write("/a", b"1")
        xs.transact(lambda t: t.write("/b", t.read("/a") + b"2"))   # retried on EAGAIN
        xs.watch("/a", "tok")
        for path, token in xs.watch_events(timeout=5):
            ...

    async with AsyncXenstoreClient(paths.xenstored_socket) as xs:
        await xs.write("/a", b"1")
        await xs.transact(body)                                      # async def body(t)
        async for path, token in xs.watch_events(): ...

Paths are ``str`` (relative ones resolve under the caller's /local/domain/<id>); values are
``bytes`` (a ``str`` is UTF-8 encoded).  Every request has a deadline (``timeout``, default
``DEFAULT_TIMEOUT`` seconds, per client): past it ``NoReply`` names the request, e.g.
``xenstored did not answer READ /local/domain/1/name within 10 s``.  A failed connect is
``Unreachable``, a connection xenstored closed is ``Disconnected``; all three are OSErrors
and XenstoreErrors.  After a disconnect the next request opens a fresh connection (without
the old one's watches and transactions; ``wait_event`` raises ``Disconnected`` once so a
watcher learns that).  A client object is for one thread at a time; the asyncio client may
have many requests of one event loop outstanding at once.
"""

from __future__ import annotations

import collections
import os
import select
import socket
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, TypeVar

from .errors import Disconnected, NoReply, Unreachable
from .ops import (ClientOperations, Event, Operation, Request, RunBody,
                  TransactionOperations, event, transaction_loop)
from .wire import HEADER, FrameError, Op, Packet, PacketReader

T = TypeVar("T")

#: Seconds a request may wait for its reply before ``NoReply``.
DEFAULT_TIMEOUT = 10.0
#: Replies are at most 4096 bytes; a larger limit only tolerates a peer that breaks that.
_MAX_PAYLOAD = 1 << 20

__all__ = ["XenstoreClient", "AsyncXenstoreClient", "ClientTransaction",
           "AsyncClientTransaction", "default_socket_path", "DEFAULT_TIMEOUT"]


def default_socket_path() -> Path:
    """``$XENSTORED_PATH`` (as libxenstore), else this pyxen host's Dom0 socket."""
    env = os.environ.get("XENSTORED_PATH")
    if env:
        return Path(env)
    from ..paths import Paths
    return Paths.from_env().xenstored_socket


def _unreachable(path: Path, err: OSError) -> Unreachable:
    reason = err.strerror or str(err) or type(err).__name__
    if isinstance(err, TimeoutError):
        reason = "connect timed out"
    return Unreachable(f"cannot reach xenstored at {path} ({reason}); is the host started? "
                       f"(pyxen host start)", err.errno)


def _no_reply(req: Request[Any], timeout: float | None) -> NoReply:
    return NoReply(f"xenstored did not answer {req.describe()} within {timeout:g} s")


def _gone(doing: str, err: OSError | None = None) -> Disconnected:
    why = f" ({err.strerror or err})" if err is not None else ""
    return Disconnected(f"xenstored closed the connection{why} during {doing}",
                        err.errno if err is not None else None)


# --- drivers: how an operation's requests reach xenstored -------------------------------------
class SyncDriver:
    """Runs ``ops`` operations with blocking I/O; operations on it return their result."""

    def _drive(self, op: Operation[T], body: Callable[[int], Any] | None = None) -> T:
        raise NotImplementedError


class AsyncDriver:
    """Runs ``ops`` operations on asyncio; operations on it return awaitables."""

    async def _drive(self, op: Operation[T],
                     body: Callable[[int], Awaitable[Any]] | None = None) -> T:
        raise NotImplementedError


# --- blocking client --------------------------------------------------------------------------
class XenstoreClient(ClientOperations, SyncDriver):
    """A blocking connection to xenstored.

    :param path: the socket; default ``default_socket_path()``.
    :param timeout: seconds to wait for a connect or a reply (None: forever).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None,
                 timeout: float | None = DEFAULT_TIMEOUT) -> None:
        self.path = Path(path) if path is not None else default_socket_path()
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._reader = PacketReader(max_payload=_MAX_PAYLOAD)
        self._req_id = 0
        self._events: collections.deque[Event] = collections.deque()
        self._lock = threading.RLock()
        #: A watcher must learn that its watches went with a lost connection.
        self._lost = False

    # lifecycle
    def connect(self) -> "XenstoreClient":
        """:raise Unreachable: nothing listens at ``path`` (or it does not accept in time)."""
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(str(self.path))
            except OSError as err:
                sock.close()
                raise _unreachable(self.path, err) from err
            sock.setblocking(False)  # each request has its own deadline (_roundtrip)
            self._sock = sock
            self._reader = PacketReader(max_payload=_MAX_PAYLOAD)
        return self

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _drop(self) -> None:
        """The connection is unusable (EOF, reset, a half-sent request)."""
        self.close()
        self._lost = True

    def __enter__(self) -> "XenstoreClient":
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # the driver
    def _drive(self, op: Operation[T], body: Callable[[int], Any] | None = None) -> T:
        """Run one operation: a Request goes to xenstored and its reply is decoded; a
        generator has each Request it yields sent and each RunBody run by ``body``, and a
        failure of either thrown into it (so ``transact`` aborts)."""
        with self._lock:
            if type(op) is Request:
                return op.reply(self._roundtrip(op))
            assert not isinstance(op, Request)
            gen = op
            reply: Any = None
            failure: BaseException | None = None
            while True:
                try:
                    if failure is None:
                        effect = gen.send(reply)
                    else:
                        effect, failure = gen.throw(failure), None
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
                try:
                    if type(effect) is Request:
                        reply = self._roundtrip(effect)
                    else:
                        assert body is not None and isinstance(effect, RunBody)
                        reply = body(effect.tx)
                except BaseException as err:  # noqa: BLE001 - handed to the operation
                    failure = err

    def _roundtrip(self, req: Request[Any]) -> Packet:
        """Send ``req`` and wait for its reply; watch events that come first are kept.

        The socket is non-blocking after connect: send, then select and recv, three
        syscalls as before timeouts existed (a socket timeout would add a poll to each)."""
        if self._sock is None:
            self.connect()
        sock = self._sock
        assert sock is not None
        self._req_id = req_id = (self._req_id + 1) & 0xFFFFFFFF
        timeout = self.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        data = HEADER.pack(req.op, req_id, req.tx, len(req.payload)) + req.payload
        try:
            sent = sock.send(data)
            if sent < len(data):  # xenstored is not reading us (stopped, or throttling)
                self._send_rest(sock, memoryview(data)[sent:], deadline)
        except TimeoutError:
            self._drop()  # part of the request may be out: the stream is no longer framed
            raise _no_reply(req, timeout) from None
        except OSError as err:
            self._drop()
            raise _gone(req.describe(), err) from err
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0 or not select.select([sock], [], [], left)[0]:
                raise _no_reply(req, timeout)
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError as err:
                self._drop()
                raise _gone(req.describe(), err) from err
            if not data:
                self._drop()
                raise _gone(req.describe())
            reply = None
            try:
                packets = self._reader.feed(data)
            except FrameError as err:
                self._drop()
                raise Disconnected(f"xenstored broke the framing during "
                                   f"{req.describe()}: {err}") from err
            for pkt in packets:
                if pkt.op == Op.WATCH_EVENT:
                    self._events.append(event(pkt))
                elif pkt.req_id == req_id:
                    reply = pkt
                # else: the late reply to a request that timed out
            if reply is not None:
                return reply

    @staticmethod
    def _send_rest(sock: socket.socket, view: memoryview, deadline: float | None) -> None:
        """:raise TimeoutError: the rest could not be sent by ``deadline``."""
        while view:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0 or not select.select([], [sock], [], left)[1]:
                raise TimeoutError
            try:
                view = view[sock.send(view):]
            except BlockingIOError:
                continue

    # transactions
    def transaction(self) -> "ClientTransaction":
        """``with xs.transaction() as t: t.write(...)`` -- commits on normal exit (raises
        Conflict on EAGAIN), aborts on an exception.  Use ``transact`` to retry."""
        return ClientTransaction(self)

    def transact(self, body: Callable[["ClientTransaction"], T], retries: int = 100) -> T:
        """Run ``body(t)`` in a transaction, redoing it on EAGAIN (``ops.transaction_loop``).

        :raise Conflict: still conflicting after ``retries`` attempts.
        """
        result: T = self._drive(transaction_loop(retries),
                                lambda tx: body(ClientTransaction(self, tx)))
        return result

    # watch events
    def wait_event(self, timeout: float | None = None) -> Event | None:
        """The next (path, token) watch event, or None after ``timeout`` seconds (None:
        wait for ever).

        :raise Disconnected: the connection (and with it every watch) was lost.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not self._events:
                sock = self._sock
                if sock is None or self._lost:
                    self._lost = False
                    raise Disconnected("lost the connection to xenstored (and its watches)"
                                       " while waiting for a watch event")
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not select.select([sock], [], [], left)[0]:
                    return None
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as err:
                    self._drop()
                    raise _gone("a wait for watch events", err) from err
                if not data:
                    self._drop()
                    continue
                for pkt in self._reader.feed(data):
                    if pkt.op == Op.WATCH_EVENT:
                        self._events.append(event(pkt))
            return self._events.popleft()

    def watch_events(self, timeout: float | None = None) -> Iterator[Event]:
        """Yield (path, token) events; stops after ``timeout`` seconds without one."""
        while True:
            ev = self.wait_event(timeout)
            if ev is None:
                return
            yield ev


class ClientTransaction(TransactionOperations, SyncDriver):
    """Node operations bound to one transaction id of a ``XenstoreClient``."""

    def __init__(self, client: XenstoreClient, tx: int = 0) -> None:
        self.client = client
        self.tx = tx

    def _drive(self, op: Operation[T], body: Callable[[int], Any] | None = None) -> T:
        return self.client._drive(op, body)

    def start(self) -> "ClientTransaction":
        self._start()
        return self

    def __enter__(self) -> "ClientTransaction":
        return self.start()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


#: The asyncio client's names, imported from client_async on first use (PEP 562).
_ASYNC_NAMES = frozenset({"AsyncXenstoreClient", "AsyncClientTransaction", "_AsyncProtocol"})


def __getattr__(name: str) -> Any:
    """The asyncio client, from client_async when first asked for: the blocking client's users
    (xl) never import asyncio."""
    if name in _ASYNC_NAMES:
        from . import client_async
        return getattr(client_async, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
