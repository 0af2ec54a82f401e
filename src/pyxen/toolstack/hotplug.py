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

import importlib
import os
import re
import time
from dataclasses import replace
from typing import Callable

from ..hypervisor.client import XenCtrl
from ..hypervisor.errors import HypercallError
from ..paths import Paths
from ..xenstore.client import ClientTransaction, XenstoreClient
from ..xenstore.errors import NoEntry, XenstoreError
from ..backends.net import DEFAULT_MTU
from ..backends.net.device import NetDeviceError, open_emulated_tap
from .devices import (DEFAULT_VIF_SCRIPT, XEN_SCRIPT_DIR, DeviceSpecError, DiskSpec, NicSpec, backend_nodes, backend_path, check_nic_types,
                      frontend_nodes, frontend_path, parse_mac, parse_vif)
from . import userdata

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
                if (isinstance(dev, DiskSpec) and not dev.served_by_pyxen) or \
                        (isinstance(dev, NicSpec) and dev.emulated):
                    # QEMU is this backend (qdisk, an emulated NIC): no hotplug step, straight
                    # to Connected.
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
    for nic in nics:
        if nic.script is not None:  # a vif's own script=, once its interface exists
            run_vif_script(paths, domid, nic, add=True)


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


def emulated_tap_name(domid: int, dev: NicSpec) -> str:
    """libxl's name for an emulated NIC's TAP: the vif's name with ``-emu`` (vif1.0-emu)."""
    return f"{dev.vifname or f'vif{domid}.{dev.devid}'}-emu"


def plug_emulated_nic(ctrl: XenCtrl, domid: int, dev: NicSpec) -> None:
    """type=ioemu: make the TAP on the vif's bridge (what vif-bridge does for the ``-emu``
    interface) and give it to the device model with the NIC model; QEMU then holds the only
    descriptor, so the TAP goes with the NIC or with QEMU.

    :raise DeviceError: the bridge is missing or the TAP cannot be made.
    """
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


def atoi(text: str) -> int:
    """C's atoi, which xl's network-detach applies to a devid argument: leading blanks, a sign,
    the digits that follow; anything else reads as 0."""
    m = re.match(r"[ \t\n\v\f\r]*([+-]?[0-9]+)", text)
    return int(m.group(1)) if m else 0


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


def attach_nic(ctrl: XenCtrl, paths: Paths, domid: int, nic: NicSpec, domain_type: str) -> None:
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
        add_all(ctrl, paths, domid, [], [nic])
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
            _wait_state(xs, be, (b"2", b"6"), DETACH_SETTLE)
            xs.transact(lambda t: (t.write(f"{fe}/state", "6"), t.write(f"{be}/online", "0")))
            _wait_state(xs, be, (b"6",), DETACH_TIMEOUT)
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

    The runner is toolstack/hotplug_scripts.py's ``run_hotplug_script`` (the block branch's);
    it is looked up at run time so this module does not depend on it before the merge.

    :raise DeviceError: the script failed (libxl's lines), or no runner is installed.
    """
    try:
        runner = importlib.import_module(f"{__package__}.hotplug_scripts")
    except ImportError:
        raise DeviceError(f"vif {nic.devid}: script={nic.script}: this pyxen cannot run vif hotplug "
                          "scripts (toolstack/hotplug_scripts.py is missing)") from None
    be = backend_path("vif", domid, nic.devid)

    def read(key: str) -> str | None:
        with XenstoreClient(paths.xenstored_socket) as xs:
            raw = xs.get(f"{be}/{key}")
        return raw.decode(errors="replace") if raw is not None else None

    def read_error() -> str | None:
        return read("hotplug-error")

    # The ``script`` node is the path libxl runs (a relative script= made absolute), so
    # online and offline run the same file.
    script = read("script") or nic.script
    try:
        runner.run_hotplug_script(paths, runner.HotplugDevice("vif", domid, nic.devid), script,
                                  add, extra_env=vif_script_env(domid, nic), read_error=read_error)
    except runner.HotplugScriptError as err:
        raise DeviceError(str(err)) from err


def detach_nic(ctrl: XenCtrl, paths: Paths, domid: int, devid: int) -> None:
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
    if script and script != f"{XEN_SCRIPT_DIR}/{DEFAULT_VIF_SCRIPT}":
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


def _wait_state(xs: XenstoreClient, be: str, states: tuple[bytes, ...], timeout: float) -> None:
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
