"""pyxen.xapi.lifecycle against ocaml/xapi/xapi_vm_lifecycle.ml: the power states of each
operation, the order of check_operation_error's checks (the first failing one is the error a
client sees), is_allowed_concurrently (the specs of xapi's own
ocaml/tests/test_vm_check_operation_error.ml), templates, snapshots, the control domain, and
update_allowed_operations."""

from __future__ import annotations

from typing import Any

import pytest

from pyxen.xapi.datamodel import load
from pyxen.xapi.lifecycle import (BUILT_OPS, IGNORED_OPS, allowed_concurrently, allowed_operations,
                                  allowed_power_states, operation_error)

REF = "OpaqueRef:vm"
ALL_OPS: list[str] = load().enums["vm_operations"]


def vm(**over: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"power_state": "Halted", "is_a_template": False, "is_a_snapshot": False,
                           "is_default_template": False, "is_control_domain": False,
                           "current_operations": {}, "blocked_operations": {}, "other_config": {},
                           "platform": {}}
    rec.update(over)
    return rec


def err(rec: dict[str, Any], op: str) -> list[str] | None:
    e = operation_error(REF, rec, op)
    return None if e is None else e.description


# allowed_power_states, in xapi's order (the order VM_BAD_POWER_STATE prints)
POWER_STATES = {
    "start": ["Halted"], "start_on": ["Halted"], "provision": ["Halted"], "make_into_template": ["Halted"],
    "unpause": ["Paused"], "resume": ["Suspended"], "resume_on": ["Suspended"], "csvm": ["Suspended"],
    "clean_shutdown": ["Running"], "clean_reboot": ["Running"], "pause": ["Running"], "suspend": ["Running"],
    "pool_migrate": ["Running"], "changing_VCPUs_live": ["Running"], "send_sysrq": ["Running"],
    "hard_reboot": ["Paused", "Running"],
    "hard_shutdown": ["Paused", "Suspended", "Running"], "shutdown": ["Paused", "Suspended", "Running"],
    "checkpoint": ["Paused", "Suspended", "Running"],
    "clone": ["Halted"], "copy": ["Halted"],
    "destroy": ["Halted", "Suspended"], "export": ["Halted", "Suspended"],
    "migrate_send": ["Halted", "Suspended", "Running"],
    "changing_dynamic_range": ["Halted", "Running"],
    "changing_VCPUs": ["Halted"], "changing_static_range": ["Halted"], "changing_memory_limits": ["Halted"],
    "snapshot": ["Halted", "Paused", "Suspended", "Running"], "revert": ["Halted", "Paused", "Suspended", "Running"],
    "import": [],
}


@pytest.mark.parametrize("op", sorted(POWER_STATES))
def test_allowed_power_states(op: str) -> None:
    assert allowed_power_states(op, vm()) == POWER_STATES[op]


def test_power_states_that_depend_on_the_vm() -> None:
    assert allowed_power_states("clone", vm(is_a_snapshot=True)) == ["Halted", "Suspended"]
    assert allowed_power_states("changing_VCPUs", vm(is_control_domain=True)) == ["Halted", "Running"]
    assert allowed_power_states("changing_static_range", vm(is_control_domain=True)) == ["Halted", "Running"]


def test_every_enum_operation_has_power_states() -> None:
    for op in ALL_OPS:
        assert isinstance(allowed_power_states(op, vm()), list)


def test_bad_power_state_parameters() -> None:
    # [vm, expected states lowercase joined by ", ", actual lowercase]
    assert err(vm(power_state="Running"), "start") == ["VM_BAD_POWER_STATE", REF, "halted", "running"]
    assert err(vm(), "hard_shutdown") == ["VM_BAD_POWER_STATE", REF, "paused, suspended, running", "halted"]
    assert err(vm(power_state="Suspended"), "hard_reboot") == \
        ["VM_BAD_POWER_STATE", REF, "paused, running", "suspended"]
    assert err(vm(power_state="Paused"), "unpause") is None
    assert err(vm(), "start") is None


def test_blocked_operations_come_first() -> None:
    rec = vm(power_state="Running", blocked_operations={"start": "maintenance"})
    assert err(rec, "start") == ["OPERATION_BLOCKED", REF, "maintenance"]


def test_power_state_before_concurrency() -> None:
    running = vm(power_state="Running", current_operations={"OpaqueRef:t": "clean_shutdown"})
    assert err(running, "start") == ["VM_BAD_POWER_STATE", REF, "halted", "running"]
    assert err(running, "pause") == ["OTHER_OPERATION_IN_PROGRESS", "VM", REF, "clean_shutdown", "OpaqueRef:t"]


def test_hard_shutdown_may_interrupt_a_clean_one() -> None:
    rec = vm(power_state="Running", current_operations={"OpaqueRef:t": "clean_shutdown"})
    assert err(rec, "hard_shutdown") is None
    assert err(rec, "hard_reboot") is None
    busy = vm(power_state="Running", current_operations={"OpaqueRef:t": "hard_shutdown"})
    assert err(busy, "hard_shutdown") == ["OTHER_OPERATION_IN_PROGRESS", "VM", REF, "hard_shutdown", "OpaqueRef:t"]
    assert err(busy, "hard_reboot")[0] == "OTHER_OPERATION_IN_PROGRESS"  # type: ignore[index]
    # while running, allowed_operations keeps what may still join
    assert allowed_operations(REF, rec, ALL_OPS) == ["hard_reboot", "hard_shutdown"]


