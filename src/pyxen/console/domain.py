"""One guest's console as xenconsoled keeps it (Xen: tools/console/daemon/io.c, ``struct domain``).

The guest's serial port is QEMU's ``pipe`` chardev on a FIFO pair (``Paths.console_pipe``):
``<base>.out`` carries what the guest prints, ``<base>.in`` what it is sent. Everything read from
``.out`` is appended to the guest's log first, with splice(2), so the bytes leave the FIFO and
land in the log file in one system call: a kill -9 of xenconsoled cannot lose output between a
read and its write. Only then is it copied (read back from the log) to every attached
``xl console`` client. What clients type goes to ``.in``.

While xenconsoled is down the guest's output waits in the FIFO (QEMU holds both ends open), and
a full FIFO stalls the serial port instead of dropping bytes, as Xen's console ring does.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import stat
from pathlib import Path
from typing import Callable

from ..paths import pipe_fifos

log = logging.getLogger(__name__)

#: Bytes moved per splice; a burst is drained in a loop until the FIFO is empty.
CHUNK = 65536
#: The FIFO's buffer, raised from Linux's 64 KiB when xenconsoled opens it, so a later outage of
#: xenconsoled stalls the guest's console only after this much output (fs/pipe-max-size caps it).
PIPE_SIZE = 1 << 20
#: Output queued for one ``xl console`` client that does not read; beyond it the client is
#: dropped, so one stuck reader neither grows the daemon nor holds up the others or the log.
MAX_CLIENT_BACKLOG = 1 << 20


class ConsoleGone(OSError):
    """The guest's side of the console is gone (QEMU exited or its FIFOs were removed)."""


#: The FIFO names of a console (one definition, in paths.py).
fifo_pair = pipe_fifos


def fifo_identity(base: Path) -> tuple[int, int] | None:
    """(st_dev, st_ino) of ``<base>.out`` when both FIFOs exist, else None.

    A domain's console is known by this, not only by its domid: if the domid is reused for a
    new device model, its FIFOs are new files and the console is opened again.
    """
    ident = None
    for path in fifo_pair(base):
        try:
            st = path.stat()
        except OSError:
            return None
        if not stat.S_ISFIFO(st.st_mode):
            return None
        ident = (st.st_dev, st.st_ino)
    return ident


