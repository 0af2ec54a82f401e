"""pyxen's libxlu against Xen's: the case tables in libxlu_xen_cases.py hold what Xen's own
libxlu code printed and returned for each input (see that module for how they were made).

Xen's format strings being checked (tools/libs/util/libxlu_cfg.c, libxlu_disk.c, libxlu_vif.c):
  "%s:%d: config parsing error near %s%.*s%s%s: %s"
  "%s:%d: warning: parameter `%s' is a list but should be a single value"
  "%s: config parsing error in disk specification: %s%s%s%s in `%s'"
  "%s: config parsing error in vif: %s in `%s'"
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyxen.libxlu import disk as xlu_disk
from pyxen.libxlu import vif as xlu_vif
from pyxen.libxlu.cfg import (PARSE_FAILURE_EXIT, Config, ConfigSyntaxError, parse, quote,
                              strtol)
from pyxen.libxlu.cpumap import CpuRangeError, parse_cpurange
from pyxen.toolstack import devices
from pyxen.toolstack.config import ConfigError, from_settings

from .libxlu_xen_cases import (CFG_CASES, DISK_CASES, GET_LONG_CASES, POD_CDROM_SAME,
                               POD_DISK_CFG, POD_DISK_SAME, POD_EMPTY_CDROM, POD_FORMAT_PREFIXES,
                               POD_IGNORED_PREFIXES, POD_RATES, POD_SCRIPT_PREFIXES,
                               POD_SEVERAL_PREFIXES, POD_VIF_CFG, POD_VIFS, POD_VLANS, RATE_CASES,
                               VIF_CASES)

ERRNO = {None: 0, "EINVAL": 22, "ERANGE": 34, "ESRCH": 3}


# ---- the file grammar ---------------------------------------------------------------------------
@pytest.mark.parametrize("text, report, expected", CFG_CASES)
def test_config_text_reads_as_xen_reads_it(text: str, report: list[str],
                                           expected: dict[str, tuple[object, int, str]] | None) -> None:
    if expected is None:
        with pytest.raises(ConfigSyntaxError) as exc:
            parse(text, "f.cfg")
        assert list(exc.value.messages) == report
        assert "\n" not in str(exc.value) and str(exc.value).isprintable()
        return
    got = parse(text, "f.cfg")
    assert {k: (s.value, s.line, s.op) for k, s in got.items()} == expected


def test_xl_prints_every_line_then_failed_to_parse() -> None:
    with pytest.raises(ConfigSyntaxError) as exc:
        parse("a = 1\nb = \nc = [\nd = 4\n", "f.cfg")
    assert exc.value.xl_report().splitlines() == [
        "f.cfg:1: config parsing error near <newline>: syntax error, unexpected NEWLINE, "
        "expecting STRING or NUMBER or '['",
        "f.cfg:4: config parsing error near `d': syntax error, unexpected IDENT, expecting ']'",
        "Failed to parse config: Invalid argument"]
    assert PARSE_FAILURE_EXIT == 1  # xl_parse.c: exit(1) after "Failed to parse config"


@settings(deadline=None)
@given(st.text(st.characters(exclude_characters="\0"), max_size=40))
def test_any_string_quoted_reads_back(value: str) -> None:
    assert parse(f"s = {quote(value)}\n")["s"].value == value
    assert parse(f"l = [ {quote(value)}, {quote(value)} ]")["l"].value == [value, value]


@settings(deadline=None)
@given(st.text(st.sampled_from(list("ab1=+[],;#'\"\\ \t\r\n.(x")), max_size=60))
def test_any_text_parses_or_gives_report_lines(text: str) -> None:
    try:
        parse(text, "f.cfg")
    except ConfigSyntaxError as err:
        assert err.messages and all(m.startswith(("f.cfg:", "warning: ")) for m in err.messages)


@settings(deadline=None)
@given(st.integers(-(1 << 63), (1 << 63) - 1), st.sampled_from(["%d", "%#x", "%#o"]))
def test_numbers_read_as_strtol_base_0(n: int, fmt: str) -> None:
    text = fmt % n if n >= 0 or fmt == "%d" else "-" + fmt % -n
    text = text.replace("0o", "0")
    assert strtol(text, 0) == (n, len(text), False)


# ---- the typed getters --------------------------------------------------------------------------
@pytest.mark.parametrize("text, warnings, errno, value", GET_LONG_CASES)
def test_get_long_warns_as_libxlu(text: str, warnings: list[str], errno: int, value: int | None) -> None:
    cfg = Config(parse(text, "f.cfg"), "f.cfg")
    e, v = cfg.get_long("memory")
    assert (ERRNO[e], v, cfg.warnings) == (errno, value, warnings)


def test_list_getters_warn_as_libxlu() -> None:
    cfg = Config(parse('disk = "/x,xvda,w"\nvif = [ "a", [ "b" ], "c" ]\n', "f.cfg"), "f.cfg")
    assert cfg.get_list("disk") == ("EINVAL", None)
    assert cfg.warnings == ["f.cfg:1: warning: parameter `disk' is a single value but should be a list"]
    # xl's `while ((buf = xlu_cfg_get_listitem(list, n)) != NULL)` stops at the nested list
    assert cfg.get_string_items("vif") == (None, ["a"])
    assert cfg.get_string("nothing") == ("ESRCH", None)
    assert cfg.get_bounded_long("disk", 0, 1, dont_warn=True) == ("EINVAL", None)


def test_bounds_messages() -> None:
    cfg = Config(parse("a = 5\n", "f.cfg"), "f.cfg")
    assert cfg.get_bounded_long("a", 6, 9) == ("EINVAL", None)
    assert cfg.get_bounded_long("a", 0, 4) == ("EINVAL", None)
    assert cfg.warnings == ["f.cfg:1: warning: value `5' is smaller than minimum bound '6'",
                            "f.cfg:1: warning: value `5' is greater than maximum bound '4'"]


# ---- disk specs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, report, fields", DISK_CASES)
def test_disk_spec_reads_as_xen_reads_it(spec: str, report: list[str], fields: dict[str, object] | None) -> None:
    if fields is None:
        with pytest.raises(xlu_disk.DiskSyntaxError) as exc:
            xlu_disk.parse_disk(spec, "f.cfg")
        assert list(exc.value.messages) == report
        return
    got = xlu_disk.parse_disk(spec, "f.cfg")
    default = xlu_disk.DiskSpec()
    assert {k: v for k, v in got.__dict__.items() if getattr(default, k) != v} == fields


def test_pod_disk_examples_are_each_the_same_disk() -> None:
    disks = {xlu_disk.parse_disk(s) for s in POD_DISK_SAME}
    assert disks == {xlu_disk.DiskSpec(pdev_path="/dev/vg/guest-volume", vdev="hda")}
    cdroms = {xlu_disk.parse_disk(s) for s in POD_CDROM_SAME}
    assert cdroms == {xlu_disk.DiskSpec(pdev_path="/root/image.iso", vdev="hdc", removable=True,
                                        readwrite=False, is_cdrom=True)}
    built = [devices.parse_disk(s) for s in POD_DISK_SAME + POD_CDROM_SAME]
    assert {(d.target, d.vdev, d.readonly, d.devtype, d.backendtype) for d in built} == {
        ("/dev/vg/guest-volume", "hda", False, "disk", "phy"),
        ("/root/image.iso", "hdc", True, "cdrom", "phy")}


def test_pod_deprecated_prefixes() -> None:
    for prefix in POD_FORMAT_PREFIXES:
        assert xlu_disk.parse_disk(f"{prefix}:/i,xvda,w").format == prefix
    for prefix in POD_SCRIPT_PREFIXES:
        d = xlu_disk.parse_disk(f"{prefix}:target-of-{prefix},xvda,w")
        assert (d.script, d.pdev_path) == (f"block-{prefix}", f"target-of-{prefix}")
    for prefix in POD_IGNORED_PREFIXES:
        assert xlu_disk.parse_disk(f"{prefix}:/i,xvda,w") == xlu_disk.DiskSpec(pdev_path="/i", vdev="xvda")
    assert xlu_disk.parse_disk(POD_SEVERAL_PREFIXES + ",xvda").pdev_path == "/some/path"
    assert xlu_disk.parse_disk(POD_EMPTY_CDROM) == xlu_disk.DiskSpec(
        pdev_path="", vdev="hdc", format="empty", removable=True, readwrite=False, is_cdrom=True)


def test_pod_disk_config_line() -> None:
    c = from_settings(parse('name = "d"\nkernel = "/k"\n' + POD_DISK_CFG, "t.cfg"), "t.cfg")
    assert c.disks == ("/dev/vg/guest-volume,,hda", "/root/image.iso,,hdc,cdrom")


def test_disk_target_span_is_where_the_path_is_written() -> None:
    for spec, target in [("a.img,raw,xvda", "a.img"), ("vdev=xvda, target=x,y", "x,y"),
                         ("qcow2:d.q,xvda,w", "d.q"), ("tap:aio:i,xvda", "i")]:
        span = xlu_disk.target_span(spec)
        assert span is not None and spec[span[0]:span[1]] == target
    assert xlu_disk.target_span("foo:/x,xvda") is None


def test_a_bad_disk_stops_xl_create_with_libxlus_line() -> None:
    with pytest.raises(ConfigError) as exc:
        from_settings(parse('name = "d"\nkernel = "/k"\ndisk = [ "/x,xvda" ]\n', "t.cfg"), "t.cfg")
    assert str(exc.value) == ("t.cfg: config parsing error in disk specification: unknown value "
                              "for format: near `xvda' in `/x,xvda'")


# ---- vif specs ----------------------------------------------------------------------------------
@pytest.mark.parametrize("rate, report, expected", RATE_CASES)
def test_vif_rate_as_libxlu(rate: str, report: list[str], expected: tuple[int, int] | None) -> None:
    if expected is None:
        with pytest.raises(xlu_vif.VifSyntaxError) as exc:
            xlu_vif.parse_rate(rate, "f.cfg")
        assert list(exc.value.messages) == report
    else:
        assert xlu_vif.parse_rate(rate, "f.cfg") == expected


def test_pod_rates_mean_what_the_page_says() -> None:
    for rate, bytes_per_second in POD_RATES.items():
        per_interval, usecs = xlu_vif.parse_rate(rate, "f.cfg")
        assert per_interval * 1_000_000 // usecs == bytes_per_second
    assert xlu_vif.parse_rate("1MB/s@20ms", "f.cfg") == (20_000, 20_000)


def test_pod_vlan_examples_pass_through() -> None:
    for vlan in POD_VLANS:
        got = xlu_vif.parse_vif(f"vlan={vlan}", 0)
        assert (got.spec.vlan, got.messages) == (vlan, ())


def test_pod_vif_examples() -> None:
    first, second, empty = (xlu_vif.parse_vif(s, i) for i, s in enumerate(POD_VIFS))
    assert (first.spec.mac, first.spec.model, first.spec.bridge, first.messages) == \
        ("00:16:3e:74:3d:76", "rtl8139", "xenbr0", ())
    assert second.spec.mac == "00:16:3e:74:34:32" and second.spec.devid == 1
    assert empty.spec == xlu_vif.VifSpec(devid=2) and empty.messages == ()
    c = from_settings(parse('name = "d"\nkernel = "/k"\n' + POD_VIF_CFG, "t.cfg"), "t.cfg")
    nics = [devices.parse_vif(v, i) for i, v in enumerate(c.vifs)]
    assert [(n.mac, n.bridge) for n in nics] == [("00:16:3e:74:34:32", "xenbr0"),
                                                 ("00:16:3e:5f:48:e4", "xenbr1")]


@pytest.mark.parametrize("spec, messages, fields", VIF_CASES)
def test_vif_keys_as_parse_nic_config(spec: str, messages: list[str], fields: dict[str, object] | None) -> None:
    if fields is None:  # xl exits 1 after these lines
        with pytest.raises(xlu_vif.VifSyntaxError) as exc:
            xlu_vif.parse_vif(spec, 0, "f.cfg")
        assert list(exc.value.messages) == messages
        return
    got = xlu_vif.parse_vif(spec, 0, "f.cfg")
    assert got.spec == xlu_vif.VifSpec(**{"devid": 0, **fields})  # type: ignore[arg-type]
    assert list(got.messages) == messages


def test_vif_reports_are_warnings_and_the_domain_is_still_built() -> None:
    c = from_settings(parse('name = "d"\nkernel = "/k"\nvif = [ "mac=zz,bridge=br0" ]\n', "t.cfg"), "t.cfg")
    assert "Invalid parameter `mac'." in c.warnings and c.vifs == ("mac=zz,bridge=br0",)
    nic = devices.parse_vif(c.vifs[0], 0)
    assert nic.bridge == "br0" and nic.mac.startswith("00:16:3e:")  # all-zero MAC: libxl picks one
    with pytest.raises(ConfigError, match="^t.cfg: config parsing error in vif: rate overflow in `0Mb/s'$"):
        from_settings(parse('name = "d"\nkernel = "/k"\nvif = [ "rate=0Mb/s" ]\n', "t.cfg"), "t.cfg")


# ---- cpus= (xl_parse.c parse_cpurange / update_cpumap_range / parse_range) ----------------------
@pytest.mark.parametrize("text, cpus", [
    ("all", {0, 1, 2, 3}), ("0-3,^1", {0, 2, 3}), ("all,^0", {1, 2, 3}), (",,1,", {1}),
    (" 2", {2}), ("+1-2", {1, 2}), ("node:0", {0, 1, 2, 3}), ("nodes:0-1,^3", {0, 1, 2}),
    ("node:all", {0, 1, 2, 3}), ("6", {6}), ("", set()),
])
def test_cpurange_as_xl(text: str, cpus: set[int]) -> None:
    assert parse_cpurange(text, 4, lambda node: set(range(4)) if node == 0 else set()) == cpus


@pytest.mark.parametrize("text, message", [
    ("^all", 'Can\'t combine "^" and "all".'), ("^node:all", 'Can\'t combine "^" and "all".'),
    ("node:^1", "Invalid pcpu range: ^1."), ("3-1", "Invalid pcpu range: 3-1."),
    ("1-", "Invalid pcpu range: 1-."), ("-1", "Invalid pcpu range: -1."),
    ("0,x", "Invalid pcpu range: x."), ("1 ", "Invalid pcpu range: 1 ."),
])
def test_cpurange_refusals_as_xl(text: str, message: str) -> None:
    with pytest.raises(CpuRangeError) as exc:
        parse_cpurange(text, 4)
    assert str(exc.value) == message


def test_cpus_key_string_or_per_vcpu_list() -> None:
    def cpus(value: str) -> object:
        return from_settings(parse(f'name = "d"\nkernel = "/k"\ncpus = {value}\n', "t.cfg"), "t.cfg").cpus
    assert cpus('"0-1"') == "0-1"
    assert cpus('[ "0", "1-2", "node:0" ]') == ("0", "1-2", "node:0")
    assert cpus('[ "0", [ "1" ], "2" ]') == ("0",)  # xlu_cfg_get_listitem stops at a list
    with pytest.raises(ConfigError, match=r'^Can\'t combine "\^" and "all".$'):
        cpus('"^all"')
    with pytest.raises(ConfigError, match=r"^Invalid pcpu range: 2-x.$"):
        cpus('[ "0", "2-x" ]')


@settings(deadline=None)
@given(st.lists(st.sampled_from(["/img", "xvda", "hdc", ":cdrom", ",", " ", "w", "raw", "qcow2",
                                "format=", "vdev=", "target=", "phy:", "tap:", "foo:", "foo=",
                                "=", "cdrom", "discard", "colo-port=", "1", "\n", "\t", ":"]),
                max_size=12).map("".join))
def test_any_disk_spec_parses_or_reports(spec: str) -> None:
    try:
        d = xlu_disk.parse_disk(spec, "f.cfg")
    except xlu_disk.DiskSyntaxError as err:
        assert err.messages and all(m.startswith("f.cfg: config parsing error in disk specification: ")
                                    for m in err.messages)
    else:
        assert d.vdev is not None and (d.pdev_path is not None or d.removable)


@settings(deadline=None)
@given(st.text(st.characters(exclude_characters="\0"), max_size=40))
def test_any_vif_spec_parses_or_stops_xl(spec: str) -> None:
    try:
        got = xlu_vif.parse_vif(spec, 0, "f.cfg")
    except xlu_vif.VifSyntaxError as err:
        assert err.messages
    else:
        assert got.spec.mac is None or len(got.spec.mac) == 17
