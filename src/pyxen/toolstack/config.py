"""xl.cfg keys into one frozen DomainConfig (Xen's xl_parse.c and libxl defaults).

No side effects: the only checks made here are about the text. Whether the kernel exists or the
memory is free is decided by the domain builder and the hypervisor. Defaults follow libxl:
type pv, memory 32 MiB (or maxmem), vcpus 1, on_poweroff destroy, on_reboot restart,
on_crash destroy.
"""

from __future__ import annotations

import dataclasses
import os
import re
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..hypervisor.domctl import USB_DEVICES
from ..libxlu.cfg import Config, Setting, Value, decode, parse
from ..libxlu.domid import is_domid
from ..libxlu import disk as libxlu_disk
from ..libxlu import vif as libxlu_vif
from ..libxlu.cpumap import CpuRangeError, parse_cpurange

DOMAIN_TYPES = ("pv", "pvh", "hvm")
ACTIONS = ("destroy", "restart", "rename-restart", "preserve", "coredump-destroy",
           "coredump-restart", "soft-reset")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")

#: Keys pyxen reads; others are ignored with a warning, as xl ignores keys it does not know.
KNOWN_KEYS = frozenset({
    "name", "type", "builder", "uuid", "memory", "maxmem", "vcpus", "maxvcpus", "kernel",
    "ramdisk", "cmdline", "root", "extra", "on_poweroff", "on_reboot", "on_crash",
    "on_watchdog", "on_soft_reset", "cpus", "cpus_soft", "cpu_weight", "cap", "disk", "vif",
    "vnc", "vnclisten", "vncdisplay", "vncunused", "vncpasswd", "serial", "boot", "sdl",
    "nographic", "vga", "videoram", "localtime", "pool", "acpi", "apic", "pae", "hap",
    "device_model_version", "bootloader", "bootloader_args", "vfb", "usb", "usbdevice",
    "device_model_args", "device_model_args_pv", "device_model_args_hvm",
})

#: Keys read for libxl's JSON only (``xl create -n``, ``xl list -l``) that change nothing in the
#: guest pyxen builds: named in a warning, so a user knows pyxen does not act on them.
NOT_ACTED_ON = ("on_soft_reset",)

#: libxl's warning for the old spelling of pyxen's own pygrub (libxl_bootloader.c).
PYGRUB_DEPRECATED = ("bootloader='/usr/bin/pygrub' is deprecated; use bootloader='pygrub' "
                     "instead")


class ConfigError(ValueError):
    """A config whose text parsed but whose values are wrong; str() names file, line and key."""


