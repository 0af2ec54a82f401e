"""pyxen.xapi's dispatcher, driven in-process (no HTTP): the checks xapi's generated server
makes before a handler runs (ocaml/idl/ocaml_backend/gen_server.ml, server_helpers.ml), the
implicit messages of the datamodel, Async tasks and task.cancel, each against the error codes
and parameter lists xapi sends (ocaml/xapi-consts/api_errors.ml)."""

from __future__ import annotations

import re
import threading
from typing import Any

import pytest

from pyxen.xapi.datamodel import NULL_REF
from pyxen.xapi.dispatch import HANDLERS
from pyxen.xapi.server import Xapi
from pyxen.xapi.wire import decode_xmlrpc

from .xapi_fixtures import PASSWORD, call, fails, login, wait_task, xapi  # noqa: F401

def vm_record(**over: Any) -> dict[str, Any]:
    """VM.create's required keys (xapi's constructor has no default for them)."""
    rec: dict[str, Any] = {
        "name_label": "made", "user_version": "1", "is_a_template": False, "affinity": NULL_REF,
        "memory_static_max": str(256 * 2**20), "memory_dynamic_max": str(256 * 2**20),
        "memory_dynamic_min": str(256 * 2**20), "memory_static_min": str(64 * 2**20),
        "VCPUs_params": {}, "VCPUs_max": "1", "VCPUs_at_startup": "1",
        "actions_after_shutdown": "destroy", "actions_after_reboot": "restart",
        "actions_after_crash": "restart", "PV_bootloader": "", "PV_kernel": "", "PV_ramdisk": "",
        "PV_args": "", "PV_bootloader_args": "", "PV_legacy_args": "", "HVM_boot_policy": "",
        "HVM_boot_params": {}, "platform": {}, "PCI_bus": "", "other_config": {}, "recommendations": "",
    }
    rec.update(over)
    return rec


# -- names, arity, sessions --------------------------------------------------------------------

async def test_login_and_wrong_password(xapi: Xapi) -> None:
    s = await login(xapi)
    assert s.startswith("OpaqueRef:")
    # version and originator have defaults: 2, 3 and 4 parameters all work
    assert (await call(xapi, "session.login_with_password", "root", PASSWORD, "2.3")).startswith("OpaqueRef:")
    assert (await call(xapi, "session.login_with_password", "root", PASSWORD, "2.3", "t")).startswith("OpaqueRef:")
    err = await fails(xapi, "session.login_with_password", "root", "wrong")
    assert err[:2] == ["SESSION_AUTHENTICATION_FAILED", "root"] and len(err) == 3
    assert (await fails(xapi, "session.login_with_password", "root")) == \
        ["MESSAGE_PARAMETER_COUNT_MISMATCH", "session.login_with_password", "2", "1"]


async def test_unknown_method(xapi: Xapi) -> None:
    s = await login(xapi)
    assert await fails(xapi, "VM.no_such_message", s) == ["MESSAGE_METHOD_UNKNOWN", "VM.no_such_message"]
    assert await fails(xapi, "NoClass.get_all", s) == ["MESSAGE_METHOD_UNKNOWN", "NoClass.get_all"]
    assert await fails(xapi, "nonsense", s) == ["MESSAGE_METHOD_UNKNOWN", "nonsense"]
    # xapi strips Async. before matching, and names what is left
    assert await fails(xapi, "Async.VM.no_such", s) == ["MESSAGE_METHOD_UNKNOWN", "VM.no_such"]


async def test_parameter_count_mismatch(xapi: Xapi) -> None:
    s = await login(xapi)
    vm = (await call(xapi, "VM.get_all", s))[0]
    # [method, expected, received], both counts without the session
    assert await fails(xapi, "VM.start", s, vm) == ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.start", "3", "1"]
    assert await fails(xapi, "VM.start", s, vm, False, False, 1) == \
        ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.start", "3", "4"]
    assert await fails(xapi, "VM_start", s) == ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM_start", "3", "0"]
    assert await fails(xapi, "Async.VM.start", s) == ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.start", "3", "0"]
    assert await fails(xapi, "VM.get_all", s, "extra") == ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.get_all", "0", "1"]
    # a session message sent nothing at all: xapi counts -1 (the missing session included)
    assert await fails(xapi, "VM.get_all") == ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.get_all", "0", "-1"]
    # a message with defaults matches xapi's "p1 :: p2 :: default_args": extras are ignored
    assert (await call(xapi, "session.login_with_password", "root", PASSWORD, "2.3", "o", "x")).startswith("OpaqueRef:")


