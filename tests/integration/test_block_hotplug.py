"""Disks on a running guest, through ``xl block-attach`` / ``block-detach`` against real daemons
and a real QEMU guest: the guest sees the disk appear (ACPI PCI hotplug), writes and reads it,
sees it go; what it wrote, flushed or not, is in the file after the detach; block-list follows.
Hotplug scripts (``script=``) run with Xen's convention: Debian's own /etc/xen/scripts/block
(xen-utils-common, unpacked, used as it is) and a failing script of the test's own."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from pyxen.hypervisor.client import XenCtrl
from pyxen.toolstack import userdata
from pyxen.xenstore.client import XenstoreClient

pytestmark = pytest.mark.integration

#: xvdb's devid (docs/misc/vbd-interface.txt).
XVDB = 51728
#: The guest's side, in the background so its up line comes first: wait for a disk whose
#: serial is xvdb, write (synced) and read back, write once more without a sync, wait for the
#: disk to go. (The demo guest's command line holds about 1.5 KB of script.)
GUEST = r'''f(){ for d in /sys/block/vd*; do [ "$(cat $d/serial 2>/dev/null)" = $1 ] && echo /dev/${d##*/}; done; }
w(){ i=0; while [ $i -lt 3000 ]; do D=$(f $1); [ $2 "$D" ] && return; sleep 0.2; i=$((i+1)); done; }
(w xvdb -n; echo "hot-seen $D"
echo hot-data-1 | dd of=$D bs=512 conv=sync,fsync 2>/dev/null; echo "hot-write $?"
echo 3 > /proc/sys/vm/drop_caches
echo "hot-read $(dd if=$D bs=10 count=1 2>/dev/null)"
echo hot-lazy-2 | dd of=$D bs=512 seek=8 conv=sync 2>/dev/null; echo "hot-lazy $?"
w xvdb -z; echo "hot-gone") &
'''


def _wait(pred, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def _block_rows(host, name: str) -> list[list[str]]:  # type: ignore[no-untyped-def]
    return [line.split() for line in host.xl("block-list", name).stdout.splitlines()[1:]]


def _nothing_attached(host, domid: int, devid: int = XVDB) -> None:  # type: ignore[no-untyped-def]
    """No trace of the disk: no xenstore nodes, no QEMU device, no frontend event channel."""
    with XenstoreClient(host.paths.xenstored_socket) as xs:
        for path in (f"/local/domain/0/backend/vbd/{domid}/{devid}", f"/local/domain/{domid}/device/vbd/{devid}",
                     f"/libxl/{domid}/device/vbd/{devid}"):
            assert not xs.exists(path), path
    with XenCtrl(host.paths.hypervisor_socket) as xc:
        labels = [p.get("label", "") for p in xc.call("event_channel_op.list", dom=domid)]
    assert not any(str(devid) in str(label) for label in labels), labels
    assert not (host.paths.device_socket("vbd", domid, devid)).exists()


def test_attach_write_detach_and_errors(host) -> None:  # type: ignore[no-untyped-def]
    img = host.paths.root / "hot.img"
    img.write_bytes(bytes(4 << 20))
    domid = host.create("hot", memory=256, script=GUEST)
    host.wait_console("hot")

    # Errors first, each leaving nothing behind.
    r = host.xl("block-attach", "nosuch", f"file:{img},xvdb,w", check=False)
    assert (r.returncode, r.stderr) == (1, "nosuch is an invalid domain identifier\n")
    r = host.xl("block-attach", "hot", f"file:{img},xvd0,w", check=False)
    assert r.returncode == 1 and "Invalid virtual disk identifier xvd0" in r.stderr
    r = host.xl("block-attach", "hot", f"file:{host.paths.root}/missing.img,xvdb,w", check=False)
    assert r.returncode == 1 and r.stderr.endswith("libxl_device_disk_add failed.\n"), r.stderr
    assert "missing.img" in r.stderr, r.stderr
    _nothing_attached(host, domid)
    r = host.xl("block-detach", "hot", "xvdz", check=False)
    assert (r.returncode, r.stderr) == (1, "Error: Device xvdz not connected.\n")
    r = host.xl("block-detach", "hot", "bogus", check=False)
    assert (r.returncode, r.stderr) == (1, "Error: Device bogus not connected.\n")
    r = host.xl("block-attach", "999", f"file:{img},xvdb,w", check=False)  # a domid: not checked first
    assert r.returncode == 1 and r.stderr.endswith("libxl_device_disk_add failed.\n"), r.stderr
    r = host.xl("block-detach", "nosuch", "xvdb", check=False)
    assert (r.returncode, r.stderr) == (1, "nosuch is an invalid domain identifier (rc=-6)\n")
    assert _block_rows(host, "hot") == []

    # Attach: the guest finds it, writes and reads it back.
    host.xl("block-attach", "hot", f"file:{img},xvdb,w")
    assert [r[0] for r in _block_rows(host, "hot")] == [str(XVDB)]
    # Connected once the guest's driver has probed the new device (as in Xen, xl returns before).
    _wait(lambda: [(r[0], r[3]) for r in _block_rows(host, "hot")] == [(str(XVDB), "4")])
    text = host.wait_console("hot", "hot-lazy ")
    assert "hot-write 0" in text and "hot-read hot-data-1" in text and "hot-lazy 0" in text, text[-1500:]
    r = host.xl("block-attach", "hot", f"file:{img},xvdb,w", check=False)
    assert r.returncode == 1 and "device already exists in xenstore" in r.stderr, r.stderr
    # The stored config follows (a save or migration carries the disk).
    assert userdata.retrieve(host.paths, domid).disks == (f"file:{img},xvdb,w",)

    # Detach: the guest lets go, the write it never synced is in the file.
    host.xl("block-detach", "hot", "xvdb")
    host.wait_console("hot", "hot-gone")
    data = img.read_bytes()
    assert data[:10] == b"hot-data-1" and data[8 * 512:8 * 512 + 10] == b"hot-lazy-2"
    assert _block_rows(host, "hot") == []
    _nothing_attached(host, domid)
    assert userdata.retrieve(host.paths, domid).disks == ()
    assert host.domains()["hot"]["state"] in ("r-----", "-b----")

    # A guest that does not let go (paused): block-detach gives up after libxl's 10 s and the
    # disk stays, Closing; -f removes it all the same.
    host.xl("block-attach", "hot", f"file:{img},xvdb,w")
    _wait(lambda: [(r[0], r[3]) for r in _block_rows(host, "hot")] == [(str(XVDB), "4")])
    host.xl("pause", "hot")
    t0 = time.monotonic()
    r = host.xl("block-detach", "hot", "xvdb", check=False)
    assert r.returncode == 1 and r.stderr.endswith("libxl_device_disk_safe_remove failed.\n"), r.stderr
    assert "did not release disk 51728" in r.stderr and time.monotonic() - t0 >= 9.5
    assert [(r[0], r[3]) for r in _block_rows(host, "hot")] == [(str(XVDB), "5")]
    host.xl("block-detach", "-f", "hot", "xvdb")
    _nothing_attached(host, domid)
    host.xl("unpause", "hot")
    # Once the guest has finished the unplug it was asked for, the same vdev attaches again
    # (the device model drops what the forced detach left) and the guest's driver connects.
    deadline = time.monotonic() + 60
    while (r := host.xl("block-attach", "hot", f"file:{img},xvdb,w", check=False)).returncode != 0:
        assert "uplicate" in r.stderr and time.monotonic() < deadline, r.stderr  # still plugged
        time.sleep(0.5)
    _wait(lambda: [(r[0], r[3]) for r in _block_rows(host, "hot")] == [(str(XVDB), "4")])
    host.xl("block-detach", "hot", "xvdb")
    _nothing_attached(host, domid)


def _debian_scripts(dest: Path) -> Path | None:
    """Debian's /etc/xen/scripts from xen-utils-common, unpacked into ``dest`` (apt-get
    download: the package is not installed, and pyxen does not need it to be)."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        return None
    work = dest / "deb"
    work.mkdir()
    r = subprocess.run(["apt-get", "download", "xen-utils-common"], cwd=work, capture_output=True, timeout=120)
    debs = list(work.glob("xen-utils-common_*.deb"))
    if r.returncode != 0 or not debs:
        return None
    subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(work / "x")], check=True, timeout=60)
    return work / "x" / "etc" / "xen" / "scripts"


