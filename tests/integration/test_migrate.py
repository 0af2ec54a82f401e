"""Issue 9: ``xl migrate`` to a second pyxen host over real ssh (pyxen.testing.twohosts), and
``xl migrate-receive`` there, with Xen's protocol and messages. A guest printing a counter every
100 ms goes on counting on the receiver (no reset), is gone from the sender, and comes back;
a receiver that dies mid-stream or a transport that answers garbage leaves it running on the
sender. Run under flock /tmp/pyxen-net.lock (the hosts' bridges)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from pyxen.testing.bridge import link_local_bridge
from pyxen.testing.host import BIN, Host
from pyxen.testing.twohosts import SecondHost, second_host

pytestmark = pytest.mark.integration

COUNTER = 'i=0; while true; do echo "tick $i"; i=$((i+1)); sleep 0.1; done &'
#: The sender's own lines, in order, on a successful migration (the receiver's are interleaved).
SENDER_OK = ["migration sender: Target has acknowledged transfer.",
             "migration sender: Giving target permission to start.",
             "migration sender: Target reports successful startup.", "Migration successful."]
RECEIVER_OK = ["migration target: Ready to receive domain.",
               "Loading new save file <incoming migration stream> (new xl fmt info 0x3/0x0/",
               " Savefile contains xl domain config in JSON format", "Parsing config from <saved>",
               "migration target: Transfer complete, requesting permission to start domain.",
               "migration target: Got permission, starting domain.",
               "migration target: Domain started successsfully."]


def logs(h: Host, name: str) -> str:
    """Everything the guest printed on ``h``: under its name, and under ``<name>--incoming``
    (xenconsoled names a log after the domain's name when it first sees it, as Xen's does)."""
    return h.console_text(name) + h.console_text(f"{name}--incoming")


def ticks(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"^tick (\d+)\r?$", text, re.M)]


def wait_for(cond, what: str, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def in_order(lines: list[str], wanted: list[str]) -> bool:
    """Each of ``wanted`` starts a line of ``lines``, in that order."""
    it = iter(lines)
    return all(any(line.startswith(w) for line in it) for w in wanted)


def migrate(src: Host, dst: SecondHost | Host, name: str, *extra: str, ssh_command: str,
            addr: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return src.xl("migrate", "-s", ssh_command, *extra, name, addr, check=False, timeout=timeout)


def back_rune(host: Host) -> str:
    """What the second host runs (``-s ""``) to reach the first one's migrate-receive: the
    first host has no sshd of its own, so the command enters its network namespace (this test
    process's) and runs its xl there."""
    return (f"exec nsenter --net=/proc/{os.getpid()}/ns/net -- env PYXEN_ROOT={host.paths.root} "
            f"{BIN}/xl migrate-receive")


def hop(src: Host, dst: Host, name: str, ssh_command: str, addr: str,
        paused: bool = False) -> tuple[float, int]:
    """One migration; checks the counter goes on at ``dst`` where it stopped at ``src``
    (``paused``: the receiver was told -p; the guest waits there until unpaused).
    Returns the time it took and the last tick seen."""
    mark = len(logs(dst, name))
    before = max(ticks(logs(src, name)))
    t0 = time.monotonic()
    done = migrate(src, dst, name, ssh_command=ssh_command, addr=addr)
    took = time.monotonic() - t0
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert in_order(lines, SENDER_OK) and in_order(lines, RECEIVER_OK), done.stderr
    assert name not in src.domains() and f"{name}{'--migratedaway'}" not in src.domains()
    if paused:
        assert dst.domains()[name]["state"][2] == "p"
        time.sleep(1.0)
        assert ticks(logs(dst, name)[mark:]) == []
        dst.xl("unpause", name)
    assert dst.domains()[name]["state"][2] == "-"  # running, under its own name
    wait_for(lambda: len(ticks(logs(dst, name)[mark:])) >= 5, f"no ticks at the receiver:\n"
             f"{logs(dst, name)[-1500:]}")
    new = ticks(logs(dst, name)[mark:])
    last_src = max(ticks(logs(src, name)))
    # No reset, no gap: the receiver's first tick follows the sender's last one (or the one
    # after, when the stop cut that line between the two consoles).
    assert before <= last_src and last_src < new[0] <= last_src + 2, (before, last_src, new[:5])
    assert new == list(range(new[0], new[0] + len(new))), new
    assert "Kernel panic" not in logs(dst, name)[mark:], logs(dst, name)[-3000:]
    return took, new[-1]


def test_migrate_over_ssh_counter_goes_on_disk_intact_and_back(host: Host, demo_image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The guest (a blkback disk on shared storage, its contents hashed every second with the
    page cache dropped) moves to the second host and back: the counter goes on each time, the
    disk reads back the same, nothing is left at the sender, no migrate-receive lingers."""
    img = tmp_path / "m.img"
    img.write_bytes(bytes(8 << 20))
    script = (COUNTER + " dd if=/dev/urandom of=/dev/vda bs=64k count=16 conv=fsync 2>/dev/null; "
              "echo \"sum-before $(dd if=/dev/vda bs=64k count=16 2>/dev/null | md5sum)\"; "
              "while true; do echo 3 > /proc/sys/vm/drop_caches; "
              "echo \"sum-now $(dd if=/dev/vda bs=64k count=16 2>/dev/null | md5sum)\"; sleep 1; done &")
    with link_local_bridge() as (br, _), second_host(demo_image, br) as h2:
        host.create("mg", memory=128, script=script, extra_lines=f"disk = ['file:{img},xvda,w']\n")
        host.wait_console("mg", "sum-before")
        wait_for(lambda: len(ticks(host.console_text("mg"))) > 5, "no ticks")
        text = host.console_text("mg")  # read again: the sum-before line is whole by now
        took, last = hop(host, h2, "mg", h2.ssh_command, h2.addr)
        print(f"\nmigration to the second host: {took:.1f} s")
        before = re.search(r"^sum-before ([0-9a-f]{32})  -", text, re.M).group(1)  # type: ignore[union-attr]
        mark = len(logs(h2, "mg"))
        wait_for(lambda: len(re.findall(r"^sum-now ([0-9a-f]{32})  -", logs(h2, "mg")[mark:], re.M)) >= 2,
                 "no disk reads at the receiver")
        assert set(re.findall(r"^sum-now ([0-9a-f]{32})  -", logs(h2, "mg")[mark:], re.M)) == {before}
        assert len(h2.xl("block-list", "mg").stdout.splitlines()) == 2
        wait_for(lambda: "migrate-receive" not in h2.sh("ps", "ax", "-o", "args").stdout,
                 "migrate-receive still running at the receiver", timeout=10)

        # And back (not over ssh: see back_rune), the receiver told to leave it paused.
        took, last = hop(h2, host, "mg", "", back_rune(host) + " -p", paused=True)
        print(f"migration back: {took:.1f} s")
        host.xl("destroy", "mg")


def test_migrate_back_and_forth_ten_times(host: Host, demo_image) -> None:  # type: ignore[no-untyped-def]
    with link_local_bridge() as (br, _), second_host(demo_image, br) as h2:
        host.create("bf", memory=128, script=COUNTER)
        host.wait_console("bf")
        wait_for(lambda: len(ticks(host.console_text("bf"))) > 5, "no ticks")
        back = back_rune(host)
        times = []
        for _ in range(10):
            times.append(hop(host, h2, "bf", h2.ssh_command, h2.addr)[0])
            times.append(hop(h2, host, "bf", "", back)[0])
        print(f"\n20 migrations: {sum(times):.1f} s, longest {max(times):.1f} s")
        # One boot in all: the counter never started again.
        assert (logs(host, "bf") + logs(h2, "bf")).count("pyxen demo guest up") == 1
        host.xl("destroy", "bf")


def test_receiver_dies_mid_stream_or_bad_banner_guest_stays_on_the_sender(host: Host, demo_image) -> None:  # type: ignore[no-untyped-def]
    """A transport that stops after 2 MB (the receiver then sees its stream end and gives up),
    a receiver killed mid-stream, and a "receiver" that prints garbage or nothing: xl migrate
    exits 1 with Xen's messages, the guest runs on at the sender under its own name, and the
    receiver has nothing left."""
    with link_local_bridge() as (br, _), second_host(demo_image, br) as h2:
        host.create("kd", memory=128, script=COUNTER)
        host.wait_console("kd")
        ssh = f"{h2.ssh_command} {h2.addr}"

        def still_running() -> None:
            assert host.domains()["kd"]["state"][2] == "-", host.domains()
            n = max(ticks(host.console_text("kd")))
            wait_for(lambda: max(ticks(host.console_text("kd"))) > n + 3, "the guest stopped")
            assert list(h2.domains()) == ["Domain-0"], h2.domains()

        done = migrate(host, h2, "kd", ssh_command="", addr=f"head -c 2000000 | {ssh} xl migrate-receive")
        assert done.returncode == 1, done.stderr
        lines = done.stderr.splitlines()
        assert in_order(lines, ["migration target: Ready to receive domain.",
                                "migration sender: libxl_domain_suspend failed (rc=-3)",
                                "Migration failed, resuming at sender."]), done.stderr
        assert "migration target: Domain creation failed (code -3)." in lines, done.stderr
        still_running()

        # The receiver process killed (SIGKILL) while the stream flows: the stream is slowed
        # to about 6 MB/s on the sender's side so that it is still flowing when, a second
        # after the receiver's domain appeared, the receiver dies.
        relay = shlex.quote("import sys, time\nwhile d := sys.stdin.buffer.read1(65536):\n"
                            "    sys.stdout.buffer.write(d); sys.stdout.flush(); time.sleep(0.01)")
        # (dash gives a background command /dev/null as stdin unless it is redirected from
        # another descriptor.)
        remote = shlex.quote("exec 3<&0; xl migrate-receive <&3 3<&- & p=$!; "
                             "for i in $(seq 300); do xl list | grep -q -- --incoming && break; "
                             "sleep 0.05; done; sleep 1; kill -9 $p; wait")
        done = migrate(host, h2, "kd", ssh_command="",
                       addr=f"python3 -c {relay} | {ssh} {remote}")
        assert done.returncode == 1, done.stderr
        lines = done.stderr.splitlines()
        assert in_order(lines, ["migration target: Ready to receive domain.",
                                "migration sender: libxl_domain_suspend failed (rc=-3)",
                                "Migration failed, resuming at sender."]), done.stderr
        assert "migration target: Transfer complete" not in done.stderr
        wait_for(lambda: list(h2.domains()) == ["Domain-0"], f"left at the receiver: {h2.domains()}")
        still_running()

        garbage = "x" * 80
        done = migrate(host, h2, "kd", ssh_command="", addr=f"echo {garbage}")
        assert done.returncode == 1
        assert done.stderr.splitlines() == [
            "migration receiver stream contained unexpected data instead of banner",
            f"(command run was: echo {garbage} )"], done.stderr
        done = migrate(host, h2, "kd", ssh_command="", addr="echo short")
        assert done.returncode == 1
        assert done.stderr.splitlines() == [
            "file/stream truncated reading banner from migration receiver stream"], done.stderr
        still_running()

        # A failure at the target after GO: a domain already has the name there, so its
        # rename fails; it destroys its copy and gives the guest back, which resumes here.
        h2.xl("create", "-p", str(h2.write_cfg("kd", memory=64)))  # (a decoy, never started)
        done = migrate(host, h2, "kd", ssh_command=h2.ssh_command, addr=h2.addr)
        assert done.returncode == 1, done.stderr
        # (The two sides' lines interleave as they come: each side's are checked in order.)
        assert in_order(done.stderr.splitlines(), [
            "migration target: Got permission, starting domain.",
            'libxl: error: cannot rename domain', "migration target: Failure, destroying our copy.",
            "migration target: Cleanup OK, granting sender permission to resume."]), done.stderr
        assert in_order(done.stderr.splitlines(), [
            "migration sender: Target has acknowledged transfer.",
            "migration sender: Giving target permission to start.",
            "migration sender: Target reports startup failure (status code 3).",
            "migration sender: Trying to resume at our end.",
            "migration sender: Resumed OK.",
            "Migration failed due to problems at target."]), done.stderr
        assert sorted(h2.domains()) == ["Domain-0", "kd"] and h2.domains()["kd"]["state"][2] == "p"
        h2.xl("destroy", "kd")
        still_running()
        host.xl("destroy", "kd")


def test_a_disk_the_receiver_cannot_open_keeps_the_guest_on_the_sender(host: Host, demo_image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Shared storage as in Xen: the receiver opens the same disk path. Here the path is gone
    (renamed after the sender's back-end opened it), so the receiver's domain cannot be built:
    the migration fails before the guest is ever paused, and it runs on at the sender with its
    disk, nothing left at the receiver."""
    img = tmp_path / "d.img"
    img.write_bytes(bytes(4 << 20))
    script = (COUNTER + " while true; do echo 3 > /proc/sys/vm/drop_caches; "
              "dd if=/dev/vda bs=64k count=4 of=/dev/null 2>/dev/null && echo \"rd-ok\"; sleep 1; done &")
    with link_local_bridge() as (br, _), second_host(demo_image, br) as h2:
        host.create("nd", memory=128, script=script, extra_lines=f"disk = ['file:{img},xvda,w']\n")
        host.wait_console("nd", "rd-ok")
        moved = img.with_name("d.moved")
        img.rename(moved)
        try:
            done = migrate(host, h2, "nd", ssh_command=h2.ssh_command, addr=h2.addr)
        finally:
            moved.rename(img)
        assert done.returncode == 1, done.stderr
        lines = done.stderr.splitlines()
        assert "migration target: Domain creation failed (code -3)." in lines, done.stderr
        assert str(img) in done.stderr, done.stderr  # the error names the disk it could not open
        assert in_order(lines, ["migration sender: libxl_domain_suspend failed (rc=-3)",
                                "Migration failed, resuming at sender."]), done.stderr
        assert host.domains()["nd"]["state"][2] == "-", host.domains()
        mark = len(host.console_text("nd"))
        wait_for(lambda: host.console_text("nd")[mark:].count("rd-ok") >= 2, "the guest's disk stopped")
        wait_for(lambda: list(h2.domains()) == ["Domain-0"], f"left at the receiver: {h2.domains()}")
        host.xl("destroy", "nd")


def test_tcp_connection_from_dom0_survives_the_migration(host: Host, demo_image) -> None:  # type: ignore[no-untyped-def]
    """The guest holds a TCP connection to a server in the first host's Dom0 and sends a
    numbered line on it every 0.2 s; its vif is on a bridge of the same name on both hosts.
    After the migration the lines keep coming on the same connection, in order."""
    import socket
    import threading
    with link_local_bridge() as (br, _), second_host(demo_image, br) as h2:
        # The second host gets a bridge named as the first host's, joined to its xenbr0.
        veth = f"pxq{h2.ns[3:]}"
        for cmd in (["ip", "link", "add", br, "type", "bridge"],
                    ["ip", "link", "add", veth + "a", "type", "veth", "peer", "name", veth + "b"],
                    ["ip", "link", "set", veth + "a", "master", br],
                    ["ip", "link", "set", veth + "b", "master", "xenbr0"],
                    ["ip", "link", "set", veth + "a", "up"], ["ip", "link", "set", veth + "b", "up"],
                    ["ip", "link", "set", br, "up"]):
            h2.sh(*cmd, check=True)
        server = socket.create_server((h2.local_addr, 0))
        server.settimeout(120)
        port = server.getsockname()[1]
        got: list[int] = []

        def serve() -> None:
            conn, _ = server.accept()
            with conn, conn.makefile("r") as f:
                for line in f:
                    if line.startswith("c "):
                        got.append(int(line.split()[1]))

        reader = threading.Thread(target=serve, daemon=True)
        reader.start()
        script = (COUNTER + f" ip link set eth0 up; ip addr add {h2.local_addr.rsplit('.', 1)[0]}.31/24 dev eth0; "
                  "(i=0; while :; do echo \"c $i\"; i=$((i+1)); sleep 0.2; done) | "
                  f"nc {h2.local_addr} {port} >/dev/null &")
        host.create("tc", memory=128, script=script,
                    extra_lines=f"vif = ['mac=00:16:3e:00:78:31,bridge={br}']\n")
        host.wait_console("tc")
        wait_for(lambda: len(got) > 5, f"no TCP lines from the guest:\n{host.console_text('tc')[-1500:]}")
        before = len(got)
        hop(host, h2, "tc", h2.ssh_command, h2.addr)
        wait_for(lambda: len(got) > before + 15, f"the connection stalled after the migration at {got[-3:]}")
        assert got == list(range(len(got))), got  # one connection, nothing lost or repeated
        assert len(h2.xl("network-list", "tc").stdout.splitlines()) == 2
        h2.xl("destroy", "tc")
        server.close()
