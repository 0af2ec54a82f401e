"""The VM class's behaviour on real pyxen domains (xapi_vm.ml, xapi_vm_clone.ml,
xapi_templates.ml), with xenops.py doing the domain work.

Every lifecycle message follows xapi's pattern: check the operation against the lifecycle
table and mark it in current_operations (one transaction, so two racing calls cannot both
pass), do the domain work without holding the database, then write the new state and
recompute allowed_operations. A failure in the domain work leaves the record as it was and
raises xapi's error for it.
"""

from __future__ import annotations

import re
import uuid as uuidlib
from contextlib import contextmanager
from typing import Any, Iterator

from . import xenops
from .datamodel import NULL_REF
from .dispatch import Context, create_from_record, message, now
from .errors import ApiError, domain_work
from .lifecycle import allowed_operations, operation_error
from .storage import disk_path, new_vdi, remove_vdi_file, clone_vdi

MiB = 1 << 20
#: xapi's VM.clean_shutdown waits this long by default before VM_SHUTDOWN_TIMEOUT.
CLEAN_SHUTDOWN_TIMEOUT = 120.0


def vdev(userdevice: str, hvm: bool = False) -> str:
    """VBD.userdevice ("0", "1"...) -> the guest device name xenopsd gives it (xvda, xvdb...)."""
    n = int(userdevice)
    name = ""
    n += 1
    while n:
        n, r = divmod(n - 1, 26)
        name = chr(ord("a") + r) + name
    return ("hd" if hvm and int(userdevice) < 4 else "xvd") + name


def refresh(db: Any, vm: str) -> None:
    """update_allowed_operations for the VM and its VBDs and VIFs."""
    rec = db.get("VM", vm)
    ops = allowed_operations(vm, rec, db.dm.enums["vm_operations"])
    with db.transaction():
        if ops != rec["allowed_operations"]:
            db.set("VM", vm, allowed_operations=ops)
        running = rec["power_state"] == "Running"
        for vbd in rec["VBDs"]:
            r = db.get("VBD", vbd)
            want = (["unplug", "unplug_force"] if r["currently_attached"] else ["plug"]) if running else ["attach"]
            if r["type"] == "CD":
                want = want + (["eject"] if not r["empty"] else ["insert"])
            if sorted(want) != sorted(r["allowed_operations"]):
                db.set("VBD", vbd, allowed_operations=sorted(want))
        for vif in rec["VIFs"]:
            r = db.get("VIF", vif)
            want = (["unplug"] if r["currently_attached"] else ["plug"]) if running else ["attach"]
            if want != r["allowed_operations"]:
                db.set("VIF", vif, allowed_operations=want)


@contextmanager
def operation(ctx: Context, vm: str, op: str) -> Iterator[dict[str, Any]]:
    """Check ``op`` and hold it in current_operations while the block runs."""
    db = ctx.db
    key = ctx.task or f"OpaqueRef:{uuidlib.uuid4()}"
    with db.transaction():
        rec = db.get("VM", vm)
        err = operation_error(vm, rec, op)
        if err is not None:
            raise err
        db.set("VM", vm, current_operations={**rec["current_operations"], key: op}, allowed_operations=[])
    try:
        yield rec
    finally:
        release(db, vm, key)


def release(db: Any, vm: str, key: str) -> None:
    """End the operation held under ``key`` in the VM's current_operations (if the VM is still
    there) and work its allowed_operations out again."""
    if db.exists("VM", vm):
        ops = dict(db.field("VM", vm, "current_operations"))
        ops.pop(key, None)
        db.set("VM", vm, current_operations=ops)
        refresh(db, vm)


# -- VM -> domain ---------------------------------------------------------------------------

