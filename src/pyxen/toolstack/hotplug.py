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
import os
import re
import time
from dataclasses import replace
from typing import Callable

from ..hypervisor.client import XenCtrl
from ..hypervisor.errors import HypercallError
from ..libxlu.cfg import atoi
from ..paths import Paths
from ..xenstore.client import ClientTransaction, XenstoreClient
from ..xenstore.errors import NoEntry, XenstoreError
from ..backends.net import DEFAULT_MTU
from . import userdata
from .devices import (DEFAULT_BLOCK_SCRIPT, DEFAULT_VIF_SCRIPT, XEN_SCRIPT_DIR, DeviceSpecError, DiskSpec, NicSpec,
                      backend_nodes, backend_path, check_nic_types, frontend_nodes, frontend_path, parse_disk,
                      parse_mac, parse_vif)
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


def _write_device(t: ClientTransaction, domid: int, dev: DiskSpec | NicSpec, be_nodes: dict[str, str],
                  fe_nodes: dict[str, str]) -> None:
    """One device's nodes in a transaction, as libxl__device_generic_add writes them: the
    backend and frontend directories with their permissions first, so that the nodes written
    into them inherit those (the guest reads its backend's nodes, such as ``bridge``, and owns
    its frontend's), and libxl's own record of both."""
    be, fe = backend_path(dev.kind, domid, dev.devid), frontend_path(dev.kind, domid, dev.devid)
    t.mkdir(be)
    t.set_perms(be, _perms_be(domid))
    t.mkdir(fe)
    t.set_perms(fe, _perms_fe(domid))
    for k, v in be_nodes.items():
        t.write(f"{be}/{k}", v)
    for k, v in fe_nodes.items():
        t.write(f"{fe}/{k}", v)
    lib = f"/libxl/{domid}/device/{dev.kind}/{dev.devid}"
    t.write(f"{lib}/frontend", fe)
    t.write(f"{lib}/backend", be)


def add_all(ctrl: XenCtrl, paths: Paths, domid: int, disks: list[DiskSpec], nics: list[NicSpec],
            run_scripts: bool = True) -> None:
    """Give a paused domain its devices. ``run_scripts=False`` is xl.conf's
    run_hotplug_scripts=0: a device's ``script=`` is left to udev (libxl neither runs it nor
    waits for its ``hotplug-status``). :raise DeviceError:"""
    devices: list[DiskSpec | NicSpec] = [*disks, *nics]
    if not devices:
        return
    for disk in disks:
        activate_volume(domid, disk)
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
            elif not dev.emulated:
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
                    _write_device(t, domid, dev, backend_nodes(dev, domid, str(paths.scripts_dir)),
                                  {**frontend_nodes(dev, domid), **extra.get((dev.kind, dev.devid), {})})
            xs.transact(write)
            for dev in devices:
                if (isinstance(dev, DiskSpec) and not dev.served_by_pyxen) or \
                        (isinstance(dev, NicSpec) and dev.emulated):
                    # QEMU is this backend (qdisk, an emulated NIC): no hotplug step, straight
                    # to Connected.
                    xs.write(f"{backend_path(dev.kind, domid, dev.devid)}/state", "4")
                    xs.write(f"{frontend_path(dev.kind, domid, dev.devid)}/state", "4")
                    continue
                _wait_initwait(xs, backend_path(dev.kind, domid, dev.devid))
                if isinstance(dev, DiskSpec) and dev.script and run_scripts:
                    _run_script(xs, paths, domid, dev)
    except (XenstoreError, OSError) as err:
        raise DeviceError(f"cannot write the device nodes of domain {domid}: {err}") from err
    for dev in devices:
        try:
            plug(ctrl, paths, domid, dev)
        except HypercallError as err:
            raise DeviceError(f"{dev.kind} {dev.devid}: the device model refused it: {err}") from err
    for nic in nics:
        if nic.script is not None and run_scripts:  # a vif's own script=, once its interface exists
            run_vif_script(paths, domid, nic, add=True)