async def test_session_checks(xapi: Xapi) -> None:
    assert await fails(xapi, "VM.get_all", "OpaqueRef:nope") == ["SESSION_INVALID", "OpaqueRef:nope"]
    s = await login(xapi)
    assert await call(xapi, "VM.get_all", s)
    vm = (await call(xapi, "VM.get_all", s))[0]
    assert await fails(xapi, "VM.get_all", vm) == ["SESSION_INVALID", vm]  # a ref, but not a session
    await call(xapi, "session.logout", s)
    assert await fails(xapi, "VM.get_all", s) == ["SESSION_INVALID", s]
    assert await fails(xapi, "VM.get_all", 42) == ["SESSION_INVALID", "42"]
    s2 = await login(xapi)
    assert await call(xapi, "session.get_this_host", s2, s2) == xapi.host_ref
    assert (await call(xapi, "session.get_record", s2, s2))["this_host"] == xapi.host_ref


async def test_underscore_spelling_and_event_from(xapi: Xapi) -> None:
    s = await login(xapi)
    assert await call(xapi, "VM_get_all", s) == await call(xapi, "VM.get_all", s)
    assert await call(xapi, "VM_metrics_get_all", s) == await call(xapi, "VM_metrics.get_all", s)
    got = await call(xapi, "event_from", s, ["pool"], "", 1.0)  # the Python client's spelling
    assert [e["class"] for e in got["events"]] == ["pool"]


async def test_system_list_methods(xapi: Xapi) -> None:
    names = await call(xapi, "system.listMethods")  # no session
    assert "VM.start" in names and "VM.get_all_records" in names and "event.from" in names
    assert "session.login_with_password" in names and "task.cancel" in names
    assert len(names) == len(set(names)) > 1000


# -- the implicit messages ----------------------------------------------------------------------

async def test_get_record_get_by_uuid_and_handle_invalid(xapi: Xapi) -> None:
    s = await login(xapi)
    recs = await call(xapi, "VM.get_all_records", s)
    dom0 = next(r for r, v in recs.items() if v["is_control_domain"])
    rec = await call(xapi, "VM.get_record", s, dom0)
    assert rec["power_state"] == "Running" and rec["domid"] == 0
    assert await call(xapi, "VM.get_by_uuid", s, rec["uuid"]) == dom0
    assert await call(xapi, "VM.get_uuid", s, dom0) == rec["uuid"]
    assert await fails(xapi, "VM.get_by_uuid", s, "not-a-uuid") == ["UUID_INVALID", "VM", "not-a-uuid"]
    assert await fails(xapi, "VM.get_record", s, "OpaqueRef:gone") == ["HANDLE_INVALID", "VM", "OpaqueRef:gone"]
    assert await fails(xapi, "SR.get_record", s, dom0) == ["HANDLE_INVALID", "SR", dom0]
    assert await fails(xapi, "VM.get_name_label", s, NULL_REF) == ["HANDLE_INVALID", "VM", NULL_REF]


async def test_get_by_name_label_is_a_set(xapi: Xapi) -> None:
    s = await login(xapi)
    a = await call(xapi, "VM.create", s, vm_record(name_label="twin"))
    b = await call(xapi, "VM.create", s, vm_record(name_label="twin"))
    assert sorted(await call(xapi, "VM.get_by_name_label", s, "twin")) == sorted([a, b])
    assert await call(xapi, "VM.get_by_name_label", s, "nobody") == []


