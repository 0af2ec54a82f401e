"""Storage: SRs are folders of image files, a VDI is one raw sparse file in its SR's folder
(xapi's "ext" SR keeps one VHD per VDI the same way), a VBD joins a VDI to a VM and is plugged
into a running guest through blkback (xenops.plug_disk, what ``xl block-attach`` does).

VDI files are named by the VDI's uuid; ``VDI.location`` is that uuid, as on an ext SR. The file
is made before the row and removed after it, so a crash between the two leaves at worst an
orphan file, never a row without its disk.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid as uuidlib
from pathlib import Path
from typing import Any

from . import xenops
from .datamodel import NULL_REF
from .dispatch import Context, create_from_record, message
from .errors import ApiError, domain_work


def sr_dir(db: Any, sr: str) -> Path:
    path = db.get("SR", sr)["sm_config"].get("path")
    if not path:
        raise ApiError("SR_HAS_NO_PBDS", sr)
    return Path(path)


def disk_path(db: Any, vdi: str) -> str:
    rec = db.get("VDI", vdi)
    return str(sr_dir(db, rec["SR"]) / f"{rec['location']}.img")


def new_vdi(ctx: Context, record: dict[str, Any], create_file: bool = True, source: str | None = None) -> str:
    """VDI.create's work: a sparse file of virtual_size bytes (or a copy of ``source``), then the row."""
    db = ctx.db
    sr = record.get("SR", NULL_REF)
    if not db.exists("SR", sr):
        raise ApiError("HANDLE_INVALID", "SR", sr)
    if db.field("SR", sr, "content_type") == "iso":
        raise ApiError("SR_OPERATION_NOT_SUPPORTED", sr)
    size = int(record.get("virtual_size", 0))
    if size < 0:
        raise ApiError("INVALID_VALUE", "virtual_size", size)
    uuid = str(uuidlib.uuid4())
    folder = sr_dir(db, sr)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid}.img"
    try:
        if source is not None:
            subprocess.run(["cp", "--sparse=always", "--reflink=auto", source, str(path)], check=True,
                           capture_output=True, timeout=600)
        elif create_file:
            with open(path, "wb") as f:
                f.truncate(size)
    except (OSError, subprocess.SubprocessError) as err:
        path.unlink(missing_ok=True)
        raise ApiError("SR_BACKEND_FAILURE", "", f"cannot make {path}: {err}", "") from err
    try:
        with db.transaction():
            ref = create_from_record(db, "VDI", record)
            db.set("VDI", ref, uuid=uuid, location=uuid, physical_utilisation=_used(path),
                   allowed_operations=["clone", "copy", "destroy", "resize", "snapshot"])
            _refresh_sr(db, sr)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return ref


def _used(path: Path) -> int:
    try:
        return os.stat(path).st_blocks * 512
    except OSError:
        return 0


def _refresh_sr(db: Any, sr: str) -> None:
    vdis = db.field("SR", sr, "VDIs")
    db.set("SR", sr, virtual_allocation=sum(db.field("VDI", v, "virtual_size") for v in vdis),
           physical_utilisation=sum(db.field("VDI", v, "physical_utilisation") for v in vdis))


def remove_vdi_file(db: Any, vdi: str) -> None:
    try:
        Path(disk_path(db, vdi)).unlink(missing_ok=True)
    except (OSError, ApiError):
        pass


def clone_vdi(ctx: Context, vdi: str, sr: str | None = None) -> str:
    """A full copy of the VDI's file (sparse, reflinked where the filesystem can) in ``sr``."""
    rec = ctx.db.get("VDI", vdi)
    fields = {k: rec[k] for k in ("name_label", "name_description", "virtual_size", "type", "sharable",
                                  "read_only", "other_config", "sm_config", "xenstore_data", "tags")}
    fields["SR"] = sr or rec["SR"]
    return new_vdi(ctx, fields, source=disk_path(ctx.db, vdi))


@message("VDI.create")
def vdi_create(ctx: Context, record: dict[str, Any]) -> str:
    return new_vdi(ctx, record)


