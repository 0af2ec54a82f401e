"""pyxen.xapi.xenops, the pure parts: a VmSpec becomes the DomainConfig that ``xl create``
makes of the equivalent xl.cfg, written here by hand in xl's usual forms; values xl refuses are
one-line XenopsErrors; the hypervisor's domain info maps onto xapi's power states."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pyxen.toolstack.config import DomainConfig, load
from pyxen.toolstack.devices import parse_all
from pyxen.xapi import xenops
from pyxen.xapi.xenops import DiskSpec, VifSpec, VmSpec, XenopsError, build_config

UUID = "6f1c0a2e-7e0f-4c55-9a43-1f1e2d3c4b5a"
MiB = 1 << 20


def same_domain(got: DomainConfig, want: DomainConfig) -> None:
    """Equal as far as the domain built from them goes: every field but where the text came
    from, and the devices as xl's parser reads them (the spellings of an entry may differ)."""
    ignore = {"source": "", "settings": (), "disks": (), "vifs": (), "warnings": ()}
    assert dataclasses.replace(got, **ignore) == dataclasses.replace(want, **ignore)  # type: ignore[arg-type]
    gd, gn = parse_all(got.disks, got.vifs)
    wd, wn = parse_all(want.disks, want.vifs)
    assert [dataclasses.replace(d, spec="") for d in gd] == [dataclasses.replace(d, spec="") for d in wd]
    assert [dataclasses.replace(n, spec="", warnings=()) for n in gn] == \
        [dataclasses.replace(n, spec="", warnings=()) for n in wn]


def xl_cfg_file(tmp_path: Path, text: str) -> DomainConfig:
    path = tmp_path / "vm.cfg"
    path.write_text(text)
    return load(path)


def test_pv_spec_is_the_xl_cfg_a_user_would_write(tmp_path: Path) -> None:
    spec = VmSpec(uuid=UUID, name="debian-1", memory_static_max=512 * MiB, memory_dynamic_max=256 * MiB,
                  vcpus_max=4, vcpus_at_startup=2, kernel="/boot/vmlinuz", ramdisk="/boot/initrd.img",
                  cmdline='console=ttyS0 root=/dev/xvda1 msg="a b"',
                  disks=(DiskSpec("/srv/sr/a b.img", "xvda"), DiskSpec("/srv/iso/d.iso", "xvdd", "r", cdrom=True)),
                  vifs=(VifSpec(0, "00:16:3e:0a:0b:0c", "xenbr0"), VifSpec(3, "00:16:3e:0a:0b:0d", "br1", 1400)),
                  on_poweroff="destroy", on_reboot="restart", on_crash="preserve")
    want = xl_cfg_file(tmp_path, f'''name = "debian-1"
uuid = "{UUID}"
memory = 256
maxmem = 512
vcpus = 2
maxvcpus = 4
kernel = "/boot/vmlinuz"
ramdisk = "/boot/initrd.img"
extra = "console=ttyS0 root=/dev/xvda1 msg=\\"a b\\""
on_crash = "preserve"
disk = [ "/srv/sr/a b.img,raw,xvda,rw", "/srv/iso/d.iso,raw,xvdd,ro,cdrom" ]
vif = [ "mac=00:16:3e:0a:0b:0c,bridge=xenbr0", "devid=3,mac=00:16:3e:0a:0b:0d,bridge=br1,mtu=1400" ]
''')
    got = build_config(spec)
    same_domain(got, want)
    assert (got.name, got.uuid, got.memory, got.maxmem, got.vcpus, got.maxvcpus) == \
        ("debian-1", UUID, 256, 512, 2, 4)
    assert got.cmdline == 'console=ttyS0 root=/dev/xvda1 msg="a b"' and got.on_crash == "preserve"
    assert got.warnings == ()


def test_hvm_spec_with_platform_keys(tmp_path: Path) -> None:
    spec = VmSpec(uuid=UUID, name="win", memory_static_max=1024 * MiB, memory_dynamic_max=1024 * MiB,
                  hvm=True, disks=(DiskSpec("/srv/sr/w.qcow2", "hda", format="qcow2"),
                                   DiskSpec("", "hdc", "r", cdrom=True)),
                  platform={"vga": "std", "videoram": "16", "acpi": "1", "apic": "true", "viridian": "true",
                            "boot": "dc"},
                  on_reboot="destroy")
    want = xl_cfg_file(tmp_path, f'''name = "win"
type = "hvm"
uuid = "{UUID}"
memory = 1024
vga = "stdvga"
videoram = 16
acpi = 1
apic = 1
boot = "dc"
on_reboot = "destroy"
disk = [ "format=qcow2,vdev=hda,target=/srv/sr/w.qcow2", ",raw,hdc,ro,cdrom" ]
''')
    got = build_config(spec)
    same_domain(got, want)
    assert got.type == "hvm" and got.boot == "dc" and got.setting("vga") == "stdvga"
    assert got.setting("viridian") is None  # nothing in pyxen acts on it: not passed on


