"""Adding and removing a domain's disks and vifs (libxl__device_disk_add, __nic_add,
libxl__initiate_device_generic_remove), in the order pyxen needs:

1. For each device, on the frontend's behalf (its virtio driver has no Xen ABI): grant the
   device's ring to the backend domain (``ring-ref``) and allocate an unbound event channel per
   ring for it (``event-channel``).
2. Write the backend and frontend nodes in one transaction, state 1 (docs/xl.md 3.2).
3. Wait until each pyxen-served backend reaches InitWait (its vhost-user socket listens);
   qdisk devices skip the wait, as QEMU-provided backends do in libxl.
4. Plug each device into the (paused) domain's device model (dm_op.add_*: the hypervisor's
   device model turns the request into QEMU commands; the toolstack builds none).

Failure at any step raises DeviceError naming the device; the caller destroys the domain, and
``remove_all`` deletes whatever nodes were written.
"""

from __future__ import annotations

import time

from ..hypervisor.client import XenCtrl
from ..hypervisor.errors import HypercallError
from ..paths import Paths
from ..xenstore.client import ClientTransaction, XenstoreClient
from ..xenstore.errors import NoEntry, XenstoreError
from .devices import DiskSpec, NicSpec, backend_nodes, backend_path, frontend_nodes, frontend_path

#: libxl waits 10 s for a backend's InitWait; a loaded 2-core test machine gets more.
INITWAIT_TIMEOUT = 20.0


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
                    for k, v in backend_nodes(dev, domid).items():
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
