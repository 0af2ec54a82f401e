"""Typed hypercall arguments: ``domctl.createdomain``'s request, validated whole.

In Xen, XEN_DOMCTL_createdomain takes a struct (xen_domctl_createdomain) that the hypervisor
checks before it allocates anything. pyxen's request carries what Xen's createdomain and the
domain builder (libxc's xc_dom_*) together need, because one QEMU process is both the domain's
vCPUs and its device model: sizes, vCPUs, the kernel to load, the emulated display. It knows
nothing of xl.cfg: the toolstack translates a config into this.

Pure: no I/O. ``CreateDomain.from_wire`` raises InvalidArgument naming the first bad field, so a
bad request is EINVAL before any memory is claimed or any process started.
"""

from __future__ import annotations

import re
import uuid as uuidlib
from dataclasses import asdict, dataclass, fields
from typing import Any

from .domain import DOMID_FIRST_RESERVED
from .errors import InvalidArgument

OP = "domctl.createdomain"
DOMAIN_TYPES = ("pv", "pvh", "hvm")
#: Xen's name rules as libxl applies them, plus: not all digits (ambiguous with a domid).
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
MAX_VCPUS = 128
#: The smallest domain pyxen builds (a Linux guest needs more; this only rejects nonsense).
MIN_MEMORY_KB = 1024
MAX_CMDLINE = 2048
BOOT_RE = re.compile(r"[acdn]{1,4}")
#: xl.cfg usbdevice= values (QEMU's legacy -usbdevice names) and the QEMU device each adds.
USB_DEVICES = {"tablet": "usb-tablet", "mouse": "usb-mouse", "keyboard": "usb-kbd"}


def _int(data: dict[str, Any], key: str, lo: int, hi: int) -> int:
    v = data.get(key)
    if not isinstance(v, int) or isinstance(v, bool):
        raise InvalidArgument(f"createdomain: '{key}' must be an integer", OP)
    if not lo <= v <= hi:
        raise InvalidArgument(f"createdomain: '{key}' = {v} is outside {lo}..{hi}", OP)
    return v


def _str(data: dict[str, Any], key: str, optional: bool = False) -> str | None:
    v = data.get(key)
    if v is None and optional:
        return None
    if not isinstance(v, str):
        raise InvalidArgument(f"createdomain: '{key}' must be a string", OP)
    if "\0" in v:
        raise InvalidArgument(f"createdomain: '{key}' holds a NUL byte", OP)
    return v


