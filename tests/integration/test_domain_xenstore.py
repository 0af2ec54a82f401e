"""Issue 4's toolstack part: a domain's xenstore records follow its life, seen by Xen's own tools."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from pyxen.xenstore.client import XenstoreClient

from ..conftest import Host

pytestmark = pytest.mark.integration


def xs_tool(host: Host, *argv: str) -> subprocess.CompletedProcess[str]:
    """Debian's xenstore-utils pointed at this host's xenstored."""
    env = dict(os.environ, XENSTORED_PATH=str(host.paths.xenstored_socket))
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)


def events_until(xs: XenstoreClient, wanted: str, timeout: float = 120) -> list[str]:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ev = xs.wait_event(timeout=1)
        if ev is not None:
            seen.append(ev[0])
            if ev[0] == wanted:
                return seen
    raise AssertionError(f"no {wanted} event; saw {seen}")


def test_layout_written_on_create_removed_on_destroy(host: Host) -> None:
    with XenstoreClient(host.paths.xenstored_socket) as xs:
        xs.watch("@introduceDomain", "intro")
        xs.watch("@releaseDomain", "release")
        assert xs.wait_event(5) is not None and xs.wait_event(5) is not None  # the initial firings
        domid = host.create("laid", memory=96, vcpus=2)
        events_until(xs, "@introduceDomain", timeout=10)

        dp = f"/local/domain/{domid}"
        assert xs_tool(host, "xenstore-read", f"{dp}/name").stdout.strip() == "laid"
        assert xs_tool(host, "xenstore-read", f"{dp}/domid").stdout.strip() == str(domid)
        assert xs_tool(host, "xenstore-read", f"{dp}/memory/target").stdout.strip() == str(96 * 1024)
        assert xs_tool(host, "xenstore-read", f"{dp}/cpu/1/availability").stdout.strip() == "online"
        vm = xs_tool(host, "xenstore-read", f"{dp}/vm").stdout.strip()
        assert xs_tool(host, "xenstore-read", f"{vm}/name").stdout.strip() == "laid"
        assert xs.get_perms(dp) == ["n0", f"r{domid}"]
        assert xs.get_perms(f"{dp}/control/shutdown") == [f"n{domid}"]
        assert xs.is_domain_introduced(domid)

        host.xl("destroy", "laid")
        events_until(xs, "@releaseDomain", timeout=10)
        assert xs_tool(host, "xenstore-exists", dp).returncode != 0
        assert xs_tool(host, "xenstore-exists", vm).returncode != 0
        assert not xs.is_domain_introduced(domid)


def test_guest_poweroff_clears_records(host: Host) -> None:
    """on_poweroff=destroy done by the monitor also clears xenstore and fires @releaseDomain."""
    with XenstoreClient(host.paths.xenstored_socket) as xs:
        xs.watch("@releaseDomain", "release")
        xs.wait_event(5)
        domid = host.create("gone", memory=96, script="poweroff -f")
        events_until(xs, "@releaseDomain", timeout=150)
        deadline = time.monotonic() + 10
        while xs.exists(f"/local/domain/{domid}") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not xs.exists(f"/local/domain/{domid}")
        assert "gone" not in host.domains()


# A guest-side xenstore client in busybox sh: find the port by name, send raw xs_wire.h
# frames (type, req_id, tx_id, len; little-endian) and print each reply's payload.
GUEST_XS = r"""
for d in /sys/class/virtio-ports/*; do
  [ "$(cat $d/name)" = org.xenproject.xenstore ] && port=/dev/$(basename $d)
done
echo "xs-port: $port"
exec 3<>$port
# READ "name" (relative: /local/domain/<me>/name)
printf '\002\000\000\000\001\000\000\000\000\000\000\000\005\000\000\000name\000' >&3
echo "xs-read: $(head -c 20 <&3 | tail -c 4)"
# WRITE /local/domain/0/x = "1": Dom0's node, the guest may not write it
printf '\013\000\000\000\002\000\000\000\000\000\000\000\023\000\000\000/local/domain/0/x\000' >&3
printf 1 >&3
echo "xs-write: $(head -c 23 <&3 | tail -c 7 | tr -d '\000')"
"""


def test_guest_reaches_xenstore_as_itself(host: Host) -> None:
    """The device model hands the guest xenstored's socket for its domain: it reads its own
    records through it and is refused Dom0's, by the daemon's permission checks."""
    host.create("self", memory=96, script=GUEST_XS, cmdline_extra="pyxen.xsagent=0")
    text = host.wait_console("self")
    assert "xs-port: /dev/vport" in text, text[-1500:]
    assert "xs-read: self" in text, text[-1500:]
    assert "xs-write: EACCES" in text, text[-1500:]
    with XenstoreClient(host.paths.xenstored_socket) as xs:
        assert not xs.exists("/local/domain/0/x")


def test_xl_reboot_and_shutdown_through_control_node(host: Host) -> None:
    """xl reboot / shutdown write ~/control/shutdown; the guest's control agent acknowledges
    (writes "" back) and acts; on_reboot=restart brings it back, on_poweroff=destroy ends it."""
    domid = host.create("ctl", memory=96)
    host.wait_console("ctl")
    with XenstoreClient(host.paths.xenstored_socket) as xs:
        deadline = time.monotonic() + 30
        while xs.get(f"/local/domain/{domid}/control/feature-poweroff") != b"1":
            assert time.monotonic() < deadline, "the guest never advertised feature-poweroff"
            time.sleep(0.2)
        done = host.xl("reboot", "ctl")
        assert f"Rebooting domain {domid}" in done.stderr
        host.wait_console("ctl", "pyxen: reboot requested")
        deadline = time.monotonic() + 120
        while host.console_text("ctl").count("pyxen demo guest up") < 2:
            assert time.monotonic() < deadline, host.console_text("ctl")[-1500:]
            time.sleep(0.3)
        # Xen's restart: the monitor destroyed the old domain and built a new one.
        domid = int(host.domains()["ctl"]["id"])
        assert xs.read(f"/local/domain/{domid}/control/shutdown") == b""
        assert not xs.exists(f"/local/domain/{done.stderr.split('Rebooting domain ')[1].split()[0]}")

    done = host.xl("shutdown", "-w", "ctl", timeout=300)
    assert f"Shutting down domain {domid}" in done.stderr and "Waiting for 1 domains" in done.stderr
    assert "pyxen: shutdown requested" in host.console_text("ctl")
    assert "ctl" not in host.domains()


def test_xl_shutdown_needs_a_domain(host: Host) -> None:
    done = host.xl("shutdown", check=False)
    assert done.returncode == 1 and "You must specify -a or a domain id." in done.stderr
