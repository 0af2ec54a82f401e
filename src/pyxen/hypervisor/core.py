"""The hypervisor proper: the domain table, the memory pool, and the hypercalls on them.

Every hypercall is one coroutine in HYPERCALLS, named as Xen names it (``sysctl.physinfo``,
``domctl.createdomain``, ...), taking the request's args and returning JSON-able data or raising
a HypercallError. The control socket (server.py) only decodes, dispatches and encodes.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import getpass
import json
import logging
import os
import platform
import shutil
import socket
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping

from .. import XEN_EXTRA, XEN_MAJOR, XEN_MINOR, __version__
from ..paths import Paths
from ..procfs import read as read_proc
from . import physinfo
from .accel import AccelChoice
from .cgroup import DEFAULT_WEIGHT, PERIOD_US, CpuController, CpusetController, cap_quota
from .cpupool import PoolTable, effective_affinity, soft_placement
from .domain import DOMID_DOM0, DOMID_FIRST_RESERVED, Domain, ShutdownReason, state_letters
from .domctl import NAME_RE, CreateDomain
from .errors import DomainExists, HypercallError, InvalidArgument, NoSuchDomain
from .hostcfg import HostConfig
from .memory import MemoryPool
from .rtds import domain_bandwidth
from .qemu import BuildInfo, DeviceModel, is_our_qemu, thread_cpu_ns, thread_states

log = logging.getLogger(__name__)

#: Lines kept in the hypervisor's console ring (xl dmesg), as Xen's conring.
CONRING_LINES = 2000
#: Seconds a domain's balloon reading is trusted. QEMU reports each change of the balloon as a
#: BALLOON_CHANGE event (at most one a second, the last one always delivered), which updates
#: it, so a listing asks each QEMU (query-balloon, one QMP round trip per domain: most of
#: getdomaininfolist's time with 50 domains, bench/scale.py) only this often; the asking is
#: the safety net for events missed while this daemon was down.
BALLOON_REFRESH = 10.0
Handler = Callable[["Hypervisor", dict[str, Any]], Awaitable[Any]]
HYPERCALLS: dict[str, Handler] = {}
#: Called with (hv, domid) when a domain is destroyed: evtchn.py and gnttab.py close its ports
#: and revoke its grants there.
DESTROY_HOOKS: list[Callable[["Hypervisor", int], None]] = []
#: Makes a domain's device model: (domid, paths, on_event) -> DeviceModel.
DeviceModelFactory = Callable[[int, Paths, Callable[[int, str, dict[str, Any]], None]], DeviceModel]
#: The connection a hypercall arrived on (set by server.py): builds are tied to it.
CALLER: contextvars.ContextVar[object] = contextvars.ContextVar("CALLER", default=None)


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
    """All state of one host's hypervisor.

    ``device_model`` makes the object that runs a domain's vCPUs: QEMU in production,
    ``pyxen.testing.fakes.FakeDeviceModel`` in tests that reach orchestration without a guest.
    """

    def __init__(self, paths: Paths, cfg: HostConfig, accel: AccelChoice, conring: ConRing,
                 device_model: DeviceModelFactory = DeviceModel,
                 phys: physinfo.PhysInfo | None = None) -> None:
        self.paths = paths
        self.cfg = cfg
        self.accel = accel
        self.conring = conring
        self.device_model = device_model
        self.phys = phys or physinfo.read()
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
        #: When each domain's balloon was last read (time.monotonic(); query or event).
        self.balloon_read: dict[int, float] = {}
        #: Domains still being built, by the connection building them (see finish_build).
        self.builders: dict[int, object] = {}
        #: VIRQ_DOM_EXC subscribers (xenstored): called when a domain shuts down or dies.
        self.dom_exc_subscribers: set[Callable[[], None]] = set()
        self.cpu = CpuController(paths.root)
        self.cpuset = CpusetController(paths.root)
        boot = cfg.bootline
        self.cpupools = PoolTable(self.phys.nr_cpus, boot.sched, boot.tslice_ms, boot.ratelimit_us)
        self.cpupools.load(self.load_table("cpupools"))
        self._next_domid = 1
        self._locks: dict[int, asyncio.Lock] = {}

    def lock(self, domid: int) -> asyncio.Lock:
        """The domain's lock: create and destroy of one domain never interleave."""
        return self._locks.setdefault(domid, asyncio.Lock())

    def load_table(self, table: str) -> Any:
        """The saved form of a table (gnttab, evtchn) from before a restart, or None."""
        try:
            return json.loads(self.paths.hypervisor_state(table).read_text())
        except (OSError, ValueError):
            return None

    def save_table(self, table: str, data: Any) -> None:
        """Keep a table across a restart of this daemon (atomically: old or new, never half;
        not fsync'd: the guests it describes do not outlive the machine either)."""
        path = self.paths.hypervisor_state(table)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.rename(path)

    def raise_dom_exc(self) -> None:
        """VIRQ_DOM_EXC: a domain shut down or died. xenstored turns it into @releaseDomain."""
        for notify in list(self.dom_exc_subscribers):
            notify()

    # ---- start-up: re-adopt what an earlier daemon left running ----------------------------
    async def adopt_domains(self) -> None:
        for path in sorted(self.paths.domains_dir.glob("*.json")):
            try:
                dom = Domain.load(path)
            except (OSError, ValueError, TypeError) as err:
                log.error("ignoring unreadable domain record %s: %s", path, err)
                continue
            self._next_domid = max(self._next_domid, dom.domid + 1)
            if dom.pid is None or not is_our_qemu(dom.pid, dom.build.get("uuid", dom.uuid)):
                log.warning("d%d (%s): its device model is gone; forgetting the domain", dom.domid, dom.name)
                self._forget(dom.domid)
                continue
            model = self.device_model(dom.domid, self.paths, self._on_event)
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
            if dom.building:
                # Its builder's connection died with the daemon before the build finished.
                log.warning("d%d (%s): left half-built by a toolstack that is gone; destroying it",
                            dom.domid, dom.name)
                await self.destroy(dom.domid)
                continue
            self._apply_status(dom, status)
            log.info("d%d (%s): re-adopted QEMU pid %d, %s", dom.domid, dom.name, dom.pid, status)
        # Deaths and shutdowns while the daemon was down: let xenstored look again.
        self.raise_dom_exc()

    def _forget(self, domid: int) -> None:
        Domain.forget(self.paths.domains_dir, domid)
        shutil.rmtree(self.paths.domain_run_dir(domid), ignore_errors=True)

    def _apply_status(self, dom: Domain, status: str) -> None:
        if status == "shutdown" and not dom.shutdown:
            self._shutdown(dom, ShutdownReason.POWEROFF)
        elif status in ("guest-panicked", "internal-error") and not dom.shutdown:
            self._shutdown(dom, ShutdownReason.CRASH)

    def _shutdown(self, dom: Domain, reason: ShutdownReason) -> None:
        """The domain stopped with ``reason`` (SCHEDOP_shutdown): record it and raise
        VIRQ_DOM_EXC. What happens next is the toolstack's monitor's decision."""
        dom.shutdown, dom.shutdown_reason = True, int(reason)
        dom.save(self.paths.domains_dir)
        log.info("d%d (%s): shutdown, reason %s", dom.domid, dom.name, reason.name.lower())
        self.raise_dom_exc()

    # ---- events from device models (the guest's SCHEDOP_shutdown, a crash) ------------------
    def _on_event(self, domid: int, event: str, data: dict[str, Any]) -> None:
        dom = self.domains.get(domid)
        if dom is None or dom.dying:
            return
        if event == "BALLOON_CHANGE" and isinstance(data.get("actual"), int):
            dom.current_kb = int(data["actual"]) >> 10
            self.balloon_read[domid] = time.monotonic()
            return
        if dom.shutdown:
            return
        if event == "SHUTDOWN" and data.get("guest", False):
            self._shutdown(dom, ShutdownReason.REBOOT if data.get("reason") == "guest-reset"
                           else ShutdownReason.POWEROFF)
        elif event == "GUEST_PANICKED":
            self._shutdown(dom, ShutdownReason.CRASH)
        elif event == "WATCHDOG":
            self._shutdown(dom, ShutdownReason.WATCHDOG)

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

    def model(self, args: dict[str, Any], op: str) -> DeviceModel:
        """The device model of the DomU ``args['domid']``."""
        dom = self.domu(args, op)
        model = self.models.get(dom.domid)
        if model is None:
            raise InvalidArgument(f"domain {dom.domid} has no device model", op)
        return model

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

    async def info(self, dom: Domain, guest_cpu_ns: Mapping[int, int] | None = None) -> dict[str, Any]:
        """xc_dominfo for one domain, with live state read from its QEMU.

        A QEMU that does not answer within QUERY_TIMEOUT (stopped, wedged) does not hold the
        caller up: the domain is shown with the last memory figure known. ``guest_cpu_ns``:
        guests' vCPU times just read (domid -> ns), which Dom0's time (the host's less the
        guests') takes instead of reading each guest's threads again."""
        running = blocked = False
        cpu_ns = 0
        current_kb = dom.memory_kb
        paused = dom.paused
        if dom.is_dom0:
            running = True
            # Dom0 runs everything on the host but the guests' vCPUs.
            known = guest_cpu_ns or {}
            guests = sum(known[d] if d in known else thread_cpu_ns(m.pid, self.vcpu_tids.get(d, []))
                         for d, m in self.models.items() if m.pid is not None)
            cpu_ns = max(0, _host_cpu_ns() - guests)
        else:
            model = self.models.get(dom.domid)
            tids = self.vcpu_tids.get(dom.domid, [])
            if model is not None and model.pid is not None:
                cpu_ns = thread_cpu_ns(model.pid, tids)
                if not dom.building and (not dom.current_kb or time.monotonic() - self.balloon_read.get(
                        dom.domid, -BALLOON_REFRESH) >= BALLOON_REFRESH):
                    actual = await model.balloon_actual_kb()
                    if actual is not None:
                        dom.current_kb = actual
                        self.balloon_read[dom.domid] = time.monotonic()
                current_kb = dom.current_kb or current_kb
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
            "pid": dom.pid, "cpu_weight": dom.cpu_weight, "cap": dom.cap, "building": dom.building,
            "cpupool": dom.cpupool,
        }

    def save_pools(self) -> None:
        """Keep the pool table across a restart of this daemon (with the domain records)."""
        self.save_table("cpupools", self.cpupools.to_wire())

    def place(self, dom: Domain) -> bool:
        """Hold the domain's vCPUs to its pool's CPUs (its cpuset) and put each vCPU's hard
        affinity back within them; a soft affinity moves the vCPU onto its preferred CPUs first
        (Linux has no soft affinity: docs/scheduling.md). False if the cpuset is not enforced."""
        model = self.models.get(dom.domid)
        if dom.is_dom0 or model is None or model.pid is None:
            return False
        pool = self.cpupools.pools.get(dom.cpupool) or self.cpupools.pools[0]
        tids = self.vcpu_tids.get(dom.domid, [])
        enforced = self.cpuset.apply(dom.domid, model.pid, tids, pool.cpus)
        for n, tid in enumerate(tids):
            hard = effective_affinity(dom.affinity("hard", n), pool.cpus)
            try:
                first = soft_placement(hard, dom.affinity("soft", n))
                if first is not None:
                    os.sched_setaffinity(tid, first)  # moves the thread onto a preferred CPU now
                os.sched_setaffinity(tid, hard)
            except OSError as err:  # the thread is gone (vCPU unplugged) or the CPU offline
                log.debug("d%d: vcpu %d: affinity %s not set: %s", dom.domid, n, hard, err)
        return enforced

    def enforce_sched(self, dom: Domain) -> bool:
        """Put the domain's scheduling parameters into force on its vCPUs: credit's weight and
        cap (sched_credit.py), or in an RTDS pool its vCPUs' period and budget (sched_rtds.py)."""
        model = self.models.get(dom.domid)
        if model is None or model.pid is None:
            return False
        pool = self.cpupools.pools.get(dom.cpupool) or self.cpupools.pools[0]
        if pool.sched == "rtds":
            quota, period = domain_bandwidth(dom)
            weight = DEFAULT_WEIGHT  # RTDS has no weight
        else:
            quota, period, weight = cap_quota(dom.cap), PERIOD_US, dom.cpu_weight
        return self.cpu.apply(dom.domid, model.pid, self.vcpu_tids.get(dom.domid, []), weight, quota, period)

    async def create(self, req: CreateDomain, builder: object) -> int:
        """Make a domain and its device model, paused; it stays "being built" (and dies with
        ``builder``'s connection) until finish_build. All of it or none: a failure at any step
        undoes the steps before it."""
        op = "domctl.createdomain"
        if req.domid is not None and req.domid in self.domains:
            raise DomainExists(f"domain creation fail: domain {req.domid} already exists", op)
        for d in self.domains.values():
            if d.name == req.name:
                raise DomainExists(f'Domain with name "{req.name}" already exists.', op)
            if d.uuid == req.uuid:
                raise DomainExists(f"a domain with uuid {req.uuid} already exists", op)
        pool = self.cpupools.get(req.cpupool, op)
        if not pool.cpus:
            raise InvalidArgument(f"cpupool {pool.name} has no CPU to run a domain on", op)
        domid = self._alloc_domid() if req.domid is None else req.domid
        self.pool.claim(domid, req.memory_kb, req.name)
        dom = Domain(domid, req.name, req.uuid, req.type, req.max_vcpus, req.vcpus, req.memory_kb,
                     req.max_memkb, time.time(), accel=self.accel.accel, build=req.to_wire(),
                     cpu_weight=req.cpu_weight, cap=req.cap, building=True, cpupool=req.cpupool)
        model = self.device_model(domid, self.paths, self._on_event)
        # Tracked before QEMU exists, so a destroy that races this create finds (and kills) it.
        self.domains[domid] = dom
        self.models[domid] = model
        self.builders[domid] = builder
        info = BuildInfo(
            name=req.name, uuid=req.uuid, type=req.type, memory_mib=req.memory_kb >> 10,
            maxmem_mib=req.max_memkb >> 10, vcpus=req.vcpus, max_vcpus=req.max_vcpus,
            kernel=req.kernel, ramdisk=req.ramdisk, cmdline=req.cmdline, accel=self.accel.accel,
            vnc=req.vnc, vncdisplay=req.vncdisplay, vnclisten=req.vnclisten, boot=req.boot,
            vncpasswd=req.vncpasswd, vncunused=req.vncunused, serial=req.serial, usb=req.usb,
            usbdevice=req.usbdevice, incoming=req.incoming, extra_args=req.dm_args,
            cdroms=req.cdroms)
        try:
            async with self.lock(domid):
                if dom.dying:
                    raise NoSuchDomain(f"domain {domid} was destroyed while it was being built", op)
                dom.pid = await model.start(self.cfg.qemu, info, self.paths.log / f"qemu-dm-{req.name}.log")
                dom.save(self.paths.domains_dir)
                self.vcpu_tids[domid] = await model.vcpu_threads()
                if req.memory_kb < req.max_memkb and not req.incoming:  # (a restore brings its own)
                    await model.balloon(req.memory_kb >> 10)
                # Every DomU gets its group, default weight included: a domain left outside
                # would compete with the whole set of groups as if it were one of them.
                self.enforce_sched(dom)
                self.place(dom)
        except BaseException as err:
            if self.domains.get(domid) is dom and not dom.dying:
                await self.destroy(domid, notify=False)
            if isinstance(err, OSError) and not isinstance(err, HypercallError):
                raise HypercallError(f"cannot start the domain: {err}", op) from err
            raise
        log.info("d%d (%s): created, %d MiB, %d vCPU(s), %s, QEMU pid %d", domid, req.name,
                 req.memory_kb >> 10, req.vcpus, self.accel.accel, dom.pid)
        return domid

    def builder_gone(self, builder: object) -> None:
        """A connection closed: destroy the domains it was still building (xl create killed)."""
        for domid, b in list(self.builders.items()):
            if b is builder:
                log.warning("d%d: its builder went away before the build finished; destroying it", domid)
                self.builders.pop(domid, None)
                asyncio.get_running_loop().create_task(self._destroy_quietly(domid))

    async def _destroy_quietly(self, domid: int) -> None:
        try:
            await self.destroy(domid)
        except HypercallError as err:
            log.info("d%d: %s", domid, err)

    async def destroy(self, domid: int, notify: bool = True) -> None:
        dom = self.domains.get(domid)
        if dom is None or dom.dying:
            raise NoSuchDomain(f"no domain {domid}", "domctl.destroydomain")
        dom.dying = True
        model = self.models.get(domid)
        if model is not None:
            await model.destroy()  # a start in progress sees its QEMU die and gives up
        async with self.lock(domid):
            if model is not None:
                await model.destroy()  # whatever a racing start made meanwhile
            self.models.pop(domid, None)
            self.domains.pop(domid, None)
            self.builders.pop(domid, None)
            self.vcpu_tids.pop(domid, None)
            self.balloon_read.pop(domid, None)
            self.pool.release(domid)
            for hook in DESTROY_HOOKS:
                hook(self, domid)
            self.cpu.remove(domid)
            self.cpuset.remove(domid)
            self._forget(domid)
        self._locks.pop(domid, None)
        log.info("d%d (%s): destroyed", domid, dom.name)
        if notify:
            self.raise_dom_exc()

    async def shutdown_all_models(self) -> None:
        """Daemon exit: drop QMP sessions but leave every guest running (re-adopted later)."""
        for model in self.models.values():
            await model.close()


