"""xapi's database: every object in memory (xapi's db_cache), each change written through to
SQLite before the call that made it returns.

Why both: reads (get_record, get_all_records on 1000 VMs, event.from) must not touch the disk;
writes must survive ``kill -9`` of the daemon the moment they are acknowledged. SQLite in WAL
mode with ``synchronous=NORMAL`` makes a committed transaction durable against a process crash
(the WAL is in the OS's page cache, which outlives the process).

Every row carries xapi's generation stamps: a global counter bumped once per transaction,
recorded as the row's ``created`` and ``modified`` generation, and kept for deleted rows, so
event.from can tell add/mod/del since a token without any per-client queue. Set fields that
mirror another class's ref field (VM.VBDs from VBD.VM, host.resident_VMs from VM.resident_on,
xapi's ``all_relations``) are not stored: they are computed from an index kept on each write, so
the two sides can never disagree.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid as uuidlib
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from .datamodel import NULL_REF, Datamodel, load
from .errors import ApiError, handle_invalid

#: How many deletions event.from can still report: a token older than the oldest one kept
#: misses the deletions before it (its client sees the drop in valid_ref_counts).
DELETED_KEPT = 100_000


def _copy(v: Any) -> Any:
    """A stored value's own containers: a caller that keeps mutating the map or list it wrote
    must not change memory behind SQLite's back."""
    if type(v) is dict:
        return {k: _copy(x) for k, x in v.items()}
    if type(v) is list:
        return [_copy(x) for x in v]
    return v


def new_ref() -> str:
    return f"OpaqueRef:{uuidlib.uuid4()}"


@dataclass
class Row:
    cls: str
    record: dict[str, Any]
    created: int
    modified: int


@dataclass(frozen=True)
class Deleted:
    cls: str
    ref: str
    created: int
    deleted: int