def test_no_devices_and_defaults(tmp_path: Path) -> None:
    spec = VmSpec(uuid=UUID, name="bare", memory_static_max=64 * MiB, memory_dynamic_max=64 * MiB, kernel="/k")
    want = xl_cfg_file(tmp_path, f'name = "bare"\nuuid = "{UUID}"\nmemory = 64\nkernel = "/k"\n')
    same_domain(build_config(spec), want)
    assert "disk" not in xenops.xl_cfg(spec) and "vif" not in xenops.xl_cfg(spec)


@pytest.mark.parametrize("change, words", [
    ({"name": "has space"}, "'has space' is not a valid domain name"),
    ({"name": "1234"}, "all digits"),
    ({"memory_dynamic_max": 512 * MiB}, "memory_dynamic_max 536870912 is above memory_static_max"),
    ({"vcpus_at_startup": 3}, "maxvcpus < vcpus"),
    ({"kernel": ""}, "Neither kernel nor bootloader specified"),
    ({"on_crash": "explode"}, "invalid action 'explode'"),
    ({"disks": (DiskSpec("/a.img", "xvda", "rw"),)}, "mode 'rw' is neither 'w' nor 'r'"),
    ({"disks": (DiskSpec("/a.img", "xvda"), DiskSpec("/b.img", "xvda"))}, "xvda"),
    ({"disks": (DiskSpec("/a.img", "nonsense"),)}, "nonsense"),
    ({"vifs": (VifSpec(0, "00:16:3e:00:00:01", "br0,script=/bin/evil"),)}, "cannot be written in a vif spec"),
    ({"cmdline": "a\0b"}, "NUL"),
])
def test_refused_specs_are_one_line_errors(change: dict[str, object], words: str) -> None:
    spec = dataclasses.replace(VmSpec(uuid=UUID, name="ok", memory_static_max=256 * MiB,
                                      memory_dynamic_max=128 * MiB, vcpus_max=2, kernel="/k"), **change)  # type: ignore[arg-type]
    try:
        cfg = build_config(spec)
        parse_all(cfg.disks, cfg.vifs)  # (duplicate vdevs are refused where create parses them)
    except XenopsError as err:
        message = str(err)
    except Exception as err:  # noqa: BLE001 - the device parser's own error, for the create path
        message = str(err)
    else:
        pytest.fail(f"{change} was accepted")
    assert words in message and "\n" not in message, message


def test_states_from_the_hypervisor_info() -> None:
    base = {"building": False, "dying": False, "shutdown": False, "paused": False}
    assert xenops._state(base) == "running"
    assert xenops._state({**base, "paused": True}) == "paused"
    assert xenops._state({**base, "shutdown": True, "paused": True}) == "shutdown"
    assert xenops._state({**base, "dying": True, "shutdown": True}) == "dying"
    assert xenops._state({**base, "building": True, "paused": True}) == "building"


def test_calls_without_a_host_fail_with_one_line(tmp_path: Path) -> None:
    from pyxen.paths import Paths
    paths = Paths.from_env(tmp_path)
    for call in (lambda: xenops.pause(paths, 7), lambda: xenops.live_domains(paths),
                 lambda: xenops.set_memory_target(paths, 7, 64 * MiB)):
        with pytest.raises(XenopsError) as err:
            call()
        assert "\n" not in str(err.value) and "cannot reach the hypervisor" in str(err.value)
    with pytest.raises(XenopsError, match="domain 7: pause: cannot reach"):
        xenops.pause(paths, 7)


def test_the_build_lock_gives_up_after_its_timeout(tmp_path: Path) -> None:
    """start/resume take xl create's lock with a bound: a lock held elsewhere is a one-line
    error after the timeout, not a wait for ever."""
    import fcntl
    import time
    from pyxen.toolstack.domain import create_lock
    lock = tmp_path / "xl.lock"
    with open(lock, "a") as held:
        fcntl.lockf(held, fcntl.LOCK_EX)
        # (fcntl locks are per process: a second open in this process would get it; fork one)
        import subprocess
        import sys
        code = ("import sys; from pyxen.toolstack.domain import create_lock, DomainBuildError\n"
                f"try:\n  with create_lock({str(lock)!r}, timeout=0.5): print('got')\n"
                "except DomainBuildError as e: print(e)\n")
        start = time.monotonic()
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30).stdout
        assert time.monotonic() - start >= 0.5
        assert out == f"another domain is being built: the create lock {lock} was not free within 0.5 s\n"
    with create_lock(str(lock), timeout=0.5):  # free again: taken at once
        pass