@dataclass(frozen=True)
class DomainConfig:
    """What xl.cfg says a domain is. Memory in MiB, as in the file."""

    name: str
    type: str = "pv"
    uuid: str = field(default_factory=lambda: str(uuidlib.uuid4()))
    memory: int = 32
    maxmem: int = 32
    vcpus: int = 1
    maxvcpus: int = 1
    kernel: str | None = None
    ramdisk: str | None = None
    cmdline: str = ""
    #: PV/PVH: the program that picks the kernel from the guest's first disk (libxl's
    #: b_info.bootloader; "pygrub" is pyxen's), and its extra arguments. With one, kernel and
    #: ramdisk are paths inside the guest, handed to it as --kernel/--ramdisk.
    bootloader: str | None = None
    bootloader_args: tuple[str, ...] = ()
    on_poweroff: str = "destroy"
    on_reboot: str = "restart"
    on_crash: str = "destroy"
    on_watchdog: str = "destroy"
    on_soft_reset: str = "soft-reset"
    #: cpus=: one CPU list for every vCPU (a string), or one per vCPU (a list), as xl takes it.
    cpus: str | tuple[str, ...] | None = None
    #: Soft affinity, in the same two forms: recorded and preferred, docs/scheduling.md.
    cpus_soft: str | tuple[str, ...] | None = None
    #: The CPU pool to build the domain in, by name or number (libxl's c_info.pool_name).
    pool: str | None = None
    cpu_weight: int = 256
    cap: int = 0
    disks: tuple[str, ...] = ()
    vifs: tuple[str, ...] = ()
    vnc: bool = False
    vncdisplay: int | None = None
    vnclisten: str = "127.0.0.1"
    #: libxl's vnc.passwd: QEMU's VNC server then asks for it (VNC authentication).
    vncpasswd: str | None = None
    #: libxl's vnc.findunused (default true): QEMU tries display .. display+99 (``to=99``).
    vncunused: bool = True
    boot: str = "cd"
    #: HVM serial ports, each a QEMU -serial value; "pty" is the console xenconsoled serves.
    serial: tuple[str, ...] = ("pty",)
    #: HVM USB: ``usb=1`` gives a USB controller; each usbdevice entry a device on it.
    usb: bool = False
    usbdevice: tuple[str, ...] = ()
    #: device_model_args, then device_model_args_pv or _hvm for this type: appended to QEMU's argv.
    device_model_args: tuple[str, ...] = ()
    device_model_args_pv: tuple[str, ...] = ()
    device_model_args_hvm: tuple[str, ...] = ()
    #: Every key of the file as it was read (after overrides), for libxl's JSON, which reports
    #: what xl_parse.c put in libxl_domain_config, including keys pyxen does not act on.
    settings: tuple[tuple[str, object], ...] = ()
    #: The keys the file set with ``+=`` (a string grown, or a number xl ignores with a warning:
    #: xlu_cfg_get_long refuses an appended value, so libxl's JSON leaves such a key out).
    appended: tuple[str, ...] = ()
    source: str = "<config>"
    warnings: tuple[str, ...] = ()
    #: The domid to build the domain with (libxl's c_info.domid): only a save file written with
    #: ``xl save -D`` carries one; xl.cfg has no such key, and the record kept with a live
    #: domain never has one (a restart takes a new domid).
    domid: int | None = None

    def to_json(self) -> dict[str, object]:
        """The record stored with the domain (and shown by ``xl list -l``)."""
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in self.__dict__.items()
                if k != "warnings" and not (k == "domid" and v is None)}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> "DomainConfig":
        known = {k: (tuple(v) if isinstance(v, list) else v)
                 for k, v in data.items() if k in cls.__dataclass_fields__}
        stored = data.get("settings")
        if isinstance(stored, list):
            known["settings"] = tuple((str(k), _frozen(v)) for k, v in stored)
        return cls(**known)  # type: ignore[arg-type]

    def setting(self, key: str) -> object:
        """The value the file gave ``key`` (a str, or a tuple for a list), or None."""
        for k, v in self.settings:
            if k == key:
                return v
        return None

    @property
    def dm_args(self) -> tuple[str, ...]:
        """The extra QEMU arguments for this type, in libxl's order (libxl_dm.c: extra, then
        extra_pv or extra_hvm)."""
        own = self.device_model_args_hvm if self.type == "hvm" else self.device_model_args_pv
        return self.device_model_args + own


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = (),
         cwd: str | None = None) -> DomainConfig:
    """Read a config file plus command-line ``key=value`` overrides (the last one wins).

    Relative paths in it are made absolute against ``cwd`` (default: this process's working
    directory, as libxl inside xl would open them)."""
    source = str(path)
    try:
        text = "" if source == "/dev/null" else decode(Path(path).read_bytes(), source)
    except OSError as err:
        raise ConfigError(f"Failed to read config file: {source}: {err.strerror}") from err
    if overrides:  # as xl_vmcontrol.c appends them: "\n", each one and "\n", then "\n"
        text += "\n" + "".join(f"{o}\n" for o in overrides) + "\n"
    cfg = from_settings(parse(text, source), source, cwd)
    # Messages name the file as the user gave it; the record kept with the domain (xenstore's
    # /libxl/<domid>/config-source) names it absolutely, as every other path in it.
    return dataclasses.replace(cfg, source=_Cwd(cwd, source).absolute(source))


