"""pyxen's xenopsd: what xapi asks of real domains, as a thin facade over the toolstack.

xapi keeps VMs in its database and hands the domain work to xenopsd. Here that work is done by
the same toolstack functions ``xl`` calls (toolstack/domain.py, hotplug.py, migration.py,
sched.py): a VM is started exactly as ``xl create`` starts the equivalent xl.cfg (build_config
writes that xl.cfg text and parses it with xl's parser), so the host's monitor applies its
on_* actions and ``xl list`` shows it under its name and uuid. This module knows nothing of the
database or the server: it takes plain data (VmSpec, DiskSpec, VifSpec) and returns domids and
LiveDomain records.

Every call is bounded (each hypercall by the hypervisor client's timeout, each wait by the
call's ``timeout``) and every failure is one XenopsError whose message names the domain and
what failed.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from ..hypervisor.client import CALL_TIMEOUT, XenCtrl
from ..hypervisor.errors import HypercallError
from ..libxlu.cfg import ConfigSyntaxError, parse, quote
from ..paths import Paths
from ..toolstack import domain as libxl
from ..toolstack import hotplug, migration, savefile, userdata
from ..toolstack import sched as libxl_sched
from ..toolstack.config import ConfigError, DomainConfig, from_settings
from ..toolstack.devices import DeviceSpecError, parse_disk, parse_vif, vdev_to_devid
from ..xenstore.client import XenstoreClient
from ..xenstore.errors import XenstoreError

#: How long a clean shutdown or reboot waits for the guest to act on the request (xapi's
#: default for VM.clean_shutdown is 20 minutes; TCG guests answer within seconds).
SHUTDOWN_TIMEOUT = 120.0
#: How long a start or a resume may take, the build lock's wait included.
BUILD_TIMEOUT = 180.0
#: How long a same-host migration may take end to end (the stream itself is bounded by the
#: hypervisor's save timeout; this bounds the receiver's thread).
MIGRATE_TIMEOUT = 300.0
MiB = 1 << 20

#: xapi's platform keys that have an xl.cfg equivalent (HVM guests): platform key -> xl.cfg key.
#: Others (viridian, nx, device_id, timeoffset, ...) have nothing in pyxen to act on and are
#: left out.
PLATFORM_KEYS = {"acpi": "acpi", "apic": "apic", "pae": "pae", "hap": "hap", "videoram": "videoram",
                 "vga": "vga", "usb": "usb", "vnc": "vnc", "boot": "boot", "serial": "serial"}
#: xapi's platform:vga values -> xl.cfg's vga=.
VGA = {"std": "stdvga", "cirrus": "cirrus", "none": "none"}


class XenopsError(RuntimeError):
    """A domain operation failed; str() is one line naming the domain and the step."""


@dataclass(frozen=True)
class DiskSpec:
    """A VBD as the domain sees it: ``path`` (the VDI's file; "" for an empty CD drive),
    ``vdev`` (xvda, hdc, ...), ``mode`` "w" or "r", ``cdrom`` (VBD.type CD)."""

    path: str
    vdev: str
    mode: str = "w"
    cdrom: bool = False
    format: str = "raw"


@dataclass(frozen=True)
class VifSpec:
    """A VIF: its ``devid`` (VIF.device), MAC, the bridge of its network, and MTU."""

    devid: int
    mac: str
    bridge: str
    mtu: int = 1500


@dataclass(frozen=True)
class VmSpec:
    """What xapi's VM record says about the domain to build. Memory in bytes (as xapi keeps
    it); actions are xl's names (destroy, restart, preserve, ...)."""

    uuid: str
    name: str
    memory_static_max: int
    memory_dynamic_max: int
    vcpus_max: int = 1
    vcpus_at_startup: int = 1
    kernel: str = ""
    ramdisk: str = ""
    cmdline: str = ""
    #: VM.PV_bootloader ("pygrub") and PV_bootloader_args (one string, split on blanks).
    bootloader: str = ""
    bootloader_args: str = ""
    hvm: bool = False
    disks: tuple[DiskSpec, ...] = ()
    vifs: tuple[VifSpec, ...] = ()
    on_poweroff: str = "destroy"
    on_reboot: str = "restart"
    on_crash: str = "destroy"
    #: xapi's VM.platform (HVM keys of PLATFORM_KEYS are passed on).
    platform: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LiveDomain:
    """One domain as the hypervisor reports it (what ``xl list`` reads)."""

    domid: int
    uuid: str
    name: str
    #: running, paused, shutdown (with the reason in shutdown_reason), dying, building
    state: str
    memory_bytes: int
    vcpus: int
    start_time: float
    shutdown_reason: int | None = None