def spec_of(db: Any, vm: str, taken: tuple[str, ...] = ()) -> xenops.VmSpec:
    """The domain a VM becomes; ``taken``: the live domains' names (xl names are unique)."""
    rec = db.get("VM", vm)
    hvm = rec["HVM_boot_policy"] != "" or rec["domain_type"] == "hvm"
    disks = []
    for vbd in rec["VBDs"]:
        r = db.get("VBD", vbd)
        if r["type"] == "CD" and r["empty"]:
            disks.append(xenops.DiskSpec("", vdev(r["userdevice"], hvm), "r", cdrom=True))
            continue
        if r["VDI"] == NULL_REF or not db.exists("VDI", r["VDI"]):
            continue
        disks.append(xenops.DiskSpec(disk_path(db, r["VDI"]), vdev(r["userdevice"], hvm),
                                     "w" if r["mode"] == "RW" else "r", cdrom=r["type"] == "CD",
                                     format=db.get("VDI", r["VDI"])["sm_config"].get("format", "raw")))
    vifs = []
    for vif in rec["VIFs"]:
        r = db.get("VIF", vif)
        vifs.append(xenops.VifSpec(int(r["device"]), r["MAC"], db.field("network", r["network"], "bridge"),
                                   int(r["MTU"] or 1500)))
    actions = {"destroy": "destroy", "restart": "restart", "preserve": "preserve",
               "coredump_and_destroy": "coredump-destroy", "coredump_and_restart": "coredump-restart",
               "rename_restart": "rename-restart"}
    return xenops.VmSpec(
        uuid=rec["uuid"], name=xenops.domain_name(rec["name_label"], rec["uuid"], taken),
        memory_static_max=rec["memory_static_max"], memory_dynamic_max=rec["memory_dynamic_max"],
        vcpus_max=rec["VCPUs_max"], vcpus_at_startup=rec["VCPUs_at_startup"],
        kernel=rec["PV_kernel"], ramdisk=rec["PV_ramdisk"], cmdline=rec["PV_args"], hvm=hvm,
        bootloader=rec.get("PV_bootloader", ""), bootloader_args=rec.get("PV_bootloader_args", ""),
        disks=tuple(disks), vifs=tuple(vifs), on_poweroff=actions[rec["actions_after_shutdown"]],
        on_reboot=actions[rec["actions_after_reboot"]], on_crash=actions.get(rec["actions_after_crash"], "destroy"),
        platform=dict(rec["platform"]))


def mark_running(db: Any, host: str, vm: str, domid: int, paused: bool = False) -> None:
    """The record of a VM whose domain now exists (start, resume, reboot, migrate)."""
    with db.transaction():
        rec = db.get("VM", vm)
        db.set("VM", vm, power_state="Paused" if paused else "Running", domid=domid, resident_on=host,
               scheduled_to_be_resident_on=NULL_REF)
        metrics = rec["metrics"]
        fields = {"VCPUs_number": rec["VCPUs_at_startup"], "memory_actual": rec["memory_dynamic_max"],
                  "start_time": now(), "last_updated": now(), "state": [],
                  "current_domain_type": "hvm" if rec["HVM_boot_policy"] else "pv"}
        if metrics == NULL_REF or not db.exists("VM_metrics", metrics):
            db.set("VM", vm, metrics=db.create("VM_metrics", fields))
        else:
            db.set("VM_metrics", metrics, **fields)
        for i, vbd in enumerate(rec["VBDs"]):
            r = db.get("VBD", vbd)
            db.set("VBD", vbd, currently_attached=True, device=vdev(r["userdevice"], bool(rec["HVM_boot_policy"])))
        for vif in rec["VIFs"]:
            db.set("VIF", vif, currently_attached=True)
        for con in rec["consoles"]:
            db.set("console", con, location=console_location(domid))
        if not rec["consoles"]:
            db.create("console", {"protocol": "vt100", "location": console_location(domid), "VM": vm})


def console_location(domid: int) -> str:
    return f"pyxen://console/{domid}"


def set_domid(db: Any, vm: str, domid: int, **fields: Any) -> None:
    """The VM's domain changed under it (a migration, the monitor's restart): its domid and its
    consoles' location follow."""
    with db.transaction():
        db.set("VM", vm, domid=domid, **fields)
        for con in db.field("VM", vm, "consoles"):
            db.set("console", con, location=console_location(domid))


