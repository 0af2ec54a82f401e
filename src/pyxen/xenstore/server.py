"""asyncio Unix-socket transports for xenstored: the Dom0 socket and per-domain sockets.

Spec: issue 4 and docs/misc/xenstore.txt.  The Dom0 socket
($PYXEN_ROOT/run/xenstored/socket, Xen's /var/run/xenstored/socket) gives privileged Dom0
connections.  INTRODUCE of domain N opens run/xenstored/domains/N: every connection there
acts as domain N -- relative paths under /local/domain/N, its permissions and quotas --
as a ring connection does in Xen; RELEASE closes it.  The byte stream is the one of
xs_wire.h; ``wire.PacketReader`` does the framing, so this module only moves bytes.

Uses asyncio protocols (callbacks, no per-connection task): an idle connection costs
nothing per request, and epoll only reports ready sockets, so request latency does not grow
with the number of idle connections.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
import stat
from pathlib import Path

from ..paths import Paths
from .config import XenstoredConfig
from .connection import Connection
from .perms import DOM0, Caller
from .process import process_packet
from .wire import FrameError, Packet, PacketReader
from .xenstored import Xenstored

log = logging.getLogger(__name__)


class PacketProtocol(asyncio.BufferedProtocol):
    """Bytes in from a stream socket, handed to ``data_received`` as with ``asyncio.Protocol``,
    but read with recv_into into one preallocated buffer.

    asyncio's plain Protocol reads with ``recv(256 KiB)``: a fresh 256 KiB bytes object per
    read, shrunk to the few dozen bytes a request has -- on this host that allocation costs
    more than answering a READ.  The buffer is shared by every connection of the process:
    asyncio calls ``buffer_updated`` right after filling it, and the bytes are copied out
    before any other read can happen.  The benchmark's echo floor (bench/xenstore.py) is a
    subclass too, so it and xenstored pay the same transport cost.
    """

    _buffer = memoryview(bytearray(64 * 1024))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(self._buffer[:nbytes]))

    def data_received(self, data: bytes) -> None:
        raise NotImplementedError


class XenstoreProtocol(PacketProtocol):
    """One connection's transport glue: bytes in -> packets -> process_packet.

    Flow control: while the client has more than ``config.max_output`` bytes of output
    unread (the transport's buffer plus replies held for the durability gate), no request
    of it is processed and its socket is not read (``pause_reading``), so a client that
    pipelines requests without reading replies waits in its own send() instead of growing
    the daemon's memory.  Requests already received wait in ``backlog`` (at most one read's
    worth); processing resumes when the transport drained to a quarter (``resume_writing``)
    or the gate released the held replies (``Connection.on_release``), in request order.
    """

    def __init__(self, xs: Xenstored, caller: Caller, name: str) -> None:
        self.xs = xs
        self.caller = caller
        self.name = name
        self.reader = PacketReader()
        self.conn: Connection | None = None
        self.transport: asyncio.Transport | None = None
        self.limit = xs.config.max_output
        self.backlog: collections.deque[Packet] = collections.deque()
        self.writing_paused = False
        self.reading_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=self.limit, low=self.limit // 4)
        self.conn = self.xs.connect(self.caller, transport.write, transport.close,
                                    transport.get_write_buffer_size, self.name,
                                    transport.abort)
        self.conn.on_release = self._pump

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        assert conn is not None
        try:
            packets = self.reader.feed(data)
        except FrameError as err:
            conn.log.warning("protocol violation, dropping connection: %s", err)
            self._drop()
            return
        if self.backlog:
            self.backlog.extend(packets)
            self._pump()
            return
        if len(packets) <= 1:  # a partial request, or one: nothing to batch
            if not packets or conn.closed:
                return
            if not self.writing_paused and conn.held_bytes <= self.limit:
                process_packet(self.xs, conn, packets[0])
                if conn.held_bytes > self.limit:
                    self._pause_reading()
                return
        conn.cork()  # pipelined requests: their replies leave in one send()
        try:
            self._process(packets)
        finally:
            conn.uncork()

    def _process(self, packets: list[Packet]) -> None:
        conn = self.conn
        assert conn is not None
        xs = self.xs
        limit = self.limit
        for i, pkt in enumerate(packets):
            if conn.closed:
                return
            if self.writing_paused or conn.held_bytes > limit:
                self.backlog.extend(packets[i:])
                self._pause_reading()
                return
            process_packet(xs, conn, pkt)
        if conn.held_bytes > limit:
            self._pause_reading()

    def _pump(self) -> None:
        """Process backlogged requests while the client's output is under the limit;
        read its socket again once the backlog is empty and the output still under it."""
        conn = self.conn
        if conn is None:
            return
        backlog = self.backlog
        conn.cork()
        try:
            while backlog:
                if conn.closed:
                    backlog.clear()
                    return
                if self.writing_paused or conn.held_bytes > self.limit:
                    self._pause_reading()
                    return
                process_packet(self.xs, conn, backlog.popleft())
        finally:
            conn.uncork()
        if self.reading_paused and not self.writing_paused \
                and conn.held_bytes <= self.limit and not conn.closed:
            self.reading_paused = False
            if self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()

    def _pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None \
                and not self.transport.is_closing():
            self.reading_paused = True
            self.transport.pause_reading()

    def pause_writing(self) -> None:
        """The transport holds more than ``limit`` unsent bytes: stop taking requests."""
        self.writing_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._pump()

    def _drop(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.backlog.clear()
        if self.conn is not None:
            self.xs.disconnect(self.conn)
            self.conn = None


def _bind_unix(path: Path, mode: int) -> socket.socket:
    """Bind a listening socket at ``path``, replacing a stale socket file left by a crash
    (kill -9).  A *live* daemon's socket is not stolen: connecting to it succeeds, and that
    is an error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise FileExistsError(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale: nobody listens
        else:
            raise RuntimeError(f"another xenstored is listening on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, mode)
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class XenstoreServer:
    """The listening sockets of one xenstored."""

    def __init__(self, xs: Xenstored, socket_path: Path, domains_dir: Path) -> None:
        self.xs = xs
        self.socket_path = Path(socket_path)
        self.domains_dir = Path(domains_dir)
        self.server: asyncio.AbstractServer | None = None
        self.domain_servers: dict[int, asyncio.AbstractServer] = {}
        self._pending: dict[int, asyncio.Task[None]] = {}

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.xs.schedule = loop.call_soon
        self.xs.domains.on_introduce = self._on_introduce
        self.xs.domains.on_release = self._on_release
        sock = _bind_unix(self.socket_path, self.xs.config.socket_mode)
        self.server = await loop.create_unix_server(
            lambda: XenstoreProtocol(self.xs, DOM0, "dom0"), sock=sock)
        self.domains_dir.mkdir(parents=True, exist_ok=True)
        for entry in self.domains_dir.iterdir():  # sockets of a previous run
            if entry.is_socket() and entry.name.isdigit() and \
                    int(entry.name) not in self.xs.domains.table:
                entry.unlink()
        for domid in list(self.xs.domains.table):
            await self.open_domain(domid)
        log.info("listening on %s", self.socket_path)

    def domain_socket(self, domid: int) -> Path:
        return self.domains_dir / str(domid)

    async def open_domain(self, domid: int) -> None:
        """Accept domain ``domid``'s own connection (its 'ring')."""
        if domid in self.domain_servers:
            return
        loop = asyncio.get_running_loop()
        sock = _bind_unix(self.domain_socket(domid), self.xs.config.domain_socket_mode)
        xs = self.xs
        self.domain_servers[domid] = await loop.create_unix_server(
            lambda: XenstoreProtocol(xs, xs.domain_caller(domid), f"dom{domid}"), sock=sock)
        log.info("domain %d: socket %s", domid, self.domain_socket(domid))

    def _on_introduce(self, domid: int) -> None:
        """Called inside INTRODUCE: bind and listen synchronously, so the socket accepts
        connections (into its backlog) by the time the client reads OK; serving starts on
        the next loop turn."""
        if domid in self.domain_servers or domid in self._pending:
            return
        sock = _bind_unix(self.domain_socket(domid), self.xs.config.domain_socket_mode)
        xs = self.xs
        loop = asyncio.get_running_loop()

        async def serve() -> None:
            server = await loop.create_unix_server(
                lambda: XenstoreProtocol(xs, xs.domain_caller(domid), f"dom{domid}"), sock=sock)
            self._pending.pop(domid, None)
            if domid in self.xs.domains.table:
                self.domain_servers[domid] = server
            else:  # released before it started serving
                server.close()

        self._pending[domid] = loop.create_task(serve())
        log.info("domain %d introduced: socket %s", domid, self.domain_socket(domid))

    def _on_release(self, domid: int) -> None:
        task = self._pending.pop(domid, None)
        if task is not None:
            task.cancel()
        server = self.domain_servers.pop(domid, None)
        if server is not None:
            server.close()
        try:
            self.domain_socket(domid).unlink()
        except FileNotFoundError:
            pass
        log.info("domain %d released", domid)

    async def close(self) -> None:
        servers = list(self.domain_servers.values())
        if self.server is not None:
            servers.append(self.server)
        for s in servers:
            s.close()
        for conn in list(self.xs.connections.all):
            conn.close()
        for s in servers:
            try:
                await asyncio.wait_for(s.wait_closed(), 2)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001
                pass
        self.xs.flush()
        for path in [self.socket_path, *map(self.domain_socket, self.xs.domains.table)]:
            try:
                path.unlink()
            except FileNotFoundError:
                pass


async def serve(paths: Paths, config: XenstoredConfig,
                stop: asyncio.Event | None = None) -> None:
    """Run xenstored under ``paths`` until ``stop`` is set (SIGTERM/SIGINT when None).

    Loads the store from ``paths.xenstored_data``, binds the sockets, writes the pid file,
    serves, and on stop closes connections, flushes the journal and removes the sockets and
    the pid file.
    """
    from .persistence import Journal

    loop = asyncio.get_running_loop()
    if stop is None:
        stop = asyncio.Event()
        import signal
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    paths.xenstored_dir.mkdir(parents=True, exist_ok=True)
    journal = Journal(paths.xenstored_data, fsync=config.fsync,
                      compact_bytes=config.journal_compact_bytes)
    xs = Xenstored(config, journal)
    server = XenstoreServer(xs, paths.xenstored_socket,
                            paths.xenstored_domain_socket(0).parent)
    await server.start()
    from .domain_exc import DomainExc
    dom_exc = loop.create_task(DomainExc(xs, paths.hypervisor_socket).run())
    pidfile = paths.pidfile("xenstored")
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    tmp = pidfile.with_suffix(".tmp")
    tmp.write_text(f"{os.getpid()}\n")
    tmp.rename(pidfile)
    try:
        await stop.wait()
        log.info("stopping")
    finally:
        dom_exc.cancel()
        await server.close()
        xs.close()
        try:
            if pidfile.read_text().strip() == str(os.getpid()):
                pidfile.unlink()
        except FileNotFoundError:
            pass
        log.info("stopped")


