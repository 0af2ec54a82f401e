"""Two pyxen hosts on one machine (pyxen.testing.twohosts): the second in its own network
namespace with its own PYXEN_ROOT and xenbr0, joined to the first host's test bridge by a veth
pair, reached over real ssh. A guest on each host (both domid 1, both with a TAP vif1.0) pings
the other across the link; afterwards nothing of the second host is left. Only link-local
addresses (169.254.0.0/16) are used. Run under flock /tmp/pyxen-net.lock (vifs)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pyxen.testing.bridge import link_local_bridge, sh
from pyxen.testing.twohosts import DEFAULT_SUBNET, second_host

pytestmark = pytest.mark.integration

NET = DEFAULT_SUBNET  # Dom0s at .1 (first host) and .2 (second host); guests at .11 and .12


def guest_script(me: str, peer: str, other_dom0: str) -> str:
    """Bring eth0 up at ``me``, wait until ``peer`` answers (the other guest boots meanwhile),
    then report a clean ping to the peer and to the other host's Dom0."""
    return (f"ip link set eth0 up\nip addr add {NET}.{me}/24 dev eth0\n"
            f"for i in $(seq 200); do ping -c 1 -w 2 {NET}.{peer} >/dev/null 2>&1 && break; sleep 1; done\n"
            f"ping -c 3 -w 30 {NET}.{peer} >/dev/null; echo \"ping-peer $?\"\n"
            f"ping -c 2 -w 30 {NET}.{other_dom0} >/dev/null; echo \"ping-dom0 $?\"\n")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def names(xl_list: str) -> list[str]:
    return [line.split()[0] for line in xl_list.splitlines()[1:] if line.strip()]


def test_two_hosts_ssh_and_guests_ping_across_the_link(host, demo_image) -> None:  # type: ignore[no-untyped-def]
    with link_local_bridge() as (br, _), second_host(demo_image, br) as h2:
        ns, veth, work = h2.ns, h2.veth, h2.workdir
        # The first host reaches the second one's xl over real ssh; it sees only its own Dom0.
        host.create("twa", script=guest_script("11", "12", "2"),
                    extra_lines=f"vif = ['mac=00:16:3e:00:78:11,bridge={br}']\n")
        remote = h2.ssh("xl", "list")
        assert remote.returncode == 0, remote.stderr
        assert names(remote.stdout) == ["Domain-0"], remote.stdout
        assert names(host.xl("list").stdout) == ["Domain-0", "twa"]
        assert h2.ssh("xl", "info", "host", check=True).stdout.strip() == ns
        # The pipe xl migrate will use carries bytes unchanged.
        blob = os.urandom(1 << 20)
        echoed = subprocess.run(h2.ssh_argv("cat"), input=blob, capture_output=True, timeout=60)
        assert echoed.returncode == 0 and echoed.stdout == blob, echoed.stderr

        # A guest on the second host, on its xenbr0 (the default bridge).
        h2.create("twb", script=guest_script("12", "11", "1"),
                  extra_lines="vif = ['mac=00:16:3e:00:78:12']\n")
        assert names(h2.ssh("xl", "list", check=True).stdout) == ["Domain-0", "twb"]
        a = host.wait_console("twa", timeout=300)
        b = h2.wait_console("twb", timeout=300)
        assert "ping-peer 0" in a and "ping-peer 0" in b, (a[-1500:], b[-1500:])
        assert "ping-dom0 0" in a and "ping-dom0 0" in b, (a[-1500:], b[-1500:])

        # Same domid, same TAP name, each in its own host's namespace on its own bridge.
        ida, idb = host.xl("domid", "twa").stdout.strip(), h2.xl("domid", "twb").stdout.strip()
        assert ida == idb
        tap = f"vif{ida}.0"
        assert os.path.realpath(f"/sys/class/net/{tap}/master").endswith("/" + br)
        inside = h2.sh("readlink", "-f", f"/sys/class/net/{tap}/master", check=True).stdout
        assert inside.strip().endswith("/xenbr0")

        pids = [int(p) for p in sh("ip", "netns", "pids", ns).stdout.split()]
        assert pids  # sshd, the daemons, twb's QEMU
        host.xl("destroy", "twa")

    assert ns not in sh("ip", "netns", "list").stdout.split()
    assert not os.path.exists(f"/sys/class/net/{veth}")
    assert not [p for p in pids if alive(p)]
    assert not work.exists()
    assert f"{NET}.1/" not in sh("ip", "-o", "addr", "show").stdout


def test_second_host_cleans_up_after_a_failure(demo_image) -> None:  # type: ignore[no-untyped-def]
    """An exception inside the block (with a guest and its TAP up on the second host, and an
    ssh session open) still removes the namespace, the veth, sshd, the daemons and QEMU."""
    with link_local_bridge() as (br, _):
        with pytest.raises(RuntimeError, match="test failure"):
            with second_host(demo_image, br) as h2:
                ns, veth, work = h2.ns, h2.veth, h2.workdir
                h2.create("gone", extra_lines="vif = ['mac=00:16:3e:00:78:21']\n")
                h2.wait_console("gone")
                assert h2.sh("test", "-e", "/sys/class/net/vif1.0").returncode == 0
                session = subprocess.Popen(h2.ssh_argv("sleep", "600"))
                pids = [int(p) for p in sh("ip", "netns", "pids", ns).stdout.split()]
                assert len(pids) >= 4  # sshd and its session, the daemons, QEMU
                raise RuntimeError("test failure")
        session.wait(timeout=30)
        assert ns not in sh("ip", "netns", "list").stdout.split()
        assert not os.path.exists(f"/sys/class/net/{veth}")
        assert not [p for p in pids if alive(p)]
        assert not work.exists()
        assert f"{NET}.1/" not in sh("ip", "-o", "addr", "show", "dev", br).stdout
