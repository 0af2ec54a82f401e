"""Issue 9, first part: ``xl save`` and ``xl restore`` of a real guest, with xl's container and
messages. The guest prints a counter; after save and restore it goes on from where it stopped."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from pyxen.toolstack.savefile import MAGIC

from ..conftest import BIN, Host, qemu_pids_under

pytestmark = pytest.mark.integration

COUNTER = 'i=0; while true; do echo "tick $i"; i=$((i+1)); sleep 0.1; done &'


def ticks(host: Host, name: str) -> list[int]:
    return [int(n) for n in re.findall(r"^tick (\d+)\r?$", host.console_text(name), re.M)]


def wait_ticks(host: Host, name: str, above: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ticks(host, name) or max(ticks(host, name)) <= above:
        assert time.monotonic() < deadline, host.console_text(name)[-800:]
        time.sleep(0.1)


def test_save_and_restore_continue_where_it_stopped(host: Host, tmp_path: Path) -> None:
    domid = host.create("sr", memory=128, script=COUNTER)
    host.wait_console("sr")
    wait_ticks(host, "sr", 10)
    free = int(host.info("free_memory"))
    save = tmp_path / "sr.save"
    done = host.xl("save", "sr", str(save))
    assert re.fullmatch(rf"Saving to {save} new xl format \(info 0x3/0x0/\d+\)\n", done.stderr), done.stderr
    assert "sr" not in host.domains() and qemu_pids_under(host.paths.root) == []
    assert int(host.info("free_memory")) == free + 128
    assert save.read_bytes()[:32] == MAGIC
    before = max(ticks(host, "sr"))
    time.sleep(1.0)
    assert max(ticks(host, "sr")) == before  # nothing runs while it is saved

    done = host.xl("restore", str(save))
    assert done.stderr.splitlines()[:3] == [
        f"Loading new save file {save} (new xl fmt info 0x3/0x0/{done.stderr.split('/')[-1].split(')')[0]})",
        " Savefile contains xl domain config in JSON format", "Parsing config from <saved>"], done.stderr
    row = host.domains()["sr"]
    assert row["id"] != str(domid) and row["mem"] == "128"
    wait_ticks(host, "sr", before + 10)
    after = ticks(host, "sr")
    # The counter went on from where it stopped: no new boot (no tick 0 again), no gap.
    assert after.count(0) == 1 and "pyxen demo guest up" in host.console_text("sr")
    assert host.console_text("sr").count("pyxen demo guest up") == 1
    # Around the save no tick is missing or repeated (early ticks may share a line with the
    # boot's own output, so the check starts a little before the save).
    tail = [n for n in after if n >= before - 5]
    assert tail == list(range(before - 5, max(after) + 1)), (before, tail)
    host.xl("destroy", "sr")


def test_save_keep_running_or_paused_and_restore_paused(host: Host, tmp_path: Path) -> None:
    host.create("kp", memory=128, script=COUNTER)
    host.wait_console("kp")
    wait_ticks(host, "kp", 3)
    host.xl("save", "-c", "kp", str(tmp_path / "c.save"))
    assert host.domains()["kp"]["state"][2] == "-"
    n = max(ticks(host, "kp"))
    wait_ticks(host, "kp", n + 3)  # still running
    host.xl("save", "-p", "kp", str(tmp_path / "p.save"))
    assert host.domains()["kp"]["state"][2] == "p"
    host.xl("destroy", "kp")
    host.xl("restore", "-p", str(tmp_path / "c.save"))
    assert host.domains()["kp"]["state"][2] == "p"
    n = max(ticks(host, "kp"))
    time.sleep(1.0)
    assert max(ticks(host, "kp")) == n  # paused: no progress
    # A paused domain saves too (it is gone after), and a restore without -p runs it.
    host.xl("save", "kp", str(tmp_path / "paused.save"))
    assert "kp" not in host.domains()
    host.xl("restore", str(tmp_path / "paused.save"))
    assert host.domains()["kp"]["state"][2] == "-"
    wait_ticks(host, "kp", n + 3)
    assert ticks(host, "kp").count(0) == 1  # one boot in all
    host.xl("destroy", "kp")


def test_restore_of_a_bad_file_is_one_line_and_creates_nothing(host: Host, tmp_path: Path) -> None:
    bad = tmp_path / "bad.save"
    for content, message in ((b"not a save file at all, but long enough to hold a header.....",
                              "File has wrong magic number - corrupt or for a different tool?"),
                             (MAGIC[:20], f"file/stream truncated reading header from {bad}")):
        bad.write_bytes(content)
        done = host.xl("restore", str(bad), check=False)
        assert done.returncode == 1 and done.stderr.strip().splitlines()[-1] == message, done.stderr
    done = host.xl("restore", str(tmp_path / "missing.save"), check=False)
    assert done.returncode == 1 and done.stderr == "Can't open restore file: No such file or directory\n"
    assert list(host.domains()) == ["Domain-0"] and qemu_pids_under(host.paths.root) == []


def test_save_and_restore_with_a_disk_and_a_vif(host: Host, tmp_path: Path) -> None:
    """Devices come back through the backends: the guest's file on its blkback disk is intact
    and still writable after the restore, and its vif is plugged again."""
    from pyxen.testing.bridge import link_local_bridge
    img = tmp_path / "d.img"
    img.write_bytes(bytes(8 << 20))
    script = (COUNTER + " dd if=/dev/urandom of=/dev/vda bs=64k count=16 conv=fsync 2>/dev/null; "
              "echo \"sum-before $(dd if=/dev/vda bs=64k count=16 2>/dev/null | md5sum)\"; "
              "while true; do echo 3 > /proc/sys/vm/drop_caches; "
              "echo \"sum-now $(dd if=/dev/vda bs=64k count=16 2>/dev/null | md5sum)\"; sleep 1; done &")
    with link_local_bridge() as (bridge, _):
        host.create("dv", memory=128, script=script,
                    extra_lines=f"disk = ['file:{img},xvda,w']\nvif = ['bridge={bridge}']\n")
        host.wait_console("dv", "sum-before")
        before = max(ticks(host, "dv"))
        save = tmp_path / "dv.save"
        host.xl("save", "dv", str(save))
        host.xl("restore", str(save))
        wait_ticks(host, "dv", before + 5)
        sums = re.findall(r"^sum-(before|now) ([0-9a-f]{32})  -", host.console_text("dv"), re.M)
        restored_at = host.console_text("dv").rfind(f"tick {before}")
        later = re.findall(r"^sum-now ([0-9a-f]{32})  -", host.console_text("dv")[restored_at:], re.M)
        deadline = time.monotonic() + 30
        while len(later) < 2:  # read back from the disk after the restore, caches dropped
            assert time.monotonic() < deadline, host.console_text("dv")[-800:]
            time.sleep(0.5)
            later = re.findall(r"^sum-now ([0-9a-f]{32})  -", host.console_text("dv")[restored_at:], re.M)
        assert set(later) == {sums[0][1]}, (sums[0], later)
        assert len(host.xl("block-list", "dv").stdout.splitlines()) == 2
        assert len(host.xl("network-list", "dv").stdout.splitlines()) == 2
        host.xl("destroy", "dv")
    assert ticks(host, "dv").count(0) == 1


#: The server in Dom0's namespace that the guest's TCP connection goes to: it appends what it
#: receives to a file, after writing "ready" to another once it listens.
TCP_SERVER = """import socket, sys
s = socket.create_server((sys.argv[1], 7777))
s.settimeout(120)
open(sys.argv[3], "w").write("ready")
c, _ = s.accept()
with open(sys.argv[2], "a") as f:
    for line in c.makefile("r"):
        f.write(line)
        f.flush()
