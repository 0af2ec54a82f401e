"""``virt-install`` for pyxen: virt-manager's command, with its flags, conversions and messages,
making an xl domain instead of a libvirt one.

Parse -> compute -> render, then run:

* ``make_plan(argv, paths, rand, facts)`` is pure: virt-install's argv (old flags converted as
  virtinst/virtinstall.py does: ``-r`` to ``--memory``, ``-f/-s/--nonsparse`` to ``--disk``,
  ``--vnc...`` to ``--graphics``, ``-b/-m`` to ``--network``) becomes a frozen ``Plan``; the host
  is seen only through ``HostFacts`` (names in use, bridges, volume groups, paths), so every
  refusal happens before anything is made.
* ``render_cfg(plan, phase)`` is the xl.cfg text: for an install from ``--location`` (PV) or
  ``--cdrom``/``--pxe`` (HVM) the *install* phase boots the installer with ``on_reboot =
  "destroy"`` and the *final* phase (the config written to ``<root>/<name>.cfg``, for every later
  boot) boots the disk (``bootloader = "pygrub"`` for PV, ``boot = "c"`` for HVM): virt-install's
  two phases (a transient domain with the install kernel, a persistent one without) in xl terms.
* ``run(plan, paths)`` fetches the installer's kernel and initrd, makes the disks, writes the
  config and starts the domain through the toolstack as ``xl create`` does; on failure it
  removes what it made.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import time
import uuid as uuidlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

from ..hypervisor.errors import HypercallError
from ..libxlu.cfg import ConfigSyntaxError, parse
from ..paths import Paths
from ..storage import lvm
from ..toolstack import domain as libxl
from ..toolstack import installtree
from ..toolstack.config import ConfigError, DomainConfig, from_settings
from ..xenstore.errors import XenstoreError

#: virtinstall.py's INSTALL_METHODS, named in the "must be specified" message.
INSTALL_METHODS = "--location URL, --cdrom CD/ISO, --pxe, --import, --boot hd|cdrom|..."
#: The bridge a NIC joins when --network names none (Xen's default bridge).
DEFAULT_BRIDGE = "xenbr0"
#: Xen's OUI: every MAC virt-install makes up for a Xen guest starts with it.
XEN_OUI = "00:16:3e"
#: virt-install's console port base: VNC display N is TCP port 5900 + N.
VNC_BASE = 5900
#: How often the installer domain is looked at while virt-install waits for it (seconds).
POLL = 1.0
#: Seconds ``qemu-img create`` may take.
QEMU_IMG_TIMEOUT = 60.0
_MAC = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}\Z")
_DISK_KEYS = ("path", "size", "sparse", "format", "bus", "device", "cache", "readonly", "perms",
              "target")
_NET_KEYS = ("bridge", "network", "mac", "model", "type")
_GRAPHICS_KEYS = ("type", "port", "listen", "password", "passwd", "keymap")
_BOOT_DEVS = {"hd": "c", "cdrom": "d", "network": "n", "fd": "a"}
_CACHE_MODES = ("none", "writethrough", "writeback", "directsync", "unsafe", "default")


class VirtInstallError(Exception):
    """A refusal or failure; str() is virt-install's message (printed after ``ERROR    ``)."""


# ---- the plan ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Disk:
    """One --disk after conversion: where, how big if it is to be made, and how the guest sees it."""

    path: str | None
    size_gib: float | None = None
    sparse: bool = True
    format: str = "raw"
    bus: str = "xen"
    device: str = "disk"
    cache: str | None = None
    readonly: bool = False
    vdev: str = ""
    #: Whether virt-install makes it (the path does not exist yet).
    create: bool = False
    #: (vg, lv) for /dev/<vg>/<lv> of an existing volume group.
    lv: tuple[str, str] | None = None

    @property
    def is_block(self) -> bool:
        return self.lv is not None or (self.path or "").startswith("/dev/")

    def xl_spec(self) -> str:
        """The disk as xl.cfg's positional form: ``<prefix>:<target>,<vdev>[:cdrom],<mode>``."""
        prefix = "phy" if self.is_block else ("qcow2" if self.format == "qcow2" else "file")
        vdev = self.vdev + (":cdrom" if self.device == "cdrom" else "")
        mode = "r" if self.readonly or self.device == "cdrom" else "w"
        return f"{prefix}:{self.path or ''},{vdev},{mode}"


@dataclass(frozen=True)
class Nic:
    bridge: str
    mac: str
    model: str | None = None

    def xl_spec(self) -> str:
        return f"mac={self.mac},bridge={self.bridge}" + (f",model={self.model}" if self.model else "")


@dataclass(frozen=True)
class Graphics:
    """--graphics vnc: ``port`` None is virt-install's autoport (the first free display)."""

    port: int | None = None
    listen: str = "127.0.0.1"
    password: str | None = None
    keymap: str | None = None

    @property
    def display(self) -> int | None:
        return None if self.port is None else self.port - VNC_BASE

    def where(self) -> str:
        """Where a VNC viewer connects."""
        if self.port is None:
            return f"{self.listen}:0 (port {VNC_BASE}, or the next free display)"
        return f"{self.listen}:{self.display} (port {self.port})"


@dataclass(frozen=True)
class HostFacts:
    """What the plan needs to know about the host, asked through callables (tests pass fakes)."""

    name_in_use: Callable[[str], bool]
    bridge_exists: Callable[[str], bool]
    path_exists: Callable[[str], bool]
    volume_group_exists: Callable[[str], bool]