def activate_volume(domid: int, disk: DiskSpec) -> None:
    """A ``/dev/<vg>/<lv>`` target that is missing but known to lvm2 is activated before any
    backend opens it (what lvm2's boot-time activation does on a Xen host; after a reboot of
    this device-mapper-less host the LV's loop device is gone). A disk with its own ``script=``
    is left to the script. A qcow2 overlay's backing files get the same (QEMU opens them).
    :raise DeviceError: one line, when an LV cannot be activated."""
    if not disk.target or disk.script or disk.devtype == "cdrom":
        return
    from ..storage import lvm  # (a disk's, not every create's: lvm2 and qemu-img's helpers)
    from ..storage.volumes import qcow2_backing
    path, depth = disk.target, 0
    while path and depth < 16:  # a qcow2 overlay's backing files are opened by QEMU too
        depth += 1
        try:
            lvm.activate_path(path)
        except lvm.LvmError as err:
            raise DeviceError(f"{disk.kind}-{domid}-{disk.devid}: {path} is missing and cannot be "
                              f"activated: {err}") from err
        if disk.format != "qcow2":
            break
        try:
            with open(path, "rb") as f:
                backing = qcow2_backing(f.read(65536))
        except OSError:
            break
        path = os.path.join(os.path.dirname(path), backing) if backing else ""


def plug(ctrl: XenCtrl, paths: Paths, domid: int, dev: DiskSpec | NicSpec) -> None:
    """Give the domain's device model the frontend side of ``dev``."""
    sock = str(paths.device_socket(dev.kind, domid, dev.devid))
    if isinstance(dev, NicSpec) and dev.emulated:
        plug_emulated_nic(ctrl, domid, dev)
    elif isinstance(dev, NicSpec):
        ctrl.call("dm_op.add_vhost_user_nic", domid=domid, devid=dev.devid, socket=sock, mac=dev.mac,
                  mtu=dev.mtu if dev.mtu != DEFAULT_MTU else None)
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


def emulated_tap_name(domid: int, dev: NicSpec) -> str:
    """libxl's name for an emulated NIC's TAP: the vif's name with ``-emu`` (vif1.0-emu)."""
    return f"{dev.vifname or f'vif{domid}.{dev.devid}'}-emu"


def plug_emulated_nic(ctrl: XenCtrl, domid: int, dev: NicSpec) -> None:
    """type=ioemu: make the TAP on the vif's bridge (what vif-bridge does for the ``-emu``
    interface) and give it to the device model with the NIC model; QEMU then holds the only
    descriptor, so the TAP goes with the NIC or with QEMU.

    :raise DeviceError: the bridge is missing or the TAP cannot be made.
    """
    from ..backends.net.device import NetDeviceError, open_emulated_tap  # (vhost-user's imports: only here)
    name = emulated_tap_name(domid, dev)
    try:
        fd = open_emulated_tap(name, dev.bridge, dev.mtu)
    except NetDeviceError as err:
        raise DeviceError(f"vif {dev.devid}: {err.strerror}") from err
    try:
        ctrl.call("dm_op.add_emulated_nic", domid=domid, devid=dev.devid, model=dev.model,
                  mac=dev.mac, fds=[fd])
    finally:
        os.close(fd)


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


def attach_disk(ctrl: XenCtrl, paths: Paths, domid: int, disk: DiskSpec, run_scripts: bool = True) -> None:
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
        add_all(ctrl, paths, domid, [disk], [], run_scripts=run_scripts)
        _remember(paths, domid, lambda specs: (*specs, disk.spec))
    except BaseException:
        try:
            _remove_disk(ctrl, paths, domid, disk.kind, disk.devid, force=True, run_script=False)
        except (DeviceError, HypercallError, XenstoreError, OSError) as err:
            log.warning("domain %d: cleaning up disk %d after a failed attach: %s", domid, disk.devid, err)
        raise


def detach_disk(ctrl: XenCtrl, paths: Paths, domid: int, devid: int, force: bool = False,
                run_scripts: bool = True) -> None:
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
    _remove_disk(ctrl, paths, domid, kind, devid, force=force, run_script=run_scripts)
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
                    _write_device(t, domid, dev, {**backend_nodes(dev, domid), "params": _cdrom_params(dev.target),
                                                  "state": "4"}, {**frontend_nodes(dev, domid), "state": "4"})
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


# ---- network devices on a running domain (libxl_device_nic_add / _remove) --------------------
#: How long network-detach waits for the backend to reach Closed before it removes the nodes
#: anyway (libxl's LIBXL_DESTROY_TIMEOUT is 10 s; a loaded 2-core machine gets more).
DETACH_TIMEOUT = 20.0
#: How long detach lets netback notice that QEMU let go of the device (seconds).
DETACH_SETTLE = 5.0
#: The frontend keys that name what the toolstack allocated for a vif on the guest's behalf.
_NIC_GRANT_KEYS = ("tx-ring-ref", "rx-ring-ref")
_NIC_PORT_KEYS = ("event-channel-tx", "event-channel-rx")


