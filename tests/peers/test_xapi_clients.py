"""Peers of pyxen's XenAPI server: clients written by others, unchanged, against a started host.

- the official ``XenAPI`` SDK (XML-RPC): login, the seed objects, records, and xapi's error codes
  with their parameters (SESSION_AUTHENTICATION_FAILED, MESSAGE_METHOD_UNKNOWN,
  MESSAGE_PARAMETER_COUNT_MISMATCH, HANDLE_INVALID, SESSION_INVALID, UUID_INVALID);
- JSON-RPC 1.0 and 2.0 envelopes as xapi sends them (a raw POST to /jsonrpc);
- async-xenapi's own test_benchmark (JSON-RPC next to the SDK's XML-RPC), vendored under
  tests/peers/async_xenapi and run in a child pytest;
- Ansible's community.general xenserver_guest_info and xenserver_guest_powerstate modules, run by
  ``ansible localhost`` over a local connection against hostname=127.0.0.1:PORT, powering a VM
  cloned from the Debian template on and off (no VIF, so no TAP device and no network lock).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
import xmlrpc.client
from pathlib import Path
from typing import Any, Iterator

import pytest

from pyxen.images.demo import DemoImage
from pyxen.testing.host import Host, started_host
from pyxen.testing.xapi import (ROOT_PASSWORD, destroy_vm, login, set_root_password,
                                vm_from_template, vm_record, xapi_url)

pytestmark = pytest.mark.integration
XenAPI = pytest.importorskip("XenAPI")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
NULL = "OpaqueRef:NULL"


@pytest.fixture(scope="module")
def xapi_host(demo_image: DemoImage) -> Iterator[tuple[Host, str]]:
    """A started host with root's password set; yields it and its xapi URL."""
    with started_host(demo_image, prefix="pyxen-xc-") as h:
        set_root_password(h)
        yield h, xapi_url(h)


@pytest.fixture(scope="module")
def url(xapi_host: tuple[Host, str]) -> str:
    return xapi_host[1]


@pytest.fixture
def session(url: str) -> Iterator[Any]:
    s = login(url)
    yield s
    try:
        s.xenapi.session.logout()
    except Exception:  # a test may have logged it out already
        pass


def failure(call: Any, *args: Any) -> list[str]:
    """The ErrorDescription of a call that must fail."""
    with pytest.raises(XenAPI.Failure) as caught:
        call(*args)
    return list(caught.value.details)


def raw(url: str) -> Any:
    """A plain XML-RPC proxy: no re-login on SESSION_INVALID (the SDK retries that)."""
    return xmlrpc.client.ServerProxy(url + "/", allow_none=True)


# ---- the official SDK (XML-RPC) ------------------------------------------------------------------

def test_seed_objects_and_records(session: Any) -> None:
    x = session.xenapi
    pools = x.pool.get_all()
    assert len(pools) == 1
    host = x.pool.get_master(pools[0])
    assert x.session.get_this_host(session.handle) == host
    assert [host] == x.host.get_all()
    assert int(x.host.get_API_version_major(host)) >= 2
    assert x.host.get_software_version(host)["product_version"].count(".") >= 1

    vms = x.VM.get_all_records()
    dom0 = [r for r in vms.values() if r["is_control_domain"]]
    assert len(dom0) == 1 and dom0[0]["power_state"] == "Running" and dom0[0]["domid"] == "0"
    assert dom0[0]["resident_on"] == host
    assert any(r["is_a_template"] and r["name_label"].startswith("Debian") for r in vms.values())

    srs = x.SR.get_all_records()
    assert x.pool.get_default_SR(pools[0]) in srs
    assert any(r["content_type"] == "iso" for r in srs.values())
    nets = x.network.get_all_records()
    assert [r["bridge"] for r in nets.values()].count("xenbr0") == 1
    pifs = x.PIF.get_all_records()
    assert any(r["device"] == "eth0" and r["network"] in nets for r in pifs.values())

    # get_record, get_by_uuid and the field getters agree with get_all_records
    for cls, records in (("VM", vms), ("SR", srs), ("network", nets)):
        api = getattr(x, cls)
        for ref, rec in records.items():
            assert api.get_record(ref) == rec
            assert api.get_by_uuid(rec["uuid"]) == ref
            assert api.get_name_label(ref) == rec["name_label"]
    assert x.VM.get_by_name_label(dom0[0]["name_label"]) == [r for r, v in vms.items() if v["is_control_domain"]]


