"""Every example of xl-disk-configuration(5), xl-network-configuration(5) and the complete
key=value examples of xl.cfg(5) through ``xl create -n`` (issue 10's corpus test).

The examples are in tests/data/xen-pod-examples/ (copied from Xen RELEASE-4.17.7; SOURCE.md
names each one's line in its pod). Each goes into a minimal config, runs through pyxen's
``xl create -n`` in-process (``xl.main``, no daemon), and the JSON's disks[], nics[] or the
key's field is compared with the expectation in EXPECTED. The expectations were written from
Xen's sources, not from pyxen's output; how each was derived:

- disks (libxl_types.idl libxl_device_disk; libxlu_disk.c xlu_disk_parse and the lexer
  libxlu_disk_l.l): readwrite starts at 1 and "ro"/"r" clears it; a format not given (empty
  positional, or none at all) becomes LIBXL_DISK_FORMAT_RAW, written "raw"; "cdrom",
  "devtype=cdrom" and the deprecated ":cdrom" suffix set is_cdrom, and xlu_disk_parse then
  sets removable 1 and readwrite 0 (left out: 0 is an integer's default); the deprecated
  "raw:" prefix is the format. backend stays UNKNOWN (0) and is left out. So every "hda"
  example is one and the same disk, and every "hdc" example the same CD-ROM.
- nics (libxl_device_nic; xl_parse.c parse_config_data's vif loop and parse_nic_config):
  ARRAY_EXTEND_INIT gives each entry its index as devid (0 is written: devid's init_val is
  -1); mac is read with libxl__parse_mac and printed "%02hhx:...", so lower case; model and
  bridge are copied strings. rate= goes through libxlu_vif.c xlu_vif_parse_rate: bytes per
  second (M = 10^6, K = 10^3, a "b" unit divides by 8), interval 50 000 us unless "@" gives
  one, bytes_per_interval = bytes_per_sec * interval_usecs / 10^6 (integer division).
- xl.cfg keys (xl_parse.c parse_config_data): type=/builder= pick c_info.type (builder
  "generic" is pv); cpus= goes through parse_vcpu_affinity: a string is parsed once
  (parse_cpurange: "all" is every host CPU, "^" removes) and copied to each of max_vcpus
  maps; a list gives vCPU i the i-th item's map and sets numa_placement false. The bitmaps
  are written as their set bits (libxl_bitmap_gen_json). The host here has 16 CPUs (pyxen's
  encoder is given that count; libxl would use libxl_get_max_cpus). xen_platform_pci, nographic
  and usb are defbools ("True"/"False"); vga="cirrus" is type.hvm.vga.kind "cirrus";
  usbdevice as a list fills usbdevice_list; device_model_version "qemu-xen" and
  "qemu-xen-traditional" are the enum's QEMU_XEN and QEMU_XEN_TRADITIONAL (xl checks only the
  spelling: whether that device model exists is libxl's question at create, which -n skips).

Where pyxen refuses an example Xen takes, EXPECTED says so ("pyxen refuses") and holds
pyxen's documented message instead; none of the examples taken here is such a case.
The xl.cfg examples pyxen does not take (keys it ignores with a warning, NUMA node lists,
Arm-only keys) are listed in SOURCE.md with the reason.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pyxen.cli import xl

POD_DIR = Path(__file__).resolve().parents[1] / "data" / "xen-pod-examples"
PODS = ("xl-disk-configuration", "xl-network-configuration", "xl.cfg")

#: The minimal guests the examples go into: the brief's PV one (name, kernel, memory), an HVM
#: one for the keys xl reads for HVM guests only, and the PV one with two vCPUs for cpus=.
PV = 'name = "pod"\nkernel = "/k"\nmemory = 64\n'
HVM = 'name = "pod"\ntype = "hvm"\nmemory = 64\n'
PV2 = PV + "vcpus = 2\n"
NO_TYPE = 'name = "pod"\nkernel = "/k"\nmemory = 64\n'  # a type=/builder= line adds its own


@dataclass(frozen=True)
class Example:
    pod: str
    line: int
    kind: str  # disk: a DISKSPEC; vif: a vifspec; line: a key = value line; config: a whole file
    text: str


def read_examples(pod: str) -> list[Example]:
    """The examples file of one pod: a "## <line> <kind>" header, then the example's lines."""
    out: list[Example] = []
    header: tuple[int, str] | None = None
    body: list[str] = []
    for raw in (POD_DIR / f"{pod}.examples").read_text().split("\n") + ["## 0 end"]:
        if raw.startswith("## "):
            if header is not None:
                out.append(Example(pod, header[0], header[1], "\n".join(body).rstrip("\n")))
            _, line, kind = raw.split(" ")
            header, body = (int(line), kind), []
        else:
            body.append(raw)
    return out


