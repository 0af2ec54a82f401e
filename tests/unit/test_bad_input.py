"""Bad input gets one line naming what is wrong, and changes nothing (issue 8).

Binary and non-UTF-8 config files, lists nested past any real config, JSON nested past the
interpreter's recursion limit on the hypervisor's control socket, other scripts' digits given as
domain ids, all-digit domain names, and relative paths (resolved against xl's working directory).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path

import pytest

from pyxen.hypervisor.hostcfg import HostConfig, HostConfigError
from pyxen.hypervisor.wire import MAX_LINE, WireError, decode_reply, decode_request
from pyxen.libxlu.cfg import ConfigEncodingError, ConfigSyntaxError, decode, parse
from pyxen.libxlu.cpumap import parse_cpulist
from pyxen.libxlu.domid import is_domid, parse_uint
from pyxen.toolstack.config import ConfigError, from_settings, load

BINARY = bytes([0xFF, 0x00, 0xFE, 0x01, 0x80]) * 20


def one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text and text.isprintable(), repr(text)
    return text


# ---- config files that are not text ---------------------------------------------------------
def test_binary_and_non_utf8_files_are_refused_with_one_line(tmp_path: Path) -> None:
    binary = tmp_path / "bin.cfg"
    binary.write_bytes(BINARY)
    with pytest.raises(ConfigSyntaxError) as exc:
        load(binary)
    assert one_line(exc.value).startswith(f"{binary}:1: not a config file: binary data")

    latin1 = tmp_path / "latin1.cfg"
    latin1.write_bytes('name = "d"\nkernel = "/k"\nextra = "caf\u00e9"\n'.encode("latin-1"))
    with pytest.raises(ConfigEncodingError) as exc2:
        load(latin1)
    assert one_line(exc2.value) == f"{latin1}:3: not UTF-8 text: byte 0xe9 at offset 37"

    assert decode('extra = "caf\u00e9"\n'.encode(), "u.cfg") == 'extra = "caf\u00e9"\n'


def test_host_cfg_that_is_binary_is_a_host_config_error(tmp_path: Path) -> None:
    path = tmp_path / "host.cfg"
    path.write_bytes(BINARY)
    with pytest.raises(HostConfigError) as exc:
        HostConfig.load(path)
    assert one_line(exc.value).startswith(f"{path}:1: not a config file")
    assert path.read_bytes() == BINARY  # not overwritten with the defaults


def test_control_characters_in_a_syntax_error_are_escaped() -> None:
    with pytest.raises(ConfigSyntaxError) as exc:
        parse('name = "d"\n\x1b[2J = 1\n', "t.cfg")
    assert one_line(exc.value) == "t.cfg:2: config parsing error near `\\x1b[2J': lexical error"
    assert exc.value.messages[0] == "t.cfg:2: config parsing error near `\x1b[2J': lexical error"


# ---- nesting --------------------------------------------------------------------------------
#: The deepest list Xen's parser takes: bison's stack stops at YYMAXDEPTH (10000) entries and
#: each level holds two ('[' and nlok); found by running Xen's own libxlu_cfg_y.c.
XEN_MAX_NESTING = 4996


def test_deeply_nested_lists_are_a_syntax_error_not_a_recursion_error() -> None:
    deep = 100_000
    with pytest.raises(ConfigSyntaxError) as exc:
        parse("a = " + "[" * deep + "]" * deep + "\n", "deep.cfg")
    assert one_line(exc.value) == "deep.cfg:1: config parsing error near `[': memory exhausted"
    n = XEN_MAX_NESTING
    ok = parse("a = " + "[" * n + "]" * n + "\n")["a"].value
    for _ in range(n - 1):
        assert isinstance(ok, list) and len(ok) == 1
        ok = ok[0]
    assert ok == []
    with pytest.raises(ConfigSyntaxError) as exc:
        parse("a = " + "[" * (n + 1) + "]" * (n + 1) + "\n", "deep.cfg")
    assert str(exc.value) == "deep.cfg:1: config parsing error near `]': memory exhausted"


@pytest.mark.parametrize("line", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"id": 1, "op": "x", "args": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_001,
    b'{"id": 1, "op": "x", "args": {"a": ' + b"[" * 5_000 + b"]" * 5_000 + b"}}",
])
def test_deeply_nested_json_is_a_wire_error(line: bytes) -> None:
    assert len(line) < MAX_LINE
    with pytest.raises(WireError, match="nested too deeply"):
        decode_request(line)
    with pytest.raises(WireError, match="nested too deeply"):
        decode_reply(line)


def test_control_socket_answers_einval_to_deep_json_and_keeps_serving() -> None:
    """The daemon's own loop (server.serve_client): EINVAL for the bad line, then the next
    request on the same connection is still answered."""
    from pyxen.hypervisor.server import serve_client

    async def run(sock: str) -> list[dict[str, object]]:
        server = await asyncio.start_unix_server(
            lambda r, w: serve_client(None, r, w), path=sock, limit=MAX_LINE)  # type: ignore[arg-type]
        async with server:
            reader, writer = await asyncio.open_unix_connection(sock, limit=MAX_LINE)
            writer.write(b"[" * 100_000 + b"]" * 100_000 + b"\n")
            writer.write(json.dumps({"id": 2, "op": "no.such_op", "args": {}}).encode() + b"\n")
            await writer.drain()
            replies = [json.loads(await asyncio.wait_for(reader.readline(), 10)) for _ in range(2)]
            writer.close()
            return replies

    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        bad, nxt = asyncio.run(run(os.path.join(d, "s")))
    assert bad["error"]["errno"] == "EINVAL" and "nested too deeply" in bad["error"]["message"]  # type: ignore[index]
    assert nxt["id"] == 2 and "unknown hypercall 'no.such_op'" in nxt["error"]["message"]  # type: ignore[index]


# ---- numbers: ASCII digits only, as strtoul ----------------------------------------------------
@pytest.mark.parametrize("text, value", [
    ("0", 0), ("12", 12), ("007", 7),
    ("\u0661\u0662", None), ("\uff12", None), ("\u00b2", None), ("1_0", None), (" 1", None), ("1\n", None),
    ("", None), ("-1", None), ("+1", None), ("0x1", None),
])
def test_only_ascii_digits_are_a_domid(text: str, value: int | None) -> None:
    assert parse_uint(text) == value
    assert is_domid(text) == (value is not None)


def test_cpu_lists_take_ascii_digits_only() -> None:
    with pytest.raises(ValueError):
        parse_cpulist("\u0661", 4)
    with pytest.raises(ValueError):
        parse_cpulist("0-\uff13", 4)
    assert parse_cpulist("0-1", 4) == {0, 1}


# ---- names ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["123", "0", "007"])
def test_all_digit_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError) as exc:
        from_settings(parse(f'name = "{name}"\nkernel = "/k"\n'), "t.cfg")
    assert one_line(exc.value) == f"t.cfg:1: name: '{name}' is all digits, which xl reads as a domain id"


@pytest.mark.parametrize("name", ["d123", "123d", "1-2", "1.2"])
def test_names_with_a_non_digit_are_fine(name: str) -> None:
    assert from_settings(parse(f'name = "{name}"\nkernel = "/k"\n')).name == name


# ---- relative paths -------------------------------------------------------------------------
def cfg_with(lines: str, cwd: str | None = None) -> object:
    return from_settings(parse('name = "d"\n' + lines), "t.cfg", cwd=cwd)


def test_relative_kernel_and_ramdisk_are_made_absolute_against_cwd() -> None:
    c = cfg_with('kernel = "boot/vmlinuz"\nramdisk = "initrd.img"\n', cwd="/srv/guests")
    assert (c.kernel, c.ramdisk) == ("/srv/guests/boot/vmlinuz", "/srv/guests/initrd.img")  # type: ignore[attr-defined]
    c = cfg_with('kernel = "/k"\nramdisk = "/r"\n', cwd="/srv")
    assert (c.kernel, c.ramdisk) == ("/k", "/r")  # type: ignore[attr-defined]


@pytest.mark.parametrize("spec, resolved", [
    ("disk.img,raw,xvda,rw", "/w/disk.img,raw,xvda,rw"),
    ("file:disk.img,xvda,w", "file:/w/disk.img,xvda,w"),
    ("phy:sub/disk.img,xvda,w", "phy:/w/sub/disk.img,xvda,w"),
    ("qcow2:d.qcow2,xvda,w", "qcow2:/w/d.qcow2,xvda,w"),
    ("vdev=xvda, access=rw, target=a,b.img", "vdev=xvda, access=rw, target=/w/a,b.img"),
    ("/abs.img,raw,xvda,rw", "/abs.img,raw,xvda,rw"),
    ("phy:/dev/sdz,xvdb,r", "phy:/dev/sdz,xvdb,r"),
    ("nbd:host:1234,xvda,w", "nbd:host:1234,xvda,w"),  # a block script's argument, not a path
    ("x.img,raw,xvda,w,script=block-x", "x.img,raw,xvda,w,script=block-x"),
    (",,hdc:cdrom,r", ",,hdc:cdrom,r"),
])
def test_relative_disk_targets_are_made_absolute_against_cwd(spec: str, resolved: str) -> None:
    from pyxen.toolstack.devices import parse_disk

    c = cfg_with(f'kernel = "/k"\ndisk = [ "{spec}" ]\n', cwd="/w")
    assert c.disks == (resolved,)  # type: ignore[attr-defined]
    before, after = parse_disk(spec), parse_disk(resolved)
    assert (after.vdev, after.format, after.readonly, after.backendtype) == \
        (before.vdev, before.format, before.readonly, before.backendtype)
    if after.target is not None:
        assert after.target.startswith("/w/") == (before.target != after.target)


def test_load_resolves_against_the_process_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "guest.cfg").write_text('name = "d"\nkernel = "vmlinuz"\ndisk = ["disk.img,raw,xvda,w"]\n')
    monkeypatch.chdir(tmp_path)
    c = load("guest.cfg")
    assert c.kernel == f"{tmp_path}/vmlinuz"
    assert c.disks == (f"{tmp_path}/disk.img,raw,xvda,w",)
    assert c.source == f"{tmp_path}/guest.cfg"


# ---- xl with a daemon down ------------------------------------------------------------------
XL_COMMANDS = [["list"], ["info"], ["destroy", "1"], ["pause", "d"], ["mem-set", "1", "64m"],
               ["vcpu-list"], ["block-list", "1"], ["network-list", "1"], ["domid", "d"],
               ["domname", "1"], ["uptime"], ["dmesg"], ["debug-keys", "e"], ["sched-credit"],
               ["shutdown", "1"], ["create", "/dev/null", 'name="d"', f'kernel="{__file__}"'],
               ["migrate", "d", "hostB"], ["migrate-receive"]]


def xl_run(argv: list[str], root: Path, monkeypatch: pytest.MonkeyPatch,
           capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from pyxen.cli import xl

    monkeypatch.setenv("PYXEN_ROOT", str(root))
    code = xl.main(argv)
    out = capsys.readouterr()
    assert out.out == ""
    return code, out.err


@pytest.mark.parametrize("argv", XL_COMMANDS)
def test_xl_with_the_hypervisor_down_is_one_line(argv: list[str], monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as root:
        code, err = xl_run(argv, Path(root), monkeypatch, capsys)
        lines = [line for line in err.splitlines() if not line.startswith("Parsing config from")]
        assert code == 1 and len(lines) == 1, err
        assert "cannot reach the hypervisor" in lines[0] and "is the host started?" in lines[0]


@pytest.mark.parametrize("argv", XL_COMMANDS)
def test_xl_with_xenstored_down_is_one_line_before_anything_is_applied(
        argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A hypervisor socket that accepts but never answers: any hypercall would hang until the
    timeout, so a prompt one-line answer shows xl stopped at context creation, before any call."""
    import socket

    from pyxen.paths import Paths

    with tempfile.TemporaryDirectory(dir="/tmp") as root:
        paths = Paths.from_env(root)
        paths.ensure()
        hv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        hv.bind(str(paths.hypervisor_socket))
        hv.listen(16)
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        dead.bind(str(paths.xenstored_socket))  # bound, never listening: a daemon that died
        dead.close()
        try:
            code, err = xl_run(argv, Path(root), monkeypatch, capsys)
        finally:
            hv.close()
        lines = [line for line in err.splitlines() if not line.startswith("Parsing config from")]
        assert code == 1 and len(lines) == 1, err
        assert lines[0] == (f"xl: cannot connect to xenstore at {paths.xenstored_socket} (Connection refused); "
                            "is the host started? (pyxen host start)")


def test_xendomains_resolves_relative_paths_against_root_as_xens_init_script(tmp_path: Path) -> None:
    from pyxen.host.xendomains import XENDOMAINS_CWD

    (tmp_path / "a.cfg").write_text('name = "a"\nkernel = "boot/vmlinuz"\n')
    c = load(tmp_path / "a.cfg", cwd=XENDOMAINS_CWD)
    assert (XENDOMAINS_CWD, c.kernel, c.source) == ("/", "/boot/vmlinuz", f"{tmp_path}/a.cfg")