async def test_setters_coerce_and_refuse(xapi: Xapi) -> None:
    s = await login(xapi)
    vm = await call(xapi, "VM.create", s, vm_record())
    await call(xapi, "VM.set_name_label", s, vm, "new name")
    assert await call(xapi, "VM.get_name_label", s, vm) == "new name"
    await call(xapi, "VM.set_user_version", s, vm, "8589934592")  # 64-bit ints arrive as strings
    assert await call(xapi, "VM.get_user_version", s, vm) == 8589934592
    assert await fails(xapi, "VM.set_user_version", s, vm, "lots") == ["FIELD_TYPE_ERROR", "value"]
    assert await fails(xapi, "VM.set_is_a_template", s, vm, "maybe") == ["FIELD_TYPE_ERROR", "value"]
    assert await fails(xapi, "VM.set_name_label", s, vm, 5) == ["FIELD_TYPE_ERROR", "value"]
    assert await fails(xapi, "VM.set_other_config", s, vm, ["a"]) == ["FIELD_TYPE_ERROR", "value"]
    await call(xapi, "VM.set_actions_after_shutdown", s, vm, "restart")
    assert await fails(xapi, "VM.set_actions_after_shutdown", s, vm, "explode") == \
        ["INVALID_VALUE", "actions_after_shutdown", "explode"]
    assert await call(xapi, "VM.get_actions_after_shutdown", s, vm) == "restart"
    # a read-only field has no setter at all
    assert await fails(xapi, "VM.set_power_state", s, vm, "Running") == ["MESSAGE_METHOD_UNKNOWN", "VM.set_power_state"]


async def test_map_and_set_accessors(xapi: Xapi) -> None:
    s = await login(xapi)
    vm = await call(xapi, "VM.create", s, vm_record())
    uuid = await call(xapi, "VM.get_uuid", s, vm)
    await call(xapi, "VM.add_to_other_config", s, vm, "k", "v")
    assert await fails(xapi, "VM.add_to_other_config", s, vm, "k", "w") == \
        ["MAP_DUPLICATE_KEY", "VM", "other_config", uuid, "k"]
    assert await call(xapi, "VM.get_other_config", s, vm) == {"k": "v"}
    await call(xapi, "VM.remove_from_other_config", s, vm, "k")
    await call(xapi, "VM.remove_from_other_config", s, vm, "absent")  # not an error in xapi
    assert await call(xapi, "VM.get_other_config", s, vm) == {}
    await call(xapi, "VM.add_tags", s, vm, "red")
    await call(xapi, "VM.add_tags", s, vm, "red")  # a set: no duplicate
    await call(xapi, "VM.add_tags", s, vm, "blue")
    assert await call(xapi, "VM.get_tags", s, vm) == ["red", "blue"]
    await call(xapi, "VM.remove_tags", s, vm, "red")
    assert await call(xapi, "VM.get_tags", s, vm) == ["blue"]
    await call(xapi, "VM.set_tags", s, vm, [])
    assert await call(xapi, "VM.get_tags", s, vm) == []
    # enum-keyed map: the values must be in the enum
    await call(xapi, "VM.add_to_blocked_operations", s, vm, "start", "because")
    assert await call(xapi, "VM.get_blocked_operations", s, vm) == {"start": "because"}


async def test_create_destroy_and_links(xapi: Xapi) -> None:
    s = await login(xapi)
    vm = await call(xapi, "VM.create", s, vm_record(unknown_key="ignored", power_state="Halted"))
    rec = await call(xapi, "VM.get_record", s, vm)
    assert rec["memory_static_max"] == 256 * 2**20 and rec["VCPUs_max"] == 1  # coerced from strings
    net = await call(xapi, "network.create", s, {"name_label": "n", "other_config": {}})
    vif = await call(xapi, "VIF.create", s, {"device": "0", "network": net, "VM": vm, "MAC": "", "MTU": "1500",
                                              "other_config": {}, "qos_algorithm_type": "",
                                              "qos_algorithm_params": {}})
    assert await call(xapi, "VM.get_VIFs", s, vm) == [vif]
    assert await call(xapi, "network.get_VIFs", s, net) == [vif]
    await call(xapi, "VIF.destroy", s, vif)
    assert await call(xapi, "VM.get_VIFs", s, vm) == []
    # a constructor's ref must exist
    assert await fails(xapi, "VIF.create", s, {"device": "0", "network": "OpaqueRef:x", "VM": vm, "MAC": "",
                                                "MTU": "1500", "other_config": {}, "qos_algorithm_type": "",
                                                "qos_algorithm_params": {}}) == \
        ["HANDLE_INVALID", "network", "OpaqueRef:x"]
    assert await fails(xapi, "VM.create", s, vm_record(actions_after_crash="sulk")) == \
        ["INVALID_VALUE", "actions_after_crash", "sulk"]
    assert await fails(xapi, "VM.create", s, "not a struct") == ["FIELD_TYPE_ERROR", "args"]