def mark_halted(db: Any, vm: str) -> None:
    """The record of a VM whose domain is gone."""
    with db.transaction():
        rec = db.get("VM", vm)
        db.set("VM", vm, power_state="Halted", domid=-1, resident_on=NULL_REF)
        for vbd in rec["VBDs"]:
            db.set("VBD", vbd, currently_attached=False)
        for vif in rec["VIFs"]:
            db.set("VIF", vif, currently_attached=False)
        for con in rec["consoles"]:
            db.destroy("console", con)
        gm = rec["guest_metrics"]
        if gm != NULL_REF:
            db.set("VM", vm, guest_metrics=NULL_REF)
            if db.exists("VM_guest_metrics", gm):
                db.destroy("VM_guest_metrics", gm)


def domid_of(db: Any, vm: str) -> int:
    return int(db.field("VM", vm, "domid"))


# -- lifecycle ------------------------------------------------------------------------------

@message("VM.start")
def start(ctx: Context, vm: str, start_paused: bool, force: bool) -> None:
    with operation(ctx, vm, "start"):
        with domain_work():
            taken = tuple(d.name for d in xenops.live_domains(ctx.paths))
            domid = xenops.start(ctx.paths, spec_of(ctx.db, vm, taken), paused=start_paused)
        mark_running(ctx.db, ctx.host, vm, domid, start_paused)


@message("VM.start_on")
def start_on(ctx: Context, vm: str, host: str, start_paused: bool, force: bool) -> None:
    check_host(ctx, host)
    start(ctx, vm, start_paused, force)


def check_host(ctx: Context, host: str) -> None:
    if not ctx.db.exists("host", host):
        raise ApiError("HANDLE_INVALID", "host", host)


@message("VM.clean_shutdown")
def clean_shutdown(ctx: Context, vm: str) -> None:
    with operation(ctx, vm, "clean_shutdown"):
        try:
            xenops.clean_shutdown(ctx.paths, domid_of(ctx.db, vm), CLEAN_SHUTDOWN_TIMEOUT)
        except xenops.XenopsError as err:
            raise ApiError("VM_SHUTDOWN_TIMEOUT", vm, str(CLEAN_SHUTDOWN_TIMEOUT)) if "timed out" in str(err) \
                else ApiError("INTERNAL_ERROR", str(err)) from err
        mark_halted(ctx.db, vm)


@message("VM.hard_shutdown")
def hard_shutdown(ctx: Context, vm: str) -> None:
    with operation(ctx, vm, "hard_shutdown") as rec:
        if rec["power_state"] == "Suspended":
            drop_suspend_image(ctx.db, vm)
        else:
            with domain_work():
                xenops.hard_shutdown(ctx.paths, domid_of(ctx.db, vm))
        mark_halted(ctx.db, vm)


@message("VM.shutdown")
def shutdown(ctx: Context, vm: str) -> None:
    """Clean shutdown, falling back to hard (xapi's VM.shutdown)."""
    if ctx.db.field("VM", vm, "power_state") == "Running":
        try:
            clean_shutdown(ctx, vm)
            return
        except ApiError as err:
            if err.code in ("HANDLE_INVALID", "OTHER_OPERATION_IN_PROGRESS"):
                raise
    hard_shutdown(ctx, vm)


@message("VM.clean_reboot")
def clean_reboot(ctx: Context, vm: str) -> None:
    with operation(ctx, vm, "clean_reboot"):
        with domain_work():
            domid = xenops.clean_reboot(ctx.paths, domid_of(ctx.db, vm), CLEAN_SHUTDOWN_TIMEOUT,
                                        spec=spec_of(ctx.db, vm))
        mark_running(ctx.db, ctx.host, vm, domid)


@message("VM.hard_reboot")
def hard_reboot(ctx: Context, vm: str) -> None:
    with operation(ctx, vm, "hard_reboot"):
        with domain_work():
            domid = xenops.hard_reboot(ctx.paths, domid_of(ctx.db, vm), spec=spec_of(ctx.db, vm))
        mark_running(ctx.db, ctx.host, vm, domid)


@message("VM.pause")
def pause(ctx: Context, vm: str) -> None:
    with operation(ctx, vm, "pause"):
        with domain_work():
            xenops.pause(ctx.paths, domid_of(ctx.db, vm))
        ctx.db.set("VM", vm, power_state="Paused")


