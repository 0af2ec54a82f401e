"""Transactions: every store operation runs inside one (tid 0 = a one-op transaction).

Spec: docs/misc/xenstore.txt (TRANSACTION_START/END, permissions, implicit creation) and the
conflict rule recommended by the pyxen xenstore digest (section 2.4): a transaction takes an
O(1) snapshot of the immutable root at START and records every path it reads or writes,
including absent lookups and parents whose child list it changes.  At commit, if the
canonical root is still the snapshot, the transaction's root is swapped in.  Otherwise every
recorded path must carry the same ``gen`` stamp (or be absent) in the snapshot and in the
current root, and the transaction's logged operations are replayed onto the current root;
any difference is a conflict (EAGAIN) and nothing of the transaction becomes visible.
This matches test-xenstore's "ta err", pyxs' commit_retry and lets disjoint transactions
both commit.  There is no ``await`` in this module: nothing to lock.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from . import quota
from .config import XenstoredConfig
from .errors import (Conflict, InvalidArgument, NoEntry, NotPermitted, PermissionDenied,
                     XenstoreError)
from .perms import OWNER, READ, WRITE, Caller, Perms, rights, with_owner
from .store import EMPTY_CHILDREN, Node, Parts, Record, Store, join, lookup, node_size, replace


class Change(NamedTuple):
    """A modification to announce to watchers: the path, and for RM the removed subtree
    (watches on removed descendants fire too)."""

    path: str
    removed: Node | None = None


class Transaction:
    """A snapshot of the store plus the record of what was touched and changed."""

    __slots__ = ("store", "tid", "caller", "config", "base_root", "root", "touched", "log",
                 "records", "changes", "owned")

    def __init__(self, store: Store, tid: int, caller: Caller, config: XenstoredConfig) -> None:
        self.store = store
        self.tid = tid
        self.caller = caller
        self.config = config
        self.base_root = store.root
        self.root = store.root
        self.touched: set[Parts] = set()
        self.log: list[tuple[str, tuple[Any, ...]]] = []
        self.records: list[Record] = []
        self.changes: list[Change] = []
        self.owned: dict[int, int] = {}

    # --- helpers -----------------------------------------------------------------------------
    def _touch(self, parts: Parts) -> None:
        if self.tid:
            touched = self.touched
            if parts not in touched:
                touched.add(parts)
                quota.check_transaction_nodes(self.config, self.caller, len(touched))

    def _rights(self, node: Node) -> int:
        c = self.caller
        return rights(node.perms, c.domid, c.privileged, c.target)

    def _missing(self, parts: Parts, want: int) -> XenstoreError:
        """ENOENT, or EACCES when the caller lacks ``want`` on the nearest existing ancestor
        (so an unreadable directory does not reveal what it holds)."""
        if not self.caller.privileged:
            p = parts
            while p:
                p = p[:-1]
                self._touch(p)
                anc = lookup(self.root, p)
                if anc is not None:
                    if not self._rights(anc) & want:
                        return PermissionDenied(join(parts))
                    break
        return NoEntry(join(parts))

    def node(self, parts: Parts, want: int = READ) -> Node:
        """The node at ``parts`` if the caller holds ``want`` on it.

        :raise NoEntry: absent.  :raise PermissionDenied: not allowed (or hidden).
        """
        self._touch(parts)
        node = lookup(self.root, parts)
        if node is None:
            raise self._missing(parts, want)
        if want and not self._rights(node) & want:
            raise PermissionDenied(join(parts))
        return node

    def _bump(self, domid: int, delta: int) -> None:
        self.owned[domid] = self.owned.get(domid, 0) + delta

    def _logged(self, name: str, *args: Any) -> None:
        if self.tid:
            self.log.append((name, args))

    # --- operations ---------------------------------------------------------------------------
    def read(self, parts: Parts) -> bytes:
        return self.node(parts, READ).value

    def directory(self, parts: Parts) -> list[str]:
        return list(self.node(parts, READ).children)

    def get_perms(self, parts: Parts) -> Perms:
        return self.node(parts, READ).perms

    def exists(self, parts: Parts) -> bool:
        self._touch(parts)
        return lookup(self.root, parts) is not None

    def write(self, parts: Parts, value: bytes) -> None:
        self._touch(parts)
        node = lookup(self.root, parts)
        if node is None:
            self._create(parts, value)
        else:
            if not self._rights(node) & WRITE:
                raise PermissionDenied(join(parts))
            gen = self.store.next_gen()
            new = node._replace(value=value, gen=gen)
            quota.check_node_size(self.config, self.caller, node_size(new))
            self.root = replace(self.root, parts, new, gen)
            self.records.append(("N", join(parts), value, node.perms))
        self.changes.append(Change(join(parts)))
        self._logged("write", parts, value)

    def mkdir(self, parts: Parts) -> None:
        """Create ``parts`` (and missing ancestors); OK and no event if it exists."""
        self._touch(parts)
        node = lookup(self.root, parts)
        if node is not None:
            if not self._rights(node) & WRITE:
                raise PermissionDenied(join(parts))
            return
        self._create(parts, b"")
        self.changes.append(Change(join(parts)))
        self._logged("mkdir", parts)

    def _create(self, parts: Parts, value: bytes) -> None:
        """Create a missing node and its missing ancestors; they inherit the nearest existing
        ancestor's perms, owned by the caller when it is an unprivileged domain."""
        missing = [parts]
        p = parts
        while True:
            p = p[:-1]
            self._touch(p)
            anc = lookup(self.root, p)
            if anc is not None:
                break
            missing.append(p)
        if not self._rights(anc) & WRITE:
            raise PermissionDenied(join(parts))
        caller = self.caller
        perms = anc.perms if caller.privileged else with_owner(anc.perms, caller.domid)
        owner = perms[0].domid
        if not caller.privileged:
            owned = self.store.owned.get(owner, 0) + self.owned.get(owner, 0)
            quota.check_nodes(self.config, caller, owned, len(missing))
            quota.check_node_size(self.config, caller,
                                  node_size(Node(value, perms, EMPTY_CHILDREN, 0)))
        gen = self.store.next_gen()
        root = self.root
        for q in reversed(missing):
            v = value if q is parts else b""
            root = replace(root, q, Node(v, perms, EMPTY_CHILDREN, gen), gen)
            self.records.append(("N", join(q), v, perms))
        self.root = root
        self._bump(owner, len(missing))

    def rm(self, parts: Parts) -> None:
        """Remove a subtree. A missing node is fine if its parent exists (C xenstored)."""
        if not parts:
            raise InvalidArgument("cannot remove /")
        self._touch(parts)
        node = lookup(self.root, parts)
        parent_parts = parts[:-1]
        self._touch(parent_parts)
        if node is None:
            if lookup(self.root, parent_parts) is None:
                raise self._missing(parent_parts, WRITE)
            self._logged("rm", parts)
            return
        if not self._rights(node) & WRITE:
            raise PermissionDenied(join(parts))
        gen = self.store.next_gen()
        self.root = replace(self.root, parts, None, gen)
        stack = [node]
        while stack:
            n = stack.pop()
            self._bump(n.perms[0].domid, -1)
            stack.extend(n.children.values())
        path = join(parts)
        self.records.append(("D", path))
        self.changes.append(Change(path, node))
        self._logged("rm", parts)

    def set_perms(self, parts: Parts, perms: Perms) -> None:
        node = self.node(parts, 0)
        if not self._rights(node) & OWNER:
            raise PermissionDenied(join(parts))
        if not self.caller.privileged:
            if perms[0].domid != node.perms[0].domid:
                raise NotPermitted("only a privileged domain may change a node's owner")
            quota.check_perms(self.config, self.caller, len(perms))
        gen = self.store.next_gen()
        self.root = replace(self.root, parts, node._replace(perms=perms, gen=gen), gen)
        old_owner, new_owner = node.perms[0].domid, perms[0].domid
        if old_owner != new_owner:
            self._bump(old_owner, -1)
            self._bump(new_owner, 1)
        path = join(parts)
        self.records.append(("N", path, node.value, perms))
        self.changes.append(Change(path))
        self._logged("set_perms", parts, perms)

    # --- end ------------------------------------------------------------------------------------
    def commit(self) -> list[Change]:
        """Make the changes canonical and return them (de-duplicated, in order) for watches.

        :raise Conflict: (EAGAIN) a node this transaction depends on changed meanwhile.
        """
        store = self.store
        if store.root is self.base_root:
            store.apply(self.root, self.owned, self.records)
            return self._events(self.changes)
        base, current = self.base_root, store.root
        for parts in self.touched:
            a = lookup(base, parts)
            b = lookup(current, parts)
            if (a is None) != (b is None) or (a is not None and a.gen != b.gen):  # type: ignore[union-attr]
                raise Conflict(f"transaction {self.tid}: {join(parts)} changed")
        replay = Transaction(store, 0, self.caller, self.config)
        try:
            for name, args in self.log:
                getattr(replay, name)(*args)
        except XenstoreError as err:
            raise Conflict(f"transaction {self.tid} no longer applies: {err}") from err
        store.apply(replay.root, replay.owned, replay.records)
        return self._events(replay.changes)

    def _events(self, changes: list[Change]) -> list[Change]:
        if not self.tid or len(changes) < 2:
            return changes
        seen: set[str] = set()
        out = []
        for ch in changes:
            if ch.path not in seen or ch.removed is not None:
                seen.add(ch.path)
                out.append(ch)
        return out
