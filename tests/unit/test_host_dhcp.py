"""xenbr0's DHCP service, its pure parts: host.cfg's xenbr0_* keys (and their one-line
errors), the range handed out, dnsmasq's command line, the lease file, the per-namespace lock."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from pyxen.host.dhcp import dhcp_range, dnsmasq_argv, lock_path, read_leases
from pyxen.hypervisor.hostcfg import DEFAULT_TEXT, BridgeConfig, HostConfig, HostConfigError
from pyxen.paths import Paths


def _load(tmp_path: Path, extra: str) -> BridgeConfig:
    path = tmp_path / "host.cfg"
    path.write_text(DEFAULT_TEXT + extra)
    return HostConfig.load(path).xenbr0


def test_defaults_are_a_private_subnet_and_an_hour(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "")
    assert cfg == BridgeConfig(ipaddress.IPv4Interface("10.80.0.1/24"), 3600)


def test_settings_and_off(tmp_path: Path) -> None:
    cfg = _load(tmp_path, 'xenbr0_address = "192.168.77.254/25"\nxenbr0_dhcp_lease = 120\n')
    assert cfg == BridgeConfig(ipaddress.IPv4Interface("192.168.77.254/25"), 120)
    assert _load(tmp_path, 'xenbr0_address = ""\n').address is None


@pytest.mark.parametrize("extra, message", [
    ('xenbr0_address = "10.80.0.1"\n', "leaves no addresses for guests"),
    ('xenbr0_address = "10.80.0.1/30"\n', "leaves no addresses for guests"),
    ('xenbr0_address = "10.80.0.0/24"\n', "leaves no addresses for guests"),
    ('xenbr0_address = "fd00::1/64"\n', "must be an IPv4 address with its prefix length"),
    ('xenbr0_address = "10.80.0.1/33"\n', "must be an IPv4 address with its prefix length"),
    ("xenbr0_dhcp_lease = 60\n", "at least 120 s (dnsmasq's minimum), not 60"),
    ('xenbr0_dhcp_lease = "1h"\n', "must be a number of seconds, not '1h'"),
    ('xenbr0_dhcp = "on"\n', "unknown setting xenbr0_dhcp (xenbr0's are xenbr0_address, xenbr0_dhcp_lease, "
     "xenbr0_tftp_root, xenbr0_nat, xenbr0_nat_uplink)"),
])
def test_bad_settings_are_one_line_errors(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(HostConfigError) as exc:
        _load(tmp_path, extra)
    assert message in str(exc.value) and "\n" not in str(exc.value) and "host.cfg" in str(exc.value)


@pytest.mark.parametrize("address, first, last", [
    ("10.80.0.1/24", "10.80.0.2", "10.80.0.254"),
    ("10.80.0.254/24", "10.80.0.1", "10.80.0.253"),
    ("10.80.0.100/24", "10.80.0.101", "10.80.0.254"),
    ("10.80.0.200/24", "10.80.0.1", "10.80.0.199"),
    ("172.16.5.9/29", "172.16.5.10", "172.16.5.14"),
])
def test_the_range_is_the_longer_side_of_dom0s_address(address: str, first: str, last: str) -> None:
    assert tuple(map(str, dhcp_range(ipaddress.IPv4Interface(address)))) == (first, last)


def test_dnsmasq_serves_dhcp_only_on_the_bridge(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    argv = dnsmasq_argv(paths, BridgeConfig(ipaddress.IPv4Interface("10.80.0.1/24"), 120))
    assert argv[0] == "dnsmasq" and "--keep-in-foreground" in argv
    assert "--port=0" in argv and "--conf-file=/dev/null" in argv  # no DNS, nothing from /etc
    assert "--interface=xenbr0" in argv and "--bind-interfaces" in argv
    assert "--dhcp-range=10.80.0.2,10.80.0.254,255.255.255.0,120" in argv
    assert f"--dhcp-leasefile={tmp_path}/lib/dhcp/xenbr0.leases" in argv
    assert f"--pid-file={tmp_path}/run/dnsmasq.pid" in argv


def test_read_leases(tmp_path: Path) -> None:
    f = tmp_path / "l"
    f.write_text("1764560000 00:16:3e:00:00:01 10.80.0.12 demo 01:00:16:3e:00:00:01\n"
                 "1764560100 00:16:3e:00:00:02 10.80.0.13 * *\nbroken\n")
    assert read_leases(f) == [
        {"expiry": "1764560000", "mac": "00:16:3e:00:00:01", "ip": "10.80.0.12", "hostname": "demo",
         "client_id": "01:00:16:3e:00:00:01"},
        {"expiry": "1764560100", "mac": "00:16:3e:00:00:02", "ip": "10.80.0.13", "hostname": "*", "client_id": "*"}]
    assert read_leases(tmp_path / "none") == []


def test_one_lock_per_bridge_and_namespace() -> None:
    assert lock_path("xenbr0", 4026531840) == Path("/run/pyxen/dhcp-xenbr0-netns4026531840.lock")
    assert lock_path("xenbr0", 1) != lock_path("xenbr0", 2)
