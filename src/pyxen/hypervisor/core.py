"""The hypervisor proper: the domain table, the memory pool, and the hypercalls on them.

Every hypercall is one coroutine in HYPERCALLS, named as Xen names it (``sysctl.physinfo``,
``domctl.createdomain``, ...), taking the request's args and returning JSON-able data or raising
a HypercallError. The control socket (server.py) only decodes, dispatches and encodes.
"""

from __future__ import annotations

import asyncio
import collections
import getpass
import logging
import os
import platform
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from .. import XEN_EXTRA, XEN_MAJOR, XEN_MINOR, __version__
from ..paths import Paths
from ..toolstack import xsdomain
from . import physinfo
from .accel import AccelChoice
from .cgroup import CpuController
from .domain import DOMID_DOM0, DOMID_FIRST_RESERVED, Domain, ShutdownReason, state_letters
from .errors import DomainExists, HypercallError, InvalidArgument, NoSuchDomain
from .hostcfg import HostConfig
from .memory import MemoryPool
from .qemu import BuildInfo, DeviceModel, is_our_qemu, thread_cpu_ns, thread_states

log = logging.getLogger(__name__)

#: Lines kept in the hypervisor's console ring (xl dmesg), as Xen's conring.
CONRING_LINES = 2000
Handler = Callable[["Hypervisor", dict[str, Any]], Awaitable[Any]]
HYPERCALLS: dict[str, Handler] = {}
#: Called with (hv, domid) when a domain is destroyed: evtchn.py and gnttab.py close its ports
#: and revoke its grants there.
DESTROY_HOOKS: list[Callable[["Hypervisor", int], None]] = []