def domain_name(name_label: str, uuid: str, taken: Iterable[str] = ()) -> str:
    """A domain name for a VM whose name_label is free text (xapi allows any label, and the
    same label twice; xl names are letters, digits and ``_.-``, at most 64, unique, not all
    digits, not Domain-0): the label with every other character made ``-``, and when that is
    empty, all digits, Domain-0 or one of ``taken`` (the live domains' names), followed by
    the first 8 characters of the uuid."""
    base = re.sub(r"[^A-Za-z0-9_.\-]+", "-", name_label).strip("-_.")[:55]
    taken = set(taken)
    if base and not base.isdigit() and base != "Domain-0" and base not in taken:
        return base
    return f"{base}-{uuid[:8]}" if base else f"vm-{uuid[:8]}"


# ---- the config -------------------------------------------------------------------------------
def _disk_entry(disk: DiskSpec) -> str:
    """One disk= entry in xl's keyword form (target= last: it takes the rest of the entry)."""
    if disk.mode not in ("w", "r"):
        raise XenopsError(f"disk {disk.vdev}: mode '{disk.mode}' is neither 'w' nor 'r'")
    items = [f"format={disk.format}", f"vdev={disk.vdev}", f"access={'rw' if disk.mode == 'w' else 'ro'}"]
    if disk.cdrom:
        items.append("devtype=cdrom")
    if disk.path:
        items.append(f"target={disk.path}")
    return ",".join(items)


def _vif_entry(vif: VifSpec) -> str:
    for what, value in (("mac", vif.mac), ("bridge", vif.bridge)):
        if not value or any(c in value for c in ",= \t\n"):
            raise XenopsError(f"vif {vif.devid}: {what} '{value}' cannot be written in a vif spec")
    return f"devid={vif.devid},mac={vif.mac},bridge={vif.bridge},mtu={vif.mtu}"


def _value(text: str) -> str:
    """A platform value in xl.cfg: a number bare, anything else quoted."""
    return text if text.isascii() and text.isdigit() else quote(text)


def xl_cfg(spec: VmSpec) -> str:
    """The xl.cfg text equivalent to ``spec``: what a user would give ``xl create``."""
    if spec.memory_dynamic_max > spec.memory_static_max:
        raise XenopsError(f"VM {spec.name}: memory_dynamic_max {spec.memory_dynamic_max} is above "
                          f"memory_static_max {spec.memory_static_max}")
    lines = [f"name = {quote(spec.name)}", f"uuid = {quote(spec.uuid)}",
             f"type = {quote('hvm' if spec.hvm else 'pv')}",
             f"memory = {spec.memory_dynamic_max // MiB}", f"maxmem = {spec.memory_static_max // MiB}",
             f"vcpus = {spec.vcpus_at_startup}", f"maxvcpus = {spec.vcpus_max}"]
    for key, value in (("kernel", spec.kernel), ("ramdisk", spec.ramdisk), ("cmdline", spec.cmdline)):
        if value:
            lines.append(f"{key} = {quote(value)}")
    if spec.bootloader and not spec.hvm:
        lines.append(f"bootloader = {quote(spec.bootloader)}")
        if spec.bootloader_args.split():
            lines.append("bootloader_args = [" + ", ".join(quote(a) for a in
                                                           spec.bootloader_args.split()) + "]")
    for key in ("on_poweroff", "on_reboot", "on_crash"):
        lines.append(f"{key} = {quote(getattr(spec, key))}")
    if spec.hvm:
        for key, value in sorted(spec.platform.items()):
            if key in PLATFORM_KEYS:
                value = VGA.get(value, value) if key == "vga" else value
                value = {"true": "1", "false": "0"}.get(value, value)
                lines.append(f"{PLATFORM_KEYS[key]} = {_value(value)}")
    if spec.disks:
        lines.append("disk = [" + ", ".join(quote(_disk_entry(d)) for d in spec.disks) + "]")
    if spec.vifs:
        lines.append("vif = [" + ", ".join(quote(_vif_entry(v)) for v in spec.vifs) + "]")
    return "\n".join(lines) + "\n"