def test_several_running_operations_are_listed_in_braces() -> None:
    rec = vm(current_operations={"OpaqueRef:a": "clone", "OpaqueRef:b": "copy"})
    assert err(rec, "copy") is None  # clone, copy and export go together
    assert err(rec, "start") == ["OTHER_OPERATION_IN_PROGRESS", "VM", REF, "{clone,copy}",
                                 "{OpaqueRef:a,OpaqueRef:b}"]


def _specs() -> list[tuple[bool, str, list[str]]]:
    """test_vm_check_operation_error.ml's allowed_specs."""
    specs = [(True, "snapshot", ["checkpoint"]), (False, "migrate_send", ["clean_reboot"]),
             (True, "clean_reboot", ["migrate_send"])]
    specs += [(op != "hard_shutdown", "hard_shutdown", [op]) for op in ALL_OPS]
    specs += [(op == "migrate_send", "clean_shutdown", [op]) for op in ALL_OPS]
    specs += [(op not in ("hard_shutdown", "hard_reboot"), "hard_reboot", [op]) for op in ALL_OPS]
    return specs


@pytest.mark.parametrize("expected,op,current", _specs())
def test_is_allowed_concurrently(expected: bool, op: str, current: list[str]) -> None:
    assert allowed_concurrently(op, {f"OpaqueRef:{i}": o for i, o in enumerate(current)}) is expected


def test_templates() -> None:
    tpl = vm(is_a_template=True)
    assert err(tpl, "start") == ["VM_IS_TEMPLATE", REF, "start"]
    for op in ("clone", "copy", "provision", "destroy", "changing_memory_limits", "export"):
        assert err(tpl, op) is None, op
    default = vm(is_a_template=True, is_default_template=True)
    assert err(default, "destroy") == ["VM_IS_TEMPLATE", REF, "destroy"]
    by_key = vm(is_a_template=True, other_config={"default_template": "TRUE"})
    assert err(by_key, "destroy") == ["VM_IS_TEMPLATE", REF, "destroy"]
    # power state first: a template is Halted, so suspend fails on that
    assert err(tpl, "suspend") == ["VM_BAD_POWER_STATE", REF, "running", "halted"]
    assert err(vm(), "provision") == ["ONLY_PROVISION_TEMPLATE"]
    assert allowed_operations(REF, tpl, ALL_OPS) == sorted(
        {"changing_dynamic_range", "changing_static_range", "clone", "copy", "destroy", "provision"})


def test_snapshots() -> None:
    snap = vm(is_a_template=True, is_a_snapshot=True)
    assert err(snap, "start") == ["VM_IS_SNAPSHOT", REF, "start"]
    assert err(snap, "clone") is None and err(snap, "destroy") is None and err(snap, "revert") is None
    assert err(vm(), "revert") == ["ONLY_REVERT_SNAPSHOT"]


def test_immobile() -> None:
    rec = vm(power_state="Running", platform={"nomigrate": "true"})
    assert err(rec, "suspend") == ["VM_IS_IMMOBILE", REF]
    assert err(rec, "pool_migrate") == ["VM_IS_IMMOBILE", REF]
    assert err(rec, "clean_shutdown") is None
    assert err(vm(power_state="Running", platform={"nested-virt": "1"}), "suspend") == ["VM_IS_IMMOBILE", REF]
    assert err(vm(power_state="Running", platform={"nomigrate": "0"}), "suspend") is None


def test_control_domain() -> None:
    dom0 = vm(power_state="Running", is_control_domain=True)
    assert err(dom0, "hard_shutdown") == ["OPERATION_NOT_ALLOWED", "This operation is not allowed on a control domain"]
    assert err(dom0, "pause") == ["OPERATION_NOT_ALLOWED", "This operation is not allowed on a control domain"]
    assert err(dom0, "changing_VCPUs") == ["OPERATION_NOT_ALLOWED", "This operation is not allowed on dom0"]
    assert err(dom0, "changing_dynamic_range") is None and err(dom0, "changing_static_range") is None
    # power state is checked before: a running dom0 cannot start, whatever its rights
    assert err(dom0, "start") == ["VM_BAD_POWER_STATE", REF, "halted", "running"]
    assert err(dom0, "destroy") == ["VM_BAD_POWER_STATE", REF, "halted, suspended", "running"]
    assert allowed_operations(REF, dom0, ALL_OPS) == ["changing_dynamic_range", "changing_static_range"]


def test_allowed_operations_of_plain_vms() -> None:
    running = allowed_operations(REF, vm(power_state="Running"), ALL_OPS)
    # powercycle.py waits for suspend after start
    assert {"suspend", "clean_shutdown", "hard_shutdown", "clean_reboot", "hard_reboot", "pause",
            "pool_migrate", "changing_dynamic_range", "changing_VCPUs_live"} <= set(running)
    assert "start" not in running and "shutdown" not in running  # shutdown is one of xapi's ignored ops
    halted = allowed_operations(REF, vm(), ALL_OPS)
    assert {"start", "clone", "copy", "destroy", "changing_static_range"} <= set(halted)
    assert "changing_VCPUs" not in halted and "changing_memory_limits" not in halted  # ignored ops
    assert allowed_operations(REF, vm(power_state="Paused"), ALL_OPS) == ["hard_reboot", "hard_shutdown", "unpause"]
    assert allowed_operations(REF, vm(power_state="Suspended"), ALL_OPS) == \
        ["destroy", "hard_shutdown", "resume", "resume_on"]
    for ops in (running, halted):
        assert not set(ops) & IGNORED_OPS and set(ops) <= BUILT_OPS
