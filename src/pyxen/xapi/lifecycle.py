"""xapi's VM lifecycle table (ocaml/xapi/xapi_vm_lifecycle.ml), pure: which operation is
allowed in which power state, for templates and for the control domain, and the
allowed_operations list xapi keeps on every VM.

Not carried over: the checks on guest features (xapi refuses clean_shutdown and suspend to a VM
without PV drivers, VM_LACKS_FEATURE; pyxen's demo guest always has them), on appliances,
protection policies, vGPUs, PCI passthrough and vTPMs, which pyxen does not have.
"""

from __future__ import annotations

from typing import Any

from .errors import ApiError

HALTED, PAUSED, RUNNING, SUSPENDED = "Halted", "Paused", "Running", "Suspended"
ALL_STATES = [HALTED, PAUSED, SUSPENDED, RUNNING]


def allowed_power_states(op: str, vm: dict[str, Any]) -> list[str]:
    """allowed_power_states, in xapi's order (the order VM_BAD_POWER_STATE prints)."""
    if op == "import":
        return []
    if op in ("changing_VCPUs", "changing_static_range", "changing_memory_limits"):
        return [HALTED] + ([RUNNING] if vm.get("is_control_domain") else [])
    if op in ("changing_shadow_memory", "changing_NVRAM", "make_into_template", "provision", "start",
              "start_on", "create_vtpm"):
        return [HALTED]
    if op == "unpause":
        return [PAUSED]
    if op in ("csvm", "resume", "resume_on"):
        return [SUSPENDED]
    if op in ("awaiting_memory_live", "call_plugin", "clean_reboot", "clean_shutdown",
              "changing_memory_live", "changing_shadow_memory_live", "changing_VCPUs_live",
              "data_source_op", "pause", "pool_migrate", "send_sysrq", "send_trigger",
              "snapshot_with_quiesce", "sysprep", "suspend"):
        return [RUNNING]
    if op == "changing_dynamic_range":
        return [HALTED, RUNNING]
    if op in ("clone", "copy"):
        return [HALTED] + ([SUSPENDED] if vm.get("is_a_snapshot") else [])
    if op in ("create_template", "destroy", "export"):
        return [HALTED, SUSPENDED]
    if op == "hard_reboot":
        return [PAUSED, RUNNING]
    if op in ("checkpoint", "get_boot_record", "shutdown", "hard_shutdown"):
        return [PAUSED, SUSPENDED, RUNNING]
    if op == "migrate_send":
        return [HALTED, SUSPENDED, RUNNING]
    return list(ALL_STATES)


#: What a template may do (check_template); destroy and migrate_send only if not a default one.
TEMPLATE_OPS = {"changing_dynamic_range", "changing_static_range", "changing_memory_limits",
                "changing_shadow_memory", "changing_VCPUs", "changing_NVRAM", "clone", "copy", "export",
                "metadata_export", "provision"}
#: What a snapshot may do (check_snapshot).
SNAPSHOT_OPS = {"revert", "clone", "copy", "export", "destroy", "hard_shutdown", "metadata_export"}
#: What the control domain may do.
CONTROL_DOMAIN_OPS = {"data_source_op", "changing_memory_live", "awaiting_memory_live", "metadata_export",
                      "changing_dynamic_range", "changing_memory_limits", "changing_static_range", "start",
                      "start_on", "changing_VCPUs", "destroy"}
#: Operations xapi leaves out of allowed_operations (ignored_ops).
IGNORED_OPS = {"create_template", "power_state_reset", "csvm", "get_boot_record", "send_sysrq", "send_trigger",
               "query_services", "shutdown", "call_plugin", "changing_memory_live", "awaiting_memory_live",
               "changing_memory_limits", "changing_shadow_memory_live", "changing_VCPUs",
               "assert_operation_valid", "data_source_op", "update_allowed_operations", "import", "reverting"}


#: Operations that may run side by side (is_allowed_concurrently's sets).
_CONCURRENT_SETS = ({"clone", "copy", "export"}, {"snapshot", "checkpoint"}, {"get_boot_record"})
#: (operations running, operation that may join them): is_allowed_concurrently's state machine.
_CONCURRENT_STATES = ((["snapshot_with_quiesce"], "snapshot"), (["migrate_send"], "metadata_export"),
                      (["migrate_send"], "clean_shutdown"), (["migrate_send"], "clean_reboot"))


