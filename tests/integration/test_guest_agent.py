"""The guest agent and xenbr0's DHCP service on a real host: a demo guest with a vif on xenbr0
gets an address from the host's dnsmasq, its agent reports it in xenstore
(attr/vif/0/ipv4/0) with its OS (data/os_name...), Dom0 pings it, and xapi's derivation
(pyxen.xapi.guest_metrics) turns the guest's nodes into the VM_guest_metrics keys clients wait
for. The DHCP service is a Dom0 daemon like the others: kill -9 and the supervisor brings it
back with a fresh dnsmasq, which acknowledges the guest's next renewal from the kept lease file.
A second host on the same machine stands by and takes over when the first stops serving.

xenbr0 and its Dom0 address are host-global: run under ``flock /tmp/pyxen-net.lock``."""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
import time
from typing import Any, Callable, TypeVar

import pytest

from pyxen.host.dhcp import DNSMASQ, query, read_leases
from pyxen.host.services import by_name, connects, running_pid, stop_service
from pyxen.images.demo import DemoImage
from pyxen.testing.host import Host, started_host
from pyxen.xapi.guest_metrics import derive, guest_agent_nodes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

MAC = "00:16:3e:00:81:01"
#: The lease the test asks for (dnsmasq's shortest): the guest renews after half of it.
LEASE = 120
T = TypeVar("T")


def wait_for(get: Callable[[], T | None], timeout: float, what: str | Callable[[], str],
             step: float = 0.5) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = get()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"{what if isinstance(what, str) else what()}: not within {timeout:.0f} s")


def serving(host: Host) -> dict[str, Any]:
    """The host's DHCP service once it serves xenbr0 (another pyxen host on this machine that
    serves it would keep this one standing by: the test needs its own)."""
    def get() -> dict[str, Any] | None:
        st = query(host.paths)
        return st if st and st["state"] == "serving" else None
    try:
        return wait_for(get, 30, "the DHCP service serving")
    except AssertionError:
        raise AssertionError(f"the DHCP service does not serve xenbr0: {query(host.paths)}") from None


def lease_of(host: Host, mac: str) -> dict[str, str] | None:
    return next((le for le in read_leases(host.paths.dhcp_leases("xenbr0")) if le["mac"] == mac), None)


def ping(ip: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/busybox", "ping", "-c", "2", "-W", "5", ip], capture_output=True, text=True,
                          timeout=60)


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"


def test_dhcp_address_reported_pinged_and_renewed_across_a_kill(host: Host, demo_image: DemoImage) -> None:
    svc = by_name("dhcp")
    first = serving(host)
    assert first["address"] == "10.80.0.1/24" and first["range"] == "10.80.0.2-10.80.0.254"
    assert "10.80.0.1/24" in subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", "xenbr0"],
                                            capture_output=True, text=True).stdout
    # A short lease, read at the service's next start (the supervisor restarts it).
    cfg = host.paths.host_cfg
    cfg.write_text(re.sub(r"(?m)^xenbr0_dhcp_lease = .*$", f"xenbr0_dhcp_lease = {LEASE}", cfg.read_text()))
    stop_service(host.paths, svc)
    wait_for(lambda: (st := query(host.paths)) and st["state"] == "serving" and st["lease"] == LEASE, 30,
             "the service back with the new lease")

    domid = host.create("ga", memory=128, cmdline_extra="pyxen.name=ga",
                        extra_lines=f"vif = ['mac={MAC},bridge=xenbr0']\n")
    t0 = time.monotonic()
    ip = wait_for(lambda: host.xs_subtree(domid).get("attr/vif/0/ipv4/0"), 180,
                  lambda: f"attr/vif/0/ipv4/0 of the guest (console: {host.console_text('ga')[-1500:]})")
    took = time.monotonic() - t0
    assert ipaddress.IPv4Address(ip) in ipaddress.IPv4Network("10.80.0.0/24"), ip
    lease = lease_of(host, MAC)
    assert lease is not None and lease["ip"] == ip and lease["hostname"] == "ga", lease
    assert f"dhcp bound eth0 {ip}/24" in host.console_text("ga")
    done = ping(ip)
    assert done.returncode == 0, done.stdout + done.stderr

    nodes = wait_for(lambda: (t := host.xs_subtree(domid)).get("data/updated") and t, 30, "data/updated")
    gm = derive(guest_agent_nodes(nodes))
    assert gm.os_version == {"name": "pyxen demo guest 1.0 (BusyBox v1.35.0)", "uname": demo_image.kernel_release,
                             "distro": "pyxen-demo", "major": "1", "minor": "0"}
    assert gm.networks["0/ip"] == gm.networks["0/ipv4/0"] == ip
    assert gm.networks["0/ipv6/0"].startswith("fe80::"), gm.networks
    assert gm.PV_drivers_version == {"major": "1", "minor": "0", "micro": "0", "build": "0"}
    assert gm.other["feature-poweroff"] == "1" and gm.other["feature-reboot"] == "1"
    print(f"address in xenstore {took:.1f} s after xl create")

    # kill -9: the supervisor starts the service again, with a new dnsmasq; the old one died
    # with its parent.
    old_pid, old_dnsmasq = running_pid(host.paths, svc), serving(host)["dnsmasq"]
    assert old_pid is not None and old_dnsmasq
    expiry = int(lease["expiry"])
    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: (p := running_pid(host.paths, svc)) not in (None, old_pid) and connects(svc.socket(host.paths)),
             10, "the DHCP service back")
    back = serving(host)
    assert back["dnsmasq"] != old_dnsmasq
    wait_for(lambda: pid_gone(old_dnsmasq), 5, "the old dnsmasq gone")
    assert sum(1 for p in os.listdir("/proc") if p.isdigit() and _is_dnsmasq_of(int(p), host)) == 1
    # The guest renews at half the lease; the new dnsmasq acknowledges it from the lease file.
    renewed = wait_for(lambda: (le := lease_of(host, MAC)) and int(le["expiry"]) > expiry and le, LEASE,
                       "a renewal of the guest's lease")
    assert renewed["ip"] == ip
    assert host.xs_subtree(domid).get("attr/vif/0/ipv4/0") == ip
    wait_for(lambda: f"dhcp renew eth0 {ip}/24" in host.console_text("ga"), 10, "the guest's renew line")
    done = ping(ip)
    assert done.returncode == 0, done.stdout + done.stderr
    host.xl("destroy", "ga")


