"""libxl's domain configuration JSON: what ``xl create -n`` and ``xl list -l`` print.

Source: Xen 4.17 (RELEASE-4.17.7) tools/libs/light/libxl_types.idl (the libxl_domain_config
structure, field order, enum strings), gentypes.py (libxl_C_type_gen_json: which fields are
left out), libxl_json.c (builtin types), tools/include/libxl_json.h with yajl 2's yajl_gen.c
(the layout), tools/xl/xl_parse.c (which xl.cfg key fills which field), xl_vmcontrol.c and
xl_info.c (what create -n and list -l print) and libxl_create.c / libxl_domain.c (the defaults
libxl fills in, and what libxl_retrieve_domain_configuration reads back from a live domain).

Pure: no I/O. A field is written when it differs from its IDL default, as the generated
``*_gen_json`` functions decide (gentypes.get_default_expr): structures and keyed unions
always; arrays when not empty; a field or type with an ``init_val`` when it differs from it;
defbools, bitmaps, uuids, macs and string lists when not "default"/empty/nil/zero; anything
else (integers, strings, enums without init_val) when non-zero / non-NULL.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from ..libxlu.cfg import parse_number
from ..libxlu import vif as libxlu_vif
from ..libxlu.cpumap import parse_cpurange
from ..paths import XEN_SCRIPT_DIR
from .config import DomainConfig
from .devices import DeviceSpecError, parse_disk

#: xl.cfg's action words (xl_parse.c action_on_shutdown_names) to libxl's enum strings
#: (libxl_action_on_shutdown_to_string: the IDL value names, lower case).
ACTIONS = {"destroy": "destroy", "restart": "restart", "rename-restart": "restart_rename",
           "preserve": "preserve", "coredump-destroy": "coredump_destroy",
           "coredump-restart": "coredump_restart", "soft-reset": "soft_reset"}
#: libxl_action_on_shutdown's init_val: the value a field is left out for.
ACTION_DEFAULT = "destroy"
#: xl.c's run_hotplug_scripts and claim_mode defaults (xl.conf may change them).
RUN_HOTPLUG_SCRIPTS = True
SECINITSID_DOMU = 12
CLAIM_MODE = True

# Field orders: libxl_types.idl, Xen 4.17.
C_INFO = ("type", "hap", "oos", "ssidref", "ssid_label", "name", "domid", "uuid", "xsdata",
          "platformdata", "poolid", "pool_name", "run_hotplug_scripts", "driver_domain",
          "passthrough", "xend_suspend_evtchn_compat")
B_INFO = ("max_vcpus", "avail_vcpus", "cpumap", "nodemap", "vcpu_hard_affinity",
          "vcpu_soft_affinity", "numa_placement", "tsc_mode", "max_memkb", "target_memkb",
          "video_memkb", "shadow_memkb", "iommu_memkb", "rtc_timeoffset", "exec_ssidref",
          "exec_ssid_label", "localtime", "disable_migrate", "cpuid", "blkdev_start",
          "vnuma_nodes", "max_grant_frames", "max_maptrack_frames", "max_grant_version",
          "device_model_version", "device_model_stubdomain", "stubdomain_memkb",
          "stubdomain_kernel", "stubdomain_cmdline", "stubdomain_ramdisk", "device_model",
          "device_model_ssidref", "device_model_ssid_label", "device_model_user", "extra",
          "extra_pv", "extra_hvm", "sched_params", "ioports", "irqs", "iomem", "claim_mode",
          "event_channels", "kernel", "cmdline", "ramdisk", "device_tree", "acpi", "bootloader",
          "bootloader_args", "timer_mode", "nested_hvm", "apic", "dm_restrict", "tee",
          "type.hvm", "type.pv", "type.pvh", "arch_arm", "arch_x86", "altp2m",
          "vmtrace_buf_kb", "vpmu")
HVM = ("firmware", "bios", "pae", "apic", "acpi", "acpi_s3", "acpi_s4", "acpi_laptop_slate",
       "nx", "viridian", "viridian_enable", "viridian_disable", "timeoffset", "hpet",
       "vpt_align", "mmio_hole_memkb", "timer_mode", "nested_hvm", "altp2m", "system_firmware",
       "smbios_firmware", "acpi_firmware", "hdtype", "nographic", "vga", "vnc", "keymap", "sdl",
       "spice", "gfx_passthru", "gfx_passthru_kind", "serial", "boot", "usb", "usbversion",
       "usbdevice", "vkb_device", "soundhw", "xen_platform_pci", "usbdevice_list",
       "vendor_device", "ms_vm_genid", "serial_list", "rdm", "rdm_mem_boundary_memkb",
       "mca_caps")
PV = ("kernel", "slack_memkb", "bootloader", "bootloader_args", "cmdline", "ramdisk", "e820_host")
PVH = ("pvshim", "pvshim_path", "pvshim_cmdline", "pvshim_extra")
VNC = ("enable", "listen", "passwd", "display", "findunused")
SDL = ("enable", "opengl", "display", "xauthority")
SCHED = ("sched", "weight", "cap", "period", "budget", "extratime", "slice", "latency")
DISK = ("backend_domid", "backend_domname", "pdev_path", "vdev", "backend", "format", "script",
        "removable", "readwrite", "is_cdrom", "direct_io_safe", "discard_enable",
        "specification", "transport", "irq", "base", "colo_enable", "colo_restore_enable",
        "colo_host", "colo_port", "colo_export", "active_disk", "hidden_disk", "trusted")
NIC = ("backend_domid", "backend_domname", "devid", "mtu", "model", "mac", "ip", "bridge",
       "ifname", "script", "nictype", "rate_bytes_per_interval", "rate_interval_usecs",
       "gatewaydev", "trusted")
VFB = ("backend_domid", "backend_domname", "devid", "vnc", "sdl", "keymap")
DOMAIN_CONFIG = ("c_info", "b_info", "disks", "nics", "pcidevs", "rdms", "dtdevs", "vfbs",
                 "vkbs", "vtpms", "p9s", "pvcallsifs", "vdispls", "vsnds", "channels",
                 "usbctrls", "usbdevs", "on_poweroff", "on_reboot", "on_watchdog", "on_crash",
                 "on_soft_reset")

_VGA = {"stdvga": "std", "cirrus": "cirrus", "none": "none", "qxl": "qxl"}
_DM_VERSION = {"qemu-xen": "qemu_xen", "qemu-xen-traditional": "qemu_xen_traditional"}


@dataclass(frozen=True)
class LiveState:
    """What libxl_retrieve_domain_configuration reads back from a running domain
    (libxl_domain.c: retrieve_domain_configuration_end): its name and uuid, the online vCPUs,
    the memory target and static-max from xenstore, the scheduler's parameters, and each
    vif's MAC as the frontend has it."""

    domid: int
    name: str
    uuid: str
    online_vcpus: int
    target_memkb: int
    max_memkb: int
    weight: int
    cap: int
    nic_macs: tuple[tuple[int, str], ...] = ()

    @classmethod
    def from_info(cls, info: dict[str, Any], nic_macs: Iterable[tuple[int, str]] = ()) -> "LiveState":
        """From a ``sysctl.getdomaininfolist`` record (pyxen's libxl_dominfo)."""
        return cls(domid=info["domid"], name=info["name"], uuid=info["uuid"],
                   online_vcpus=info["online_vcpus"], target_memkb=info["memory_kb"],
                   max_memkb=info["max_memkb"], weight=info.get("cpu_weight", 256),
                   cap=info.get("cap", 0), nic_macs=tuple(nic_macs))


