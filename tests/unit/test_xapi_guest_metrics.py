"""VM_guest_metrics from a guest agent's xenstore nodes, against xapi's xapi_guest_agent.ml and
xenopsd's reading of the nodes (which paths, how deep): the keys install.py and Ansible wait
for ("name", "0/ip"), both network layouts, xapi's quirks (the first IPv4 address doubles as
"<devid>/ip", a non-integer index drops the vif, "micro" defaults to -1), and the rules that
decide when a record is written."""

from __future__ import annotations

import pytest

from pyxen.xapi.guest_metrics import (NO, UNSPECIFIED, YES, GuestMetrics, _ocaml_int, agent_data_changed, derive,
                                      guest_agent_nodes, pv_drivers_detected, watch_paths)

#: What the demo guest's agent (images/init.sh) writes, plus the nodes the toolstack made.
DEMO = {
    "control": "", "control/shutdown": "", "control/sysrq": "", "control/feature-suspend": "",
    "control/feature-poweroff": "1", "control/feature-reboot": "1",
    "data": "", "data/os_name": "pyxen demo guest 1.0", "data/os_uname": "6.1.0-57-cloud-amd64",
    "data/os_distro": "pyxen", "data/os_majorver": "1", "data/os_minorver": "0",
    "data/meminfo_total": "118000", "data/meminfo_free": "90000", "data/updated": "Tue Dec  1 02:00:00 2026",
    "attr": "", "attr/PVAddons/Installed": "1", "attr/PVAddons/MajorVersion": "1",
    "attr/PVAddons/MinorVersion": "0", "attr/PVAddons/MicroVersion": "0", "attr/PVAddons/BuildVersion": "0",
    "attr/vif/0/ipv4/0": "10.80.0.12", "attr/vif/0/ipv6/0": "fe80::216:3eff:fe00:1",
    "device/vif/0/mac": "00:16:3e:00:00:01", "name": "demo",
}


def test_the_demo_agents_nodes_give_the_keys_clients_wait_for() -> None:
    gm = derive(guest_agent_nodes(DEMO))
    assert gm.os_version == {"name": "pyxen demo guest 1.0", "uname": "6.1.0-57-cloud-amd64",
                             "distro": "pyxen", "major": "1", "minor": "0"}
    assert gm.networks == {"0/ip": "10.80.0.12", "0/ipv4/0": "10.80.0.12", "0/ipv6/0": "fe80::216:3eff:fe00:1"}
    assert gm.PV_drivers_version == {"major": "1", "minor": "0", "micro": "0", "build": "0"}
    # Every child of control, empty ones too: xapi copies them all into "other".
    assert gm.other == {"shutdown": "", "sysrq": "", "feature-suspend": "", "feature-poweroff": "1",
                        "feature-reboot": "1"}
    assert gm.memory == {"free": "90000", "total": "118000"}
    assert (gm.can_use_hotplug_vbd, gm.can_use_hotplug_vif) == (UNSPECIFIED, UNSPECIFIED)


def test_the_record_holds_the_datamodels_fields() -> None:
    rec = derive(DEMO).record(last_updated="20261201T02:00:00Z", pv_drivers_detected=True)
    assert set(rec) == {"os_version", "PV_drivers_version", "PV_drivers_up_to_date", "memory", "disks",
                        "networks", "other", "last_updated", "other_config", "live", "can_use_hotplug_vbd",
                        "can_use_hotplug_vif", "PV_drivers_detected"}
    assert rec["memory"] == {} and rec["disks"] == {}  # (xapi never fills them)
    assert rec["live"] is True and rec["PV_drivers_up_to_date"] is True and rec["networks"]["0/ip"] == "10.80.0.12"


def test_indices_sort_as_numbers_and_the_first_ipv4_is_also_ip() -> None:
    gm = derive({"attr/vif/1/ipv4/10": "10.0.0.10", "attr/vif/1/ipv4/2": "10.0.0.2",
                 "attr/vif/1/ipv4/0x1": "10.0.0.1", "attr/vif/0/ipv6/1": "fe80::1", "attr/vif/0/ipv6/0": "fe80::0"})
    assert gm.networks == {"1/ip": "10.0.0.1", "1/ipv4/0x1": "10.0.0.1", "1/ipv4/2": "10.0.0.2",
                           "1/ipv4/10": "10.0.0.10", "0/ipv6/0": "fe80::0", "0/ipv6/1": "fe80::1"}
    assert "0/ip" not in gm.networks  # an IPv6-only vif has no "ip"


def test_a_non_integer_index_drops_the_vifs_addresses() -> None:
    bad = derive({"attr/vif/0/ipv4/0": "10.0.0.1", "attr/vif/0/ipv4/x": "10.0.0.2",
                  "attr/vif/1/ipv4/0": "10.0.1.1"})
    assert bad.networks == {"1/ip": "10.0.1.1", "1/ipv4/0": "10.0.1.1"}
    # ... but a lone one is never compared, so it stays (as in xapi).
    assert derive({"attr/vif/0/ipv4/x": "10.0.0.2"}).networks == {"0/ip": "10.0.0.2", "0/ipv4/x": "10.0.0.2"}


def test_the_older_layout_is_read_only_without_attr_vif() -> None:
    old = {"attr/eth0/ip": "192.168.1.5", "attr/eth0/ipv6/0/addr": "fe80::5", "attr/ens3/ip": "10.1.1.1",
           "attr/lo/ip": "127.0.0.1", "attr/PVAddons/MajorVersion": "7"}
    assert derive(old).networks == {"0/ip": "192.168.1.5", "0/ipv4/0": "192.168.1.5", "0/ipv6/0": "fe80::5",
                                    "3/ip": "10.1.1.1", "3/ipv4/0": "10.1.1.1"}
    assert derive({**old, "attr/vif/0/ipv4/0": "10.80.0.9"}).networks == {"0/ip": "10.80.0.9", "0/ipv4/0": "10.80.0.9"}