def next_devid(paths: Paths, domid: int, kind: str) -> int:
    """libxl__device_nextid: one more than the highest devid of the domain's ``kind`` devices
    (0 for the first)."""
    ids = [int(r["devid"]) for r in list_devices(paths, domid, (kind,)) if r["devid"].isdigit()]
    return max(ids) + 1 if ids else 0


def find_nic(paths: Paths, domid: int, which: str) -> dict[str, str] | None:
    """The frontend record of the vif ``which`` names, as xl network-detach reads its argument:
    a MAC if it holds a ':' (compared byte by byte), else a devid (atoi)."""
    recs = list_devices(paths, domid, ("vif",))
    if ":" in which:
        got, ok = parse_mac(which)
        if not ok:
            return None
        return next((r for r in recs if parse_mac(r.get("mac", ""))[0] == got), None)
    devid = str(atoi(which))
    return next((r for r in recs if r["devid"] == devid), None)


def attach_nic(ctrl: XenCtrl, paths: Paths, domid: int, nic: NicSpec, domain_type: str,
               run_scripts: bool = True) -> None:
    """network-attach: give a running domain a new NIC with the handshake of create (grants,
    event channels, nodes at Initialising, the backend's InitWait, then the device model plugs
    it: the guest sees a PCI NIC appear). Anything that fails is undone, so a refused attach
    leaves no node, grant, event channel, TAP or QEMU device behind.

    :raise DeviceError: the devid is taken, the NIC type does not fit the guest, or a step failed.
    """
    try:
        check_nic_types([nic], domain_type)
    except DeviceSpecError as err:
        raise DeviceError(str(err)) from err
    if any(r["devid"] == str(nic.devid) for r in list_devices(paths, domid, ("vif",))):
        raise DeviceError(f"vif {nic.devid} of domain {domid} exists already")
    try:
        add_all(ctrl, paths, domid, [], [nic], run_scripts=run_scripts)
    except DeviceError:
        _undo_nic(ctrl, paths, domid, nic)
        raise
    _record_vifs(paths, domid, lambda vifs: [*vifs, nic_spec_with_identity(nic)])


def nic_spec_with_identity(nic: NicSpec) -> str:
    """The vif entry the domain's stored config keeps for a hot-added NIC: its items, with its
    devid and MAC (later items win), so a reboot, save or migration rebuilds the same NIC."""
    return ",".join(p for p in (nic.spec, f"devid={nic.devid}", f"mac={nic.mac}") if p)


def _record_vifs(paths: Paths, domid: int, change: Callable[[list[str]], list[str]]) -> None:
    """Update the vif list of the domain's stored config (libxl keeps its d_config in step
    with hotplug the same way); a domain without a record is left without one."""
    cfg = userdata.retrieve(paths, domid)
    if cfg is not None:
        userdata.store(paths, domid, replace(cfg, vifs=tuple(change(list(cfg.vifs)))))


def _vif_devid(spec: str, index: int) -> int | None:
    try:
        return parse_vif(spec, index).devid
    except DeviceSpecError:
        return None


def _undo_nic(ctrl: XenCtrl, paths: Paths, domid: int, nic: NicSpec) -> None:
    """attach_nic's undo: unplug what the device model may have, then forget the rest."""
    op = "dm_op.remove_emulated_nic" if nic.emulated else "dm_op.remove_vhost_user_nic"
    try:
        ctrl.call(op, domid=domid, devid=nic.devid)
    except HypercallError:
        pass  # never plugged (the usual case: the step before failed)
    if not nic.emulated:
        _close_backend(paths, domid, nic.devid)
    _forget_nic(ctrl, paths, domid, nic.devid)


def _close_backend(paths: Paths, domid: int, devid: int) -> None:
    """Once the device model has let go of the vif: the frontend Closed (written for the
    guest, whose virtio driver does not speak xenbus) and the backend offline, and wait until
    netback has walked Closing -> Closed and removed the TAP. A backend that does not answer
    in time is left to notice the nodes go (libxl removes them after its timeout too)."""
    be, fe = backend_path("vif", domid, devid), frontend_path("vif", domid, devid)
    try:
        with XenstoreClient(paths.xenstored_socket) as xs:
            # QEMU closed its vhost-user socket: netback notices and goes back to InitWait.
            _wait_states(xs, be, (b"2", b"6"), DETACH_SETTLE)
            xs.transact(lambda t: (t.write(f"{fe}/state", "6"), t.write(f"{be}/online", "0")))
            _wait_states(xs, be, (b"6",), DETACH_TIMEOUT)
    except (XenstoreError, OSError, DeviceError):
        pass