def test_wrong_password_is_refused(url: str) -> None:
    s = XenAPI.Session(url)
    details = failure(s.xenapi.login_with_password, "root", ROOT_PASSWORD + "-wrong", "2.21", "pyxen-tests")
    assert details[:2] == ["SESSION_AUTHENTICATION_FAILED", "root"]
    assert len(details) == 3


def test_unknown_method(session: Any) -> None:
    assert failure(session.xenapi.VM.no_such_message) == ["MESSAGE_METHOD_UNKNOWN", "VM.no_such_message"]


def test_parameter_count_mismatch(session: Any) -> None:
    # the counts exclude the session; VM.get_record takes one parameter
    assert failure(session.xenapi.VM.get_record) == ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.get_record", "1", "0"]
    vm = session.xenapi.VM.get_all()[0]
    assert failure(session.xenapi.VM.get_record, vm, "extra") == [
        "MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.get_record", "1", "2"]


def test_handle_invalid(session: Any) -> None:
    ref = f"OpaqueRef:{uuid.uuid4()}"
    assert failure(session.xenapi.VM.get_record, ref) == ["HANDLE_INVALID", "VM", ref]
    assert failure(session.xenapi.SR.get_name_label, ref) == ["HANDLE_INVALID", "SR", ref]


def test_uuid_invalid(session: Any) -> None:
    u = str(uuid.uuid4())
    assert failure(session.xenapi.VM.get_by_uuid, u) == ["UUID_INVALID", "VM", u]


def test_session_invalid_after_logout(url: str) -> None:
    proxy = raw(url)
    answer = proxy.session.login_with_password("root", ROOT_PASSWORD, "2.21", "pyxen-tests")
    assert answer["Status"] == "Success"
    ref = answer["Value"]
    assert proxy.VM.get_all(ref)["Status"] == "Success"
    assert proxy.session.logout(ref) == {"Status": "Success", "Value": ""}
    assert proxy.VM.get_all(ref) == {"Status": "Failure", "ErrorDescription": ["SESSION_INVALID", ref]}
    bogus = f"OpaqueRef:{uuid.uuid4()}"
    assert proxy.VM.get_all(bogus) == {"Status": "Failure", "ErrorDescription": ["SESSION_INVALID", bogus]}


def test_underscore_spelling_and_rpc2(url: str, session: Any) -> None:
    """``Class_message`` is accepted (the SDK sends event.from as event_from), and /RPC2 serves
    the same API as / (``ServerProxy("http://h:p")`` posts there)."""
    proxy: Any = xmlrpc.client.ServerProxy(url, allow_none=True)  # no path: /RPC2
    answer = proxy.VM_get_all(session.handle)
    assert answer["Status"] == "Success"
    assert sorted(answer["Value"]) == sorted(session.xenapi.VM.get_all())


def wait_task(x: Any, task: str, timeout: float = 60) -> dict[str, Any]:
    """The task's record once it left ``pending`` (followed through event.from on it)."""
    token = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = x.task.get_record(task)
        if rec["status"] != "pending":
            return dict(rec)
        token = x.event_from([f"task/{task}"], token, 5.0)["token"]
    raise AssertionError(f"task {task} still pending after {timeout} s")


