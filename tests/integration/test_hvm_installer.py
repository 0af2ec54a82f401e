"""Issue 12, HVM: Debian's unmodified installer (debian-installer-12-netboot-amd64) in a pyxen
HVM guest, from an ISO built with xorriso and isolinux (boot = "d") and over PXE from the DHCP
service's TFTP server (boot = "n"), to its boot menu and its first screen, seen on the guest's
VNC console and read by tesseract; and the VNC server's password check.

The guests are TCG: the installer's kernel and its 40 MB initrd take a minute or two, so the
deadlines are generous. The PXE test gives the guest a vif: run it under
``flock /tmp/pyxen-net.lock`` (TAP names are host-global).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyxen.host.dhcp import query
from pyxen.testing import vnc
from pyxen.testing.installer_media import build_iso, build_tftp_tree

from ..conftest import Host, qemu_pids_under

pytestmark = pytest.mark.integration

#: The installer's syslinux menu (its title), and an entry of it.
MENU_WORDS = ("Debian GNU/Linux installer menu", "Advanced options")
#: The installer's first screen (debconf's language question).
FIRST_SCREEN = ("Select a language", "Choose the language")
#: Until the menu shows (BIOS, isolinux or PXE + TFTP of pxelinux and vesamenu).
MENU_TIMEOUT = 180.0
#: From Enter on the menu to the first screen: the kernel and initrd (over TFTP for PXE:
#: 48 MB) loaded, the initrd unpacked and the installer started, under TCG on a busy machine.
FIRST_SCREEN_TIMEOUT = 420.0
PASSWORD = "d1-pass"
#: How long the PXE test waits for another pyxen host to stop serving xenbr0.
SERVE_TIMEOUT = 120.0


def display() -> int:
    return 20 + os.getpid() % 60


def virt_install(host: Host, name: str, disp: int, *how: str) -> str:
    """``virt-install --hvm`` as a user runs it: 1 GiB, no disk, VNC on ``disp`` with a
    password; returns what it printed (where the VNC console is)."""
    done = subprocess.run([sys.executable, "-m", "pyxen.cli.virtinstall", "-n", name, "-r", "1024", "--vcpus", "1",
                           "--hvm", *how, "--disk", "none", "--os-variant", "debian12",
                           "--graphics", f"vnc,listen=127.0.0.1,port={5900 + disp},password={PASSWORD}",
                           "--noautoconsole"], env=host.env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"VNC console of {name}" in done.stdout and f"(port {5900 + disp})" in done.stdout
    return done.stdout


def wait_for_menu(screen: vnc.Session, name: str, shots: Path) -> None:
    """The installer's boot menu on ``screen``, with its entries (its screenshot in ``shots``)."""
    menu = vnc.wait_for_text(screen, MENU_WORDS, MENU_TIMEOUT, shots / f"{name}-menu.ppm")
    assert "Help" in menu  # (an entry below Install, which is highlighted)


def boot_to_first_screen(host: Host, name: str, port: int, shots: Path) -> dict[str, float]:
    """Wait for the installer's menu, choose its default entry (Install) with Enter, wait for
    the first screen; the seconds each took, from ``xl create``'s return."""
    t0 = time.monotonic()
    with vnc.Session("127.0.0.1", port, PASSWORD) as screen:
        wait_for_menu(screen, name, shots)
        t_menu = time.monotonic() - t0
        screen.key("Return")
        vnc.wait_for_text(screen, FIRST_SCREEN, FIRST_SCREEN_TIMEOUT, shots / f"{name}-language.ppm")
    times = {"menu": round(t_menu, 1), "first_screen": round(time.monotonic() - t0, 1)}
    print(f"{name}: {times}")
    return times


def test_installer_iso_boots_to_its_menu(host: Host, tmp_path: Path) -> None:
    """``virt-install --hvm --cdrom``: the VNC server asks for vncpasswd (VNC Authentication
    only) and refuses another password; the right one sees the installer's menu, read from the
    ISO by isolinux. (Choosing Install and waiting for the installer's first screen, a minute of
    TCG, is the PXE test's: the kernel and initrd it boots are the same files.)"""
    iso = build_iso()
    disp = display()
    virt_install(host, "di-cd", disp, "--cdrom", str(iso))
    assert "di-cd" in host.domains()
    port = 5900 + disp
    assert vnc.security_types("127.0.0.1", port) == [2]
    assert vnc.authenticate("127.0.0.1", port, "wrong-pw") is False
    with pytest.raises(vnc.VncError, match="refused the password"):
        vnc.Session("127.0.0.1", port, "d1-pasS")
    with pytest.raises(vnc.VncError, match="wants a password"):
        vnc.frame("127.0.0.1", port)
    with vnc.Session("127.0.0.1", port, PASSWORD) as screen:
        wait_for_menu(screen, "di-cd", tmp_path)
    host.xl("destroy", "di-cd")
    assert qemu_pids_under(host.paths.root) == []


def test_installer_over_pxe_from_the_tftp_service(host: Host, tmp_path: Path) -> None:
    """``virt-install --hvm --pxe``: the default vif (virtio-net through netback, iPXE's virtio
    ROM) PXE-boots pxelinux and the installer from the DHCP service's TFTP server. (QEMU's
    e1000, ``type=ioemu,model=e1000``, boots the same way with iPXE's ROM for it; it was
    checked by hand when this was built, not in every run.)"""
    tree = build_tftp_tree()
    text = host.paths.host_cfg.read_text()
    host.paths.host_cfg.write_text(text.replace('xenbr0_tftp_root = "tftp"', f'xenbr0_tftp_root = "{tree}"'))
    host.run("pyxen", "host", "stop", check=True)
    host.run("pyxen", "host", "start", check=True)
    # xenbr0 is host-global: another pyxen host may serve it for a while (this one stands by).
    deadline = time.monotonic() + SERVE_TIMEOUT
    while (status := query(host.paths)) is None or status["state"] != "serving":
        assert time.monotonic() < deadline, f"another host serves xenbr0's DHCP: {status}"
        time.sleep(1)
    assert status["tftp_root"] == str(tree)
    disp = display()
    virt_install(host, "di-pxe", disp, "--pxe", "--network", "bridge=xenbr0")
    boot_to_first_screen(host, "di-pxe", 5900 + disp, tmp_path)
    host.xl("destroy", "di-pxe")
