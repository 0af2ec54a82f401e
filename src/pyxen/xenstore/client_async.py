"""pyxen's asyncio xenstore client (``AsyncXenstoreClient``): the daemons' twin of client.py's
blocking client, with the very same operations (``ops.py``).

A module of its own so that the blocking client, which xl uses, does not import asyncio (with
ssl, a third of ``xl create``'s imports); ``pyxen.xenstore.client`` still exports these names
(imported on first use), so ``from pyxen.xenstore.client import AsyncXenstoreClient`` works.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

from .client import _MAX_PAYLOAD, DEFAULT_TIMEOUT, AsyncDriver, T, _gone, _no_reply, _unreachable, default_socket_path
from .errors import Disconnected
from .ops import (ClientOperations, Event, Operation, Request, RunBody,
                  TransactionOperations, event, transaction_loop)
from .wire import FrameError, Op, Packet, PacketReader, encode


class _AsyncProtocol(asyncio.Protocol):
    def __init__(self, owner: "AsyncXenstoreClient") -> None:
        self.owner = owner
        self.reader = PacketReader(max_payload=_MAX_PAYLOAD)
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            packets = self.reader.feed(data)
        except FrameError:  # not xenstored: the stream cannot be trusted any more
            if isinstance(self.transport, asyncio.Transport):
                self.transport.abort()
            return
        for pkt in packets:
            self.owner._dispatch(pkt)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._lost(self)


class AsyncXenstoreClient(ClientOperations, AsyncDriver):
    """An asyncio connection to xenstored; many requests may be outstanding at once,
    replies are matched by req_id (``_pending[req_id]`` futures fail on disconnect).

    :param timeout: seconds to wait for a connect or a reply (None: forever).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None,
                 timeout: float | None = DEFAULT_TIMEOUT) -> None:
        self.path = Path(path) if path is not None else default_socket_path()
        self.timeout = timeout
        self._transport: asyncio.Transport | None = None
        self._protocol: _AsyncProtocol | None = None
        self._pending: dict[int, tuple[asyncio.Future[Packet], Request[Any]]] = {}
        self._req_id = 0
        self._events: asyncio.Queue[Event | None] = asyncio.Queue()
        self._connecting = asyncio.Lock()

    async def connect(self) -> "AsyncXenstoreClient":
        """:raise Unreachable: nothing listens at ``path`` (or it does not accept in time)."""
        async with self._connecting:  # tasks that find the connection gone share one new one
            if self._transport is None:
                loop = asyncio.get_running_loop()
                try:
                    transport, protocol = await asyncio.wait_for(loop.create_unix_connection(
                        lambda: _AsyncProtocol(self), str(self.path)), self.timeout)
                except asyncio.TimeoutError as err:
                    raise _unreachable(self.path, TimeoutError()) from err
                except OSError as err:
                    raise _unreachable(self.path, err) from err
                self._transport = transport  # type: ignore[assignment]
                self._protocol = protocol
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
            self._events.put_nowait(event(pkt))
            return
        entry = self._pending.pop(pkt.req_id, None)
        if entry is not None and not entry[0].done():
            entry[0].set_result(pkt)

    def _lost(self, protocol: _AsyncProtocol) -> None:
        if protocol is not self._protocol:
            return  # an old connection, already replaced
        self._transport = None
        self._protocol = None
        pending, self._pending = self._pending, {}
        for fut, req in pending.values():
            if not fut.done():
                fut.set_exception(_gone(req.describe()))
        self._events.put_nowait(None)

    def _expire(self, req_id: int) -> None:
        entry = self._pending.pop(req_id, None)
        if entry is not None and not entry[0].done():
            entry[0].set_exception(_no_reply(entry[1], self.timeout))

    # the driver
    async def _drive(self, op: Operation[T],
                     body: Callable[[int], Awaitable[Any]] | None = None) -> T:
        """As ``XenstoreClient._drive``, awaiting each request and the body."""
        if type(op) is Request:
            return op.reply(await self._roundtrip(op))
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
                    reply = await self._roundtrip(effect)
                else:
                    assert body is not None and isinstance(effect, RunBody)
                    reply = await body(effect.tx)
            except BaseException as err:  # noqa: BLE001 - handed to the operation
                failure = err

    async def _roundtrip(self, req: Request[Any]) -> Packet:
        if self._transport is None:
            await self.connect()
        transport = self._transport
        assert transport is not None
        loop = asyncio.get_running_loop()
        self._req_id = req_id = (self._req_id + 1) & 0xFFFFFFFF
        fut: asyncio.Future[Packet] = loop.create_future()
        self._pending[req_id] = (fut, req)
        transport.write(encode(req.op, req_id, req.tx, req.payload))
        timer = None if self.timeout is None else loop.call_later(
            self.timeout, self._expire, req_id)
        try:
            return await fut
        finally:
            if timer is not None:
                timer.cancel()
            self._pending.pop(req_id, None)  # cancelled: a late reply is dropped

    # transactions
    def transaction(self) -> "AsyncClientTransaction":
        """``async with xs.transaction() as t: await t.write(...)`` -- commits on normal
        exit (raises Conflict on EAGAIN), aborts on an exception."""
        return AsyncClientTransaction(self)

    async def transact(self, body: Callable[["AsyncClientTransaction"], Awaitable[T]],
                       retries: int = 100) -> T:
        """Run ``await body(t)`` in a transaction, redoing it on EAGAIN
        (``ops.transaction_loop``, the same loop as the blocking client's)."""
        result: T = await self._drive(transaction_loop(retries),
                                      lambda tx: body(AsyncClientTransaction(self, tx)))
        return result

    # watch events
    async def wait_event(self, timeout: float | None = None) -> Event | None:
        """The next (path, token) watch event, or None after ``timeout`` seconds.

        :raise Disconnected: the connection (and with it every watch) was lost.
        """
        try:
            ev = await asyncio.wait_for(self._events.get(), timeout)
        except asyncio.TimeoutError:
            return None
        if ev is None:
            raise Disconnected("lost the connection to xenstored (and its watches) while "
                               "waiting for a watch event")
        return ev

    async def watch_events(self, timeout: float | None = None) -> AsyncIterator[Event]:
        """Yield (path, token) events; stops after ``timeout`` seconds without one."""
        while True:
            ev = await self.wait_event(timeout)
            if ev is None:
                return
            yield ev


class AsyncClientTransaction(TransactionOperations, AsyncDriver):
    """Node operations bound to one transaction id of an ``AsyncXenstoreClient``."""

    def __init__(self, client: AsyncXenstoreClient, tx: int = 0) -> None:
        self.client = client
        self.tx = tx

    async def _drive(self, op: Operation[T],
                     body: Callable[[int], Awaitable[Any]] | None = None) -> T:
        return await self.client._drive(op, body)

    async def start(self) -> "AsyncClientTransaction":
        await self._start()
        return self

    async def __aenter__(self) -> "AsyncClientTransaction":
        return await self.start()

    async def __aexit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            await self.commit()
        else:
            await self.abort()

