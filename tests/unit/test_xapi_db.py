"""pyxen.xapi.db: xapi's database (in-memory tables written through to SQLite).

Checked against xapi's own database (ocaml/database): rows keyed by ref with created/modified/
deleted generation stamps, one generation per transaction, the ``all_relations`` link fields
(VBD.VM <-> VM.VBDs) kept consistent by the server, and writes that survive the daemon's death.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pyxen.xapi.datamodel import EPOCH, NULL_REF, load
from pyxen.xapi.db import Database
from pyxen.xapi.errors import ApiError

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def db(tmp_path: Path) -> Database:
    d = Database(tmp_path / "state.db")
    yield d
    d.close()


def sql_record(path: Path, ref: str) -> dict | None:
    """The row as SQLite has it (a second connection, as a restarted xapi would read it)."""
    con = sqlite3.connect(str(path))
    try:
        got = con.execute("SELECT record FROM objects WHERE ref=?", (ref,)).fetchone()
    finally:
        con.close()
    return json.loads(got[0]) if got else None


def vm(db: Database, **fields: object) -> str:
    return db.create("VM", {"name_label": "vm", **fields})


# -- create / get / set / destroy -------------------------------------------------------------

def test_create_fills_datamodel_defaults_and_a_uuid(db: Database) -> None:
    ref = vm(db)
    assert ref.startswith("OpaqueRef:") and ref != NULL_REF
    rec = db.get("VM", ref)
    dm = load()
    # every field of the class is in the record (clients index fields directly)
    assert set(rec) == set(dm.classes["VM"].fields)
    assert rec["name_label"] == "vm"
    assert rec["power_state"] == "Halted"  # the datamodel's default
    assert rec["resident_on"] == NULL_REF
    assert rec["VBDs"] == [] and rec["other_config"] == {}
    assert rec["snapshot_time"] == EPOCH
    assert rec["HVM_shadow_multiplier"] == 1.0
    assert len(rec["uuid"]) == 36 and rec["uuid"].count("-") == 4
    assert db.by_uuid("VM", rec["uuid"]) == ref


def test_stored_values_are_the_databases_own(db: Database) -> None:
    a, b = vm(db), vm(db)
    mine = {"k": "v"}
    tags = ["t"]
    db.set("VM", a, other_config=mine, tags=tags)
    assert db.get("VM", b)["other_config"] == {}  # defaults are not shared between rows
    mine["x"] = "y"  # the caller keeps using its dict: memory must not move behind SQLite
    tags.append("u")
    assert db.get("VM", a)["other_config"] == {"k": "v"} and db.get("VM", a)["tags"] == ["t"]
    made = {"a": "b"}
    c = db.create("VM", {"other_config": made})
    made.clear()
    assert db.get("VM", c)["other_config"] == {"a": "b"}


def test_get_set_destroy_and_handle_invalid(db: Database) -> None:
    ref = vm(db)
    db.set("VM", ref, name_label="renamed", VCPUs_max=4)
    assert db.field("VM", ref, "name_label") == "renamed"
    assert db.get("VM", ref)["VCPUs_max"] == 4
    with pytest.raises(ApiError) as e:
        db.get("VBD", ref)  # a ref of another class is invalid for this one
    assert e.value.description == ["HANDLE_INVALID", "VBD", ref]
    db.destroy("VM", ref)
    with pytest.raises(ApiError) as e:
        db.get("VM", ref)
    assert e.value.description == ["HANDLE_INVALID", "VM", ref]
    assert ref not in db.refs("VM")


def test_uuid_index(db: Database) -> None:
    ref = db.create("VM", {"uuid": "11111111-2222-3333-4444-555555555555"})
    assert db.by_uuid("VM", "11111111-2222-3333-4444-555555555555") == ref
    with pytest.raises(ApiError) as e:
        db.by_uuid("VM", "00000000-0000-0000-0000-000000000000")
    assert e.value.description == ["UUID_INVALID", "VM", "00000000-0000-0000-0000-000000000000"]
    with pytest.raises(ApiError) as e:
        db.by_uuid("SR", "11111111-2222-3333-4444-555555555555")  # per class
    assert e.value.code == "UUID_INVALID"
    with pytest.raises(ApiError) as e:
        db.create("VM", {"uuid": "11111111-2222-3333-4444-555555555555"})
    assert e.value.code == "DB_UNIQUENESS_CONSTRAINT_VIOLATION"
    db.destroy("VM", ref)
    with pytest.raises(ApiError):
        db.by_uuid("VM", "11111111-2222-3333-4444-555555555555")


def test_find_and_records(db: Database) -> None:
    a = vm(db, name_label="a")
    b = vm(db, name_label="b")
    vm(db, name_label="a")
    assert len(db.find("VM", name_label="a")) == 2
    assert db.find("VM", name_label="b") == [b]
    recs = db.records("VM")
    assert recs[a]["name_label"] == "a" and len(recs) == 3 and db.count("VM") == 3


def test_set_of_an_unknown_or_link_field_changes_nothing(db: Database) -> None:
    """A refused set must not leave part of its fields written in memory (memory and SQLite
    would then disagree until the next restart)."""
    ref = vm(db)
    gen = db.generation
    with pytest.raises(ApiError) as e:
        db.set("VM", ref, name_label="half", no_such_field=1)
    assert e.value.code == "INTERNAL_ERROR"
    with pytest.raises(ApiError):
        db.set("VM", ref, name_label="half", VBDs=[])  # computed, never stored
    assert db.field("VM", ref, "name_label") == "vm"
    assert sql_record(Path(db._sql.execute("PRAGMA database_list").fetchone()[2]), ref)["name_label"] == "vm"
    assert db.generation == gen


# -- link fields (xapi's all_relations) ----------------------------------------------------------

def test_link_fields_follow_create_set_destroy(db: Database) -> None:
    v1, v2 = vm(db), vm(db)
    vdi = db.create("VDI", {"name_label": "d"})
    vbd = db.create("VBD", {"VM": v1, "VDI": vdi, "userdevice": "0"})
    assert db.get("VM", v1)["VBDs"] == [vbd]
    assert db.field("VDI", vdi, "VBDs") == [vbd]
    assert db.get("VM", v2)["VBDs"] == []
    db.set("VBD", vbd, VM=v2)
    assert db.get("VM", v1)["VBDs"] == [] and db.get("VM", v2)["VBDs"] == [vbd]
    db.destroy("VBD", vbd)
    assert db.get("VM", v2)["VBDs"] == [] and db.get("VDI", vdi)["VBDs"] == []
    # a NULL ref links to nothing
    db.create("VBD", {"VM": v1, "VDI": NULL_REF, "empty": True, "type": "CD"})
    assert len(db.get("VM", v1)["VBDs"]) == 1 and db.get("VDI", vdi)["VBDs"] == []


def test_link_field_passed_to_create_is_ignored(db: Database) -> None:
    other = vm(db)
    vbd = db.create("VBD", {"VM": other})
    ref = db.create("VM", {"VBDs": ["OpaqueRef:bogus"]})
    assert db.get("VM", ref)["VBDs"] == []
    assert db.get("VM", other)["VBDs"] == [vbd]


def test_a_new_link_touches_the_other_side(db: Database) -> None:
    """xapi sends a mod event for the VM when a VBD is added to it: the VM's modified stamp
    moves with the transaction that made the VBD."""
    v = vm(db)
    vbd = db.create("VBD", {"VM": v})
    rows, _ = db.changes_since(db.generation - 1)
    changed = {ref for ref, _, _ in rows}
    assert changed == {v, vbd}
    db.destroy("VBD", vbd)
    rows, dels = db.changes_since(db.generation - 1)
    assert {ref for ref, _, _ in rows} == {v} and [d.ref for d in dels] == [vbd]


# -- transactions and generations ------------------------------------------------------------

def test_one_generation_per_transaction(db: Database) -> None:
    g0 = db.generation
    with db.transaction():
        a = vm(db)
        b = vm(db)
        db.set("VM", a, name_label="x")
    assert db.generation == g0 + 1 == db.committed
    rows, _ = db.changes_since(g0)
    assert {r for r, _, _ in rows} == {a, b}
    assert all(row.created == row.modified == g0 + 1 for _, _, row in rows)
    db.set("VM", b, name_label="y")
    assert db.generation == g0 + 2
    rows, _ = db.changes_since(g0 + 1)
    assert [(r, row.created, row.modified) for r, _, row in rows] == [(b, g0 + 1, g0 + 2)]


def test_empty_transaction_takes_no_generation(db: Database) -> None:
    g0 = db.generation
    with db.transaction():
        pass
    assert db.generation == g0 == db.committed


def test_rollback_restores_memory_to_what_sqlite_has(db: Database, tmp_path: Path) -> None:
    keep = vm(db, name_label="keep")
    gone = vm(db, name_label="gone")
    vdi = db.create("VDI", {})
    g0 = db.generation
    made: list[str] = []
    with pytest.raises(RuntimeError):
        with db.transaction():
            db.set("VM", keep, name_label="changed", other_config={"a": "b"})
            db.destroy("VM", gone)
            made.append(db.create("VBD", {"VM": keep, "VDI": vdi}))
            db.set("VDI", vdi, name_label="renamed")
            raise RuntimeError("handler failed")
    assert db.generation == g0 == db.committed
    assert db.get("VM", keep)["name_label"] == "keep" and db.get("VM", keep)["other_config"] == {}
    assert db.get("VM", gone)["name_label"] == "gone"
    assert not db.exists("VBD", made[0])
    assert db.get("VM", keep)["VBDs"] == [] and db.get("VDI", vdi)["VBDs"] == []
    assert db.by_uuid("VM", db.get("VM", gone)["uuid"]) == gone
    assert db.changes_since(g0) == ([], [])
    # memory and SQLite agree, row by row
    path = tmp_path / "state.db"
    for ref in (keep, gone, vdi):
        stored = sql_record(path, ref)
        assert stored is not None
        live = db.get(db.class_of(ref) or "", ref)
        assert all(live[k] == v for k, v in stored.items())
    assert sql_record(path, made[0]) is None
    # and a reopened database sees the same thing
    again = Database(path)
    try:
        assert again.get("VM", keep)["name_label"] == "keep"
        assert again.exists("VM", gone) and not again.exists("VBD", made[0])
        assert again.generation == g0
    finally:
        again.close()


def test_nested_transactions_join_the_outer_one(db: Database) -> None:
    g0 = db.generation
    with db.transaction():
        a = vm(db)
        with db.transaction():
            db.set("VM", a, name_label="inner")
    assert db.generation == g0 + 1
    with pytest.raises(ValueError):
        with db.transaction():
            db.set("VM", a, name_label="outer")
            with db.transaction():
                db.set("VM", a, name_label="inner2")
            raise ValueError
    assert db.field("VM", a, "name_label") == "inner"


def test_deleted_rows_are_reported_once_and_only_if_seen(db: Database) -> None:
    g0 = db.generation
    a = vm(db)
    g1 = db.generation
    db.destroy("VM", a)
    _, dels = db.changes_since(g1)
    assert [(d.ref, d.cls) for d in dels] == [(a, "VM")]
    # created and deleted since the token: the client never saw it, no del
    assert db.changes_since(g0)[1] == []


# -- persistence ----------------------------------------------------------------------------

def test_persistence_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    d = Database(path)
    v = d.create("VM", {"name_label": "persisted", "other_config": {"k": "v"}, "VCPUs_max": 2})
    vbd = d.create("VBD", {"VM": v})
    dead = d.create("VM", {})
    d.destroy("VM", dead)
    gen = d.generation
    d.close()
    d = Database(path)
    try:
        rec = d.get("VM", v)
        assert rec["name_label"] == "persisted" and rec["other_config"] == {"k": "v"}
        assert rec["VCPUs_max"] == 2 and rec["VBDs"] == [vbd]  # links rebuilt from the rows
        assert d.by_uuid("VM", rec["uuid"]) == v
        assert d.generation == d.committed == gen
        assert [x.ref for x in d.deleted] == [dead]
        assert d.create("VM", {}) and d.generation == gen + 1
    finally:
        d.close()


WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from pyxen.xapi.db import Database
    db = Database(Path(sys.argv[1]))
    i = 0
    while True:
        with db.transaction():
            ref = db.create("VM", {"name_label": f"vm{i}", "other_config": {"i": str(i)}})
            db.create("VBD", {"VM": ref, "userdevice": str(i)})
        # acknowledged: the transaction has returned
        print(ref, flush=True)
        i += 1
""")


@pytest.mark.timeout(60)
def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    """xapi's promise on a crash: a change the caller saw succeed is there after a restart.
    A writer prints each ref once its transaction returned; SIGKILL at a random point; every
    printed row is in the reopened database, with its VBD, and SQLite's own check passes."""
    rng = random.Random(11)
    path = tmp_path / "state.db"
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    acked: list[str] = []
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE,
                                text=True, env=env)
        assert proc.stdout is not None
        want = len(acked) + rng.randint(5, 80)
        while len(acked) < want:
            line = proc.stdout.readline()
            assert line, "the writer died on its own"
            acked.append(line.strip())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        # what it printed after our last read was acknowledged too
        acked.extend(x.strip() for x in proc.stdout.read().splitlines() if x.strip())
        proc.stdout.close()
        d = Database(path)
        try:
            assert d._sql.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            for ref in acked:
                rec = d.get("VM", ref)
                assert len(rec["VBDs"]) == 1
                assert rec["name_label"] == f"vm{rec['other_config']['i']}"
            assert d.generation == d.committed >= len(acked)
        finally:
            d.close()
