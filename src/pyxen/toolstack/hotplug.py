"""Adding and removing a domain's disks and vifs (libxl__device_disk_add, __nic_add,
libxl__initiate_device_generic_remove), in the order pyxen needs:

1. For each device, on the frontend's behalf (its virtio driver has no Xen ABI): grant the
   device's ring to the backend domain (``ring-ref``) and allocate an unbound event channel per
   ring for it (``event-channel``).
2. Write the backend and frontend nodes in one transaction, state 1 (docs/xl.md 3.2).
3. Wait until each pyxen-served backend reaches InitWait (its vhost-user socket listens);
   qdisk devices skip the wait, as QEMU-provided backends do in libxl.
4. A disk with a ``script=`` of the user's: run it (``add``, Xen's convention:
   hotplug_scripts.py) and wait for its ``hotplug-status`` = ``connected``; blkback then opens
   what the script named (``physical-device-path``).
5. Plug each device into the domain's device model (dm_op.add_*: the hypervisor's
   device model turns the request into QEMU commands; the toolstack builds none).

The same steps add a disk to a running domain (``attach_disk``, xl block-attach: the guest
sees a PCI device appear); ``detach_disk`` (xl block-detach) takes one away as
libxl__initiate_device_generic_remove does: ``online=0`` and Closing, the device model unplugs
it from the guest (the frontend's chance to release it), blkback flushes, closes and reaches
Closed, the script runs ``remove``, and the nodes, grant and event channel go.

Failure at any step raises DeviceError naming the device; the caller destroys the domain, and
``remove_all`` deletes whatever nodes were written.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import replace
from typing import Callable

from ..hypervisor.client import XenCtrl
from ..hypervisor.errors import HypercallError
from ..paths import Paths
from ..xenstore.client import ClientTransaction, XenstoreClient
from ..xenstore.errors import NoEntry, XenstoreError
from . import userdata
from .devices import (DEFAULT_BLOCK_SCRIPT, DeviceSpecError, DiskSpec, NicSpec, parse_disk, backend_nodes, backend_path, frontend_nodes,
                      frontend_path)
from .hotplug_scripts import (HotplugDevice, HotplugScriptError, run_hotplug_script,
                              wait_hotplug_status)

log = logging.getLogger(__name__)

#: libxl waits 10 s for a backend's InitWait; a loaded 2-core test machine gets more.
INITWAIT_TIMEOUT = 20.0
#: libxl's LIBXL_DESTROY_TIMEOUT: how long a detach waits for the frontend to let go and for
#: the backend to reach Closed (seconds).
DESTROY_TIMEOUT = 10.0
#: The device kinds a disk may have in xenstore (qdisk: served by QEMU itself).
DISK_KINDS = ("vbd", "qdisk")


class DeviceError(RuntimeError):
    """A device could not be added; the message names it and the step."""


def _perms_fe(domid: int) -> list[str]:
    return [f"n{domid}", "r0"]


def _perms_be(domid: int) -> list[str]:
    return ["n0", f"r{domid}"]


def add_all(ctrl: XenCtrl, paths: Paths, domid: int, disks: list[DiskSpec], nics: list[NicSpec]) -> None:
    """Give a paused domain its devices. :raise DeviceError:"""
    devices: list[DiskSpec | NicSpec] = [*disks, *nics]
    if not devices:
        return
    extra: dict[tuple[str, int], dict[str, str]] = {}
    for dev in devices:
        label = f"{dev.kind}-{domid}-{dev.devid}"
        try:
            if isinstance(dev, DiskSpec):
                if not dev.served_by_pyxen:
                    continue
                ref = ctrl.call("grant_table_op.grant_access", dom=domid, remote_dom=0, label=label)
                port = ctrl.call("event_channel_op.alloc_unbound", dom=domid, remote_dom=0, label=label)
                extra[(dev.kind, dev.devid)] = {"ring-ref": str(ref), "event-channel": str(port)}
            else:
                tx = ctrl.call("grant_table_op.grant_access", dom=domid, remote_dom=0, label=label + "-tx")
                rx = ctrl.call("grant_table_op.grant_access", dom=domid, remote_dom=0, label=label + "-rx")
                ptx = ctrl.call("event_channel_op.alloc_unbound", dom=domid, remote_dom=0, label=label + "-tx")
                prx = ctrl.call("event_channel_op.alloc_unbound", dom=domid, remote_dom=0, label=label + "-rx")
                extra[(dev.kind, dev.devid)] = {
                    "tx-ring-ref": str(tx), "rx-ring-ref": str(rx), "event-channel-tx": str(ptx),
                    "event-channel-rx": str(prx), "request-rx-copy": "1", "feature-rx-notify": "1"}
        except HypercallError as err:
            raise DeviceError(f"{label}: cannot set up its grant and event channels: {err}") from err
    try:
        with XenstoreClient(paths.xenstored_socket) as xs:
            def write(t: ClientTransaction) -> None:
                for dev in devices:
                    be, fe = backend_path(dev.kind, domid, dev.devid), frontend_path(dev.kind, domid, dev.devid)
                    for k, v in backend_nodes(dev, domid, str(paths.scripts_dir)).items():
                        t.write(f"{be}/{k}", v)
                    for k, v in {**frontend_nodes(dev, domid), **extra.get((dev.kind, dev.devid), {})}.items():
                        t.write(f"{fe}/{k}", v)
                    t.set_perms(be, _perms_be(domid))
                    t.set_perms(fe, _perms_fe(domid))
                    lib = f"/libxl/{domid}/device/{dev.kind}/{dev.devid}"
                    t.write(f"{lib}/frontend", fe)
                    t.write(f"{lib}/backend", be)
            xs.transact(write)
            for dev in devices:
                if isinstance(dev, DiskSpec) and not dev.served_by_pyxen:
                    # QEMU is this backend (qdisk): no hotplug step, straight to Connected.
                    xs.write(f"{backend_path(dev.kind, domid, dev.devid)}/state", "4")
                    xs.write(f"{frontend_path(dev.kind, domid, dev.devid)}/state", "4")
                    continue
                _wait_initwait(xs, backend_path(dev.kind, domid, dev.devid))
                if isinstance(dev, DiskSpec) and dev.script:
                    _run_script(xs, paths, domid, dev)
    except (XenstoreError, OSError) as err:
        raise DeviceError(f"cannot write the device nodes of domain {domid}: {err}") from err
    for dev in devices:
        try:
            plug(ctrl, paths, domid, dev)
        except HypercallError as err:
            raise DeviceError(f"{dev.kind} {dev.devid}: the device model refused it: {err}") from err


def plug(ctrl: XenCtrl, paths: Paths, domid: int, dev: DiskSpec | NicSpec) -> None:
    """Give the domain's device model the frontend side of ``dev``."""
    sock = str(paths.device_socket(dev.kind, domid, dev.devid))
    if isinstance(dev, NicSpec):
        ctrl.call("dm_op.add_vhost_user_nic", domid=domid, devid=dev.devid, socket=sock, mac=dev.mac)
    elif dev.served_by_pyxen:
        ctrl.call("dm_op.add_vhost_user_disk", domid=domid, devid=dev.devid, socket=sock)
    else:
        ctrl.call("dm_op.add_qdisk", domid=domid, devid=dev.devid, vdev=dev.vdev, target=dev.target,
                  format=dev.format, readonly=dev.readonly)