FAILING = """#!/bin/sh
# A user's script that cannot set its disk up: says why as Xen's scripts do, exits 1.
echo "$0 $1 $XENBUS_TYPE $XENBUS_PATH $XENBUS_BASE_PATH" >> "$PYXEN_ROOT/failing.args"
xenstore-write "$XENBUS_PATH/hotplug-error" "no such LUN" "$XENBUS_PATH/hotplug-status" error
echo "failing: giving up" >&2
exit 1
"""


def test_hotplug_scripts_debian_block_and_a_failing_one(host) -> None:  # type: ignore[no-untyped-def]
    if shutil.which("xenstore-write") is None or shutil.which("losetup") is None:
        pytest.skip("xenstore-utils or losetup missing")
    scripts = _debian_scripts(host.paths.root)
    if scripts is None:
        pytest.skip("Debian's xen-utils-common cannot be downloaded here")
    host.paths.scripts_dir.mkdir()
    for f in scripts.iterdir():
        shutil.copy2(f, host.paths.scripts_dir / f.name)
    own = host.paths.scripts_dir / "failing"
    own.write_text(FAILING)
    own.chmod(own.stat().st_mode | stat.S_IXUSR)
    Path("/var/log/xen").mkdir(parents=True, exist_ok=True)  # Debian's scripts log there

    img = host.paths.root / "scripted.img"
    img.write_bytes(bytes(4 << 20))
    # At create too: the script's failure fails the create, and no domain is left.
    cfg = host.write_cfg("early", extra_lines=f"disk = ['{img},raw,xvdb,w,script=failing']\n")
    r = host.xl("create", str(cfg), check=False)
    assert r.returncode != 0 and "script: no such LUN" in r.stderr, r.stderr
    assert "early" not in host.domains()
    (host.paths.root / "failing.args").unlink()
    domid = host.create("scr", memory=256, script=GUEST)
    host.wait_console("scr")

    # A script that fails: libxl's lines, nothing left attached.
    r = host.xl("block-attach", "scr", f"{img},raw,xvdb,w,script=failing", check=False)
    assert r.returncode == 1, r.stderr
    assert "libxl: error: script: no such LUN\n" in r.stderr, r.stderr
    assert "failing add [" in r.stderr and "exited with error status 1" in r.stderr, r.stderr
    assert r.stderr.endswith("libxl_device_disk_add failed.\n")
    args = (host.paths.root / "failing.args").read_text().split()
    assert args == [str(own), "add", "vbd", f"backend/vbd/{domid}/{XVDB}", "backend"]
    assert "failing: giving up" in host.paths.hotplug_log.read_text()
    assert _block_rows(host, "scr") == []
    _nothing_attached(host, domid)

    # Debian's block: it puts the file on a loop device and says connected; blkback serves that.
    host.xl("block-attach", "scr", f"{img},raw,xvdb,w,script=block")
    with XenstoreClient(host.paths.xenstored_socket) as xs:
        be = f"/local/domain/0/backend/vbd/{domid}/{XVDB}"
        assert xs.read(f"{be}/hotplug-status") == b"connected"
        assert xs.read(f"{be}/script") == str(host.paths.scripts_dir / "block").encode()
        loop = xs.read(f"{be}/physical-device-path").decode()
    assert loop.startswith("/dev/loop")
    try:
        assert str(img) in subprocess.run(["losetup", loop], capture_output=True, text=True).stdout
        text = host.wait_console("scr", "hot-lazy ")
        assert "hot-write 0" in text and "hot-read hot-data-1" in text, text[-1500:]
        host.xl("block-detach", "scr", "xvdb")
        host.wait_console("scr", "hot-gone")
    finally:
        if str(img) in subprocess.run(["losetup", loop], capture_output=True, text=True).stdout:
            subprocess.run(["losetup", "-d", loop])  # the test's own clean-up if remove failed
            raise AssertionError(f"block remove left {loop} on {img}")
    data = img.read_bytes()
    assert data[:10] == b"hot-data-1" and data[8 * 512:8 * 512 + 10] == b"hot-lazy-2"
    _nothing_attached(host, domid)