@dataclass(frozen=True)
class Plan:
    """Everything virt-install will do, decided before it does any of it."""

    name: str
    uuid: str
    memory: int
    maxmem: int | None
    vcpus: int
    maxvcpus: int | None
    cpuset: str | None
    hvm: bool
    #: location | cdrom | pxe | import | boot
    method: str
    disks: tuple[Disk, ...]
    nics: tuple[Nic, ...]
    graphics: Graphics | None
    #: text | graphical | none
    autoconsole: str
    #: --wait in minutes; -1 forever; None not asked
    wait: int | None
    config_path: Path
    location: str | None = None
    location_kernel: str | None = None
    location_initrd: str | None = None
    extra_args: str = ""
    boot: str | None = None
    noreboot: bool = False
    dry_run: bool = False
    #: Where the installer's kernel and initrd are copied (virt-install's
    #: ``virtinst-<random>-<basename>``): (directory, random part).
    boot_dir: Path = Path("/")
    download_tag: str = ""
    os_variant: str | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def two_phase(self) -> bool:
        """An installer boots first, and the final config boots the disk (virt-install's
        requires_postboot_xml_changes)."""
        return self.method in ("location", "cdrom", "pxe")

    def download(self, rel: str) -> Path:
        """The Dom0 path of the tree's file ``rel``."""
        return self.boot_dir / f"virtinst-{self.download_tag}-{Path(rel).name}"


# ---- parse ------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse whose errors are virt-install's (``virt-install: error: ...``, exit 2)."""