def _host_cpu_ns() -> int:
    """All non-idle CPU time of the host, from /proc/stat."""
    fields = read_proc("/proc/stat").split("\n", 1)[0].split()[1:]
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
        "free_cpus": len(hv.cpupools.free_cpus()), "accel": hv.accel.accel, "accel_reason": hv.accel.reason,
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
    # Concurrently: one stuck QEMU costs its QUERY_TIMEOUT once, not once per domain. The
    # guests first: Dom0's time is computed from theirs (a /proc read per guest fewer; with 50
    # guests the reads were most of this call's time).
    doms = [d for _, d in sorted(hv.domains.items())]
    guests = await asyncio.gather(*(hv.info(d) for d in doms if not d.is_dom0))
    cpu_ns = {g["domid"]: g["cpu_time_ns"] for g in guests}
    by_domid = {g["domid"]: g for g in guests}
    return [await hv.info(d, cpu_ns) if d.is_dom0 else by_domid[d.domid] for d in doms]


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
    """Create a domain and its device model, paused and "being built" until finish_build.

    The request is validated whole first (EINVAL, nothing claimed); then either all of it
    happens or none. If the caller's connection closes before finish_build (``xl create``
    interrupted or killed), the domain is destroyed.
    """
    req = CreateDomain.from_wire(args.get("request"))
    return await hv.create(req, CALLER.get())


