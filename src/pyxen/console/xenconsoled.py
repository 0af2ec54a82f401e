"""xenconsoled: one console per domain, logged to log/console/guest-<name>.log.

In Xen the daemon reads each guest's console ring, appends it to the guest's log and serves a
pty that ``xl console`` attaches to. Here the guest's console is the serial port of its QEMU,
exposed on a socket; xenconsoled connects to it, appends everything to the log, and serves a
per-domain socket (run/console/<domid>.sock) where ``xl console`` clients attach: what the guest
prints goes to every client, what a client types goes to the guest.

For now it runs inside the hypervisor daemon's event loop (see ARCHITECTURE.md); it keeps no
state that a restart cannot rebuild from the domain list.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

#: How long to keep trying to reach a console socket that is not there yet (seconds).
CONNECT_TIMEOUT = 10.0
CHUNK = 4096


def client_socket(run: Path, domid: int) -> Path:
    """Where ``xl console`` connects for ``domid``."""
    return run / "console" / f"{domid}.sock"


@dataclass
class _Console:
    domid: int
    name: str
    source: Path
    log_path: Path
    server: asyncio.AbstractServer | None = None
    writer: asyncio.StreamWriter | None = None
    clients: set[asyncio.StreamWriter] = field(default_factory=set)
    task: asyncio.Task[None] | None = None


class Xenconsoled:
    """Consoles of all domains of one host."""

    def __init__(self, run: Path) -> None:
        self.run = run
        self.consoles: dict[int, _Console] = {}

    async def attach(self, domid: int, name: str, source: Path, log_path: Path) -> None:
        """Start keeping domain ``domid``'s console (QEMU socket ``source``)."""
        await self.detach(domid)
        con = _Console(domid, name, source, log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        reader, con.writer = await self._connect(source)
        sock = client_socket(self.run, domid)
        sock.parent.mkdir(parents=True, exist_ok=True)
        sock.unlink(missing_ok=True)
        con.server = await asyncio.start_unix_server(
            lambda r, w: self._client(con, r, w), path=str(sock))
        sock.chmod(0o600)
        con.task = asyncio.create_task(self._pump(con, reader))
        self.consoles[domid] = con

    async def _connect(self, source: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONNECT_TIMEOUT
        while True:
            try:
                return await asyncio.open_unix_connection(str(source))
            except OSError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def _pump(self, con: _Console, reader: asyncio.StreamReader) -> None:
        """Guest output -> log file and attached clients, until the guest's side closes."""
        with open(con.log_path, "ab", buffering=0) as logf:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                logf.write(data)
                for w in list(con.clients):
                    try:
                        w.write(data)
                    except (ConnectionError, RuntimeError):
                        con.clients.discard(w)
        log.info("dom%d: console closed by the guest side", con.domid)
        for w in list(con.clients):
            w.close()

    async def _client(self, con: _Console, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        """One ``xl console``: its keystrokes go to the guest."""
        con.clients.add(writer)
        try:
            while data := await reader.read(CHUNK):
                if con.writer is not None:
                    con.writer.write(data)
                    await con.writer.drain()
        except ConnectionError:
            pass
        finally:
            con.clients.discard(writer)
            writer.close()

    async def detach(self, domid: int) -> None:
        """Stop keeping ``domid``'s console (the log stays)."""
        con = self.consoles.pop(domid, None)
        if con is None:
            return
        if con.task:
            con.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await con.task
        for w in list(con.clients):
            w.close()
        if con.writer:
            con.writer.close()
        if con.server:
            con.server.close()
        client_socket(self.run, domid).unlink(missing_ok=True)
