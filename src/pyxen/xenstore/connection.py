"""One client connection: its identity, open transactions, watches and output.

Spec: docs/misc/xenstore.txt (connection state: transactions and watches belong to the
connection and vanish with it or with RESET_WATCHES).  A Dom0-socket connection is privileged
(domid 0); a connection on a domain's own socket acts as that domain and is checked against
its permissions and quotas, as a ring connection is in Xen.  Output goes through ``send``,
which holds bytes back while a durable write is pending (see ``xenstored.Xenstored.flush``),
so nothing -- reply or watch event -- reveals a change before it is on disk.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, NamedTuple

from .perms import Caller
from .wire import encode_watch_event

if TYPE_CHECKING:
    from .transaction import Transaction

log = logging.getLogger(__name__)

#: Corked output is written out once it reaches this size, so a batch never holds much.
CORK_MAX = 64 * 1024


class Watch(NamedTuple):
    """A registered watch. ``path`` is absolute (or a special ``@`` name); ``relative`` says
    the client registered it relative, so its events are reported relative too."""

    conn: "Connection"
    path: str
    token: bytes
    relative: bool


class OutputGate:
    """Shared by all connections of a daemon: while ``pending`` (a write is queued for fsync),
    output is buffered per connection and released by ``release``."""

    __slots__ = ("pending", "held")

    def __init__(self) -> None:
        self.pending = False
        self.held: list[Connection] = []

    def release(self) -> None:
        self.pending = False
        held, self.held = self.held, []
        for conn in held:
            conn.release()


class Connection:
    """Per-client state. ``write`` puts bytes on the transport; ``close`` drops it.

    ``queued`` is what the client has not read yet: the transport's buffer (``buffered``)
    plus output held for the durability gate or corked.  The server throttles requests on
    it, and ``send_event`` bounds events by it.

    ``cork``/``uncork`` bracket a batch of pipelined requests that arrived in one read: their
    replies (and events to this client) leave in one transport write, one send() syscall,
    instead of one each.  Order is kept: corked bytes were sent before anything the gate
    holds after them, and they are written at ``uncork``, before the gate can release.
    """

    __slots__ = ("caller", "name", "transactions", "next_tid", "watches", "_write", "_close",
                 "_gate", "_held", "held_bytes", "log", "closed", "events_dropped",
                 "_buffered", "on_release", "_abort", "_corked", "_corked_bytes",
                 "_cork_on")

    def __init__(self, caller: Caller, write: Callable[[bytes], None],
                 close: Callable[[], None] | None = None, gate: OutputGate | None = None,
                 name: str = "", buffered: Callable[[], int] | None = None,
                 abort: Callable[[], None] | None = None) -> None:
        self.caller = caller
        self.name = name or f"dom{caller.domid}"
        self.transactions: dict[int, Transaction] = {}
        self.next_tid = 1
        self.watches: dict[tuple[str, bytes], Watch] = {}
        self._write = write
        self._close = close
        self._abort = abort
        self._gate = gate
        self._held: list[bytes] = []
        self.held_bytes = 0
        self._corked: list[bytes] = []
        self._corked_bytes = 0
        self._cork_on = False
        self._buffered = buffered
        self.log = log.getChild(self.name)
        self.closed = False
        self.events_dropped = 0
        #: Called after held output went to the transport (the server resumes a throttled
        #: connection's requests from here).
        self.on_release: Callable[[], None] | None = None

    @property
    def domid(self) -> int:
        return self.caller.domid

    @property
    def privileged(self) -> bool:
        return self.caller.privileged

    def queued(self) -> int:
        """Bytes sent to this client that it has not read yet (held ones included)."""
        return self.held_bytes + self._corked_bytes + (
            self._buffered() if self._buffered is not None else 0)

    def send(self, data: bytes) -> None:
        """Queue one whole message (never interleaved with another)."""
        gate = self._gate
        if gate is not None and gate.pending:
            if not self._held:
                gate.held.append(self)
            self._held.append(data)
            self.held_bytes += len(data)
        elif not self.closed:
            if self._cork_on:
                self._corked.append(data)
                self._corked_bytes += len(data)
                if self._corked_bytes >= CORK_MAX:
                    self._flush_cork()
            else:
                self._write(data)

    def cork(self) -> None:
        """Gather output until ``uncork`` (see the class docstring)."""
        self._cork_on = True

    def uncork(self) -> None:
        self._cork_on = False
        self._flush_cork()

    def _flush_cork(self) -> None:
        corked = self._corked
        if corked:
            self._corked = []
            self._corked_bytes = 0
            if not self.closed:
                self._write(corked[0] if len(corked) == 1 else b"".join(corked))

    def send_event(self, path: str, token: bytes, max_events: int, max_output: int) -> None:
        """A WATCH_EVENT, unless the client let too much pile up.  An unprivileged reader
        loses events past ``max_events`` queued (64 bytes each, as ox caps the queue; C
        drops them too), rather than making Dom0 buffer without bound.  A privileged one is
        disconnected past 16 x ``max_output``: it relies on every event, and a closed
        connection is something it notices (it re-registers and rescans)."""
        if self.closed:
            return
        if not self.caller.privileged:
            if self.queued() > max_events * 64:
                self.events_dropped += 1
                return
        elif self.queued() > 16 * max_output:
            self.log.warning("does not read its watch events (%d bytes queued): disconnecting",
                             self.queued())
            self.close(abort=True)
            return
        self.send(encode_watch_event(path, token))

    def release(self) -> None:
        self._flush_cork()  # never corked here in practice; keeps the order if it were
        held, self._held = self._held, []
        self.held_bytes = 0
        if held and not self.closed:
            self._write(b"".join(held))
        if self.on_release is not None and not self.closed:
            self.on_release()

    def allocate_tid(self) -> int:
        tid = self.next_tid
        while tid == 0 or tid in self.transactions:
            tid = (tid + 1) & 0xFFFFFFFF
        self.next_tid = (tid + 1) & 0xFFFFFFFF
        return tid

    def close(self, abort: bool = False) -> None:
        """Drop the connection; ``abort`` also discards what the client has not read (a
        plain close would keep it until the client reads it)."""
        if not self.closed:
            if not abort:
                self._flush_cork()  # replies before the close still reach the client
            self._corked = []
            self._corked_bytes = 0
            self._cork_on = False
            self._held = []
            self.held_bytes = 0
            end = self._abort if abort and self._abort is not None else self._close
            if end is not None:
                end()
        self.closed = True

    def __repr__(self) -> str:
        return f"<Connection {self.name}>"
