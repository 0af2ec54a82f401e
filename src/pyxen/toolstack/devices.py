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
from typing import Any

from ..libxlu.vif import Rate, RateError, parse_rate

DISK_FORMATS = ("raw", "qcow", "qcow2", "vhd", "qed", "empty")
BACKEND_TYPES = ("phy", "qdisk", "tap", "standalone")
IGNORED_PREFIXES = ("phy", "file", "tap", "tap2", "aio", "ioemu", "tapdisk")
FORMAT_PREFIXES = ("raw", "qcow", "qcow2", "vhd")
SCRIPT_PREFIXES = ("iscsi", "nbd", "enbd", "drbd")
DEFAULT_BRIDGE = "xenbr0"
#: libxl's script directory and default vif script (libxl__device_nic_setdefault).
XEN_SCRIPT_DIR = "/etc/xen/scripts"
DEFAULT_VIF_SCRIPT = "vif-bridge"
XEN_OUI = (0x00, 0x16, 0x3E)
VIF_KEYS = ("mac", "bridge", "ip", "script", "model", "type", "vifname", "rate", "backend",
            "gatewaydev", "netdev", "mtu", "devid", "vlan", "trusted", "untrusted", "accel")

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


def _split_disk_items(spec: str) -> list[str]:
    items: list[str] = []
    rest = spec
    while rest:
        rest = rest.lstrip(" \t")
        if rest.startswith("target="):
            items.append(rest)  # target= eats the rest, commas included
            break
        item, sep, rest = rest.partition(",")
        items.append(item.strip())
        if not sep:
            break
    return items


def parse_disk(spec: str) -> DiskSpec:
    """One ``disk=[...]`` entry, in xl's grammar (positional target, format, vdev, access).

    :raise DeviceSpecError: with xl's message (unknown parameter, no vdev, no target, ...).
    """
    values: dict[str, Any] = {}
    positional = ["target", "format", "vdev", "access"]
    legacy = False
    pos = 0

    def setv(key: str, value: Any) -> None:
        if key in values:
            raise DeviceSpecError(f"{key} specified twice in disk spec '{spec}'")
        values[key] = value

    for item in _split_disk_items(spec):
        if "=" in item:
            key, _, val = item.partition("=")
            key = key.strip()
            if key in ("target", "format", "vdev", "access", "backendtype", "devtype", "script",
                       "backend", "specification", "grant_usage"):
                setv(key, val.strip() if key != "target" else val)
            else:
                raise DeviceSpecError(f"unknown parameter '{key}' in disk spec '{spec}'")
            continue
        if item in ("cdrom", "discard", "no-discard", "direct-io-safe", "trusted", "untrusted"):
            setv(item, True)
            continue
        if pos >= len(positional):
            raise DeviceSpecError(f"too many positional parameters in disk spec '{spec}'")
        name = positional[pos]
        if name == "target" and item:
            prefixes = item.split(":")
            while len(prefixes) > 1 and prefixes[0] in IGNORED_PREFIXES + FORMAT_PREFIXES + SCRIPT_PREFIXES:
                p = prefixes.pop(0)
                legacy = True
                if p in FORMAT_PREFIXES:
                    setv("format", p)
                elif p in SCRIPT_PREFIXES:
                    setv("script", f"block-{p}")
            item = ":".join(prefixes)
        if legacy and name == "target":
            positional = ["target", "vdev", "access"]
        if name == "vdev" and item.endswith(":cdrom"):
            item = item[: -len(":cdrom")]
            setv("cdrom", True)
        if item:
            setv(name, item)
        pos += 1

    vdev = values.get("vdev")
    if not vdev:
        raise DeviceSpecError(f"no vdev specified in disk spec '{spec}'")
    devid = vdev_to_devid(vdev)
    if devid < 0:
        raise DeviceSpecError(f"Invalid virtual disk identifier {vdev}")
    fmt = values.get("format", "raw") or "raw"
    if fmt not in DISK_FORMATS:
        raise DeviceSpecError(f"unknown format '{fmt}' in disk spec '{spec}'")
    access = values.get("access", "rw")
    if access not in ("r", "ro", "w", "rw"):
        raise DeviceSpecError(f"invalid access '{access}' in disk spec '{spec}'")
    cdrom = bool(values.get("cdrom")) or values.get("devtype") == "cdrom"
    readonly = access in ("r", "ro") or cdrom
    target = values.get("target")
    if target is not None and not target.startswith("/"):
        target = "/dev/" + target
    if not target:
        if not cdrom:
            raise DeviceSpecError(f"no target specified (and device not removable) in disk spec '{spec}'")
        fmt = "empty"
    bt = values.get("backendtype")
    if bt is not None and bt not in BACKEND_TYPES:
        raise DeviceSpecError(f"unknown backendtype '{bt}' in disk spec '{spec}'")
    if bt is None:
        bt = "phy" if fmt == "raw" and not values.get("script") else "qdisk"
    if bt == "phy" and fmt != "raw":
        raise DeviceSpecError(f"backendtype=phy needs format raw, not {fmt}, in disk spec '{spec}'")
    if bt in ("tap", "standalone"):
        bt = "qdisk"  # no tapdisk in pyxen: QEMU's block layer serves it, as qdisk
    return DiskSpec(target=target, vdev=vdev, devid=devid, format=fmt, readonly=readonly,
                    devtype="cdrom" if cdrom else "disk", backendtype=bt,
                    discard=not values.get("no-discard"), script=values.get("script"),
                    direct_io_safe=bool(values.get("direct-io-safe")), spec=spec)


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
    """xl's reading of ``mac=`` (parse_nic_config): six times strtoul(.., 16) each skipping the
    one character after the number, so any separator works and trailing text is ignored.
    Returns the bytes read (the rest 0) and whether all six were valid."""
    out = [0] * 6
    pos = 0
    for i in range(6):
        m = re.match(r"[ \t\n\v\f\r]*([+-]?)(?:0[xX](?=[0-9a-fA-F]))?([0-9a-fA-F]+)", text[pos:])
        if m is None:
            return out, False
        val = int(m.group(2), 16)
        if m.group(1) == "-":
            val = -val & 0xFFFFFFFFFFFFFFFF
        if val > 255:
            return out, False
        out[i] = val
        pos += m.end() + 1
        if pos > len(text) and i < 5:
            return out, False
    return out, True