@message("VM.unpause")
def unpause(ctx: Context, vm: str) -> None:
    with operation(ctx, vm, "unpause"):
        with domain_work():
            xenops.unpause(ctx.paths, domid_of(ctx.db, vm))
        ctx.db.set("VM", vm, power_state="Running")


@message("VM.suspend")
def suspend(ctx: Context, vm: str) -> None:
    db = ctx.db
    with operation(ctx, vm, "suspend") as rec:
        sr = rec["suspend_SR"]
        if sr == NULL_REF or not db.exists("SR", sr):
            pool = db.refs("pool")[0]
            sr = db.field("pool", pool, "suspend_image_SR")
        vdi = new_vdi(ctx, {"name_label": f"Suspend image for {rec['name_label']}", "SR": sr,
                            "virtual_size": rec["memory_static_max"] + 16 * MiB, "type": "suspend",
                            "sharable": False, "read_only": False, "other_config": {}}, create_file=False)
        try:
            xenops.suspend(ctx.paths, domid_of(db, vm), disk_path(db, vdi))
        except xenops.XenopsError as err:
            remove_vdi_file(db, vdi)
            db.destroy("VDI", vdi)
            raise ApiError("INTERNAL_ERROR", str(err)) from err
        with db.transaction():
            mark_halted(db, vm)
            db.set("VM", vm, power_state="Suspended", suspend_VDI=vdi)


@message("VM.resume")
def resume(ctx: Context, vm: str, start_paused: bool, force: bool) -> None:
    db = ctx.db
    with operation(ctx, vm, "resume") as rec:
        vdi = rec["suspend_VDI"]
        if vdi == NULL_REF or not db.exists("VDI", vdi):
            raise ApiError("VM_HAS_NO_SUSPEND_VDI", vm)
        with domain_work():
            domid = xenops.resume(ctx.paths, disk_path(db, vdi), paused=start_paused)
        db.set("VM", vm, power_state="Halted")  # (mark_running writes the state it resumed in)
        mark_running(db, ctx.host, vm, domid, start_paused)
        drop_suspend_image(db, vm)


@message("VM.resume_on")
def resume_on(ctx: Context, vm: str, host: str, start_paused: bool, force: bool) -> None:
    check_host(ctx, host)
    resume(ctx, vm, start_paused, force)


def drop_suspend_image(db: Any, vm: str) -> None:
    vdi = db.field("VM", vm, "suspend_VDI")
    db.set("VM", vm, suspend_VDI=NULL_REF)
    if vdi != NULL_REF and db.exists("VDI", vdi):
        remove_vdi_file(db, vdi)
        db.destroy("VDI", vdi)


@message("VM.pool_migrate")
def pool_migrate(ctx: Context, vm: str, host: str, options: dict[str, str]) -> None:
    """A one-host pool migrates to itself, as xapi allows: a real live migration to a new
    domain on this host (new domid, same uuid), the guest running on."""
    check_host(ctx, host)
    if host != ctx.host:
        raise ApiError("HOST_OFFLINE", host)
    with operation(ctx, vm, "pool_migrate"):
        try:
            domid = xenops.migrate_local(ctx.paths, domid_of(ctx.db, vm))
        except xenops.XenopsError as err:
            raise ApiError("VM_MIGRATE_FAILED", vm, ctx.host, host, str(err)) from err
        set_domid(ctx.db, vm, domid)


@message("VM.power_state_reset")
def power_state_reset(ctx: Context, vm: str) -> None:
    rec = ctx.db.get("VM", vm)
    if rec["is_control_domain"]:
        raise ApiError("OPERATION_NOT_ALLOWED", "This operation is not allowed on a control domain")
    mark_halted(ctx.db, vm)
    ctx.db.set("VM", vm, current_operations={})
    refresh(ctx.db, vm)


# -- memory and vCPUs -----------------------------------------------------------------------

def check_memory(rec: dict[str, Any], smin: int, dmin: int, dmax: int, smax: int) -> None:
    """Vm_memory_constraints.assert_valid_for_current_context: static_min <= dynamic_min <=
    dynamic_max <= static_max, and a control domain pinned at static_max."""
    if rec.get("is_control_domain"):
        if not smin <= dmin == dmax == smax:
            raise ApiError("MEMORY_CONSTRAINT_VIOLATION_MAXPIN", "control domain")
    elif not smin <= dmin <= dmax <= smax:
        raise ApiError("MEMORY_CONSTRAINT_VIOLATION_ORDER")


