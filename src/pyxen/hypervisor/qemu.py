"""The QEMU engine: one QEMU process per DomU, and the domain-level verbs on it.

QEMU runs the domain's vCPUs and holds its memory (a shared memfd, so Dom0 backends can map it
as Xen's grant mappings do). It is started paused (-S) with its serial port on a FIFO pair that
xenconsoled reads (``Paths.console_pipe``) and QMP on a socket; the verbs here map Xen's domctls
onto QMP through the ``qemu.qmp`` library: pause = stop, unpause = cont, destroy = quit. QEMU
runs in its own session, so it outlives a restart of the hypervisor daemon, which re-adopts it
by pid and QMP.
Its own messages go to log/qemu-dm-<name>.log, where Xen keeps qemu-dm's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import signal
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from qemu.qmp import QMPClient
from qemu.qmp.error import QMPError

from ..paths import Paths
from ..procfs import alive, read as read_proc, stat_fields
from .domctl import USB_DEVICES
from .errors import DeviceModelError
from .wire import SAVE_TIMEOUT

log = logging.getLogger(__name__)

XENSTORE_BUS = "xsbus"
#: PV and PVH domains run on QEMU's q35 machine; HVM ones on pc (its PIIX IDE serves their
#: CD-ROM drives). Why q35: a guest looks up each PCI device's INTx route in the root bus's ACPI
#: _PRT when its driver enables the device, and QEMU 7.2's pc DSDT builds that table with an AML
#: loop of 128 iterations, which Linux's interpreter runs anew for every device: ~87 ms of guest
#: time each (icount), ~0.4 s of QEMU CPU each under TCG, so the two devices every domain has
#: (xenstore bus, balloon) made the demo boot ~10% slower than a bare QEMU's. q35's _PRT is a
#: static package: ~1 ms a device. Measurements: docs/boot.md.
PV_MACHINE = "q35"
#: q35's root bus (pcie.0) takes no hot-plugged device: PV/PVH disks and NICs are plugged into
#: this PCI bridge (ACPI hotplug, as the pc machine's bus 0), which a PV/PVH domain has from start.
HOTPLUG_BRIDGE = "pcihp0"
#: The virtio-serial port name a guest looks for to reach xenstored (Xen's ring, in pyxen).
XENSTORE_PORT = "org.xenproject.xenstore"
#: Image formats of QEMU's block layer, by xl's disk format name.
QDISK_DRIVERS = {"raw": "raw", "qcow": "qcow", "qcow2": "qcow2", "vhd": "vpc", "qed": "qed"}
#: Emulated NIC models (xl's vif model= with type=ioemu), by QEMU device name.
EMULATED_NIC_MODELS = ("rtl8139", "e1000")
#: Bound on one QMP command (a stopped QEMU must not hang the hypervisor).
QMP_TIMEOUT = 10.0
#: device_add of a vhost-user device waits for the back-end's answers.
DEVICE_ADD_TIMEOUT = 30.0
#: How long a guest may take to release a device being unplugged (ACPI eject), as libxl
#: gives a frontend LIBXL_DESTROY_TIMEOUT to close (seconds).
UNPLUG_TIMEOUT = 10.0
#: device_del of a hot-plugged PCI device waits for the guest to eject it (ACPI PCI hotplug on
#: the pc machine's bus 0 or q35's HOTPLUG_BRIDGE: the guest's kernel handles the eject
#: request); TCG guests are slow.
DEVICE_DEL_TIMEOUT = 30.0
#: How often the peripheral list is read while waiting for an eject.
DEVICE_DEL_POLL = 0.1
#: Saving a guest's state (its RAM) to a file, loading it, or migrating it: SAVE_TIMEOUT
#: (wire.py, the one place, since the toolstack's call must wait that long too).
#: The name QEMU's monitor keeps a migration stream's descriptor under (QMP getfd).
MIGRATION_FD = "migration"
#: A live migration's bandwidth cap (QEMU's default, 32 MiB/s, would make a 128 MiB guest take
#: seconds over a pipe that carries more): the pipe's own pace is the limit.
MIGRATE_MAX_BANDWIDTH = 1 << 30
#: How often a running save, restore or migration is asked for its status: the end of a live
#: migration's stop-and-copy is seen this much late at most, on each side, and that delay is
#: part of the guest's downtime (the receiver acks only once its QEMU has the whole stream).
MIGRATION_POLL = 0.01
#: Writing a core file of a large guest takes a while.
DUMP_TIMEOUT = 300.0
#: Queries behind ``xl list``: a stuck QEMU is shown with what is known instead.
QUERY_TIMEOUT = 0.5
#: How long QEMU may take to open its QMP socket after exec (seconds).
START_TIMEOUT = 20.0


@dataclass(frozen=True)
class BuildInfo:
    """What the domain builder hands the device model (libxl_domain_build_info, in part)."""

    name: str
    uuid: str
    type: str
    memory_mib: int
    maxmem_mib: int
    vcpus: int
    max_vcpus: int
    kernel: str | None
    ramdisk: str | None
    cmdline: str
    accel: str
    vnc: bool = False
    vncdisplay: int | None = None
    vnclisten: str = "127.0.0.1"
    boot: str = "cd"
    #: VNC authentication (libxl_dm.c: ``password=on``, then QMP change-vnc-password).
    vncpasswd: str | None = None
    #: libxl_dm.c's ``to=99``: QEMU takes the first free display from vncdisplay on.
    vncunused: bool = False
    #: HVM serial ports: the first "pty" is the console FIFO xenconsoled reads; the others are
    #: QEMU -serial values as given (libxl_dm.c: one -serial per entry).
    serial: tuple[str, ...] = ("pty",)
    #: HVM USB (libxl_dm.c: ``-usb``, and a device per usbdevice entry).
    usb: bool = False
    usbdevice: tuple[str, ...] = ()
    #: Wait for a saved state (migrate-incoming) instead of booting.
    incoming: bool = False
    #: HVM: emulated IDE CD-ROM drives, (index 0..3 = hda..hdd, medium or "" for empty).
    cdroms: tuple[tuple[int, str], ...] = ()
    extra_args: tuple[str, ...] = ()


#: Extra guest RAM under TCG, so the RAM block's length is not a multiple of 256 KiB (64 pages).
#: QEMU 7.2's cpu_physical_memory_sync_dirty_bitmap takes a fast path for such blocks that clears
#: the migration dirty bits without resetting the vCPUs' TLB "notdirty" flags, so guest stores
#: through a TLB entry made before a sync are not logged and a live migration loses them (fixed
#: upstream in QEMU 9.0, 03bfc2188f "physmem: Fix migration dirty bitmap coherency with TCG memory
#: access"; not in Debian's 7.2). The slow path, taken for any other length, resets the TLB for
#: every page it clears. 8 KiB: QEMU rounds RAM sizes to 8 KiB. Measurements: docs/save-restore.md,
#: "Live migration under TCG".
TCG_RAM_PAD_KIB = 8


def ram_kib(info: BuildInfo) -> int:
    """The guest RAM QEMU is given (``-m`` and the memfd backend): static-max, plus the TCG pad."""
    return max(info.maxmem_mib, info.memory_mib) * 1024 + (TCG_RAM_PAD_KIB if info.accel != "kvm" else 0)


def serial_args(info: BuildInfo) -> list[str]:
    """QEMU's serial ports: for PV and PVH the console alone (pyxen's hvc0); for HVM one per
    serial= entry, the first "pty" being the console, which xenconsoled serves (Xen: the pty
    xl console attaches to)."""
    ports = list(info.serial) if info.type == "hvm" else ["pty"]
    args: list[str] = []
    console_given = False
    for port in ports:
        if port == "pty" and not console_given:
            args += ["-serial", "chardev:console0"]
            console_given = True
        else:
            args += ["-serial", port]
    return args


def vnc_arg(info: BuildInfo) -> str:
    """libxl_dm.c's -vnc value: listen:display (a listen address with a ':' is taken whole),
    ``password=on`` when a password is set, and ``to=99`` last for vncunused."""
    if ":" in info.vnclisten:
        arg = info.vnclisten
    else:
        arg = f"{info.vnclisten}:{info.vncdisplay or 0}"
    if info.vncpasswd:
        arg += ",password=on"
    if info.vncunused:
        arg += ",to=99"
    return arg


def cdrom_id(index: int) -> str:
    """The qdev id of the emulated CD-ROM drive at IDE ``index`` (0..3: hda..hdd)."""
    return f"cdrom-{index}"


def argv(qemu: str, info: BuildInfo, paths: Paths, domid: int) -> list[str]:
    """The QEMU command line for a domain (pure: no I/O)."""
    # RAM is sized to static-max; a domain started with memory < maxmem is pre-ballooned down
    # to its target through the balloon device, as Xen's PoD/balloon start does.
    mem = f"{ram_kib(info)}K"
    cpu = "host" if info.accel == "kvm" else "max"
    machine = "pc" if info.type == "hvm" else PV_MACHINE
    args = [
        qemu, "-name", f"{info.name},debug-threads=on", "-uuid", info.uuid,
        "-machine", f"{machine},memory-backend=mem", "-accel", info.accel, "-cpu", cpu,
        "-smp", f"{info.vcpus},maxcpus={info.max_vcpus}", "-m", mem,
        "-object", f"memory-backend-memfd,id=mem,size={mem},share=on",
        "-nodefaults", "-no-user-config", "-no-shutdown", "-no-reboot", "-S",
        # The serial port is a FIFO pair xenconsoled reads (Paths.console_pipe). QEMU's pipe
        # chardev opens both O_RDWR, so what the guest prints waits in ``.out`` while
        # xenconsoled is down, and a full pipe makes the serial port retry on G_IO_OUT rather
        # than drop bytes: Xen's console ring, as a FIFO.
        "-chardev", f"pipe,id=console0,path={paths.console_pipe(domid)}",
        *serial_args(info),
        "-qmp", f"unix:{paths.qmp_socket(domid)},server=on,wait=off",
        # The bus for the guest's own xenstore connection (a port named org.xenproject.xenstore,
        # plugged by the toolstack once xenstored has made the domain's socket).
        "-device", f"virtio-serial-pci,id={XENSTORE_BUS}",
        # The balloon: xl mem-set moves the guest's memory/target through it.
        "-device", "virtio-balloon-pci,id=balloon0",
    ]
    if info.type == "hvm":
        args += ["-vga", "std", "-boot", f"order={info.boot}"]
        for index, medium in info.cdroms:
            # The pc machine's PIIX IDE: hda/hdb on ide.0, hdc/hdd on ide.1 (not hotpluggable,
            # so the drives are on the command line; xl cd-insert changes their media).
            drive = f"if=none,id={cdrom_id(index)}-drv,media=cdrom,readonly=on"
            if medium:
                drive += f",format=raw,file={medium.replace(',', ',,')}"
            args += ["-drive", drive, "-device", f"ide-cd,drive={cdrom_id(index)}-drv,"
                     f"bus=ide.{index // 2},unit={index % 2},id={cdrom_id(index)}"]
        args += ["-vnc", vnc_arg(info)] if info.vnc else ["-display", "none"]
        if info.usb or info.usbdevice:
            args += ["-usb"]
            for dev in info.usbdevice:
                args += ["-device", USB_DEVICES[dev]]
    else:
        # PV/PVH: no emulated devices at all; the console is the serial port (pyxen's hvc0).
        args += ["-display", "none", "-vga", "none",
                 "-device", f"pcie-pci-bridge,id={HOTPLUG_BRIDGE},bus=pcie.0"]
    if info.kernel:
        cmdline = info.cmdline if "console=" in info.cmdline else f"console=ttyS0 {info.cmdline}".strip()
        args += ["-kernel", info.kernel, "-append", cmdline]
        if info.ramdisk:
            args += ["-initrd", info.ramdisk]
    if info.incoming:
        args += ["-incoming", "defer"]
    return args + list(info.extra_args)


def hotplug_bus(cmd: list[str]) -> str | None:
    """The bus a QEMU started with ``cmd`` takes hot-plugged PCI devices on: HOTPLUG_BRIDGE if
    it has one (q35), else None (pc: bus 0, QEMU's default)."""
    return HOTPLUG_BRIDGE if any(a.startswith(f"pcie-pci-bridge,id={HOTPLUG_BRIDGE},") for a in cmd) else None


def is_our_qemu(pid: int, uuid: str) -> bool:
    """True when ``pid`` is a live QEMU started for the domain with ``uuid`` (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return alive(pid) and uuid.encode() in cmdline


class DeviceModel:
    """One domain's QEMU process and its QMP session."""

    def __init__(self, domid: int, paths: Paths, on_event: Callable[[int, str, dict[str, Any]], None]):
        self.domid = domid
        self.paths = paths
        self.run_dir = paths.domain_run_dir(domid)
        self.pid: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.qmp: QMPClient | None = None
        self._on_event = on_event
        self._event_task: asyncio.Task[None] | None = None
        #: Where QEMU's own messages go (None for one adopted from an earlier daemon).
        self.log_path: Path | None = None
        #: A loaded (restored, migrated) guest's xenstore port is plugged anew at its first
        #: unpause (replug_xenstore_port).
        self._replug_pending = False
        #: The bus hot-plugged PCI devices go on: HOTPLUG_BRIDGE (q35) or None (pc's bus 0,
        #: QEMU's default), from the command line QEMU was started (or adopted) with.
        self.hotplug_bus: str | None = None

    async def start(self, qemu: str, info: BuildInfo, log_path: Path) -> int:
        """Exec QEMU paused and connect QMP; on any failure kill it and raise DeviceModelError."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for stale in (self.paths.qmp_socket(self.domid), *self.paths.console_fifos(self.domid)):
            stale.unlink(missing_ok=True)
        for fifo in self.paths.console_fifos(self.domid):  # QEMU's pipe chardev needs them at exec
            os.mkfifo(fifo, 0o600)
        cmd = argv(qemu, info, self.paths, self.domid)
        self.hotplug_bus = hotplug_bus(cmd)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as logf:
            logf.write(("domain %d: %s\n" % (self.domid, " ".join(cmd))).encode())
            logf.flush()
            try:
                self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                             start_new_session=True)
            except OSError as err:
                raise DeviceModelError(f"cannot run {qemu}: {err.strerror}", "domctl.createdomain") from err
        self.pid = self.proc.pid
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise DeviceModelError(f"device model exited at start: {_tail(log_path)}",
                                       "domctl.createdomain")
            if self.paths.qmp_socket(self.domid).exists():
                try:
                    await self.connect()
                except (OSError, QMPError):
                    pass
                else:
                    if info.vnc and info.vncpasswd:
                        await self.set_vnc_password(info.vncpasswd)
                    return self.pid
            if loop.time() > deadline:
                self.kill()
                raise DeviceModelError("device model did not open its QMP socket", "domctl.createdomain")
            await asyncio.sleep(0.02)

    async def set_vnc_password(self, password: str) -> None:
        """libxl_dm.c: the VNC password goes to QEMU over QMP (change-vnc-password), so it is
        never on a command line. On failure QEMU is killed: a VNC server that should ask for a
        password must not run without one.

        :raise DeviceModelError: QEMU refused the password.
        """
        try:
            await self.execute("change-vnc-password", {"password": password})
        except (DeviceModelError, QMPError) as err:
            self.kill()
            raise DeviceModelError(f"domain {self.domid}: QEMU refused the VNC password: {err}",
                                   "domctl.createdomain") from err

    async def adopt(self, pid: int) -> None:
        """Take over a QEMU started by an earlier daemon (not our child: no Popen)."""
        self.pid = pid
        try:
            self.hotplug_bus = hotplug_bus(read_proc(f"/proc/{pid}/cmdline").split("\0"))
        except OSError:
            pass  # gone: connect says so
        await self.connect()

    async def connect(self) -> None:
        qmp = QMPClient(f"dom{self.domid}")
        try:
            await asyncio.wait_for(qmp.connect(str(self.paths.qmp_socket(self.domid))), QMP_TIMEOUT)
        except asyncio.TimeoutError:
            raise DeviceModelError(f"domain {self.domid}: QEMU's QMP socket did not answer "
                                   f"within {QMP_TIMEOUT:g} s") from None
        self.qmp = qmp
        self._event_task = asyncio.create_task(self._events(qmp))

    async def _events(self, qmp: QMPClient) -> None:
        try:
            async for event in qmp.events:
                data = event.get("data")
                self._on_event(self.domid, str(event["event"]), dict(data) if isinstance(data, dict) else {})
        except asyncio.CancelledError:
            raise
        except Exception:  # the session ended; the daemon notices on its next call
            log.debug("dom%d: QMP event stream ended", self.domid, exc_info=True)

    async def execute(self, cmd: str, args: dict[str, Any] | None = None,
                      timeout: float = QMP_TIMEOUT) -> Any:
        """One QMP command, bounded by ``timeout`` (a stopped or wedged QEMU must not hang the
        hypervisor; a reply that comes later is dropped by qemu.qmp, as the QMP spec says)."""
        if self.qmp is None:
            raise DeviceModelError(f"no QMP session with domain {self.domid}")
        try:
            return await asyncio.wait_for(self.qmp.execute(cmd, args), timeout)
        except asyncio.TimeoutError:
            raise DeviceModelError(f"domain {self.domid}: QEMU did not answer {cmd} within "
                                   f"{timeout:g} s") from None
        except QMPError as err:
            raise DeviceModelError(f"domain {self.domid}: QMP {cmd} failed: {err}") from err

    # ---- device-model verbs: the only place that builds QMP commands -------------------------
    async def _chardev_add(self, cid: str, path: Path) -> None:
        """A client socket to ``path`` that reconnects (reconnect=1): if the daemon on the other
        side dies, QEMU retries every second and, for vhost-user, replays its set-up to the
        restarted daemon (vhost.md 1.6)."""
        await self.execute("chardev-add", {"id": cid, "backend": {"type": "socket", "data": {
            "addr": {"type": "unix", "data": {"path": str(path)}}, "server": False, "reconnect": 1}}})

    async def _device_add(self, device: dict[str, Any], undo: list[tuple[str, dict[str, Any]]]) -> None:
        """device_add, undoing ``undo`` (the steps before it) if QEMU refuses the device. A
        device given no bus (a PCI one) goes on the hotplug bus."""
        if self.hotplug_bus is not None and "bus" not in device:
            device = {**device, "bus": self.hotplug_bus}
        try:
            await self.execute("device_add", device, timeout=DEVICE_ADD_TIMEOUT)
        except DeviceModelError:
            for cmd, args in reversed(undo):
                try:
                    await self.execute(cmd, args)
                except DeviceModelError:
                    pass
            raise

    async def _drop_stale(self, did: str, cid: str | None = None, node: str | None = None) -> bool:
        """When a disk is added again under the same ids and QEMU says they are taken: drop the
        chardev or block node a forced detach left (the guest released the device only after xl
        had given up waiting), unless the device itself is still plugged. Returns True when
        it is (nothing dropped)."""
        if did in await self._peripherals():
            return True  # still plugged: device_add will say so
        if cid is not None and cid in {str(c["label"]) for c in await self.execute("query-chardev")}:
            await self.execute("chardev-remove", {"id": cid})
        if node is not None and node in {str(n.get("node-name")) for n in
                                         await self.execute("query-named-block-nodes")}:
            await self.execute("blockdev-del", {"node-name": node})
        return False

    async def add_vhost_user_disk(self, devid: int, socket: Path) -> None:
        """A disk served by a vhost-user back-end (pyxen's blkback): vhost-user-blk-pci."""
        did, cid = f"vbd-{devid}", f"vbd-{devid}-chr"
        try:
            await self._chardev_add(cid, socket)
        except DeviceModelError as err:
            if cid not in str(err):
                raise
            if await self._drop_stale(did, cid=cid):
                # The guest has not finished unplugging the disk a forced detach left: say so
                # as device_add would (the chardev stays with the device until it goes).
                raise DeviceModelError(f"domain {self.domid}: Duplicate device ID '{did}': the guest "
                                       "has not released it yet") from err
            await self._chardev_add(cid, socket)
        await self._device_add({"driver": "vhost-user-blk-pci", "id": did, "chardev": cid, "num-queues": 1},
                               [("chardev-remove", {"id": cid})])

    async def add_qdisk(self, devid: int, vdev: str, target: str, fmt: str, readonly: bool) -> None:
        """A disk served by QEMU's own block layer (Xen's qdisk backend): any image format."""
        node, did = f"qdisk-{devid}", f"qdisk-{devid}"
        driver = QDISK_DRIVERS[fmt]
        # QEMU's "file" protocol refuses a block device (a qcow2 image on an LV): host_device.
        try:
            protocol = "host_device" if stat.S_ISBLK(os.stat(target).st_mode) else "file"
        except OSError:
            protocol = "file"  # QEMU's own error names the missing target
        blockdev = {"driver": driver, "node-name": node, "read-only": readonly,
                    "file": {"driver": protocol, "filename": target, "read-only": readonly}}
        try:
            await self.execute("blockdev-add", blockdev)
        except DeviceModelError as err:
            if node not in str(err):
                raise
            await self._drop_stale(did, node=node)
            await self.execute("blockdev-add", blockdev)
        await self._device_add({"driver": "virtio-blk-pci", "id": did, "drive": node, "serial": vdev},
                               [("blockdev-del", {"node-name": node})])

    async def add_vhost_user_nic(self, devid: int, socket: Path, mac: str, accel: str,
                                 mtu: int | None = None) -> None:
        """A NIC served by a vhost-user back-end (pyxen's netback): virtio-net-pci. ``mtu``
        (the vif's, when not Ethernet's 1500) is offered to the guest's driver (host_mtu)."""
        did, cid, nd = f"vif-{devid}", f"vif-{devid}-chr", f"vif-{devid}-net"
        device: dict[str, Any] = {"driver": "virtio-net-pci", "id": did, "netdev": nd, "mac": mac}
        if mtu is not None:
            device["host_mtu"] = mtu
        if accel != "kvm":
            # QEMU 7.2 virtio-net + vhost-user segfaults under TCG with MSI-X (no irqfd, vhost.md
            # §0): legacy INTx interrupts (vectors=0) work.
            device["vectors"] = 0
        await self._chardev_add(cid, socket)
        try:
            await self.execute("netdev_add", {"type": "vhost-user", "id": nd, "chardev": cid})
        except DeviceModelError:
            await self.execute("chardev-remove", {"id": cid})
            raise
        await self._device_add(device, [("chardev-remove", {"id": cid}), ("netdev_del", {"id": nd})])

    async def _peripherals(self) -> set[str]:
        """The ids of the devices plugged with device_add (and -device id=...)."""
        return {str(d["name"]) for d in await self.execute("qom-list", {"path": "/machine/peripheral"})}

    async def remove_disk(self, devid: int, timeout: float = UNPLUG_TIMEOUT) -> bool:
        """Unplug a disk from the running guest (xl block-detach): device_del asks the guest to
        eject the PCI device (ACPI hotplug on the pc machine's bus 0 or q35's HOTPLUG_BRIDGE); its
        driver lets go of the disk, flushing what it holds, and QEMU deletes the device. Then its
        chardev (vhost-user: the backend sees the front-end go) or block node (qdisk) goes too.

        Returns False if the guest did not release the device within ``timeout`` (the request
        stays pending in QEMU; the device and its chardev stay). A disk the device model does
        not have counts as removed.
        """
        have = await self._peripherals()
        did = next((d for d in (f"vbd-{devid}", f"qdisk-{devid}") if d in have), None)
        if did is None:
            return True
        if not await self._unplug(did, timeout):
            log.warning("domain %d: the guest did not release %s within %g s", self.domid, did, timeout)
            return False
        # The device leaves the QOM tree before it lets go of its chardev or node (its
        # finalisation comes later): "busy" for a moment.
        cmd, args = (("chardev-remove", {"id": f"{did}-chr"}) if did.startswith("vbd-")
                     else ("blockdev-del", {"node-name": did}))
        for _ in range(100):
            try:
                await self.execute(cmd, args)
                return True
            except DeviceModelError as err:
                if "busy" not in str(err) and "in use" not in str(err):
                    raise
            await asyncio.sleep(0.02)
        await self.execute(cmd, args)
        return True

    async def cdrom_change(self, index: int, medium: str) -> None:
        """xl cd-insert / cd-eject: put ``medium`` (a raw image) in the emulated drive, or
        eject what is there when ``medium`` is "" (forced: the guest may have locked the tray)."""
        if medium:
            await self.execute("blockdev-change-medium", {
                "id": cdrom_id(index), "filename": medium, "format": "raw", "read-only-mode": "read-only"})
        else:
            await self.execute("eject", {"id": cdrom_id(index), "force": True})

    async def _unplug(self, did: str, timeout: float) -> bool:
        """device_del, then wait until the device is gone from /machine/peripheral: the guest
        was asked to let go of it (an ACPI eject on the pc machine's bus 0 or q35's
        HOTPLUG_BRIDGE) and did. False if it did not within ``timeout`` (the device then stays,
        usable, and the request pending). :raise DeviceModelError: QEMU refused the device_del."""
        await self.execute("device_del", {"id": did})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while did in await self._peripherals():
            if loop.time() > deadline:
                return False
            await asyncio.sleep(DEVICE_DEL_POLL)
        return True

    async def _device_del(self, did: str, timeout: float = DEVICE_DEL_TIMEOUT) -> None:
        """``_unplug``, where a guest that keeps the device is an error (as Xen's detach fails
        when the frontend does not close). :raise DeviceModelError: refused, or not released."""
        if not await self._unplug(did, timeout):
            raise DeviceModelError(f"domain {self.domid}: the guest did not release device {did} "
                                   f"within {timeout:g} s")

    async def remove_vhost_user_nic(self, devid: int) -> None:
        """Unplug the NIC ``add_vhost_user_nic`` plugged (the guest ejects it), then drop its
        netdev and its socket to the back-end, so netback sees the front-end go."""
        did, cid, nd = f"vif-{devid}", f"vif-{devid}-chr", f"vif-{devid}-net"
        await self._device_del(did)
        await self.execute("netdev_del", {"id": nd})
        # QEMU 7.2's vhost-user netdev removes its chardev with it; an older one leaves it.
        if any(c.get("label") == cid for c in await self.execute("query-chardev")):
            await self.execute("chardev-remove", {"id": cid})

    async def add_emulated_nic(self, devid: int, model: str, mac: str, tap_fd: int) -> None:
        """An emulated NIC (xl's type=ioemu: ``model`` e1000 or rtl8139) on a TAP the toolstack
        opened and put on the vif's bridge; QEMU takes the descriptor (getfd), so the TAP lives
        exactly as long as QEMU holds it."""
        did, nd, fdname = f"vif-{devid}-emu", f"vif-{devid}-emu-net", f"vif-{devid}-emu-fd"
        await self._getfd_named(tap_fd, fdname)
        try:
            await self.execute("netdev_add", {"type": "tap", "id": nd, "fd": fdname})
        except DeviceModelError:
            with contextlib.suppress(DeviceModelError):
                await self.execute("closefd", {"fdname": fdname})
            raise
        await self._device_add({"driver": model, "id": did, "netdev": nd, "mac": mac},
                               [("netdev_del", {"id": nd})])

    async def remove_emulated_nic(self, devid: int) -> None:
        """Unplug an emulated NIC and close its TAP (the kernel removes the interface)."""
        await self._device_del(f"vif-{devid}-emu")
        await self.execute("netdev_del", {"id": f"vif-{devid}-emu-net"})

    async def add_xenstore_port(self, socket: Path) -> None:
        """The guest's own xenstore connection: xenstored's socket for the domain as the
        virtio-serial port org.xenproject.xenstore (Xen's xenstore ring, in pyxen)."""
        await self._chardev_add("xenstore", socket)
        await self._device_add({"driver": "virtserialport", "bus": f"{XENSTORE_BUS}.0", "chardev": "xenstore",
                                "name": XENSTORE_PORT, "id": "xenstore-port"},
                               [("chardev-remove", {"id": "xenstore"})])

    async def replug_xenstore_port(self) -> None:
        """A restored or migrated guest's xenstore port, plugged anew once it runs again.
        The guest's connection does not travel (its host side is this QEMU's socket to this
        host's xenstored) and neither do the watches the guest made on it; a port that goes and
        comes back tells the guest's agent so (its read fails with ENODEV), and it opens the new
        port and makes its watches again, as Linux's xenbus re-registers them on resume."""
        await self._device_del("xenstore-port")
        # (the port lets go of its chardev a moment after it leaves /machine/peripheral)
        for _ in range(250):
            try:
                await self.execute("chardev-remove", {"id": "xenstore"})
                break
            except DeviceModelError as err:
                if "busy" not in str(err):
                    raise
                await asyncio.sleep(0.02)
        else:
            raise DeviceModelError(f"domain {self.domid}: the old xenstore port kept its chardev")
        await self.add_xenstore_port(self.paths.xenstored_domain_socket(self.domid))

    async def powerdown(self) -> None:
        """An ACPI power-button press (xl shutdown -F, xl trigger power)."""
        await self.execute("system_powerdown")

    async def reset(self) -> None:
        """A hardware reset request (xl reboot -F, xl trigger reset)."""
        await self.execute("system_reset")

    async def inject_nmi(self) -> None:
        """An NMI (xl trigger nmi). QEMU's inject-nmi reaches every vCPU of a PC (Xen's domctl
        one vCPU); a Linux guest reports it ("NMI received for unknown reason")."""
        await self.execute("inject-nmi")

    async def wakeup(self) -> None:
        """Wake a guest suspended to RAM (xl trigger s3resume; libxl's QMP system_wakeup)."""
        await self.execute("system_wakeup")

    async def human_monitor_command(self, command: str, timeout: float = QMP_TIMEOUT) -> str:
        """One HMP command line through QMP's human-monitor-command (xl qemu-monitor-command);
        its text output, as QEMU gives it."""
        return str(await self.execute("human-monitor-command", {"command-line": command}, timeout))

    async def save(self, path: Path) -> None:
        """The guest's memory, vCPU and device state, appended to ``path`` (after xl's header)
        as QEMU's migration stream. The guest is stopped first and stays stopped."""
        await self.execute("stop")
        await self.execute("migrate", {"uri": f"exec:cat >> {shlex.quote(str(path))}"})
        await self._migration_done("saving", cancel=True)

    async def restore(self, path: Path, offset: int) -> None:
        """Load the state ``save`` wrote, from byte ``offset`` of ``path`` (after xl's header),
        into a device model started with ``incoming`` and given the same devices. The guest is
        left paused."""
        await self.execute("migrate-incoming",
                           {"uri": f"exec:tail -c +{offset + 1} {shlex.quote(str(path))}"})
        await self._migration_done("restoring", cancel=False)
        self._replug_pending = True

    async def _getfd(self, fd: int) -> None:
        """Hand QEMU a descriptor (SCM_RIGHTS on the QMP socket) and name it MIGRATION_FD
        (getfd); a descriptor left under that name by an earlier attempt is replaced."""
        await self._getfd_named(fd, MIGRATION_FD)

    async def _getfd_named(self, fd: int, name: str) -> None:
        """Hand QEMU a descriptor (SCM_RIGHTS on the QMP socket) under ``name`` (getfd)."""
        if self.qmp is None:
            raise DeviceModelError(f"no QMP session with domain {self.domid}")
        try:
            self.qmp.send_fd_scm(fd)
        except (OSError, QMPError) as err:
            raise DeviceModelError(f"domain {self.domid}: cannot pass QEMU descriptor {name}: {err}") from err
        await self.execute("getfd", {"fdname": name})

    async def migrate_send(self, fd: int, live: bool) -> None:
        """The guest's state as QEMU's migration stream, written to ``fd`` (xl migrate's pipe to
        the receiver). ``live``: pre-copy while the guest runs; QEMU stops it for the last pass
        when the rest fits its downtime limit. Otherwise the guest is stopped first. Either way
        it is left stopped (postmigrate) on success; a live migration that fails leaves it
        running (QEMU starts it again), a stopped one stopped. ``cont`` resumes it after."""
        if not live:
            await self.execute("stop")
        else:
            await self.execute("migrate-set-parameters", {"max-bandwidth": MIGRATE_MAX_BANDWIDTH})
        await self._getfd(fd)
        await self.execute("migrate", {"uri": f"fd:{MIGRATION_FD}"})
        await self._migration_done("migrating", cancel=True)

    async def migrate_receive(self, fd: int) -> None:
        """Load a migration stream read from ``fd`` (xl migrate-receive's stdin) into a device
        model started with ``incoming`` and given the sender's devices; left paused. QEMU reads
        no further than the stream's end (nothing else arrives on ``fd`` until the receiver has
        answered it)."""
        await self._getfd(fd)
        await self.execute("migrate-incoming", {"uri": f"fd:{MIGRATION_FD}"})
        await self._migration_done("receiving", cancel=False)
        self._replug_pending = True

    async def _migration_done(self, what: str, cancel: bool) -> None:
        """Until QEMU's migration (outgoing or incoming) completes, bounded by SAVE_TIMEOUT;
        an outgoing one that runs over is cancelled (``cancel``).

        QEMU exits when it cannot load an incoming stream (a config that does not fit it, a
        damaged file, a sender gone): then the error is its own last log lines, which say why,
        where the lost QMP session does not. An incoming QEMU is given a second to exit."""
        try:
            await self._poll_migration(what, cancel)
        except DeviceModelError as err:
            for _ in range(1 if cancel else 50):
                if self.pid is not None and not alive(self.pid):
                    why = _tail(self.log_path) if self.log_path is not None else "(no log)"
                    raise DeviceModelError(f"domain {self.domid}: {what} failed: the device "
                                           f"model exited: {why}") from err
                if not cancel:
                    await asyncio.sleep(0.02)
            raise

    async def _poll_migration(self, what: str, cancel: bool) -> None:
        """_migration_done's loop: query-migrate every MIGRATION_POLL s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SAVE_TIMEOUT
        while True:
            st = await self.execute("query-migrate")
            if st.get("status") == "completed":
                # QEMU's own account (ms), which bench/migrate.py reads back from this log.
                log.info("domain %d: %s completed: qemu %s", self.domid, what, json.dumps(
                    {k: st[k] for k in ("total-time", "downtime", "setup-time") if k in st}))
                return
            if st.get("status") in ("failed", "cancelled"):
                raise DeviceModelError(f"domain {self.domid}: {what} failed: "
                                       f"{st.get('error-desc', st['status'])}")
            if loop.time() > deadline:
                if cancel:
                    await self.execute("migrate_cancel")
                raise DeviceModelError(f"domain {self.domid}: {what} took more than {SAVE_TIMEOUT:g} s")
            await asyncio.sleep(MIGRATION_POLL)

    async def dump_core(self, path: Path) -> None:
        """The guest's memory as an ELF core (xl dump-core, on_crash=coredump-*). QEMU stops a
        running guest for the copy and runs it again after; a paused one stays paused. QEMU
        creates the file 0400; Xen's xc_domain_dumpcore makes it 0600, so that is what it gets."""
        await self.execute("dump-guest-memory", {"paging": False, "protocol": f"file:{path}"},
                           timeout=DUMP_TIMEOUT)
        try:
            os.chmod(path, 0o600)
        except OSError:
            pass

    async def pause(self) -> None:
        await self.execute("stop")

    async def unpause(self) -> None:
        await self.execute("cont")
        if self._replug_pending:
            # After the guest has run a moment: virtio-serial's post-load timer, which fires
            # once the VM runs, still refers to the loaded ports (QEMU 7.2 crashes on a port
            # unplugged before it).
            self._replug_pending = False
            await asyncio.sleep(0.05)
            await self.replug_xenstore_port()

    async def reboot(self) -> None:
        """Reset the machine and run it again (the guest's reboot, on_reboot=restart).

        QEMU runs with -no-reboot so that a guest's reboot stops it for the toolstack to decide;
        that same setting would turn our system_reset into another shutdown, so the reboot action
        is switched to "reset" just for this request (the choice is made when it is requested).
        system_reset is only a request; until QEMU's main loop has carried it out, cont is
        refused ("Resetting the Virtual Machine is required"), so retry cont briefly.
        """
        await self.execute("set-action", {"reboot": "reset"})
        try:
            await self.execute("system_reset")
        finally:
            await self.execute("set-action", {"reboot": "shutdown"})
        for _ in range(100):
            try:
                await self.execute("cont")
                return
            except DeviceModelError as err:
                if "Resetting" not in str(err):
                    raise
                await asyncio.sleep(0.02)
        raise DeviceModelError(f"domain {self.domid}: reset did not complete")

    async def balloon(self, target_mib: int) -> None:
        """Ask the guest's balloon driver to bring the domain to ``target_mib``."""
        await self.execute("balloon", {"value": target_mib << 20})

    async def balloon_actual_kb(self) -> int | None:
        """What the guest holds now, as the balloon reports it (None without a driver yet)."""
        try:
            return int((await self.execute("query-balloon", timeout=QUERY_TIMEOUT))["actual"]) >> 10
        except DeviceModelError:
            return None

    async def status(self) -> str:
        """QEMU's run state: prelaunch, running, paused, shutdown, guest-panicked, ..."""
        return str((await self.execute("query-status"))["status"])

    async def vcpu_threads(self) -> list[int]:
        """The vCPU threads, by cpu-index (vCPU number)."""
        cpus = await self.execute("query-cpus-fast")
        return [int(c["thread-id"]) for c in sorted(cpus, key=lambda c: int(c.get("cpu-index", 0)))]

    async def set_vcpus(self, online: int) -> None:
        """CPU hotplug to ``online`` vCPUs: device_add each missing CPU of the first ``online``
        slots (query-hotpluggable-cpus, in socket/core/thread order: slot n is vCPU n), and
        device_del each hot-added one beyond them; the guest's ACPI CPU hotplug onlines a new
        CPU and ejects an unplugged one. CPUs of the command line (-smp cpus=N) cannot be
        unplugged: the guest offlines those itself when told (cpu/N/availability)."""
        slots = sorted(await self.execute("query-hotpluggable-cpus"),
                       key=lambda s: tuple(int(s["props"].get(k, 0)) for k in ("socket-id", "core-id", "thread-id")))
        for n, slot in enumerate(slots):
            path = str(slot.get("qom-path", ""))
            if n < online and not path:
                await self.execute("device_add", {"driver": slot["type"], "id": f"vcpu{n}", **slot["props"]},
                                   timeout=DEVICE_ADD_TIMEOUT)
            elif n >= online and path.startswith("/machine/peripheral/"):
                await self.execute("device_del", {"id": path.rsplit("/", 1)[1]})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEVICE_ADD_TIMEOUT
        while True:  # an unplug ends when the guest has ejected the CPU
            left = [s for n, s in enumerate(await self.execute("query-hotpluggable-cpus"))
                    if str(s.get("qom-path", "")).startswith("/machine/peripheral/vcpu")
                    and int(str(s["qom-path"]).rsplit("vcpu", 1)[1]) >= online]
            if not left:
                return
            if loop.time() > deadline:
                raise DeviceModelError(f"domain {self.domid}: the guest did not release "
                                       f"{len(left)} unplugged vCPU(s) within {DEVICE_ADD_TIMEOUT:g} s")
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        if self._event_task:
            self._event_task.cancel()
        if self.qmp is not None:
            try:
                await self.qmp.disconnect()
            except Exception:  # already gone
                pass
            self.qmp = None

    async def destroy(self) -> None:
        """quit over QMP, then make sure: SIGKILL if it lingers; reap it if it is our child."""
        asked = self.qmp is not None
        if self.qmp is not None:
            try:
                await asyncio.wait_for(self.qmp.execute("quit"), 2.0)
            except Exception:  # QEMU may close the socket before replying
                pass
        await self.close()
        for _ in range(100 if asked else 0):
            if self.pid is None or not alive(self.pid):
                break
            await asyncio.sleep(0.02)
        self.kill()

    def kill(self) -> None:
        if self.pid is not None and alive(self.pid):
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log.error("dom%d: QEMU pid %d would not die", self.domid, self.proc.pid)
        for p in (self.paths.qmp_socket(self.domid), *self.paths.console_fifos(self.domid)):
            p.unlink(missing_ok=True)


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " / ".join(line for line in text[-lines:] if not line.startswith("domain "))


def thread_cpu_ns(pid: int, tids: list[int]) -> int:
    """CPU time of the vCPU threads in ns, from the scheduler's own accounting (schedstat)."""
    total = 0
    for tid in tids:
        try:
            total += int(read_proc(f"/proc/{pid}/task/{tid}/schedstat").split(None, 1)[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def thread_states(pid: int, tids: list[int]) -> list[str]:
    """Each vCPU thread's scheduler state letter (R running, S sleeping, ...)."""
    states = []
    for tid in tids:
        try:
            states.append(stat_fields(pid, tid)[0])
        except (OSError, IndexError):
            pass
    return states
