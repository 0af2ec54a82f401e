"""The pure parts of network hotplug and the vif keys: rate= as libxlu_vif.c reads it, the vif
items as xl's parse_nic_config reads them (warnings at create, errors at attach), the backend
nodes libxl writes, netback's reading of the ``rate`` node and its credit arithmetic."""

from __future__ import annotations

import pytest

from pyxen.backends.net.credit import MIN_BURST, TxCredit
from pyxen.backends.net.xenbus import read_rate
from pyxen.libxlu.vif import Rate, VifSyntaxError, parse_rate
from pyxen.toolstack.devices import (DeviceSpecError, SourcedSpecError, backend_nodes, check_nic_types,
                                     parse_mac, parse_vif)
from pyxen.toolstack.hotplug import atoi, emulated_tap_name


# ---- rate= (libxlu_vif.c) -------------------------------------------------------------------
@pytest.mark.parametrize("text, node", [
    ("10Mb/s@20ms", "25000,20000"),      # xl-network-configuration's example: 1.25 MB/s
    ("1MB/s@20ms", "20000,20000"),
    ("100MB/s", "5000000,50000"),        # default interval 50 ms
    ("10Mb/s", "62500,50000"),
    ("8b/s", "0,50000"),                 # 1 byte/s * 50 ms truncates to 0, as libxlu
    ("1GB/s@1s", "1000000000,1000000"),
    ("1KB/s@2", "2000,2000000"),         # a bare interval is seconds
    ("1KB/s@20m", "20,20000"),           # bare m is ms
    ("1MB/s@500u", "500,500"),
    ("1MB/s@500us", "500,500"),
    ("010MB/s@1s", "8000000,1000000"),   # strtoull(.., 0): a leading 0 is octal
])
def test_rate_as_libxlu(text: str, node: str) -> None:
    assert Rate(*parse_rate(text, "vif")).xenstore == node


@pytest.mark.parametrize("text, message", [
    ("", "no rate specified in `'"),
    ("@20ms", "no rate specified in `@20ms'"),
    ("10MB", "invalid rate in `10MB'"),
    ("10 MB/s", "invalid rate in `10 MB/s'"),
    ("10mb/s", "invalid rate in `10mb/s'"),
    ("0MB/s", "rate overflow in `0MB/s'"),
    ("4294967296B/s", "rate overflow in `4294967296B/s'"),
    ("10MB/s@", "invalid replenishment interval in `'"),
    ("10MB/s@20parsecs", "invalid replenishment interval in `20parsecs'"),
    ("10MB/s@0ms", "replenishment interval overflow in `0ms'"),
    ("10MB/s@5000s", "replenishment interval overflow in `5000s'"),
])
def test_bad_rate_has_libxlus_message(text: str, message: str) -> None:
    with pytest.raises(VifSyntaxError) as err:
        parse_rate(text, "x.cfg")
    assert str(err.value) == f"x.cfg: config parsing error in vif: {message}"


def test_rate_error_in_a_vif_names_the_source_class() -> None:
    with pytest.raises(SourcedSpecError, match="invalid rate in `fast'"):
        parse_vif("bridge=xenbr0,rate=fast", 0)
    with pytest.raises(SourcedSpecError):  # a bad rate stops xl create too, not only attach
        parse_vif("rate=fast", 0, strict=False)


# ---- mac= and the vif items (xl_parse.c parse_nic_config) ----------------------------------
@pytest.mark.parametrize("text, want, ok", [
    ("00:16:3e:0a:0b:0c", [0, 0x16, 0x3E, 10, 11, 12], True),
    ("0:16:3E:A:B:C", [0, 0x16, 0x3E, 10, 11, 12], True),
    ("00-16-3e-0a-0b-0c", [0, 0x16, 0x3E, 10, 11, 12], True),   # any separator
    ("00:16:3e:0a:0b:0cjunk", [0, 0x16, 0x3E, 10, 11, 12], True),  # trailing text ignored
    ("00:16:3e:0a:0b", [0, 0x16, 0x3E, 10, 11, 0], False),
    ("100:16:3e:0a:0b:0c", [0, 0, 0, 0, 0, 0], False),
    ("zz:16:3e:0a:0b:0c", [0, 0, 0, 0, 0, 0], False),
])
def test_mac_as_xl_reads_it(text: str, want: list[int], ok: bool) -> None:
    assert parse_mac(text) == (want, ok)


def test_create_warns_and_builds_attach_stops() -> None:
    nic = parse_vif("mac=zz,colour=blue,type=virtual,bridge=br9", 3)
    assert nic.warnings == ("Invalid parameter `mac'.", "unrecognized argument `colour=blue'",
                            "Invalid parameter `type'.")
    assert nic.bridge == "br9" and nic.devid == 3 and nic.nictype == "vif"
    assert nic.mac.startswith("00:16:3e:") and int(nic.mac.split(":")[3], 16) < 0x80  # random
    for items, message in ((["mac=zz"], "Invalid parameter `mac'."),
                           (["colour=blue"], "unrecognized argument `colour=blue'"),
                           (["bridge"], "unrecognized argument `bridge'"),
                           (["type=virtual"], "Invalid parameter `type'.")):
        with pytest.raises(DeviceSpecError) as err:
            parse_vif(",".join(items), 0, strict=True)
        assert str(err.value) == message


