"""The registry of connections and the watch index, and firing of watches.

Spec: docs/misc/xenstore.txt "WATCH" and C xenstored's fire_watches: a change to path P fires
every watch on P, on an ancestor of P, or on "/"; removing a subtree also fires watches
registered on removed descendants (with their own path); an unprivileged watcher is told only
about nodes it may read.  ``@introduceDomain``/``@releaseDomain`` are special names fired by
domain management, delivered to privileged connections and to domains granted read on them.
The index is a dict from watched path to watches, so firing costs O(depth of P), independent
of how many connections or watches exist elsewhere.
"""

from __future__ import annotations

import logging
from typing import Iterable

from .config import XenstoredConfig
from .connection import Connection, Watch
from .perms import DEFAULT_PERMS, READ, Perms, rights
from .store import Node, lookup, split
from .transaction import Change

log = logging.getLogger(__name__)

SPECIAL_WATCHES = ("@introduceDomain", "@releaseDomain")


class Connections:
    """All live connections and their watches."""

    def __init__(self, config: XenstoredConfig) -> None:
        self.config = config
        self.all: set[Connection] = set()
        self.index: dict[str, list[Watch]] = {}
        #: SET_PERMS on a special watch name decides which domains receive those events.
        self.special_perms: dict[str, Perms] = {n: DEFAULT_PERMS for n in SPECIAL_WATCHES}

    def add(self, conn: Connection) -> None:
        self.all.add(conn)

    def remove(self, conn: Connection) -> None:
        """Forget a closed connection: its watches and transactions go with it."""
        self.all.discard(conn)
        self.reset(conn)

    def reset(self, conn: Connection) -> None:
        """RESET_WATCHES: drop every watch and transaction of ``conn``."""
        for watch in list(conn.watches.values()):
            self._unindex(watch)
        conn.watches.clear()
        conn.transactions.clear()

    def of_domain(self, domid: int) -> list[Connection]:
        return [c for c in self.all if c.domid == domid and not c.privileged]

    # --- watches -----------------------------------------------------------------------------
    def watch(self, watch: Watch) -> None:
        watch.conn.watches[(watch.path, watch.token)] = watch
        self.index.setdefault(watch.path, []).append(watch)

    def unwatch(self, conn: Connection, path: str, token: bytes) -> bool:
        watch = conn.watches.pop((path, token), None)
        if watch is None:
            return False
        self._unindex(watch)
        return True

    def _unindex(self, watch: Watch) -> None:
        lst = self.index.get(watch.path)
        if lst is not None:
            try:
                lst.remove(watch)
            except ValueError:
                pass
            if not lst:
                del self.index[watch.path]

    @staticmethod
    def _report(watch: Watch, path: str) -> str:
        """Event path as the watcher knows it: relative watches get relative paths."""
        if watch.relative:
            prefix = f"/local/domain/{watch.conn.domid}/"
            if path.startswith(prefix):
                return path[len(prefix):]
        return path

    def _visible(self, conn: Connection, root: Node, path: str, removed: bool) -> bool:
        """May an unprivileged watcher learn of a change at ``path``? It must be able to
        read the node, or (for a removed node) its parent."""
        parts = split(path)
        node = lookup(root, parts)
        if node is None:
            node = lookup(root, parts[:-1]) if parts else None
            if node is None:
                return False
        c = conn.caller
        return bool(rights(node.perms, c.domid, c.privileged, c.target) & READ)

    def fire(self, changes: Iterable[Change], root: Node) -> None:
        """Queue WATCH_EVENTs for committed changes, in change order."""
        index = self.index
        if not index:
            return
        max_q, max_out = self.config.max_watch_events, self.config.max_output
        for change in changes:
            path = change.path
            hits: list[tuple[Watch, str]] = []
            lst = index.get("/")
            if lst:
                hits.extend((w, path) for w in lst)
            if path != "/":
                pos = 0
                while True:
                    pos = path.find("/", pos + 1)
                    prefix = path if pos < 0 else path[:pos]
                    lst = index.get(prefix)
                    if lst:
                        hits.extend((w, path) for w in lst)
                    if pos < 0:
                        break
            if change.removed is not None and change.removed.children:
                below = path + "/" if path != "/" else "/"
                for wpath, lst in list(index.items()):
                    if wpath.startswith(below) and lookup(
                            change.removed, tuple(wpath[len(below):].split("/"))) is not None:
                        hits.extend((w, wpath) for w in lst)
            for watch, event_path in hits:
                conn = watch.conn
                if not conn.privileged and not self._visible(
                        conn, root, event_path, change.removed is not None):
                    continue
                conn.send_event(self._report(watch, event_path), watch.token, max_q, max_out)

    def fire_special(self, name: str) -> None:
        """Fire ``@introduceDomain`` or ``@releaseDomain``."""
        lst = self.index.get(name)
        if not lst:
            return
        perms = self.special_perms[name]
        for watch in list(lst):
            c = watch.conn.caller
            if c.privileged or rights(perms, c.domid, c.privileged, c.target) & READ:
                watch.conn.send_event(name, watch.token, self.config.max_watch_events,
                                      self.config.max_output)
