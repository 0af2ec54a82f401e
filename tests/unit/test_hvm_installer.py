"""Issue 12, HVM installers, the pure parts: the ISO's isolinux.cfg and xorriso's command line,
the TFTP tree, dnsmasq's TFTP options and the NAT the DHCP service would set up (its nft input
and commands, run against a recorder), host.cfg's new xenbr0_* keys, and the VNC client's
screenshots and key events (against a socket pair)."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pyxen.host import dhcp
from pyxen.host.dhcp import (DhcpError, DhcpService, default_uplink, dnsmasq_argv, nat_delete_argv,
                             nat_ruleset, tftp_root)
from pyxen.hypervisor.hostcfg import DEFAULT_TEXT, BridgeConfig, HostConfig, HostConfigError
from pyxen.paths import Paths
from pyxen.testing import installer_media as media
from pyxen.testing import vnc

NET = ipaddress.IPv4Interface("10.80.0.1/24")


# --- the media -----------------------------------------------------------------------------------
def test_isolinux_cfg_hands_over_to_the_installers_own_menu_from_the_root() -> None:
    text = media.isolinux_cfg()
    lines = [line.strip() for line in text.splitlines() if line and not line.startswith("#")]
    assert lines == ["prompt 0", "timeout 0", "default installer", "label installer",
                     "config /debian-installer/amd64/boot-screens/syslinux.cfg /"]


def test_xorriso_makes_an_el_torito_isolinux_image(tmp_path: Path) -> None:
    argv = media.xorriso_argv(tmp_path / "tree", tmp_path / "x.iso")
    assert argv[:3] == ["xorriso", "-as", "mkisofs"] and argv[-1] == str(tmp_path / "tree")
    assert argv[argv.index("-b") + 1] == "isolinux/isolinux.bin"
    assert argv[argv.index("-o") + 1] == str(tmp_path / "x.iso")
    for flag in ("-no-emul-boot", "-boot-info-table", "-follow-links", "-R", "-J"):
        assert flag in argv
    assert argv[argv.index("-boot-load-size") + 1] == "4"


def _fake_netboot(root: Path) -> Path:
    for rel in (media.KERNEL, media.INITRD, media.MENU_CFG, "debian-installer/amd64/pxelinux.0",
                "ldlinux.c32", "pxelinux.cfg/default"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    (root / "pxelinux.0").symlink_to("debian-installer/amd64/pxelinux.0")
    (root / "version.info").write_text("Debian version:  12 (bookworm)\n")
    return root


def test_the_tftp_tree_links_the_package_tree_and_is_built_once(tmp_path: Path) -> None:
    netboot = _fake_netboot(tmp_path / "netboot")
    tree = media.build_tftp_tree(tmp_path / "tftp", netboot)
    assert sorted(p.name for p in tree.iterdir() if not p.name.startswith(".")) == \
        ["debian-installer", "ldlinux.c32", "pxelinux.0", "pxelinux.cfg", "version.info"]
    assert (tree / "pxelinux.0").read_text() == "debian-installer/amd64/pxelinux.0"
    assert (tree / media.KERNEL).read_text() == media.KERNEL
    stamp = (tree / ".pyxen-stamp").stat().st_mtime_ns
    media.build_tftp_tree(tmp_path / "tftp", netboot)
    assert (tree / ".pyxen-stamp").stat().st_mtime_ns == stamp  # cached
    (netboot / "version.info").write_text("Debian version:  12 (bookworm) newer\n")
    media.build_tftp_tree(tmp_path / "tftp", netboot)
    assert "newer" in (tree / ".pyxen-stamp").read_text()  # rebuilt on a package upgrade


def test_missing_installer_files_are_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(media.MediaError) as exc:
        media.build_iso(tmp_path / "x.iso", tmp_path / "none")
    assert "debian-installer-12-netboot-amd64" in str(exc.value) and "\n" not in str(exc.value)
    assert not (tmp_path / "x.iso").exists()


# --- dnsmasq: TFTP ---------------------------------------------------------------------------------
def test_dnsmasq_serves_pxelinux_over_tftp_to_pxe_clients(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    argv = dnsmasq_argv(paths, BridgeConfig(NET, 120))
    assert "--enable-tftp" in argv and f"--tftp-root={tmp_path}/tftp" in argv and "--tftp-no-fail" in argv
    assert "--dhcp-vendorclass=set:pxe,PXEClient" in argv and "--dhcp-boot=tag:pxe,pxelinux.0" in argv
    argv = dnsmasq_argv(paths, BridgeConfig(NET, 120, Path("/srv/tftp")))
    assert "--tftp-root=/srv/tftp" in argv
    argv = dnsmasq_argv(paths, BridgeConfig(NET, 120, None))
    assert not [a for a in argv if "tftp" in a or "dhcp-boot" in a]


def _load(tmp_path: Path, extra: str) -> BridgeConfig:
    path = tmp_path / "host.cfg"
    path.write_text(DEFAULT_TEXT + extra)
    return HostConfig.load(path).xenbr0


def test_host_cfg_tftp_and_nat_keys(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "")
    assert (cfg.tftp_root, cfg.nat, cfg.nat_uplink) == (Path("tftp"), False, "")
    assert tftp_root(Paths(tmp_path), cfg) == tmp_path / "tftp"
    cfg = _load(tmp_path, 'xenbr0_tftp_root = ""\nxenbr0_nat = 1\nxenbr0_nat_uplink = "eth1"\n')
    assert (cfg.tftp_root, cfg.nat, cfg.nat_uplink) == (None, True, "eth1")
    assert tftp_root(Paths(tmp_path), cfg) is None


@pytest.mark.parametrize("extra, message", [
    ("xenbr0_nat = 2\n", "xenbr0_nat must be 0 or 1, not '2'"),
    ('xenbr0_nat = "yes"\n', "xenbr0_nat must be 0 or 1, not 'yes'"),
    ('xenbr0_nat_uplink = "eth0/1"\n', "xenbr0_nat_uplink must be a network device's name"),
    ('xenbr0_nat = 1\nxenbr0_address = ""\n', "xenbr0_nat = 1 needs xenbr0_address"),
    ("xenbr0_tftp = 1\n", "unknown setting xenbr0_tftp"),
])
def test_bad_tftp_and_nat_settings_are_one_line_errors(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(HostConfigError) as exc:
        _load(tmp_path, extra)
    assert message in str(exc.value) and "\n" not in str(exc.value)


# --- NAT ---------------------------------------------------------------------------------------
def test_nat_ruleset_masquerades_the_subnet_through_the_uplink() -> None:
    text = nat_ruleset("xenbr0", NET.network, "eth0")
    # declared, deleted and made again in one nft transaction: a killed service's table goes.
    assert text.splitlines()[:2] == ["table ip pyxen_xenbr0 {}", "delete table ip pyxen_xenbr0"]
    assert "type nat hook postrouting priority srcnat;" in text
    assert 'ip saddr 10.80.0.0/24 oifname "eth0" masquerade' in text
    assert nat_delete_argv("xenbr0") == ["nft", "delete", "table", "ip", "pyxen_xenbr0"]


def test_default_uplink_is_the_default_routes_device() -> None:
    assert default_uplink("default via 192.0.2.1 dev eth0 proto dhcp metric 100 \n") == "eth0"
    assert default_uplink("10.0.0.0/8 dev eth1\ndefault dev wg0 scope link\n") == "wg0"
    assert default_uplink("") is None


class _Recorder:
    """Stands in for nft (subprocess.run) and /proc/sys/net/ipv4/ip_forward."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], str | None]] = []

    def run(self, argv: list[str], input: str | None = None, **_kw: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append((argv, input))
        return subprocess.CompletedProcess(argv, 0, "", "")


def test_nat_on_while_serving_and_undone_after(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = _Recorder()
    forward = tmp_path / "ip_forward"
    forward.write_text("0\n")
    monkeypatch.setattr(dhcp.subprocess, "run", rec.run)
    monkeypatch.setattr(dhcp, "IP_FORWARD", forward)
    monkeypatch.setattr(dhcp, "_ip", lambda *a: "default via 192.0.2.1 dev uplink0 \n")
    svc = DhcpService(Paths(tmp_path), BridgeConfig(NET, 120, None, True, ""))
    svc._start_nat()
    assert rec.calls == [(["nft", "-f", "-"], nat_ruleset("xenbr0", NET.network, "uplink0"))]
    assert forward.read_text() == "1\n" and svc.status()["nat"] == "uplink0"
    svc.stop_serving()
    assert rec.calls[1] == (["nft", "delete", "table", "ip", "pyxen_xenbr0"], None)
    assert forward.read_text() == "0\n" and svc.status()["nat"] == ""
    # forwarding already on (the host routes anyway): left on after
    rec.calls.clear()
    forward.write_text("1\n")
    svc = DhcpService(Paths(tmp_path), BridgeConfig(NET, 120, None, True, "eth7"))
    svc._start_nat()
    assert 'oifname "eth7"' in str(rec.calls[0][1])
    svc.stop_serving()
    assert forward.read_text() == "1\n"


def test_nat_without_an_uplink_or_nft_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dhcp, "_ip", lambda *a: "")
    svc = DhcpService(Paths(tmp_path), BridgeConfig(NET, 120, None, True, ""))
    with pytest.raises(DhcpError, match="no default route, and no xenbr0_nat_uplink set"):
        svc._start_nat()
    monkeypatch.setattr(dhcp, "NFT", "/nonexistent/nft")
    svc = DhcpService(Paths(tmp_path), BridgeConfig(NET, 120, None, True, "eth0"))
    with pytest.raises(DhcpError, match="cannot run /nonexistent/nft"):
        svc._start_nat()


# --- VNC: screenshots and keys ----------------------------------------------------------------------
def test_a_frame_as_ppm_scaled() -> None:
    # 2x1 pixels in the Session's format (B, G, R, unused): red, then blue
    shot = vnc.Frame(2, 1, 4, bytes([0, 0, 255, 0, 255, 0, 0, 0]))
    assert shot.rgb() == bytes([255, 0, 0, 0, 0, 255])
    assert shot.ppm() == b"P6\n2 1\n255\n" + bytes([255, 0, 0, 0, 0, 255])
    assert shot.ppm(scale=2) == b"P6\n4 2\n255\n" + bytes([255, 0, 0] * 2 + [0, 0, 255] * 2) * 2


def test_a_frame_in_another_pixel_format_converts() -> None:
    # 16-bit big-endian 5-6-5
    fmt = struct.pack(">BBBBHHHBBBxxx", 16, 16, 1, 1, 31, 63, 31, 11, 5, 0)
    shot = vnc.Frame(2, 1, 2, struct.pack(">HH", 31 << 11, 63 << 5), fmt)
    assert shot.rgb() == bytes([255, 0, 0, 0, 255, 0])


def _server_init(width: int, height: int) -> bytes:
    fmt = struct.pack(">BBBBHHHBBBxxx", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
    return struct.pack(">HH", width, height) + fmt + struct.pack(">I", 4) + b"test"


def test_session_keys_and_a_resized_frame() -> None:
    """Against a scripted server on a socket pair: the handshake without a password, the key
    events a press sends, and a DesktopSize change in the middle of a frame request."""
    ours, theirs = socket.socketpair()
    theirs.sendall(b"RFB 003.008\n" + bytes([1, 1]) + struct.pack(">I", 0) + _server_init(2, 1))
    created = socket.create_connection

    def connect(_addr: Any, timeout: float = 0) -> socket.socket:
        return ours

    socket.create_connection = connect  # type: ignore[assignment]
    try:
        s = vnc.Session("127.0.0.1", 5900)
    finally:
        socket.create_connection = created  # type: ignore[assignment]
    with s:
        assert (s.width, s.height, s.name) == (2, 1, "test")
        s.key("Return")
        s.key("a")
        # version, security None, ClientInit, SetPixelFormat (20), SetEncodings (4 + 2*4),
        # then 4 KeyEvents (8 each)
        data = b""
        while len(data) < 12 + 1 + 1 + 20 + 12 + 32:
            data += theirs.recv(4096)
        assert data[:14] == b"RFB 003.008\n\x01\x01"
        assert data[14:18] == b"\x00\x00\x00\x00" and data[34:38] == struct.pack(">BxH", 2, 2)
        keys = data[-32:]
        assert [struct.unpack(">BBxxI", keys[i:i + 8]) for i in range(0, 32, 8)] == \
            [(4, 1, 0xFF0D), (4, 0, 0xFF0D), (4, 1, ord("a")), (4, 0, ord("a"))]
        with pytest.raises(vnc.VncError, match="unknown key"):
            s.key("NoSuchKey")
        # the frame: a DesktopSize rect (now 1x1), then the asked-again frame
        theirs.sendall(struct.pack(">BxH", 0, 1) + struct.pack(">HHHHi", 0, 0, 1, 1, -223)
                       + struct.pack(">BxH", 0, 1) + struct.pack(">HHHHi", 0, 0, 1, 1, 0) + bytes([1, 2, 3, 0]))
        shot = s.frame()
        assert (shot.width, shot.height, shot.rgb()) == (1, 1, bytes([3, 2, 1]))
    theirs.close()


def test_ocr_reads_a_rendered_word(tmp_path: Path) -> None:
    """tesseract on a frame: a word drawn in a 5x7 pixel font, scaled up, is read back."""
    glyphs = {"H": ["1...1", "1...1", "1...1", "11111", "1...1", "1...1", "1...1"],
              "I": ["11111", "..1..", "..1..", "..1..", "..1..", "..1..", "11111"]}
    word, cell, margin = "HI", 6, 20
    width, height = margin * 2 + cell * len(word) * 4, margin * 2 + 7 * 4
    px = bytearray(b"\xff\xff\xff\x00" * width * height)
    for n, ch in enumerate(word):
        for row, bits in enumerate(glyphs[ch]):
            for col, bit in enumerate(bits):
                if bit == "1":
                    for dy in range(4):
                        for dx in range(4):
                            x, y = margin + (n * cell + col) * 4 + dx, margin + row * 4 + dy
                            px[(y * width + x) * 4:(y * width + x) * 4 + 4] = b"\x00\x00\x00\x00"
    text = vnc.screen_text(vnc.Frame(width, height, 4, bytes(px)), tmp_path / "s.ppm")
    assert "HI" in text.replace(" ", "")
    assert (tmp_path / "s.ppm").read_bytes().startswith(b"P6\n")


def test_wait_for_text_reads_a_screen_once_until_it_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    """OCR only when the frame changed: the same pixels polled again are not read again."""
    blank, menu = vnc.Frame(2, 1, 4, bytes(8)), vnc.Frame(2, 1, 4, bytes([1] * 8))
    frames = iter([blank, blank, blank, menu])
    read: list[vnc.Frame] = []

    class Screen:
        def frame(self) -> vnc.Frame:
            return next(frames)

    def screen_text(shot: vnc.Frame, keep: Path | None = None) -> str:
        read.append(shot)
        return "Debian installer menu" if shot is menu else "Loading"

    monkeypatch.setattr(vnc, "screen_text", screen_text)
    assert vnc.wait_for_text(Screen(), ("installer menu",), 10, poll=0) == "Debian installer menu"  # type: ignore[arg-type]
    assert read == [blank, menu]


def test_ocr_runs_tesseract_on_one_thread(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """OMP_THREAD_LIMIT=1: OpenMP's spinning threads took the booting guest's CPU."""
    seen: dict[str, str] = {}

    def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        seen.update(kw["env"])  # type: ignore[arg-type]
        return subprocess.CompletedProcess(argv, 0, "words\n", "")

    monkeypatch.setattr(vnc.subprocess, "run", run)
    assert vnc.ocr(tmp_path / "s.ppm") == "words\n"
    assert seen["OMP_THREAD_LIMIT"] == "1" and seen["PATH"] == os.environ["PATH"]
