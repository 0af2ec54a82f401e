"""libxl's domain config JSON (``xl create -n``, ``xl list -l``) and the xl.cfg keys that reach
QEMU, without daemons.

How the expected files in tests/data/xen-examples/*.create-n.json were written: by hand, from
Xen 4.17's sources, not from pyxen's output. Each field is there because xl_parse.c sets it and
gentypes.py's get_default_expr says it differs from its default:
- c_info: type (init_val INVALID), name, uuid (libxl_uuid_generate: not nil; the test puts it
  in), run_hotplug_scripts (xl.c's run_hotplug_scripts = 1 -> defbool "True"). hap, oos,
  pool_name ... stay default and are left out.
- b_info: max_vcpus (= vcpus when maxvcpus is absent), avail_vcpus (bitmap, the set bits as
  integers), max_memkb (= target_memkb when maxmem is absent), target_memkb (memory * 1024);
  sched_params, arch_arm, arch_x86 and the type union are aggregates, always written, here
  empty (yajl writes "{", an empty line, "}"); claim_mode ("True": xl.c's claim_mode = 1);
  kernel and cmdline (parse_cmdline: extra alone is the whole cmdline) for PV and PVH.
  max_grant_* are set to xl.c's -1, which is LIBXL_MAX_GRANT_DEFAULT: left out.
- type.hvm (xlexample.hvm): vga, vnc, sdl, spice, rdm are structs, always written; sdl = 1
  sets sdl.enable (parse_top_level_sdl_options). No kernel: none in the file.
- disks: libxlu_disk.c: pdev_path, vdev, format raw (the enum's string), readwrite 1 ("rw");
  backend stays UNKNOWN (0) and is left out.
- nics: vif = [ '' ] is one nic with nothing set but its devid 0 (ARRAY_EXTEND_INIT; devid's
  init_val is -1, so 0 is written).
- on_poweroff, on_watchdog, on_crash are destroy (the enum's init_val): left out; on_reboot
  "restart"; on_soft_reset "soft_reset" (xl's default "soft-reset", libxl's string form).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyxen.cli import xl
from pyxen.hypervisor.qemu import BuildInfo, argv, serial_args, vnc_arg
from pyxen.paths import Paths
from pyxen.toolstack import libxl_json
from pyxen.toolstack.config import ConfigError, from_settings, load
from pyxen.toolstack.domain import build_request
from pyxen.libxlu.cfg import parse

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "xen-examples"


def cfg_of(text: str):  # type: ignore[no-untyped-def]
    return from_settings(parse(text, "t.cfg"), "t.cfg", cwd="/cwd")


def dry(text: str) -> dict:  # type: ignore[type-arg]
    out = libxl_json.create_dryrun(cfg_of(text), nr_cpus=4)
    return json.loads(out)


# ---- the corpus: Xen's own example configs through xl create -n ----------------------------
@pytest.mark.parametrize("name", ["xlexample.pvlinux", "xlexample.hvm", "xlexample.pvhlinux"])
def test_xen_examples_give_libxls_json(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """xl create -n prints libxl_domain_config_to_json of the parsed config, byte for byte as
    the hand-written expected file (its uuid is the generated one), creates nothing (no daemon
    runs here: a create would fail to reach the hypervisor), and says which file it parsed."""
    path = EXAMPLES / name
    assert xl.main(["create", "-n", str(path)]) == 0
    out, err = capsys.readouterr()
    uuid = json.loads(out)["c_info"]["uuid"]
    expected = (EXAMPLES / f"{name}.create-n.json").read_text().replace("@UUID@", uuid)
    assert out == expected
    assert err == f"Parsing config from {path}\n"


def test_create_n_keeps_a_given_uuid_and_refuses_a_bad_disk(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "a.cfg"
    cfg.write_text('name = "a"\nkernel = "/k"\nuuid = "6f1d8a6e-2c39-4a8b-9a53-2a3c1f0e9b11"\n')
    assert xl.main(["create", "-q", "-n", str(cfg)]) == 0
    assert json.loads(capsys.readouterr().out)["c_info"]["uuid"] == "6f1d8a6e-2c39-4a8b-9a53-2a3c1f0e9b11"
    cfg.write_text('name = "a"\nkernel = "/k"\ndisk = [ "/d.img,raw,,w" ]\n')
    assert xl.main(["create", "-q", "-n", str(cfg)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "Invalid virtual disk identifier" in err  # libxlu_disk_l.l refuses the empty vdev


# ---- yajl's layout ----------------------------------------------------------------------------
def test_yajl_layout() -> None:
    assert libxl_json.dumps({}) == "{\n\n}\n"
    assert libxl_json.dumps([]) == "[\n\n]\n"
    assert libxl_json.dumps({"a": [1, 2], "b": {}, "c": None, "d": True}) == (
        '{\n    "a": [\n        1,\n        2\n    ],\n    "b": {\n\n    },\n    "c": null,\n'
        '    "d": true\n}\n')
    # yajl_string_encode: C escapes, other control bytes as \u00xx, '/' and UTF-8 left alone
    assert libxl_json.dumps(['a"b\\c\n\t\x01/é']) == '[\n    "a\\"b\\\\c\\n\\t\\u0001/é"\n]\n'


def test_list_long_with_no_domain_is_an_empty_array_and_puts_newline() -> None:
    assert libxl_json.list_long([]) == "[\n\n]\n\n"


# ---- xl_parse.c's key -> field -------------------------------------------------------------
def test_actions_use_libxls_enum_strings_and_leave_destroy_out() -> None:
    top = dry('name = "d"\nkernel = "/k"\non_poweroff = "preserve"\non_reboot = "rename-restart"\n'
              'on_crash = "coredump-restart"\non_watchdog = "destroy"\non_soft_reset = "destroy"\n')
    assert top["on_poweroff"] == "preserve"
    assert top["on_reboot"] == "restart_rename"
    assert top["on_crash"] == "coredump_restart"
    assert "on_watchdog" not in top and "on_soft_reset" not in top


def test_sched_params_memory_and_vcpus() -> None:
    b = dry('name = "d"\nkernel = "/k"\nmemory = 64\nmaxmem = 256\nvcpus = 1\nmaxvcpus = 3\n'
            'cpu_weight = 512\ncap = 0\ncpus = "1-2"\n')["b_info"]
    assert (b["max_vcpus"], b["avail_vcpus"]) == (3, [0])
    assert (b["target_memkb"], b["max_memkb"]) == (65536, 262144)
    assert b["sched_params"] == {"weight": 512, "cap": 0}  # cap 0 differs from its default -1
    assert b["vcpu_hard_affinity"] == [[1, 2]] * 3
    nothing = dry('name = "d"\nkernel = "/k"\n')["b_info"]
    assert not {"max_vcpus", "avail_vcpus", "max_memkb", "target_memkb"} & set(nothing)


def test_hvm_display_serial_usb_and_dm_args() -> None:
    top = dry('name = "h"\ntype = "hvm"\nvnc = 1\nvnclisten = "0.0.0.0"\nvncdisplay = 3\n'
              'vncpasswd = "s3cret"\nvncunused = 0\nserial = [ "pty", "file:/tmp/s1" ]\n'
              'usb = 1\nusbdevice = "tablet"\nboot = "dc"\nvga = "stdvga"\n'
              'device_model_args = [ "-global", "x.y=1" ]\ndevice_model_args_hvm = [ "-rtc", "base=utc" ]\n'
              'device_model_args_pv = [ "-no-such" ]\n')
    h = top["b_info"]["type.hvm"]
    assert h["vnc"] == {"enable": "True", "listen": "0.0.0.0", "passwd": "s3cret", "display": 3,
                        "findunused": "False"}
    assert h["serial_list"] == ["pty", "file:/tmp/s1"] and "serial" not in h
    assert (h["usb"], h["usbdevice"], h["boot"], h["vga"]) == ("True", "tablet", "dc", {"kind": "std"})
    assert top["b_info"]["extra"] == ["-global", "x.y=1"]
    assert top["b_info"]["extra_hvm"] == ["-rtc", "base=utc"]
    assert top["b_info"]["extra_pv"] == ["-no-such"]  # xl parses all three, whatever the type
    # a single serial string is libxl's "serial", not "serial_list"
    h1 = dry('name = "h"\ntype = "hvm"\nserial = "pty"\n')["b_info"]["type.hvm"]
    assert h1["serial"] == "pty" and "serial_list" not in h1


def test_pv_vnc_becomes_a_vfb_and_a_vkb() -> None:
    cfg = cfg_of('name = "p"\nkernel = "/k"\nvnc = 1\nvncdisplay = 2\n')
    assert any("vnc is for HVM guests" in w for w in cfg.warnings)
    top = json.loads(libxl_json.create_dryrun(cfg))
    assert top["vfbs"] == [{"devid": 0, "vnc": {"enable": "True", "display": 2}, "sdl": {}}]
    assert top["vkbs"] == [{"devid": 0}]


def test_disk_and_nic_fields() -> None:
    top = dry('name = "d"\nkernel = "/k"\n'
              'disk = [ "/a.img,qcow2,xvda,w", "format=raw,vdev=xvdb,access=r,backendtype=qdisk,'
              'no-discard,target=/b.img", "/c.iso,raw,hdc,r,devtype=cdrom" ]\n'
              'vif = [ "mac=00:16:3E:1:2:3,bridge=br1,type=vif,model=e1000,vifname=v0,mtu=9000", "" ]\n')
    assert top["disks"] == [
        {"pdev_path": "/a.img", "vdev": "xvda", "format": "qcow2", "readwrite": 1},
        {"pdev_path": "/b.img", "vdev": "xvdb", "backend": "qdisk", "format": "raw",
         "discard_enable": "False"},
        {"pdev_path": "/c.iso", "vdev": "hdc", "format": "raw", "removable": 1, "is_cdrom": 1},
    ]
    assert top["nics"] == [
        {"devid": 0, "mtu": 9000, "model": "e1000", "mac": "00:16:3e:01:02:03", "bridge": "br1",
         "ifname": "v0", "nictype": "vif"},
        {"devid": 1},
    ]


def test_relative_paths_are_shown_as_pyxen_opens_them() -> None:
    b = dry('name = "d"\nkernel = "vmlinuz"\nramdisk = "initrd"\ndisk = [ "d.img,raw,xvda,w" ]\n')
    assert (b["b_info"]["kernel"], b["b_info"]["ramdisk"]) == ("/cwd/vmlinuz", "/cwd/initrd")
    assert b["disks"][0]["pdev_path"] == "/cwd/d.img"


# ---- list -l: libxl's defaults and the live domain ------------------------------------------
def test_live_config_of_a_pv_domain() -> None:
    cfg = cfg_of('name = "w"\nkernel = "/k"\nmemory = 128\nvcpus = 2\nvif = [ "" ]\n'
                 'disk = [ "/d.img,raw,xvda,w" ]\n')
    live = libxl_json.LiveState(domid=5, name="w", uuid=cfg.uuid, online_vcpus=1,
                                target_memkb=100 * 1024, max_memkb=128 * 1024, weight=300, cap=50,
                                nic_macs=((0, "00:16:3e:0a:0b:0c"),))
    top = libxl_json.live_config(cfg, live)
    c, b = top["c_info"], top["b_info"]
    assert c == {"type": "pv", "ssidref": 12, "name": "w", "uuid": cfg.uuid, "run_hotplug_scripts": "True",
                 "driver_domain": "False", "passthrough": "disabled",
                 "xend_suspend_evtchn_compat": "False"}
    assert (b["max_vcpus"], b["avail_vcpus"]) == (2, [0])  # vcpu 1 offline: not in the map
    assert (b["target_memkb"], b["max_memkb"]) == (102400, 131072)
    assert b["sched_params"] == {"sched": "credit", "weight": 300, "cap": 50}
    assert b["type.pv"] == {"slack_memkb": 0, "e820_host": "False"}
    assert (b["blkdev_start"], b["event_channels"], b["acpi"]) == ("xvda", 1023, "True")
    assert top["disks"][0]["backend"] == "phy" and top["disks"][0]["discard_enable"] == "True"
    assert top["nics"] == [{"devid": 0, "mtu": 1500, "model": "rtl8139", "mac": "00:16:3e:0a:0b:0c",
                            "bridge": "xenbr0", "script": "/etc/xen/scripts/vif-bridge",
                            "nictype": "vif", "trusted": "True"}]
    text = libxl_json.list_long([(5, top)])
    assert text.startswith('[\n    {\n        "domid": 5,\n        "config": {\n            "c_info": {\n')
    assert json.loads(text) == [{"domid": 5, "config": top}]


def test_live_config_of_an_hvm_domain_shows_what_pyxen_runs() -> None:
    cfg = cfg_of('name = "h"\ntype = "hvm"\nvnc = 1\n')
    live = libxl_json.LiveState(domid=6, name="h", uuid=cfg.uuid, online_vcpus=1,
                                target_memkb=32768, max_memkb=32768, weight=256, cap=0)
    h = libxl_json.live_config(cfg, live)["b_info"]["type.hvm"]
    assert h["vga"] == {"kind": "std"}  # pyxen's QEMU has -vga std
    assert h["vnc"] == {"enable": "True", "listen": "127.0.0.1", "findunused": "True"}
    assert (h["bios"], h["boot"], h["rdm"]) == ("seabios", "cda", {"policy": "relaxed"})


def test_dom0_is_xen_init_dom0s_stub() -> None:
    live = libxl_json.LiveState(domid=0, name="Domain-0", uuid="00000000-0000-0000-0000-000000000000",
                                online_vcpus=2, target_memkb=1024, max_memkb=2048, weight=256, cap=0)
    assert libxl_json.dom0_config(live) == {
        "c_info": {"type": "pv", "name": "Domain-0"},
        "b_info": {"max_memkb": 2048, "target_memkb": 1024,
                   "sched_params": {"sched": "credit", "weight": 256, "cap": 0},
                   "type.pv": {}, "arch_arm": {}, "arch_x86": {}}}


# ---- keys consumed or refused ----------------------------------------------------------------
@pytest.mark.parametrize("text, message", [
    ('name = "d"\nbootloader = ""\n', "bootloader: an empty program name"),
    ('name = "d"\n', "Neither kernel nor bootloader specified"),
    ('name = "h"\ntype = "hvm"\nserial = "stdio"\n', "'stdio' is not a serial device"),
    ('name = "h"\ntype = "hvm"\nusbdevice = "joystick"\n', "'joystick' is not one of"),
    ('name = "h"\ntype = "hvm"\nvnclisten = "1.2.3.4:5"\nvncdisplay = 1\n',
     "Display specified both in vnclisten and vncdisplay"),
    ('name = "d"\nkernel = "/k"\ndevice_model_args = "-x"\n', "xl: Unable to parse device_model_args."),
])
def test_refused_keys(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        cfg_of(text)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_pool_and_cpus_soft_are_read_and_on_soft_reset_is_named_in_a_warning() -> None:
    cfg = cfg_of('name = "d"\nkernel = "/k"\npool = "p1"\ncpus_soft = "0"\non_soft_reset = "destroy"\n')
    assert (cfg.pool, cfg.cpus_soft) == ("p1", "0")
    assert [w.split(": warning: ")[1].split(" ")[0] for w in cfg.warnings] == ["'on_soft_reset'"]
    assert dry('name = "d"\nkernel = "/k"\npool = "p1"\n')["c_info"]["pool_name"] == "p1"


# ---- what reaches QEMU -----------------------------------------------------------------------
def qemu_argv(text: str) -> list[str]:
    req = build_request(cfg_of(text))
    info = BuildInfo(name=req.name, uuid=req.uuid, type=req.type, memory_mib=32, maxmem_mib=32,
                     vcpus=1, max_vcpus=1, kernel=req.kernel, ramdisk=None, cmdline=req.cmdline,
                     accel="tcg", vnc=req.vnc, vncdisplay=req.vncdisplay, vnclisten=req.vnclisten,
                     vncpasswd=req.vncpasswd, vncunused=req.vncunused, serial=req.serial,
                     usb=req.usb, usbdevice=req.usbdevice, extra_args=req.dm_args)
    return argv("qemu", info, Paths(Path("/r")), 4)


def test_qemu_gets_the_vnc_password_option_and_to_99_but_never_the_password() -> None:
    args = qemu_argv('name = "h"\ntype = "hvm"\nvnc = 1\nvncdisplay = 7\nvncpasswd = "pw"\n')
    assert args[args.index("-vnc") + 1] == "127.0.0.1:7,password=on,to=99"
    assert not any("pw" == a or ",pw" in a for a in args)
    args = qemu_argv('name = "h"\ntype = "hvm"\nvnc = 1\nvncunused = 0\nvnclisten = "0.0.0.0:4"\n')
    assert args[args.index("-vnc") + 1] == "0.0.0.0:4"


def test_qemu_serial_usb_and_dm_args() -> None:
    args = qemu_argv('name = "h"\ntype = "hvm"\nserial = [ "null", "pty", "pty" ]\nusb = 1\n'
                     'usbdevice = [ "tablet", "keyboard" ]\ndevice_model_args = [ "-global", "a=b" ]\n'
                     'device_model_args_hvm = [ "-k", "fr" ]\ndevice_model_args_pv = [ "-nope" ]\n')
    serials = [args[i + 1] for i, a in enumerate(args) if a == "-serial"]
    assert serials == ["null", "chardev:console0", "pty"]
    assert "-usb" in args
    assert [args[i + 1] for i, a in enumerate(args) if a == "-device"][-2:] == ["usb-tablet", "usb-kbd"]
    assert args[-4:] == ["-global", "a=b", "-k", "fr"]
    pv = qemu_argv('name = "p"\nkernel = "/k"\nserial = "null"\ndevice_model_args_pv = [ "-s" ]\n'
                   'device_model_args_hvm = [ "-no" ]\n')
    assert [pv[i + 1] for i, a in enumerate(pv) if a == "-serial"] == ["chardev:console0"]
    assert pv[-1] == "-s" and "-no" not in pv and "-usb" not in pv


def test_serial_args_for_a_pv_guest_is_the_console() -> None:
    info = BuildInfo(name="p", uuid="u", type="pv", memory_mib=32, maxmem_mib=32, vcpus=1,
                     max_vcpus=1, kernel="/k", ramdisk=None, cmdline="", accel="tcg",
                     serial=("null",))
    assert serial_args(info) == ["-serial", "chardev:console0"]
    assert vnc_arg(info) == "127.0.0.1:0"


def test_example_configs_load_as_xl_reads_them() -> None:
    cfg = load(EXAMPLES / "xlexample.hvm")
    assert (cfg.type, cfg.memory, cfg.vcpus, cfg.setting("sdl")) == ("hvm", 128, 2, "1")


def test_create_n_does_not_open_the_kernel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """xl_parse.c never opens kernel or disk files: a dry run with a kernel that does not
    exist prints the JSON and succeeds; only a real create (libxl's build) fails on it."""
    cfg = tmp_path / "k.cfg"
    cfg.write_text('name = "k"\nkernel = "/nonexistent/vmlinuz"\ndisk = [ "/nonexistent.img,raw,xvda,w" ]\n')
    assert xl.main(["create", "-n", str(cfg)]) == 0
    top = json.loads(capsys.readouterr().out)
    assert top["b_info"]["kernel"] == "/nonexistent/vmlinuz"
    assert top["disks"][0]["pdev_path"] == "/nonexistent.img"


def test_libxl_json_is_pure() -> None:
    """The encoder loads no daemon module and no QEMU client (like config and render)."""
    from .test_pure_modules import DAEMON, loaded_by

    loaded = loaded_by("pyxen.toolstack.libxl_json")
    assert not loaded & set(DAEMON), sorted(loaded & set(DAEMON))


def test_a_bad_bootloader_is_refused_before_anything_runs(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "b.cfg"
    cfg.write_text('name = "b"\nbootloader = ""\n')
    for args in (["create", str(cfg)], ["create", "-n", str(cfg)]):
        assert xl.main(args) == 1
        out, err = capsys.readouterr()
        assert out == ""
        assert err == f"Parsing config from {cfg}\n{cfg}:2: bootloader: an empty program name\n"


def test_bootloader_and_its_args_are_in_b_info(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """libxl keeps bootloader and bootloader_args in b_info (PV and PVH); --kernel stays a
    path in the guest, not made absolute against xl's directory."""
    cfg = tmp_path / "b.cfg"
    cfg.write_text('name = "b"\nbootloader = "pygrub"\nbootloader_args = ["-q", "--entry=1"]\n'
                   'kernel = "boot/vmlinuz"\ndisk = ["/x.img,raw,xvda,rw"]\n')
    assert xl.main(["create", "-n", str(cfg)]) == 0
    out, _ = capsys.readouterr()
    b_info = json.loads(out)["b_info"]
    assert (b_info["bootloader"], b_info["bootloader_args"], b_info["kernel"]) == \
        ("pygrub", ["-q", "--entry=1"], "boot/vmlinuz")


def test_a_config_without_the_files_settings_still_shows_its_values() -> None:
    """A DomainConfig built in code, or kept by an older pyxen, has no settings: its typed
    fields stand for the keys (and a saved domid is c_info.domid, as xl save -D keeps it)."""
    from pyxen.toolstack.config import DomainConfig

    cfg = DomainConfig(name="o", kernel="/k", memory=64, maxmem=96, vcpus=2, maxvcpus=2,
                       cpu_weight=512, disks=("/d.img,raw,xvda,w",), vifs=("bridge=br0",), domid=4)
    top = json.loads(libxl_json.create_dryrun(cfg))
    assert top["c_info"]["domid"] == 4
    b = top["b_info"]
    assert (b["target_memkb"], b["max_memkb"], b["avail_vcpus"]) == (65536, 98304, [0, 1])
    assert b["sched_params"] == {"weight": 512}
    assert top["disks"][0]["pdev_path"] == "/d.img" and top["nics"] == [{"devid": 0, "bridge": "br0"}]


def test_cpus_past_the_host_keep_the_bits_of_a_whole_byte() -> None:
    """xl create -n with cpus= naming CPUs the host lacks: libxl's map has whole bytes (8 bits on
    a 4-CPU host), so CPU 5 stays and CPU 9 is dropped; no error, as Xen prints the JSON."""
    b_info = dry('name = "c"\nkernel = "/k"\nvcpus = 2\ncpus = "0-3,5,9,^1"\n')["b_info"]
    assert b_info["vcpu_hard_affinity"] == [[0, 2, 3, 5], [0, 2, 3, 5]]
