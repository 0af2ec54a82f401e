"""A Dom0 tool's handle on the hypervisor (libxc's xc_interface): hypercalls over the socket,
synchronous (``XenCtrl``, for xl) or asyncio (``AsyncXenCtrl``, for daemons). Every call has a
timeout. Importing this loads none of the hypervisor daemon's modules.
"""

from __future__ import annotations

import _socket
import itertools

from ..records import TYPE_CHECKING
from .errors import HypercallError, from_wire
from .wire import MAX_LINE, SAVE_TIMEOUT, SCM_RIGHTS_ARG, Request, WireError, decode_reply, encode_request

if TYPE_CHECKING:  # asyncio is imported where AsyncXenCtrl runs: xl, which uses only XenCtrl, never pays for it
    import asyncio
    import os
    from typing import Any, Sequence


#: Bound on one hypercall. createdomain starts QEMU and waits for it, which is the slowest of
#: the ordinary calls.
CALL_TIMEOUT = 60.0
#: Bound on the copy of a guest's state by its device model (QEMU's migration of all its RAM
#: to or from a file or a migration pipe): wire.SAVE_TIMEOUT, which the hypervisor's device
#: model also uses (so the two ends cannot disagree).
#: What the device model may spend around that copy (stop, migrate, query-migrate,
#: migrate_cancel: one QMP bound each), so the daemon's own error arrives before the client's.
SAVE_MARGIN = 60.0
#: Hypercalls that copy a guest's state: they are bounded by SAVE_TIMEOUT, not CALL_TIMEOUT.
SAVE_OPS = frozenset({"dm_op.save", "dm_op.restore", "dm_op.migrate_send", "dm_op.migrate_receive"})


def call_timeout(op: str, default: float) -> float:
    """How long a client waits for ``op``: ``default``, or for a state copy the device model's
    own bound plus its margin (whichever is longer)."""
    if op in SAVE_OPS:
        return max(default, SAVE_TIMEOUT + SAVE_MARGIN)
    return default


class HypervisorUnavailable(HypercallError):
    """The control socket is not there: the host is not started."""


def _unavailable(path: str | os.PathLike[str], err: OSError) -> HypervisorUnavailable:
    return HypervisorUnavailable(
        f"cannot reach the hypervisor at {path} ({err.strerror or err}); is the host started? "
        "(pyxen host start)")


class XenCtrl:
    """One connection to the hypervisor; use as a context manager. (Its socket is ``_socket``'s:
    socket.py, which turns its constants into enums at import, was a twentieth of ``xl list``.)"""

    def __init__(self, path: str | os.PathLike[str], timeout: float = CALL_TIMEOUT) -> None:
        self.path = path
        self._ids = itertools.count(1)
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(path))
        except OSError as err:
            self.sock.close()
            raise _unavailable(path, err) from err
        #: Bytes received after the last line returned (a reply may arrive in pieces).
        self._buf = b""

    def __enter__(self) -> "XenCtrl":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def call(self, op: str, *, timeout: float | None = None, fds: Sequence[int] = (), **args: Any) -> Any:
        """Make hypercall ``op``; raise the HypercallError subclass the daemon raised.

        Waits ``timeout``, or ``call_timeout(op, <the connection's bound>)``. A reply that comes
        after its call timed out is skipped by the next call (replies are matched by id), so the
        connection stays usable.

        :param fds: descriptors to hand the daemon (SCM_RIGHTS), which it sees as ``fds``.
        """
        if fds:
            args = {**args, SCM_RIGHTS_ARG: len(fds)}
        req = Request(next(self._ids), op, args)
        default = self.sock.gettimeout()
        limit = timeout if timeout is not None else call_timeout(op, CALL_TIMEOUT if default is None else default)
        self.sock.settimeout(limit)
        try:
            self.sock.sendall(encode_request(req))
            while True:
                line = self._readline()
                if not line:
                    raise HypercallError(f"the hypervisor closed the connection during {op}", op)
                try:
                    reply = decode_reply(line)
                except WireError as err:
                    raise HypercallError(f"bad reply to {op}: {err}", op) from err
                if reply.get("id") != req.id:
                    continue  # a reply to an earlier call that timed out, or a VIRQ line
                if "send_fds" in reply and "result" not in reply and "error" not in reply:
                    import socket
                    socket.send_fds(self.sock, [b"\0"], list(fds))  # type: ignore[arg-type]
                elif "virq" not in reply:
                    break
        except TimeoutError:
            what = "a guest's state copy" if op in SAVE_OPS else "a hypercall"
            raise HypercallError(f"the hypervisor did not answer {op} within {limit:g} s "
                                 f"(the bound on {what})", op) from None
        except OSError as err:
            if isinstance(err, HypercallError):
                raise
            raise HypercallError(f"lost the hypervisor during {op}: {err}", op) from err
        finally:
            self.sock.settimeout(default)
        if "error" in reply:
            raise from_wire(reply["error"])
        return reply["result"]

    def _readline(self) -> bytes:
        """The next line from the socket (b"" at its end), at most MAX_LINE bytes. Read with
        recv, not a socket file: a file is unusable after one timeout, and a call that timed
        out must leave the connection usable for the next (its late reply is skipped)."""
        while b"\n" not in self._buf and len(self._buf) < MAX_LINE:
            chunk = self.sock.recv(65536)
            if not chunk:
                line, self._buf = self._buf, b""
                return line
            self._buf += chunk
        cut = self._buf.find(b"\n") + 1 or MAX_LINE
        line, self._buf = self._buf[:cut], self._buf[cut:]
        return line