class Database:
    """The tables. Thread-safe: handlers run in worker threads, event.from in the event loop."""

    def __init__(self, path: Path | None, datamodel: Datamodel | None = None) -> None:
        self.dm = datamodel or load()
        self._lock = threading.RLock()
        self._rows: dict[str, Row] = {}
        self._by_cls: dict[str, dict[str, Row]] = defaultdict(dict)
        self._uuid: dict[tuple[str, str], str] = {}
        #: (one class, set field) -> one ref -> many refs, for the computed link fields.
        self._links: dict[tuple[str, str], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        self._link_fields: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
        for one, c in self.dm.classes.items():
            for set_field, (many, ref_field) in c.links.items():
                self._link_fields[many].append((ref_field, one, set_field))
        self.deleted: list[Deleted] = []
        #: The counter, bumped when a transaction begins (so a reader in another thread may see
        #: a generation still being written, or one a rollback gives back); ``committed`` is the
        #: last one whose writes are all visible, the only one an event token may carry.
        self.generation = 0
        self.committed = 0
        self._depth = 0
        self._dirty: dict[str, Row | None] = {}
        self._dead: dict[str, Deleted] = {}
        self.listeners: list[Callable[[int], None]] = []
        self._sql = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False,
                                    isolation_level=None)
        self._sql.execute("PRAGMA journal_mode=WAL")
        self._sql.execute("PRAGMA synchronous=NORMAL")
        self._sql.executescript(
            "CREATE TABLE IF NOT EXISTS objects (ref TEXT PRIMARY KEY, cls TEXT NOT NULL,"
            " created INTEGER NOT NULL, modified INTEGER NOT NULL, record TEXT NOT NULL);"
            "CREATE TABLE IF NOT EXISTS deleted (ref TEXT PRIMARY KEY, cls TEXT NOT NULL,"
            " created INTEGER NOT NULL, deleted INTEGER NOT NULL);"
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);")
        self._load()

    # -- loading and persistence -------------------------------------------------------------

    def _load(self) -> None:
        for ref, cls, created, modified, text in self._sql.execute(
                "SELECT ref, cls, created, modified, record FROM objects"):
            if cls not in self.dm.classes:
                continue
            record = self.dm.defaults(cls)
            record.update(json.loads(text))  # fields a newer datamodel added get their defaults
            self._index(ref, Row(cls, record, created, modified))
        self.deleted = [Deleted(c, r, cr, d) for r, c, cr, d in self._sql.execute(
            "SELECT ref, cls, created, deleted FROM deleted ORDER BY deleted")]
        row = self._sql.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
        self.generation = int(row[0]) if row else 0
        self.committed = self.generation

    def close(self) -> None:
        with self._lock:
            self._sql.close()

    def _index(self, ref: str, row: Row) -> None:
        self._rows[ref] = row
        self._by_cls[row.cls][ref] = row
        if "uuid" in row.record:
            self._uuid[(row.cls, row.record["uuid"])] = ref
        for ref_field, one, set_field in self._link_fields[row.cls]:
            target = row.record.get(ref_field, NULL_REF)
            if target != NULL_REF:
                self._links[(one, set_field)][target].add(ref)

    def _unindex(self, ref: str) -> Row:
        row = self._rows.pop(ref)
        del self._by_cls[row.cls][ref]
        if "uuid" in row.record:
            self._uuid.pop((row.cls, row.record["uuid"]), None)
        for ref_field, one, set_field in self._link_fields[row.cls]:
            target = row.record.get(ref_field, NULL_REF)
            self._links[(one, set_field)].get(target, set()).discard(ref)
        return row

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes: one generation, one SQLite commit. Nested calls join the outer one."""
        with self._lock:
            if self._depth == 0:
                self.generation += 1
                self._dirty = {}
                self._dead = {}
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if self._depth == 0:
                    self._rollback()
                raise
            self._depth -= 1
            if self._depth == 0:
                self._commit()

    def _rollback(self) -> None:
        """Undo in memory: reload the touched rows from SQLite (the source of truth)."""
        for ref in self._dirty:
            if ref in self._rows:
                self._unindex(ref)
            got = self._sql.execute("SELECT cls, created, modified, record FROM objects WHERE ref=?",
                                    (ref,)).fetchone()
            if got:
                record = self.dm.defaults(got[0])
                record.update(json.loads(got[3]))
                self._index(ref, Row(got[0], record, got[1], got[2]))
        self.deleted = [d for d in self.deleted if d.deleted != self.generation]
        self.generation -= 1
        self._dirty = {}

    def _commit(self) -> None:
        if not self._dirty:
            self.generation -= 1
            return
        gen = self.generation
        cur = self._sql.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            for ref, row in self._dirty.items():
                if row is None:
                    cur.execute("DELETE FROM objects WHERE ref=?", (ref,))
                    d = self._dead.get(ref)
                    if d:
                        cur.execute("INSERT OR REPLACE INTO deleted VALUES (?,?,?,?)",
                                    (ref, d.cls, d.created, d.deleted))
                else:
                    cur.execute("INSERT OR REPLACE INTO objects VALUES (?,?,?,?,?)",
                                (ref, row.cls, row.created, row.modified, json.dumps(row.record)))
            cur.execute("INSERT OR REPLACE INTO meta VALUES ('generation', ?)", (str(gen),))
            if len(self.deleted) > DELETED_KEPT:
                cut = self.deleted[-DELETED_KEPT].deleted
                self.deleted = self.deleted[-DELETED_KEPT:]
                cur.execute("DELETE FROM deleted WHERE deleted < ?", (cut,))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            self._rollback()
            raise
        self._dirty = {}
        self.committed = gen
        for listener in list(self.listeners):
            listener(gen)

    # -- reads -------------------------------------------------------------------------------

    def _row(self, cls: str, ref: str) -> Row:
        row = self._rows.get(ref) if isinstance(ref, str) else None
        if row is None or row.cls != cls:
            raise handle_invalid(cls, ref)
        return row

    def exists(self, cls: str, ref: str) -> bool:
        row = self._rows.get(ref)
        return row is not None and row.cls == cls

    def class_of(self, ref: str) -> str | None:
        row = self._rows.get(ref)
        return row.cls if row else None

    def _full(self, cls: str, ref: str, record: dict[str, Any]) -> dict[str, Any]:
        out = dict(record)
        for set_field in self.dm.classes[cls].links:
            out[set_field] = sorted(self._links[(cls, set_field)].get(ref, ()))
        return out

    def get(self, cls: str, ref: str) -> dict[str, Any]:
        """The whole record (link fields computed). HANDLE_INVALID if absent. A new dict, but
        its maps and sets are the stored ones (copying them would cost get_all_records a sixth
        of its time): read them, write changes back with :meth:`set`."""
        with self._lock:
            return self._full(cls, ref, self._row(cls, ref).record)

    def field(self, cls: str, ref: str, name: str) -> Any:
        with self._lock:
            row = self._row(cls, ref)
            if name in self.dm.classes[cls].links:
                return sorted(self._links[(cls, name)].get(ref, ()))
            return row.record[name]

    def refs(self, cls: str) -> list[str]:
        with self._lock:
            return list(self._by_cls[cls])

    def records(self, cls: str) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {ref: self._full(cls, ref, row.record) for ref, row in self._by_cls[cls].items()}

    def find(self, cls: str, **equal: Any) -> list[str]:
        with self._lock:
            return [ref for ref, row in self._by_cls[cls].items()
                    if all(row.record.get(k) == v for k, v in equal.items())]

    def by_uuid(self, cls: str, uuid: str) -> str:
        with self._lock:
            ref = self._uuid.get((cls, uuid))
        if ref is None:
            raise ApiError("UUID_INVALID", cls, uuid)
        return ref

    def count(self, cls: str) -> int:
        return len(self._by_cls[cls])

    def changes_since(self, gen: int) -> tuple[list[tuple[str, str, Row]], list[Deleted]]:
        """Rows modified after ``gen`` (ref, cls, row) and deletions after ``gen``."""
        with self._lock:
            rows = [(ref, row.cls, Row(row.cls, self._full(row.cls, ref, row.record), row.created, row.modified))
                    for ref, row in self._rows.items() if row.modified > gen]
            dels = [d for d in self.deleted if d.deleted > gen and d.created <= gen]
        return rows, dels

    # -- writes ------------------------------------------------------------------------------

    def create(self, cls: str, fields: dict[str, Any], ref: str | None = None) -> str:
        """A new row: datamodel defaults, then ``fields``; a fresh uuid unless given."""
        if cls not in self.dm.classes:
            raise ApiError("INTERNAL_ERROR", f"no such class {cls}")
        record = self.dm.defaults(cls)
        links = self.dm.classes[cls].links
        record.update({k: _copy(v) for k, v in fields.items() if k in record and k not in links})
        if "uuid" in record and not record["uuid"]:
            record["uuid"] = str(uuidlib.uuid4())
        ref = ref or new_ref()
        with self.transaction():
            if ref in self._rows:
                raise ApiError("INTERNAL_ERROR", f"duplicate reference {ref}")
            if "uuid" in record and (cls, record["uuid"]) in self._uuid:
                raise ApiError("DB_UNIQUENESS_CONSTRAINT_VIOLATION", cls, "uuid", record["uuid"])
            row = Row(cls, record, self.generation, self.generation)
            self._index(ref, row)
            self._dirty[ref] = row
            self._touch_targets(cls, record)
        return ref

    def set(self, cls: str, ref: str, **fields: Any) -> None:
        with self.transaction():
            row = self._row(cls, ref)
            links = self.dm.classes[cls].links
            for k in fields:  # all checked before any is written: a refused set changes nothing
                if k not in row.record or k in links:
                    raise ApiError("INTERNAL_ERROR", f"{cls} has no stored field {k}")
            before = dict(row.record)
            self._unindex(ref)
            row.record.update({k: _copy(v) for k, v in fields.items()})
            row.modified = self.generation
            self._index(ref, row)
            self._dirty[ref] = row
            self._touch_targets(cls, before, fields)

    def destroy(self, cls: str, ref: str) -> None:
        with self.transaction():
            row = self._row(cls, ref)
            self._unindex(ref)
            self._dead[ref] = Deleted(cls, ref, row.created, self.generation)
            self.deleted.append(self._dead[ref])
            self._dirty[ref] = None
            self._touch_targets(cls, row.record)

    def touch(self, cls: str, ref: str) -> None:
        """Mark a row modified (event.inject; a link field of it changed)."""
        with self.transaction():
            row = self._row(cls, ref)
            row.modified = self.generation
            self._dirty[ref] = row

    def _touch_targets(self, cls: str, record: dict[str, Any], changed: dict[str, Any] | None = None) -> None:
        """A row whose computed link field changed is itself modified (xapi sends a mod event
        for the VM when a VBD is added to it)."""
        for ref_field, one, _ in self._link_fields[cls]:
            if changed is not None and ref_field not in changed:
                continue
            for target in {record.get(ref_field), (changed or {}).get(ref_field)}:
                row = self._rows.get(target) if isinstance(target, str) else None
                if row is not None and row.cls == one and isinstance(target, str):
                    row.modified = self.generation
                    self._dirty[target] = row