@message("VM.set_memory_dynamic_range")
def set_memory_dynamic_range(ctx: Context, vm: str, lo: int, hi: int) -> None:
    with operation(ctx, vm, "changing_dynamic_range") as rec:
        check_memory(rec, rec["memory_static_min"], lo, hi, rec["memory_static_max"])
        if rec["power_state"] == "Running" and not rec["is_control_domain"]:
            with domain_work():
                xenops.set_memory_target(ctx.paths, rec["domid"], hi)
            if rec["metrics"] != NULL_REF:
                ctx.db.set("VM_metrics", rec["metrics"], memory_actual=hi)
        # (memory_target is unused; xapi keeps it at dynamic_min)
        ctx.db.set("VM", vm, memory_dynamic_min=lo, memory_dynamic_max=hi, memory_target=lo)


def _halted_memory(ctx: Context, vm: str, op: str, **new: int) -> None:
    with operation(ctx, vm, op) as rec:
        m = {k: rec[k] for k in ("memory_static_min", "memory_dynamic_min", "memory_dynamic_max",
                                 "memory_static_max")}
        m.update(new)
        check_memory(rec, m["memory_static_min"], m["memory_dynamic_min"], m["memory_dynamic_max"],
                     m["memory_static_max"])
        ctx.db.set("VM", vm, **new)


@message("VM.set_memory_limits")
def set_memory_limits(ctx: Context, vm: str, static_min: int, static_max: int, dynamic_min: int,
                      dynamic_max: int) -> None:
    _halted_memory(ctx, vm, "changing_memory_limits", memory_static_min=static_min, memory_static_max=static_max,
                   memory_dynamic_min=dynamic_min, memory_dynamic_max=dynamic_max)


@message("VM.set_memory_static_range")
def set_memory_static_range(ctx: Context, vm: str, lo: int, hi: int) -> None:
    _halted_memory(ctx, vm, "changing_static_range", memory_static_min=lo, memory_static_max=hi)


@message("VM.set_memory")
def set_memory(ctx: Context, vm: str, value: int) -> None:
    _halted_memory(ctx, vm, "changing_memory_limits", memory_static_max=value, memory_dynamic_min=value,
                   memory_dynamic_max=value)


for _f, _op in (("static_min", "changing_static_range"), ("static_max", "changing_static_range"),
                ("dynamic_min", "changing_dynamic_range"), ("dynamic_max", "changing_dynamic_range")):
    def _setter(ctx: Context, vm: str, value: int, _f: str = _f, _op: str = _op) -> None:
        if _op == "changing_dynamic_range":
            rec = ctx.db.get("VM", vm)
            lo, hi = rec["memory_dynamic_min"], rec["memory_dynamic_max"]
            set_memory_dynamic_range(ctx, vm, value if _f == "dynamic_min" else lo,
                                     value if _f == "dynamic_max" else hi)
        else:
            _halted_memory(ctx, vm, _op, **{f"memory_{_f}": value})
    message(f"VM.set_memory_{_f}")(_setter)


@message("VM.set_VCPUs_number_live")
def set_VCPUs_number_live(ctx: Context, vm: str, nvcpu: int) -> None:
    with operation(ctx, vm, "changing_VCPUs_live") as rec:
        if not 1 <= nvcpu <= rec["VCPUs_max"]:
            raise ApiError("INVALID_VALUE", "VCPU values must satisfy: 0 < VCPUs ≤ VCPUs_max", str(nvcpu))
        with domain_work():
            xenops.set_vcpus_online(ctx.paths, rec["domid"], nvcpu)
        ctx.db.set("VM", vm, VCPUs_at_startup=nvcpu)
        if rec["metrics"] != NULL_REF:
            ctx.db.set("VM_metrics", rec["metrics"], VCPUs_number=nvcpu)