def new_parser() -> argparse.ArgumentParser:
    """virt-install's options (virtinst/virtinstall.py parse_args), old spellings included."""
    p = _Parser(prog="virt-install", description="Create a new virtual machine from specified install media.")
    p.add_argument("-n", "--name")
    p.add_argument("--memory")
    p.add_argument("-r", "--ram", type=int, dest="oldmemory", help=argparse.SUPPRESS)
    p.add_argument("--vcpus", action="append")
    p.add_argument("--cpuset", help=argparse.SUPPRESS)
    p.add_argument("--disk", action="append")
    p.add_argument("-f", "--file", dest="file_paths", action="append", help=argparse.SUPPRESS)
    p.add_argument("-s", "--file-size", type=float, dest="disksize", action="append",
                   help=argparse.SUPPRESS)
    p.add_argument("--nonsparse", action="store_false", dest="sparse", default=True,
                   help=argparse.SUPPRESS)
    p.add_argument("--nodisks", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("-w", "--network", action="append")
    p.add_argument("-b", "--bridge", action="append", help=argparse.SUPPRESS)
    p.add_argument("-m", "--mac", action="append", help=argparse.SUPPRESS)
    p.add_argument("--nonetworks", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--graphics", action="append")
    p.add_argument("--vnc", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--vncport", type=int, help=argparse.SUPPRESS)
    p.add_argument("--vnclisten", help=argparse.SUPPRESS)
    p.add_argument("-k", "--keymap", help=argparse.SUPPRESS)
    p.add_argument("--sdl", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--nographics", action="store_true", help=argparse.SUPPRESS)
    virt = p.add_mutually_exclusive_group()
    virt.add_argument("-v", "--hvm", action="store_const", const="hvm", dest="virt_type")
    virt.add_argument("-p", "--paravirt", action="store_const", const="xen", dest="virt_type")
    p.add_argument("-l", "--location")
    p.add_argument("-x", "--extra-args", action="append")
    p.add_argument("-c", dest="cdrom_short", help=argparse.SUPPRESS)
    p.add_argument("--cdrom")
    p.add_argument("--pxe", action="store_true")
    p.add_argument("--import", action="store_true", dest="import_install")
    p.add_argument("--boot")
    p.add_argument("--os-variant", "--osinfo", dest="os_variant")
    p.add_argument("--os-type", dest="old_os_type", help=argparse.SUPPRESS)
    p.add_argument("--autoconsole")
    p.add_argument("--noautoconsole", action="store_const", const="none", dest="autoconsole")
    p.add_argument("--wait", type=int, const=-1, nargs="?")
    p.add_argument("--noreboot", action="store_true")
    p.add_argument("--dry-run", action="store_true")
    return p


def _suboptions(text: str, flag: str, keys: tuple[str, ...], first: str) -> dict[str, str]:
    """virt-install's ``a=b,c=d`` option string; a leading bare value is ``first``.

    :raise VirtInstallError: a key virt-install does not know here ("Unknown --disk options")."""
    opts: dict[str, str] = {}
    unknown = []
    for i, item in enumerate(x for x in text.split(",") if x != ""):
        key, sep, value = item.partition("=")
        if not sep:
            if i == 0:
                opts[first] = key
                continue
            key, value = key, ""
        if key not in keys:
            unknown.append(key)
            continue
        opts[key] = value
    if unknown:
        raise VirtInstallError(f"Unknown {flag} options: {unknown}")
    return opts


def _yes(value: str, flag: str, key: str) -> bool:
    """virt-install's on/off words."""
    low = value.lower()
    if low in ("yes", "on", "true", "1", ""):
        return True
    if low in ("no", "off", "false", "0"):
        return False
    raise VirtInstallError(f"Unknown '{key}' value '{value}'")


def _convert_disks(ns: argparse.Namespace) -> list[str]:
    """convert_old_disks: -f/-s/--nonsparse to --disk strings, with its refusals."""
    if ns.nodisks and (ns.file_paths or ns.disk or ns.disksize):
        raise VirtInstallError("Cannot specify storage and use --nodisks")
    if (ns.file_paths or ns.disksize or not ns.sparse) and ns.disk:
        raise VirtInstallError("Cannot mix --file, --nonsparse, or --file-size with --disk "
                               "options. Use --disk PATH[,size=SIZE][,sparse=yes|no]")
    if ns.disk:
        return list(ns.disk)
    if ns.nodisks:
        return ["none"]
    paths, sizes = list(ns.file_paths or []), list(ns.disksize or [])
    paths += [None] * (len(sizes) - len(paths))
    sizes += [None] * (len(paths) - len(sizes))
    out = []
    for path, size in zip(paths, sizes):
        parts = ([f"path={path}"] if path else []) + ([f"size={size:g}"] if size else [])
        parts += [] if ns.sparse else ["sparse=no"]
        out.append(",".join(parts))
    return out


def _convert_networks(ns: argparse.Namespace) -> list[str]:
    """convert_old_networks: -b/-m to --network strings; ``bridge:br0`` to ``bridge=br0``."""
    if ns.nonetworks:
        return ["none"]
    macs, networks, bridges = list(ns.mac or []), list(ns.network or []), list(ns.bridge or [])
    if bridges and networks:
        raise VirtInstallError("Cannot use --bridge and --network at the same time")
    if bridges:
        networks = ["bridge:" + b for b in bridges]
    networks += [None] * (max(len(macs), 1) - len(networks))
    macs += [None] * (len(networks) - len(macs))
    out = []
    for net, mac in zip(networks, macs):
        net = net if net is not None else "default"
        if mac:
            net += f",mac={mac}"
        for prefix in ("network", "bridge"):
            if net.startswith(prefix + ":"):
                net = net.replace(prefix + ":", prefix + "=", 1)
        out.append(net)
    return out


def _convert_graphics(ns: argparse.Namespace) -> list[str] | None:
    """convert_old_graphics: --vnc/--vncport/--vnclisten/-k/--sdl/--nographics to --graphics."""
    if ns.graphics and (ns.vnc or ns.sdl or ns.keymap or ns.vncport or ns.vnclisten):
        raise VirtInstallError("Cannot mix --graphics and old style graphical options")
    if sum(bool(g) for g in (ns.vnc, ns.nographics, ns.sdl, ns.graphics)) > 1:
        raise VirtInstallError("Can't specify more than one of VNC, SDL, --graphics or --nographics")
    if ns.graphics:
        return list(ns.graphics)
    if not (ns.vnc or ns.nographics or ns.sdl):
        return None
    opt = "vnc" if ns.vnc else ("sdl" if ns.sdl else "none")
    if ns.vnclisten:
        opt += f",listen={ns.vnclisten}"
    if ns.vncport:
        opt += f",port={ns.vncport}"
    if ns.keymap:
        opt += f",keymap={ns.keymap}"
    return [opt]


def _memory(ns: argparse.Namespace) -> tuple[int | None, int | None]:
    """--memory N | memory=N[,maxmemory=M] (MiB), or the old -r/--ram."""
    text = ns.memory if ns.memory else (str(ns.oldmemory) if ns.oldmemory else None)
    if text is None:
        return None, None
    opts = _suboptions(text, "--memory", ("memory", "maxmemory", "currentMemory"), "memory")
    try:
        memory = int(opts.get("memory") or opts.get("currentMemory") or 0) or None
        maxmem = int(opts["maxmemory"]) if "maxmemory" in opts else None
    except ValueError:
        raise VirtInstallError(f"Invalid --memory value '{text}': not a number of MiB") from None
    if memory is not None and memory <= 0:
        raise VirtInstallError(f"Invalid --memory value '{text}': not a number of MiB")
    if memory and maxmem is not None and maxmem < memory:
        raise VirtInstallError(f"maxmemory {maxmem} is less than memory {memory}")
    return memory, maxmem


def _vcpus(ns: argparse.Namespace) -> tuple[int, int | None, str | None]:
    """--vcpus N[,maxvcpus=M][,cpuset=LIST] (several are joined, as virt-install appends the
    hidden --cpuset to the last); default 1."""
    texts = list(ns.vcpus or [])
    if ns.cpuset:
        texts.append(f",cpuset={ns.cpuset}")
    opts: dict[str, str] = {}
    for t in texts:
        opts.update(_suboptions(t, "--vcpus", ("vcpus", "maxvcpus", "cpuset", "sockets", "cores",
                                               "threads", "placement"), "vcpus"))
    try:
        maxv = int(opts["maxvcpus"]) if "maxvcpus" in opts else None
        vcpus = int(opts["vcpus"]) if "vcpus" in opts else (maxv or 1)
    except ValueError:
        raise VirtInstallError(f"Invalid --vcpus value '{','.join(texts)}'") from None
    if vcpus < 1 or (maxv is not None and maxv < vcpus):
        raise VirtInstallError(f"Invalid --vcpus value '{','.join(texts)}': maxvcpus must be "
                               "at least vcpus, and vcpus at least 1")
    cpuset = opts.get("cpuset") or None
    if cpuset == "auto":
        cpuset = None  # libvirt's NUMA placement; Xen places the vCPUs itself
    elif cpuset is not None and not re.fullmatch(r"\^?\d+(-\d+)?(,\^?\d+(-\d+)?)*", cpuset):
        raise VirtInstallError("cpuset can only contain numeric, ',', '^', or '-' characters")
    return vcpus, maxv, cpuset


def _disks(specs: list[str], name: str, hvm: bool, cdrom: str | None, paths: Paths,
           facts: HostFacts) -> tuple[tuple[Disk, ...], list[str]]:
    """Each --disk to a Disk (virt-install's cli.ParserDisk and DeviceDisk checks), vdevs
    assigned in order (PV ``xvd*``; HVM IDE ``hd*``, ``hdc`` kept for the install CD)."""
    disks: list[Disk] = []
    warnings: list[str] = []
    for spec in specs:
        if spec == "none":
            continue
        o = _suboptions(spec, "--disk", _DISK_KEYS, "path")
        device = o.get("device", "disk")
        if device not in ("disk", "cdrom"):
            raise VirtInstallError(f"Unknown '--disk device' value '{device}' (pyxen: disk or cdrom)")
        fmt = o.get("format", "raw")
        if fmt not in ("raw", "qcow2"):
            raise VirtInstallError(f"Unknown '--disk format' value '{fmt}' (pyxen: raw or qcow2)")
        cache = o.get("cache")
        if cache is not None:
            if cache not in _CACHE_MODES:
                raise VirtInstallError(f"Unknown '--disk cache' value '{cache}'")
            warnings.append(f"--disk cache={cache}: xl.cfg's disk has no cache mode; QEMU's default is used")
        size = None
        if "size" in o:
            try:
                size = float(o["size"])
            except ValueError:
                raise VirtInstallError(f"Unknown '--disk size' value '{o['size']}'") from None
            if size <= 0:
                raise VirtInstallError(f"--disk size must be greater than 0, was '{o['size']}'")
        path = o.get("path") or None
        auto = path is None
        if path is None and device == "disk":
            if size is None:
                raise VirtInstallError("--disk requires a path or a size")
            # a new volume in pyxen's image folder, named as virt-install names one in its pool
            path = str(paths.images_dir / f"{name}{'' if not disks else f'-{len(disks) + 1}'}"
                       f".{'qcow2' if fmt == 'qcow2' else 'img'}")
        if path is not None:
            path = os.path.abspath(path)
        lv = lvm.parse_lv_path(path) if path else None
        exists = path is not None and facts.path_exists(path)
        create = False
        if path is not None and not exists:
            if device == "cdrom":
                raise VirtInstallError(f"Must specify storage creation parameters for "
                                       f"non-existent path '{path}'.")
            if size is None:
                raise VirtInstallError(f"size is required for non-existent disk '{path}'")
            if lv is not None:
                if not facts.volume_group_exists(lv[0]):
                    raise VirtInstallError(f"Cannot create '{path}': no volume group '{lv[0]}'")
            elif not auto and not facts.path_exists(os.path.dirname(path)):
                raise VirtInstallError(f"Cannot create '{path}': directory "
                                       f"'{os.path.dirname(path)}' does not exist")
            create = True
        bus = o.get("bus", "ide" if hvm else "xen")
        if bus not in ("xen", "ide", "scsi", "sata", "virtio"):
            raise VirtInstallError(f"Unknown '--disk bus' value '{bus}'")
        readonly = _yes(o["readonly"], "--disk", "readonly") if "readonly" in o else False
        if o.get("perms") == "ro":
            readonly = True
        disks.append(Disk(path, size, _yes(o.get("sparse", "yes"), "--disk", "sparse"), fmt,
                          bus, device, cache, readonly, o.get("target", ""), create,
                          lv if create or (lv and facts.volume_group_exists(lv[0])) else None))
    if cdrom is not None:
        if not facts.path_exists(os.path.abspath(cdrom)):
            raise VirtInstallError(f"Validating install media '{cdrom}' failed: "
                                   "No such file or directory")
        disks.append(Disk(os.path.abspath(cdrom), bus="ide" if hvm else "xen", device="cdrom",
                          readonly=True, vdev="hdc" if hvm else ""))
    used = {d.vdev for d in disks if d.vdev}
    named = []
    for d in disks:
        if not d.vdev:
            prefix = {"ide": "hd", "scsi": "sd", "sata": "sd"}.get(d.bus, "xvd")
            letter = next(c for c in "abcdefghijklmnopqrstuvwxyz" if prefix + c not in used)
            d = replace(d, vdev=prefix + letter)
            used.add(d.vdev)
        named.append(d)
    return tuple(named), warnings


def _random_mac(rand: random.Random) -> str:
    """virt-install's generate_random_mac for Xen: 00:16:3e, then 0x00-0x7f, then two bytes."""
    tail = [rand.randint(0x00, 0x7F), rand.randint(0x00, 0xFF), rand.randint(0x00, 0xFF)]
    return XEN_OUI + "".join(f":{b:02x}" for b in tail)


def _nics(specs: list[str], rand: random.Random, facts: HostFacts) -> tuple[Nic, ...]:
    nics = []
    for spec in specs:
        if spec == "none":
            continue
        o = _suboptions(spec, "--network", _NET_KEYS, "type")
        kind = o.get("type")
        bridge = o.get("bridge")
        if kind == "bridge" and bridge is None:
            bridge = DEFAULT_BRIDGE
        elif kind == "network" or "network" in o or kind == "default":
            net = o.get("network", "default")
            if net != "default":
                raise VirtInstallError(f"Network not found: no network with matching name '{net}'"
                                       " (pyxen has no libvirt networks: use bridge=)")
            bridge = bridge or DEFAULT_BRIDGE
        elif kind not in (None, "bridge"):
            raise VirtInstallError(f"Unknown network type '{kind}' (pyxen: bridge=BR or none)")
        bridge = bridge or DEFAULT_BRIDGE
        if not facts.bridge_exists(bridge):
            raise VirtInstallError(f"Cannot get interface MTU on '{bridge}': No such device")
        mac = o.get("mac") or None
        if mac == "RANDOM":
            mac = None
        if mac is not None and not _MAC.match(mac):
            raise VirtInstallError(f"MAC address must be of the format AA:BB:CC:DD:EE:FF, was '{mac}'")
        nics.append(Nic(bridge, mac.lower() if mac else _random_mac(rand), o.get("model") or None))
    return tuple(nics)


def _graphics(specs: list[str] | None, hvm: bool) -> Graphics | None:
    """--graphics vnc[,port=,listen=,password=,keymap=] | none; the default is VNC for HVM (its
    installer is seen there) and none for PV (its installer is on the text console)."""
    if specs is None:
        return Graphics() if hvm else None
    g: Graphics | None = None
    for spec in specs:
        o = _suboptions(spec, "--graphics", _GRAPHICS_KEYS, "type")
        kind = o.get("type", "vnc")
        if kind == "none":
            g = None
            continue
        if kind != "vnc":
            raise VirtInstallError(f"Unknown '--graphics type' value '{kind}' (pyxen serves "
                                   "vnc, or none)")
        port = None
        if o.get("port") not in (None, "", "-1"):
            try:
                port = int(o["port"])
            except ValueError:
                raise VirtInstallError(f"Unknown '--graphics port' value '{o['port']}'") from None
            if not VNC_BASE <= port <= VNC_BASE + 99:
                raise VirtInstallError(f"--graphics port {port}: pyxen's VNC displays are ports "
                                       f"{VNC_BASE}-{VNC_BASE + 99}")
        listen = o.get("listen") or "127.0.0.1"
        if ":" in listen:
            raise VirtInstallError(f"--graphics listen={listen}: give an address without a port "
                                   "(port= names the port)")
        g = Graphics(port, listen, o.get("password") or o.get("passwd") or None, o.get("keymap"))
    return g


def _boot(text: str | None) -> str | None:
    """--boot hd|cdrom|network|fd[,...] as xl's boot= letters."""
    if not text:
        return None
    letters = ""
    unknown = []
    for item in text.split(","):
        key, _, value = item.partition("=")
        if key in _BOOT_DEVS and not value:
            letters += _BOOT_DEVS[key]
        elif key.startswith("boot") and key[4:].isdigit() and value in _BOOT_DEVS:
            letters += _BOOT_DEVS[value]
        else:
            unknown.append(key)
    if unknown:
        raise VirtInstallError(f"Unknown --boot options: {unknown}")
    return letters or None


def _generated_name(os_variant: str | None, facts: HostFacts) -> str:
    """Guest.generate_name: the OS name (``debian12``, then ``debian12-2``...) or ``vm1``,
    ``vm2``... for a generic guest."""
    if os_variant and os_variant not in ("generic", "detect=on", "auto"):
        base = os_variant.split(",")[0].split("=")[-1]
        if not facts.name_in_use(base):
            return base
        return next(f"{base}-{n}" for n in range(2, 10000) if not facts.name_in_use(f"{base}-{n}"))
    return next(f"vm{n}" for n in range(1, 10000) if not facts.name_in_use(f"vm{n}"))


def make_plan(argv: list[str], paths: Paths, rand: random.Random, facts: HostFacts) -> Plan:
    """virt-install's argv as a Plan (pure over ``rand`` and ``facts``).

    :raise VirtInstallError: a refusal, with virt-install's message.
    :raise SystemExit: argparse's usage error (exit 2) or --help (exit 0).
    """
    ns = new_parser().parse_args(argv)
    warnings: list[str] = []
    # virt-install's order: old options converted first, then the checks
    disk_specs = _convert_disks(ns)
    net_specs = _convert_networks(ns)
    graphics_specs = _convert_graphics(ns)
    if ns.old_os_type:
        warnings.append("--os-type is deprecated and does nothing. Please stop using it.")
    autoconsole = ns.autoconsole
    if ns.wait == 0:
        warnings.append("Treating --wait 0 as --noautoconsole")
        autoconsole, ns.wait = "none", None
    if autoconsole not in (None, "none", "text", "graphical"):
        raise VirtInstallError(f"Unknown autoconsole type '{autoconsole}'")
    if ns.cdrom_short and ns.cdrom:
        raise VirtInstallError("Cannot use -c and --cdrom at the same time")
    if ns.cdrom_short:
        if "://" in ns.cdrom_short:
            raise VirtInstallError("-c specified with what looks like a libvirt URI. Did you mean "
                                   "to use --connect? If not, use --cdrom instead")
        ns.cdrom = ns.cdrom_short
    hvm = ns.virt_type == "hvm"
    memory, maxmem = _memory(ns)
    vcpus, maxvcpus, cpuset = _vcpus(ns)
    boot = _boot(ns.boot)
    method = ("location" if ns.location else "cdrom" if ns.cdrom else "pxe" if ns.pxe
              else "import" if ns.import_install else "boot" if boot else None)
    msg = ""
    if memory is None:
        msg += "\n--memory amount in MiB is required"
    if not disk_specs:
        msg += "\n--disk storage must be specified (override with --disk none)"
    if method is None:
        msg += f"\nAn install method must be specified\n({INSTALL_METHODS})"
    if msg:
        raise VirtInstallError(msg)
    assert memory is not None and method is not None
    if ns.extra_args and method != "location":
        raise VirtInstallError("Kernel arguments are only supported with location or kernel installs.")
    if not hvm and method in ("cdrom", "pxe"):
        raise VirtInstallError(f"--{method} needs an HVM guest (--hvm): a Xen PV guest boots no "
                               "BIOS; install it with --location, or boot a disk with --import")
    location, lkernel, linitrd = None, None, None
    if ns.location:
        location, _, rest = ns.location.partition(",")
        lo = _suboptions(rest, "--location", ("kernel", "initrd"), "kernel") if rest else {}
        lkernel, linitrd = lo.get("kernel"), lo.get("initrd")
        if bool(lkernel) != bool(linitrd):
            raise VirtInstallError("--location kernel= and initrd= must be given together")
    name = ns.name or _generated_name(ns.os_variant, facts)
    if facts.name_in_use(name):
        raise VirtInstallError(f"Guest name '{name}' is already in use.")
    disks, disk_warnings = _disks(disk_specs, name, hvm, ns.cdrom if method == "cdrom" else None,
                                  paths, facts)
    warnings += disk_warnings
    nics = _nics(net_specs, rand, facts)
    graphics = _graphics(graphics_specs, hvm)
    if graphics is not None and graphics.keymap:
        warnings.append(f"keymap={graphics.keymap}: pyxen's VNC uses QEMU's default keymap")
    if graphics is not None and not hvm:
        warnings.append("pyxen's PV guests have no framebuffer: no VNC console for this guest "
                        "(its installer is on the text console, xl console)")
    if autoconsole is None:
        autoconsole = "graphical" if graphics is not None and hvm else "text"
    extra = " ".join(ns.extra_args or [])
    if method == "location" and "console=" not in extra:
        extra = (extra + " console=ttyS0").strip()
    uid = str(uuidlib.UUID(int=rand.getrandbits(128), version=4))
    return Plan(
        name=name, uuid=uid, memory=memory, maxmem=maxmem, vcpus=vcpus, maxvcpus=maxvcpus,
        cpuset=cpuset, hvm=hvm, method=method, disks=disks, nics=nics, graphics=graphics,
        autoconsole=autoconsole, wait=ns.wait, config_path=paths.domain_cfg(name),
        location=location, location_kernel=lkernel, location_initrd=linitrd, extra_args=extra,
        boot=boot, noreboot=ns.noreboot, dry_run=ns.dry_run, boot_dir=paths.boot_dir,
        download_tag=f"{rand.getrandbits(32):08x}", os_variant=ns.os_variant,
        warnings=tuple(warnings))


# ---- render -------------------------------------------------------------------------------------
def _q(value: str) -> str:
    """An xl.cfg string (libxlu reads '...' and "..." alike, without escapes)."""
    if "\n" in value or ("'" in value and '"' in value):
        raise VirtInstallError(f"cannot write {value!r} in xl.cfg: it holds a newline or both quotes")
    return f'"{value}"' if '"' not in value else f"'{value}'"


def _list(items: Iterable[str]) -> str:
    return "[ " + ", ".join(_q(i) for i in items) + " ]"


def render_cfg(plan: Plan, phase: str, kernel: str | None = None, initrd: str | None = None) -> str:
    """xl.cfg for ``phase``: "install" (the installer boots: PV kernel/ramdisk/extra from the
    tree, or HVM boot from the CD or network; on_reboot destroy) or "final" (the disk boots:
    pygrub for PV, boot="c" for HVM). A one-phase install (--import, --boot) is "final" only."""
    installing = phase == "install" and plan.two_phase
    lines = [f"# written by virt-install (pyxen) for {plan.name}",
             f"name = {_q(plan.name)}", f"uuid = {_q(plan.uuid)}"]
    if plan.hvm:
        lines.append('type = "hvm"')
    lines.append(f"memory = {plan.memory}")
    if plan.maxmem is not None:
        lines.append(f"maxmem = {plan.maxmem}")
    lines.append(f"vcpus = {plan.vcpus}")
    if plan.maxvcpus is not None:
        lines.append(f"maxvcpus = {plan.maxvcpus}")
    if plan.cpuset:
        lines.append(f"cpus = {_q(plan.cpuset)}")
    if not plan.hvm:
        if installing:
            lines += [f"kernel = {_q(kernel or '')}", f"ramdisk = {_q(initrd or '')}"]
            if plan.extra_args:
                lines.append(f"extra = {_q(plan.extra_args)}")
        else:
            lines.append('bootloader = "pygrub"')
    else:
        if installing:
            boot = {"cdrom": "d", "pxe": "n"}.get(plan.method, "c")
        else:
            boot = plan.boot or "c"
        lines.append(f"boot = {_q(boot)}")
    lines.append(f"disk = {_list(d.xl_spec() for d in plan.disks)}")
    if plan.nics:
        lines.append(f"vif = {_list(n.xl_spec() for n in plan.nics)}")
    g = plan.graphics
    if plan.hvm:
        if g is None:
            lines.append("vnc = 0")
        else:
            lines += ["vnc = 1", f"vnclisten = {_q(g.listen)}"]
            if g.display is not None:
                lines += [f"vncdisplay = {g.display}", "vncunused = 0"]
            else:
                lines.append("vncunused = 1")
            if g.password:
                lines.append(f"vncpasswd = {_q(g.password)}")
    elif g is not None:
        vfb = f"vnc=1,vnclisten={g.listen}"
        vfb += f",vncdisplay={g.display},vncunused=0" if g.display is not None else ",vncunused=1"
        vfb += f",vncpasswd={g.password}" if g.password else ""
        lines.append(f"vfb = {_list([vfb])}")
    lines += ['on_poweroff = "destroy"',
              f'on_reboot = {_q("destroy" if installing else "restart")}',
              'on_crash = "destroy"']
    return "\n".join(lines) + "\n"


def parse_cfg(text: str, source: str) -> DomainConfig:
    """The rendered text read back by pyxen's xl.cfg parser, as ``xl create`` would read it."""
    return from_settings(parse(text, source), source)


# ---- run ----------------------------------------------------------------------------------------
def live_facts(paths: Paths, live_names: Callable[[], set[str]]) -> HostFacts:
    """The host as it is now: a name is in use by a live domain or by a config in the config
    folder (virt-install's defined domains); bridges from /sys/class/net; VGs from lvm2."""
    names = live_names()
    vgs: list[str] | None = None

    def vg_exists(vg: str) -> bool:
        nonlocal vgs
        if vgs is None:
            try:
                vgs = lvm.volume_groups()
            except lvm.LvmError:
                vgs = []
        return vg in vgs

    def path_exists(path: str) -> bool:
        """A file or node; an LV lvm2 knows counts even before its node is made (activated)."""
        if os.path.exists(path):
            return True
        lv = lvm.parse_lv_path(path)
        if lv is None or not vg_exists(lv[0]):
            return False
        try:
            return any(v.name == lv[1] for v in lvm.lvs(lv[0]))
        except lvm.LvmError:
            return False

    return HostFacts(
        name_in_use=lambda n: n in names or paths.domain_cfg(n).exists(),
        bridge_exists=lambda br: os.path.isdir(f"/sys/class/net/{br}/bridge"),
        path_exists=path_exists,
        volume_group_exists=vg_exists)


def _out(text: str) -> None:
    print(text, flush=True)


def _err(level: str, text: str) -> None:
    print(f"{level:<8} {text}", file=sys.stderr, flush=True)


class _Undo:
    """What run() made, removed again if it fails (virt-install's cleanup_created_disks, and
    the downloaded kernel and the config too: a failed virt-install leaves nothing)."""

    def __init__(self) -> None:
        self.files: list[Path] = []
        self.lvs: list[tuple[str, str]] = []

    def __call__(self) -> None:
        for f in reversed(self.files):
            try:
                f.unlink()
            except OSError:
                pass
        for vg, lv in self.lvs:
            try:
                lvm.lvremove(vg, lv)
            except lvm.LvmError as err:
                _err("WARNING", f"could not remove {vg}/{lv}: {err}")


def _make_disk(d: Disk, undo: _Undo) -> None:
    """Allocate one disk: an LV through pyxen.storage.lvm, a raw file (sparse, or written out
    with fallocate for sparse=no), or a qcow2 file with qemu-img."""
    assert d.path is not None and d.size_gib is not None
    size = int(d.size_gib * (1 << 30))
    _out(f"Allocating '{os.path.basename(d.path)}'")
    if d.lv is not None:
        vg, lv = d.lv
        try:
            lvm.lvcreate(vg, lv, size)
        except lvm.LvmError as err:
            raise VirtInstallError(f"Couldn't create storage volume '{lv}': '{err}'") from err
        undo.lvs.append(d.lv)
        return
    path = Path(d.path)
    path.parent.mkdir(parents=True, exist_ok=True)  # pyxen's image folder for --disk size=N
    if d.format == "qcow2":
        undo.files.append(path)
        try:
            done = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), str(size)],
                                  capture_output=True, text=True, timeout=QEMU_IMG_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise VirtInstallError(f"Couldn't create storage volume '{path}': qemu-img: {err}") from err
        if done.returncode != 0:
            raise VirtInstallError(f"Couldn't create storage volume '{path}': {done.stderr.strip()}")
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as err:
        raise VirtInstallError(f"Couldn't create storage volume '{path}': {err.strerror}") from err
    undo.files.append(path)
    try:
        if d.sparse:
            os.ftruncate(fd, size)
        else:
            os.posix_fallocate(fd, 0, size)
    except OSError as err:
        raise VirtInstallError(f"Couldn't create storage volume '{path}': {err.strerror}") from err
    finally:
        os.close(fd)


def _activate_existing(d: Disk) -> None:
    """A /dev/<vg>/<lv> that exists in lvm2's metadata but has no device node yet."""
    if d.lv is not None and not d.create and d.path and not os.path.exists(d.path):
        try:
            lvm.activate(*d.lv)
        except lvm.LvmError as err:
            raise VirtInstallError(str(err)) from err


def _write_cfg(plan: Plan, text: str, undo: _Undo) -> None:
    path = plan.config_path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise VirtInstallError(f"Guest name '{plan.name}' is already in use.") from None
    undo.files.append(path)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _start(paths: Paths, cfg: DomainConfig) -> int:
    """Build and start the domain as ``xl create`` does (xl.conf's vif defaults and lock)."""
    from .xl import xlconf
    from .xl.common import ctrl, interrupts_on_termination
    conf = xlconf.current()
    cfg = replace(cfg, vifs=tuple(conf.vif_defaults(v) for v in cfg.vifs))
    libxl.check_files(cfg)
    with ctrl() as xc:
        with interrupts_on_termination(), libxl.create_lock(conf.lock_path(paths)):
            return libxl.create(xc, paths, cfg, run_scripts=conf.runs_hotplug_scripts)


def _alive(domid: int) -> bool:
    """Whether the domain still runs (not gone, not shut down)."""
    from .xl.common import ctrl
    with ctrl() as xc:
        info = libxl.find(xc, "domid", domid)
    return info is not None and not info.get("shutdown")


def _console(paths: Paths, domid: int, hvm: bool) -> None:
    """The guest's primary console, as ``xl console`` picks it (serial for HVM, PV otherwise)."""
    from .console import attach
    attach(paths, domid, ctype="serial" if hvm else "pv")


def _wait_for_domain(plan: Plan, domid: int, waited_console: bool) -> str:
    """virtinstall.py's _wait_for_domain: "ended" when the installer domain has ended;
    "running" when it runs on and virt-install goes on (a one-phase install); "leave" when
    virt-install leaves a two-phase install running and exits (--noautoconsole, no --wait)."""
    if not _alive(domid):
        _out("Domain has shutdown. Continuing.")
        return "ended"
    if waited_console:
        time.sleep(2)  # the console closed as the domain was going: let it go
        if not _alive(domid):
            _out("Domain has shutdown. Continuing.")
            return "ended"
    msg = "\nDomain is still running. Installation may be in progress."
    if plan.wait is None:
        if not plan.two_phase:
            return "running"
        _out(msg + "\nYou can reconnect to the console to complete the installation process.")
        return "leave"
    _out(msg)
    _out("Waiting for the installation to complete." if plan.wait < 0 else
         f"Waiting {plan.wait} minute{'s' if plan.wait != 1 else ''} for the installation to complete.")
    deadline = None if plan.wait < 0 else time.monotonic() + plan.wait * 60
    while _alive(domid):
        if deadline is not None and time.monotonic() >= deadline:
            _out("Installation has exceeded specified time limit. Exiting application.")
            raise SystemExit(1)
        time.sleep(POLL)
    _out("Domain has shutdown. Continuing.")
    return "ended"


def run(plan: Plan, paths: Paths) -> int:
    """Do the plan: fetch, allocate, write the config, start, follow the install."""
    for w in plan.warnings:
        _err("WARNING", w)
    undo = _Undo()
    kernel = initrd = None
    media = None
    if plan.method == "location":
        assert plan.location is not None
        try:
            tree = installtree.open_tree(plan.location)
            media = installtree.detect(tree, plan.location_kernel, plan.location_initrd)
        except installtree.TreeError as err:
            raise VirtInstallError(str(err)) from err
        kernel, initrd = str(plan.download(media.kernel)), str(plan.download(media.initrd))
    install_text = render_cfg(plan, "install", kernel, initrd)
    final_text = render_cfg(plan, "final")
    try:
        cfg = parse_cfg(install_text, str(plan.config_path))
    except (ConfigError, ConfigSyntaxError) as err:
        raise VirtInstallError(str(err)) from err
    if plan.dry_run:
        _out("Dry run completed successfully")
        return 0
    for w in cfg.warnings:
        _err("WARNING", w)
    _out("\nStarting install...")
    try:
        if media is not None:
            assert kernel is not None and initrd is not None
            plan.boot_dir.mkdir(parents=True, exist_ok=True)
            for rel, dest in ((media.kernel, kernel), (media.initrd, initrd)):
                _out(f"Retrieving '{Path(rel).name}'")
                undo.files.append(Path(dest))
                try:
                    tree.fetch(rel, Path(dest))
                except installtree.TreeError as err:
                    raise VirtInstallError(str(err)) from err
        for d in plan.disks:
            if d.create:
                _make_disk(d, undo)
            else:
                _activate_existing(d)
        _write_cfg(plan, final_text, undo)
        _out("Creating domain...")
        domid = _start(paths, cfg)
    except (libxl.DomainBuildError, HypercallError, XenstoreError, OSError) as err:
        undo()
        raise VirtInstallError(f"{err}\nDomain installation does not appear to have been "
                               "successful.") from err
    except BaseException:
        undo()
        raise
    return _follow(plan, paths, domid, [Path(p) for p in (kernel, initrd) if p])


def _follow(plan: Plan, paths: Paths, domid: int, downloads: list[Path]) -> int:
    """After the start: the console (or VNC's address), then virt-install's second phase."""
    if plan.graphics is not None and plan.hvm:
        _out(f"VNC console of {plan.name} (domid {domid}): {plan.graphics.where()}")
    waited = False
    wait_plan = plan
    if plan.autoconsole == "text":
        _console(paths, domid, plan.hvm)
        waited = True
    elif plan.autoconsole == "graphical" and plan.wait is None:
        _err("WARNING", "No console to launch for the guest, defaulting to --wait -1")
        wait_plan = replace(plan, wait=-1)
    state = _wait_for_domain(wait_plan, domid, waited)
    if state == "leave":
        return 0
    for f in downloads:  # the installer's kernel is not booted again
        f.unlink(missing_ok=True)
    _out("Domain creation completed.")
    if state == "running":
        return 0
    if plan.noreboot or not plan.two_phase:
        _out(f"You can restart your domain by running:\n  xl create {plan.config_path}")
        return 0
    _out("Restarting guest.")
    from ..toolstack.config import load
    try:
        cfg = load(plan.config_path)
        domid = _start(paths, cfg)
    except (ConfigError, ConfigSyntaxError, libxl.DomainBuildError, HypercallError,
            XenstoreError, OSError) as err:
        raise VirtInstallError(f"{err}\nThe installed domain did not start; its config is "
                               f"{plan.config_path}") from err
    if plan.autoconsole == "text":
        _console(paths, domid, plan.hvm)
    return 0


def _live_names() -> set[str]:
    from .xl.common import ctrl
    with ctrl() as xc:
        return {str(d["name"]) for d in libxl.list_domains(xc)}


def main(argv: list[str] | None = None) -> int:
    """The ``virt-install`` command: 0 on success; 1 with ``ERROR    <message>`` otherwise."""
    from ..hypervisor.client import HypervisorUnavailable
    from .xl.common import XenstoreUnavailable
    args = sys.argv[1:] if argv is None else argv
    paths = Paths.from_env()
    try:
        facts = live_facts(paths, _live_names)
        plan = make_plan(args, paths, random.SystemRandom(), facts)
        return run(plan, paths)
    except VirtInstallError as err:
        _err("ERROR", str(err))
        return 1
    except (HypervisorUnavailable, XenstoreUnavailable) as err:
        _err("ERROR", f"Failed to connect to the toolstack: {err}")
        return 1
    except KeyboardInterrupt:
        _err("ERROR", "Installation aborted at user request")
        return 1


if __name__ == "__main__":
    sys.exit(main())