async def test_create_with_a_missing_required_field(xapi: Xapi) -> None:
    s = await login(xapi)
    rec = vm_record()
    del rec["memory_static_max"]
    err = await fails(xapi, "VM.create", s, rec)
    assert err[0] == "INTERNAL_ERROR" and "Dispatcher_FieldNotFound" in err[1] and "memory_static_max" in err[1]
    assert await fails(xapi, "network.create", s, {}) == \
        ["INTERNAL_ERROR", 'Dispatcher_FieldNotFound("other_config")']


# -- Async and tasks ----------------------------------------------------------------------------

async def test_async_success_and_failure(xapi: Xapi) -> None:
    s = await login(xapi)
    task = await call(xapi, "Async.VM.create", s, vm_record(name_label="async"))
    assert task.startswith("OpaqueRef:") and await call(xapi, "task.get_name_label", s, task) == "Async.VM.create"
    rec = await wait_task(xapi, s, task)
    assert rec["status"] == "success" and rec["progress"] == 1.0 and rec["error_info"] == []
    made = decode_xmlrpc(("<?xml version='1.0'?><methodCall><methodName>x</methodName><params><param>"
                          + rec["result"] + "</param></params></methodCall>").encode()).params[0]
    assert await call(xapi, "VM.get_name_label", s, made) == "async"
    assert rec["allowed_operations"] == [] and rec["finished"] != "19700101T00:00:00Z"
    # a failing call: the task fails with the error xapi would have returned
    dom0 = next(r for r, v in (await call(xapi, "VM.get_all_records", s)).items() if v["is_control_domain"])
    t2 = await call(xapi, "Async.VM.start", s, dom0, False, False)
    rec2 = await wait_task(xapi, s, t2)
    assert rec2["status"] == "failure" and rec2["result"] == ""
    assert rec2["error_info"] == ["VM_BAD_POWER_STATE", dom0, "halted", "running"]
    # the underscore spelling works with Async. too (xapi strips the prefix, then matches VM_create)
    t3 = await call(xapi, "Async.VM_create", s, vm_record(name_label="under"))
    assert (await wait_task(xapi, s, t3))["status"] == "success"
    await call(xapi, "task.destroy", s, task)
    assert await fails(xapi, "task.get_record", s, task) == ["HANDLE_INVALID", "task", task]


async def test_no_async_mode(xapi: Xapi) -> None:
    s = await login(xapi)
    vm = (await call(xapi, "VM.get_all", s))[0]
    for name in ("VM.get_record", "VM.get_name_label", "VM.set_name_label", "event.from", "session.logout",
                 "VM.get_all"):
        err = await fails(xapi, "Async." + name, s, vm)
        assert err == ["Fault", f"No async mode for this operation (rpc: {name})"], name


async def test_task_cancel(xapi: Xapi, monkeypatch: pytest.MonkeyPatch) -> None:
    s = await login(xapi)
    release = threading.Event()

    def slow(ctx: Any, vm: str, host: str) -> None:
        release.wait(10)

    monkeypatch.setitem(HANDLERS, "VM.assert_can_boot_here", slow)
    vm = (await call(xapi, "VM.get_all", s))[0]
    task = await call(xapi, "Async.VM.assert_can_boot_here", s, vm, xapi.host_ref)
    assert await call(xapi, "task.get_status", s, task) == "pending"
    assert await call(xapi, "task.get_allowed_operations", s, task) == ["cancel"]
    await call(xapi, "task.cancel", s, task)
    release.set()
    rec = await wait_task(xapi, s, task)
    assert rec["status"] == "cancelled" and rec["error_info"] == ["TASK_CANCELLED", task]
    # a finished task cannot be cancelled
    err = await fails(xapi, "task.cancel", s, task)
    assert err[0] == "OPERATION_NOT_ALLOWED"
    assert await fails(xapi, "task.cancel", s, "OpaqueRef:none") == ["HANDLE_INVALID", "task", "OpaqueRef:none"]


