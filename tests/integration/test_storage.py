"""Guests on LVM and on qcow2 overlays, and ``pyxen storage`` as a user runs it.

A volume group is built on a loop device (pyxen.testing.lvm). The demo guest boots with
``disk = ['phy:/dev/<vg>/<lv>,xvda,w']``: blkback serves the LV, the guest reads what the host
wrote and the host reads what the guest wrote; a second LV is block-attached to the running
guest. Both LVs are deactivated first (as after a host reboot without device-mapper), so the
toolstack must activate them before blkback opens them. While the guest runs, ``pyxen storage``
refuses to resize or remove its volumes. A second guest reads and writes through qcow2 overlays
(``pyxen storage snapshot --qcow2``) of an image file and of an LV, served by QEMU as qdisk,
and the disks behind them stay as they were. The CLI test drives every ``pyxen storage``
command as a subprocess on a loop volume group and a temporary directory.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from pyxen.storage import lvm, volumes
from pyxen.testing.lvm import loop_volume_group

from ..conftest import BIN, Host

pytestmark = pytest.mark.integration

MiB = 1 << 20
#: Finds a disk by its xl vdev (the virtio serial) and waits for it: w <vdev> sets $D.
FIND = (r'f(){ for d in /sys/block/vd*; do [ "$(cat $d/serial 2>/dev/null)" = $1 ] && echo /dev/${d##*/}; done; }'
        "\n" r'w(){ i=0; while [ $i -lt 3000 ]; do D=$(f $1); [ -n "$D" ] && return; sleep 0.2; i=$((i+1)); done; }'
        "\n")


@pytest.fixture
def vg() -> Iterator[str]:
    with loop_volume_group(size=4 << 30) as name:
        yield name


def _wait(pred, timeout: float = 90.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def _read(path: Path, offset: int, n: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(n)


def _write(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def storage(host: Host, *args: str) -> subprocess.CompletedProcess[str]:
    return host.run("pyxen", "storage", *args)


def test_guest_on_logical_volumes_through_blkback(host: Host, vg: str) -> None:
    disk = lvm.lvcreate(vg, "g-disk", 8 * MiB)
    second = lvm.lvcreate(vg, "g-second", 4 * MiB)
    data = os.urandom(MiB)
    _write(disk, 0, data)
    _write(second, 0, b"host-on-second!!")
    lvm.deactivate(vg, "g-disk")  # as after a reboot: lvm2 knows them, /dev/<vg>/<lv> is gone
    lvm.deactivate(vg, "g-second")
    assert not disk.exists() and not second.exists()

    # A missing LV is one line, and no domain is left.
    cfg = host.write_cfg("nolv", extra_lines=f"disk = ['phy:/dev/{vg}/g-nosuch,xvda,w']\n")
    r = host.xl("create", str(cfg), check=False)
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].endswith(
        f"/dev/{vg}/g-nosuch is missing and cannot be activated: logical volume {vg}/g-nosuch not found"), r.stderr
    assert "nolv" not in host.domains()

    script = FIND + (
        "w xvda; A=$D\n"
        "echo \"lv-sum $(dd if=$A bs=1M count=1 2>/dev/null | sha256sum)\"\n"
        "echo guest-wrote-this | dd of=$A bs=512 seek=4096 conv=sync,fsync 2>/dev/null; echo \"lv-write $?\"\n"
        "(w xvdb; echo \"hot-read $(dd if=$D bs=16 count=1 2>/dev/null)\"\n"
        "echo guest-on-second | dd of=$D bs=512 seek=8 conv=sync,fsync 2>/dev/null; echo \"hot-write $?\") &\n")
    host.create("lvguest", memory=256, script=script, extra_lines=f"disk = ['phy:/dev/{vg}/g-disk,xvda,w']\n")
    text = host.wait_console("lvguest")
    assert disk.is_symlink() and os.path.realpath(disk).startswith("/dev/loop")
    assert f"lv-sum {hashlib.sha256(data).hexdigest()}" in text, text[-1500:]
    assert "lv-write 0" in text
    assert _read(disk, 4096 * 512, 17) == b"guest-wrote-this\n"

    host.xl("block-attach", "lvguest", f"phy:/dev/{vg}/g-second,xvdb,w")
    text = host.wait_console("lvguest", "hot-write ")
    assert "hot-read host-on-second!!" in text and "hot-write 0" in text, text[-1500:]
    assert _read(second, 8 * 512, 16) == b"guest-on-second\n"

    # The toolstack knows who uses the volumes: pyxen storage keeps its hands off.
    r = storage(host, "resize", "--hostname", "g", "--lvm", vg, "--size", "16M")
    assert (r.returncode, r.stderr) == (1, "The guest g appears to be running!\n")
    r = storage(host, "remove", "--hostname", "g", "--lvm", vg)
    assert (r.returncode, r.stderr) == (1, "Skipping xen guest 'g' - it appears to be running.\n")
    r = storage(host, "list", "--lvm", vg)
    rows = {line.split()[1]: line.split() for line in r.stdout.splitlines()[1:]}
    assert rows["disk"][4] == "lvguest" and rows["second"][4] == "lvguest", r.stdout
    assert lvm.find(vg, "g-disk").size == 8 * MiB

    host.xl("destroy", "lvguest")
    _wait(lambda: "lvguest" not in host.domains())
    r = storage(host, "resize", "--hostname", "g", "--lvm", vg, "--size", "16M")
    assert r.returncode == 0, r.stderr
    assert lvm.find(vg, "g-disk").size == 16 * MiB and _read(disk, 0, MiB) == data


def test_guest_reads_and_writes_through_qcow2_overlays(host: Host, vg: str, tmp_path: Path) -> None:
    img = volumes.create("q", dir=tmp_path, size="8M", swap=None, fs=None, paths=host.paths)[0]
    lv = volumes.create("r", lvm=vg, size="8M", swap=None, fs=None, paths=host.paths)[0]
    pa, pb = os.urandom(MiB), os.urandom(MiB)
    _write(img.path, 0, pa)
    _write(lv.path, 0, pb)
    r = storage(host, "snapshot", "--hostname", "q", "--dir", str(tmp_path), "--name", "s", "--qcow2")
    assert r.returncode == 0, r.stderr
    over_a = tmp_path / "domains/q/s.qcow2"
    assert f"format=qcow2,vdev=xvda1,access=rw,target={over_a}" in r.stdout
    r = storage(host, "snapshot", "--hostname", "r", "--lvm", vg, "--name", "s", "--qcow2")
    assert r.returncode == 0, r.stderr
    over_b = Path(f"/dev/{vg}/r-s")
    r = storage(host, "snapshot", "--hostname", "r", "--lvm", vg, "--name", "lvsnap")
    assert r.returncode == 1 and "device-mapper" in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr

    lvm.deactivate(vg, "r-s")  # the overlay and its backing: both activated by the toolstack
    lvm.deactivate(vg, "r-disk")
    script = FIND + "".join(
        f"w {v}; echo \"{v}-sum $(dd if=$D bs=1M count=1 2>/dev/null | sha256sum)\"\n"
        f"echo overlay-{v} | dd of=$D bs=512 conv=sync,fsync 2>/dev/null; echo 3 > /proc/sys/vm/drop_caches\n"
        f"echo \"{v}-back $(dd if=$D bs=13 count=1 2>/dev/null)\"\n" for v in ("xvdb", "xvdc"))
    disks = (f"disk = ['format=qcow2,vdev=xvdb,access=rw,target={over_a}', "
             f"'format=qcow2,vdev=xvdc,access=rw,target={over_b}']\n")
    host.create("qguest", memory=256, script=script, extra_lines=disks)
    text = host.wait_console("qguest", "xvdc-back ")
    assert f"xvdb-sum {hashlib.sha256(pa).hexdigest()}" in text, text[-1500:]
    assert f"xvdc-sum {hashlib.sha256(pb).hexdigest()}" in text, text[-1500:]
    assert "xvdb-back overlay-xvdb" in text and "xvdc-back overlay-xvdc" in text, text[-1500:]
    r = storage(host, "remove", "--hostname", "q", "--dir", str(tmp_path))
    assert (r.returncode, r.stderr) == (1, "Skipping xen guest 'q' - it appears to be running.\n")
    host.xl("destroy", "qguest")
    _wait(lambda: "qguest" not in host.domains())

    # The backing disks are untouched; the overlays hold the guest's writes over them.
    assert _read(img.path, 0, MiB) == pa and _read(lv.path, 0, MiB) == pb
    for over, base, v in ((over_a, pa, "xvdb"), (over_b, pb, "xvdc")):
        out = tmp_path / f"{v}.raw"
        subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(over), str(out)], check=True,
                       timeout=120)
        flat = out.read_bytes()
        assert flat[:13] == f"overlay-{v}\n".encode() and flat[512:MiB] == base[512:]
    r = storage(host, "remove", "--hostname", "r", "--lvm", vg)
    assert r.returncode == 0 and r.stdout.split() == ["removed", str(over_b), "removed", str(lv.path)], r.stdout
    assert [v.name for v in lvm.lvs(vg)] == []


def _pyxen(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYXEN_ROOT=str(root))
    return subprocess.run([str(BIN / "pyxen"), "storage", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_pyxen_storage_commands_on_a_volume_group_and_a_directory(vg: str, tmp_path: Path) -> None:
    root = tmp_path / "root"  # a host that is not started: no domain runs
    r = _pyxen(root, "create", "--hostname", "web", "--lvm", vg, "--size", "64Mb", "--swap", "16")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-4:] == [
        "disk        = [", f"                  'phy:/dev/{vg}/web-disk,xvda2,w',",
        f"                  'phy:/dev/{vg}/web-swap,xvda1,w',", "              ]"]
    assert {lv.name: lv.size for lv in lvm.lvs(vg)} == {"web-disk": 64 * MiB, "web-swap": 16 * MiB}
    assert volumes.content_kind(_read(Path(f"/dev/{vg}/web-disk"), 0, 4096)) == "ext"
    r = _pyxen(root, "create", "--hostname", "web", "--lvm", vg)
    assert (r.returncode, r.stderr) == (1, "The LVM disk image already exists.  Aborting.\n")
    r = _pyxen(root, "create", "--hostname", "web", "--lvm", vg, "--size", "12T")
    assert (r.returncode, r.stderr) == (1, "ERROR: 'size' argument takes a suffixed (mb, MB, G, etc.) integer.\n")
    r = _pyxen(root, "create", "--hostname", "web", "--lvm", vg, "--dir", str(tmp_path))
    assert r.returncode == 1 and r.stderr.startswith("pyxen storage: argument --dir: not allowed with")
    assert len(r.stderr.splitlines()) == 1
    r = _pyxen(root, "resize", "--hostname", "web", "--lvm", vg, "--size", "32M")
    assert r.returncode == 1 and r.stderr.endswith("from 64M to 32M: its filesystem fills 64M\n"), r.stderr
    r = _pyxen(root, "resize", "--hostname", "web", "--lvm", vg, "--size", "96M")
    assert r.returncode == 0, r.stderr
    assert volumes.ext_size(_read(Path(f"/dev/{vg}/web-disk"), 1024, 1024)) == 96 * MiB
    r = _pyxen(root, "list")
    assert any(line.split()[:4] == ["web", "disk", "96M", "ext4"] for line in r.stdout.splitlines()), r.stdout
    r = _pyxen(root, "remove", "--hostname", "web", "--lvm", vg)
    assert r.returncode == 0 and [lv.name for lv in lvm.lvs(vg)] == []

    d = tmp_path / "xen"
    r = _pyxen(root, "create", "--hostname", "db", "--dir", str(d), "--size", "0.03125G", "--image", "full",
               "--noswap")
    assert r.returncode == 0, r.stderr
    assert f"'file:{d}/domains/db/disk.img,xvda1,w'," in r.stdout
    # Not a terminal: plain percentage lines.
    assert "Allocating disk.img: 0%\n" in r.stderr and "Allocating disk.img: 100%\n" in r.stderr
    assert os.stat(d / "domains/db/disk.img").st_blocks * 512 >= 32 * MiB
    r = _pyxen(root, "create", "--hostname", "db", "--dir", str(d), "--noswap")
    assert (r.returncode, r.stderr) == (1, "The partition image already exists.  Aborting.\n")
    r = _pyxen(root, "snapshot", "--hostname", "db", "--dir", str(d), "--name", "before-upgrade", "--qcow2")
    assert r.returncode == 0 and (d / "domains/db/before-upgrade.qcow2").exists(), r.stderr
    r = _pyxen(root, "list", "--dir", str(d))
    assert [line.split()[:4] for line in r.stdout.splitlines()[1:]] == [
        ["db", "before-upgrade", "32M", "qcow2"], ["db", "disk", "32M", "ext4"]], r.stdout
    r = _pyxen(root, "remove", "--hostname", "db", "--dir", str(d))
    assert (r.returncode, r.stdout) == (0, f"removed {d}/domains/db\n")
    r = _pyxen(root, "remove", "--hostname", "db", "--dir", str(d))
    assert (r.returncode, r.stderr) == (1, f"no volumes of db in {d}\n")