# ---- the yajl layout ------------------------------------------------------------------------
_INDENT = "    "  # yajl 2's default indent string (libxl_yajl_gen_alloc only sets beautify)


def _string(s: str) -> str:
    """yajl_string_encode: ", \\ and the C escapes, other control bytes as \\u00xx; '/' and
    non-ASCII are left as they are."""
    out = []
    for ch in s:
        code = ord(ch)
        if ch in _ESC:
            out.append(_ESC[ch])
        elif code < 0x20:
            out.append("\\u00%02x" % code)
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


_ESC = {'"': '\\"', "\\": "\\\\", "\r": "\\r", "\n": "\\n", "\f": "\\f", "\b": "\\b",
        "\t": "\\t"}


def _value(v: object, depth: int) -> str:
    if isinstance(v, dict):
        inner = ",\n".join(_INDENT * (depth + 1) + _string(str(k)) + ": " + _value(x, depth + 1)
                           for k, x in v.items())
        return "{\n" + inner + "\n" + _INDENT * depth + "}"
    if isinstance(v, list):
        inner = ",\n".join(_INDENT * (depth + 1) + _value(x, depth + 1) for x in v)
        return "[\n" + inner + "\n" + _INDENT * depth + "]"
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return _string(v)
    raise TypeError(f"libxl JSON has no {type(v).__name__}")