class Console:
    """One domain's console: its FIFOs, its log, and its socket for ``xl console`` clients."""

    def __init__(self, domid: int, name: str, base: Path, log_path: Path, socket_path: Path,
                 on_end: Callable[["Console"], None] = lambda c: None) -> None:
        self.domid = domid
        self.name = name
        self.base = base
        self.log_path = log_path
        self.socket_path = socket_path
        self.identity: tuple[int, int] | None = None
        self._on_end = on_end
        self._out_fd = -1
        self._in_fd = -1
        self._log_fd = -1
        self._log_offset = 0
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self._input_lock = asyncio.Lock()
        self._input_wait: asyncio.Future[None] | None = None
        self._closed = False
        self.log = log.getChild(f"d{domid}")

    @property
    def clients(self) -> int:
        return len(self._clients)

    def status(self) -> dict[str, object]:
        return {"domid": self.domid, "name": self.name, "tty": str(self.socket_path),
                "log": str(self.log_path), "clients": self.clients}

    async def open(self) -> None:
        """Open the FIFOs and the log, and serve the client socket.

        :raise ConsoleGone: the FIFOs are not there, or nobody holds the guest's end.
        :raise OSError: the log or the socket cannot be made.
        """
        fifo_in, fifo_out = fifo_pair(self.base)
        try:
            self.identity = fifo_identity(self.base)
            if self.identity is None:
                raise ConsoleGone(errno.ENOENT, f"no console FIFOs at {self.base}.{{in,out}}")
            # Non-blocking: open does not wait for a writer, and the reads below never block.
            self._out_fd = os.open(fifo_out, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            with contextlib.suppress(OSError):  # a smaller pipe still works, only stalls sooner
                fcntl.fcntl(self._out_fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            try:
                self._in_fd = os.open(fifo_in, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as err:  # ENXIO: no reader, so no QEMU behind it
                raise ConsoleGone(err.errno, f"{fifo_in}: {err.strerror}") from err
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            # Not O_APPEND: splice(2) refuses append-mode files. xenconsoled is the log's only
            # writer, so writing at the end offset it keeps is the same thing.
            self._log_fd = os.open(self.log_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
            self._log_offset = os.lseek(self._log_fd, 0, os.SEEK_END)
            self.socket_path.parent.mkdir(parents=True, exist_ok=True)
            self.socket_path.unlink(missing_ok=True)
            self._server = await asyncio.start_unix_server(self._client, path=str(self.socket_path))
            self.socket_path.chmod(0o600)
            asyncio.get_running_loop().add_reader(self._out_fd, self._readable)
        except BaseException:
            self.close()
            raise
        self.log.info("keeping the console of %s (%s), log %s", self.name, self.base, self.log_path)

    # ---- guest -> log -> clients -------------------------------------------------------------
    def _readable(self) -> None:
        """Drain the FIFO into the log, then hand what was logged to the clients."""
        start = self._log_offset
        ended = False
        while True:
            try:
                n = os.splice(self._out_fd, self._log_fd, CHUNK, offset_dst=self._log_offset,
                              flags=os.SPLICE_F_NONBLOCK)
            except BlockingIOError:
                break
            except OSError as err:
                self.log.error("reading the console failed: %s", err)
                ended = True
                break
            if n == 0:  # no writer left: the device model is gone
                ended = True
                break
            self._log_offset += n
        if self._log_offset > start:
            self._broadcast(os.pread(self._log_fd, self._log_offset - start, start))
        if ended:
            self.log.info("the guest's side of the console closed")
            self.close()
            self._on_end(self)

    def _broadcast(self, data: bytes) -> None:
        for writer in list(self._clients):
            if writer.transport.get_write_buffer_size() > MAX_CLIENT_BACKLOG:
                self.log.warning("dropping an xl console client that does not read")
                self._clients.discard(writer)
                writer.transport.abort()
                continue
            try:
                writer.write(data)
            except (ConnectionError, RuntimeError):
                self._clients.discard(writer)

    # ---- clients -> guest ------------------------------------------------------------------------
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One ``xl console``: it sees all output from now on; its keystrokes go to the guest."""
        self._clients.add(writer)
        self.log.info("xl console attached (%d now)", len(self._clients))
        try:
            while data := await reader.read(4096):
                async with self._input_lock:  # one client's chunk at a time reaches the guest
                    await self._send_input(data)
        except (ConnectionError, ConsoleGone):
            pass
        finally:
            self._clients.discard(writer)
            writer.close()

    async def _send_input(self, data: bytes) -> None:
        """Write ``data`` to ``.in``, waiting (not buffering) while the guest does not read it."""
        loop = asyncio.get_running_loop()
        view = memoryview(data)
        while view:
            if self._in_fd < 0:
                raise ConsoleGone(errno.EPIPE, "console closed")
            try:
                view = view[os.write(self._in_fd, view):]
                continue
            except BlockingIOError:
                pass
            except OSError as err:
                raise ConsoleGone(err.errno, f"console input: {err.strerror}") from err
            ready: asyncio.Future[None] = loop.create_future()
            self._input_wait = ready
            loop.add_writer(self._in_fd, _wake, ready)
            try:
                await ready
            finally:
                self._input_wait = None
                if not self._closed:  # close() already unregistered it (and the fd may be reused)
                    loop.remove_writer(self._in_fd)

    # ---- teardown ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop keeping the console: clients are disconnected, the socket removed; the log stays."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        if self._out_fd >= 0:
            loop.remove_reader(self._out_fd)
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
        for writer in list(self._clients):
            writer.close()
        self._clients.clear()
        if self._in_fd >= 0:
            loop.remove_writer(self._in_fd)
        if self._input_wait is not None and not self._input_wait.done():
            self._input_wait.set_exception(ConsoleGone(errno.EPIPE, "console closed"))
        for fd in (self._out_fd, self._in_fd, self._log_fd):
            if fd >= 0:
                os.close(fd)
        self._out_fd = self._in_fd = self._log_fd = -1


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