def _is_dnsmasq_of(pid: int, host: Host) -> bool:
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        return False
    return cmd.startswith(DNSMASQ.encode()) and str(host.paths.root).encode() in cmd


def test_a_second_host_stands_by_and_takes_over(host: Host, demo_image: DemoImage) -> None:
    first = serving(host)
    with started_host(demo_image) as other:
        st = wait_for(lambda: query(other.paths), 10, "the second host's DHCP service")
        assert st["state"] == "standby" and st["dnsmasq"] is None
        assert str(host.paths.root) in st["served_by"], st
        with host.supervisor_held():
            assert stop_service(host.paths, by_name("dhcp"))
            assert pid_gone(first["dnsmasq"])
            took = serving(other)
            assert "10.80.0.1/24" in subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", "xenbr0"],
                                                    capture_output=True, text=True).stdout
            assert took["served_by"] == ""
        # `pyxen host start` (leaving supervisor_held) brings the first host's service back:
        # standing by now.
        st = wait_for(lambda: (s := query(host.paths)) and s["state"] == "standby" and s, 10, "standby")
        assert str(other.paths.root) in st["served_by"]
    serving(host)  # the second host stopped: the first serves again


def test_the_agent_reports_again_after_save_and_restore(host: Host, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """xl restore builds the domain's xenstore area anew (a new domid) and plugs the guest's
    xenstore port anew: the agent opens the new port, notices its data/updated is gone and
    writes everything again, the address the guest still holds too, and watches again (a
    sysrq letter written after the restore reaches the guest's kernel)."""
    serving(host)
    domid = host.create("gr", memory=128, extra_lines="vif = ['mac=00:16:3e:00:81:02,bridge=xenbr0']\n")
    ip = wait_for(lambda: host.xs_subtree(domid).get("attr/vif/0/ipv4/0"), 180,
                  lambda: f"the guest's address (console: {host.console_text('gr')[-1500:]})")
    host.xl("save", "gr", str(tmp_path / "gr.save"))
    host.xl("restore", str(tmp_path / "gr.save"))
    new = int(host.xl("domid", "gr").stdout)
    assert new != domid
    nodes = wait_for(lambda: (t := host.xs_subtree(new)).get("attr/vif/0/ipv4/0") and t.get("data/os_name") and t,
                     60, lambda: f"the restored guest's reports: {host.xs_subtree(new)}")
    gm = derive(guest_agent_nodes(nodes))
    assert gm.networks["0/ip"] == ip and gm.os_version["distro"] == "pyxen-demo"
    done = ping(ip)
    assert done.returncode == 0, done.stdout + done.stderr
    before = host.console_text("gr").count("sysrq: HELP")
    host.xl("sysrq", "gr", "h")
    wait_for(lambda: host.console_text("gr").count("sysrq: HELP") > before, 60,
             lambda: f"the restored guest's sysrq help (console: {host.console_text('gr')[-1500:]})")
    assert host.xs_read(f"/local/domain/{new}/control/sysrq") == ""  # acknowledged
    host.xl("destroy", "gr")
