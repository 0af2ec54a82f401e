"""Network devices on running guests, and the vif rate limit, with real guests (run under
``flock /tmp/pyxen-net.lock``: TAP names are host-global).

- network-attach gives a running guest a NIC on a test bridge: the guest sees it appear, brings
  it up and pings Dom0's end of the bridge (a veth in a namespace this test creates); xl
  network-list shows it; network-detach takes it away again: gone in the guest (the ACPI eject)
  and on the host (the TAP), its nodes gone from xenstore. The error classes: a bad rate, a
  vif key xl does not know, detach of an unknown devid or MAC, attach to a missing domain;
  each leaves the guest's NICs as they were.
- rate=: the guest sends the same amount through an unrated and a rated vif, each to a listener
  in its own namespace; the rated transfer is far slower than the unrated one in the same run
  and does not beat the configured rate (plus netback's 128 KiB burst).

Only link-local addresses (169.254.0.0/16) are used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from pyxen.testing.bridge import link_local_bridge
from pyxen.xenstore.client import XenstoreClient
from pyxen.xenstore.errors import NoEntry

pytestmark = pytest.mark.integration

MAC = "00:16:3e:00:79:02"


def _xs_dir(host, path: str) -> list[str]:  # type: ignore[no-untyped-def]
    with XenstoreClient(host.paths.xenstored_socket) as xs:
        try:
            return list(xs.directory(path))
        except NoEntry:
            return []


def _xs_read(host, path: str) -> str | None:  # type: ignore[no-untyped-def]
    with XenstoreClient(host.paths.xenstored_socket) as xs:
        raw = xs.get(path)
    return raw.decode() if raw is not None else None


def _stored_vifs(host, name: str) -> list[str]:  # type: ignore[no-untyped-def]
    """The vif entries of the domain's stored config (what a reboot, save or migration builds)."""
    from pyxen.toolstack import userdata
    cfg = userdata.retrieve(host.paths, int(host.xl("domid", name).stdout))
    assert cfg is not None
    return list(cfg.vifs)


def test_attach_ping_detach(host) -> None:  # type: ignore[no-untyped-def]
    with link_local_bridge(dom0_ip="169.254.79.100", tag="79") as (br, ns):
        script = (
            "echo waiting-nic\n"
            "for i in $(seq 600); do [ -e /sys/class/net/eth0 ] && break; sleep 0.5; done\n"
            "ip link set eth0 up\nip addr add 169.254.79.2/16 dev eth0\n"
            "echo \"nic-up $(cat /sys/class/net/eth0/address)\"\n"
            "ping -c 3 -w 90 169.254.79.100 >/dev/null; echo \"ping-ns $?\"\n"
            "for i in $(seq 600); do [ -e /sys/class/net/eth0 ] || break; sleep 0.5; done\n"
            "[ -e /sys/class/net/eth0 ] && echo nic-still-there || echo nic-gone\n")
        domid = host.create("hot", memory=192, script=script)
        host.wait_console("hot", "waiting-nic")
        tap = f"vif{domid}.0"

        # Error classes first: each leaves no NIC behind.
        bad = host.xl("network-attach", "hot", f"bridge={br}", "rate=10Mb/s@20parsecs", check=False)
        assert bad.returncode == 1
        assert bad.stderr.strip() == ("command line: config parsing error in vif: invalid replenishment "
                                      "interval in `20parsecs'")
        bad = host.xl("network-attach", "hot", f"bridge={br}", "colour=blue", check=False)
        assert (bad.returncode, bad.stderr.strip()) == (1, "unrecognized argument `colour=blue'")
        bad = host.xl("network-attach", "hot", "bridge=pxnosuchbr", check=False)
        assert bad.returncode == 1 and "Could not find bridge device pxnosuchbr" in bad.stderr
        assert bad.stderr.rstrip().endswith("libxl_device_nic_add failed.")
        bad = host.xl("network-attach", "nosuchdomain", f"bridge={br}", check=False)
        assert (bad.returncode, bad.stderr.strip()) == (1, "nosuchdomain is an invalid domain identifier (rc=-6)")
        bad = host.xl("network-attach", "999", f"bridge={br}", check=False)
        assert bad.returncode == 1 and bad.stderr.rstrip().endswith("libxl_device_nic_add failed.")
        assert host.xl("network-list", "hot").stdout.count("\n") == 1  # the header only
        assert not os.path.exists(f"/sys/class/net/{tap}")
        assert _xs_dir(host, f"/local/domain/{domid}/device/vif") == []

        host.xl("network-attach", "hot", f"bridge={br}", f"mac={MAC}", "rate=100MB/s")
        text = host.wait_console("hot", "ping-ns ", timeout=300)
        assert f"nic-up {MAC}" in text
        assert "ping-ns 0" in text, text[-1500:]
        rows = host.xl("network-list", "hot").stdout.splitlines()
        assert len(rows) == 2 and rows[1].startswith("0   0  " + MAC), rows
        assert os.path.exists(f"/sys/class/net/{tap}/brport")  # on the bridge
        assert _xs_read(host, f"/local/domain/0/backend/vif/{domid}/0/rate") == "5000000,50000"
        # The domain's stored config has the NIC (a reboot, save or migration rebuilds it).
        assert _stored_vifs(host, "hot") == [f"bridge={br},mac={MAC},rate=100MB/s,devid=0,mac={MAC}"]
        assert [n["mac"] for n in json.loads(host.xl("list", "-l", "hot").stdout)[0]["config"]["nics"]] == [MAC]

        for unknown in ("7", "00:16:3e:00:79:99"):
            bad = host.xl("network-detach", "hot", unknown, check=False)
            assert (bad.returncode, bad.stderr.strip()) == (1, f"Unknown device {unknown}.")
        assert os.path.exists(f"/sys/class/net/{tap}")

        host.xl("network-detach", "hot", MAC.upper())
        text = host.wait_console("hot", "nic-gone", timeout=120)
        assert not os.path.exists(f"/sys/class/net/{tap}")
        assert host.xl("network-list", "hot").stdout.count("\n") == 1
        assert _xs_dir(host, f"/local/domain/{domid}/device/vif") == []
        assert _xs_dir(host, f"/local/domain/0/backend/vif/{domid}") == []
        assert _stored_vifs(host, "hot") == []
        host.xl("destroy", "hot")