@message("VDI.destroy")
def vdi_destroy(ctx: Context, vdi: str) -> None:
    db = ctx.db
    rec = db.get("VDI", vdi)
    for vbd in rec["VBDs"]:
        if db.field("VBD", vbd, "currently_attached"):
            raise ApiError("VDI_IN_USE", vdi, "destroy")
    path = Path(disk_path(db, vdi))
    with db.transaction():
        for vbd in rec["VBDs"]:
            db.destroy("VBD", vbd)
        db.destroy("VDI", vdi)
        _refresh_sr(db, rec["SR"])
    path.unlink(missing_ok=True)


@message("VDI.clone")
def vdi_clone(ctx: Context, vdi: str, driver_params: dict[str, str]) -> str:
    return clone_vdi(ctx, vdi)


@message("VDI.copy")
def vdi_copy(ctx: Context, vdi: str, sr: str, base_vdi: str, into_vdi: str) -> str:
    if not ctx.db.exists("SR", sr):
        raise ApiError("HANDLE_INVALID", "SR", sr)
    return clone_vdi(ctx, vdi, sr)


@message("VDI.resize")
def vdi_resize(ctx: Context, vdi: str, size: int) -> None:
    db = ctx.db
    rec = db.get("VDI", vdi)
    if size < rec["virtual_size"]:
        raise ApiError("VDI_TOO_SMALL", vdi, rec["virtual_size"])
    if any(db.field("VBD", v, "currently_attached") for v in rec["VBDs"]):
        raise ApiError("VDI_IN_USE", vdi, "resize")
    with open(disk_path(db, vdi), "r+b") as f:
        f.truncate(size)
    db.set("VDI", vdi, virtual_size=size)


for _field in ("name_label", "name_description", "read_only", "sharable", "on_boot", "allow_caching"):
    def _set(ctx: Context, vdi: str, value: Any, _field: str = _field) -> None:
        ctx.db.set("VDI", vdi, **{_field: value})
    message(f"VDI.set_{_field}")(_set)


@message("SR.scan")
def sr_scan(ctx: Context, sr: str) -> None:
    """An ISO SR lists its folder's *.iso files as read-only VDIs; a file SR notices VDI files
    that are gone (their rows are forgotten) and updates sizes."""
    db = ctx.db
    rec = db.get("SR", sr)
    folder = sr_dir(db, sr)
    folder.mkdir(parents=True, exist_ok=True)
    with db.transaction():
        if rec["content_type"] == "iso":
            known = {db.field("VDI", v, "location"): v for v in rec["VDIs"]}
            for iso in sorted(folder.glob("*.iso")):
                if iso.stem not in known:
                    db.create("VDI", {"name_label": iso.name, "SR": sr, "location": iso.stem, "type": "user",
                                      "read_only": True, "virtual_size": iso.stat().st_size,
                                      "sm_config": {"format": "raw", "ext": "iso"}})
            for loc, v in known.items():
                if not (folder / f"{loc}.iso").exists():
                    db.destroy("VDI", v)
        else:
            for v in rec["VDIs"]:
                path = folder / f"{db.field('VDI', v, 'location')}.img"
                if not path.exists():
                    db.destroy("VDI", v)
                else:
                    db.set("VDI", v, physical_utilisation=_used(path))
        usage = shutil.disk_usage(folder)
        db.set("SR", sr, physical_size=usage.total)


# -- VBD ------------------------------------------------------------------------------------

@message("VBD.create")
def vbd_create(ctx: Context, record: dict[str, Any]) -> str:
    db = ctx.db
    vm = record.get("VM", NULL_REF)
    if not db.exists("VM", vm):
        raise ApiError("HANDLE_INVALID", "VM", vm)
    record = dict(record)
    if record.get("userdevice") in ("autodetect", ""):
        used = {db.field("VBD", v, "userdevice") for v in db.field("VM", vm, "VBDs")}
        record["userdevice"] = next(str(i) for i in range(16) if str(i) not in used)
    elif any(db.field("VBD", v, "userdevice") == record.get("userdevice") for v in db.field("VM", vm, "VBDs")):
        raise ApiError("DEVICE_ALREADY_EXISTS", record.get("userdevice"))
    vdi = record.get("VDI", NULL_REF)
    if vdi != NULL_REF and not db.exists("VDI", vdi):
        raise ApiError("HANDLE_INVALID", "VDI", vdi)
    with db.transaction():
        ref = create_from_record(db, "VBD", record, currently_attached=False)
        db.set("VBD", ref, empty=vdi == NULL_REF)
        from .vm import refresh
        refresh(db, vm)
    return ref


