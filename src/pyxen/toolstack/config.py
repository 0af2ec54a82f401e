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

from ..libxlu.cfg import Setting, Value, decode, parse, parse_number
from ..libxlu.domid import is_domid
from .devices import FORMAT_PREFIXES, IGNORED_PREFIXES, SCRIPT_PREFIXES

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
    "device_model_version", "bootloader", "bootloader_args", "vfb",
})


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
    on_poweroff: str = "destroy"
    on_reboot: str = "restart"
    on_crash: str = "destroy"
    on_watchdog: str = "destroy"
    cpus: str | None = None
    cpu_weight: int = 256
    cap: int = 0
    disks: tuple[str, ...] = ()
    vifs: tuple[str, ...] = ()
    vnc: bool = False
    vncdisplay: int | None = None
    vnclisten: str = "127.0.0.1"
    boot: str = "cd"
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
        return cls(**known)  # type: ignore[arg-type]


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
    if overrides:
        text += "\n" + "\n".join(overrides) + "\n"
    cfg = from_settings(parse(text, source), source, cwd)
    # Messages name the file as the user gave it; the record kept with the domain (xenstore's
    # /libxl/<domid>/config-source) names it absolutely, as every other path in it.
    return dataclasses.replace(cfg, source=_Cwd(cwd, source).absolute(source))


def _pick(settings: dict[str, Setting], source: str) -> Callable[..., object]:
    def err(key: str, reason: str) -> ConfigError:
        return ConfigError(f"{source}:{settings[key].line}: {key}: {reason}")

    def get(key: str, kind: str, default: object = None) -> object:
        if key not in settings:
            return default
        v: Value = settings[key].value
        if kind == "list":
            if isinstance(v, str):
                return (v,)
            if not all(isinstance(x, str) for x in v):
                raise err(key, "expected a list of strings")
            return tuple(v)
        if isinstance(v, list):
            raise err(key, "is a list but should be a single value")
        if kind == "int":
            try:
                return parse_number(v)
            except ValueError:
                raise err(key, f"'{v}' is not a valid number") from None
        return v

    get.err = err  # type: ignore[attr-defined]
    return get


#: Disk spec flags (no value) that take no positional slot (xl-disk-configuration.5).
_DISK_FLAGS = ("cdrom", "discard", "no-discard", "direct-io-safe", "trusted", "untrusted")


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
    left alone. ``target=`` eats the rest of the spec, commas included, as in xl.
    """
    items: list[str] = []
    rest = spec
    while rest:
        rest = rest.lstrip(" \t")
        if rest.startswith("target="):
            items.append(rest)
            break
        item, sep, rest = rest.partition(",")
        items.append(item)
        if not sep:
            break
    if any(i.strip().startswith("script=") for i in items):
        return spec
    for n, item in enumerate(items):
        if item.startswith("target="):
            target = item[len("target="):]
            if target and not target.startswith("/"):
                items[n] = "target=" + cwd.absolute(target)
            return ",".join(items)
        if "=" in item or item.strip() in _DISK_FLAGS:
            continue
        parts = item.strip().split(":")  # the first positional item is the target
        prefixes = []
        while len(parts) > 1 and parts[0] in IGNORED_PREFIXES + FORMAT_PREFIXES + SCRIPT_PREFIXES:
            prefixes.append(parts.pop(0))
        target = ":".join(parts)
        if not target or target.startswith("/") or any(p in SCRIPT_PREFIXES for p in prefixes):
            return spec
        items[n] = ":".join(prefixes + [cwd.absolute(target)])
        return ",".join(items)
    return spec


def from_settings(settings: dict[str, Setting], source: str = "<config>",
                  cwd: str | None = None) -> DomainConfig:
    """Turn parsed settings into a DomainConfig, checking every value this module knows.

    Relative kernel, ramdisk and disk target paths are made absolute against ``cwd`` (default:
    this process's working directory, which for ``xl create`` is where libxl would open them).
    """
    get = _pick(settings, source)
    here = _Cwd(cwd, source)
    err = get.err  # type: ignore[attr-defined]
    warnings = [f"{source}:{s.line}: warning: ignoring unknown key '{k}'"
                for k, s in settings.items() if k not in KNOWN_KEYS]

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

    dtype = get("type", "str")
    builder = get("builder", "str")
    if builder is not None and dtype is None:
        dtype = {"generic": "pv", "hvm": "hvm"}.get(str(builder))
        if dtype is None:
            raise err("builder", f"unknown builder '{builder}'")
    dtype = dtype or "pv"
    matches = [t for t in DOMAIN_TYPES if t.startswith(str(dtype))] if dtype else []
    if str(dtype) in DOMAIN_TYPES:
        matches = [str(dtype)]
    if len(matches) != 1:
        raise err("type", f"Invalid domain type {dtype}.")
    dtype = matches[0]

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

    kernel, ramdisk = get("kernel", "str"), get("ramdisk", "str")
    if dtype in ("pv", "pvh") and not kernel and not get("bootloader", "str"):
        raise ConfigError(f"{source}: a {dtype} guest needs kernel= (or bootloader=)")

    vnc = get("vnc", "int", 0)
    vncdisplay = get("vncdisplay", "int")
    return DomainConfig(
        name=name, type=dtype, uuid=str(uid) if uid else str(uuidlib.uuid4()),
        memory=memory, maxmem=maxmem, vcpus=vcpus, maxvcpus=maxvcpus,
        kernel=here.absolute(str(kernel)) if kernel else None,
        ramdisk=here.absolute(str(ramdisk)) if ramdisk else None,
        cmdline=str(cmdline), cpus=(str(get("cpus", "str")) if "cpus" in settings else None),
        cpu_weight=weight, cap=cap,
        disks=tuple(_absolute_disk(str(d), here) for d in get("disk", "list", ())),  # type: ignore[attr-defined]
        vifs=get("vif", "list", ()),  # type: ignore[arg-type]
        vnc=bool(vnc), vncdisplay=vncdisplay,  # type: ignore[arg-type]
        vnclisten=str(get("vnclisten", "str", "127.0.0.1")),
        boot=str(get("boot", "str", "cd")), source=source, warnings=tuple(warnings),
        **actions,  # type: ignore[arg-type]
    )
