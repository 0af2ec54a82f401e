"""Disks and vifs: xl's spec strings into frozen specs, their xenstore nodes, and the QEMU
devices that carry them (libxl_device_disk / libxl_device_nic, libxl__device_generic_add).

Specs: Xen's docs/man/xl-disk-configuration.5.pod and xl-network-configuration.5.pod,
docs/misc/vbd-interface.txt (vdev -> devid), digested in docs/xl.md 2.3, 2.4, 3.2 and 3.6.
Pure functions, no I/O: ``parse_disk``/``parse_vif`` raise DeviceSpecError with xl's wording;
``backend_nodes``/``frontend_nodes`` give the keys libxl writes. What the domain's device model
does with a device is the hypervisor's (hypervisor/qemu.py), asked for by hotplug.py.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from ..paths import DEFAULT_BLOCK_SCRIPT, XEN_SCRIPT_DIR  # (not from blkback: xl imports no backend)
from ..libxlu import disk as libxlu_disk
from ..libxlu import vif as libxlu_vif
from ..libxlu.vif import Rate

DEFAULT_BRIDGE = "xenbr0"
#: libxl's default vif script (libxl__device_nic_setdefault), in XEN_SCRIPT_DIR.
DEFAULT_VIF_SCRIPT = "vif-bridge"
XEN_OUI = (0x00, 0x16, 0x3E)

#: XenbusState values written by the toolstack (the backend moves them on).
STATE_INITIALISING = "1"


class DeviceSpecError(ValueError):
    """A disk or vif spec xl would refuse; the message is xl's."""


class SourcedSpecError(DeviceSpecError):
    """A spec error libxlu reports after the config's source (the file name, or "command line"
    for network-attach): ``<source>: config parsing error in vif: ...``."""


# ---- vdev -> devid (docs/misc/vbd-interface.txt) ------------------------------------------
def _letters_to_index(letters: str) -> int:
    """Bijective base 26: a=0 .. z=25, aa=26, ab=27 ..."""
    n = 0
    for ch in letters:
        n = n * 26 + (ord(ch) - ord("a") + 1)
    return n - 1


_VDEV_RE = re.compile(r"(xvd|hd|sd)([a-z]+)(0|[1-9][0-9]*)?")
_DNPM_RE = re.compile(r"d(0|[1-9][0-9]*)(?:p(0|[1-9][0-9]*))?")


def vdev_to_devid(vdev: str) -> int:
    """The vbd's devid (its xenstore name), or -1 when the name is invalid (as libxl returns)."""
    if re.fullmatch(r"0x[0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*", vdev):
        return int(vdev, 0) if not (vdev.startswith("0") and len(vdev) > 1 and not vdev.startswith("0x")) \
            else int(vdev, 8)
    m = _DNPM_RE.fullmatch(vdev)
    if m:
        kind, disk, part = "xvd", int(m.group(1)), int(m.group(2) or 0)
    else:
        m = _VDEV_RE.fullmatch(vdev)
        if not m:
            return -1
        kind, disk, part = m.group(1), _letters_to_index(m.group(2)), int(m.group(3) or 0)
    if kind == "xvd":
        if disk < 16 and part < 16:
            return (202 << 8) | (disk << 4) | part
        if disk < (1 << 20) and part < 256:
            return (1 << 28) | (disk << 8) | part
        return -1
    if kind == "hd":
        if disk > 3 or part > 63:
            return -1
        return ((3 if disk < 2 else 22) << 8) | ((disk & 1) << 6) | part
    if disk > 15 or part > 15:
        return -1
    return (8 << 8) | (disk << 4) | part


# ---- disks ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DiskSpec:
    """libxl_device_disk, the parts pyxen uses."""

    target: str | None
    vdev: str
    devid: int
    format: str = "raw"
    readonly: bool = False
    devtype: str = "disk"
    backendtype: str = "phy"
    discard: bool = True
    script: str | None = None
    direct_io_safe: bool = False
    spec: str = ""

    @property
    def kind(self) -> str:
        """The xenstore device kind: phy -> vbd, qdisk -> qdisk (xl.md 2.3)."""
        return "qdisk" if self.backendtype == "qdisk" else "vbd"

    @property
    def mode(self) -> str:
        return "r" if self.readonly else "w"

    @property
    def served_by_pyxen(self) -> bool:
        """True when the Python blkback serves it (raw phy); False for QEMU's qdisk."""
        return self.backendtype == "phy"