class AsyncXenCtrl:
    """The asyncio handle: calls may overlap (matched by id), and a VIRQ_DOM_EXC binding
    delivers notifications (``wait_virq``). Every call and the connect have a timeout."""

    def __init__(self, path: str | os.PathLike[str], timeout: float = CALL_TIMEOUT) -> None:
        import asyncio
        self.path = path
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._virq = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()

    async def connect(self) -> "AsyncXenCtrl":
        import asyncio
        try:
            reader, self._writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(self.path), limit=MAX_LINE), self.timeout)
        except asyncio.TimeoutError:
            raise HypervisorUnavailable(f"the hypervisor at {self.path} did not accept within "
                                        f"{self.timeout:g} s") from None
        except OSError as err:
            raise _unavailable(self.path, err) from err
        self._task = asyncio.get_running_loop().create_task(self._read(reader))
        return self

    async def __aenter__(self) -> "AsyncXenCtrl":
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._writer is not None:
            self._writer.close()
        self._fail(HypervisorUnavailable("connection to the hypervisor closed"))

    def _fail(self, err: HypercallError) -> None:
        self.closed.set()
        self._virq.set()  # wake a waiter, which then sees ``closed``
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(err)
        self._pending.clear()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                try:
                    reply = decode_reply(line)
                except WireError:
                    continue
                if "virq" in reply:
                    self._virq.set()
                    continue
                fut = self._pending.pop(reply.get("id", -1), None)
                if fut is not None and not fut.done():
                    fut.set_result(reply)
        except (ConnectionError, ValueError):
            pass
        self._fail(HypervisorUnavailable(f"the hypervisor at {self.path} closed the connection"))

    async def call(self, op: str, timeout: float | None = None, **args: Any) -> Any:
        import asyncio
        if self._writer is None or self.closed.is_set():
            raise HypervisorUnavailable(f"not connected to the hypervisor at {self.path}", op)
        req = Request(next(self._ids), op, args)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[req.id] = fut
        try:
            self._writer.write(encode_request(req))
            limit = timeout or call_timeout(op, self.timeout)
            reply = await asyncio.wait_for(fut, limit)
        except asyncio.TimeoutError:
            raise HypercallError(f"the hypervisor did not answer {op} within {limit:g} s", op) from None
        finally:
            self._pending.pop(req.id, None)
        if "error" in reply:
            raise from_wire(reply["error"])
        return reply["result"]

    async def bind_virq_dom_exc(self) -> None:
        """Subscribe this connection to VIRQ_DOM_EXC."""
        await self.call("event_channel_op.bind_virq", virq="dom_exc")

    async def wait_virq(self) -> None:
        """Until the next VIRQ_DOM_EXC (several coalesce into one wake-up).
        :raise HypervisorUnavailable: the connection is gone."""
        await self._virq.wait()
        self._virq.clear()
        if self.closed.is_set():
            raise HypervisorUnavailable(f"the hypervisor at {self.path} closed the connection")


__all__ = ["AsyncXenCtrl", "HypervisorUnavailable", "SAVE_TIMEOUT", "XenCtrl", "call_timeout"]