def _pick(settings: dict[str, Setting], source: str, warnings: list[str]) -> Callable[..., object]:
    """A getter over the settings that reads keys as xl_parse.c does with libxlu's getters:
    a value of the wrong shape (a list for a single value, text that is not a number, ``+=``
    on a number) gives libxlu's warning and the key's default, never an error."""
    cfg = Config(settings, source)

    def err(key: str, reason: str) -> ConfigError:
        return ConfigError(f"{source}:{settings[key].line}: {key}: {reason}")

    def get(key: str, kind: str, default: object = None) -> object:
        if kind == "list":
            e, items = cfg.get_string_items(key)
            value: object = tuple(items) if e is None else default
        elif kind == "int":
            e, value = cfg.get_long(key)
        else:
            e, value = cfg.get_string(key)
        warnings.extend(cfg.warnings)
        cfg.warnings.clear()
        return default if e is not None else value

    get.err = err  # type: ignore[attr-defined]
    return get


class _Cwd:
    """xl's working directory, read once and only when a relative path needs it."""

    def __init__(self, cwd: str | None, source: str) -> None:
        self._cwd, self.source = cwd, source

    def absolute(self, path: str) -> str:
        """``path`` as libxl inside xl would open it: relative paths are relative to xl's cwd."""
        if path.startswith("/"):
            return path
        if self._cwd is None:
            try:
                self._cwd = os.getcwd()
            except OSError as err:
                raise ConfigError(f"{self.source}: cannot resolve the relative path '{path}': "
                                  f"the current directory is unreadable ({err.strerror})") from err
        return os.path.join(self._cwd, path)


def _absolute_disk(spec: str, cwd: _Cwd) -> str:
    """The disk spec with a relative target made absolute against xl's working directory.

    libxl stat()s a disk's target from inside xl (libxl__device_disk_set_backend), and the block
    hotplug script it runs turns a file into ``readlink -f`` of it, so a relative target names a
    file relative to where xl runs; resolving it here means no daemon ever sees it relative.
    Targets handed to a block script (``iscsi:``, ``nbd:``, ``script=``) are not paths and are
    left alone. Where the target is written is libxlu's parse (``target=`` eats the rest of the
    spec, commas included); a spec libxlu refuses is left for its error.
    """
    try:
        disk = libxlu_disk.parse_disk(spec)
    except libxlu_disk.DiskSyntaxError:
        return spec
    span = libxlu_disk.target_span(spec)
    if disk.script or span is None or not disk.pdev_path or disk.pdev_path.startswith("/"):
        return spec
    return spec[:span[0]] + cwd.absolute(disk.pdev_path) + spec[span[1]:]


def _check_devices(disks: tuple[str, ...], vifs: tuple[str, ...], source: str,
                   warnings: list[str]) -> None:
    """Parse every disk and vif spec as xl's parse_config_data does, so a spec xl refuses
    stops ``xl create`` before anything is built, with libxlu's lines; what xl only reports
    about a vif (an unknown key, a bad MAC) joins the warnings."""
    for spec in disks:
        try:
            libxlu_disk.parse_disk(spec, source)
        except libxlu_disk.DiskSyntaxError as err:
            raise ConfigError("\n".join(err.messages)) from None
    for index, spec in enumerate(vifs):
        try:
            warnings.extend(libxlu_vif.parse_vif(spec, index, source).messages)
        except libxlu_vif.VifSyntaxError as err:
            raise ConfigError("\n".join(err.messages)) from None