def test_deprecated_and_unsupported_keys() -> None:
    nic = parse_vif("netdev=eth9,accel=x", 0, strict=True)
    assert nic.gatewaydev == "eth9"
    assert nic.warnings == ("the netdev parameter is deprecated, please use gatewaydev instead",
                            "the accel parameter for vifs is currently not supported")
    for key in ("forwarddev=eth1", "colo_compare_out=x"):
        with pytest.raises(DeviceSpecError, match="COLO"):
            parse_vif(key, 0)


def test_network_attach_items_read_as_one_vif() -> None:
    """network-attach's arguments, joined, read as one vif entry in strict mode."""
    nic = parse_vif(",".join(["mac=00:16:3e:00:00:07", "bridge=br1", "vifname=guest0", "mtu=9000",
                              "ip=169.254.1.2", "gatewaydev=eth3", "devid=5"]), 2, strict=True)
    assert (nic.mac, nic.bridge, nic.vifname, nic.mtu, nic.ip, nic.gatewaydev, nic.devid) == \
        ("00:16:3e:00:00:07", "br1", "guest0", 9000, "169.254.1.2", "eth3", 5)


def test_bad_numbers_and_models() -> None:
    for spec in ("mtu=lots", "mtu=20", "mtu=70000", "devid=x"):
        with pytest.raises(DeviceSpecError):
            parse_vif(spec, 0)
    with pytest.raises(DeviceSpecError, match="virtio-net"):
        parse_vif("type=ioemu,model=virtio-net", 0)
    assert parse_vif("type=ioemu,model=e1000", 0).model == "e1000"
    assert parse_vif("type=ioemu", 0).model == "rtl8139"  # libxl's default


def test_emulated_nic_needs_hvm() -> None:
    nics = [parse_vif("type=ioemu", 0)]
    check_nic_types(nics, "hvm")
    for dtype in ("pv", "pvh"):
        with pytest.raises(DeviceSpecError, match="trying to create PV or PVH guest with an emulated interface"):
            check_nic_types(nics, dtype)
    check_nic_types([parse_vif("", 0)], "pv")


# ---- the backend nodes (libxl__set_xenstore_nic) -----------------------------------------
def test_backend_nodes_carry_the_keys() -> None:
    nic = parse_vif("mac=00:16:3e:00:00:01,bridge=br0,rate=10Mb/s@20ms,ip=169.254.0.9,"
                    "gatewaydev=eth1,mtu=1400,vifname=web0", 0)
    nodes = backend_nodes(nic, 4)
    assert nodes["rate"] == "25000,20000"
    assert (nodes["ip"], nodes["gatewaydev"], nodes["mtu"], nodes["vifname"], nodes["type"]) == \
        ("169.254.0.9", "eth1", "1400", "web0", "vif")
    plain = backend_nodes(parse_vif("", 1), 4)
    assert "rate" not in plain and "mtu" not in plain and "gatewaydev" not in plain
    assert backend_nodes(parse_vif("type=ioemu", 2), 4)["type"] == "vif_ioemu"


def test_emulated_tap_name_is_libxls() -> None:
    assert emulated_tap_name(3, parse_vif("type=ioemu", 1)) == "vif3.1-emu"
    assert emulated_tap_name(3, parse_vif("type=ioemu,vifname=web", 1)) == "web-emu"


@pytest.mark.parametrize("text, value", [("7", 7), ("  12x", 12), ("+3", 3), ("eth0", 0), ("", 0)])
def test_detach_devid_is_atoi(text: str, value: int) -> None:
    assert atoi(text) == value


# ---- netback: the rate node and the credit ---------------------------------------------------
@pytest.mark.parametrize("raw, rate", [("20000,50000", (20000, 50000)), ("", None), ("fast", None),
                                       ("5,0", None), ("20000", None)])
def test_netback_reads_the_rate_node(raw: str, rate: tuple[int, int] | None) -> None:
    assert read_rate(raw) == rate
    if rate is not None:
        assert Rate(*rate).xenstore == raw


def test_credit_paces_a_greedy_sender() -> None:
    """A sender that always has a 1514-byte frame ready gets credit_bytes per interval, plus
    at most one burst, however long it runs."""
    credit = TxCredit(20000, 50000, now=0.0)
    now, sent = 0.0, 0
    while now < 10.0:
        resume = credit.delay(1514, now)
        if resume is None:
            sent += 1514
            continue
        assert resume > now  # the queue stops until a later window
        now = resume
        credit.timer_fired(now)
    expected = 20000 * 10.0 / 0.05
    assert expected * 0.9 <= sent <= expected + MIN_BURST


