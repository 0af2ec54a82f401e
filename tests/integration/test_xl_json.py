"""libxl's JSON from real domains (xl list -l), xl create -n creating nothing, and xl.cfg keys
that reach QEMU (vncpasswd, device_model_args) seen on the running device model.

Gives a guest a vif: run under ``flock /tmp/pyxen-net.lock`` (TAP names are host-global).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from pyxen.testing.vnc import authenticate, security_types

from ..conftest import Host

pytestmark = pytest.mark.integration


@pytest.fixture
def bridge() -> Iterator[str]:
    """A bridge with nothing on it but the test's vif."""
    br = f"pxjs{os.getpid() % 100000}"
    subprocess.run(["ip", "link", "add", br, "type", "bridge"], check=True)
    try:
        yield br
    finally:
        subprocess.run(["ip", "link", "del", br])


def qemu_cmdline(uuid: str) -> list[str]:
    """The argv of the QEMU whose -uuid is ``uuid`` (read from /proc, as ps would)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in args if a]
        if words and "qemu-system" in words[0] and uuid in words:
            return words
    raise AssertionError(f"no QEMU with -uuid {uuid}")


def test_list_l_and_device_model_args_on_a_running_guest(host: Host, bridge: str) -> None:
    img = host.paths.root / "j.img"
    img.write_bytes(b"\0" * (4 << 20))
    cfg = host.write_cfg("js", memory=96, vcpus=2, extra_lines=(
        f"maxmem = 128\ndisk = ['{img},raw,xvdb,w']\n"
        f"vif = ['mac=00:16:3e:21:43:65,bridge={bridge}']\ncpu_weight = 384\n"
        'on_crash = "preserve"\n'
        'device_model_args = [ "-msg", "timestamp=on" ]\ndevice_model_args_pv = [ "-rtc", "base=utc" ]\n'
        'device_model_args_hvm = [ "-no-such-option" ]\n'))
    host.xl("create", str(cfg))
    domid = int(host.xl("domid", "js").stdout)
    host.wait_console("js")

    out = host.xl("list", "-l", "js").stdout
    assert out.endswith("]\n\n")  # yajl's final newline, then puts()'s
    [entry] = json.loads(out)
    assert entry["domid"] == domid
    c, b = entry["config"]["c_info"], entry["config"]["b_info"]
    assert (c["type"], c["name"]) == ("pv", "js")
    assert (b["max_vcpus"], b["avail_vcpus"]) == (2, [0, 1])
    assert (b["target_memkb"], b["max_memkb"]) == (96 * 1024, 128 * 1024)
    assert b["sched_params"] == {"sched": "credit", "weight": 384, "cap": 0}
    assert entry["config"]["disks"][0]["pdev_path"] == str(img)
    assert entry["config"]["disks"][0]["vdev"] == "xvdb"
    [nic] = entry["config"]["nics"]
    assert (nic["devid"], nic["mac"], nic["bridge"], nic["nictype"]) == (0, "00:16:3e:21:43:65", bridge, "vif")
    assert entry["config"]["on_crash"] == "preserve" and "on_poweroff" not in entry["config"]

    # The live state, not the file: a new memory target shows in list -l.
    host.xl("mem-set", "js", "80")
    deadline = time.monotonic() + 30
    while json.loads(host.xl("list", "-l", "js").stdout)[0]["config"]["b_info"]["target_memkb"] != 80 * 1024:
        assert time.monotonic() < deadline, "list -l never showed the new target"
        time.sleep(0.5)

    # Every domain: Domain-0 first (xen-init-dom0's stub), then the guest.
    every = json.loads(host.xl("list", "-l").stdout)
    assert [e["domid"] for e in every] == [0, domid]
    assert every[0]["config"]["c_info"]["name"] == "Domain-0"

    argv = qemu_cmdline(c["uuid"])
    assert argv[-4:] == ["-msg", "timestamp=on", "-rtc", "base=utc"]
    assert "-no-such-option" not in argv
    host.xl("destroy", "js")


def test_create_n_creates_nothing(host: Host) -> None:
    cfg = host.write_cfg("dry", memory=64)
    before = set(host.domains())
    done = host.xl("create", "-n", str(cfg))
    top = json.loads(done.stdout)
    assert (top["c_info"]["name"], top["b_info"]["target_memkb"]) == ("dry", 64 * 1024)
    assert done.stderr == f"Parsing config from {cfg}\n"
    assert set(host.domains()) == before == {"Domain-0"}
    assert host.xl("domid", "dry", check=False).returncode != 0


def test_vncpasswd_makes_qemus_vnc_server_ask_for_it(host: Host) -> None:
    display = 50 + os.getpid() % 40
    cfg = host.write_cfg("vpw", memory=96, extra_lines=(
        f'type = "hvm"\nvnc = 1\nvncdisplay = {display}\nvncunused = 0\nvncpasswd = "s3cret"\n'))
    host.xl("create", str(cfg))
    try:
        types = security_types("127.0.0.1", 5900 + display)
        assert types == [2]  # VNC Authentication only: no way in without the password
        assert not authenticate("127.0.0.1", 5900 + display, "wrong")
        time.sleep(1)  # QEMU delays a client after a failed authentication
        assert authenticate("127.0.0.1", 5900 + display, "s3cret")
        uuid = json.loads(host.xl("list", "-l", "vpw").stdout)[0]["config"]["c_info"]["uuid"]
        argv = qemu_cmdline(uuid)
        assert argv[argv.index("-vnc") + 1] == f"127.0.0.1:{display},password=on"
        assert "s3cret" not in " ".join(argv)  # it went over QMP
    finally:
        host.xl("destroy", "vpw")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", 5900 + display), timeout=2).close()