def _cpus(settings: dict[str, Setting], source: str, warnings: list[str],
          key: str = "cpus") -> str | tuple[str, ...] | None:
    """cpus= (or cpus_soft=, the same forms) as xl_parse.c reads it: a list (one CPU list per
    vCPU, up to the first item that is not a string) or a string (for every vCPU); each must
    parse (parse_cpurange), or xl exits with its line. NUMA nodes and the host's CPUs are resolved when the domain is built."""
    cfg = Config(settings, source)
    e, items = cfg.get_string_items(key, dont_warn=True)
    value: str | tuple[str, ...] | None = tuple(items) if e is None else None
    if value is None:
        e, text = cfg.get_string(key)
        warnings.extend(cfg.warnings)
        value = text
    for item in ([value] if isinstance(value, str) else value or ()):
        try:
            parse_cpurange(item, 0)
        except CpuRangeError as err:
            raise ConfigError(str(err)) from None
    return value


def _domain_type(text: object, names: tuple[str, ...]) -> str | None:
    """xl_parse.c's type= test: the first name that ``text`` is a prefix of, in xl's order
    (``strncmp(buf, "hvm", strlen(buf))``), so "p" is pv and "" is hvm."""
    if text is None:
        return None
    for name in names:
        if name.startswith(str(text)):
            return name
    raise ConfigError(f"Invalid domain type {text}.")


#: QEMU -serial values an HVM guest's serial= may name (xl.cfg(5): "serial=DEVICE ... see
#: QEMU's documentation"); stdio and mon: are refused: QEMU's stdin is not the user's here.
SERIAL_WORDS = ("pty", "null", "none", "vc")
SERIAL_PREFIXES = ("file:", "pipe:", "tcp:", "telnet:", "udp:", "unix:", "/dev/")


def _frozen(value: Value) -> object:
    """A setting's value as stored in DomainConfig: a str, or a tuple for a list."""
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


def _string_list(settings: dict[str, Setting], key: str, source: str,
                 single: bool = False) -> tuple[str, ...]:
    """A key xl reads with xlu_cfg_get_list_as_string_list: a list of strings; with ``single``
    (serial, usbdevice) a single string too, as xl_parse.c falls back to the atom."""
    if key not in settings:
        return ()
    v = settings[key].value
    if isinstance(v, str) and single:
        return (v,)
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return tuple(str(x) for x in v)
    raise ConfigError(f"xl: Unable to parse {key}.")


def _bootloader(settings: dict[str, Setting], dtype: str, get: Callable[..., object],
                warnings: list[str]) -> tuple[str | None, tuple[str, ...]]:
    """bootloader= and bootloader_args= as xl_parse.c reads them, for PV and PVH guests only
    (an HVM guest's are ignored): the args a list of strings, or a string split on blanks with
    xl's deprecation warning."""
    if dtype not in ("pv", "pvh") or "bootloader" not in settings:
        return None, ()
    program = get("bootloader", "str")
    if program is None:
        return None, ()
    if not str(program).strip():
        raise get.err("bootloader", "an empty program name")  # type: ignore[attr-defined]
    if program == "/usr/bin/pygrub":
        warnings.append(f"libxl: warning: {PYGRUB_DEPRECATED}")
    args: tuple[str, ...] = ()
    if "bootloader_args" in settings:
        value = settings["bootloader_args"].value
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            args = tuple(str(v) for v in value)
        elif isinstance(value, str):
            warnings.append('WARNING: Specifying "bootloader_args" as a string is deprecated. '
                            "Please use a list of arguments.")
            args = tuple(value.split())
        else:
            raise ConfigError("xl: Unable to parse bootloader_args.")
    return str(program), args


