"""The daemon's state: store, domains, connections and durability, tied together.

Spec: issue 4 and docs/misc/xenstore.txt.  ``Xenstored`` is what ``process.py`` handlers act
on and what ``server.py`` feeds packets into; it owns the group commit: commits append their
records to the journal and close the output gate, and ``flush`` (scheduled once per
event-loop turn) fsyncs and only then releases every held reply and watch event.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from .config import XenstoredConfig
from .connection import Connection, OutputGate
from .connections import Connections
from .domains import Domains
from .perms import Caller
from .persistence import Journal
from .store import Record, Store, initial_root

log = logging.getLogger(__name__)


class Xenstored:
    """Everything a request may touch.  No I/O besides the journal."""

    def __init__(self, config: XenstoredConfig | None = None, journal: Journal | None = None,
                 ) -> None:
        self.config = config or XenstoredConfig()
        self.journal = journal
        if journal is not None:
            loaded = journal.load(initial_root(1))
            self.store = Store(loaded.root)
            self.domains = Domains(loaded.domains)
        else:
            self.store = Store()
            self.domains = Domains()
        self.connections = Connections(self.config)
        #: READ payloads already parsed, by (caller domid, payload): see process.read_parts.
        self.read_paths: dict[tuple[int, bytes], tuple[str, ...]] = {}
        self.gate = OutputGate()
        #: ``loop.call_soon`` when run by the server: flush once per loop turn (group commit).
        #: None: flush synchronously inside the commit (unit tests, tools).
        self.schedule: Callable[[Callable[[], None]], Any] | None = None
        self._flush_scheduled = False
        self.store.on_commit = self._persist
        self.domains.persist = self._persist

    def _persist(self, records: list[Record]) -> None:
        journal = self.journal
        if journal is None:
            return
        journal.append(records)
        if self.schedule is None:
            self.flush()
            return
        self.gate.pending = True
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.schedule(self.flush)

    def flush(self) -> None:
        """Make queued commits durable, then release held output."""
        self._flush_scheduled = False
        journal = self.journal
        try:
            if journal is not None:
                journal.flush()
                if journal.needs_compaction:
                    journal.write_snapshot(self.store.root, self.domains.table)
        except OSError:
            # Not durable: nothing held may be acknowledged.  Drop those connections (their
            # clients see EOF, i.e. no acknowledgement) and keep serving.
            log.exception("journal write failed; closing connections awaiting it")
            held, self.gate.held = self.gate.held, []
            self.gate.pending = False
            for conn in held:
                conn.close()
            return
        self.gate.release()

    def connect(self, caller: Caller, write: Callable[[bytes], None],
                close: Callable[[], None] | None = None,
                buffered: Callable[[], int] | None = None, name: str = "",
                abort: Callable[[], None] | None = None) -> Connection:
        conn = Connection(caller, write, close, self.gate, name, buffered, abort)
        self.connections.add(conn)
        conn.log.log(logging.DEBUG if caller.privileged else logging.INFO, "connected")
        return conn

    def disconnect(self, conn: Connection) -> None:
        conn.closed = True
        self.connections.remove(conn)
        conn.log.log(logging.DEBUG if conn.privileged else logging.INFO, "disconnected")

    def release_domain(self, domid: int) -> None:
        """RELEASE: forget the domain and close its connections (the caller fires
        @releaseDomain, once for however many it released)."""
        self.domains.release(domid)
        for other in self.connections.of_domain(domid):
            other.close()
            self.disconnect(other)

    def domain_caller(self, domid: int) -> Caller:
        """The identity of a connection on domain ``domid``'s own socket."""
        return Caller(domid, False, self.domains.target_of(domid))

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()