@hypercall("domctl.finish_build")
async def _finish_build(hv: Hypervisor, args: dict[str, Any]) -> None:
    """The toolstack finished building the domain: it no longer dies with its builder."""
    dom = hv.domu(args, "domctl.finish_build")
    hv.builders.pop(dom.domid, None)
    dom.building = False
    dom.save(hv.paths.domains_dir)


@hypercall("domctl.setdomainhandle")
async def _setdomainhandle(hv: Hypervisor, args: dict[str, Any]) -> None:
    """Give a domain a new uuid (XEN_DOMCTL_setdomainhandle; rename-restart's preserved domain)."""
    op = "domctl.setdomainhandle"
    dom = hv.domu(args, op)
    try:
        uuid = str(uuidlib.UUID(str(args.get("uuid"))))
    except ValueError:
        raise InvalidArgument(f"'{args.get('uuid')}' is not a UUID", op) from None
    if any(d.uuid == uuid for d in hv.domains.values() if d is not dom):
        raise DomainExists(f"a domain with uuid {uuid} already exists", op)
    dom.uuid = uuid
    dom.save(hv.paths.domains_dir)


@hypercall("domctl.setdomainname")
async def _setdomainname(hv: Hypervisor, args: dict[str, Any]) -> None:
    """Rename a domain (libxl_domain_rename; rename-restart preserves the old one renamed)."""
    op = "domctl.setdomainname"
    dom = hv.domu(args, op)
    name = args.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or name.isdigit():
        raise InvalidArgument(f"'{name}' is not a valid domain name", op)
    if any(d.name == name for d in hv.domains.values() if d is not dom):
        raise DomainExists(f'Domain with name "{name}" already exists.', op)
    dom.name = name
    dom.save(hv.paths.domains_dir)


@hypercall("domctl.destroydomain")
async def _destroydomain(hv: Hypervisor, args: dict[str, Any]) -> None:
    await hv.destroy(hv.domu(args, "domctl.destroydomain").domid)


@hypercall("domctl.pausedomain")
async def _pausedomain(hv: Hypervisor, args: dict[str, Any]) -> None:
    dom = hv.domu(args, "domctl.pausedomain")
    await hv.model(args, "domctl.pausedomain").pause()
    dom.paused = True
    dom.save(hv.paths.domains_dir)


@hypercall("domctl.unpausedomain")
async def _unpausedomain(hv: Hypervisor, args: dict[str, Any]) -> None:
    dom = hv.domu(args, "domctl.unpausedomain")
    if dom.shutdown:
        raise InvalidArgument(f"domain {dom.domid} is shut down", "domctl.unpausedomain")
    await hv.model(args, "domctl.unpausedomain").unpause()
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
    hv._shutdown(dom, ShutdownReason(reason))