def _reader(xs: XenstoreClient, be: str) -> "Callable[[str], str | None]":
    """A reader of the backend directory's nodes, as text (None when missing)."""
    def read(key: str) -> str | None:
        raw = xs.get(f"{be}/{key}")
        return raw.decode(errors="replace") if raw is not None else None
    return read


def _run_script(xs: XenstoreClient, paths: Paths, domid: int, dev: DiskSpec) -> None:
    """The disk's own script, ``add``, then its ``hotplug-status``. :raise DeviceError:"""
    hdev = HotplugDevice(dev.kind, domid, dev.devid)
    read = _reader(xs, hdev.backend_path)
    script = read("script") or DEFAULT_BLOCK_SCRIPT
    try:
        run_hotplug_script(paths, hdev, script, add=True, read_error=lambda: read("hotplug-error"))
        wait_hotplug_status(read, hdev)
    except HotplugScriptError as err:
        raise DeviceError(str(err)) from err


def _wait_initwait(xs: XenstoreClient, be: str) -> None:
    deadline = time.monotonic() + INITWAIT_TIMEOUT
    while time.monotonic() < deadline:
        state = xs.get(f"{be}/state")
        if state in (b"2", b"4"):
            return
        err = xs.get(f"{be}/hotplug-error")
        if err:
            raise DeviceError(f"{be}: {err.decode()}")
        time.sleep(0.05)
    raise DeviceError(f"{be}: the backend did not reach InitWait within {INITWAIT_TIMEOUT:.0f} s "
                      "(is the backend daemon running? pyxen host start)")


