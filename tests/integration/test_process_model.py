"""Issue 8, with real daemons and real QEMU: an interrupted ``xl create`` leaves nothing, a
stopped QEMU does not stall ``xl list``, and xl's monitor applies a domain's action exactly once
even when it was dead at the moment the guest stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pyxen.testing.bridge import link_local_bridge
from pyxen.xenstore.client import XenstoreClient

from ..conftest import BIN, Host, qemu_pids_under

pytestmark = pytest.mark.integration


def until(cond, timeout: float = 20.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout} s"
        time.sleep(0.1)


def leftovers(host: Host) -> dict[str, object]:
    with XenstoreClient(host.paths.xenstored_socket) as xs:
        local = [d for d in xs.directory("/local/domain") if d != "0"]
        libxl = xs.directory("/libxl") if xs.exists("/libxl") else []
        backends = (xs.directory("/local/domain/0/backend")
                    if xs.exists("/local/domain/0/backend") else [])
        backends = [k for k in backends if xs.exists(f"/local/domain/0/backend/{k}")
                    and xs.directory(f"/local/domain/0/backend/{k}")]
    taps = sorted(n for n in os.listdir("/sys/class/net") if n.startswith("vif"))
    return {"domains": sorted(host.domains()), "qemu": qemu_pids_under(host.paths.root),
            "local": local, "libxl": libxl, "backends": backends, "taps": taps,
            "userdata": sorted(p.name for p in host.paths.userdata_dir.glob("*"))}


CLEAN = {"domains": ["Domain-0"], "qemu": [], "local": [], "libxl": [], "backends": [], "taps": [],
         "userdata": []}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_interrupted_create_leaves_nothing(host: Host, tmp_path: Path, sig: signal.Signals) -> None:
    """``xl create`` interrupted at several moments of the build (before QEMU, while the devices
    are added, after): no domain, reservation, QEMU, xenstore node, TAP or userdata remains."""
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * (8 << 20))
    free = host.info("free_memory")
    with link_local_bridge() as (bridge, _):
        cfg = host.write_cfg("cut", memory=96, extra_lines=(
            f"disk = [ 'file:{disk},xvda,w' ]\nvif = [ 'bridge={bridge}' ]\n"))
        for delay in (0.2, 0.8, 1.6, 3.0):
            proc = subprocess.Popen([str(BIN / "xl"), "create", str(cfg)], env=host.env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            time.sleep(delay)
            proc.send_signal(sig)
            proc.communicate(timeout=60)
            if proc.returncode == 0:  # it finished before the signal: take it down as a user would
                host.xl("destroy", "cut")
            until(lambda: leftovers(host) == CLEAN, 20, f"a clean host after {sig.name} at {delay} s")
            assert host.info("free_memory") == free


def test_stopped_qemu_does_not_stall_list(host: Host) -> None:
    domid = host.create("frozen", memory=96)
    pid = int((host.paths.domains_dir / f"{domid}.json").read_text().split('"pid": ')[1].split(",")[0])
    os.kill(pid, signal.SIGSTOP)
    try:
        for argv in (("list",), ("info",), ("list", "frozen")):
            t0 = time.monotonic()
            out = host.xl(*argv, timeout=30).stdout
            assert time.monotonic() - t0 < 2.0, argv
            if argv[0] == "list":
                assert "frozen" in out
    finally:
        os.kill(pid, signal.SIGCONT)
    host.xl("destroy", "frozen")


def _pid(host: Host, daemon: str) -> int | None:
    try:
        return int(host.paths.pidfile(daemon).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _monitor_down(host: Host) -> int | None:
    """Kill the monitor; hold the supervisor (if any) so it does not bring it back yet.
    Returns the supervisor's pid, to let it go later."""
    sup = _pid(host, "supervisor")
    if sup is not None:
        os.kill(sup, signal.SIGSTOP)
    mon = _pid(host, "monitor")
    assert mon is not None
    os.kill(mon, signal.SIGKILL)
    until(lambda: not Path(f"/proc/{mon}").exists() or
          Path(f"/proc/{mon}/stat").read_text().split()[2] == "Z", 5, "the monitor's death")
    return sup


def _monitor_up(host: Host, sup: int | None) -> None:
    if sup is not None:
        os.kill(sup, signal.SIGCONT)
    host.run("pyxen", "host", "start", check=True)


@pytest.mark.parametrize("action", ["destroy", "restart"])
def test_monitor_dead_at_shutdown_acts_once_when_back(host: Host, action: str) -> None:
    """The guest powers off (or reboots) while no monitor runs: it stays shut down; the monitor
    that starts later destroys (or restarts) it, once."""
    key = "on_poweroff" if action == "destroy" else "on_reboot"
    script = "poweroff -f" if action == "destroy" else "reboot -f"
    cfg = host.write_cfg("late", memory=96, script=script,
                         extra_lines=f'{key} = "{action}"\n')
    sup = _monitor_down(host)
    try:
        host.xl("create", str(cfg))
        old = host.domains()["late"]["id"]
        until(lambda: host.domains().get("late", {}).get("state", "")[3:4] == "s", 120, "the guest's shutdown")
        time.sleep(1.0)
        assert host.domains()["late"]["id"] == old  # nobody acted
    finally:
        _monitor_up(host, sup)
    if action == "destroy":
        until(lambda: "late" not in host.domains(), 20, "the destroy")
        assert leftovers(host) == CLEAN
    else:
        until(lambda: host.domains().get("late", {}).get("id") not in (None, old), 30, "the restart")
        time.sleep(2.0)
        rows = host.domains()
        assert [n for n in rows if n == "late"] == ["late"] and rows["late"]["id"] != old
        host.xl("destroy", "late")