def test_events_and_async_tasks(session: Any) -> None:
    x = session.xenapi
    first = x.event_from(["vm"], "", 0.0)
    assert re.fullmatch(r"\d{20},\d{20}", first["token"]), first["token"]
    assert {e["ref"] for e in first["events"]} == set(x.VM.get_all())
    assert {(e["class"], e["operation"]) for e in first["events"]} == {("vm", "add")}
    assert int(first["valid_ref_counts"]["vm"]) == len(x.VM.get_all())
    token = first["token"]

    # an Async call returns a task at once; its result is the XML-RPC encoding of the VM ref
    name = f"peer-{uuid.uuid4().hex[:8]}"
    task = x.Async.VM.create(vm_record(name))
    done = wait_task(x, task)
    assert done["status"] == "success" and done["name_label"] == "Async.VM.create", done
    assert float(done["progress"]) == 1.0 and done["error_info"] == []
    vm = x.VM.get_by_name_label(name)[0]
    assert done["result"] == f"<value>{vm}</value>"
    x.task.destroy(task)

    def next_events(tok: str, want: Any) -> tuple[str, list[dict[str, Any]]]:
        deadline = time.monotonic() + 30
        seen: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            batch = x.event_from(["vm"], tok, 10.0)
            tok = batch["token"]
            seen += [e for e in batch["events"] if e["ref"] == vm]
            if any(want(e) for e in seen):
                return tok, seen
        raise AssertionError(f"no such event for {vm} within 30 s: {seen}")

    token, seen = next_events(token, lambda e: e["operation"] == "add")
    assert seen[-1]["snapshot"]["name_label"] == name and seen[-1]["class"] == "vm"
    x.VM.set_name_label(vm, name + "-renamed")
    token, seen = next_events(token, lambda e: e["operation"] == "mod")
    assert seen[-1]["snapshot"]["name_label"] == name + "-renamed"
    x.VM.destroy(vm)
    token, seen = next_events(token, lambda e: e["operation"] == "del")
    assert "snapshot" not in seen[-1] or not seen[-1]["snapshot"]

    # a failing Async call ends in a failed task carrying the error
    bogus = f"OpaqueRef:{uuid.uuid4()}"
    task = x.Async.VM.destroy(bogus)
    failed = wait_task(x, task)
    assert failed["status"] == "failure" and failed["error_info"] == ["HANDLE_INVALID", "VM", bogus], failed
    x.task.destroy(task)


# ---- JSON-RPC envelopes ------------------------------------------------------------------------