def test_credit_holds_a_frame_bigger_than_what_is_left() -> None:
    credit = TxCredit(1000, 10000, now=0.0)
    assert credit.delay(600, 0.0) is None
    assert credit.delay(600, 0.001) == pytest.approx(0.01)  # stays in the ring until 10 ms
    assert credit.delay(600, 0.005) == pytest.approx(0.01)  # a kick meanwhile changes nothing
    credit.timer_fired(0.01)
    assert credit.delay(600, 0.01) is None


def test_credit_burst_is_at_least_128k() -> None:
    credit = TxCredit(100, 1000, now=0.0)
    for _ in range(5000):
        credit.add_credit()
    assert credit.remaining == MIN_BURST
    big = TxCredit(1 << 20, 1000, now=0.0)
    big.add_credit()
    assert big.remaining == 1 << 20


def test_vif_script_env_is_libxls() -> None:
    """get_hotplug_env's vif part: netdev (gatewaydev or empty), vif, and INTERFACE for an
    emulated NIC; the default script (vif-bridge) is netback's own and has no script=."""
    from pyxen.toolstack.hotplug import vif_script_env
    assert vif_script_env(4, parse_vif("", 1)) == {"netdev": "", "vif": "vif4.1"}
    assert vif_script_env(4, parse_vif("gatewaydev=eth2,vifname=web", 0)) == {"netdev": "eth2", "vif": "web"}
    assert vif_script_env(4, parse_vif("type=ioemu", 0))["INTERFACE"] == "vif4.0-emu"
    assert parse_vif("", 0).script is None
    nodes = backend_nodes(parse_vif("script=vif-route", 0), 1)
    assert nodes["script"] == "/etc/xen/scripts/vif-route"
    assert backend_nodes(parse_vif("script=/opt/vif-mine", 0), 1)["script"] == "/opt/vif-mine"
    assert backend_nodes(parse_vif("", 0), 1)["script"] == "/etc/xen/scripts/vif-bridge"


def test_trusted_flags_vlan_and_backend() -> None:
    from pyxen.toolstack.devices import frontend_nodes
    assert frontend_nodes(parse_vif("untrusted", 0), 1)["trusted"] == "0"
    assert frontend_nodes(parse_vif("trusted", 0), 1)["trusted"] == "1"
    assert frontend_nodes(parse_vif("", 0), 1)["trusted"] == "1"
    assert parse_vif("trusted=1", 0).warnings == ("unrecognized argument `trusted=1'",)  # a flag only
    with pytest.raises(DeviceSpecError, match="vlan= is not supported"):
        parse_vif("vlan=10", 0)
    assert parse_vif("backend=Domain-0", 0).devid == 0
    with pytest.raises(DeviceSpecError, match="backend=netdom: pyxen's backends all run in Domain-0"):
        parse_vif("backend=netdom", 0)


# ---- xl create's handling of the vif items (no host needed: it happens before any call) -------
def _create(tmp_path, monkeypatch, capsys, vif: str, *flags: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    from pyxen.cli import xl
    monkeypatch.setenv("PYXEN_ROOT", str(tmp_path))
    cfg = tmp_path / "g.cfg"
    cfg.write_text(f'name = "g"\nmemory = 64\nkernel = "/nonexistent"\nvif = [ \'{vif}\' ]\n')
    rc = xl.main(["create", *flags, str(cfg)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_create_stops_at_a_bad_rate(tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    rc, _, err = _create(tmp_path, monkeypatch, capsys, "bridge=xenbr0,rate=fast", "-n")
    assert rc == 1
    assert err.splitlines()[-1] == f"{tmp_path}/g.cfg: config parsing error in vif: invalid rate in `fast'"


def test_create_warns_on_an_unknown_vif_key(tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    rc, out, err = _create(tmp_path, monkeypatch, capsys, "colour=blue,mac=00:16:3e:zz", "-n")
    assert rc == 0 and out.lstrip().startswith("{")  # the dry run goes on to print the config
    assert "unrecognized argument `colour=blue'" in err.splitlines()
    assert "Invalid parameter `mac'." in err.splitlines()


def test_a_rate_change_applies_at_once() -> None:
    """xen_net_rate_changed: new bytes and interval, a full interval's credit; None: no limit."""
    import os
    from pyxen.backends.net.handler import NetHandler
    r, w = os.pipe()
    try:
        h = NetHandler(w, (20000, 50000))
        h.credit = TxCredit(20000, 50000, now=0.0)
        h.credit.remaining = 7
        h.set_rate((20000, 50000))  # the same again: nothing moves
        assert h.credit.remaining == 7
        h.set_rate((5000, 10000))
        assert (h.credit.credit_bytes, h.credit.credit_usec, h.credit.remaining) == (5000, 10000, 5000)
        h.set_rate(None)
        assert h.credit is None and h.rate is None
    finally:
        os.close(r)
        os.close(w)