def allowed_concurrently(op: str, current: dict[str, str]) -> bool:
    """is_allowed_concurrently: may ``op`` start while ``current`` (task -> op) runs?"""
    running = list(current.values())
    if any(op in group and all(o in group for o in running) for group in _CONCURRENT_SETS):
        return True
    if op == "hard_shutdown":
        return op not in running
    if op == "hard_reboot":
        return not any(o in ("hard_shutdown", "hard_reboot") for o in running)
    return any(state == running and op == then for state, then in _CONCURRENT_STATES)


def _true(value: Any) -> bool:
    """Vm_platform.is_true / bool_of_assoc: "true" or "1", any case."""
    return str(value).lower() in ("true", "1")


def operation_error(ref: str, vm: dict[str, Any], op: str) -> ApiError | None:
    """Why ``op`` cannot run on the VM now, or None: check_operation_error (strict), its checks
    in its order, the first failing one answers."""
    blocked = (vm.get("blocked_operations") or {}).get(op)
    if blocked is not None:
        return ApiError("OPERATION_BLOCKED", ref, blocked)
    states = allowed_power_states(op, vm)
    if vm.get("power_state") not in states:
        return ApiError("VM_BAD_POWER_STATE", ref, ", ".join(s.lower() for s in states),
                        str(vm.get("power_state", "")).lower())
    current = vm.get("current_operations") or {}
    if current and not allowed_concurrently(op, current):
        if len(current) == 1:
            task, running = next(iter(current.items()))
        else:
            task = "{" + ",".join(current) + "}"
            running = "{" + ",".join(current.values()) + "}"
        return ApiError("OTHER_OPERATION_IN_PROGRESS", "VM", ref, running, task)
    template, snapshot = vm.get("is_a_template"), vm.get("is_a_snapshot")
    if template and not snapshot:
        default = vm.get("is_default_template") or _true((vm.get("other_config") or {}).get("default_template"))
        if not (op in TEMPLATE_OPS or (op in ("destroy", "migrate_send") and not default)):
            return ApiError("VM_IS_TEMPLATE", ref, op)
    if snapshot and op not in SNAPSHOT_OPS:
        return ApiError("VM_IS_SNAPSHOT", ref, op)
    if op == "provision" and not template:
        return ApiError("ONLY_PROVISION_TEMPLATE")
    if op == "revert" and not snapshot:
        return ApiError("ONLY_REVERT_SNAPSHOT")
    platform = vm.get("platform") or {}
    if op in ("suspend", "checkpoint", "pool_migrate", "migrate_send") and (
            _true(platform.get("nomigrate")) or _true(platform.get("nested-virt"))):
        return ApiError("VM_IS_IMMOBILE", ref)
    if vm.get("is_control_domain"):
        if op in ("changing_VCPUs", "destroy"):
            return ApiError("OPERATION_NOT_ALLOWED", "This operation is not allowed on dom0")
        if op not in CONTROL_DOMAIN_OPS:
            return ApiError("OPERATION_NOT_ALLOWED", "This operation is not allowed on a control domain")
    return None


#: The operations pyxen has built; allowed_operations lists only these (xapi lists every op
#: of the enum that passes its checks, including snapshot, export, vTPMs... which pyxen has not).
BUILT_OPS = {"start", "start_on", "clean_shutdown", "hard_shutdown", "clean_reboot", "hard_reboot", "pause",
             "unpause", "suspend", "resume", "resume_on", "pool_migrate", "clone", "copy", "provision",
             "destroy", "changing_dynamic_range", "changing_static_range", "changing_memory_limits",
             "changing_VCPUs_live", "changing_VCPUs", "shutdown"}


def allowed_operations(ref: str, vm: dict[str, Any], all_ops: list[str]) -> list[str]:
    """update_allowed_operations: every built op of the enum that would pass now (xapi's strict
    check, the running operations included: during a clean_shutdown, hard_shutdown is still
    allowed)."""
    return sorted(op for op in all_ops if op in BUILT_OPS and op not in IGNORED_OPS
                  and operation_error(ref, vm, op) is None)