async def test_client_task_create(xapi: Xapi) -> None:
    s = await login(xapi)
    t = await call(xapi, "task.create", s, "upload", "an HTTP transfer")
    rec = await call(xapi, "task.get_record", s, t)
    assert rec["name_label"] == "upload" and rec["status"] == "pending" and rec["resident_on"] == xapi.host_ref
    assert rec["created"] != "19700101T00:00:00Z"
    await call(xapi, "task.destroy", s, t)


async def test_invalid_utf8_is_invalid_value(xapi: Xapi) -> None:
    """A lone surrogate (JSON-RPC's "\\ud800" escape) in any parameter: INVALID_VALUE, as
    gen_server.ml checks every parameter before dispatching; nothing is written."""
    s = await login(xapi)
    vm = await call(xapi, "VM.create", s, vm_record(name_label="clean"))
    assert await fails(xapi, "VM.set_name_label", s, vm, "bad\ud800name") == \
        ["INVALID_VALUE", "Invalid UTF-8 string in parameter", "badname"]
    assert (await fails(xapi, "VM.create", s, vm_record(other_config={"k": ["\udfff"]})))[0] == "INVALID_VALUE"
    assert (await fails(xapi, "VM.create", s, vm_record(other_config={"\udfff": "v"})))[0] == "INVALID_VALUE"
    assert await call(xapi, "VM.get_name_label", s, vm) == "clean"
    await call(xapi, "VM.set_name_label", s, vm, "ünïcödé ✓")  # real non-ASCII text is fine
    assert await call(xapi, "VM.get_name_label", s, vm) == "ünïcödé ✓"


def test_session_expiry_is_utc_in_any_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    """last_active is UTC; 23.5 h idle is not expired, 24.5 h is (xapi's 24 h), also where
    daylight saving time is in force (mktime-based arithmetic was an hour out there)."""
    import calendar
    import time

    from pyxen.xapi.session import expired
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    try:
        then = calendar.timegm((2026, 7, 1, 0, 0, 0, 0, 0, 0))
        assert not expired("20260701T00:00:00Z", then + 23.5 * 3600)
        assert expired("20260701T00:00:00Z", then + 24.5 * 3600)
        assert expired("garbage", then)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


async def test_hidden_where_messages(xapi: Xapi) -> None:
    """get_all_records_where / get_all_where: served, filtered by xapi's expression language,
    and not listed by system.listMethods (they are hidden in xapi too)."""
    s = await login(xapi)
    running = await call(xapi, "VM.get_all_records_where", s, 'field "power_state" = "Running"')
    assert [r["is_control_domain"] for r in running.values()] == [True]
    templates = await call(xapi, "VM.get_all_where", s, 'field "is_a_template" = "true"')
    assert [await call(xapi, "VM.get_name_label", s, t) for t in templates] == ["Debian Bookworm 12"]
    assert await call(xapi, "VM_get_all_where", s, "false") == []
    err = await fails(xapi, "VM.get_all_where", s, 'field "x" =')
    assert err[0] == "INTERNAL_ERROR" and "Expression_error" in err[1]
    assert "VM.get_all_where" not in await call(xapi, "system.listMethods")


async def test_host_servertime(xapi: Xapi) -> None:
    s = await login(xapi)
    host = (await call(xapi, "host.get_all", s))[0]
    t = await call(xapi, "host.get_servertime", s, host)
    assert re.fullmatch(r"\d{8}T\d\d:\d\d:\d\dZ", t), t


async def test_sync_only_messages_have_no_async_form(xapi: Xapi) -> None:
    """Messages xapi's IDL declares with ~flags:[`Session] (no `Async) get the Fault xapi
    answers; custom messages with the default flags do get a task."""
    s = await login(xapi)
    vm = (await call(xapi, "VM.get_all", s))[0]
    err = await fails(xapi, "Async.VM.get_allowed_VBD_devices", s, vm)
    assert err[0] == "Fault" and "No async mode" in err[1]
    host = (await call(xapi, "host.get_all", s))[0]
    assert (await fails(xapi, "Async.host.get_servertime", s, host))[0] == "Fault"
    task = await call(xapi, "Async.VM.assert_operation_valid", s, vm, "start")
    assert (await wait_task(xapi, s, task))["status"] in ("success", "failure")
