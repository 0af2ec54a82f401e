"""What a restarted xapi finds and must put right (reconcile.py), in-process with the domain
side stood in for: a domain that shut down while its monitor was set aside gets the VM's action
(destroy -> Halted, restart -> a new domain), and nothing else is touched. Also the memory
errors of vm.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pyxen.xapi import reconcile, vm, xenops
from pyxen.xapi.db import Database
from pyxen.xapi.errors import ApiError
from pyxen.xapi.xenops import LiveDomain

MiB = 1 << 20
UUID = "0b5a3f4e-0000-4000-8000-00000000000a"


@dataclass
class FakeServer:
    """The parts of server.Xapi that reconcile uses."""

    db: Database
    paths: Any = Path("/nonexistent")
    host_ref: str = "OpaqueRef:host"
    executor: Any = None
    calls: list[tuple[str, int]] = field(default_factory=list)
    #: the domids whose monitor is set aside (userdata.mark_unmonitored)
    unmonitored: set[int] = field(default_factory=set)


def running_vm(db: Database, domid: int = 7, **extra: Any) -> str:
    ref = db.create("VM", {"uuid": UUID, "name_label": "guest", "power_state": "Running", "domid": domid,
                           "memory_static_max": 128 * MiB, "memory_dynamic_max": 128 * MiB,
                           "memory_dynamic_min": 128 * MiB, "memory_static_min": 64 * MiB,
                           "VCPUs_max": 1, "VCPUs_at_startup": 1, "PV_kernel": "/k", **extra})
    vm.refresh(db, ref)
    return ref


def domain(domid: int, state: str, reason: int | None = None) -> LiveDomain:
    return LiveDomain(domid=domid, uuid=UUID, name="guest", state=state, memory_bytes=128 * MiB, vcpus=1,
                      start_time=0.0, shutdown_reason=reason)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    s = FakeServer(Database(None))
    monkeypatch.setattr(xenops, "hard_shutdown", lambda paths, domid: s.calls.append(("destroy", domid)))

    def hard_reboot(paths: Any, domid: int, spec: Any = None) -> int:
        s.calls.append(("reboot", domid))
        assert spec is not None and spec.uuid == UUID  # rebuilt from the VM as it is now
        return domid + 1
    monkeypatch.setattr(xenops, "hard_reboot", hard_reboot)
    monkeypatch.setattr(xenops, "monitor_set_aside", lambda paths, domid: domid in s.unmonitored)
    # (the guest agent's nodes, which main's reconcile also reads, are not these tests' business)
    monkeypatch.setattr(xenops, "agent_stamp", lambda paths, domid: None, raising=False)
    return s


def live(monkeypatch: pytest.MonkeyPatch, *domains: LiveDomain) -> None:
    monkeypatch.setattr(xenops, "live_domains", lambda paths: [domain(0, "running"), *domains])


def test_a_vm_with_an_operation_running_is_left_to_it(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """(xenops' own clean shutdown sets the monitor aside and finishes the domain itself.)"""
    db = server.db
    ref = running_vm(db)
    db.set("VM", ref, current_operations={"OpaqueRef:task": "clean_shutdown"}, allowed_operations=[])
    server.unmonitored = {7}
    live(monkeypatch, domain(7, "shutdown", 0))
    reconcile.reconcile_once(server)  # type: ignore[arg-type]
    rec = db.get("VM", ref)
    assert server.calls == []
    assert rec["current_operations"] == {"OpaqueRef:task": "clean_shutdown"} and rec["power_state"] == "Running"


def test_an_unmonitored_poweroff_is_destroyed_and_halted(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    db = server.db
    ref = running_vm(db)
    server.unmonitored = {7}
    live(monkeypatch, domain(7, "shutdown", 0))
    reconcile.reconcile_once(server)  # type: ignore[arg-type]
    rec = db.get("VM", ref)
    assert server.calls == [("destroy", 7)]
    assert rec["power_state"] == "Halted" and rec["domid"] == -1 and rec["current_operations"] == {}
    assert "start" in rec["allowed_operations"]


def test_an_unmonitored_reboot_is_restarted(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    db = server.db
    ref = running_vm(db, actions_after_reboot="restart")
    server.unmonitored = {7}
    live(monkeypatch, domain(7, "shutdown", 1))
    reconcile.reconcile_once(server)  # type: ignore[arg-type]
    rec = db.get("VM", ref)
    assert server.calls == [("reboot", 7)]
    assert rec["power_state"] == "Running" and rec["domid"] == 8 and rec["current_operations"] == {}


@pytest.mark.parametrize("why", ["monitored", "preserve", "xl", "suspend"])
def test_other_shut_down_domains_are_not_touched(server: FakeServer, monkeypatch: pytest.MonkeyPatch,
                                                 why: str) -> None:
    """The monitor acts on a monitored domain; preserve keeps it; an xl domain started with -e
    is left as xl leaves it; a suspend belongs to the operation that asked for it."""
    db = server.db
    extra: dict[str, Any] = {"actions_after_shutdown": "preserve"} if why == "preserve" else {}
    if why == "xl":
        extra["other_config"] = {reconcile.ORIGIN: "xl"}
    ref = running_vm(db, **extra)
    server.unmonitored = set() if why == "monitored" else {7}
    live(monkeypatch, domain(7, "shutdown", 2 if why == "suspend" else 0))
    reconcile.reconcile_once(server)  # type: ignore[arg-type]
    rec = db.get("VM", ref)
    assert server.calls == [] and rec["power_state"] == "Running" and rec["current_operations"] == {}


def test_memory_constraints_are_xapis_errors() -> None:
    plain: dict[str, Any] = {"is_control_domain": False}
    vm.check_memory(plain, 64 * MiB, 96 * MiB, 128 * MiB, 128 * MiB)
    for args in ((64, 32, 96, 128), (64, 96, 80, 128), (64, 96, 256, 128)):
        with pytest.raises(ApiError) as err:
            vm.check_memory(plain, *(a * MiB for a in args))
        assert err.value.description == ["MEMORY_CONSTRAINT_VIOLATION_ORDER"]
    dom0: dict[str, Any] = {"is_control_domain": True}
    vm.check_memory(dom0, 64 * MiB, 128 * MiB, 128 * MiB, 128 * MiB)
    with pytest.raises(ApiError) as err:
        vm.check_memory(dom0, 64 * MiB, 96 * MiB, 128 * MiB, 128 * MiB)
    assert err.value.description == ["MEMORY_CONSTRAINT_VIOLATION_MAXPIN", "control domain"]