def hypercall(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HYPERCALLS[name] = fn
        return fn
    return register


class ConRing(logging.Handler):
    """The hypervisor console ring: what ``xl dmesg`` prints, '(XEN) ' lines."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: collections.deque[str] = collections.deque(maxlen=CONRING_LINES)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"(XEN) {record.getMessage()}")


def int_arg(args: dict[str, Any], key: str, op: str = "") -> int:
    v = args.get(key)
    if not isinstance(v, int) or isinstance(v, bool):
        raise InvalidArgument(f"argument '{key}' must be an integer", op)
    return v


class Hypervisor:
    """All state of one host's hypervisor."""

    def __init__(self, paths: Paths, cfg: HostConfig, accel: AccelChoice, conring: ConRing) -> None:
        self.paths = paths
        self.cfg = cfg
        self.accel = accel
        self.conring = conring
        self.phys = physinfo.read()
        self.boot_time = time.time()
        self.pool = MemoryPool(self.phys.total_pages * physinfo.PAGE_SIZE // 1024)
        dom0_kb = cfg.bootline.dom0_mem.resolve(self.pool.total_kb * 1024) // 1024
        self.dom0 = Domain(
            DOMID_DOM0, "Domain-0", "00000000-0000-0000-0000-000000000000", "pv",
            cfg.bootline.dom0_vcpus(self.phys.nr_cpus), cfg.bootline.dom0_vcpus(self.phys.nr_cpus),
            dom0_kb, dom0_kb, self.boot_time, paused=False)
        self.pool.claim(DOMID_DOM0, dom0_kb)
        self.domains: dict[int, Domain] = {DOMID_DOM0: self.dom0}
        self.models: dict[int, DeviceModel] = {}
        self.vcpu_tids: dict[int, list[int]] = {}
        self.cpu = CpuController(paths.root)
        self._next_domid = 1
        self._lock = asyncio.Lock()

    # ---- start-up: re-adopt what an earlier daemon left running ----------------------------
    async def adopt_domains(self) -> None:
        for path in sorted(self.paths.domains_dir.glob("*.json")):
            try:
                dom = Domain.load(path)
            except (OSError, ValueError, TypeError) as err:
                log.error("ignoring unreadable domain record %s: %s", path, err)
                continue
            self._next_domid = max(self._next_domid, dom.domid + 1)
            if dom.pid is None or not is_our_qemu(dom.pid, dom.uuid):
                log.warning("d%d (%s): its device model is gone; forgetting the domain", dom.domid, dom.name)
                Domain.forget(self.paths.domains_dir, dom.domid)
                shutil.rmtree(self.paths.domain_run_dir(dom.domid), ignore_errors=True)
                continue
            model = DeviceModel(dom.domid, self.paths.domain_run_dir(dom.domid), self._on_event)
            try:
                await model.adopt(dom.pid)
                self.vcpu_tids[dom.domid] = await model.vcpu_threads()
                status = await model.status()
            except (OSError, HypercallError) as err:
                log.error("d%d (%s): cannot re-adopt pid %d: %s", dom.domid, dom.name, dom.pid, err)
                continue
            self.pool.claim(dom.domid, dom.memory_kb, dom.name)
            self.domains[dom.domid] = dom
            self.models[dom.domid] = model
            self._apply_status(dom, status)
            log.info("d%d (%s): re-adopted QEMU pid %d, %s", dom.domid, dom.name, dom.pid, status)

    def _apply_status(self, dom: Domain, status: str) -> None:
        if status == "shutdown" and not dom.shutdown:
            dom.shutdown, dom.shutdown_reason = True, ShutdownReason.POWEROFF
        elif status in ("guest-panicked", "internal-error"):
            dom.shutdown, dom.shutdown_reason = True, ShutdownReason.CRASH

    # ---- events from device models (the guest's SCHEDOP_shutdown, a crash) ------------------
    def _on_event(self, domid: int, event: str, data: dict[str, Any]) -> None:
        dom = self.domains.get(domid)
        if dom is None or dom.dying:
            return
        reason: ShutdownReason | None = None
        if event == "SHUTDOWN" and data.get("guest", False):
            reason = ShutdownReason.REBOOT if data.get("reason") == "guest-reset" else ShutdownReason.POWEROFF
        elif event == "GUEST_PANICKED":
            reason = ShutdownReason.CRASH
        if reason is None:
            return
        dom.shutdown, dom.shutdown_reason = True, int(reason)
        dom.save(self.paths.domains_dir)
        log.info("d%d (%s): shutdown, reason %s", domid, dom.name, reason.name.lower())
        asyncio.get_running_loop().create_task(self._shutdown_action(dom, reason))

    async def _shutdown_action(self, dom: Domain, reason: ShutdownReason) -> None:
        """What xl's monitor does for on_poweroff / on_reboot / on_crash."""
        key = {ShutdownReason.POWEROFF: "on_poweroff", ShutdownReason.REBOOT: "on_reboot",
               ShutdownReason.CRASH: "on_crash"}.get(reason, "on_poweroff")
        action = str(dom.config.get(key, "destroy"))
        log.info("d%d: action for shutdown reason code %d is %s", dom.domid, int(reason), action)
        try:
            if action in ("destroy", "coredump-destroy"):
                await self.destroy(dom.domid)
                # xl's monitor destroys through libxl, which also clears the domain's xenstore
                # records and fires @releaseDomain; the monitor lives here for now.
                await asyncio.to_thread(xsdomain.release_quietly, self.paths.xenstored_socket, dom.domid)
            elif action in ("restart", "rename-restart", "coredump-restart", "soft-reset"):
                await self.models[dom.domid].reboot()
                dom.shutdown, dom.shutdown_reason = False, None
                dom.save(self.paths.domains_dir)
        except HypercallError as err:
            log.error("d%d: %s failed: %s", dom.domid, action, err)

    # ---- helpers ----------------------------------------------------------------------
    def domain(self, args: dict[str, Any], op: str, key: str = "domid") -> Domain:
        """The live domain whose id is ``args[key]``. :raise NoSuchDomain: none has it."""
        domid = int_arg(args, key, op)
        dom = self.domains.get(domid)
        if dom is None:
            raise NoSuchDomain(f"no domain {domid}", op)
        return dom

    def domu(self, args: dict[str, Any], op: str) -> Domain:
        dom = self.domain(args, op)
        if dom.is_dom0:
            raise InvalidArgument(f"{op} is not allowed on Domain-0", op)
        return dom

    def _alloc_domid(self) -> int:
        domid = self._next_domid
        while domid in self.domains:
            domid += 1
        if domid >= DOMID_FIRST_RESERVED:
            domid = 1
            while domid in self.domains:
                domid += 1
        self._next_domid = domid + 1
        return domid

    async def info(self, dom: Domain) -> dict[str, Any]:
        """xc_dominfo for one domain, with live state read from its QEMU."""
        running = blocked = False
        cpu_ns = 0
        current_kb = dom.memory_kb
        paused = dom.paused
        if dom.is_dom0:
            running = True
            # Dom0 runs everything on the host but the guests' vCPUs.
            guests = sum(thread_cpu_ns(m.pid, self.vcpu_tids.get(d, []))
                         for d, m in self.models.items() if m.pid is not None)
            cpu_ns = max(0, _host_cpu_ns() - guests)
        else:
            model = self.models.get(dom.domid)
            tids = self.vcpu_tids.get(dom.domid, [])
            if model is not None and model.pid is not None:
                cpu_ns = thread_cpu_ns(model.pid, tids)
                current_kb = await model.balloon_actual_kb() or current_kb
                if not (paused or dom.shutdown or dom.dying):
                    states = thread_states(model.pid, tids)
                    running = "R" in states
                    blocked = not running
        return {
            "domid": dom.domid, "name": dom.name, "uuid": dom.uuid, "type": dom.type,
            "memory_kb": dom.memory_kb, "current_kb": current_kb, "max_memkb": dom.max_memkb,
            "max_vcpus": dom.max_vcpus, "online_vcpus": dom.online_vcpus,
            "cpu_time_ns": cpu_ns, "paused": paused, "shutdown": dom.shutdown,
            "shutdown_reason": dom.shutdown_reason, "dying": dom.dying, "created": dom.created,
            "state": state_letters(running, blocked, paused, dom.shutdown, dom.shutdown_reason, dom.dying),
            "pid": dom.pid, "config": dom.config, "cpu_weight": dom.cpu_weight, "cap": dom.cap,
        }

    def enforce_sched(self, dom: Domain) -> bool:
        """Put the domain's credit weight and cap into force on its vCPUs (sched_credit.py)."""
        model = self.models.get(dom.domid)
        if model is None or model.pid is None:
            return False
        return self.cpu.apply(dom.domid, model.pid, self.vcpu_tids.get(dom.domid, []), dom.cpu_weight, dom.cap)

    async def destroy(self, domid: int) -> None:
        dom = self.domains.get(domid)
        if dom is None:
            raise NoSuchDomain(f"no domain {domid}", "domctl.destroydomain")
        dom.dying = True
        model = self.models.pop(domid, None)
        if model is not None:
            await model.destroy()
        self.domains.pop(domid, None)
        self.vcpu_tids.pop(domid, None)
        self.pool.release(domid)
        for hook in DESTROY_HOOKS:
            hook(self, domid)
        self.cpu.remove(domid)
        Domain.forget(self.paths.domains_dir, domid)
        shutil.rmtree(self.paths.domain_run_dir(domid), ignore_errors=True)
        log.info("d%d (%s): destroyed", domid, dom.name)

    async def shutdown_all_models(self) -> None:
        """Daemon exit: drop QMP sessions but leave every guest running (re-adopted later)."""
        for model in self.models.values():
            await model.close()


def _host_cpu_ns() -> int:
    """All non-idle CPU time of the host, from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
    ticks = user + nice + system + irq + softirq
    return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


# ---- sysctl -----------------------------------------------------------------------------
@hypercall("sysctl.physinfo")
async def _physinfo(hv: Hypervisor, args: dict[str, Any]) -> dict[str, Any]:
    p = hv.phys
    caps = ["pv", "hvm", "hap" if hv.accel.accel == "kvm" else "shadow", "gnttab-v1"]
    return {
        "nr_cpus": p.nr_cpus, "max_cpu_id": p.max_cpu_id, "nr_nodes": p.nr_nodes,
        "cores_per_socket": p.cores_per_socket, "threads_per_core": p.threads_per_core,
        "cpu_khz": p.cpu_khz, "hw_cap": list(p.hw_caps), "virt_caps": caps,
        "total_pages": hv.pool.total_kb // 4, "free_pages": hv.pool.free_kb // 4,
        "outstanding_pages": 0, "sharing_freed_pages": 0, "sharing_used_frames": 0,
        "free_cpus": 0, "accel": hv.accel.accel, "accel_reason": hv.accel.reason,
    }


@hypercall("xen_version")
async def _xen_version(hv: Hypervisor, args: dict[str, Any]) -> dict[str, Any]:
    return {
        "major": XEN_MAJOR, "minor": XEN_MINOR, "extra": XEN_EXTRA,
        "capabilities": "xen-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64",
        "changeset": f"pyxen {__version__}", "commandline": hv.cfg.bootline.text,
        "scheduler": hv.cfg.bootline.sched, "pagesize": physinfo.PAGE_SIZE,
        "tslice_ms": hv.cfg.bootline.tslice_ms, "ratelimit_us": hv.cfg.bootline.ratelimit_us,
        "virt_start": 0xFFFF800000000000,
        "compiler": f"Python {platform.python_version()} ({platform.python_compiler()})",
        "compile_by": getpass.getuser(), "compile_domain": socket.getfqdn().partition(".")[2] or "localdomain",
        "compile_date": time.ctime(Path(__file__).stat().st_mtime), "build_id": __version__,
        "boot_time": hv.boot_time,
    }


@hypercall("sysctl.getdomaininfolist")
async def _getdomaininfolist(hv: Hypervisor, args: dict[str, Any]) -> list[dict[str, Any]]:
    return [await hv.info(d) for _, d in sorted(hv.domains.items())]


@hypercall("sysctl.readconsole")
async def _readconsole(hv: Hypervisor, args: dict[str, Any]) -> list[str]:
    lines = list(hv.conring.lines)
    if args.get("clear"):
        hv.conring.lines.clear()
    return lines


# ---- domctl -----------------------------------------------------------------------------
@hypercall("domctl.getdomaininfo")
async def _getdomaininfo(hv: Hypervisor, args: dict[str, Any]) -> dict[str, Any]:
    return await hv.info(hv.domain(args, "domctl.getdomaininfo"))


@hypercall("domctl.createdomain")
async def _createdomain(hv: Hypervisor, args: dict[str, Any]) -> int:
    """Create a domain and its device model, paused: reserve memory, start QEMU, keep its console.

    Either all of it happens or none: a failure at any step undoes the steps before it.
    """
    op = "domctl.createdomain"
    raw = args.get("config")
    if not isinstance(raw, dict):
        raise InvalidArgument("createdomain needs a config object", op)
    cfg: dict[str, Any] = raw
    try:
        name, uuid = str(cfg["name"]), str(cfg["uuid"])
        memory_mib, maxmem_mib = int(cfg["memory"]), int(cfg.get("maxmem", cfg["memory"]))
        vcpus, maxvcpus = int(cfg.get("vcpus", 1)), int(cfg.get("maxvcpus", cfg.get("vcpus", 1)))
    except (KeyError, ValueError, TypeError) as err:
        raise InvalidArgument(f"bad domain config: {err}", op) from err
    for d in hv.domains.values():
        if d.name == name:
            raise DomainExists(f'Domain with name "{name}" already exists.', op)
        if d.uuid == uuid:
            raise DomainExists(f"a domain with uuid {uuid} already exists", op)
    if memory_mib < 1 or vcpus < 1:
        raise InvalidArgument("memory and vcpus must be at least 1", op)
    domid = hv._alloc_domid()
    hv.pool.claim(domid, memory_mib * 1024, name)
    dom = Domain(domid, name, uuid, str(cfg.get("type", "pv")), maxvcpus, vcpus, memory_mib * 1024,
                 maxmem_mib * 1024, time.time(), accel=hv.accel.accel, config=cfg,
                 cpu_weight=int(cfg.get("cpu_weight", 256)), cap=int(cfg.get("cap", 0)))
    hv.domains[domid] = dom
    model = DeviceModel(domid, hv.paths.domain_run_dir(domid), hv._on_event)
    info = BuildInfo(
        name=name, uuid=uuid, type=dom.type, memory_mib=memory_mib, maxmem_mib=maxmem_mib,
        vcpus=vcpus, max_vcpus=maxvcpus,
        kernel=cfg.get("kernel"), ramdisk=cfg.get("ramdisk"), cmdline=str(cfg.get("cmdline", "")),
        accel=hv.accel.accel, vnc=bool(cfg.get("vnc")), vncdisplay=cfg.get("vncdisplay"),
        vnclisten=str(cfg.get("vnclisten", "127.0.0.1")), boot=str(cfg.get("boot", "cd")),
        extra_args=tuple(args.get("device_args", ())))
    try:
        dom.pid = await model.start(hv.cfg.qemu, info, hv.paths.log / f"qemu-dm-{name}.log")
        hv.vcpu_tids[domid] = await model.vcpu_threads()
        hv.models[domid] = model
        if memory_mib < maxmem_mib:
            await model.balloon(memory_mib)
        # Every DomU gets its group, default weight included: a domain left outside would
        # compete with the whole set of groups as if it were one of them.
        hv.enforce_sched(dom)
        dom.save(hv.paths.domains_dir)
    except BaseException as err:
        hv.models.pop(domid, None)
        await model.destroy()
        hv.domains.pop(domid, None)
        hv.pool.release(domid)
        Domain.forget(hv.paths.domains_dir, domid)
        shutil.rmtree(hv.paths.domain_run_dir(domid), ignore_errors=True)
        if isinstance(err, OSError) and not isinstance(err, HypercallError):
            raise HypercallError(f"cannot start the domain: {err}", op) from err
        raise
    log.info("d%d (%s): created, %d MiB, %d vCPU(s), %s, QEMU pid %d", domid, name, memory_mib,
             vcpus, hv.accel.accel, dom.pid)
    return domid


@hypercall("domctl.destroydomain")
async def _destroydomain(hv: Hypervisor, args: dict[str, Any]) -> None:
    await hv.destroy(hv.domu(args, "domctl.destroydomain").domid)


@hypercall("domctl.pausedomain")
async def _pausedomain(hv: Hypervisor, args: dict[str, Any]) -> None:
    dom = hv.domu(args, "domctl.pausedomain")
    await hv.models[dom.domid].pause()
    dom.paused = True
    dom.save(hv.paths.domains_dir)


@hypercall("domctl.unpausedomain")
async def _unpausedomain(hv: Hypervisor, args: dict[str, Any]) -> None:
    dom = hv.domu(args, "domctl.unpausedomain")
    if dom.shutdown:
        raise InvalidArgument(f"domain {dom.domid} is shut down", "domctl.unpausedomain")
    await hv.models[dom.domid].unpause()
    dom.paused = False
    dom.save(hv.paths.domains_dir)


@hypercall("domctl.shutdown")
async def _remote_shutdown(hv: Hypervisor, args: dict[str, Any]) -> None:
    """Mark a domain shut down with a reason (SCHEDOP_remote_shutdown), stopping its vCPUs."""
    dom = hv.domu(args, "domctl.shutdown")
    reason = int_arg(args, "reason")
    if reason not in ShutdownReason._value2member_map_:
        raise InvalidArgument(f"unknown shutdown reason {reason}", "domctl.shutdown")
    await hv.models[dom.domid].pause()
    dom.shutdown, dom.shutdown_reason = True, reason
    dom.save(hv.paths.domains_dir)
