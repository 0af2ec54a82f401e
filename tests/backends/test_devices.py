"""xl disk and vif specs (xl-disk-configuration, xl-network-configuration) and vdev -> devid
(docs/misc/vbd-interface.txt)."""

from __future__ import annotations

import pytest

from pyxen.toolstack.devices import DeviceSpecError, parse_all, parse_disk, parse_vif, vdev_to_devid


@pytest.mark.parametrize("vdev,devid", [
    ("xvda", 51712), ("xvda1", 51713), ("xvdb", 51728), ("xvdc", 51744), ("xvdp", 51952),
    ("xvdq", 268439552), ("hda", 768), ("hdb", 832), ("hdc", 5632), ("hdd", 5696),
    ("sda", 2048), ("sdb", 2064), ("d0", 51712), ("d1p2", 51730), ("xvdaa", (1 << 28) | (26 << 8)),
    ("51712", 51712), ("0x10", 16), ("hde", -1), ("xvda01", -1), ("foo", -1),
])
def test_vdev_to_devid(vdev: str, devid: int) -> None:
    assert vdev_to_devid(vdev) == devid


@pytest.mark.parametrize("spec", [
    "/dev/vg/guest-volume,,hda", "/dev/vg/guest-volume,raw,hda,rw",
    "format=raw, vdev=hda, access=rw, target=/dev/vg/guest-volume", "raw:/dev/vg/guest-volume,hda,w",
    "phy:/dev/vg/guest-volume,hda,w",
])
def test_same_disk_many_spellings(spec: str) -> None:
    d = parse_disk(spec)
    assert (d.target, d.vdev, d.devid, d.format, d.readonly, d.backendtype) == \
        ("/dev/vg/guest-volume", "hda", 768, "raw", False, "phy")


def test_legacy_and_keys() -> None:
    d = parse_disk("file:/img/a.raw,xvda,w")
    assert (d.target, d.vdev, d.mode, d.kind) == ("/img/a.raw", "xvda", "w", "vbd")
    r = parse_disk("phy:/dev/sdz,xvdb,r")
    assert r.readonly and r.mode == "r"
    t = parse_disk("vdev=xvdc, access=ro, target=/path/with,comma:colon")
    assert t.target == "/path/with,comma:colon" and t.readonly
    q = parse_disk("/img/a.qcow2,qcow2,xvdd,w")
    assert q.backendtype == "qdisk" and q.kind == "qdisk" and not q.served_by_pyxen
    assert parse_disk("backendtype=qdisk, vdev=xvde, target=/img/x").backendtype == "qdisk"
    assert parse_disk("sdb,raw,xvda").target == "/dev/sdb"


@pytest.mark.parametrize("spec,msg", [
    ("/img/a", "no vdev specified"), (",,xvda", "no target specified"),
    ("bogus=1, vdev=xvda, target=/x", "unknown parameter: near `bogus=1,'"),
    ("/x,raw,xvdzzzzzzzz", "Invalid virtual disk"),
    ("/x,vmdk,xvda", "unknown value for format: near `vmdk'"),
    ("/x,raw,xvda,rx", "unknown value for access: near `rx'"),
    ("backendtype=phy, format=qcow2, vdev=xvda, target=/x", "needs format raw"),
])
def test_bad_disks(spec: str, msg: str) -> None:
    with pytest.raises(DeviceSpecError, match=msg):
        parse_disk(spec)


def test_duplicate_vdev() -> None:
    with pytest.raises(DeviceSpecError, match="used twice"):
        parse_all(["/a,raw,xvda", "/b,raw,51712"], [])


def test_vif() -> None:
    n = parse_vif("mac=00:16:3E:01:02:03,bridge=br1", 0)
    assert (n.mac, n.bridge, n.devid) == ("00:16:3e:01:02:03", "br1", 0)
    d = parse_vif("", 3)
    assert d.bridge == "xenbr0" and d.devid == 3 and d.mac.startswith("00:16:3e:")
    assert int(d.mac.split(":")[3], 16) < 0x80
    # xl reports these and builds the vif anyway (libxlu/vif.py; config.py shows the lines)
    assert parse_vif("colour=blue", 0).bridge == "xenbr0"
    assert parse_vif("mac=00:16:3e", 0).mac == "00:16:3e:00:00:00"
    with pytest.raises(DeviceSpecError, match="config parsing error in vif: invalid rate in `fast'"):
        parse_vif("rate=fast", 0)
    assert parse_vif("rate=10Mb/s@20ms", 0).rate.xenstore == "25000,20000"
    # xl create reports these and builds the domain (warnings); network-attach stops (strict).
    with pytest.raises(DeviceSpecError, match="unrecognized argument `colour=blue'"):
        parse_vif("colour=blue", 0, strict=True)
    with pytest.raises(DeviceSpecError, match="Invalid parameter `mac'."):
        parse_vif("mac=00:16:3e", 0, strict=True)
    assert parse_vif("colour=blue", 0).warnings == ("unrecognized argument `colour=blue'",)