#: A listener for one namespace: reads exactly ``n`` bytes from one connection, prints the
#: seconds from the first byte to the last.
RECEIVER = r"""
import socket, sys, time
n = int(sys.argv[2]); s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5001)); s.listen(1); s.settimeout(600)
c, _ = s.accept(); c.settimeout(600); got = 0; t0 = None
while got < n:
    b = c.recv(1 << 16)
    if not b: break
    if t0 is None: t0 = time.monotonic()
    got += len(b)
print(got, time.monotonic() - (t0 or time.monotonic()), flush=True)
"""

SIZE = 2 * 1024 * 1024
#: Well under what the unrated vif moves on a slow day (~750 kB/s under TCG on a loaded host),
#: so that the rate, not the path, is what slows the rated one.
RATE = "200KB/s"
RATE_BPS = 200_000


def test_rate_limits_transmit(host) -> None:  # type: ignore[no-untyped-def]
    with link_local_bridge(dom0_ip="169.254.80.100", tag="80") as (br_a, ns_a), \
            link_local_bridge(dom0_ip="169.254.81.100", tag="81") as (br_b, ns_b):
        receivers = [subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", RECEIVER, ip, str(SIZE)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for ns, ip in ((ns_a, "169.254.80.100"), (ns_b, "169.254.81.100"))]
        try:
            time.sleep(1)
            send = ("dd if=/dev/zero bs=64k count={n} 2>/dev/null | nc {ip} 5001; echo \"sent-{tag} $?\"\n")
            script = (
                "ip link set eth0 up\nip addr add 169.254.80.2/24 dev eth0\n"
                "ip link set eth1 up\nip addr add 169.254.81.2/24 dev eth1\n"
                "echo \"eth0-mtu $(cat /sys/class/net/eth0/mtu)\"\n"
                "ping -c 2 -w 60 169.254.80.100 >/dev/null; ping -c 2 -w 60 169.254.81.100 >/dev/null\n"
                + send.format(n=SIZE // 65536, ip="169.254.80.100", tag="unrated")
                + send.format(n=SIZE // 65536, ip="169.254.81.100", tag="rated"))
            vifs = f"vif = ['bridge={br_a},vifname=pxvif80a,mtu=1400', 'bridge={br_b},rate={RATE}']\n"
            host.create("rated", memory=192, script=script, extra_lines=vifs)
            results = []
            for r in receivers:
                out, err = r.communicate(timeout=400)
                results.append(out.split())
            got_a, secs_a = int(results[0][0]), float(results[0][1])
            got_b, secs_b = int(results[1][0]), float(results[1][1])
        finally:
            for r in receivers:
                if r.poll() is None:
                    r.kill()
        assert got_a == SIZE and got_b == SIZE, (results, host.console_text("rated")[-1500:])
        # vifname= names the TAP; mtu= is its MTU and the guest driver's (virtio-net's MTU).
        with open("/sys/class/net/pxvif80a/mtu") as f:
            assert f.read().strip() == "1400"
        assert "eth0-mtu 1400" in host.console_text("rated")
        unrated_bps, rated_bps = SIZE / secs_a, SIZE / secs_b
        summary = f"unrated {unrated_bps / 1e3:.0f} kB/s, rated {rated_bps / 1e3:.0f} kB/s"
        assert rated_bps < 0.5 * unrated_bps, summary
        # Never faster than the rate plus one burst (128 KiB, tx_add_credit's floor).
        assert secs_b >= (SIZE - 131072) / RATE_BPS, summary
        print(summary)
        domid = int(host.xl("domid", "rated").stdout)
        # 200 KB/s: 10000 bytes per 50 ms
        assert _xs_read(host, f"/local/domain/0/backend/vif/{domid}/1/rate") == "10000,50000"
        host.xl("destroy", "rated")


def test_ioemu_gives_an_hvm_guest_an_emulated_nic(host) -> None:  # type: ignore[no-untyped-def]
    """type=ioemu,model=e1000: QEMU's e1000 (PCI 8086:100e) on a TAP ``vif<domid>.<devid>-emu``
    on the vif's bridge, which goes with the domain. A PV guest is refused with libxl's words."""
    with link_local_bridge(tag="82") as (br, _):
        script = ("for d in /sys/bus/pci/devices/*; do\n"
                  "  [ \"$(cat $d/vendor):$(cat $d/device)\" = 0x8086:0x100e ] && echo \"e1000-at ${d##*/}\"\n"
                  "done\necho pci-scanned\n")
        vif = f"vif = ['type=ioemu,model=e1000,bridge={br},mac=00:16:3e:00:82:01,colour=blue']\n"
        cfg = host.write_cfg("emu", memory=128, script=script, extra_lines='type = "hvm"\n' + vif)
        made = host.xl("create", str(cfg))
        # An unknown vif key: xl says so and builds the domain all the same (xl_parse.c).
        assert "unrecognized argument `colour=blue'" in made.stderr
        domid = int(host.xl("domid", "emu").stdout)
        text = host.wait_console("emu", "pci-scanned")
        assert "e1000-at " in text, text[-1500:]
        tap = f"vif{domid}.0-emu"
        assert os.path.exists(f"/sys/class/net/{tap}/brport")
        assert os.path.realpath(f"/sys/class/net/{tap}/master").endswith("/" + br)
        rows = host.xl("network-list", "emu").stdout.splitlines()
        assert len(rows) == 2 and "00:16:3e:00:82:01" in rows[1]
        # Detach: the guest ejects the e1000, QEMU closes the TAP, the kernel removes it.
        host.xl("network-detach", "emu", "0")
        assert not os.path.exists(f"/sys/class/net/{tap}")
        assert host.xl("network-list", "emu").stdout.count("\n") == 1
        # Attach it again on the running guest, then the domain's end takes the TAP with it.
        host.xl("network-attach", "emu", "type=ioemu", "model=rtl8139", f"bridge={br}")
        assert os.path.exists(f"/sys/class/net/{tap}/brport")
        host.xl("destroy", "emu")
        deadline = time.monotonic() + 20
        while os.path.exists(f"/sys/class/net/{tap}") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not os.path.exists(f"/sys/class/net/{tap}")

        cfg = host.write_cfg("pvemu", extra_lines=f"vif = ['type=ioemu,bridge={br}']\n")
        bad = host.xl("create", str(cfg), check=False)
        assert bad.returncode == 1
        assert "trying to create PV or PVH guest with an emulated interface" in bad.stderr
        assert "pvemu" not in host.domains()


def test_hot_added_nic_survives_save_restore(host, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The stored config follows network-attach: xl save then xl restore rebuild the domain
    with the hot-added NIC (same devid and MAC), and Dom0's namespace still reaches the guest."""
    with link_local_bridge(dom0_ip="169.254.83.100", tag="83") as (br, ns):
        script = ("echo waiting-nic\n"
                  "for i in $(seq 600); do [ -e /sys/class/net/eth0 ] && break; sleep 0.5; done\n"
                  "ip link set eth0 up\nip addr add 169.254.83.2/16 dev eth0\necho nic-up\n")
        host.create("keep", memory=192, script=script)
        host.wait_console("keep", "waiting-nic")
        host.xl("network-attach", "keep", f"bridge={br}", "mac=00:16:3e:00:83:02")
        host.wait_console("keep", "nic-up", timeout=120)

        def ping() -> subprocess.CompletedProcess[str]:
            return subprocess.run(["ip", "netns", "exec", ns, "/bin/busybox", "ping", "-c", "2", "-W", "10",
                                   "169.254.83.2"], capture_output=True, text=True, timeout=60)
        assert ping().returncode == 0
        saved = tmp_path / "keep.save"
        host.xl("save", "keep", str(saved))
        host.xl("restore", str(saved))
        domid = int(host.xl("domid", "keep").stdout)
        rows = host.xl("network-list", "keep").stdout.splitlines()
        assert len(rows) == 2 and rows[1].startswith("0   0  00:16:3e:00:83:02"), rows
        assert os.path.exists(f"/sys/class/net/vif{domid}.0/brport")
        done = ping()
        assert done.returncode == 0, done.stdout + done.stderr
        host.xl("destroy", "keep")