def dumps(value: object) -> str:
    """``value`` as libxl's yajl generator writes it (beautify on, four spaces): ``{`` and
    ``[`` end their line, an empty map is ``{``, an empty line, ``}``; ``": "`` between key and
    value; a final newline once the top-level value is complete."""
    return _value(value, 0) + "\n"


# ---- xl_parse.c, the parts pyxen reads -------------------------------------------------------
def _defbool(value: bool | None) -> str | None:
    """libxl_defbool_to_string; None is "<default>", which the generator leaves out."""
    return None if value is None else ("True" if value else "False")


def _settings_of_fields(cfg: DomainConfig) -> dict[str, object]:
    """The keys a DomainConfig without the file's settings stands for (one built in code, or
    a record kept by an older pyxen): what xl.cfg would have said to give these values."""
    raw: dict[str, object] = {"memory": str(cfg.memory), "maxmem": str(cfg.maxmem),
                              "vcpus": str(cfg.vcpus), "maxvcpus": str(cfg.maxvcpus),
                              "disk": cfg.disks, "vif": cfg.vifs}
    if cfg.cmdline:
        raw["cmdline"] = cfg.cmdline
    if cfg.cpus is not None:
        raw["cpus"] = cfg.cpus
    if cfg.cpu_weight != 256:
        raw["cpu_weight"] = str(cfg.cpu_weight)
    if cfg.cap:
        raw["cap"] = str(cfg.cap)
    if cfg.vnc:
        raw.update(vnc="1", vnclisten=cfg.vnclisten, vncunused=str(int(cfg.vncunused)))
        if cfg.vncdisplay is not None:
            raw["vncdisplay"] = str(cfg.vncdisplay)
        if cfg.vncpasswd:
            raw["vncpasswd"] = cfg.vncpasswd
    return raw


class _Settings:
    """xl.cfg as read (DomainConfig.settings), with xlu_cfg_get_*'s conversions."""

    def __init__(self, cfg: DomainConfig) -> None:
        self.raw = dict(cfg.settings) or _settings_of_fields(cfg)
        self.appended = frozenset(cfg.appended)

    def __contains__(self, key: str) -> bool:
        return key in self.raw

    def string(self, key: str) -> str | None:
        v = self.raw.get(key)
        return v if isinstance(v, str) else None

    def long(self, key: str) -> int | None:
        v = self.raw.get(key)
        if not isinstance(v, str) or key in self.appended:  # "can't use += with numbers"
            return None
        try:
            return parse_number(v)
        except ValueError:
            return None

    def defbool(self, key: str) -> str | None:
        """xlu_cfg_get_defbool: a number, true when non-zero; absent or not a number: default."""
        n = self.long(key)
        return None if n is None else _defbool(n != 0)

    def strings(self, key: str) -> list[str] | None:
        v = self.raw.get(key)
        if isinstance(v, tuple) and all(isinstance(x, str) for x in v):
            return [str(x) for x in v]
        return None