def parse_vif(spec: str, devid: int, strict: bool = False) -> NicSpec:
    """One ``vif=[...]`` entry: its comma-separated items through ``parse_nic_items``."""
    return parse_nic_items([item.lstrip(" ") for item in spec.split(",")], devid, strict, spec)


def parse_nic_items(items: list[str], devid: int, strict: bool = False, spec: str = "") -> NicSpec:
    """A vif's ``key=value`` items (a config's vif entry, or network-attach's arguments, one
    item each), as xl's parse_nic_config reads them; ``devid`` applies unless one says devid=.

    xl reports a bad ``type``, a bad ``mac`` or an unknown key and, in ``xl create``, builds the
    domain anyway (its caller ignores the return): with ``strict=False`` these land in
    ``warnings`` and parsing goes on; network-attach (``strict=True``) stops at the first.

    :raise DeviceSpecError: a bad ``rate`` (libxlu's message; xl exits), a bad number, a COLO
        key (forwarddev, colo_*: pyxen has no COLO), an unknown model, and in strict mode the
        problems above.
    """
    vals: dict[str, str] = {}
    warnings: list[str] = []
    mac_bytes: list[int] | None = None

    def problem(message: str) -> None:
        if strict:
            raise DeviceSpecError(message)
        warnings.append(message)

    for item in items:
        if not item:
            continue
        key, eq, val = item.partition("=")
        if not eq:
            if item in ("trusted", "untrusted"):  # the two flags of the grammar
                vals["trusted"] = "1" if item == "trusted" else "0"
            else:
                problem(f"unrecognized argument `{item}'")
            continue
        if key == "type" and val not in ("vif", "ioemu"):
            problem("Invalid parameter `type'.")
            continue
        if key == "mac":
            got, ok = parse_mac(val)
            mac_bytes = got
            if not ok:
                problem("Invalid parameter `mac'.")
            continue
        if key == "netdev":
            warnings.append("the netdev parameter is deprecated, please use gatewaydev instead")
            key = "gatewaydev"
        elif key == "accel":
            warnings.append("the accel parameter for vifs is currently not supported")
            continue
        elif key == "forwarddev" or key.startswith(COLO_PREFIX):
            raise DeviceSpecError(f"vif key `{key}' is for COLO fault tolerance, which pyxen does "
                                  "not implement")
        elif key not in VIF_KEYS or key in ("trusted", "untrusted"):
            problem(f"unrecognized argument `{item}'")
            continue
        elif key == "vlan":
            raise DeviceSpecError("vif vlan= is not supported: pyxen's netback does no VLAN "
                                  "filtering on the bridge")
        elif key == "backend" and val not in ("", "0", "Domain-0"):
            raise DeviceSpecError(f"vif backend={val}: pyxen's backends all run in Domain-0 "
                                  "(no driver domains)")
        vals[key] = val
    mac = (":".join(f"{b:02x}" for b in mac_bytes) if mac_bytes and any(mac_bytes)
           else random_mac())
    rate = None
    if "rate" in vals:
        try:
            rate = parse_rate(vals["rate"])
        except RateError as err:
            raise SourcedSpecError(str(err)) from None
    try:
        mtu = int(vals.get("mtu") or "1500", 10)
        devid = int(vals["devid"], 10) if "devid" in vals else devid
    except ValueError as err:
        raise DeviceSpecError(f"Invalid parameter: {err}") from None
    if not 68 <= mtu <= 65535:
        raise DeviceSpecError(f"invalid mtu {mtu} (68 to 65535)")
    model = vals.get("model") or "rtl8139"
    nictype = "vif_ioemu" if vals.get("type") == "ioemu" else "vif"
    if nictype == "vif_ioemu" and model not in NIC_MODELS:
        raise DeviceSpecError(f"vif model `{model}' is not one pyxen emulates ({', '.join(NIC_MODELS)})")
    return NicSpec(devid=devid, mac=mac, bridge=vals.get("bridge") or DEFAULT_BRIDGE,
                   ip=vals.get("ip") or None, vifname=vals.get("vifname") or None, mtu=mtu,
                   script=vals.get("script") or None, rate=rate, nictype=nictype,
                   model=model, gatewaydev=vals.get("gatewaydev") or None, spec=spec,
                   trusted=vals.get("trusted", "1") == "1",
                   warnings=tuple(warnings))


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