def build_config(spec: VmSpec) -> DomainConfig:
    """The DomainConfig ``xl create`` would make of the equivalent xl.cfg (xl_cfg): the text is
    parsed by xl's parser, so every check xl makes is made. Pure.

    :raise XenopsError: a value xl would refuse, with xl's reason.
    """
    source = f"<VM {spec.uuid}>"
    try:
        try:
            text = xl_cfg(spec)
        except ValueError as err:  # quote: a NUL in a string
            raise XenopsError(f"VM {spec.name}: {err}") from err
        return from_settings(parse(text, source), source, cwd="/")
    except ConfigSyntaxError as err:
        raise XenopsError(f"VM {spec.name}: {err.xl_report()}") from err
    except ConfigError as err:
        raise XenopsError(f"VM {spec.name}: " + "; ".join(str(err).splitlines())) from err


# ---- helpers ----------------------------------------------------------------------------------
@contextlib.contextmanager
def _ctrl(paths: Paths, what: str, timeout: float = CALL_TIMEOUT) -> Iterator[XenCtrl]:
    """A hypervisor connection for one operation; every toolstack failure becomes one
    XenopsError that starts with ``what`` (the domain and the step)."""
    try:
        with XenCtrl(paths.hypervisor_socket, timeout=timeout) as xc:
            yield xc
    except XenopsError:
        raise
    except (libxl.DomainBuildError, hotplug.DeviceError, HypercallError, XenstoreError, OSError,
            DeviceSpecError, savefile.SaveFileError, migration.StreamError) as err:
        raise XenopsError(f"{what}: {migration.one_line(str(err)) or type(err).__name__}") from err


def _info(xc: XenCtrl, domid: int, what: str) -> dict[str, object]:
    info = libxl.find(xc, "domid", domid)
    if info is None:
        raise XenopsError(f"{what}: domain {domid} does not exist")
    return info


def _label(xc: XenCtrl, domid: int) -> str:
    """``domain <id> (<name>)`` for messages."""
    info = libxl.find(xc, "domid", domid)
    return f"domain {domid} ({info['name']})" if info else f"domain {domid}"