def vif_script_env(domid: int, nic: NicSpec) -> dict[str, str]:
    """What libxl's get_hotplug_env adds for a vif on top of the common variables: ``netdev``
    (the gatewaydev, or empty), ``vif`` (the backend interface), and for an emulated NIC
    ``INTERFACE`` (its TAP)."""
    env = {"netdev": nic.gatewaydev or "", "vif": nic.vifname or f"vif{domid}.{nic.devid}"}
    if nic.emulated:
        env["INTERFACE"] = emulated_tap_name(domid, nic)
    return env


def run_vif_script(paths: Paths, domid: int, nic: NicSpec, add: bool) -> None:
    """Run a vif's own ``script=`` with Xen's convention (``online``/``offline type_if=vif``,
    XENBUS_PATH, ...), once netback has made the interface (attach) or before it goes
    (detach). The default script, vif-bridge, is not run: netback does what it does.

    :raise DeviceError: the script failed (libxl's lines).
    """
    be = backend_path("vif", domid, nic.devid)

    def read(key: str) -> str | None:
        with XenstoreClient(paths.xenstored_socket) as xs:
            raw = xs.get(f"{be}/{key}")
        return raw.decode(errors="replace") if raw is not None else None

    def read_error() -> str | None:
        return read("hotplug-error")

    # The ``script`` node is the path libxl runs (a relative script= made absolute), so
    # online and offline run the same file.
    script = read("script") or nic.script or ""
    try:
        run_hotplug_script(paths, HotplugDevice("vif", domid, nic.devid), script,
                           add, extra_env=vif_script_env(domid, nic), read_error=read_error)
    except HotplugScriptError as err:
        raise DeviceError(str(err)) from err


def detach_nic(ctrl: XenCtrl, paths: Paths, domid: int, devid: int, run_scripts: bool = True) -> None:
    """network-detach: the guest lets go of the NIC (the device model's unplug: an ACPI eject
    the guest's kernel answers), QEMU drops its back-end connection, the backend is taken
    offline (``online`` = 0) and walks Closing -> Closed (netback removes the TAP), then the
    nodes, grants and event channels go.

    :raise DeviceError: the guest did not release the NIC (it stays, working).
    """
    be = backend_path("vif", domid, devid)
    with XenstoreClient(paths.xenstored_socket) as xs:
        emulated = xs.get(f"{be}/type") == b"vif_ioemu"
        raw_script = xs.get(f"{be}/script")
    op = "dm_op.remove_emulated_nic" if emulated else "dm_op.remove_vhost_user_nic"
    try:
        ctrl.call(op, domid=domid, devid=devid)
    except HypercallError as err:
        raise DeviceError(f"vif {devid}: {err}") from err
    if not emulated:
        _close_backend(paths, domid, devid)
    script = raw_script.decode(errors="replace") if raw_script else ""
    if script and script != f"{XEN_SCRIPT_DIR}/{DEFAULT_VIF_SCRIPT}" and run_scripts:
        try:
            run_vif_script(paths, domid, _nic_of(paths, domid, devid, script), add=False)
        except DeviceError:
            pass  # libxl logs a failed offline run and removes the device all the same
    _forget_nic(ctrl, paths, domid, devid)
    _record_vifs(paths, domid, lambda vifs: [v for i, v in enumerate(vifs) if _vif_devid(v, i) != devid])


def _nic_of(paths: Paths, domid: int, devid: int, script: str) -> NicSpec:
    """The NicSpec an offline script run needs, from the backend's nodes."""
    with XenstoreClient(paths.xenstored_socket) as xs:
        def node(key: str) -> str | None:
            raw = xs.get(f"{backend_path('vif', domid, devid)}/{key}")
            return raw.decode(errors="replace") if raw is not None else None
        return NicSpec(devid=devid, mac=node("mac") or "", vifname=node("vifname"),
                       gatewaydev=node("gatewaydev"), script=script,
                       nictype=node("type") or "vif")