def _qemu_open_files(host, name: str) -> set[str]:  # type: ignore[no-untyped-def]
    """The files the named guest's QEMU has open (the emulated drive's medium among them)."""
    from pyxen.testing.host import qemu_pids_under
    for pid in qemu_pids_under(host.paths.root):
        if f"-name\0{name},".encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
            out = set()
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    out.add(os.readlink(fd))
                except OSError:
                    pass
            return out
    raise AssertionError(f"no QEMU for {name}")


def test_cd_insert_and_eject_on_an_hvm_guest(host) -> None:  # type: ignore[no-untyped-def]
    """An HVM guest's emulated IDE CD-ROM (``,hdc:cdrom,r``): cd-insert puts a medium in the
    drive (QEMU opens it), cd-eject takes it out; xl's errors for a PV guest, a drive that is
    not there and a file that is not there. (The demo guest has no ATA driver, so the medium
    is checked from the device model's side.)"""
    iso = host.paths.root / "disc.iso"
    iso.write_bytes(os.urandom(1 << 20))
    cfg = host.write_cfg("cd", extra_lines="type = \"hvm\"\ndisk = [ ',hdc:cdrom,r' ]\n")
    host.xl("create", str(cfg))
    host.wait_console("cd")
    assert [r[0] for r in _block_rows(host, "cd")] == ["5632"]
    assert str(iso) not in _qemu_open_files(host, "cd")
    host.xl("cd-insert", "cd", "hdc", str(iso))
    assert str(iso) in _qemu_open_files(host, "cd")
    with XenstoreClient(host.paths.xenstored_socket) as xs:
        domid = int(host.xl("domid", "cd").stdout)
        assert xs.read(f"/local/domain/0/backend/qdisk/{domid}/5632/params") == f"aio:{iso}".encode()
    host.xl("cd-eject", "cd", "hdc")
    assert str(iso) not in _qemu_open_files(host, "cd")
    r = host.xl("block-detach", "cd", "hdc", check=False)
    assert r.returncode == 1 and "is an emulated cdrom drive, which cannot be unplugged" in r.stderr, r.stderr
    assert [r[0] for r in _block_rows(host, "cd")] == ["5632"]

    r = host.xl("cd-insert", "cd", "hdd", str(iso), check=False)
    assert r.returncode == 1 and r.stderr.endswith("Virtual device not found\n"), r.stderr
    r = host.xl("cd-insert", "cd", "hdc", "/nonexistent.iso", check=False)
    assert (r.returncode, r.stderr) == (1, "Cannot stat file: /nonexistent.iso\n")
    r = host.xl("cd-eject", "nosuch", "hdc", check=False)
    assert (r.returncode, r.stderr) == (1, "nosuch is an invalid domain identifier (rc=-6)\n")
    bad = host.write_cfg("pvcd", extra_lines="disk = [ ',xvdc:cdrom,r' ]\n")
    r = host.xl("create", str(bad), check=False)
    assert r.returncode != 0 and "an empty cdrom drive needs an hvm guest" in r.stderr, r.stderr
    pv = host.write_cfg("pv")
    host.xl("create", "-p", str(pv))
    r = host.xl("cd-insert", "pv", "hdc", str(iso), check=False)
    assert r.returncode == 1 and r.stderr.endswith("cdrom-insert requires an HVM domain\n"), r.stderr