def parse_disk(spec: str, source: str = "command line") -> DiskSpec:
    """One ``disk=[...]`` entry: libxlu's parse (libxlu/disk.py), then pyxen's choices.

    The grammar, its defaults and its messages are Xen's; what is pyxen's: a target that is
    not a path is a /dev name, the backend is phy for a raw image (with a script= too, as libxl
    assumes phy for it; qdisk with a script is refused) and qdisk
    otherwise (tap and standalone are served by QEMU as qdisk), and phy serves raw only.
    :raise DeviceSpecError: libxlu's report lines, or pyxen's one line."""
    try:
        d = libxlu_disk.parse_disk(spec, source)
    except libxlu_disk.DiskSyntaxError as err:
        raise DeviceSpecError("\n".join(err.messages)) from None
    assert d.vdev is not None  # libxlu refuses a spec without one
    devid = vdev_to_devid(d.vdev)
    if devid < 0:
        raise DeviceSpecError(f"Invalid virtual disk identifier {d.vdev}")
    fmt, target = d.format, d.pdev_path or None
    if target is not None and not target.startswith("/"):
        target = "/dev/" + target
    if not target and not d.is_cdrom:
        raise DeviceSpecError(f"no target specified (and device not removable) in disk spec '{spec}'")
    bt = d.backend
    if bt is None:
        # libxl_device.c disk_try_backend: "uses script=... assuming phy backend".
        bt = "phy" if fmt == "raw" else "qdisk"
    if d.script and bt != "phy":
        raise DeviceSpecError(f"Disk vdev={d.vdev}, backend {bt} not compatible with script=...")
    if bt == "phy" and fmt != "raw":
        raise DeviceSpecError(f"backendtype=phy needs format raw, not {fmt}, in disk spec '{spec}'")
    if bt in ("tap", "standalone"):
        bt = "qdisk"  # no tapdisk in pyxen: QEMU's block layer serves it, as qdisk
    return DiskSpec(target=target, vdev=d.vdev, devid=devid, format=fmt, readonly=not d.readwrite,
                    devtype="cdrom" if d.is_cdrom else "disk", backendtype=bt,
                    discard=d.discard_enable is not False, script=d.script,
                    direct_io_safe=d.direct_io_safe, spec=spec)


# ---- vifs -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class NicSpec:
    """libxl_device_nic, the parts pyxen uses. ``nictype`` is libxl's enum string: "vif" (a
    PV NIC: pyxen's netback over vhost-user) or "vif_ioemu" (an emulated NIC in QEMU, model
    ``model``, HVM only). ``rate`` is libxl's (bytes per interval, interval usecs)."""

    devid: int
    mac: str
    bridge: str = DEFAULT_BRIDGE
    ip: str | None = None
    vifname: str | None = None
    mtu: int = 1500
    #: ``script=`` as given; None: Xen's default vif-bridge, which netback does itself.
    script: str | None = None
    rate: Rate | None = None
    nictype: str = "vif"
    model: str = "rtl8139"
    gatewaydev: str | None = None
    spec: str = ""
    #: The frontend's ``trusted`` node (the ``trusted``/``untrusted`` flags; default trusted).
    trusted: bool = True
    #: What xl reported while parsing and went on past (create builds the domain anyway).
    warnings: tuple[str, ...] = ()

    kind = "vif"

    @property
    def emulated(self) -> bool:
        return self.nictype == "vif_ioemu"


#: Emulated NIC models pyxen gives an HVM guest (QEMU device names, as libxl passes model=).
NIC_MODELS = ("rtl8139", "e1000")  # the hypervisor's EMULATED_NIC_MODELS
#: Keys of the COLO fault-tolerance set (libxl_device_nic's colo_*): pyxen has no COLO.
COLO_PREFIX = "colo_"