@message("VM.set_VCPUs_max")
def set_VCPUs_max(ctx: Context, vm: str, value: int) -> None:
    with operation(ctx, vm, "changing_VCPUs") as rec:
        if value < 1 or value < rec["VCPUs_at_startup"]:
            raise ApiError("VALUE_NOT_SUPPORTED", "VCPU_max", value, "VCPU values must satisfy: 0 < VCPUs_at_startup ≤ VCPUs_max")
        ctx.db.set("VM", vm, VCPUs_max=value)


@message("VM.set_VCPUs_at_startup")
def set_VCPUs_at_startup(ctx: Context, vm: str, value: int) -> None:
    with operation(ctx, vm, "changing_VCPUs") as rec:
        if not 1 <= value <= rec["VCPUs_max"]:
            raise ApiError("VALUE_NOT_SUPPORTED", "VCPU_at_startup", value, "VCPU values must satisfy: 0 < VCPUs_at_startup ≤ VCPUs_max")
        ctx.db.set("VM", vm, VCPUs_at_startup=value)


# -- create, clone, copy, provision, destroy --------------------------------------------------

@message("VM.create")
def create(ctx: Context, record: dict[str, Any]) -> str:
    db = ctx.db
    with db.transaction():
        vm = create_from_record(db, "VM", record, power_state="Halted", domid=-1)
        db.set("VM", vm, metrics=db.create("VM_metrics", {"VCPUs_number": 0, "memory_actual": 0}))
        refresh(db, vm)
    return vm


@message("VM.destroy")
def destroy(ctx: Context, vm: str) -> None:
    """The VM and its VBDs, VIFs and metrics; its VDIs stay (xapi's VM.destroy)."""
    db = ctx.db
    with operation(ctx, vm, "destroy") as rec:
        with db.transaction():
            for vbd in rec["VBDs"]:
                db.destroy("VBD", vbd)
            for vif in rec["VIFs"]:
                db.destroy("VIF", vif)
            for con in rec["consoles"]:
                db.destroy("console", con)
            for cls, ref in (("VM_metrics", rec["metrics"]), ("VM_guest_metrics", rec["guest_metrics"])):
                if ref != NULL_REF and db.exists(cls, ref):
                    db.destroy(cls, ref)
            db.destroy("VM", vm)


def _copy_vm(ctx: Context, vm: str, new_name: str, sr: str | None, op: str) -> str:
    db = ctx.db
    with operation(ctx, vm, op) as rec:
        vdi_map: dict[str, str] = {}
        for vbd in rec["VBDs"]:
            v = db.field("VBD", vbd, "VDI")
            if v != NULL_REF and db.exists("VDI", v) and v not in vdi_map:
                vdi_map[v] = clone_vdi(ctx, v, sr)
        with db.transaction():
            other = {k: v for k, v in rec["other_config"].items() if k != "default_template"}
            other["mac_seed"] = str(uuidlib.uuid4())
            if rec["is_a_template"]:
                other["base_template_name"] = rec["name_label"]
            fields = {k: v for k, v in rec.items() if k not in (
                "uuid", "VBDs", "VIFs", "consoles", "metrics", "guest_metrics", "snapshots", "children",
                "crash_dumps", "VTPMs", "VGPUs", "VUSBs", "attached_PCIs", "allowed_operations",
                "current_operations", "resident_on", "domid", "is_default_template", "suspend_VDI")}
            fields.update(name_label=new_name, other_config=other, power_state="Halted", domid=-1,
                          is_default_template=False, parent=vm)
            new = db.create("VM", fields)
            db.set("VM", new, metrics=db.create("VM_metrics", {}))
            for vbd in rec["VBDs"]:
                r = db.get("VBD", vbd)
                db.create("VBD", {k: v for k, v in r.items() if k not in ("uuid", "VM", "VDI", "currently_attached",
                                                                          "allowed_operations", "current_operations")}
                          | {"VM": new, "VDI": vdi_map.get(r["VDI"], NULL_REF), "currently_attached": False})
            for vif in rec["VIFs"]:
                r = db.get("VIF", vif)
                db.create("VIF", {k: v for k, v in r.items() if k not in ("uuid", "VM", "currently_attached",
                                                                          "allowed_operations", "current_operations", "MAC")}
                          | {"VM": new, "MAC": random_mac(), "currently_attached": False})
        refresh(db, new)
        return new


