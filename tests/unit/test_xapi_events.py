"""pyxen.xapi's events against ocaml/xapi/xapi_event.ml: event.from over generation stamps
(token "%020d,%020d", "" = everything as add, then add/mod/del since the token, the latest
snapshot once), valid_ref_counts, timeouts, subscriptions, event.inject, and the legacy
register/next/unregister."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from pyxen.xapi.events import parse_token, token
from pyxen.xapi.server import Xapi
from pyxen.xapi.wire import Int32

from .test_xapi_dispatch import vm_record
from .xapi_fixtures import call, fails, login, xapi  # noqa: F401

TOKEN = re.compile(r"^\d{20},\d{20}$")


async def event_from(x: Xapi, s: str, classes: list[str], tok: str, timeout: float = 0.5) -> dict[str, Any]:
    return dict(await call(x, "event.from", s, classes, tok, timeout))


def ops(batch: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(e["operation"], e["class"], e["ref"]) for e in batch["events"]]


async def test_empty_token_reports_every_object_as_add(xapi: Xapi) -> None:
    s = await login(xapi)
    got = await event_from(xapi, s, ["*"], "")
    assert TOKEN.match(got["token"])
    assert all(e["operation"] == "add" for e in got["events"])
    seen = {(e["class"], e["ref"]) for e in got["events"]}
    for cls in ("VM", "host", "pool", "SR", "PBD", "network", "PIF", "host_metrics", "VM_metrics"):
        for ref in await call(xapi, f"{cls}.get_all", s):
            assert (cls.lower(), ref) in seen
    # no sessions in events, even with "*"
    assert not any(e["class"] == "session" for e in got["events"])
    vm_ev = next(e for e in got["events"] if e["class"] == "vm")
    assert vm_ev["snapshot"] == await call(xapi, "VM.get_record", s, vm_ev["ref"])
    assert vm_ev["timestamp"] == "0.0" and vm_ev["id"].isdigit()
    assert set(vm_ev) == {"id", "timestamp", "class", "operation", "ref", "snapshot"}


async def test_then_only_changes_since_the_token(xapi: Xapi) -> None:
    s = await login(xapi)
    tok = (await event_from(xapi, s, ["VM"], ""))["token"]
    vm = await call(xapi, "VM.create", s, vm_record(name_label="a"))
    await call(xapi, "VM.set_name_label", s, vm, "b")
    got = await event_from(xapi, s, ["VM"], tok)
    # created and modified since the token: one add with the latest snapshot
    assert ops(got) == [("add", "vm", vm)] and got["events"][0]["snapshot"]["name_label"] == "b"
    assert got["token"] > tok
    tok2 = got["token"]
    await call(xapi, "VM.set_name_label", s, vm, "c")
    await call(xapi, "VM.set_name_description", s, vm, "d")
    got = await event_from(xapi, s, ["VM"], tok2)
    assert ops(got) == [("mod", "vm", vm)]  # two changes collapse into one
    snap = got["events"][0]["snapshot"]
    assert (snap["name_label"], snap["name_description"]) == ("c", "d")
    assert int(got["events"][0]["id"]) == int(got["token"].split(",")[0])
    tok3 = got["token"]
    await call(xapi, "VM.destroy", s, vm)
    got = await event_from(xapi, s, ["VM"], tok3)
    assert ops(got) == [("del", "vm", vm)] and "snapshot" not in got["events"][0]
    # made and destroyed between two calls: the client never hears of it
    gone = await call(xapi, "VM.create", s, vm_record())
    await call(xapi, "VM.destroy", s, gone)
    got = await event_from(xapi, s, ["VM"], got["token"], timeout=0.2)
    assert got["events"] == []


async def test_add_event_id_is_the_creation_generation(xapi: Xapi) -> None:
    s = await login(xapi)
    tok = (await event_from(xapi, s, ["VM"], ""))["token"]
    vm = await call(xapi, "VM.create", s, vm_record())
    created = xapi.db.committed
    await call(xapi, "VM.set_name_label", s, vm, "later")
    got = await event_from(xapi, s, ["VM"], tok)
    assert got["events"][0]["operation"] == "add" and got["events"][0]["id"] == str(created)


async def test_a_new_vbd_is_a_mod_of_its_vm(xapi: Xapi) -> None:
    s = await login(xapi)
    vm = await call(xapi, "VM.create", s, vm_record())
    tok = (await event_from(xapi, s, ["VM", "VBD"], ""))["token"]
    vbd = await call(xapi, "VBD.create", s, {"VM": vm, "VDI": "OpaqueRef:NULL", "userdevice": "3",
                                             "bootable": False, "mode": "RO", "type": "CD", "empty": True,
                                             "other_config": {}, "qos_algorithm_type": "",
                                             "qos_algorithm_params": {}})
    got = await event_from(xapi, s, ["VM", "VBD"], tok)
    assert sorted(ops(got)) == [("add", "vbd", vbd), ("mod", "vm", vm)]
    assert next(e for e in got["events"] if e["class"] == "vm")["snapshot"]["VBDs"] == [vbd]


async def test_valid_ref_counts(xapi: Xapi) -> None:
    s = await login(xapi)
    got = await event_from(xapi, s, ["VM"], "")
    counts = got["valid_ref_counts"]
    assert counts["vm"] == len(await call(xapi, "VM.get_all", s)) and isinstance(counts["vm"], Int32)
    assert counts["host"] == 1 and counts["pool"] == 1 and "task" in counts
    assert all(k == k.lower() for k in counts)


async def test_timeout_returns_no_events_and_a_token(xapi: Xapi) -> None:
    s = await login(xapi)
    tok = (await event_from(xapi, s, ["VM"], ""))["token"]
    # a change to a class nobody watches does not end the wait
    await call(xapi, "SR.set_name_description", s, (await call(xapi, "SR.get_all", s))[0], "elsewhere")
    t0 = time.monotonic()
    got = await event_from(xapi, s, ["VM"], tok, timeout=0.3)
    assert got["events"] == [] and TOKEN.match(got["token"]) and got["token"] >= tok
    assert 0.25 <= time.monotonic() - t0 < 2
    # and that token still sees the next VM change
    vm = (await call(xapi, "VM.get_all", s))[0]
    await call(xapi, "VM.add_to_other_config", s, vm, "k", "v")
    assert ops(await event_from(xapi, s, ["VM"], got["token"])) == [("mod", "vm", vm)]


async def test_a_waiting_call_wakes_on_a_change(xapi: Xapi) -> None:
    s = await login(xapi)
    tok = (await event_from(xapi, s, ["VM"], ""))["token"]
    vm = (await call(xapi, "VM.get_all", s))[0]
    waiter = asyncio.create_task(event_from(xapi, s, ["VM"], tok, timeout=10.0))
    await asyncio.sleep(0.1)
    assert not waiter.done()
    t0 = time.monotonic()
    await call(xapi, "VM.set_name_description", s, vm, "woken")
    got = await asyncio.wait_for(waiter, 5)
    assert ops(got) == [("mod", "vm", vm)] and time.monotonic() - t0 < 2


async def test_token_format_and_bad_tokens(xapi: Xapi) -> None:
    assert token(42) == "00000000000000000042,00000000000000000000"
    assert parse_token("") == 0 and parse_token(token(42)) == 42
    s = await login(xapi)
    for bad in ("garbage", "12", "1,2,3", "a,b", "1,x", ","):
        assert await fails(xapi, "event.from", s, ["*"], bad, 0.1) == ["EVENT_FROM_TOKEN_PARSE_FAILURE", bad], bad


async def test_subscriptions(xapi: Xapi) -> None:
    s = await login(xapi)
    tok = (await event_from(xapi, s, ["*"], ""))["token"]
    a = await call(xapi, "VM.create", s, vm_record(name_label="a"))
    b = await call(xapi, "VM.create", s, vm_record(name_label="b"))
    # one object, class in any case
    assert ops(await event_from(xapi, s, [f"vm/{a}"], tok)) == [("add", "vm", a)]
    assert ops(await event_from(xapi, s, [f"VM/{b}"], tok)) == [("add", "vm", b)]
    # a ref under another class's name selects nothing (xapi matches class and ref)
    assert (await event_from(xapi, s, [f"host/{a}"], tok, timeout=0.1))["events"] == []
    # "vm" and "VM" are the same class
    assert sorted(ops(await event_from(xapi, s, ["vm"], tok))) == sorted([("add", "vm", a), ("add", "vm", b)])
    # xapi's Subscription.of_string refuses nothing: an unknown class just selects nothing
    got = await event_from(xapi, s, ["no_such_class", f"vm/{a}"], tok)
    assert ops(got) == [("add", "vm", a)]


async def test_inject(xapi: Xapi) -> None:
    s = await login(xapi)
    pool = (await call(xapi, "pool.get_all", s))[0]
    tok = await call(xapi, "event.inject", s, "pool", pool)
    assert TOKEN.match(tok)
    # the token is just before the touch: the next event.from reports the pool, as XO expects
    got = await event_from(xapi, s, ["pool"], tok)
    assert ops(got) == [("mod", "pool", pool)]
    assert await fails(xapi, "event.inject", s, "pool", "OpaqueRef:nope") == \
        ["HANDLE_INVALID", "pool", "OpaqueRef:nope"]
    assert await fails(xapi, "event.inject", s, "VM", pool) == ["HANDLE_INVALID", "VM", pool]


async def test_register_next_unregister(xapi: Xapi) -> None:
    s = await login(xapi)
    assert await fails(xapi, "event.next", s) == ["SESSION_NOT_REGISTERED", s]
    await call(xapi, "event.register", s, ["VM"])
    before = await call(xapi, "event.get_current_id", s)
    vm = await call(xapi, "VM.create", s, vm_record())  # only changes after register are reported
    got = await asyncio.wait_for(call(xapi, "event.next", s), 5)
    assert [(e["operation"], e["class"], e["ref"]) for e in got] == [("add", "vm", vm)]
    assert float(got[0]["timestamp"]) > 0 and int(got[0]["id"]) > before
    await call(xapi, "VM.set_name_label", s, vm, "x")
    got = await asyncio.wait_for(call(xapi, "event.next", s), 5)
    assert [(e["operation"], e["ref"]) for e in got] == [("mod", vm)]
    # after unregister, VM changes no longer end the wait
    await call(xapi, "event.unregister", s, ["VM"])
    await call(xapi, "event.register", s, ["SR"])
    waiter = asyncio.create_task(call(xapi, "event.next", s))
    await call(xapi, "VM.set_name_label", s, vm, "y")
    await asyncio.sleep(0.4)
    assert not waiter.done()
    sr = (await call(xapi, "SR.get_all", s))[0]
    await call(xapi, "SR.set_name_description", s, sr, "z")
    got = await asyncio.wait_for(waiter, 5)
    assert [(e["class"], e["ref"]) for e in got] == [("sr", sr)]


async def test_logout_ends_a_waiting_next(xapi: Xapi) -> None:
    s = await login(xapi)
    await call(xapi, "event.register", s, ["VM"])
    waiter = asyncio.create_task(call(xapi, "event.next", s))
    await asyncio.sleep(0.3)
    other = await login(xapi)
    await call(xapi, "session.logout", s)
    await call(xapi, "VM.get_all", other)
    try:
        await asyncio.wait_for(waiter, 5)
    except Exception as err:  # noqa: BLE001
        assert getattr(err, "description", None) == ["SESSION_INVALID", s]
    else:
        raise AssertionError("event.next returned after its session logged out")


async def test_a_generation_given_back_is_not_in_a_token(xapi: Xapi) -> None:
    """A transaction that writes nothing (or rolls back) gives its generation back, and the next
    commit takes the same number. A waiting event.from that saw the number while it was in use
    must not treat it as delivered: the later change would be lost."""
    import threading
    s = await login(xapi)
    tok = (await event_from(xapi, s, ["VM"], ""))["token"]
    vm = (await call(xapi, "VM.get_all", s))[0]
    inside = threading.Event()

    def idle_transaction() -> None:
        with xapi.db.transaction():
            inside.set()
            time.sleep(0.3)

    worker = threading.Thread(target=idle_transaction)
    worker.start()
    inside.wait(5)
    waiter = asyncio.create_task(event_from(xapi, s, ["VM"], tok, timeout=3.0))
    await asyncio.sleep(0.1)
    await asyncio.get_running_loop().run_in_executor(None, worker.join)
    await call(xapi, "VM.set_name_description", s, vm, "after the idle transaction")
    got = await asyncio.wait_for(waiter, 5)
    assert ops(got) == [("mod", "vm", vm)]