def from_settings(settings: dict[str, Setting], source: str = "<config>",
                  cwd: str | None = None) -> DomainConfig:
    """Turn parsed settings into a DomainConfig, checking every value this module knows.

    Relative kernel, ramdisk and disk target paths are made absolute against ``cwd`` (default:
    this process's working directory, which for ``xl create`` is where libxl would open them).
    """
    warnings = [f"{source}:{s.line}: warning: ignoring unknown key '{k}'"
                for k, s in settings.items() if k not in KNOWN_KEYS]
    get = _pick(settings, source, warnings)
    here = _Cwd(cwd, source)
    err = get.err  # type: ignore[attr-defined]

    if "channel" in settings and get("channel", "list"):
        # xl.cfg's channel= gives the guest a PV console by name; pyxen builds none, and a
        # guest that expects one must not start without it (xl channel-list shows none).
        raise err("channel", "pyxen does not build PV channels; remove channel= "
                  "(xl channel-list lists none)")

    name = get("name", "str")
    if not name:
        raise ConfigError("Domain name must be specified.")
    assert isinstance(name, str)
    if not _NAME_RE.fullmatch(name) or name == "Domain-0":
        raise err("name", f"'{name}' is not a valid domain name")
    if is_domid(name):
        # xl reads an all-digit argument as a domid (libxl_domain_qualifier_to_domid), so such
        # a domain could never be named on the command line; Xen accepts it, pyxen refuses it.
        raise err("name", f"'{name}' is all digits, which xl reads as a domain id")

    dtype = _domain_type(get("type", "str"), ("hvm", "pv", "pvh"))
    builder = get("builder", "str")
    if builder is not None:
        # Deprecated since Xen 4.10; it may only agree with type=.
        bname = _domain_type(builder, ("hvm", "generic"))
        btype = "pv" if bname == "generic" else "hvm"
        if dtype is not None and dtype != btype:
            raise ConfigError('Contradicting "builder" and "type" options specified.')
        dtype = btype
    dtype = dtype or "pv"

    uid = get("uuid", "str")
    if uid is not None:
        try:
            uid = str(uuidlib.UUID(str(uid)))
        except ValueError:
            raise err("uuid", f"Failed to parse UUID: {uid}") from None

    memory, maxmem = get("memory", "int"), get("maxmem", "int")
    memory = memory if memory is not None else (maxmem if maxmem is not None else 32)
    maxmem = maxmem if maxmem is not None else memory
    assert isinstance(memory, int) and isinstance(maxmem, int)
    if memory < 1:
        raise err("memory", f"{memory} MiB is too small")
    if maxmem < memory:
        raise err("maxmem", f"maxmem ({maxmem}) is less than memory ({memory})")

    vcpus = get("vcpus", "int", 1)
    assert isinstance(vcpus, int)
    vcpus = max(vcpus, 1)
    maxvcpus = get("maxvcpus", "int", vcpus)
    assert isinstance(maxvcpus, int)
    if maxvcpus < vcpus:
        raise err("maxvcpus", "maxvcpus < vcpus")
    if maxvcpus > 128:
        raise err("maxvcpus", f"{maxvcpus} vCPUs is more than the 128 pyxen supports")

    cmdline = get("cmdline", "str")
    root, extra = get("root", "str"), get("extra", "str")
    if cmdline is None:
        parts = ([f"root={root}"] if root else []) + ([str(extra)] if extra else [])
        cmdline = " ".join(parts)
    elif root or extra:
        warnings.append(f"{source}: warning: ignoring root= and extra= in favour of cmdline=")

    actions = {}
    for key, default in (("on_poweroff", "destroy"), ("on_reboot", "restart"),
                         ("on_crash", "destroy"), ("on_watchdog", "destroy")):
        v = get(key, "str", default)
        if v not in ACTIONS:
            raise err(key, f"invalid action '{v}'")
        actions[key] = v

    weight = get("cpu_weight", "int", 256)
    cap = get("cap", "int", 0)
    assert isinstance(weight, int) and isinstance(cap, int)
    if not 1 <= weight <= 65535:
        raise err("cpu_weight", f"weight {weight} is out of range 1..65535")
    if not 0 <= cap <= 100 * maxvcpus:
        raise err("cap", f"cap {cap} is out of range 0..{100 * maxvcpus}")

    bootloader, bootloader_args = _bootloader(settings, dtype, get, warnings)
    kernel, ramdisk = get("kernel", "str"), get("ramdisk", "str")
    if dtype in ("pv", "pvh") and not kernel and bootloader is None:
        raise ConfigError("Neither kernel nor bootloader specified")

    def host_path(path: object) -> str | None:
        # A bootloader's --kernel/--ramdisk name files in the guest: left as written.
        if not path:
            return None
        return str(path) if bootloader is not None else here.absolute(str(path))

    warnings += [f"{source}:{settings[k].line}: warning: '{k}' is not acted on by pyxen yet "
                 "(it is reported in libxl's JSON only)" for k in NOT_ACTED_ON if k in settings]

    vnc = get("vnc", "int", 0)
    vncdisplay = get("vncdisplay", "int")
    disks = tuple(_absolute_disk(d, here) for d in get("disk", "list", ()))  # type: ignore[attr-defined]
    vifs: tuple[str, ...] = get("vif", "list", ())  # type: ignore[assignment]
    _check_devices(disks, vifs, source, warnings)
    if vnc and dtype != "hvm":
        warnings.append(f"{source}:{settings['vnc'].line}: warning: vnc is for HVM guests in "
                        "pyxen (no PV framebuffer): no VNC server for this guest")
    if ":" in str(get("vnclisten", "str", "")) and vncdisplay:
        raise ConfigError("ERROR: Display specified both in vnclisten and vncdisplay!")
    vncunused = get("vncunused", "int", 1)
    vncpasswd = get("vncpasswd", "str")
    dm_args = {key: _string_list(settings, key, source) for key in
               ("device_model_args", "device_model_args_pv", "device_model_args_hvm")}
    serial: tuple[str, ...] = ("pty",)
    usb, usbdevice = False, tuple[str, ...]()
    if dtype == "hvm":  # xl_parse.c reads these for HVM guests only
        serial = _string_list(settings, "serial", source, single=True) if "serial" in settings \
            else ("pty",)
        for port in serial:
            if not (port in SERIAL_WORDS or port.startswith(SERIAL_PREFIXES)):
                raise err("serial", f"'{port}' is not a serial device pyxen can give QEMU "
                                    f"({', '.join(SERIAL_WORDS)}, or {', '.join(SERIAL_PREFIXES)}...)")
        usb = bool(get("usb", "int", 0))
        usbdevice = _string_list(settings, "usbdevice", source, single=True)
        for dev in usbdevice:
            if dev not in USB_DEVICES:
                raise err("usbdevice", f"'{dev}' is not one of {', '.join(USB_DEVICES)}")
    if "on_soft_reset" in settings:
        v = get("on_soft_reset", "str")
        if v not in ACTIONS:
            raise err("on_soft_reset", f"invalid action '{v}'")
        actions["on_soft_reset"] = v
    return DomainConfig(
        name=name, type=dtype, uuid=str(uid) if uid else str(uuidlib.uuid4()),
        memory=memory, maxmem=maxmem, vcpus=vcpus, maxvcpus=maxvcpus,
        kernel=host_path(kernel), ramdisk=host_path(ramdisk),
        bootloader=bootloader, bootloader_args=bootloader_args,
        cmdline=str(cmdline), cpus=_cpus(settings, source, warnings),
        cpus_soft=_cpus(settings, source, warnings, "cpus_soft"),
        pool=(str(get("pool", "str")) if "pool" in settings else None),
        cpu_weight=weight, cap=cap,
        disks=disks, vifs=vifs,
        vnc=bool(vnc), vncdisplay=vncdisplay,  # type: ignore[arg-type]
        vnclisten=str(get("vnclisten", "str", "127.0.0.1")),
        vncpasswd=str(vncpasswd) if vncpasswd else None, vncunused=bool(vncunused),
        serial=serial, usb=usb, usbdevice=usbdevice,
        device_model_args=dm_args["device_model_args"],
        device_model_args_pv=dm_args["device_model_args_pv"],
        device_model_args_hvm=dm_args["device_model_args_hvm"],
        settings=tuple((k, _frozen(st.value)) for k, st in settings.items()),
        appended=tuple(k for k, st in settings.items() if st.op == "+="),
        boot=str(get("boot", "str", "cd")), source=source, warnings=tuple(warnings),
        **actions,  # type: ignore[arg-type]
    )