def random_mac(rng: random.Random | None = None) -> str:
    """Xen's default: 00:16:3e plus 3 random bytes, the 4th byte & 0x7f."""
    r = rng or random.SystemRandom()
    tail = [r.randrange(256) & 0x7F, r.randrange(256), r.randrange(256)]
    return ":".join(f"{b:02x}" for b in (*XEN_OUI, *tail))


def parse_mac(text: str) -> tuple[list[int], bool]:
    """xl's reading of ``mac=`` (libxlu/vif.py): the six bytes read and whether all were good."""
    return libxlu_vif.parse_mac(text)


def parse_vif(spec: str, devid: int, strict: bool = False, source: str = "command line") -> NicSpec:
    """One ``vif=[...]`` entry, read by libxlu/vif.py exactly as xl reads it (``devid`` is its
    index unless it says devid=), then pyxen's choices for what the keys mean.

    xl reports a bad ``type``, a bad ``mac`` or an unknown key and, in ``xl create``, builds the
    domain anyway (its caller ignores the return): with ``strict=False`` these land in
    ``warnings``; network-attach (``strict=True``) stops at the first.

    :raise SourcedSpecError: where xl exits (a bad rate=, devid=, mtu=), libxlu's lines.
    :raise DeviceSpecError: what pyxen cannot honour: the COLO keys (forwarddev, colo_*), vlan=,
        a backend other than Domain-0, an MTU out of range, an emulated model it has not, and
        in strict mode the problems above.
    """
    try:
        parsed = libxlu_vif.parse_vif(spec, devid, source)
    except libxlu_vif.VifSyntaxError as err:
        raise SourcedSpecError("\n".join(err.messages)) from None
    v = parsed.spec
    problems = [m for m in parsed.messages if m not in libxlu_vif.NOTICES]
    if strict and problems:
        raise DeviceSpecError(problems[0])
    if v.coloft_forwarddev is not None or v.colo:
        key = "forwarddev" if v.coloft_forwarddev is not None else v.colo[0][0]
        raise DeviceSpecError(f"vif key `{key}' is for COLO fault tolerance, which pyxen does "
                              "not implement")
    if v.vlan is not None:
        raise DeviceSpecError("vif vlan= is not supported: pyxen's netback does no VLAN "
                              "filtering on the bridge")
    if v.backend_domname not in (None, "", "0", "Domain-0"):
        raise DeviceSpecError(f"vif backend={v.backend_domname}: pyxen's backends all run in "
                              "Domain-0 (no driver domains)")
    mtu = v.mtu or 1500
    if not 68 <= mtu <= 65535:
        raise DeviceSpecError(f"invalid mtu {mtu} (68 to 65535)")
    model = v.model or "rtl8139"
    nictype = v.nictype or "vif"
    if nictype == "vif_ioemu" and model not in NIC_MODELS:
        raise DeviceSpecError(f"vif model `{model}' is not one pyxen emulates ({', '.join(NIC_MODELS)})")
    rate = (Rate(v.rate_bytes_per_interval, v.rate_interval_usecs)
            if v.rate_interval_usecs else None)
    return NicSpec(devid=v.devid, mac=v.mac or random_mac(), bridge=v.bridge or DEFAULT_BRIDGE,
                   ip=v.ip or None, vifname=v.ifname or None, mtu=mtu, script=v.script or None,
                   rate=rate, nictype=nictype, model=model, gatewaydev=v.gatewaydev or None,
                   spec=spec, trusted=v.trusted is not False, warnings=parsed.messages)


def check_nic_types(nics: list[NicSpec], domain_type: str) -> None:
    """libxl__device_nic_setdefault: an emulated NIC needs a device model that emulates one.

    :raise DeviceSpecError: type=ioemu on a PV or PVH guest (libxl's message).
    """
    if domain_type != "hvm" and any(n.emulated for n in nics):
        raise DeviceSpecError("trying to create PV or PVH guest with an emulated interface")