def remove_all(paths: Paths, domid: int) -> None:
    """Delete the domain's device nodes (destroy: the backends notice and close)."""
    try:
        with XenstoreClient(paths.xenstored_socket) as xs:
            for kind in ("vbd", "qdisk", "vif"):
                for path in (f"/local/domain/0/backend/{kind}/{domid}", f"/local/domain/{domid}/device/{kind}",
                             f"/libxl/{domid}/device/{kind}"):
                    try:
                        xs.rm(path)
                    except NoEntry:
                        pass
    except (XenstoreError, OSError):
        pass


def list_devices(paths: Paths, domid: int, kinds: tuple[str, ...]) -> list[dict[str, str]]:
    """The frontend records of a domain's devices of ``kinds`` (libxl_device_*_list), each with
    its devid and backend domid; missing keys are absent."""
    out: list[dict[str, str]] = []
    with XenstoreClient(paths.xenstored_socket) as xs:
        for kind in kinds:
            base = f"/local/domain/{domid}/device/{kind}"
            try:
                devids = sorted(xs.directory(base), key=lambda d: int(d) if d.isdigit() else -1)
            except NoEntry:
                continue
            for devid in devids:
                rec = {"devid": devid, "frontend-id": str(domid)}
                for key in xs.directory(f"{base}/{devid}"):
                    value = xs.get(f"{base}/{devid}/{key}")
                    if value is not None:
                        rec[key] = value.decode(errors="replace")
                out.append(rec)
    return out


# ---- a running domain's disks (xl block-attach, block-detach) ----------------------------------
def disk_kind(xs: XenstoreClient, domid: int, devid: int) -> str | None:
    """Which kind (vbd, qdisk) the domain's disk ``devid`` has in xenstore, or None if it has
    no such disk (libxl_vdev_to_device_disk reads /libxl/<domid>/device/<kind>/<devid>)."""
    for kind in DISK_KINDS:
        if xs.exists(f"/libxl/{domid}/device/{kind}/{devid}") or xs.exists(backend_path(kind, domid, devid)):
            return kind
    return None


def attach_disk(ctrl: XenCtrl, paths: Paths, domid: int, disk: DiskSpec) -> None:
    """Add ``disk`` to a domain (running or paused): the create steps for one device; the guest
    sees a new PCI disk. On any failure (a hotplug script that fails included) whatever was
    made is taken away again, so nothing is left attached.

    :raise DeviceError: libxl's message (``device already exists in xenstore``, the script's
        ``script: ...`` lines, a backend that cannot open the target, ...).
    """
    with XenstoreClient(paths.xenstored_socket) as xs:
        if not xs.exists(f"/local/domain/{domid}"):
            raise DeviceError(f"Domain {domid}:domain does not exist in xenstore")
        if disk_kind(xs, domid, disk.devid) is not None or \
                xs.exists(frontend_path(disk.kind, domid, disk.devid)):
            raise DeviceError(f"Domain {domid}:device already exists in xenstore")
    try:
        add_all(ctrl, paths, domid, [disk], [])
        _remember(paths, domid, lambda specs: (*specs, disk.spec))
    except BaseException:
        try:
            _remove_disk(ctrl, paths, domid, disk.kind, disk.devid, force=True, run_script=False)
        except (DeviceError, HypercallError, XenstoreError, OSError) as err:
            log.warning("domain %d: cleaning up disk %d after a failed attach: %s", domid, disk.devid, err)
        raise