# ---- on the declared fake host (real hypervisor and xenstored daemons, FakeDeviceModel) --------
@pytest.fixture
def fake(tmp_path: Path):  # type: ignore[no-untyped-def]
    import os
    import shutil
    import time
    from pyxen.testing.fakes import FakeHost
    root = Path(os.path.realpath("/tmp")) / f"pyxen-xo-{os.getpid()}-{time.monotonic_ns()}"
    with FakeHost(root) as host:
        yield host
    shutil.rmtree(root, ignore_errors=True)


def small_vm(tmp_path: Path, name: str = "g", uuid: str = UUID) -> VmSpec:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"\0" * 16)
    return VmSpec(uuid=uuid, name=name, memory_static_max=64 * MiB, memory_dynamic_max=64 * MiB,
                  vcpus_max=2, kernel=str(kernel))


def test_migrate_local_new_domid_same_uuid_everywhere(fake, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from pyxen.toolstack import userdata
    from pyxen.xenstore.client import XenstoreClient
    paths = fake.paths
    old = xenops.start(paths, small_vm(tmp_path))
    xenops.set_vcpus_online(paths, old, 2)
    new = xenops.migrate_local(paths, old)
    assert new != old
    live = [(d.domid, d.name, d.uuid, d.state, d.vcpus) for d in xenops.live_domains(paths) if d.domid != 0]
    assert live == [(new, "g", UUID, "running", 2)]
    with XenstoreClient(paths.xenstored_socket) as xs:
        assert xs.get(f"/local/domain/{new}/vm") == f"/vm/{UUID}".encode()
        assert xs.get(f"/vm/{UUID}/uuid") == UUID.encode() and xs.get(f"/vm/{UUID}/name") == b"g"
        assert xs.get(f"/vm/{UUID}/start_time") is not None
        assert [p for p in xs.directory("/vm")] == [UUID]  # the stand-in uuid's directory is gone
        assert not xs.exists(f"/local/domain/{old}")
    kept = userdata.retrieve(paths, new)
    assert kept is not None and (kept.uuid, kept.name, kept.vcpus) == (UUID, "g", 2)
    assert userdata.retrieve(paths, old) is None


def test_migrate_local_that_fails_at_the_receiver_leaves_the_guest_running(fake, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The receiver cannot build ``g--incoming`` (the name is taken): one line that says so,
    and the guest runs on where it was, under its own name and uuid."""
    paths = fake.paths
    domid = xenops.start(paths, small_vm(tmp_path))
    other = xenops.start(paths, small_vm(tmp_path, "g--incoming", "5f1e6a3c-7a43-4e8e-8a57-7b5b4d3c2a10"))
    with pytest.raises(XenopsError) as err:
        xenops.migrate_local(paths, domid)
    message = str(err.value)
    assert message.startswith(f"domain {domid} (g): migrate_local: ") and "\n" not in message
    assert 'Domain with name "g--incoming" already exists' in message, message
    live = sorted((d.domid, d.name, d.uuid, d.state) for d in xenops.live_domains(paths) if d.domid != 0)
    assert live == [(domid, "g", UUID, "running"),
                    (other, "g--incoming", "5f1e6a3c-7a43-4e8e-8a57-7b5b4d3c2a10", "running")]


def test_domain_names_for_free_text_labels() -> None:
    from pyxen.toolstack.config import _NAME_RE
    cases = {("Debian Bookworm 12", ()): "Debian-Bookworm-12",
             ("Debian Bookworm 12", ("Debian-Bookworm-12",)): f"Debian-Bookworm-12-{UUID[:8]}",
             ("web", ()): "web", ("  ", ()): f"vm-{UUID[:8]}", ("1234", ()): f"1234-{UUID[:8]}",
             ("Domain-0", ()): f"Domain-0-{UUID[:8]}", ("é/ü", ()): f"vm-{UUID[:8]}",
             ("x" * 100, ()): "x" * 55}
    for (label, taken), want in cases.items():
        got = xenops.domain_name(label, UUID, taken)
        assert got == want and _NAME_RE.fullmatch(got), (label, got)