def parse_all(disks: tuple[str, ...] | list[str], vifs: tuple[str, ...] | list[str]) \
        -> tuple[list[DiskSpec], list[NicSpec]]:
    """Every device of a config, checked before anything is built (duplicate vdevs too)."""
    dspecs = [parse_disk(d) for d in disks]
    seen: dict[int, str] = {}
    for d in dspecs:
        if d.devid in seen:
            raise DeviceSpecError(f"vdev {d.vdev} is used twice (devid {d.devid}, also {seen[d.devid]})")
        seen[d.devid] = d.vdev
    nspecs = [parse_vif(v, i) for i, v in enumerate(vifs)]
    return dspecs, nspecs


# ---- xenstore nodes (libxl__device_generic_add) ----------------------------------------------
Device = DiskSpec | NicSpec
BACKEND_DOMID = 0


def backend_path(kind: str, domid: int, devid: int) -> str:
    return f"/local/domain/{BACKEND_DOMID}/backend/{kind}/{domid}/{devid}"


def frontend_path(kind: str, domid: int, devid: int) -> str:
    return f"/local/domain/{domid}/device/{kind}/{devid}"


def script_node(script: str | None, script_dir: str = XEN_SCRIPT_DIR) -> str:
    """The backend's ``script`` node: an absolute script as given, a relative one in
    ``script_dir`` (libxl__abs_path against /etc/xen/scripts; pyxen's is $PYXEN_ROOT/scripts);
    no script= is Xen's default ``block``, whose work pyxen's blkback does itself."""
    if not script:
        return DEFAULT_BLOCK_SCRIPT
    return script if script.startswith("/") else f"{script_dir.rstrip('/')}/{script}"


def backend_nodes(dev: Device, domid: int, script_dir: str = XEN_SCRIPT_DIR) -> dict[str, str]:
    fe = frontend_path(dev.kind, domid, dev.devid)
    common = {"frontend": fe, "frontend-id": str(domid), "online": "1", "state": STATE_INITIALISING}
    if isinstance(dev, DiskSpec):
        params = dev.target or ""
        if dev.backendtype == "qdisk":
            params = f"{'aio' if dev.format == 'raw' else dev.format}:{params}"
        nodes = {"params": params, "script": script_node(dev.script, script_dir), "removable": str(int(dev.devtype == "cdrom")),
                 "bootable": "1", "dev": dev.vdev, "type": dev.backendtype, "mode": dev.mode,
                 "device-type": dev.devtype, "discard-enable": str(int(dev.discard)),
                 "specification": "xen"}
        if dev.direct_io_safe:
            nodes["direct-io-safe"] = "1"
    else:
        script = script_node(dev.script, script_dir) if dev.script else f"{XEN_SCRIPT_DIR}/{DEFAULT_VIF_SCRIPT}"
        nodes = {"script": script, "mac": dev.mac, "bridge": dev.bridge,
                 "handle": str(dev.devid), "type": "vif", "hotplug-status": ""}
        if dev.vifname:
            nodes["vifname"] = dev.vifname
        if dev.ip:
            nodes["ip"] = dev.ip
        if dev.mtu != 1500:
            nodes["mtu"] = str(dev.mtu)
        if dev.rate is not None:
            nodes["rate"] = dev.rate.xenstore
        if dev.gatewaydev:
            nodes["gatewaydev"] = dev.gatewaydev
        nodes["type"] = dev.nictype
    return {**common, **nodes}


def frontend_nodes(dev: Device, domid: int) -> dict[str, str]:
    be = backend_path(dev.kind, domid, dev.devid)
    common = {"backend": be, "backend-id": str(BACKEND_DOMID), "state": STATE_INITIALISING}
    if isinstance(dev, DiskSpec):
        return {**common, "virtual-device": str(dev.devid), "device-type": dev.devtype,
                "trusted": "1", "protocol": "x86_64-abi"}
    return {**common, "handle": str(dev.devid), "mac": dev.mac, "mtu": str(dev.mtu),
            "trusted": "1" if dev.trusted else "0"}