def _ordered(values: Mapping[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    """``values`` in IDL order, without the fields the generator leaves out (None)."""
    unknown = set(values) - set(order)
    assert not unknown, f"not in libxl's IDL: {sorted(unknown)}"
    return {k: values[k] for k in order if values.get(k) is not None}


def _cmdline(s: _Settings) -> str | None:
    """xl_parse.c parse_cmdline: cmdline=, else "root=<root> <extra>"."""
    cmdline, root, extra = s.string("cmdline"), s.string("root"), s.string("extra")
    if cmdline is not None:
        return cmdline
    if root is not None and extra is not None:
        return f"root={root} {extra}"
    if root is not None:
        return f"root={root}"
    return extra


def _vnc(s: _Settings) -> dict[str, object]:
    """parse_top_level_vnc_options."""
    return _ordered({"enable": s.defbool("vnc"), "listen": s.string("vnclisten"),
                     "passwd": s.string("vncpasswd"), "display": s.long("vncdisplay") or None,
                     "findunused": s.defbool("vncunused")}, VNC)


def _sdl(s: _Settings) -> dict[str, object]:
    """parse_top_level_sdl_options."""
    return _ordered({"enable": s.defbool("sdl"), "opengl": s.defbool("opengl"),
                     "display": s.string("display"), "xauthority": s.string("xauthority")}, SDL)


def _atom_or_list(s: _Settings, key: str) -> tuple[str | None, list[str] | None]:
    """serial= and usbdevice=: a list fills the *_list field, a single string the other."""
    lst = s.strings(key)
    return (None, lst or None) if lst is not None else (s.string(key), None)


def _hvm(cfg: DomainConfig, s: _Settings) -> dict[str, object]:
    serial, serial_list = _atom_or_list(s, "serial")
    usbdevice, usbdevice_list = _atom_or_list(s, "usbdevice")
    vga = s.string("vga")
    kind = _VGA.get(vga) if vga is not None else (
        None if s.long("stdvga") is None else ("std" if s.long("stdvga") else "cirrus"))
    mmio_hole = s.long("mmio_hole")
    return {
        "pae": s.defbool("pae"), "acpi_s3": s.defbool("acpi_s3"), "acpi_s4": s.defbool("acpi_s4"),
        "acpi_laptop_slate": s.defbool("acpi_laptop_slate"), "nx": s.defbool("nx"),
        "viridian": s.defbool("viridian"), "hpet": s.defbool("hpet"),
        "vpt_align": s.defbool("vpt_align"),
        "mmio_hole_memkb": mmio_hole * 1024 if mmio_hole is not None else None,
        "altp2m": s.defbool("altp2mhvm"), "smbios_firmware": s.string("smbios_firmware"),
        "acpi_firmware": s.string("acpi_firmware"),
        "hdtype": s.string("hdtype") if s.string("hdtype") == "ahci" else None,
        "nographic": s.defbool("nographic"), "vga": _ordered({"kind": kind}, ("kind",)),
        "vnc": _vnc(s), "keymap": s.string("keymap"), "sdl": _sdl(s),
        "spice": {"enable": s.defbool("spice")} if s.defbool("spice") else {},
        "serial": serial, "boot": s.string("boot"), "usb": s.defbool("usb"),
        "usbversion": s.long("usbversion") or None, "usbdevice": usbdevice,
        "vkb_device": s.defbool("vkb_device"), "soundhw": s.string("soundhw"),
        "xen_platform_pci": s.defbool("xen_platform_pci"), "usbdevice_list": usbdevice_list,
        "serial_list": serial_list, "rdm": {},
    }


def _disk(spec: str, cfg_spec: str) -> dict[str, object]:
    """libxlu_disk.c's result for one spec: ``spec`` as written decides what was given,
    ``cfg_spec`` (its target made absolute, as pyxen opens it) gives the values.

    :raise DeviceSpecError: as ``xl create`` reports a bad spec.
    """
    d = parse_disk(cfg_spec)
    tokens = [t.strip() for t in spec.split(",")]
    given = {t.partition("=")[0] for t in tokens}
    cdrom = d.devtype == "cdrom"
    backend = next((t.partition("=")[2] for t in tokens if t.startswith("backendtype=")), None)
    discard = "True" if "discard" in given else ("False" if "no-discard" in given else None)
    trusted = "True" if "trusted" in given else ("False" if "untrusted" in given else None)
    return {"pdev_path": d.target, "vdev": d.vdev, "backend": backend, "format": d.format,
            "script": d.script, "removable": 1 if cdrom else None,
            "readwrite": None if d.readonly else 1, "is_cdrom": 1 if cdrom else None,
            "direct_io_safe": True if d.direct_io_safe else None, "discard_enable": discard,
            "trusted": trusted}


def _mac(text: str) -> str | None:
    """A MAC as LIBXL_MAC_FMT prints it (%02hhx:...), read as xl reads mac=; None if bad."""
    got, ok = libxlu_vif.parse_mac(text)
    return ":".join(f"{b:02x}" for b in got) if ok else None


def _nic(devid: int, spec: str) -> dict[str, object]:
    """parse_nic_config for one vif spec (libxlu/vif.py; ARRAY_EXTEND_INIT gives it its index
    as devid). A spec xl would exit on never gets here (config.py refuses it first)."""
    v = libxlu_vif.parse_vif(spec, devid).spec
    return {"backend_domname": v.backend_domname, "devid": v.devid, "mtu": v.mtu or None,
            "model": v.model, "mac": v.mac, "ip": v.ip, "bridge": v.bridge, "ifname": v.ifname,
            "script": v.script, "nictype": v.nictype,
            "rate_bytes_per_interval": v.rate_bytes_per_interval or None,
            "rate_interval_usecs": v.rate_interval_usecs or None, "gatewaydev": v.gatewaydev}


def parsed(cfg: DomainConfig, nr_cpus: int | None = None) -> dict[str, Any]:
    """libxl_domain_config as xl_parse.c's parse_config_data leaves it, before libxl has set
    any default: the fields, by part, with None for those the generator leaves out.

    ``nr_cpus`` sizes a ``cpus="all"`` map (the host's CPUs; default: this machine's).
    """
    s = _Settings(cfg)
    c_info = {"type": cfg.type, "hap": s.defbool("hap"), "oos": s.defbool("oos"),
              "name": cfg.name, "domid": cfg.domid or None, "uuid": cfg.uuid,
              "pool_name": s.string("pool"),
              "run_hotplug_scripts": _defbool(RUN_HOTPLUG_SCRIPTS),
              "driver_domain": s.defbool("driver_domain"),
              "passthrough": s.string("passthrough"),
              "xend_suspend_evtchn_compat": s.defbool("xend_suspend_evtchn_compat")}

    vcpus, maxvcpus = s.long("vcpus"), s.long("maxvcpus")
    memory, maxmem = s.long("memory"), s.long("maxmem")
    max_vcpus = maxvcpus if maxvcpus is not None else (vcpus or 0)
    target_memkb = memory * 1024 if memory is not None else None
    max_memkb = maxmem * 1024 if maxmem is not None else target_memkb
    # parse_vcpu_affinity: a string is every vCPU's map; a list gives vCPU i the i-th map (the
    # items past max_vcpus ignored) and turns automatic NUMA placement off.
    hard: list[list[int]] | None = None
    numa_placement: str | None = None
    host_cpus = nr_cpus or os.cpu_count() or 1

    def cpumap(text: str) -> list[int]:
        """libxl_cpu_bitmap_alloc sizes the map in whole bytes; bits past it are dropped."""
        return sorted(c for c in parse_cpurange(text, host_cpus) if c < (host_cpus + 7) // 8 * 8)

    cpus = s.string("cpus")
    if cpus is not None and max_vcpus:
        hard = [cpumap(cpus)] * max_vcpus
    elif isinstance(cfg.cpus, tuple) and cfg.cpus:
        hard = [cpumap(c) for c in cfg.cpus[:max_vcpus]] or None
        numa_placement = _defbool(False)
    sched = {"weight": s.long("cpu_weight"), "cap": s.long("cap"), "period": s.long("period"),
             "slice": s.long("slice"), "latency": s.long("latency"),
             "extratime": s.long("extratime")}
    # Paths as pyxen opens them: made absolute against xl's working directory (config.load),
    # where libxl keeps them as written and opens them from xl's working directory itself.
    kernel = cfg.kernel
    if cfg.type == "hvm" and kernel is not None and os.path.basename(kernel) == "hvmloader":
        kernel = None  # xl_parse.c: "you seem to be using kernel directive to override..."
    videoram, shadow = s.long("videoram"), s.long("shadow_memory")
    dm_version = s.string("device_model_version")
    b_info: dict[str, object] = {
        "max_vcpus": max_vcpus or None,
        "avail_vcpus": list(range(vcpus)) if vcpus else None,
        "vcpu_hard_affinity": hard, "numa_placement": numa_placement,
        "max_memkb": max_memkb, "target_memkb": target_memkb,
        "video_memkb": videoram * 1024 if videoram is not None else None,
        "shadow_memkb": shadow * 1024 if shadow is not None else None,
        "rtc_timeoffset": s.long("rtc_timeoffset") or None,
        "localtime": s.defbool("localtime"), "disable_migrate": s.defbool("nomigrate"),
        "device_model_version": _DM_VERSION.get(dm_version) if dm_version else None,
        "device_model_stubdomain": s.defbool("device_model_stubdomain_override"),
        "extra": list(cfg.device_model_args) or None,
        "extra_pv": list(cfg.device_model_args_pv) or None,
        "extra_hvm": list(cfg.device_model_args_hvm) or None,
        "sched_params": sched, "claim_mode": _defbool(CLAIM_MODE),
        "event_channels": s.long("max_event_channels") or None,
        "kernel": kernel, "cmdline": _cmdline(s), "ramdisk": cfg.ramdisk,
        "bootloader": cfg.bootloader, "bootloader_args": list(cfg.bootloader_args) or None,
        "acpi": s.defbool("acpi"), "nested_hvm": s.defbool("nestedhvm"),
        "apic": s.defbool("apic") if cfg.type == "hvm" else None,
        "dm_restrict": s.defbool("dm_restrict"), "arch_arm": {},
        "arch_x86": {"msr_relaxed": s.defbool("msr_relaxed")}, "vpmu": s.defbool("vpmu"),
    }
    if cfg.type == "hvm":
        b_info["type.hvm"] = _hvm(cfg, s)
    elif cfg.type == "pv":
        b_info["type.pv"] = {"e820_host": s.defbool("e820_host")}
    else:
        b_info["type.pvh"] = {"pvshim": s.defbool("pvshim"), "pvshim_path": s.string("pvshim_path"),
                              "pvshim_cmdline": s.string("pvshim_cmdline"),
                              "pvshim_extra": s.string("pvshim_extra")}

    # The devices the domain has now: the file's, changed by block-/network-attach and -detach
    # (which keep cfg.disks and cfg.vifs in step); a disk keeps its spelling from the file
    # while the file's list still describes the domain.
    disk1 = s.string("disk")
    written = s.strings("disk") or ([disk1] if disk1 else [])
    if len(written) != len(cfg.disks):
        written = list(cfg.disks)
    disks = [_disk(w, c) for w, c in zip(written, cfg.disks)]
    nics = [_nic(i, spec) for i, spec in enumerate(cfg.vifs)]
    vfbs: list[dict[str, object]] = []
    vkbs: list[dict[str, object]] = []
    if cfg.type == "pv" and s.long("vnc"):  # xl_parse.c: a PV guest's vnc= makes a vfb and vkb
        vfbs = [{"devid": 0, "vnc": _vnc(s), "sdl": _sdl(s), "keymap": s.string("keymap")}]
        vkbs = [{"devid": 0}]
    top: dict[str, Any] = {"c_info": c_info, "b_info": b_info, "disks": disks, "nics": nics,
                           "vfbs": vfbs, "vkbs": vkbs}
    for key in ("on_poweroff", "on_reboot", "on_watchdog", "on_crash", "on_soft_reset"):
        top[key] = ACTIONS[getattr(cfg, key)]
    return top


def _set(d: dict[str, Any], key: str, value: object) -> None:
    """libxl_defbool_setdefault and its kin: fill ``key`` unless the config set it."""
    if d.get(key) is None:
        d[key] = value


def retrieved(cfg: DomainConfig, live: LiveState, nics: Iterable[Any] = ()) -> dict[str, Any]:
    """libxl_domain_config as libxl_retrieve_domain_configuration returns it for a running
    domain: what xl parsed, the defaults libxl_create.c's *_setdefault functions filled in at
    create (those that describe what pyxen builds), then the live values read back.

    ``nics``: the NicSpecs the domain was built with (their MACs, when no frontend has one).
    """
    top = parsed(cfg)
    c, b = top["c_info"], top["b_info"]
    c["name"], c["uuid"] = live.name, live.uuid
    if cfg.type != "pv":
        _set(c, "hap", "True")
        _set(c, "oos", "True")
    # libxl__domain_create_info_setdefault: SECINITSID_DOMU, the 12th of FLASK's initial SIDs
    # (xen/xsm/flask/policy/initial_sids, numbered from 1 by mkflask.sh).
    _set(c, "ssidref", SECINITSID_DOMU)
    _set(c, "driver_domain", "False")
    _set(c, "passthrough", "disabled")
    _set(c, "xend_suspend_evtchn_compat", "False")

    _set(b, "device_model_stubdomain", "False")
    _set(b, "vpmu", "False")
    _set(b, "device_model_version", "qemu_xen")
    b["blkdev_start"] = b.get("blkdev_start") or "xvda"
    b["max_vcpus"] = b.get("max_vcpus") or 1
    b["avail_vcpus"] = list(range(min(live.online_vcpus, b["max_vcpus"]))) or None
    _set(b, "numa_placement", "True")
    b["max_memkb"], b["target_memkb"] = live.max_memkb, live.target_memkb
    b["stubdomain_memkb"] = 0
    _set(b, "localtime", "False")
    _set(b, "disable_migrate", "False")
    _set(b, "event_channels", 1023)
    _set(b, "dm_restrict", "False")
    _set(b, "acpi", "True")  # libxl_x86.c libxl__arch_domain_build_info_setdefault
    b["iommu_memkb"] = 0
    _set(b, "shadow_memkb", 0 if cfg.type != "pvh" else None)
    b["sched_params"] = {"sched": "credit", "weight": live.weight, "cap": live.cap}
    b["arch_x86"] = {"msr_relaxed": b["arch_x86"].get("msr_relaxed") or "False"}
    if cfg.type != "pv":
        _set(b, "timer_mode", "no_delay_for_missed_ticks")
        _set(b, "apic", "True")
        _set(b, "nested_hvm", "False")
    if cfg.type == "hvm":
        h = b["type.hvm"]
        _set(h, "bios", "seabios")
        for key, value in (("pae", True), ("acpi", True), ("acpi_s3", True), ("acpi_s4", True),
                           ("acpi_laptop_slate", False), ("nx", True), ("viridian", False),
                           ("hpet", True), ("vpt_align", True), ("altp2m", False),
                           ("usb", False), ("vkb_device", True), ("xen_platform_pci", True),
                           ("nographic", False), ("gfx_passthru", False)):
            _set(h, key, _defbool(value))
        _set(h, "mmio_hole_memkb", 0)
        # pyxen's HVM guests have QEMU's standard VGA (-vga std): libxl's 16 MiB for it.
        h["vga"] = {"kind": "std"}
        _set(b, "video_memkb", 16 * 1024)
        _set(h, "boot", "cda")
        h["spice"] = {"enable": h["spice"].get("enable") or "False"}
        vnc = dict(h["vnc"])
        vnc["enable"] = _defbool(cfg.vnc)
        if cfg.vnc:
            vnc["findunused"] = _defbool(cfg.vncunused)
            _set(vnc, "listen", cfg.vnclisten)
        h["vnc"] = _ordered(vnc, VNC)
        h["sdl"] = _ordered({**h["sdl"], "enable": h["sdl"].get("enable") or "False"}, SDL)
        if h.get("usb") == "True" or h.get("usbdevice") or h.get("usbdevice_list"):
            _set(h, "usbversion", 2)
        h["rdm"] = {"policy": "relaxed"}
        h["rdm_mem_boundary_memkb"] = 2048 * 1024
    elif cfg.type == "pv":
        b["type.pv"] = {"slack_memkb": 0, "e820_host": b["type.pv"].get("e820_host") or "False"}
        _set(b, "video_memkb", 0)
    else:
        _set(b["type.pvh"], "pvshim", "False")
        _set(b, "video_memkb", 0)

    for disk, spec in zip(top["disks"], cfg.disks):
        d = parse_disk(spec)
        disk["backend"] = d.backendtype
        _set(disk, "discard_enable", _defbool(disk.get("readwrite") == 1))
        disk["colo_enable"] = disk["colo_restore_enable"] = "False"
        _set(disk, "trusted", "True")
        disk["specification"] = "xen"
    macs = dict(live.nic_macs)
    built = {n.devid: n for n in nics}
    for nic in top["nics"]:
        devid = nic["devid"]
        mac = macs.get(devid) or (built[devid].mac if devid in built else None)
        nic["mac"] = _mac(mac) if mac else nic.get("mac")
        _set(nic, "mtu", 1500)
        _set(nic, "model", "rtl8139")
        _set(nic, "bridge", "xenbr0")
        _set(nic, "script", f"{XEN_SCRIPT_DIR}/vif-bridge")
        nic["nictype"] = "vif_ioemu" if cfg.type == "hvm" and not nic.get("nictype") else (
            nic.get("nictype") or "vif")
        _set(nic, "trusted", "True")
    return top


def _shape(top: dict[str, Any]) -> dict[str, Any]:
    """The JSON object: every part in IDL order, defaults left out."""
    b = dict(top["b_info"])
    b["sched_params"] = _ordered(b["sched_params"], SCHED)
    b["arch_x86"] = _ordered(b["arch_x86"], ("msr_relaxed",))
    for key, order in (("type.hvm", HVM), ("type.pv", PV), ("type.pvh", PVH)):
        if key in b:
            b[key] = _ordered(b[key], order)
    out: dict[str, Any] = {
        "c_info": _ordered(top["c_info"], C_INFO),
        "b_info": _ordered(b, B_INFO),
        "disks": [_ordered(d, DISK) for d in top["disks"]] or None,
        "nics": [_ordered(n, NIC) for n in top["nics"]] or None,
        "vfbs": [_ordered({**v, "vnc": v["vnc"], "sdl": v["sdl"]}, VFB) for v in top["vfbs"]] or None,
        "vkbs": top["vkbs"] or None,
    }
    for key in ("on_poweroff", "on_reboot", "on_watchdog", "on_crash", "on_soft_reset"):
        out[key] = None if top[key] == ACTION_DEFAULT else top[key]
    return _ordered(out, DOMAIN_CONFIG)


def create_dryrun(cfg: DomainConfig, nr_cpus: int | None = None) -> str:
    """``xl create -n``: libxl_domain_config_to_json of the parsed config (xl_vmcontrol.c
    create_domain), with the newline yajl ends a complete value with.

    :raise DeviceSpecError: a disk spec xl would refuse.
    """
    return dumps(_shape(parsed(cfg, nr_cpus)))


def device_disk(spec: str) -> str:
    """libxl_device_disk_to_json of one disk spec as xl block-attach parses it (what ``xl -N
    block-attach`` prints after ``disk: ``).

    :raise DeviceSpecError: the spec does not parse.
    """
    return dumps(_ordered(_disk(spec, spec), DISK))


def device_nic(spec: str) -> str:
    """libxl_device_nic_to_json of one vif spec as xl network-attach parses it (what ``xl -N
    network-attach`` prints after ``vif: ``): no devid yet (libxl picks it when it adds the
    NIC), so none is written."""
    return dumps(_ordered({**_nic(0, spec), "devid": None}, NIC))


def list_long(domains: Iterable[tuple[int, dict[str, Any]]]) -> str:
    """``xl list -l``: one JSON array of {"domid": N, "config": {...}} (xl_info.c
    list_domains_details), printed with puts(), so one more newline after yajl's."""
    return dumps([{"domid": domid, "config": config} for domid, config in domains]) + "\n"


def live_config(cfg: DomainConfig, live: LiveState, nics: Iterable[Any] = ()) -> dict[str, Any]:
    """The ``config`` object ``xl list -l`` prints for one running domain."""
    return _shape(retrieved(cfg, live, nics))


__all__ = ["LiveState", "create_dryrun", "device_disk", "device_nic", "dom0_config", "dumps", "list_long", "live_config", "parsed",
           "retrieved", "DeviceSpecError"]


def dom0_config(live: LiveState) -> dict[str, Any]:
    """Domain 0's config as ``xl list -l`` shows it: xen-init-dom0's stub (init-dom-json.c:
    type pv, the build info initialised for pv, the uuid when not nil) with what
    libxl_retrieve_domain_configuration reads back (name, memory, scheduler). The stub's
    max_vcpus is 0, so no vCPU map is read back."""
    nil = live.uuid.replace("-", "").strip("0") == ""
    c_info = {"type": "pv", "name": live.name, "uuid": None if nil else live.uuid}
    b_info: dict[str, Any] = {"max_memkb": live.max_memkb, "target_memkb": live.target_memkb,
              "sched_params": {"sched": "credit", "weight": live.weight, "cap": live.cap},
              "type.pv": {}, "arch_arm": {}, "arch_x86": {}}
    return _ordered({"c_info": _ordered(c_info, C_INFO),
                     "b_info": _ordered({**b_info, "sched_params": _ordered(b_info["sched_params"], SCHED)},
                                        B_INFO)}, DOMAIN_CONFIG)