def detach_disk(ctrl: XenCtrl, paths: Paths, domid: int, devid: int, force: bool = False) -> None:
    """Take disk ``devid`` away from a domain (xl block-detach). Without ``force`` (libxl's
    safe_remove) the guest must release it within DESTROY_TIMEOUT, else nothing more is done
    and DeviceError is raised; with ``force`` (libxl_device_disk_destroy) the frontend nodes go
    first and the device is removed whatever the guest does. Either way the backend flushes the
    guest's writes to the target before it closes.

    :raise DeviceError: the domain has no such disk, or the guest did not let go (no force).
    """
    with XenstoreClient(paths.xenstored_socket) as xs:
        kind = disk_kind(xs, domid, devid)
        emulated_cd = kind == "qdisk" and xs.get(f"{backend_path(kind, domid, devid)}/device-type") == b"cdrom"
    if kind is None:
        raise DeviceError(f"Domain {domid}:disk {devid} does not exist")
    if emulated_cd:
        raise DeviceError(f"Domain {domid}:disk {devid} is an emulated cdrom drive, which cannot be "
                          "unplugged (IDE has no hotplug); xl cd-eject empties it")
    _remove_disk(ctrl, paths, domid, kind, devid, force=force, run_script=True)
    _remember(paths, domid, lambda specs: tuple(s for s in specs if _spec_devid(s) != devid))


def _spec_devid(spec: str) -> int | None:
    try:
        return parse_disk(spec).devid
    except DeviceSpecError:
        return None


def _remember(paths: Paths, domid: int, change: "Callable[[tuple[str, ...]], tuple[str, ...]]") -> None:
    """Keep the domain's stored config in step with its disks (libxl updates its JSON config
    on device add and remove), so a save, a migration or a restart carries the change."""
    cfg = userdata.retrieve(paths, domid)
    if cfg is not None:
        userdata.store(paths, domid, replace(cfg, disks=change(tuple(cfg.disks))))


def _remove_disk(ctrl: XenCtrl, paths: Paths, domid: int, kind: str, devid: int, force: bool,
                 run_script: bool) -> None:
    """libxl__initiate_device_generic_remove, then device_hotplug (``remove``) and
    libxl__device_destroy, with pyxen's step in the middle: the device model unplugs the
    device from the guest (the guest's driver is the frontend)."""
    be, fe = backend_path(kind, domid, devid), frontend_path(kind, domid, devid)
    with XenstoreClient(paths.xenstored_socket) as xs:
        read = _reader(xs, be)
        fe_keys = {k: xs.get(f"{fe}/{k}") for k in ("ring-ref", "event-channel")}
        script = read("script")

        def offline(t: ClientTransaction) -> bool:
            if force and t.get(fe) is not None:
                t.rm(fe)
            state = t.get(f"{be}/state")
            if state is None:
                return False  # the backend is gone already: clean the frontend up only
            t.write(f"{be}/online", "0")
            if state != b"6":
                t.write(f"{be}/state", "5")
            return True

        backend_there = xs.transact(offline)
        try:
            # Forced: the unplug is asked for, not waited for (the guest may finish it later).
            released = bool(ctrl.call("dm_op.remove_disk", domid=domid, devid=devid,
                                      wait=0.0 if force else DESTROY_TIMEOUT))
        except HypercallError as err:
            if not force:
                raise DeviceError(f"Domain {domid}:the device model cannot unplug disk {devid}: {err}") from err
            released = False
        if not released and not force:
            raise DeviceError(f"Domain {domid}:the guest did not release disk {devid} within "
                              f"{DESTROY_TIMEOUT:g} s (xl block-detach -f removes it anyway)")
        if released and backend_there:
            def frontend_closed(t: ClientTransaction) -> None:
                # The guest's driver let go: its Closed, written on its behalf; the online
                # node is written again so that the backend's watch fires.
                if t.get(fe) is not None:
                    t.write(f"{fe}/state", "6")
                if t.get(be) is not None:
                    t.write(f"{be}/online", "0")
            xs.transact(frontend_closed)
        if backend_there:
            if kind == "qdisk":  # QEMU was the backend and is done with it
                xs.write(f"{be}/state", "6")
            elif not _wait_state(xs, be, b"6", DESTROY_TIMEOUT) and not force:
                raise DeviceError(f"Domain {domid}:unable to remove device with path {be}")
        if run_script and script and script != DEFAULT_BLOCK_SCRIPT and read("hotplug-status") == "connected":
            try:  # libxl: on disconnection a script's error is logged and the removal goes on
                run_hotplug_script(paths, HotplugDevice(kind, domid, devid), script, add=False,
                                   read_error=lambda: read("hotplug-error"))
            except HotplugScriptError as err:
                log.error("domain %d: %s", domid, err)
        for path in (be, fe, f"/libxl/{domid}/device/{kind}/{devid}"):
            try:
                xs.rm(path)
            except NoEntry:
                pass
    # The frontend's side of the ring, which the toolstack set up on the guest's behalf.
    for op, raw in (("grant_table_op.end_access", fe_keys["ring-ref"]),
                    ("event_channel_op.close", fe_keys["event-channel"])):
        if raw is None:
            continue
        try:
            if op == "grant_table_op.end_access":
                ctrl.call(op, dom=domid, ref=int(raw))
            else:
                ctrl.call(op, dom=domid, port=int(raw))
        except (HypercallError, ValueError) as err:
            log.warning("domain %d: disk %d: %s %s: %s", domid, devid, op, raw.decode(errors="replace"), err)