@message("VM.clone")
def clone(ctx: Context, vm: str, new_name: str) -> str:
    return _copy_vm(ctx, vm, new_name, None, "clone")


@message("VM.copy")
def copy(ctx: Context, vm: str, new_name: str, sr: str) -> str:
    if sr != NULL_REF and not ctx.db.exists("SR", sr):
        raise ApiError("HANDLE_INVALID", "SR", sr)
    return _copy_vm(ctx, vm, new_name, None if sr == NULL_REF else sr, "copy")


DISK_RE = re.compile(r"<disk\s+([^>]*?)/?>")
ATTR_RE = re.compile(r'(\w+)="([^"]*)"')


def provision_disks(text: str) -> list[dict[str, str]]:
    """The template's other_config "disks" XML (xapi_templates.ml) -> one dict per disk."""
    return [dict(ATTR_RE.findall(m)) for m in DISK_RE.findall(text or "")]


@message("VM.provision")
def provision(ctx: Context, vm: str) -> None:
    db = ctx.db
    with operation(ctx, vm, "provision") as rec:
        disks = provision_disks(rec["other_config"].get("disks", ""))
        default_sr = db.field("pool", db.refs("pool")[0], "default_SR")
        made: list[str] = []
        try:
            for d in disks:
                sr = db.by_uuid("SR", d["sr"]) if d.get("sr") else default_sr
                vdi = new_vdi(ctx, {"name_label": d.get("device", "0"), "SR": sr,
                                    "name_description": "Created by template provisioner",
                                    "virtual_size": int(d.get("size", "0")), "type": d.get("type", "system"),
                                    "sharable": False, "read_only": False, "other_config": {},
                                    "sm_config": {"vmhint": rec["uuid"]}})
                made.append(vdi)
                db.create("VBD", {"VM": vm, "VDI": vdi, "userdevice": d.get("device", "0"),
                                  "bootable": d.get("bootable") == "true", "mode": "RW", "type": "Disk",
                                  "unpluggable": d.get("type", "system") != "system", "empty": False,
                                  "other_config": {"owner": ""}})
        except ApiError:
            for vdi in made:
                for vbd in db.field("VDI", vdi, "VBDs"):
                    db.destroy("VBD", vbd)
                remove_vdi_file(db, vdi)
                db.destroy("VDI", vdi)
            raise
        other = {k: v for k, v in rec["other_config"].items() if k not in ("disks", "postinstall")}
        db.set("VM", vm, is_a_template=False, other_config=other)


def random_mac() -> str:
    """A locally made MAC in Xen's OUI 00:16:3e, as xapi autogenerates one for MAC=""."""
    b = uuidlib.uuid4().bytes
    return "00:16:3e:%02x:%02x:%02x" % (b[0] & 0x7F, b[1], b[2])


# -- queries --------------------------------------------------------------------------------

@message("VM.get_allowed_VBD_devices")
def get_allowed_VBD_devices(ctx: Context, vm: str) -> list[str]:
    used = {ctx.db.field("VBD", v, "userdevice") for v in ctx.db.field("VM", vm, "VBDs")}
    return [str(i) for i in range(16) if str(i) not in used]


@message("VM.get_allowed_VIF_devices")
def get_allowed_VIF_devices(ctx: Context, vm: str) -> list[str]:
    used = {ctx.db.field("VIF", v, "device") for v in ctx.db.field("VM", vm, "VIFs")}
    return [str(i) for i in range(7) if str(i) not in used]


@message("VM.assert_operation_valid")
def assert_operation_valid(ctx: Context, vm: str, op: str) -> None:
    err = operation_error(vm, ctx.db.get("VM", vm), op)
    if err is not None:
        raise err


@message("VM.update_allowed_operations")
def update_allowed_operations(ctx: Context, vm: str) -> None:
    refresh(ctx.db, vm)


@message("VM.get_boot_record")
def get_boot_record(ctx: Context, vm: str) -> dict[str, Any]:
    return ctx.db.get("VM", vm)


@message("VM.compute_memory_overhead")
def compute_memory_overhead(ctx: Context, vm: str) -> int:
    return 0