def jsonrpc(url: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    req = urllib.request.Request(url + "/jsonrpc", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.headers.get("Content-Type", ""), json.loads(resp.read())


def test_jsonrpc_v1_and_v2_envelopes(url: str) -> None:
    ctype, v2 = jsonrpc(url, {"jsonrpc": "2.0", "method": "session.login_with_password",
                              "params": ["root", ROOT_PASSWORD], "id": "a"})
    assert ctype.split(";")[0] == "application/json"
    assert v2["jsonrpc"] == "2.0" and v2["id"] == "a" and v2["result"].startswith("OpaqueRef:")
    ref = v2["result"]
    _, v1 = jsonrpc(url, {"method": "VM.get_all", "params": [ref], "id": 7})
    assert v1["error"] is None and v1["id"] == 7 and isinstance(v1["result"], list) and v1["result"]
    bad = f"OpaqueRef:{uuid.uuid4()}"
    _, e2 = jsonrpc(url, {"jsonrpc": "2.0", "method": "VM.get_record", "params": [ref, bad], "id": 2})
    assert e2 == {"jsonrpc": "2.0", "error": {"code": 1, "message": "HANDLE_INVALID", "data": ["VM", bad]}, "id": 2}
    _, e1 = jsonrpc(url, {"method": "VM.get_record", "params": [ref, bad], "id": 3})
    assert e1 == {"result": None, "error": ["HANDLE_INVALID", "VM", bad], "id": 3}
    _, out = jsonrpc(url, {"jsonrpc": "2.0", "method": "session.logout", "params": [ref], "id": 4})
    assert out == {"jsonrpc": "2.0", "result": "", "id": 4}


# ---- async-xenapi's own benchmark --------------------------------------------------------------

@pytest.mark.timeout(900)
def test_async_xenapi_benchmark(url: str) -> None:
    pytest.importorskip("aiohttp")
    env = dict(os.environ, HOST_URL=url, USERNAME="root", PASSWORD=ROOT_PASSWORD, PYXEN_RUN_ASYNC_XENAPI="1")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-o", "addopts=",
         "-o", "asyncio_mode=strict", "-o", "asyncio_default_fixture_loop_scope=class",
         "-o", "asyncio_default_test_loop_scope=class", str(HERE / "async_xenapi" / "test_benchmark.py")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "12 passed" in out, out  # 6 sync + 6 async tests, none skipped
    assert "Sync XenAPI" in out and "Async XenAPI" in out, out  # upstream's comparison table


# ---- Ansible community.general ------------------------------------------------------------------

def ansible(tmp: Path, port_url: str, module: str, **args: str) -> tuple[str, dict[str, Any]]:
    """``ansible localhost -m community.general.<module>``, local connection, this interpreter;
    every file Ansible writes goes under ``tmp``. Returns the status word and the module result."""
    hostname = port_url.removeprefix("http://")
    argstr = " ".join(f"{k}={v}" for k, v in {"hostname": hostname, "username": "root",
                                              "password": ROOT_PASSWORD, **args}.items())
    env = dict(os.environ, HOME=str(tmp), ANSIBLE_HOME=str(tmp / "ansible"),
               ANSIBLE_LOCAL_TEMP=str(tmp / "local"), ANSIBLE_REMOTE_TEMP=str(tmp / "remote"),
               ANSIBLE_CONFIG=str(tmp / "none.cfg"), ANSIBLE_LOG_PATH="", ANSIBLE_RETRY_FILES_ENABLED="0",
               ANSIBLE_HOST_KEY_CHECKING="0", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
    bindir = Path(sys.executable).parent
    done = subprocess.run(
        [str(bindir / "ansible"), "localhost", "-c", "local", "-i", "localhost,",
         "-e", f"ansible_python_interpreter={sys.executable}",
         "-m", f"community.general.{module}", "-a", argstr],
        env=env, capture_output=True, text=True, timeout=600, cwd=tmp)
    text = done.stdout
    head, sep, body = text.partition(" => ")
    if not sep:
        raise AssertionError(f"ansible printed no result (exit {done.returncode}):\n{text}{done.stderr}")
    status = head.split("|")[-1].strip()
    return status, json.loads(body)


@pytest.fixture
def ansible_vm(url: str) -> Iterator[tuple[str, str]]:
    """A VM cloned from the Debian template and provisioned (no VIF); destroyed afterwards."""
    s = login(url)
    name = f"ansible-{uuid.uuid4().hex[:8]}"
    vm = vm_from_template(s, name)
    try:
        yield name, vm
    finally:
        destroy_vm(s, vm)
        s.xenapi.session.logout()


@pytest.mark.timeout(900)
def test_ansible_guest_info_and_powerstate(url: str, ansible_vm: tuple[str, str], tmp_path: Path) -> None:
    name, vm = ansible_vm
    s = login(url)
    try:
        status, info = ansible(tmp_path, url, "xenserver_guest_info", name=name)
        assert status == "SUCCESS", info
        facts = info["instance"]
        assert facts["name"] == name and facts["uuid"] == s.xenapi.VM.get_uuid(vm)
        assert facts["state"] == "poweredoff"
        assert facts["is_template"] is False
        assert [d["size"] for d in facts["disks"]], facts["disks"]  # provisioned from "disks"

        status, on = ansible(tmp_path, url, "xenserver_guest_powerstate", name=name, state="powered-on",
                             state_change_timeout="300")
        assert status == "CHANGED", on
        assert on["instance"]["state"] == "poweredon"
        assert s.xenapi.VM.get_power_state(vm) == "Running"
        assert int(s.xenapi.VM.get_domid(vm)) > 0

        status, again = ansible(tmp_path, url, "xenserver_guest_powerstate", name=name, state="powered-on")
        assert status == "SUCCESS" and again["changed"] is False, again

        status, off = ansible(tmp_path, url, "xenserver_guest_powerstate", name=name, state="powered-off",
                              state_change_timeout="300")
        assert status == "CHANGED", off
        assert off["instance"]["state"] == "poweredoff"
        assert s.xenapi.VM.get_power_state(vm) == "Halted"
        assert s.xenapi.VM.get_domid(vm) == "-1"

        status, missing = ansible(tmp_path, url, "xenserver_guest_info", name=name + "-absent")
        assert status == "FAILED!" and "not found" in missing["msg"].lower(), missing
    finally:
        s.xenapi.session.logout()
    # Ansible wrote nothing outside its temporary directory's ANSIBLE_HOME/HOME
    assert not (ROOT / ".ansible").exists()
