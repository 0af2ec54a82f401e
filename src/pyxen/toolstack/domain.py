"""Domain life cycle for the toolstack (libxl_domain_create_new, _destroy, _pause, ...).

Every operation is a few hypercalls plus the xenstore records that go with them. A create that
fails at any step destroys what it made, so no half-built domain is left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..hypervisor.client import XenCtrl
from ..hypervisor.domctl import CreateDomain
from ..hypervisor.errors import HypercallError, NoSuchDomain
from ..libxlu.cpumap import parse_cpulist
from ..libxlu.domid import parse_uint
from ..paths import Paths
from ..xenstore.client import ClientTransaction, XenstoreClient
from ..xenstore.errors import XenstoreError
from . import devices, domid_history, hotplug, savefile, userdata, xsdomain
from .config import DomainConfig


class DomainBuildError(RuntimeError):
    """Building the domain failed at a named step; nothing of it is left."""


@dataclass(frozen=True)
class DomainRef:
    domid: int
    name: str


def check_files(cfg: DomainConfig) -> None:
    """The kernel and ramdisk must be readable files in Dom0 (libxl checks before building);
    with a bootloader they are paths in the guest, which the bootloader checks."""
    if cfg.bootloader is not None:
        return
    for key in ("kernel", "ramdisk"):
        path = getattr(cfg, key)
        if path is None:
            continue
        if not os.path.isfile(path):
            raise DomainBuildError(f"{cfg.source}: {key} '{path}' does not exist")
        if not os.access(path, os.R_OK):
            raise DomainBuildError(f"{cfg.source}: {key} '{path}' is not readable")


def build_request(cfg: DomainConfig, cpupool: int = 0) -> CreateDomain:
    """What the hypervisor is asked to build for ``cfg`` (libxl's domain_create_info and
    build_info, the parts the hypervisor and device model need), in pool ``cpupool``."""
    return CreateDomain(
        name=cfg.name, uuid=cfg.uuid, type=cfg.type, memory_kb=cfg.memory * 1024,
        max_memkb=cfg.maxmem * 1024, vcpus=cfg.vcpus, max_vcpus=cfg.maxvcpus, kernel=cfg.kernel,
        ramdisk=cfg.ramdisk, cmdline=cfg.cmdline, vnc=cfg.vnc, vncdisplay=cfg.vncdisplay,
        vnclisten=cfg.vnclisten, boot=cfg.boot, cpu_weight=cfg.cpu_weight, cap=cfg.cap,
        vncpasswd=cfg.vncpasswd, vncunused=cfg.vncunused, serial=cfg.serial, usb=cfg.usb,
        usbdevice=cfg.usbdevice, dm_args=cfg.dm_args, domid=cfg.domid, cpupool=cpupool)


def create(ctrl: XenCtrl, paths: Paths, cfg: DomainConfig, paused: bool = False,
           restore_from: tuple[Path, int] | None = None, migrate_fd: int | None = None,
           monitored: bool = True, run_scripts: bool = True) -> int:
    """Build and (unless ``paused``) start a domain; return its domid.

    Order as libxl: the hypervisor makes the domain (paused, device model started), then its
    xenstore records are written and it is introduced to xenstored, then its disks and vifs are
    added (grants, event channels, backend nodes; once each backend is in InitWait the device is
    plugged into the paused device model, since QEMU's vhost-user set-up waits for the backend),
    then the build is declared finished and the domain unpaused. With ``restore_from`` (a save
    file and where its stream starts) the device model loads the saved state instead of booting;
    with ``migrate_fd`` it loads a migration stream read from that descriptor (xl
    migrate-receive's stdin), which is handed to QEMU itself. ``monitored=False`` (xl's -e)
    marks the domain for the monitor to leave alone, before it can run. ``run_scripts=False``
    (xl.conf's run_hotplug_scripts=0) leaves the devices' ``script=`` to udev.

    Until ``domctl.finish_build`` the domain belongs to this caller's hypervisor connection: if
    the caller dies (xl killed), the hypervisor destroys it, and the monitor removes its records.
    An exception here (Ctrl-C included) destroys what was made before it is raised.

    A config with a ``domid`` (a save file of ``xl save -D``) asks for that domid: refused as
    libxl does if it was destroyed less than LIBXL_DOMID_REUSE_TIMEOUT seconds ago, and by the
    hypervisor (EEXIST) if a domain has it.

    A config with a ``bootloader`` (PV/PVH) runs it first (toolstack/bootloader.py) and builds
    the domain on the kernel, ramdisk and args it chose; the config kept with the domain is the
    one given, so every rebuild (on_reboot restart, xendomains, xapi's VM.start) runs the
    bootloader again and a changed grub.cfg takes effect. A restore or an incoming migration
    runs it too, where libxl does not: the hypervisor starts a PV domain's QEMU with -kernel
    (the restored RAM holds the running kernel; the one given serves a QEMU reset only).
    """
    if cfg.bootloader is None:
        check_files(cfg)
        return _build(ctrl, paths, cfg, cfg, paused, restore_from, migrate_fd, monitored,
                      run_scripts)
    from . import bootloader  # (only a config with one pays for its imports: shutil, tempfile, subprocess)
    try:
        boot = bootloader.run(paths, cfg)
    except bootloader.BootloaderError as err:
        raise DomainBuildError(f"{cfg.source}: {err}") from err
    try:
        # QEMU reads the kernel and ramdisk as it starts (before createdomain returns); they
        # are deleted when the build is over, so the domain never depends on them after.
        booted = replace(cfg, kernel=boot.kernel, ramdisk=boot.ramdisk, cmdline=boot.args)
        return _build(ctrl, paths, cfg, booted, paused, restore_from, migrate_fd, monitored,
                      run_scripts)
    finally:
        boot.remove()


def _build(ctrl: XenCtrl, paths: Paths, cfg: DomainConfig, booted: DomainConfig, paused: bool,
           restore_from: tuple[Path, int] | None, migrate_fd: int | None, monitored: bool,
           run_scripts: bool) -> int:
    """create's work: ``cfg`` is kept with the domain, ``booted`` (the same, with a
    bootloader's kernel, ramdisk and args) is what the hypervisor builds."""
    if cfg.domid is not None:
        if not isinstance(cfg.domid, int) or isinstance(cfg.domid, bool) or cfg.domid < 1:
            raise DomainBuildError(f"{cfg.source}: domid {cfg.domid!r} is not a domain id")
        if domid_history.is_recent(paths, cfg.domid):
            raise DomainBuildError(f"libxl: error: Domain {cfg.domid}:domain id recently used")
    try:
        disks, nics = devices.parse_all(cfg.disks, cfg.vifs)
        devices.check_nic_types(nics, cfg.type)
    except devices.DeviceSpecError as err:
        raise DomainBuildError(f"{cfg.source}: {err}") from err
    cpupool = 0
    if cfg.pool is not None:
        found = next((p for p in ctrl.call("sysctl.cpupool_op.info")
                      if p["name"] == cfg.pool or str(p["poolid"]) == cfg.pool), None)
        if found is None:
            raise DomainBuildError(f"Illegal pool specified: {cfg.pool}")
        cpupool = int(found["poolid"])
    cdroms = [d for d in disks if cfg.type == "hvm" and d.devtype == "cdrom"]
    disks = [d for d in disks if d not in cdroms]
    empty = next((d for d in disks if not d.target), None)
    if empty is not None:
        raise DomainBuildError(f"{cfg.source}: disk {empty.vdev}: an empty cdrom drive needs an hvm guest "
                               "(a pv guest's cdrom needs a target)")
    try:
        request = replace(build_request(booted, cpupool), cdroms=tuple(
            (hotplug.cdrom_index(d), d.target or "") for d in cdroms))
    except hotplug.DeviceError as err:
        raise DomainBuildError(f"{cfg.source}: {err}") from err
    if restore_from is not None or migrate_fd is not None:
        request = replace(request, incoming=True)
    domid: int = ctrl.call("domctl.createdomain", request=request.to_wire())
    try:
        userdata.store(paths, domid, replace(cfg, domid=None))
        if not monitored:
            userdata.mark_unmonitored(paths, domid)
        try:
            xsdomain.introduce(paths.xenstored_socket, domid, cfg.name, cfg.uuid, cfg.type,
                               cfg.memory * 1024, cfg.maxmem * 1024, cfg.vcpus, cfg.maxvcpus,
                               cfg.source)
            xsdomain.connect_guest(ctrl, paths, domid)
        except (OSError, XenstoreError) as err:
            raise DomainBuildError(f"cannot write the xenstore records of '{cfg.name}': {err}") from err
        try:
            hotplug.add_all(ctrl, paths, domid, disks, nics, run_scripts=run_scripts)
            hotplug.add_emulated_cdroms(paths, domid, cdroms)
        except hotplug.DeviceError as err:
            raise DomainBuildError(f"cannot add the devices of '{cfg.name}': {err}") from err
        for kind, spec in (("hard", cfg.cpus), ("soft", cfg.cpus_soft)):
            if isinstance(spec, str):  # every vCPU, as parse_vcpu_affinity copies it
                pin_vcpus(ctrl, domid, spec, range(cfg.maxvcpus), kind)
            elif spec is not None:  # vCPU by vCPU; entries beyond maxvcpus are ignored, as xl
                for n, item in enumerate(spec[:cfg.maxvcpus]):
                    pin_vcpus(ctrl, domid, item, [n], kind)
        if restore_from is not None:
            ctrl.call("dm_op.restore", domid=domid, path=str(restore_from[0]), offset=restore_from[1])
        elif migrate_fd is not None:
            ctrl.call("dm_op.migrate_receive", domid=domid, fds=[migrate_fd])
        ctrl.call("domctl.finish_build", domid=domid)
        if not paused:
            ctrl.call("domctl.unpausedomain", domid=domid)
    except BaseException:
        try:
            destroy(ctrl, paths, domid)
        except HypercallError:
            pass  # already gone (its builder's connection broke, or a racing destroy)
        raise
    return domid


@contextlib.contextmanager
def create_lock(path: str, timeout: float | None = None) -> Iterator[None]:
    """xl create's acquire_lock: one builder at a time on the host (xl.conf's lockfile, an
    fcntl lock on the file, released when the domain is built). ``timeout``: give up after
    that many seconds (DomainBuildError) instead of waiting for ever, as xl does."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a") as lock:
        if timeout is None:
            fcntl.lockf(lock, fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError:
                    if time.monotonic() >= deadline:
                        raise DomainBuildError(f"another domain is being built: the create lock "
                                               f"{path} was not free within {timeout:g} s") from None
                    time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.lockf(lock, fcntl.LOCK_UN)


def destroy(ctrl: XenCtrl, paths: Paths, domid: int) -> None:
    """Destroy the domain, then remove its xenstore records (fires @releaseDomain) and its
    userdata, and mark its domid recently used. The records go even if the hypervisor already
    lost the domain."""
    try:
        ctrl.call("domctl.destroydomain", domid=domid)
    finally:
        hotplug.remove_all(paths, domid)
        xsdomain.release_quietly(paths.xenstored_socket, domid)
        userdata.remove(paths, domid)
        domid_history.mark_recent(paths, domid)


def retrieve_config(ctrl: XenCtrl, paths: Paths, domid: int) -> DomainConfig | None:
    """The domain's config as it is now (libxl_retrieve_domain_configuration): the kept one
    with the vCPUs online and the balloon target of the live domain, which ``xl vcpu-set`` and
    ``xl mem-set`` changed since the build. A save or a migration sends this one, so that the
    domain is rebuilt with what its saved state has (QEMU refuses a stream with a vCPU its
    machine lacks). None when the toolstack keeps no config for the domain."""
    cfg = userdata.retrieve(paths, domid)
    info = find(ctrl, "domid", domid)
    if cfg is None or info is None:
        return cfg
    cfg = replace(cfg, vcpus=max(1, min(int(info["online_vcpus"]), cfg.maxvcpus)))
    try:
        with XenstoreClient(paths.xenstored_socket) as xs:
            target = xs.get(f"{xsdomain.dom_path(domid)}/memory/target")
    except (OSError, XenstoreError):
        target = None
    if target is not None and target.isdigit() and int(target) >= 1024:
        cfg = replace(cfg, memory=min(int(target) // 1024, cfg.maxmem))
    return cfg


def save(ctrl: XenCtrl, paths: Paths, domid: int, path: Path, keep: bool = False, paused: bool = False,
         config: DomainConfig | None = None, same_domid: bool = False) -> str:
    """xl save: xl's header with the domain's config, then its state; the domain is destroyed,
    or kept (running, or paused with ``paused``). Returns the header's info for xl's message.
    ``same_domid`` (xl save -D) writes the domid into the saved config, so that its restore asks
    for it; as in xl it is ignored when ``config`` replaces the domain's own.

    :raise DomainBuildError: with xl's message; the domain is then running again.
    """
    cfg = config or retrieve_config(ctrl, paths, domid)
    if cfg is None:
        raise DomainBuildError("unable to retrieve domain configuration")
    if same_domid and config is None:
        cfg = replace(cfg, domid=domid)
    header = savefile.encode(cfg.to_json())
    try:
        with open(path, "wb") as f:
            f.write(header)
    except OSError:
        raise DomainBuildError(f"Failed to open temp file {path} for writing") from None
    info = savefile.decode(io.BytesIO(header), str(path)).info()
    try:
        ctrl.call("dm_op.save", domid=domid, path=str(path))
    except HypercallError as err:
        ctrl.call("domctl.unpausedomain", domid=domid)
        raise DomainBuildError(f"Failed to save domain, resuming domain ({err})") from err
    if not keep:
        destroy(ctrl, paths, domid)
    elif not paused:
        ctrl.call("domctl.unpausedomain", domid=domid)
    return info


def rename(ctrl: XenCtrl, paths: Paths, domid: int, old: str, new: str) -> None:
    """libxl_domain_rename: the hypervisor's name, xenstore's ``name`` nodes and the kept
    config's, if the domain is still called ``old`` (xl migrate's ``--incoming`` and
    ``--migratedaway``). The kept config takes the new name, so an on_reboot restart comes back
    under it.

    :raise DomainBuildError: the domain is not called ``old``, or a step failed.
    """
    info = find(ctrl, "domid", domid)
    if info is None or info["name"] != old:
        raise DomainBuildError(f"domain {domid} is not called '{old}'")
    try:
        ctrl.call("domctl.setdomainname", domid=domid, name=new)
        with XenstoreClient(paths.xenstored_socket) as xs:
            xs.write(f"{xsdomain.dom_path(domid)}/name", new)
            xs.write(f"{xsdomain.vm_path(str(info['uuid']))}/name", new)
    except (HypercallError, OSError, XenstoreError) as err:
        raise DomainBuildError(f"cannot rename domain {domid} from {old} to {new}: {err}") from err
    cfg = userdata.retrieve(paths, domid)
    if cfg is not None:
        userdata.store(paths, domid, replace(cfg, name=new))


def set_uuid(ctrl: XenCtrl, paths: Paths, domid: int, new_uuid: str) -> None:
    """Give a live domain another uuid, as libxl_domain_preserve does: the hypervisor's handle
    (refused if another domain has it), its ``/vm/<uuid>`` directory moved to the new uuid (with
    ``uuid``, ``name`` and ``start_time``) and ``/local/domain/<id>/vm`` pointing there, and the
    kept config. Used where a domain was built under a stand-in uuid (a same-host migration,
    whose two copies may not share one).

    :raise DomainBuildError: the domain is gone, the uuid is taken, or a step failed.
    """
    info = find(ctrl, "domid", domid)
    if info is None:
        raise DomainBuildError(f"domain {domid} does not exist")
    old_vm = xsdomain.vm_path(str(info["uuid"]))
    new_vm = xsdomain.vm_path(new_uuid)
    try:
        ctrl.call("domctl.setdomainhandle", domid=domid, uuid=new_uuid)
        with XenstoreClient(paths.xenstored_socket) as xs:
            def move(t: ClientTransaction) -> None:
                start = t.get(f"{old_vm}/start_time")
                if t.exists(new_vm):
                    t.rm(new_vm)
                t.mkdir(new_vm)
                t.set_perms(new_vm, ["n0", f"r{domid}"])
                t.write(f"{new_vm}/uuid", new_uuid)
                t.write(f"{new_vm}/name", str(info["name"]))
                if start is not None:
                    t.write(f"{new_vm}/start_time", start.decode())
                t.write(f"{xsdomain.dom_path(domid)}/vm", new_vm)
                if old_vm != new_vm and t.exists(old_vm):
                    t.rm(old_vm)
            xs.transact(move)
    except (HypercallError, OSError, XenstoreError) as err:
        raise DomainBuildError(f"cannot give domain {domid} the uuid {new_uuid}: {err}") from err
    cfg = userdata.retrieve(paths, domid)
    if cfg is not None:
        userdata.store(paths, domid, replace(cfg, uuid=new_uuid))


def pin_vcpus(ctrl: XenCtrl, domid: int, cpulist: str, vcpus: Iterable[int], kind: str = "hard") -> list[int]:
    """Pin ``vcpus`` (``kind``: their hard or soft affinity) to ``cpulist`` (xl's syntax:
    ``all``, ``0-3,^1``); the map in force.

    :raise DomainBuildError: the list is malformed or names CPUs the host lacks.
    """
    phys = ctrl.call("sysctl.physinfo")
    nr_cpus = int(phys["nr_cpus"])

    def node_cpus(node: int) -> set[int]:
        # pyxen knows no CPU-to-node map: on a one-node host node 0 has every CPU
        return set(range(nr_cpus)) if node == 0 and int(phys.get("nr_nodes", 1)) == 1 else set()

    try:
        cpus = sorted(parse_cpulist(cpulist, nr_cpus, node_cpus))
    except ValueError as err:
        raise DomainBuildError(str(err)) from err
    if not cpus:
        raise DomainBuildError(f"cpu list '{cpulist}' selects no CPU")
    now: list[int] = []
    for n in vcpus:
        which: dict[str, Any] = {kind: cpus}
        now = ctrl.call("domctl.setvcpuaffinity", domid=domid, vcpu=n, **which)[kind]
    return now


def parse_memory_size(text: str) -> int:
    """xl's memory size: a number with an optional t/g/m/k/b suffix; a bare number is MiB.
    Returns KiB. :raise ValueError: not a size."""
    m = re.fullmatch(r"([0-9]+)([tTgGmMkKbB]?)", text.strip())
    if not m:
        raise ValueError(f"invalid memory size: {text}")
    shift = {"t": 30, "g": 20, "m": 10, "": 10, "k": 0}.get(m.group(2).lower())
    return int(m.group(1)) >> 10 if shift is None else int(m.group(1)) << shift


def set_memory_target(ctrl: XenCtrl, paths: Paths, domid: int, target_kb: int) -> None:
    """xl mem-set (libxl_set_memory_target): the hypervisor moves the reservation and the
    balloon, then ``~/memory/target`` is written, which is what a Xen guest's balloon watches.

    Both or neither: xenstored is reached first (so a store that is down changes nothing), and
    if the write fails the reservation is moved back."""
    with XenstoreClient(paths.xenstored_socket) as xs:
        node = f"{xsdomain.dom_path(domid)}/memory/target"
        before = xs.get(node)
        if before is None:
            raise NoSuchDomain(f"domain {domid} has no memory/target in xenstore")
        ctrl.call("memory_op.set_target", domid=domid, target_kb=target_kb)
        try:
            xs.write(node, str(target_kb))
        except BaseException:
            ctrl.call("memory_op.set_target", domid=domid, target_kb=int(before))
            raise


def set_max_memory(ctrl: XenCtrl, paths: Paths, domid: int, max_kb: int) -> None:
    """xl mem-max: the hypervisor's ceiling (xenstore's static-max is left alone, as in libxl)."""
    ctrl.call("domctl.max_mem", domid=domid, max_kb=max_kb)


class NoParavirt(DomainBuildError):
    """The guest has no PV control driver (libxl's ERROR_NOPARAVIRT, rc=-10)."""


def request_shutdown(ctrl: XenCtrl, paths: Paths, domid: int, command: str) -> None:
    """Ask the guest to power off or reboot through ``~/control/shutdown`` (libxl_domain_shutdown).

    The guest's control driver acts and writes "" back; the domain's on_poweroff/on_reboot then
    apply when it shuts down. An HVM guest that never advertised feature-poweroff has no such
    driver: that is NoParavirt, and only an ACPI event (``fallback_acpi``) can reach it.
    """
    info = find(ctrl, "domid", domid)
    if info is None or domid == 0:
        raise NoSuchDomain(f"domain {domid} does not exist or cannot be shut down")
    dp = xsdomain.dom_path(domid)
    with XenstoreClient(paths.xenstored_socket) as xs:
        if info["type"] == "hvm" and xs.get(f"{dp}/control/feature-poweroff") != b"1":
            raise NoParavirt("PV control interface not available: external graceful shutdown not possible.")
        xs.write(f"{dp}/control/shutdown", command)


def fallback_acpi(ctrl: XenCtrl, domid: int, reboot: bool) -> None:
    """xl's -F: an ACPI power button press (or a reset) instead of the PV request."""
    ctrl.call("dm_op.trigger", domid=domid, trigger="reset" if reboot else "power")


def pause(ctrl: XenCtrl, paths: Paths, domid: int) -> None:
    ctrl.call("domctl.pausedomain", domid=domid)


def unpause(ctrl: XenCtrl, paths: Paths, domid: int) -> None:
    ctrl.call("domctl.unpausedomain", domid=domid)


def list_domains(ctrl: XenCtrl) -> list[dict[str, Any]]:
    return list(ctrl.call("sysctl.getdomaininfolist"))


def find(ctrl: XenCtrl, key: str, value: object) -> dict[str, Any] | None:
    """The live domain whose ``key`` ("name" or "domid") is ``value``, or None."""
    return next((d for d in list_domains(ctrl) if d[key] == value), None)


def resolve(ctrl: XenCtrl, arg: str) -> DomainRef:
    """A domain argument as xl reads it: all ASCII digits is a domid (not checked, as in xl),
    anything else (other scripts' digits too) an exact name."""
    domid = parse_uint(arg)
    if domid is not None:
        found = find(ctrl, "domid", domid)
        return DomainRef(domid, found["name"] if found else "")
    found = find(ctrl, "name", arg)
    if found is None:
        raise NoSuchDomain(f"{arg} is an invalid domain identifier (rc=-6)")
    return DomainRef(found["domid"], found["name"])


__all__ = ["DomainBuildError", "DomainRef", "create", "destroy", "find", "list_domains", "resolve",
           "HypercallError"]