"""


def test_a_tcp_connection_from_the_guest_survives_save_and_restore(host: Host, tmp_path: Path) -> None:
    """The guest sends a numbered line every 0.2 s on one TCP connection to a server in Dom0's
    namespace; saved, gone for a second, restored: the lines keep coming on the same
    connection, in order, none lost or repeated (TCP retransmits what the gap dropped)."""
    import subprocess
    import sys
    from pyxen.testing.bridge import link_local_bridge
    dom0_ip = "169.254.77.100"
    out, ready = tmp_path / "lines", tmp_path / "ready"

    def got() -> list[int]:
        text = out.read_text() if out.exists() else ""
        return [int(line.split()[1]) for line in text[:text.rfind("\n") + 1].splitlines()]

    def wait_lines(n: int, what: str) -> None:
        deadline = time.monotonic() + 60
        while len(got()) < n:
            assert time.monotonic() < deadline, f"{what}: {got()[-3:]}\n{host.console_text('tp')[-1500:]}"
            time.sleep(0.2)

    with link_local_bridge(dom0_ip=dom0_ip) as (bridge, ns):
        assert ns is not None
        server = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", TCP_SERVER,
                                   dom0_ip, str(out), str(ready)])
        try:
            deadline = time.monotonic() + 30
            while not ready.exists():
                assert time.monotonic() < deadline and server.poll() is None, "the server did not start"
                time.sleep(0.05)
            script = (COUNTER + " ip link set eth0 up; ip addr add 169.254.77.32/16 dev eth0; "
                      "(i=0; while :; do echo \"c $i\"; i=$((i+1)); sleep 0.2; done) | "
                      f"nc {dom0_ip} 7777 >/dev/null &")
            host.create("tp", memory=128, script=script,
                        extra_lines=f"vif = ['mac=00:16:3e:00:78:32,bridge={bridge}']\n")
            host.wait_console("tp")
            wait_lines(6, "no TCP lines from the guest")
            save = tmp_path / "tp.save"
            host.xl("save", "tp", str(save))
            time.sleep(1.0)
            before = len(got())
            host.xl("restore", str(save))
            wait_lines(before + 15, "the connection stalled after the restore")
            assert got() == list(range(len(got()))), got()  # one connection, in order
            host.xl("destroy", "tp")
        finally:
            server.kill()
            server.wait()


# Writes on the HVM guest's VGA text console (tty1, not its serial console), hides the cursor so
# the screen holds still, then checks every second that the VGA memory still shows it.
VGA = ("printf '\\033[2J\\033[H\\033[?25lpyxen HVM screen before the save\\n' > /dev/tty1; "
       "(while sleep 1; do grep -q 'HVM screen before' /dev/vcs1 && echo vga-text-ok || echo vga-text-lost; "
       "done) &")


def test_hvm_guest_saved_with_D_and_restored_with_its_emulated_display(host: Host, tmp_path: Path) -> None:
    """type = "hvm" (emulated PC with std VGA, VNC console): after save and restore the counter
    goes on, the VGA text the guest wrote is still in the VGA memory it reads, and the VNC
    display shows exactly the same frame. With -D the restore asks for the same domid, refused
    while it is recently used (LIBXL_DOMID_REUSE_TIMEOUT), then given; -V starts $VNCVIEWER."""
    from pyxen.testing import vnc
    display = 40 + os.getpid() % 50
    cfg = host.write_cfg("hv", memory=128, script=COUNTER + " " + VGA,
                         extra_lines=f'type = "hvm"\nvnc = 1\nvncdisplay = {display}\n')
    host.xl("create", str(cfg))
    host.wait_console("hv", "vga-text-ok")
    wait_ticks(host, "hv", 10)
    screen = vnc.frame("127.0.0.1", 5900 + display)
    assert screen.colours() > 1, "the VGA screen is blank"
    assert vnc.frame("127.0.0.1", 5900 + display) == screen  # nothing else draws on it
    domid = int(host.xl("domid", "hv").stdout)
    save = tmp_path / "hv.save"
    host.xl("save", "-D", "hv", str(save))
    before = max(ticks(host, "hv"))
    assert "hv" not in host.domains() and qemu_pids_under(host.paths.root) == []

    done = host.xl("restore", str(save), check=False)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[-1] == f"libxl: error: Domain {domid}:domain id recently used"
    assert "hv" not in host.domains() and qemu_pids_under(host.paths.root) == []

    viewer, seen = tmp_path / "viewer", tmp_path / "viewer.args"
    viewer.write_text(f"#!/bin/sh\necho \"$@\" > {seen}\n")
    viewer.chmod(0o755)
    host.env.update(LIBXL_DOMID_REUSE_TIMEOUT="0", VNCVIEWER=str(viewer))
    try:
        host.xl("restore", "-V", str(save))
    finally:
        del host.env["LIBXL_DOMID_REUSE_TIMEOUT"], host.env["VNCVIEWER"]
    assert host.domains()["hv"]["id"] == str(domid)
    wait_ticks(host, "hv", before + 20)
    after = ticks(host, "hv")
    assert after.count(0) == 1 and host.console_text("hv").count("pyxen demo guest up") == 1
    tail = [n for n in after if n >= before - 5]
    assert tail == list(range(before - 5, max(after) + 1)), (before, tail)
    restored = host.console_text("hv")[host.console_text("hv").rfind(f"tick {before + 1}\n"):]
    assert "vga-text-ok" in restored and "vga-text-lost" not in host.console_text("hv")
    assert vnc.frame("127.0.0.1", 5900 + display) == screen
    assert seen.read_text() == f"127.0.0.1:{display}\n"
    host.xl("destroy", "hv")


def test_restore_with_a_config_file_that_replaces_the_saved_one(host: Host, tmp_path: Path) -> None:
    """A ConfigFile replaces the saved config whole: a new name and uuid for the same guest,
    which goes on where it stopped; one that does not fit the saved state (more memory) is
    refused by the device model, with nothing left behind."""
    host.create("rc", memory=128, script=COUNTER)
    host.wait_console("rc")
    wait_ticks(host, "rc", 5)
    uuid = json.loads(host.xl("list", "-l", "rc").stdout)[0]["config"]["c_info"]["uuid"]
    save = tmp_path / "rc.save"
    host.xl("save", "rc", str(save))
    before = max(ticks(host, "rc"))

    big = host.write_cfg("rcbig", memory=256, script=COUNTER)
    done = host.xl("restore", str(big), str(save), check=False)
    last = done.stderr.splitlines()[-1]
    assert done.returncode == 1 and last.startswith("libxl: error: cannot restore domain 'rcbig': domain "), done.stderr
    assert "restoring failed: the device model exited: " in last and "mismatch: mem" in last, last
    assert list(host.domains()) == ["Domain-0"] and qemu_pids_under(host.paths.root) == []

    other = host.write_cfg("rc2", memory=128, script=COUNTER)
    done = host.xl("restore", "-d", str(other), str(save))
    assert f"Parsing config from {other}\n" in done.stderr and '"name": "rc2"' in done.stderr
    wait_ticks(host, "rc2", before + 5)
    assert min(ticks(host, "rc2")) >= before - 5  # its console log starts at the restore: no boot
    assert "pyxen demo guest up" not in host.console_text("rc2")
    assert json.loads(host.xl("list", "-l", "rc2").stdout)[0]["config"]["c_info"]["uuid"] != uuid
    host.xl("destroy", "rc2")


def test_restore_e_has_no_monitor_and_F_waits_for_the_end(host: Host, tmp_path: Path) -> None:
    """The guest powers itself off a few seconds after it booted (guest time: after the
    restore). Restored with -e, the host's monitor leaves it shut down (on_poweroff=destroy is
    not applied); restored with -F, xl waits in the foreground until the monitor has destroyed
    it, then exits 0."""
    import subprocess
    host.create("ef", memory=128, script=COUNTER + " (sleep 6; poweroff -f) &")
    host.wait_console("ef")
    save = tmp_path / "ef.save"
    host.xl("save", "ef", str(save))

    host.xl("restore", "-e", str(save))
    deadline = time.monotonic() + 60
    while host.domains()["ef"]["state"][3] != "s":
        assert time.monotonic() < deadline, host.domains()
        time.sleep(0.2)
    time.sleep(3)  # the monitor has had its @releaseDomain
    assert host.domains()["ef"]["state"][3] == "s"
    host.xl("destroy", "ef")

    waiter = subprocess.Popen([str(BIN / "xl"), "restore", "-F", str(save)], env=host.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, err = waiter.communicate(timeout=90)
    finally:
        waiter.kill()
    domid = re.search(r"^Waiting for domain ef \(domid (\d+)\) to die \[pid \d+\]$", err, re.M)
    assert waiter.returncode == 0 and domid, err
    assert err.splitlines()[-1] == f"Domain {domid.group(1)} has been destroyed."
    assert "ef" not in host.domains()
