"""backendd's faults with real daemons and guests: a mistyped bridge fails ``xl create`` with Xen's
message and leaves nothing; a guest's network comes back by itself after backendd is killed with
-9 (its TAP is persistent and the restarted daemon attaches to it again); destroy removes the
TAP, also when the domain is destroyed while backendd is down. Only link-local addresses
(169.254.0.0/16) are used. Run under ``flock /tmp/pyxen-net.lock``: TAP names are host-global."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from pyxen.testing.bridge import link_local_bridge, sh
from pyxen.testing.host import Host, qemu_pids_under
from pyxen.xenstore.client import XenstoreClient

pytestmark = pytest.mark.integration

PREFIX = "169.254.81"


def _wait(pred: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}: not met within {timeout:.0f} s")


def _links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def _tap_gone(host: Host, tap: str) -> bool:
    return not Path(f"/sys/class/net/{tap}").exists() and not list(host.paths.backends_dir.glob("tap-*"))


def _kill_backendd(host: Host) -> None:
    pid = int(host.paths.pidfile("backendd").read_text())
    os.kill(pid, signal.SIGKILL)
    def gone() -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except (OSError, IndexError):
            return True
    _wait(gone, 10, "backendd gone")


@pytest.fixture
def test_bridge() -> Iterator[tuple[str, str | None]]:
    """A bridge with Dom0's end (a veth) inside a fresh namespace at 169.254.81.100."""
    with link_local_bridge(dom0_ip=f"{PREFIX}.100", tag=f"f{os.getpid() % 10000}") as made:
        yield made


def test_mistyped_bridge_fails_create_and_leaves_nothing(host: Host) -> None:
    bridge = "xenbrX"
    assert not Path(f"/sys/class/net/{bridge}").exists(), f"{bridge} exists on this host already"
    before = _links()
    cfg = host.write_cfg("typo", extra_lines=f"vif = ['bridge={bridge}']\n")
    done = host.xl("create", str(cfg), check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    # xl's "Parsing config from ..." line, then the one error line.
    lines = [ln for ln in done.stderr.strip().splitlines() if not ln.startswith("Parsing config from")]
    assert len(lines) == 1 and f"Could not find bridge device {bridge}" in lines[0], done.stderr
    assert not Path(f"/sys/class/net/{bridge}").exists()
    assert _links() - before == set()
    assert list(host.domains()) == ["Domain-0"]
    assert qemu_pids_under(host.paths.root) == []
    with XenstoreClient(host.paths.xenstored_socket) as xs:
        for kind in ("vif", "vbd"):
            assert xs.get(f"/local/domain/0/backend/{kind}") is None or \
                xs.directory(f"/local/domain/0/backend/{kind}") == []


def test_network_survives_backendd_kill9_and_destroy_removes_tap(
        host: Host, test_bridge: tuple[str, str | None]) -> None:
    br, ns = test_bridge
    assert ns is not None
    ip = f"{PREFIX}.2"
    script = f"ip link set eth0 up\nip addr add {ip}/16 dev eth0\necho net-up\n"
    domid = host.create("pinged", memory=128, script=script,
                        extra_lines=f"vif = ['mac=00:16:3e:00:81:02,bridge={br}']\n")
    host.wait_console("pinged")
    tap = f"vif{domid}.0"
    ifindex = Path(f"/sys/class/net/{tap}/ifindex").read_text()

    def pings() -> bool:
        return sh("ip", "netns", "exec", ns, "/bin/busybox", "ping", "-c", "1", "-W", "2", ip).returncode == 0

    _wait(pings, 60, "ping before the kill")
    _kill_backendd(host)
    assert Path(f"/sys/class/net/{tap}/ifindex").read_text() == ifindex  # persistent: still there
    host.run("pyxen", "host", "start", check=True)  # starts only what is down: backendd
    _wait(pings, 90, "ping after backendd came back")
    assert Path(f"/sys/class/net/{tap}/ifindex").read_text() == ifindex  # the same TAP, attached again
    assert Path(f"/sys/class/net/{tap}/master").resolve().name == br
    log = host.paths.daemon_log("backendd").read_text()
    assert "taking over Dom0's port" in log and "cannot bind event channel" not in log, log
    host.xl("destroy", "pinged")
    _wait(lambda: _tap_gone(host, tap), 15, f"{tap} and its marker removed by destroy")


def test_destroy_while_backendd_down_removes_tap_at_restart(
        host: Host, test_bridge: tuple[str, str | None]) -> None:
    br, _ns = test_bridge
    domid = host.create("orphan", memory=96, extra_lines=f"vif = ['mac=00:16:3e:00:81:03,bridge={br}']\n")
    tap = f"vif{domid}.0"
    assert Path(f"/sys/class/net/{tap}").exists()
    with host.supervisor_held():  # backendd stays down until the block ends
        _kill_backendd(host)
        host.xl("destroy", "orphan")
        assert Path(f"/sys/class/net/{tap}").exists()  # nobody has removed it yet
    _wait(lambda: _tap_gone(host, tap), 15, f"{tap} and its marker removed by the restarted backendd")


def test_host_stop_leaves_no_tap(host: Host, test_bridge: tuple[str, str | None]) -> None:
    """``pyxen host stop`` destroys the guests and then stops backendd at once: the vifs removed
    just before the stop still lose their (persistent) TAPs."""
    br, _ns = test_bridge
    domid = host.create("stopped", memory=96, extra_lines=f"vif = ['mac=00:16:3e:00:81:04,bridge={br}']\n")
    tap = f"vif{domid}.0"
    assert Path(f"/sys/class/net/{tap}").exists()
    host.run("pyxen", "host", "stop", check=True)
    assert not Path(f"/sys/class/net/{tap}").exists()
    assert not list(host.paths.backends_dir.glob("tap-*"))