def vif_warnings(vifs: tuple[str, ...] | list[str]) -> list[str]:
    """What xl create prints about a config's vifs and builds past (unknown keys, bad MACs,
    deprecated keys), in order. :raise DeviceSpecError: what stops xl (a bad rate, ...)."""
    return [w for i, v in enumerate(vifs) for w in parse_vif(v, i).warnings]


# ---- xenstore nodes (libxl__device_generic_add) ----------------------------------------------
Device = DiskSpec | NicSpec
BACKEND_DOMID = 0


def backend_path(kind: str, domid: int, devid: int) -> str:
    return f"/local/domain/{BACKEND_DOMID}/backend/{kind}/{domid}/{devid}"


def frontend_path(kind: str, domid: int, devid: int) -> str:
    return f"/local/domain/{domid}/device/{kind}/{devid}"


def backend_nodes(dev: Device, domid: int) -> dict[str, str]:
    fe = frontend_path(dev.kind, domid, dev.devid)
    common = {"frontend": fe, "frontend-id": str(domid), "online": "1", "state": STATE_INITIALISING}
    if isinstance(dev, DiskSpec):
        params = dev.target or ""
        if dev.backendtype == "qdisk":
            params = f"{'aio' if dev.format == 'raw' else dev.format}:{params}"
        nodes = {"params": params, "script": "/etc/xen/scripts/block", "removable": str(int(dev.devtype == "cdrom")),
                 "bootable": "1", "dev": dev.vdev, "type": dev.backendtype, "mode": dev.mode,
                 "device-type": dev.devtype, "discard-enable": str(int(dev.discard)),
                 "specification": "xen"}
        if dev.direct_io_safe:
            nodes["direct-io-safe"] = "1"
    else:
        script = dev.script or DEFAULT_VIF_SCRIPT
        nodes = {"script": script if script.startswith("/") else f"{XEN_SCRIPT_DIR}/{script}", "mac": dev.mac, "bridge": dev.bridge,
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