def _wait_state(xs: XenstoreClient, be: str, state: bytes, timeout: float) -> bool:
    """Until the backend's state is ``state`` (or its directory is gone): False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = xs.get(f"{be}/state")
        if now is None or now == state:
            return True
        time.sleep(0.05)
    return False


def cdrom_index(disk: DiskSpec) -> int:
    """An HVM guest's emulated CD-ROM drive's IDE index (hda..hdd: 0..3).

    :raise DeviceError: the vdev is not hda..hdd (the pc machine has one IDE controller).
    """
    m = re.fullmatch(r"hd([a-d])", disk.vdev)
    if m is None:
        raise DeviceError(f"an emulated cdrom drive needs a vdev hda..hdd, not {disk.vdev}")
    return ord(m.group(1)) - ord("a")


def _cdrom_params(target: str | None) -> str:
    """The backend's ``params`` for an emulated drive's medium (libxl's qdisk form)."""
    return f"aio:{target}" if target else ""


def add_emulated_cdroms(paths: Paths, domid: int, cdroms: list[DiskSpec]) -> None:
    """The xenstore nodes of an HVM guest's emulated CD-ROM drives, which the device model has
    from its command line (QEMU is their backend: Connected from the start, as for qdisk).
    :raise DeviceError:"""
    if not cdroms:
        return
    try:
        with XenstoreClient(paths.xenstored_socket) as xs:
            def write(t: ClientTransaction) -> None:
                for cd in cdroms:
                    dev = replace(cd, backendtype="qdisk")
                    be, fe = backend_path(dev.kind, domid, dev.devid), frontend_path(dev.kind, domid, dev.devid)
                    nodes = {**backend_nodes(dev, domid), "params": _cdrom_params(dev.target), "state": "4"}
                    for k, v in nodes.items():
                        t.write(f"{be}/{k}", v)
                    for k, v in {**frontend_nodes(dev, domid), "state": "4"}.items():
                        t.write(f"{fe}/{k}", v)
                    t.set_perms(be, _perms_be(domid))
                    t.set_perms(fe, _perms_fe(domid))
                    lib = f"/libxl/{domid}/device/{dev.kind}/{dev.devid}"
                    t.write(f"{lib}/frontend", fe)
                    t.write(f"{lib}/backend", be)
            xs.transact(write)
    except (XenstoreError, OSError) as err:
        raise DeviceError(f"cannot write the cdrom nodes of domain {domid}: {err}") from err


def cdrom_insert(ctrl: XenCtrl, paths: Paths, domid: int, disk: DiskSpec) -> None:
    """xl cd-insert / cd-eject (libxl_cdrom_insert): change the medium of an HVM guest's
    emulated CD-ROM drive ``disk.vdev`` (an empty target ejects), and its ``params`` node.

    :raise DeviceError: libxl's message: the domain is not HVM, or has no such drive.
    """
    be = backend_path("qdisk", domid, disk.devid)
    with XenstoreClient(paths.xenstored_socket) as xs:
        if xs.get(f"/local/domain/{domid}/image/os_type") != b"hvm":
            raise DeviceError(f"Domain {domid}:cdrom-insert requires an HVM domain")
        if xs.get(f"{be}/device-type") != b"cdrom":
            raise DeviceError(f"Domain {domid}:Virtual device not found")
        ctrl.call("dm_op.cdrom_change", domid=domid, index=cdrom_index(disk), medium=disk.target or "")
        xs.write(f"{be}/params", _cdrom_params(disk.target))
