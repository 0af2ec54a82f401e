"""netback with real guests: two guests on a test bridge ping each other and move 10 MiB over
TCP with busybox nc; Dom0 (its end of the bridge in a network namespace this test creates and
removes) pings both. Only link-local addresses (169.254.0.0/16) are used."""

from __future__ import annotations

import os
import re
from typing import Iterator

import pytest

from pyxen.testing.bridge import link_local_bridge, sh

pytestmark = pytest.mark.integration

PREFIX = "169.254.77"


@pytest.fixture
def test_bridge() -> Iterator[tuple[str, str | None]]:
    """A bridge with Dom0's end (a veth) inside a fresh namespace at 169.254.77.100."""
    with link_local_bridge(dom0_ip=f"{PREFIX}.100") as made:
        yield made


def test_two_guests_ping_and_move_10mib(host, test_bridge) -> None:  # type: ignore[no-untyped-def]
    br, ns = test_bridge
    up = "ip link set eth0 up\nip addr add {ip}/16 dev eth0\n"
    server = up.format(ip=f"{PREFIX}.2") + (
        "(sleep 600 | nc -l -p 5001 > /tmp/rx) &\n"
        "sleep 1\necho listening\n"
        "for i in $(seq 240); do [ \"$(wc -c < /tmp/rx)\" -ge 10485760 ] && break; sleep 1; done\n"
        "sha256sum < /tmp/rx > /tmp/rx.sum\n"
        "echo \"rx-sum $(cat /tmp/rx.sum) $(wc -c < /tmp/rx)\"\n"
        f"ping -c 3 -w 60 {PREFIX}.1 >/dev/null; echo \"ping-peer $?\"\n")
    client = up.format(ip=f"{PREFIX}.1") + (
        "dd if=/dev/urandom of=/tmp/tx bs=1M count=10 2>/dev/null\n"
        "echo \"tx-sum $(sha256sum < /tmp/tx)\"\n"
        f"ping -c 3 -w 60 {PREFIX}.2 >/dev/null; echo \"ping-peer $?\"\n"
        f"for i in $(seq 60); do nc {PREFIX}.2 5001 < /tmp/tx && break; sleep 1; done\n"
        "echo \"sent $?\"\n")
    host.create("srv", memory=256, script=server, extra_lines=f"vif = ['mac=00:16:3e:00:77:02,bridge={br}']\n")
    host.wait_console("srv", "listening")
    host.create("cli", memory=256, script=client, extra_lines=f"vif = ['mac=00:16:3e:00:77:01,bridge={br}']\n")
    cli = host.wait_console("cli", timeout=300)
    srv = host.wait_console("srv", timeout=300)
    assert "ping-peer 0" in cli and "ping-peer 0" in srv
    tx = re.search(r"tx-sum ([0-9a-f]{64})", cli)
    rx = re.search(r"rx-sum ([0-9a-f]{64})", srv)
    summary = [ln for ln in (cli + srv).splitlines() if re.match(r"(rx-sum|tx-sum|sent|ping)", ln)]
    assert tx and rx and tx.group(1) == rx.group(1), summary
    for ip in (f"{PREFIX}.1", f"{PREFIX}.2"):
        done = sh("ip", "netns", "exec", ns, "/bin/busybox", "ping", "-c", "2", "-W", "5", ip)
        assert done.returncode == 0, done.stdout + done.stderr
    assert os.path.exists("/sys/class/net/vif{}.0".format(host.xl("domid", "cli").stdout.strip()))
    host.xl("destroy", "cli")
    host.xl("destroy", "srv")
