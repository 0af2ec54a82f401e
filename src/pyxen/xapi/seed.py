"""The state of a fresh host, as xapi makes it on first boot: one pool whose master is this
host, Domain-0 as the control-domain VM, a local file SR (the default SR) and an ISO SR, network
xenbr0 with PIF eth0, and a Debian PV template whose kernel is the demo guest's.

Idempotent: each object is made only when missing (matched by a stable key), so a restarted
xapi finds what it made and a newer pyxen adds what it lacks.
"""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path
from typing import Any

from ..paths import DEMO_CMDLINE, cache_dir
from .datamodel import NULL_REF
from .db import Database
from .dispatch import now

PRODUCT_VERSION = "8.2.1"
API_VERSION = (2, 21)
MiB = 1024 * 1024

#: The template's provisioning spec (xapi_templates.ml's "disks" XML): one 1 GiB system disk.
DEBIAN_DISKS = ('<provision><disk device="0" size="1073741824" sr="" bootable="true" '
                'type="system"/></provision>')
DEBIAN_TEMPLATE = "Debian Bookworm 12"


def demo_kernel() -> tuple[str, str, str]:
    """The demo guest's kernel, initramfs and command line (what `make run`'s guest boots)."""
    root = cache_dir() / "demo"
    return str(root / "vmlinuz"), str(root / "initrd.img"), DEMO_CMDLINE


def _one(db: Database, cls: str, key: dict[str, Any], fields: dict[str, Any]) -> str:
    found = db.find(cls, **key)
    if found:
        return found[0]
    return db.create(cls, {**key, **fields})


def seed(db: Database, root: Path, memory_total: int, cpus: int) -> str:
    """Make what is missing; return this host's ref."""
    hostname = socket.gethostname()
    with db.transaction():
        metrics = _one(db, "host_metrics", {"other_config": {"pyxen": "host"}},
                       {"memory_total": memory_total, "live": True, "last_updated": now()})
        host = _one(db, "host", {"hostname": hostname}, {
            "name_label": hostname, "name_description": "Default install", "address": "127.0.0.1",
            "enabled": True, "API_version_major": API_VERSION[0], "API_version_minor": API_VERSION[1],
            "API_version_vendor": "XenSource", "API_version_vendor_implementation": {"pyxen": "0.1.0"},
            "software_version": {"product_version": PRODUCT_VERSION, "product_version_text": "8.2",
                                 "product_version_text_short": "8.2", "platform_name": "XCP",
                                 "platform_version": "3.2.1", "product_brand": "pyxen",
                                 "xapi": f"{API_VERSION[0]}.{API_VERSION[1]}", "xen": "4.17.0-pyxen",
                                 "linux": platform.release(), "hostname": hostname,
                                 "build_number": "pyxen", "network_backend": "bridge"},
            "capabilities": ["xen-3.0-x86_64", "hvm-3.0-x86_64"], "metrics": metrics,
            "sched_policy": "credit", "supported_bootloaders": ["pygrub"],
            "cpu_info": {"cpu_count": str(cpus), "socket_count": "1", "vendor": _cpu_field("vendor_id"),
                         "modelname": _cpu_field("model name"), "speed": _cpu_field("cpu MHz")},
            "edition": "free", "license_params": {}, "bios_strings": {}})
        for n in range(cpus):
            _one(db, "host_cpu", {"host": host, "number": n},
                 {"vendor": _cpu_field("vendor_id"), "modelname": _cpu_field("model name"),
                  "speed": int(float(_cpu_field("cpu MHz") or 0)), "flags": _cpu_field("flags")})
        sr = _one(db, "SR", {"other_config": {"pyxen": "local"}}, {
            "name_label": "Local storage", "name_description": f"Image files in {root / 'sr'}",
            "type": "ext", "content_type": "user", "shared": False,
            "physical_size": _disk_size(root), "sm_config": {"path": str(root / "sr")}})
        iso = _one(db, "SR", {"other_config": {"pyxen": "iso"}}, {
            "name_label": "ISO library", "name_description": f"ISO images in {root / 'iso'}",
            "type": "iso", "content_type": "iso", "shared": False, "sm_config": {"path": str(root / "iso")}})
        for s in (sr, iso):
            _one(db, "PBD", {"SR": s, "host": host}, {"currently_attached": True,
                                                      "device_config": {"location": db.get("SR", s)["sm_config"]["path"]}})
        network = _one(db, "network", {"bridge": "xenbr0"}, {
            "name_label": "Pool-wide network associated with eth0", "MTU": 1500, "managed": True,
            "other_config": {}})
        _one(db, "PIF", {"device": "eth0", "host": host}, {
            "network": network, "MAC": "", "MTU": 1500, "VLAN": -1, "physical": True, "currently_attached": True,
            "ip_configuration_mode": "Static", "IP": "", "management": True, "managed": True})
        if not db.refs("pool"):
            db.create("pool", {"name_label": "", "master": host, "default_SR": sr, "suspend_image_SR": sr,
                               "crash_dump_SR": sr, "restrictions": {}, "cpu_info": {"cpu_count": str(cpus)}})
        dom0 = _one(db, "VM", {"is_control_domain": True, "resident_on": host}, {
            "name_label": f"Control domain on host: {hostname}", "power_state": "Running", "domid": 0,
            "is_a_template": False, "memory_static_max": memory_total, "memory_dynamic_max": memory_total,
            "VCPUs_max": cpus, "VCPUs_at_startup": cpus, "domain_type": "pv", "HVM_boot_policy": ""})
        host_rec = db.get("host", host)
        if host_rec["control_domain"] == NULL_REF:
            db.set("host", host, control_domain=dom0)
        if db.field("VM", dom0, "metrics") == NULL_REF:
            db.set("VM", dom0, metrics=db.create("VM_metrics", {"VCPUs_number": cpus, "memory_actual": memory_total,
                                                               "start_time": now(), "current_domain_type": "pv"}))
        kernel, ramdisk, args = demo_kernel()
        _one(db, "VM", {"name_label": DEBIAN_TEMPLATE, "is_default_template": True}, {
            "name_description": "The pyxen demo guest (a Debian cloud kernel and a busybox initramfs) as a PV template",
            "is_a_template": True, "user_version": 1, "domid": -1,
            "memory_static_min": 64 * MiB, "memory_dynamic_min": 128 * MiB, "memory_dynamic_max": 128 * MiB,
            "memory_static_max": 128 * MiB, "VCPUs_max": 1, "VCPUs_at_startup": 1,
            "actions_after_shutdown": "destroy", "actions_after_reboot": "restart",
            "actions_after_crash": "restart", "PV_kernel": kernel, "PV_ramdisk": ramdisk, "PV_args": args,
            "HVM_boot_policy": "", "domain_type": "pv",
            "other_config": {"disks": DEBIAN_DISKS, "default_template": "true", "linux_template": "true",
                             "install-methods": ""},
            "platform": {}, "recommendations": ""})
    return host


def _cpu_field(name: str) -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            k, _, v = line.partition(":")
            if k.strip() == name:
                return v.strip()
    except OSError:
        pass
    return ""


def _disk_size(root: Path) -> int:
    try:
        st = os.statvfs(root)
        return st.f_blocks * st.f_frsize
    except OSError:
        return 0
