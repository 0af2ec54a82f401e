"""xl's output formats, byte for byte, and the demo image's pure parts."""

from __future__ import annotations

import gzip
import io
import stat
from pathlib import Path

import pytest

from pyxen.cli.render import DomainRow, info_fields, uptime_text, xl_info, xl_list
from pyxen.images import cpio
from pyxen.images.demo import ImageBuildError, module_depends, module_load_order


def test_xl_list_matches_xen_bytes() -> None:
    out = xl_list([DomainRow("Domain-0", 0, 1024, 4, "r-----", 11794.3),
                   DomainRow("vm1", 3, 512, 1, "-b----", 2.04)])
    assert out == ("Name                                        ID   Mem VCPUs\tState\tTime(s)\n"
                   "Domain-0                                     0  1024     4     r-----   11794.3\n"
                   "vm1                                          3   512     1     -b----       2.0\n")


def test_xl_info_layout() -> None:
    phys = {"cpu_khz": 2266746, "nr_cpus": 4, "max_cpu_id": 3, "nr_nodes": 1, "cores_per_socket": 4,
            "threads_per_core": 1, "hw_cap": [1, 2, 3, 4, 5, 6, 7, 8], "virt_caps": ["pv", "hvm"],
            "total_pages": 262144, "free_pages": 131072, "outstanding_pages": 0,
            "sharing_freed_pages": 0, "sharing_used_frames": 0, "free_cpus": 0}
    ver = {"major": 4, "minor": 17, "extra": ".0", "capabilities": "xen-3.0-x86_64", "scheduler": "credit",
           "pagesize": 4096, "virt_start": 0xFFFF800000000000, "changeset": "c", "commandline": "dom0_mem=1024M",
           "compiler": "cc", "compile_by": "me", "compile_domain": "d", "compile_date": "today", "build_id": "b"}
    text = xl_info(info_fields(phys, ver))
    lines = text.splitlines()
    assert "cpu_mhz                : 2266.746" in lines
    assert "hw_caps                : 00000001:00000002:00000003:00000004:00000005:00000006:00000007:00000008" in lines
    assert "virt_caps              : pv hvm" in lines
    assert "total_memory           : 1024" in lines and "free_memory            : 512" in lines
    assert "xen_version            : 4.17.0" in lines and lines[-1] == "xend_config_format     : 4"
    assert xl_info(info_fields(phys, ver), "free_memory") == "512\n"
    assert xl_info(info_fields(phys, ver), "virt") == "pv hvm\n"


@pytest.mark.parametrize("secs, text", [(5, " 0:00:05"), (3725, " 1:02:05"), (86400 + 61, "1 day,  0:01:01"),
                                        (3 * 86400, "3 days,  0:00:00")])
def test_uptime_text(secs: int, text: str) -> None:
    assert uptime_text(secs) == text


def test_cpio_newc_layout() -> None:
    buf = io.BytesIO()
    cpio.write(buf, [cpio.directory("bin"), cpio.regular("init", b"#!/bin/sh\n", 0o755), cpio.symlink("sh", "busybox")])
    data = buf.getvalue()
    assert data.startswith(b"070701") and len(data) % 4 == 0
    head = data[:110]
    assert int(head[14:22], 16) == stat.S_IFDIR | 0o755
    assert int(head[94:102], 16) == len(b"bin\0") and data[110:114] == b"bin\0"
    assert b"TRAILER!!!\0" in data and b"#!/bin/sh\n" in data
    gzip.compress(data)  # the initramfs is this, gzip'd


def test_module_order_follows_modinfo(tmp_path: Path) -> None:
    def ko(name: str, deps: str) -> Path:
        p = tmp_path / f"{name}.ko"
        p.write_bytes(b"\x7fELF junk\0name=" + name.encode() + b"\0depends=" + deps.encode() + b"\0vermagic=x\0")
        return p
    index = {n: ko(n, d) for n, d in [("virtio", ""), ("virtio_ring", ""), ("virtio_pci", "virtio,virtio_ring"),
                                      ("virtio_net", "virtio,virtio_ring,net_failover"), ("net_failover", "failover"),
                                      ("failover", "")]}
    assert module_depends(index["virtio_pci"].read_bytes()) == ["virtio", "virtio_ring"]
    order = module_load_order(index, ("virtio_pci", "virtio_net"))
    assert order.index("failover") < order.index("net_failover") < order.index("virtio_net")
    assert order.index("virtio") < order.index("virtio_pci") and len(order) == len(set(order)) == 6
    with pytest.raises(ImageBuildError):
        module_load_order(index, ("virtio_gpu",))
