"""blkback with real guests through ``xl create``: data written and read by the guest's
virtio_blk driver is the host image's, read-only disks refuse writes, xenstore shows the
handshake, destroy cleans the store, the event channels and the grants, and a SIGKILLed backend
daemon comes back without losing the guest's I/O."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import time
from pathlib import Path

import pytest

from pyxen.hypervisor.client import XenCtrl
from pyxen.xenstore.client import XenstoreClient

pytestmark = pytest.mark.integration

#: Finds a disk by its xl vdev: blkback answers GET_ID with the vdev, Linux shows it as serial.
FIND = 'find() { for d in /sys/block/vd*; do [ "$(cat $d/serial)" = "$1" ] && echo /dev/${d##*/}; done; }\n'


def _image(path: Path, size: int, random: bool) -> bytes:
    data = os.urandom(size) if random else bytes(size)
    path.write_bytes(data)
    return data


def _wait(pred, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_guest_reads_writes_and_readonly_refuses(host) -> None:  # type: ignore[no-untyped-def]
    root = host.paths.root
    src = _image(root / "in.img", 4 << 20, random=True)
    _image(root / "out.img", 8 << 20, random=False)
    ro = _image(root / "ro.img", 1 << 20, random=True)
    script = FIND + (
        "B=$(find xvdb); C=$(find xvdc); D=$(find xvdd)\n"
        "echo \"disks $B $C $D\"\n"
        "echo \"features $(cat /sys/block/${B#/dev/}/device/features)\"\n"
        "echo \"in-sum $(dd if=$C bs=1M count=4 2>/dev/null | sha256sum)\"\n"
        "dd if=$C of=$B bs=1M count=4 conv=fsync 2>/dev/null; echo \"copy-rc $?\"\n"
        "dd if=/dev/zero of=$D bs=4k count=1 conv=fsync 2>/dev/null; echo \"ro-rc $?\"\n")
    disks = (f"disk = ['file:{root}/out.img,xvdb,w', 'format=raw, vdev=xvdc, access=ro, target={root}/in.img', "
             f"'phy:{root}/ro.img,xvdd,r']\n")
    domid = host.create("blk", memory=256, script=script, extra_lines=disks)
    text = host.wait_console("blk")
    assert re.search(r"disks /dev/vd\w /dev/vd\w /dev/vd\w", text), text
    # The guest's driver took VIRTIO_RING_F_EVENT_IDX (bit 29): the copy below ran with it.
    features = re.search(r"features ([01]{64})", text)
    assert features and features.group(1)[29] == "1", text
    assert f"in-sum {hashlib.sha256(src).hexdigest()}" in text
    assert "copy-rc 0" in text
    assert re.search(r"ro-rc [1-9]", text), text
    assert (root / "out.img").read_bytes()[:4 << 20] == src
    assert (root / "ro.img").read_bytes() == ro

    be = f"/local/domain/0/backend/vbd/{domid}/51728"
    fe = f"/local/domain/{domid}/device/vbd/51728"
    with XenstoreClient(host.paths.xenstored_socket) as xs:
        assert xs.read(f"{be}/state") == b"4" and xs.read(f"{fe}/state") == b"4"
        assert xs.read(f"{be}/sectors") == str((8 << 20) // 512).encode()
        assert xs.read(f"{be}/mode") == b"w"
        assert xs.read(f"/local/domain/0/backend/vbd/{domid}/51760/info") == b"4"  # VDISK_READONLY
        assert xs.read(f"{fe}/backend") == be.encode()
    with XenCtrl(host.paths.hypervisor_socket) as xc:
        ports = xc.call("event_channel_op.list", dom=domid)
        assert len(ports) == 3 and all(p["status"] == "interdomain" for p in ports)
        assert len(xc.call("grant_table_op.list", dom=domid)["grants"]) == 3

    host.xl("destroy", "blk")
    with XenstoreClient(host.paths.xenstored_socket) as xs:
        _wait(lambda: not xs.exists(be) and not xs.exists(fe))
    with XenCtrl(host.paths.hypervisor_socket) as xc:
        assert xc.call("event_channel_op.list", dom=domid) == []
        assert xc.call("grant_table_op.list", dom=domid) == {"grants": [], "maps": []}
        assert all(p["remote_dom"] != domid for p in xc.call("event_channel_op.list", dom=0))


def test_bad_disk_spec_is_one_line_and_leaves_nothing(host) -> None:  # type: ignore[no-untyped-def]
    cfg = host.write_cfg("bad", extra_lines="disk = ['/nonexistent,raw']\n")
    done = host.xl("create", str(cfg), check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"{cfg}: config parsing error in disk specification: no vdev specified in `/nonexistent,raw'")
    assert "bad" not in host.domains()


def test_backend_sigkill_mid_io_resumes(host) -> None:  # type: ignore[no-untyped-def]
    root = host.paths.root
    src = _image(root / "in.img", 24 << 20, random=True)
    _image(root / "out.img", 24 << 20, random=False)
    script = FIND + (
        "B=$(find xvdb); C=$(find xvdc)\n"
        "echo start-io\n"
        "dd if=$C of=$B bs=64k count=384 conv=fsync 2>/dev/null; echo \"copy-rc $?\"\n"
        "echo 3 > /proc/sys/vm/drop_caches\n"
        "echo \"out-sum $(dd if=$B bs=1M count=24 2>/dev/null | sha256sum)\"\n")
    disks = f"disk = ['file:{root}/out.img,xvdb,w', 'file:{root}/in.img,xvdc,r']\n"
    host.create("kill", memory=256, script=script, extra_lines=disks)
    host.wait_console("kill", "start-io")
    time.sleep(0.3)
    pid = int(host.paths.pidfile("backendd").read_text())
    os.kill(pid, signal.SIGKILL)
    time.sleep(1.0)
    host.run("pyxen", "host", "start", check=True)  # starts only what is down: the backend daemon
    text = host.wait_console("kill", "out-sum", timeout=180)
    assert "copy-rc 0" in text
    assert f"out-sum {hashlib.sha256(src).hexdigest()}" in text
    assert (root / "out.img").read_bytes() == src