def device_on_running_vm(db: Any, cls: str, ref: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A VBD's or VIF's record and its VM's, which must be Running to plug or unplug it."""
    r = db.get(cls, ref)
    vm = db.get("VM", r["VM"])
    if vm["power_state"] != "Running":
        raise ApiError("VM_BAD_POWER_STATE", r["VM"], "running", vm["power_state"].lower())
    return r, vm


@message("VBD.plug")
def vbd_plug(ctx: Context, vbd: str) -> None:
    db = ctx.db
    r, vm = device_on_running_vm(db, "VBD", vbd)
    if r["currently_attached"]:
        raise ApiError("DEVICE_ALREADY_ATTACHED", vbd)
    from .vm import refresh, vdev
    dev = vdev(r["userdevice"], bool(vm["HVM_boot_policy"]))
    disk = xenops.DiskSpec(disk_path(db, r["VDI"]) if r["VDI"] != NULL_REF else "", dev,
                           "w" if r["mode"] == "RW" else "r", cdrom=r["type"] == "CD")
    with domain_work():
        xenops.plug_disk(ctx.paths, vm["domid"], disk)
    db.set("VBD", vbd, currently_attached=True, device=dev)
    refresh(db, r["VM"])


def _unplug(ctx: Context, vbd: str, force: bool) -> None:
    db = ctx.db
    r, vm = device_on_running_vm(db, "VBD", vbd)
    if not r["currently_attached"]:
        raise ApiError("DEVICE_ALREADY_DETACHED", vbd)
    if not r["unpluggable"] and not force:
        raise ApiError("VBD_NOT_UNPLUGGABLE", vbd)
    from .vm import refresh, vdev
    try:
        xenops.unplug_disk(ctx.paths, vm["domid"], r["device"] or vdev(r["userdevice"]), force=force)
    except xenops.XenopsError as err:
        raise ApiError("DEVICE_DETACH_REJECTED", "VBD", vbd, str(err)) from err
    db.set("VBD", vbd, currently_attached=False)
    refresh(db, r["VM"])


@message("VBD.unplug")
def vbd_unplug(ctx: Context, vbd: str) -> None:
    _unplug(ctx, vbd, False)


@message("VBD.unplug_force")
def vbd_unplug_force(ctx: Context, vbd: str) -> None:
    _unplug(ctx, vbd, True)


@message("VBD.destroy")
def vbd_destroy(ctx: Context, vbd: str) -> None:
    db = ctx.db
    r = db.get("VBD", vbd)
    if r["currently_attached"]:
        raise ApiError("DEVICE_ALREADY_ATTACHED", vbd)
    db.destroy("VBD", vbd)
    from .vm import refresh
    if db.exists("VM", r["VM"]):
        refresh(db, r["VM"])


@message("VBD.insert")
def vbd_insert(ctx: Context, vbd: str, vdi: str) -> None:
    db = ctx.db
    r = db.get("VBD", vbd)
    if r["type"] != "CD":
        raise ApiError("VBD_NOT_REMOVABLE_MEDIA", vbd)
    if not r["empty"]:
        raise ApiError("VBD_NOT_EMPTY", vbd)
    if not db.exists("VDI", vdi):
        raise ApiError("HANDLE_INVALID", "VDI", vdi)
    if db.field("VM", r["VM"], "power_state") != "Halted":
        raise ApiError("VM_BAD_POWER_STATE", r["VM"], "halted", db.field("VM", r["VM"], "power_state").lower())
    db.set("VBD", vbd, VDI=vdi, empty=False)


@message("VBD.eject")
def vbd_eject(ctx: Context, vbd: str) -> None:
    db = ctx.db
    r = db.get("VBD", vbd)
    if r["type"] != "CD":
        raise ApiError("VBD_NOT_REMOVABLE_MEDIA", vbd)
    if r["empty"]:
        raise ApiError("VBD_IS_EMPTY", vbd)
    if db.field("VM", r["VM"], "power_state") != "Halted":
        raise ApiError("VM_BAD_POWER_STATE", r["VM"], "halted", db.field("VM", r["VM"], "power_state").lower())
    db.set("VBD", vbd, VDI=NULL_REF, empty=True)