def _wait_states(xs: XenstoreClient, be: str, states: tuple[bytes, ...], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = xs.get(f"{be}/state")
        if state is None or state in states:
            return
        time.sleep(0.05)
    raise DeviceError(f"{be}: the backend did not reach state {'/'.join(s.decode() for s in states)} "
                      f"within {timeout:.0f} s")


def _forget_nic(ctrl: XenCtrl, paths: Paths, domid: int, devid: int) -> None:
    """Remove a vif's nodes and give back the grants and unbound event channels the toolstack
    made for it (attach's undo, detach's last step); what is already gone is skipped."""
    fe, be = frontend_path("vif", domid, devid), backend_path("vif", domid, devid)
    refs: list[int] = []
    ports: list[int] = []
    try:
        with XenstoreClient(paths.xenstored_socket) as xs:
            for key, into in [(k, refs) for k in _NIC_GRANT_KEYS] + [(k, ports) for k in _NIC_PORT_KEYS]:
                raw = xs.get(f"{fe}/{key}")
                if raw is not None and raw.isdigit():
                    into.append(int(raw))
            for path in (fe, be, f"/libxl/{domid}/device/vif/{devid}"):
                try:
                    xs.rm(path)
                except NoEntry:
                    pass
    except (XenstoreError, OSError):
        pass
    for ref in refs:
        try:
            ctrl.call("grant_table_op.end_access", dom=domid, ref=ref)
        except HypercallError:
            pass
    for port in ports:
        try:
            ctrl.call("event_channel_op.close", dom=domid, port=port)
        except HypercallError:
            pass


# ---- which domains use which disks (storage helpers refuse to touch a disk in use) ------------
def _disk_path(params: str) -> str:
    """A backend's ``params`` without qdisk's ``<format>:`` prefix (``aio:/x``, ``qcow2:/x``)."""
    head, sep, rest = params.partition(":")
    return rest if sep and head.isalnum() and not head.startswith("/") else params


def disk_users(paths: Paths) -> dict[str, list[tuple[int, str]]]:
    """Every disk target of the host's domains (the real path, links resolved) -> the domains
    using it as (domid, name). Read from the backend nodes in xenstore, as ``xl block-list``
    does; when xenstored cannot be reached, from the toolstack's records of each domain's
    config (userdata), which outlive a stopped xenstored but not the domain."""
    users: dict[str, list[tuple[int, str]]] = {}

    def add(target: str, domid: int, name: str) -> None:
        if target:
            users.setdefault(os.path.realpath(target), []).append((domid, name))

    try:
        with XenstoreClient(paths.xenstored_socket, timeout=10.0) as xs:
            for kind in DISK_KINDS:
                try:
                    domids = xs.directory(f"/local/domain/0/backend/{kind}")
                except NoEntry:
                    continue
                for dom in filter(str.isdigit, domids):
                    raw = xs.get(f"/local/domain/{dom}/name")
                    name = raw.decode(errors="replace") if raw is not None else f"domain {dom}"
                    try:
                        devids = xs.directory(f"/local/domain/0/backend/{kind}/{dom}")
                    except NoEntry:
                        continue
                    for devid in devids:
                        be = f"/local/domain/0/backend/{kind}/{dom}/{devid}"
                        for key in ("params", "physical-device-path"):
                            value = xs.get(f"{be}/{key}")
                            if value:
                                add(_disk_path(value.decode(errors="replace")), int(dom), name)
        return {path: sorted(set(doms)) for path, doms in users.items()}
    except (XenstoreError, OSError):
        pass
    for domid in sorted(userdata.domids(paths)):
        try:
            cfg = userdata.retrieve(paths, domid)
        except (OSError, ValueError):
            continue
        if cfg is None:
            continue
        for spec in cfg.disks:
            try:
                disk = parse_disk(spec)
            except DeviceSpecError:
                continue
            add(disk.target or "", domid, cfg.name)
    return users


def domain_names(paths: Paths) -> dict[int, str]:
    """The host's domains other than Dom0, domid -> name: from xenstore, or from the toolstack's
    records when xenstored cannot be reached (as ``disk_users``)."""
    try:
        with XenstoreClient(paths.xenstored_socket, timeout=10.0) as xs:
            names = {}
            for dom in filter(str.isdigit, xs.directory("/local/domain")):
                raw = xs.get(f"/local/domain/{dom}/name")
                if int(dom) != 0 and raw is not None:
                    names[int(dom)] = raw.decode(errors="replace")
            return names
    except (XenstoreError, OSError):
        pass
    names = {}
    for domid in userdata.domids(paths):
        try:
            cfg = userdata.retrieve(paths, domid)
        except (OSError, ValueError):
            continue
        if cfg is not None and domid != 0:
            names[domid] = cfg.name
    return names