def test_sriov_vfs_are_networks_too() -> None:
    gm = derive({"xenserver/attr/net-sriov-vf/2/ipv4/0": "10.9.9.9"})
    assert gm.networks == {"2/ip": "10.9.9.9", "2/ipv4/0": "10.9.9.9"}


def test_pv_drivers_version_micro_and_windows_drivers() -> None:
    assert derive({"attr/PVAddons/MajorVersion": "8", "attr/PVAddons/MinorVersion": "2"}).PV_drivers_version == \
        {"micro": "-1", "major": "8", "minor": "2"}
    assert derive({}).PV_drivers_version == {}
    win = derive({"drivers/0": "XenServer XENBUS 9.1.9.105 ", "drivers/1": "XenServer XENNET 9.1.7.65 signed",
                  "drivers/x": "ignored IGNORED 1 ", "attr/PVAddons/MicroVersion": "1"})
    assert win.PV_drivers_version == {"micro": "1", "xenbus": "XenServer 9.1.9.105 ",
                                      "xennet": "XenServer 9.1.7.65 signed"}


def test_other_data_ts_and_cant_suspend_reason() -> None:
    gm = derive({"control/feature-suspend": "1", "data/cant_suspend_reason": "busy", "control/feature-reboot": "1",
                 "data/ts": "1"})
    assert gm.other == {"data-cant-suspend-reason": "busy", "feature-reboot": "1", "data-ts": "1"}


@pytest.mark.parametrize("value, tri", [("1", YES), ("0", NO), ("yes", UNSPECIFIED), (None, UNSPECIFIED)])
def test_hotplug_tristates(value: str | None, tri: str) -> None:
    nodes = {} if value is None else {"feature/hotplug/vbd": value, "feature/hotplug/vif": value}
    gm = derive(nodes)
    assert (gm.can_use_hotplug_vbd, gm.can_use_hotplug_vif) == (tri, tri)


def test_netbios_name_services_device_id() -> None:
    gm = derive({"data/host_name_dns": "web1", "data/domain": "example.org", "data/device_id": "0002",
                 "data/service/sshd/state": "running", "data/pvs_target/target_software_version": "1.2"})
    assert gm.netbios_name == {"host_name": "web1.example.org"}
    assert gm.services == {"sshd/state": "running", "pvs_target/target_software_version": "1.2"}
    assert gm.device_id == {"device_id": "0002"}
    assert derive({"data/host_name_dns": "web1"}).netbios_name == {"host_name": "web1"}


def test_xenopsd_reads_each_directory_to_its_depth() -> None:
    tree = {"data/os_name": "x", "data/volumes/0/name": "/dev/xvda1", "data/service/sshd/state": "up",
            "data/service/a/b/c": "too deep", "attr/vif/0/ipv4/0": "10.0.0.1", "attr/vif/0/ipv4/0/deeper": "no",
            "attr/os/hotfixes/0": "KB1", "attr/os/spmajor": "1", "control/feature-reboot": "1",
            "control/x/y": "no", "feature/hotplug/vif": "1", "device/vif/0/mac": "m", "memory/target": "1",
            "drivers/0": "a b c ", "drivers/0/sub": "no", "xenserver/attr/net-sriov-vf/0/ipv4/1": "10.2.2.2"}
    assert guest_agent_nodes(tree) == {
        "data/os_name": "x", "data/service/sshd/state": "up", "attr/vif/0/ipv4/0": "10.0.0.1",
        "attr/os/spmajor": "1", "control/feature-reboot": "1", "feature/hotplug/vif": "1", "drivers/0": "a b c ",
        "xenserver/attr/net-sriov-vf/0/ipv4/1": "10.2.2.2"}


def test_watch_paths_are_xenopsds() -> None:
    assert watch_paths(7) == ["/local/domain/7/attr", "/local/domain/7/data/ts", "/local/domain/7/data/service",
                              "/local/domain/7/data/pvs_target", "/local/domain/7/control",
                              "/local/domain/7/feature", "/local/domain/7/xenserver/attr"]


def test_only_real_changes_count() -> None:
    a = derive(DEMO)
    assert not a.differs(derive({**DEMO, "data/meminfo_free": "1"}))  # memory goes to RRDs only
    assert a.differs(derive({**DEMO, "attr/vif/0/ipv4/0": "10.80.0.13"}))
    assert a.differs(GuestMetrics(**{**a.__dict__, "can_use_hotplug_vif": YES}))
    assert not agent_data_changed(DEMO, {**DEMO, "data/updated": "later", "data/meminfo_free": "2"})
    assert agent_data_changed(DEMO, {**DEMO, "data/os_name": "other"})


def test_pv_drivers_detected_follows_connected_backends() -> None:
    assert pv_drivers_detected(False, "4", ["4"]) is True
    assert pv_drivers_detected(False, "2", ["2"]) is False
    assert pv_drivers_detected(True, "5", ["5", "4"]) is True    # another device still connected
    assert pv_drivers_detected(True, "6", ["6", "1"]) is False   # the last one left Connected
    assert pv_drivers_detected(True, "4", ["4"]) is True


@pytest.mark.parametrize("text, value", [("0", 0), ("12", 12), ("-3", -3), ("+4", 4), ("0x1f", 31), ("0o17", 15),
                                         ("0b101", 5), ("0u9", 9), ("1_000", 1000), ("010", 10),
                                         ("", None), ("x", None), ("1.5", None), (" 1", None), ("0x", None)])
def test_indices_are_read_as_ocamls_int_of_string(text: str, value: int | None) -> None:
    assert _ocaml_int(text) == value