EXAMPLES = {(e.pod, e.line): e for pod in PODS for e in read_examples(pod)}

HDA = {"pdev_path": "/dev/vg/guest-volume", "vdev": "hda", "format": "raw", "readwrite": 1}
HDC_CDROM = {"pdev_path": "/root/image.iso", "vdev": "hdc", "format": "raw", "removable": 1,
             "is_cdrom": 1}
ALL16 = list(range(16))

#: (pod, line) -> (base config, the JSON path checked, its expected value).
EXPECTED: dict[tuple[str, int], tuple[str, tuple[str, ...], Any]] = {
    ("xl-disk-configuration", 21): (PV, ("disks",), [HDA]),
    ("xl-disk-configuration", 22): (PV, ("disks",), [HDA]),
    ("xl-disk-configuration", 23): (PV, ("disks",), [HDA]),
    ("xl-disk-configuration", 24): (PV, ("disks",), [HDA]),
    ("xl-disk-configuration", 28): (PV, ("disks",), [HDC_CDROM]),
    ("xl-disk-configuration", 29): (PV, ("disks",), [HDC_CDROM]),
    ("xl-disk-configuration", 30): (PV, ("disks",), [HDC_CDROM]),
    ("xl-disk-configuration", 31): (PV, ("disks",), [HDC_CDROM]),
    ("xl-disk-configuration", 32): (PV, ("disks",), [HDC_CDROM]),
    ("xl-disk-configuration", 36): (PV, ("disks",), [HDA, HDC_CDROM]),
    ("xl-network-configuration", 21): (PV, ("nics",), [
        {"devid": 0, "model": "rtl8139", "mac": "00:16:3e:74:3d:76", "bridge": "xenbr0"}]),
    ("xl-network-configuration", 22): (PV, ("nics",), [{"devid": 0, "mac": "00:16:3e:74:34:32"}]),
    ("xl-network-configuration", 23): (PV, ("nics",), [{"devid": 0}]),
    ("xl-network-configuration", 27): (PV, ("nics",), [
        {"devid": 0, "mac": "00:16:3e:74:34:32"},
        {"devid": 1, "mac": "00:16:3e:5f:48:e4", "bridge": "xenbr1"}]),
    # 10 Mb/s = 1 250 000 B/s; 50 ms of it is 62 500 bytes.
    ("xl-network-configuration", 242): (PV, ("nics",), [
        {"devid": 0, "rate_bytes_per_interval": 62500, "rate_interval_usecs": 50000}]),
    # 250 KB/s = 250 000 B/s; 50 ms of it is 12 500 bytes.
    ("xl-network-configuration", 243): (PV, ("nics",), [
        {"devid": 0, "rate_bytes_per_interval": 12500, "rate_interval_usecs": 50000}]),
    # the page: "20,000 bytes in every 20 millisecond period".
    ("xl-network-configuration", 244): (PV, ("nics",), [
        {"devid": 0, "rate_bytes_per_interval": 20000, "rate_interval_usecs": 20000}]),
    ("xl.cfg", 56): ("", ("c_info",), {"type": "hvm", "name": "h0"}),
    ("xl.cfg", 59): ("", ("c_info",), {"type": "hvm", "name": "h0"}),
    ("xl.cfg", 80): (NO_TYPE, ("c_info", "type"), "pv"),
    ("xl.cfg", 85): (NO_TYPE, ("c_info", "type"), "pvh"),
    ("xl.cfg", 92): (NO_TYPE, ("c_info", "type"), "hvm"),
    ("xl.cfg", 106): (NO_TYPE, ("c_info", "type"), "pv"),
    ("xl.cfg", 111): (NO_TYPE, ("c_info", "type"), "hvm"),
    ("xl.cfg", 148): (PV2, ("b_info", "vcpu_hard_affinity"), [ALL16, ALL16]),
    ("xl.cfg", 152): (PV2, ("b_info", "vcpu_hard_affinity"), [[0, 2, 3, 5]] * 2),
    ("xl.cfg", 155): (PV2, ("b_info", "vcpu_hard_affinity"), [[c for c in ALL16 if c != 7]] * 2),
    ("xl.cfg", 174): (PV2, ("b_info", "vcpu_hard_affinity"), [[2], [3, 4, 6, 7, 8]]),
    ("xl.cfg", 181): (PV2, ("b_info", "vcpu_hard_affinity"), [[0, 1, 2, 3, 4] + list(range(9, 16))] * 2),
    ("xl.cfg", 1817): (HVM, ("b_info", "device_model_version"), "qemu_xen_traditional"),
    ("xl.cfg", 2177): (HVM, ("b_info", "device_model_version"), "qemu_xen"),
    ("xl.cfg", 2205): (HVM, ("b_info", "type.hvm", "xen_platform_pci"), "False"),
    ("xl.cfg", 2355): (HVM, ("b_info", "type.hvm", "vga"), {"kind": "cirrus"}),
    ("xl.cfg", 2529): (HVM, ("b_info", "type.hvm", "nographic"), "True"),
    ("xl.cfg", 2559): (HVM, ("b_info", "type.hvm", "usb"), "True"),
    ("xl.cfg", 2560): (HVM, ("b_info", "type.hvm", "usbdevice_list"), ["tablet"]),
}


