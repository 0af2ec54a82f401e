"""Pure parts of the hypervisor: boot line, memory pool, state letters, wire codec, QEMU argv."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyxen.hypervisor import errors, wire
from pyxen.hypervisor.bootline import BootLine, BootLineError, Dom0Mem, parse_size
from pyxen.hypervisor.domain import state_letters
from pyxen.hypervisor.memory import MemoryPool
from pyxen.hypervisor.qemu import BuildInfo, argv
from pyxen.paths import Paths

G = 1 << 30
M = 1 << 20


def test_boot_line_like_xen() -> None:
    b = BootLine.parse("dom0_mem=1024M loglvl=all sched=credit2 dom0_max_vcpus=1-4 console=com1")
    assert b.dom0_mem == Dom0Mem(1024 * M) and b.loglvl == "all" and b.sched == "credit2"
    assert b.dom0_vcpus(8) == 4 and b.dom0_vcpus(2) == 2 and b.other == {"console": "com1"}
    assert BootLine.parse("dom0_mem=512M,max:2G").dom0_mem.resolve(24 * G) == 512 * M
    assert BootLine.parse("dom0_mem=max:2G").dom0_mem.resolve(24 * G) == 2 * G
    assert BootLine.parse("dom0_mem=4G,min:1G,max:2G").dom0_mem.resolve(24 * G) == 2 * G
    assert BootLine.parse("").dom0_mem.resolve(24 * G) == G
    assert [parse_size(s) for s in ("1k", "2M", "3G", "4096")] == [1024, 2 * M, 3 * G, 4096]


@pytest.mark.parametrize("line", ["dom0_mem=lots", "sched=fifo", "loglvl=loud", "dom0_max_vcpus=0",
                                  "sched_credit_tslice_ms=0", "sched_ratelimit_us=50"])
def test_bad_boot_line(line: str) -> None:
    with pytest.raises(BootLineError):
        BootLine.parse(line)


def test_memory_pool_refuses_overcommit_and_changes_nothing() -> None:
    pool = MemoryPool(1000 * 1024)
    pool.claim(0, 400 * 1024)
    pool.claim(1, 500 * 1024)
    with pytest.raises(errors.OutOfMemory) as exc:
        pool.claim(2, 200 * 1024, "big")
    assert "200 MiB needed, 100 MiB free" in str(exc.value)
    assert pool.free_kb == 100 * 1024 and 2 not in pool.reserved
    pool.release(1)
    assert pool.free_kb == 600 * 1024


def test_state_letters_as_xl() -> None:
    assert state_letters(True, False, False, False, None, False) == "r-----"
    assert state_letters(False, True, False, False, None, False) == "-b----"
    assert state_letters(False, False, True, False, None, False) == "--p---"
    assert state_letters(False, False, False, True, 0, False) == "---s--"
    assert state_letters(False, False, False, True, 3, False) == "---sc-"
    assert state_letters(False, False, False, True, 2, False) == "---ss-"
    assert state_letters(False, False, False, False, None, True) == "-----d"


def test_wire_round_trip_and_errors() -> None:
    req = wire.Request(3, "domctl.pausedomain", {"domid": 2})
    assert wire.decode_request(wire.encode_request(req)) == req
    for bad in (b"nope\n", b'{"args": {}}\n', b'{"op": "x", "args": []}\n'):
        with pytest.raises(wire.WireError):
            wire.decode_request(bad)
    e = errors.from_wire(errors.NoSuchDomain("no domain 9", "domctl.getdomaininfo").to_wire())
    assert isinstance(e, errors.NoSuchDomain) and e.errno == 3 and e.op == "domctl.getdomaininfo"


def test_pv_guest_gets_no_emulated_devices() -> None:
    info = BuildInfo("g", "u-u-i-d", "pv", 128, 128, 1, 2, "/k", "/r", "quiet", "tcg")
    a = argv("qemu-system-x86_64", info, Paths(Path("/r")), 7)
    assert a[a.index("-append") + 1] == "console=ttyS0 quiet"
    assert "-nodefaults" in a and "-S" in a and a[a.index("-vga") + 1] == "none"
    # TCG: 8 KiB more than static-max, so QEMU 7.2 syncs the migration dirty bitmap through its
    # slow path, which resets the vCPUs' TLB dirty flags (qemu.TCG_RAM_PAD_KIB).
    assert "memory-backend-memfd,id=mem,size=131080K,share=on" in a and a[a.index("-m") + 1] == "131080K"
    assert a[a.index("-smp") + 1] == "1,maxcpus=2"
    hvm = argv("q", BuildInfo("h", "u", "hvm", 64, 64, 1, 1, None, None, "", "kvm", vnc=True, vncdisplay=3),
               Paths(Path("/r")), 7)
    assert hvm[hvm.index("-vnc") + 1] == "127.0.0.1:3" and hvm[hvm.index("-cpu") + 1] == "host"
    assert hvm[hvm.index("-m") + 1] == "65536K"  # KVM keeps its own dirty log: no pad


def test_pv_guest_runs_on_q35_with_a_hotplug_bridge_and_hvm_on_pc(tmp_path: Path) -> None:
    """PV/PVH: q35 (its ACPI _PRT costs a guest ~1 ms a PCI device, pc's ~87 ms of guest time)
    with the bridge hot-plugged disks and NICs go on (q35's root bus takes none); HVM stays on
    pc, whose IDE serves its CD-ROMs, and hot-plugs on bus 0 (QEMU's default: no bus given)."""
    import asyncio

    from pyxen.hypervisor.qemu import HOTPLUG_BRIDGE, hotplug_bus
    from pyxen.testing.fakes import FakeDeviceModel

    for kind, machine, bus in (("pv", "q35", HOTPLUG_BRIDGE), ("pvh", "q35", HOTPLUG_BRIDGE), ("hvm", "pc", None)):
        a = argv("q", BuildInfo("g", "u", kind, 64, 64, 1, 1, "/k", None, "", "tcg"), Paths(tmp_path), 7)
        assert a[a.index("-machine") + 1] == f"{machine},memory-backend=mem"
        assert hotplug_bus(a) == bus
        assert (f"pcie-pci-bridge,id={HOTPLUG_BRIDGE},bus=pcie.0" in a) == (bus is not None)
        dm = FakeDeviceModel(7, Paths(tmp_path), lambda *_: None)
        dm.hotplug_bus = bus
        asyncio.run(dm.add_vhost_user_disk(51712, Path("/r/vbd.sock")))
        asyncio.run(dm.add_xenstore_port(Path("/r/xs.sock")))
        disk, port = [args for cmd, args in dm.commands if cmd == "device_add"]
        assert disk.get("bus") == bus and port["bus"] == "xsbus.0"


def test_tcg_ram_length_is_not_a_multiple_of_256_kib() -> None:
    """QEMU 7.2 takes its TLB-forgetting fast path for RAM blocks whose length is a multiple of
    64 pages; every TCG size pyxen asks for must miss it, and stay a multiple of 8 KiB (QEMU's
    rounding), or the sender and a receiver would not agree on the block's length."""
    from pyxen.hypervisor.qemu import ram_kib

    for mib in (1, 64, 128, 256, 1024, 4096):
        info = BuildInfo("g", "u", "pv", mib, mib, 1, 1, "/k", None, "", "tcg")
        kib = ram_kib(info)
        assert kib % (64 * 4) != 0 and kib % 8 == 0 and kib // 1024 == mib, (mib, kib)


def test_cpulist_syntax_and_bitmap_text() -> None:
    from pyxen.libxlu.cpumap import format_cpumap, parse_cpulist

    assert parse_cpulist("all", 4) == {0, 1, 2, 3}
    assert parse_cpulist("0-3,^1", 8) == {0, 2, 3}
    assert parse_cpulist("all,^0", 2) == {1}
    for bad in ("4", "x", "3-1", "0-9"):
        with pytest.raises(ValueError):
            parse_cpulist(bad, 4)
    assert format_cpumap({0, 1, 2, 3}, 4) == "all"
    assert format_cpumap(set(), 4) == "none"
    assert format_cpumap({0, 1, 2, 3, 8}, 16) == "0-3,8"
    assert format_cpumap([5], 8) == "5"


def test_memory_pool_resize_grows_or_gives_back() -> None:
    pool = MemoryPool(1000 * 1024)
    pool.claim(1, 300 * 1024)
    pool.resize(1, 100 * 1024)
    assert pool.free_kb == 900 * 1024
    pool.resize(1, 400 * 1024)
    assert pool.free_kb == 600 * 1024
    with pytest.raises(errors.OutOfMemory):
        pool.resize(1, 1200 * 1024, "big", "memory_op.set_target")
    assert pool.held(1) == 400 * 1024