def _wait(xc: XenCtrl, domid: int, timeout: float, what: str) -> dict[str, object] | None:
    """Until the domain has shut down (its info) or is gone (None); XenopsError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        info = libxl.find(xc, "domid", domid)
        if info is None or info["shutdown"] or info["dying"]:
            return info
        if time.monotonic() >= deadline:
            raise XenopsError(f"{what}: the guest did not shut down within {timeout:g} s")
        time.sleep(0.2)


# ---- life cycle -------------------------------------------------------------------------------
def start(paths: Paths, spec: VmSpec, paused: bool = False, timeout: float = BUILD_TIMEOUT) -> int:
    """Build and start the VM's domain as ``xl create`` does (the host's build lock, the same
    toolstack create); returns its domid. With ``paused`` it is left paused (VM.start
    start_paused)."""
    cfg = build_config(spec)
    what = f"VM {spec.name}: start"
    with _ctrl(paths, what) as xc:
        libxl.check_files(cfg)
        with libxl.create_lock(str(paths.xl_lock), timeout=timeout):
            return libxl.create(xc, paths, cfg, paused=paused)


def hard_shutdown(paths: Paths, domid: int) -> None:
    """Destroy the domain now (xl destroy)."""
    with _ctrl(paths, f"domain {domid}: hard_shutdown") as xc:
        _info(xc, domid, f"domain {domid}: hard_shutdown")
        libxl.destroy(xc, paths, domid)


@contextlib.contextmanager
def _unmonitored(paths: Paths, domid: int) -> Iterator[None]:
    """The monitor leaves the domain alone inside the block (xl's -e mark): the shutdown that
    follows is this caller's to finish, whatever the domain's on_* action says, as xenopsd
    destroys (or rebuilds) a domain it asked to halt (or reboot). Taken back if the block
    fails with the domain still there."""
    userdata.mark_unmonitored(paths, domid)
    try:
        yield
    except BaseException:
        with contextlib.suppress(OSError):
            userdata.mark_monitored(paths, domid)
        raise


def _request(paths: Paths, domid: int, command: str, timeout: float) -> DomainConfig:
    """Ask the guest to power off or reboot (xl shutdown/reboot) and wait until it has shut
    down, then destroy it; returns the config it was built from."""
    verb = "clean_shutdown" if command == "poweroff" else "clean_reboot"
    with _ctrl(paths, f"domain {domid}: {verb}") as xc:
        what = f"{_label(xc, domid)}: {verb}"
        cfg = userdata.retrieve(paths, domid)
        if cfg is None:
            raise XenopsError(f"{what}: the toolstack keeps no config for it")
        with _unmonitored(paths, domid):
            try:
                libxl.request_shutdown(xc, paths, domid, command)
            except libxl.NoParavirt as err:
                raise XenopsError(f"{what}: {err}") from err
            _wait(xc, domid, timeout, what)
        if libxl.find(xc, "domid", domid) is not None:
            libxl.destroy(xc, paths, domid)
        return cfg


def clean_shutdown(paths: Paths, domid: int, timeout: float = SHUTDOWN_TIMEOUT) -> None:
    """The guest powers itself off (its PV control driver acts on ~/control/shutdown); the
    domain is then destroyed. On timeout the guest keeps running (XenopsError)."""
    _request(paths, domid, "poweroff", timeout)


def clean_reboot(paths: Paths, domid: int, timeout: float = SHUTDOWN_TIMEOUT, spec: VmSpec | None = None) -> int:
    """The guest reboots itself; the domain is rebuilt (same uuid and name, a new domid, which
    is returned) from ``spec`` when given (xapi's VM as it is now: vCPUs and memory changed
    live are kept, a VBD made meanwhile is attached), else from the config it was built from."""
    cfg = build_config(spec) if spec is not None else None  # (a bad spec fails before the request)
    kept = _request(paths, domid, "reboot", timeout)
    return _rebuild(paths, cfg or kept, f"domain {domid} ({kept.name}): clean_reboot")


def hard_reboot(paths: Paths, domid: int, spec: VmSpec | None = None) -> int:
    """Destroy and rebuild at once (from ``spec`` when given, as clean_reboot); the new domid."""
    cfg = build_config(spec) if spec is not None else None
    with _ctrl(paths, f"domain {domid}: hard_reboot") as xc:
        what = f"{_label(xc, domid)}: hard_reboot"
        cfg = cfg or userdata.retrieve(paths, domid)
        if cfg is None:
            raise XenopsError(f"{what}: the toolstack keeps no config for it")
        libxl.destroy(xc, paths, domid)
    return _rebuild(paths, cfg, what)


def _rebuild(paths: Paths, cfg: DomainConfig, what: str) -> int:
    with _ctrl(paths, f"{what}: rebuild") as xc:
        with libxl.create_lock(str(paths.xl_lock), timeout=BUILD_TIMEOUT):
            return libxl.create(xc, paths, cfg)


def pause(paths: Paths, domid: int) -> None:
    with _ctrl(paths, f"domain {domid}: pause") as xc:
        libxl.pause(xc, paths, domid)


def unpause(paths: Paths, domid: int) -> None:
    with _ctrl(paths, f"domain {domid}: unpause") as xc:
        libxl.unpause(xc, paths, domid)


def suspend(paths: Paths, domid: int, image_path: str | Path) -> None:
    """xl save: the domain's config and state to ``image_path``; the domain is gone after."""
    with _ctrl(paths, f"domain {domid}: suspend to {image_path}") as xc:
        _info(xc, domid, f"domain {domid}: suspend")
        libxl.save(xc, paths, domid, Path(image_path))


def resume(paths: Paths, image_path: str | Path, paused: bool = False,
           timeout: float = BUILD_TIMEOUT) -> int:
    """xl restore of a suspend image: the domain is rebuilt from the config saved in it (its
    uuid and name) and goes on where it stopped; returns its domid."""
    path = Path(image_path)
    with _ctrl(paths, f"resume from {path}") as xc:
        with open(path, "rb") as f:
            header = savefile.decode(f, str(path))
        if header.config is None:
            raise XenopsError(f"resume from {path}: the image holds no domain config")
        try:
            cfg = DomainConfig.from_json(header.config)
        except TypeError as err:
            raise XenopsError(f"resume from {path}: unreadable domain config: {err}") from err
        with libxl.create_lock(str(paths.xl_lock), timeout=timeout):
            return libxl.create(xc, paths, cfg, paused=paused, restore_from=(path, header.stream_offset))


def migrate_local(paths: Paths, domid: int, timeout: float = MIGRATE_TIMEOUT) -> int:
    """A live migration of the domain to this same host (VM.pool_migrate in a one-host pool):
    ``xl migrate``'s sender and ``xl migrate-receive``'s receiver (toolstack/migration.py), in
    this process, over two pipes. The guest runs on in a new domain (new domid, returned) with
    the same name and uuid; the old one is destroyed. On failure the guest runs on where it was.

    The two copies may not share a uuid (the hypervisor refuses it), so the stream carries the
    config under a stand-in uuid and the new domain takes the real one once the old is gone
    (libxl_domain_preserve's handle change, domain.set_uuid).
    """
    with _ctrl(paths, f"domain {domid}: migrate_local") as xc:
        info = _info(xc, domid, f"domain {domid}: migrate_local")
        name, uuid = str(info["name"]), str(info["uuid"])
        what = f"domain {domid} ({name}): migrate_local"
        cfg = libxl.retrieve_config(xc, paths, domid)
        if cfg is None:
            raise XenopsError(f"{what}: the toolstack keeps no config for it")
        sent = replace(cfg, uuid=str(uuidlib.uuid4()))
        lines: list[str] = []
        built: list[int] = []
        to_recv, from_send = os.pipe()  # sender -> receiver: header, stream, GO
        to_send, from_recv = os.pipe()  # receiver -> sender: banner, READY, report
        migration.widen_pipe(from_send)
        result: list[int] = []

        def receiver() -> None:
            try:
                with XenCtrl(paths.hypervisor_socket) as xc2:
                    result.append(migration.receive(xc2, paths, to_recv, from_recv, lines.append,
                                                    on_built=built.append))
            except (HypercallError, OSError, XenstoreError) as err:
                lines.append(f"migration target: {migration.one_line(str(err))}")
                result.append(1)
            finally:
                os.close(to_recv)
                os.close(from_recv)

        thread = threading.Thread(target=receiver, name=f"migrate-receive-{domid}", daemon=True)
        thread.start()
        closed = False

        def transport_done() -> None:
            nonlocal closed
            if not closed:
                os.close(from_send)
                closed = True
            thread.join(migration.CHILD_WAIT)

        try:
            rc = migration.send(xc, paths, libxl.DomainRef(domid, name), sent, from_send, to_send,
                                lines.append, transport_done)
        finally:
            transport_done()
            thread.join(timeout)
            os.close(to_send)
        if thread.is_alive():
            raise XenopsError(f"{what}: the receiver did not finish within {timeout:g} s")
        if rc != 0 or not built or result != [0]:
            failed = [line for line in lines if "error" in line or "fail" in line.lower()]
            raise XenopsError(f"{what}: {'; '.join(failed or lines[-2:]) or 'failed'}")
        new = built[0]
        libxl.set_uuid(xc, paths, new, uuid)
        return new


# ---- resources ---------------------------------------------------------------------------------
def set_memory_target(paths: Paths, domid: int, target_bytes: int) -> None:
    """xl mem-set: the balloon target (the guest's balloon driver gives memory back or takes it)."""
    what = f"domain {domid}: set_memory_target {target_bytes}"
    if target_bytes < MiB:
        raise XenopsError(f"{what}: a target below 1 MiB")
    with _ctrl(paths, what) as xc:
        libxl.set_memory_target(xc, paths, domid, target_bytes // 1024)


def set_vcpus_online(paths: Paths, domid: int, n: int) -> None:
    """xl vcpu-set: the first ``n`` vCPUs online, the rest offline (the guest's agent acts on
    cpu/N/availability)."""
    what = f"domain {domid}: set_vcpus_online {n}"
    with _ctrl(paths, what) as xc:
        info = xc.call("domctl.getdomaininfo", domid=domid)
        if not 1 <= n <= int(info["max_vcpus"]):
            raise XenopsError(f"{what}: {n} is not within 1..VCPUs_max ({info['max_vcpus']})")
        libxl_sched.set_vcpus(xc, paths, domid, n)


# ---- devices -----------------------------------------------------------------------------------
def plug_disk(paths: Paths, domid: int, disk: DiskSpec) -> None:
    """xl block-attach: the guest sees a new disk."""
    what = f"domain {domid}: plug disk {disk.vdev}"
    with _ctrl(paths, what) as xc:
        hotplug.attach_disk(xc, paths, domid, parse_disk(_disk_entry(disk)))


def unplug_disk(paths: Paths, domid: int, vdev: str, force: bool = False) -> None:
    """xl block-detach: the guest lets go of the disk (within hotplug's DESTROY_TIMEOUT, else
    XenopsError and the disk stays), unless ``force``."""
    what = f"domain {domid}: unplug disk {vdev}"
    devid = vdev_to_devid(vdev)
    if devid < 0:
        raise XenopsError(f"{what}: not a virtual device name")
    with _ctrl(paths, what) as xc:
        hotplug.detach_disk(xc, paths, domid, devid, force=force)


def plug_vif(paths: Paths, domid: int, vif: VifSpec) -> None:
    """xl network-attach: the guest sees a new NIC on ``vif.bridge``."""
    what = f"domain {domid}: plug vif {vif.devid}"
    with _ctrl(paths, what) as xc:
        info = _info(xc, domid, what)
        nic = parse_vif(_vif_entry(vif), vif.devid, strict=True)
        hotplug.attach_nic(xc, paths, domid, nic, str(info.get("type", "pv")))


def unplug_vif(paths: Paths, domid: int, devid: int) -> None:
    """xl network-detach."""
    what = f"domain {domid}: unplug vif {devid}"
    with _ctrl(paths, what) as xc:
        if hotplug.find_nic(paths, domid, str(devid)) is None:
            raise XenopsError(f"{what}: no such vif")
        hotplug.detach_nic(xc, paths, domid, devid)


# ---- state -------------------------------------------------------------------------------------
def _state(info: Mapping[str, object]) -> str:
    if info.get("building"):
        return "building"
    if info["dying"]:
        return "dying"
    if info["shutdown"]:
        return "shutdown"
    return "paused" if info["paused"] else "running"


def monitor_set_aside(paths: Paths, domid: int) -> bool:
    """Whether the host's monitor leaves the domain alone (xl's -e mark, which clean_shutdown
    and clean_reboot set while they finish the domain themselves)."""
    return userdata.unmonitored(paths, domid)


def live_domains(paths: Paths) -> list[LiveDomain]:
    """Every domain the hypervisor has (Domain-0 included), as ``xl list`` reads them."""
    with _ctrl(paths, "live_domains") as xc:
        infos = libxl.list_domains(xc)
    return [LiveDomain(domid=int(d["domid"]), uuid=str(d["uuid"]), name=str(d["name"]), state=_state(d),
                       memory_bytes=int(d.get("current_kb") or d["memory_kb"]) * 1024,
                       vcpus=int(d["online_vcpus"]), start_time=float(d["created"]),
                       shutdown_reason=d["shutdown_reason"] if d["shutdown"] else None)
            for d in infos]


# ---- the guest agent's xenstore nodes ----------------------------------------------------------
#: The subtrees xenopsd reads for xapi's VM_guest_metrics (guest_metrics.GUEST_AGENT_DIRS filters).
AGENT_TOPS = ("control", "feature/hotplug", "xenserver/attr", "attr", "drivers", "data")
#: How deep a walk goes below a top (attr/vif/0/ipv4/0 is four levels under attr).
AGENT_DEPTH = 5


def agent_stamp(paths: Paths, domid: int) -> str | None:
    """The guest agent's data/updated (it rewrites it after every report), None if absent."""
    try:
        with XenstoreClient(paths.xenstored_socket, timeout=5.0) as xs:
            value = xs.get(f"/local/domain/{domid}/data/updated")
    except (XenstoreError, OSError) as err:
        raise XenopsError(f"domain {domid}: reading data/updated: {err}") from err
    return None if value is None else value.decode(errors="replace")


def guest_nodes(paths: Paths, domid: int) -> tuple[dict[str, str], list[str]]:
    """The guest-agent nodes of the domain (path relative to /local/domain/<domid> -> value)
    and the states of its backends (blkback, netback): what xenopsd hands xapi."""
    base = f"/local/domain/{domid}"
    nodes: dict[str, str] = {}
    states: list[str] = []
    try:
        with XenstoreClient(paths.xenstored_socket, timeout=5.0) as xs:
            def walk(rel: str, depth: int) -> None:
                value = xs.get(f"{base}/{rel}")
                if value is None:
                    return
                if value:
                    nodes[rel] = value.decode(errors="replace")
                if depth < AGENT_DEPTH:
                    try:
                        children = xs.directory(f"{base}/{rel}")
                    except XenstoreError:
                        return
                    for child in children:
                        walk(f"{rel}/{child}", depth + 1)
            for top in AGENT_TOPS:
                walk(top, 0)
            for kind in ("vbd", "vif"):
                try:
                    devs = xs.directory(f"/local/domain/0/backend/{kind}/{domid}")
                except XenstoreError:
                    continue
                for dev in devs:
                    s = xs.get(f"/local/domain/0/backend/{kind}/{domid}/{dev}/state")
                    if s is not None:
                        states.append(s.decode(errors="replace"))
    except (XenstoreError, OSError) as err:
        raise XenopsError(f"domain {domid}: reading the guest agent's nodes: {err}") from err
    return nodes, states


def host_memory(paths: Paths) -> tuple[int, int]:
    """(total, free) bytes of the host's memory pool, as ``xl info`` reads them."""
    with _ctrl(paths, "host memory") as xc:
        info = xc.call("sysctl.physinfo")
    return int(info["total_pages"]) * 4096, int(info["free_pages"]) * 4096