def config_text(e: Example, base: str) -> str:
    if e.kind == "disk":
        return base + f"disk = [ '{e.text}' ]\n"
    if e.kind == "vif":
        return base + f"vif = [ '{e.text}' ]\n"
    return base + e.text + "\n"


def create_n(text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
             monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    """``xl create -n`` of ``text`` on a 16-CPU host: exit status, stdout, stderr."""
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    path = tmp_path / "pod.cfg"
    path.write_text(text)
    rc = xl.main(["create", "-q", "-n", str(path)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_every_example_has_an_expectation() -> None:
    """No example is read without being checked, and no expectation lacks its example."""
    assert set(EXAMPLES) == set(EXPECTED)
    assert len([k for k in EXAMPLES if k[0] == "xl-disk-configuration"]) == 10
    assert len([k for k in EXAMPLES if k[0] == "xl-network-configuration"]) == 7
    assert EXAMPLES[("xl-network-configuration", 23)].text == ""  # '' # The empty string


@pytest.mark.parametrize("key", sorted(EXPECTED), ids=lambda k: f"{k[0]}:{k[1]}")
def test_pod_example_through_create_n(key: tuple[str, int], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    base, where, expected = EXPECTED[key]
    rc, out, err = create_n(config_text(EXAMPLES[key], base), tmp_path, capsys, monkeypatch)
    assert rc == 0, err
    got: Any = json.loads(out)
    for part in where:
        got = got[part]
    if where == ("c_info",):  # uuid is generated, run_hotplug_scripts is xl.c's global
        got = {k: v for k, v in got.items() if k in ("type", "name")}
    assert got == expected


def test_the_hda_examples_are_one_config_and_so_are_the_cdrom_ones(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The page says each group is "the same" disk: the whole JSON, not only disks[], agrees
    (uuid aside)."""
    def whole(line: int) -> dict[str, Any]:
        rc, out, _ = create_n(config_text(EXAMPLES[("xl-disk-configuration", line)], PV),
                              tmp_path, capsys, monkeypatch)
        assert rc == 0
        top: dict[str, Any] = json.loads(out)
        del top["c_info"]["uuid"]
        return top
    assert len({json.dumps(whole(n)) for n in (21, 22, 23, 24)}) == 1
    assert len({json.dumps(whole(n)) for n in (28, 29, 30, 31, 32)}) == 1


def test_a_list_of_cpus_turns_numa_placement_off(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """parse_vcpu_affinity: a list sets numa_placement false; a string for hard affinity
    leaves it; list items past max_vcpus are ignored."""
    def b_info(cpus: str, base: str = PV2) -> dict[str, Any]:
        rc, out, err = create_n(base + f"cpus = {cpus}\n", tmp_path, capsys, monkeypatch)
        assert rc == 0, err
        return dict(json.loads(out)["b_info"])
    assert b_info('["2", "3-8,^5"]')["numa_placement"] == "False"
    assert "numa_placement" not in b_info('"0-3,5,^1"')
    assert b_info('["1", "2", "3"]')["vcpu_hard_affinity"] == [[1], [2]]


def test_a_bad_spec_beside_the_examples_is_xens_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The corpus's refusal case: a disk spec Xen's lexer refuses (the page's example with its
    vdev left out) gives libxlu's line and exit 1, and no JSON."""
    rc, out, err = create_n(PV + "disk = [ '/dev/vg/guest-volume,raw' ]\n", tmp_path, capsys,
                            monkeypatch)
    assert (rc, out) == (1, "")
    assert "config parsing error in disk specification: no vdev specified" in err