def test_channel_list(host) -> None:  # type: ignore[no-untyped-def]
    """Xen's header; pyxen builds no channels (channel= is refused at create), so no rows."""
    cfg = host.write_cfg("ch", extra_lines='channel = [ "name=org.example.0,connection=socket,path=/tmp/ch" ]\n')
    r = host.xl("create", str(cfg), check=False)
    assert r.returncode != 0 and "channel: pyxen does not build PV channels" in r.stderr, r.stderr
    assert "ch" not in host.domains()
    host.xl("create", "-p", str(host.write_cfg("ch2")))
    r = host.xl("channel-list", "ch2")
    assert r.stdout == "Idx BE state evt-ch ring-ref connection %-30s\n" % ""
    r = host.xl("channel-list", "ch2", "nosuch", check=False)
    assert r.returncode == 1 and r.stderr == "nosuch is an invalid domain identifier (rc=-6)\n"


def test_an_attached_disk_is_carried_by_save_and_restore(host) -> None:  # type: ignore[no-untyped-def]
    """The stored config follows block-attach, so a restored guest has its disk back, served
    and usable: it is detached from the guest after the restore, and the guest sees it go."""
    img = host.paths.root / "kept.img"
    img.write_bytes(bytes(4 << 20))
    host.create("sv", memory=256, script=GUEST)
    host.wait_console("sv")
    host.xl("block-attach", "sv", f"{img},raw,xvdb,w")
    host.wait_console("sv", "hot-lazy ")
    saved = host.paths.root / "sv.save"
    host.xl("save", "sv", str(saved))
    assert "sv" not in host.domains()
    host.xl("restore", str(saved))
    _wait(lambda: [(r[0], r[3]) for r in _block_rows(host, "sv")] == [(str(XVDB), "4")])
    host.xl("block-detach", "sv", "xvdb")
    host.wait_console("sv", "hot-gone")
    data = img.read_bytes()
    assert data[:10] == b"hot-data-1" and data[8 * 512:8 * 512 + 10] == b"hot-lazy-2"