@dataclass(frozen=True)
class CreateDomain:
    """One domain to build. Memory in KiB, as Xen counts it (pages * 4)."""

    name: str
    uuid: str
    type: str
    memory_kb: int
    max_memkb: int
    vcpus: int
    max_vcpus: int
    kernel: str | None = None
    ramdisk: str | None = None
    cmdline: str = ""
    vnc: bool = False
    vncdisplay: int | None = None
    vnclisten: str = "127.0.0.1"
    boot: str = "cd"
    cpu_weight: int = 256
    cap: int = 0
    #: VNC authentication: QEMU's VNC server asks for this password (libxl's vnc.passwd).
    vncpasswd: str | None = None
    #: libxl's vnc.findunused: QEMU tries the displays from vncdisplay up to 99 more.
    vncunused: bool = False
    #: HVM serial ports (QEMU -serial values; the first "pty" is the console).
    serial: tuple[str, ...] = ("pty",)
    #: HVM USB controller, and the devices on it ("tablet", "mouse", "keyboard").
    usb: bool = False
    usbdevice: tuple[str, ...] = ()
    #: Appended to QEMU's command line (xl.cfg device_model_args*).
    dm_args: tuple[str, ...] = ()
    #: Restore: the device model waits for a saved state (``dm_op.restore``) instead of booting.
    incoming: bool = False
    #: The domid asked for (Xen's createdomain with a domid: ``xl save -D`` then restore), or
    #: None for the hypervisor's next free one. Taken: EEXIST.
    domid: int | None = None
    #: The CPU pool to build it in (xl.cfg's pool=, resolved to an id by the toolstack).
    cpupool: int = 0
    #: An HVM guest's emulated IDE CD-ROM drives: (IDE index 0..3 = hda..hdd, medium path or
    #: "" for an empty drive). The media change later with dm_op.cdrom_change (xl cd-insert).
    cdroms: tuple[tuple[int, str], ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_wire(cls, data: object) -> "CreateDomain":
        """:raise InvalidArgument: naming the first bad or unknown field."""
        if not isinstance(data, dict):
            raise InvalidArgument("createdomain needs a request object", OP)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidArgument(f"createdomain: unknown field '{unknown[0]}'", OP)
        name = _str(data, "name")
        assert name is not None
        if not NAME_RE.fullmatch(name) or name == "Domain-0" or name.isdigit():
            raise InvalidArgument(f"createdomain: '{name}' is not a valid domain name", OP)
        raw_uuid = _str(data, "uuid")
        try:
            uid = str(uuidlib.UUID(str(raw_uuid)))
        except ValueError:
            raise InvalidArgument(f"createdomain: '{raw_uuid}' is not a UUID", OP) from None
        dtype = _str(data, "type")
        if dtype not in DOMAIN_TYPES:
            raise InvalidArgument(f"createdomain: type '{dtype}' is not one of {', '.join(DOMAIN_TYPES)}", OP)
        max_memkb = _int(data, "max_memkb", MIN_MEMORY_KB, 1 << 40)
        memory_kb = _int(data, "memory_kb", MIN_MEMORY_KB, max_memkb)
        max_vcpus = _int(data, "max_vcpus", 1, MAX_VCPUS)
        vcpus = _int(data, "vcpus", 1, max_vcpus)
        paths = {}
        for key in ("kernel", "ramdisk"):
            p = _str(data, key, optional=True)
            if p is not None and not p.startswith("/"):
                raise InvalidArgument(f"createdomain: {key} '{p}' is not an absolute path", OP)
            paths[key] = p
        if dtype != "hvm" and paths["kernel"] is None:
            raise InvalidArgument(f"createdomain: a {dtype} domain needs a kernel", OP)
        if paths["ramdisk"] is not None and paths["kernel"] is None:
            raise InvalidArgument("createdomain: a ramdisk needs a kernel", OP)
        cmdline = _str(data, "cmdline", optional=True) or ""
        if len(cmdline.encode()) >= MAX_CMDLINE:
            raise InvalidArgument(f"createdomain: the kernel command line is {len(cmdline.encode())} "
                                  f"bytes; the limit is {MAX_CMDLINE - 1}", OP)
        vnc = data.get("vnc", False)
        if not isinstance(vnc, bool):
            raise InvalidArgument("createdomain: 'vnc' must be true or false", OP)
        vncdisplay = None if data.get("vncdisplay") is None else _int(data, "vncdisplay", 0, 99)
        vnclisten = _str(data, "vnclisten", optional=True) or "127.0.0.1"
        if not re.fullmatch(r"[0-9A-Za-z.:\-\[\]]{1,64}", vnclisten):
            raise InvalidArgument(f"createdomain: vnclisten '{vnclisten}' is not an address", OP)
        boot = _str(data, "boot", optional=True) or "cd"
        if not BOOT_RE.fullmatch(boot):
            raise InvalidArgument(f"createdomain: boot '{boot}' is not a boot order (a, c, d, n)", OP)
        incoming = data.get("incoming", False)
        if not isinstance(incoming, bool):
            raise InvalidArgument("createdomain: 'incoming' must be true or false", OP)
        domid = None if data.get("domid") is None else _int(data, "domid", 1, DOMID_FIRST_RESERVED - 1)
        weight = _int(data, "cpu_weight", 1, 65535) if "cpu_weight" in data else 256
        cap = _int(data, "cap", 0, 100 * max_vcpus) if "cap" in data else 0
        # Handed to QEMU over QMP (change-vnc-password), never on its command line.
        vncpasswd = _str(data, "vncpasswd", optional=True)
        flags = {}
        for key in ("vncunused", "usb"):
            flags[key] = data.get(key, False)
            if not isinstance(flags[key], bool):
                raise InvalidArgument(f"createdomain: '{key}' must be true or false", OP)
        lists = {}
        for key, default in (("serial", ["pty"]), ("usbdevice", []), ("dm_args", [])):
            value = data.get(key, default)
            if not isinstance(value, (list, tuple)) or not all(isinstance(x, str) for x in value):
                raise InvalidArgument(f"createdomain: '{key}' must be a list of strings", OP)
            lists[key] = tuple(value)
        if any(dev not in USB_DEVICES for dev in lists["usbdevice"]):
            raise InvalidArgument(f"createdomain: usbdevice must be among {', '.join(USB_DEVICES)}", OP)
        cpupool = _int(data, "cpupool", 0, 0xFFFF) if "cpupool" in data else 0
        cdroms = _cdroms(data.get("cdroms", ()), dtype)
        return cls(name=name, uuid=uid, type=dtype, memory_kb=memory_kb, max_memkb=max_memkb,
                   vncpasswd=vncpasswd, vncunused=flags["vncunused"], usb=flags["usb"],
                   serial=lists["serial"], usbdevice=lists["usbdevice"], dm_args=lists["dm_args"],
                   vcpus=vcpus, max_vcpus=max_vcpus, kernel=paths["kernel"], ramdisk=paths["ramdisk"],
                   cmdline=cmdline, vnc=vnc, vncdisplay=vncdisplay, vnclisten=vnclisten, boot=boot,
                   cpu_weight=weight, cap=cap, incoming=incoming, domid=domid, cpupool=cpupool,
                   cdroms=cdroms)


def _cdroms(raw: object, dtype: str) -> tuple[tuple[int, str], ...]:
    """The emulated CD-ROM drives: IDE indexes 0..3, each once; media absolute paths or ""."""
    if not isinstance(raw, (list, tuple)):
        raise InvalidArgument("createdomain: 'cdroms' must be a list", OP)
    out: list[tuple[int, str]] = []
    for item in raw:
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], int)
                and not isinstance(item[0], bool) and isinstance(item[1], str)):
            raise InvalidArgument("createdomain: each of 'cdroms' must be [index, path]", OP)
        index, path = item[0], item[1]
        if not 0 <= index <= 3 or index in {i for i, _ in out}:
            raise InvalidArgument(f"createdomain: cdrom IDE index {index} is not free in 0..3", OP)
        if path and (not path.startswith("/") or "\0" in path):
            raise InvalidArgument(f"createdomain: cdrom medium '{path}' is not an absolute path", OP)
        out.append((index, path))
    if out and dtype != "hvm":
        raise InvalidArgument("createdomain: emulated cdrom drives need an hvm domain", OP)
    return tuple(out)
