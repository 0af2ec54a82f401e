"""virt-install on a started host, with real QEMU guests: the seed's PV install from a Debian
install tree (served over HTTP from 127.0.0.1, and as a local directory) reaches the Debian
installer's first screen on the console; bad input changes nothing; ``-p --import`` boots a
disk through pygrub.

The tree is laid out as Debian's mirror does (``.../installer-amd64/current/images/MANIFEST``
and ``current/images/netboot/debian-installer/amd64/{linux,initrd.gz}``) from the files of the
Debian package debian-installer-12-netboot-amd64. Guests get a vif on xenbr0: run under
``flock /tmp/pyxen-net.lock``.
"""

from __future__ import annotations

import functools
import io
import os
import re
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pexpect
import pytest

from pyxen.testing.host import BIN, Host

pytestmark = pytest.mark.integration

#: The netboot installer's kernel and initrd (Debian package debian-installer-12-netboot-amd64).
D_I = Path("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64")
#: What the installer's text frontend shows first on ttyS0 with 1024 MiB (with the seed's 512
#: MiB it is d-i's low-memory notice, "[!!] Low memory", and lowmem skips the language question).
LANGUAGE_SCREEN = re.compile(r"Select a language|Choose the language")
#: The installer's kernel started on the console: what the served and the LV install wait for
#: (the local install, attached as virt-install attaches, waits for the language screen; the
#: initrd's minute of TCG to get there once is enough for CI's time budget).
KERNEL_STARTED = re.compile(r"Linux version \S+")
#: The installer's kernel and a 40 MB initrd under TCG on a loaded 2-core machine.
INSTALLER_TIMEOUT = 240.0
#: The path of the tree under the served folder, as on a Debian mirror.
TREE = "debian/dists/bookworm/main/installer-amd64"


def virt_install(host: Host, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``virt-install`` as a user runs it, against ``host``."""
    return subprocess.run([sys.executable, "-m", "pyxen.cli.virtinstall", *args], env=host.env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A Debian install tree (the served folder; the tree itself is ``<it>/TREE``)."""
    if not (D_I / "linux").is_file():
        pytest.skip("debian-installer-12-netboot-amd64 is not installed")
    images = tmp_path / "www" / TREE / "current" / "images"
    netboot = images / "netboot" / "debian-installer" / "amd64"
    netboot.mkdir(parents=True)
    (images / "MANIFEST").write_text(
        "netboot/debian-installer/amd64/: Debian installer netboot files for amd64\n")
    for name in ("linux", "initrd.gz"):
        os.symlink(D_I / name, netboot / name)
    return tmp_path / "www"


@pytest.fixture
def served(tree: Path) -> Iterator[str]:
    """The tree served over HTTP on 127.0.0.1; yields the URL of the tree."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tree))

    class Quiet(ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            pass  # a client that hangs up mid-file is not the test's business

    server = Quiet(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{TREE}/"
    finally:
        server.shutdown()
        server.server_close()


def wait_first_screen(host: Host, name: str, screen: re.Pattern[str]) -> str:
    deadline = time.monotonic() + INSTALLER_TIMEOUT
    while time.monotonic() < deadline:
        text = host.console_text(name)
        if screen.search(text):
            return text
        time.sleep(0.5)
    raise AssertionError(f"{name}: no installer screen within {INSTALLER_TIMEOUT} s:\n"
                         f"{host.console_text(name)[-3000:]}")


def check_install_domain(host: Host, name: str, disk: Path, out: str,
                         screen: re.Pattern[str]) -> None:
    """The installer runs as the domain ``name``; its final config boots the disk by pygrub."""
    assert "Starting install..." in out
    assert "Retrieving 'linux'" in out and "Retrieving 'initrd.gz'" in out
    assert "Domain is still running. Installation may be in progress." in out
    assert name in host.domains()
    text = wait_first_screen(host, name, screen)
    assert "Linux version" in text  # the installer's own kernel booted
    final = (host.paths.root / f"{name}.cfg").read_text()
    assert 'bootloader = "pygrub"' in final and "kernel" not in final
    assert f"file:{disk},xvda,w" in final and "bridge=xenbr0" in final
    assert disk.stat().st_size == 1 << 30 and disk.stat().st_blocks * 512 < (1 << 30)  # sparse
    boot = sorted(p.name for p in host.paths.boot_dir.iterdir())
    assert [re.sub(r"virtinst-[0-9a-f]+-", "", b) for b in boot] == ["initrd.gz", "linux"]
    # the domain runs the install phase: the kernel fetched from the tree
    listed = host.xl("list", "-l", name).stdout
    assert re.search(r'"kernel":\s*"[^"]*/boot/virtinst-[0-9a-f]+-linux"', listed), listed


def test_pv_install_from_a_served_tree_and_a_local_one(host: Host, served: str, tree: Path,
                                                       tmp_path: Path) -> None:
    disk = tmp_path / "inst.img"
    done = virt_install(host, "-n", "inst", "-r", "512", "--vcpus=1", "-f", str(disk),
                        "--file-size", "1", "-p", "-l", served, "--noautoconsole")
    assert done.returncode == 0, done.stderr + done.stdout
    check_install_domain(host, "inst", disk, done.stdout, KERNEL_STARTED)
    host.xl("destroy", "inst")
    for f in host.paths.boot_dir.iterdir():
        f.unlink()

    # from the local directory, with the console attached as virt-install attaches it: the
    # installer's language screen arrives on virt-install's own stdout; ^] detaches and
    # virt-install leaves the install running
    disk2 = tmp_path / "local.img"
    child = pexpect.spawn(sys.executable, ["-m", "pyxen.cli.virtinstall", "--name", "local",
                          "--memory", "1024", "--vcpus", "1", "--disk", f"path={disk2},size=1",
                          "--paravirt", "--location", str(tree / TREE), "--os-variant", "debian12",
                          "--network", "bridge=xenbr0"], env=host.env, encoding="utf-8",
                          codec_errors="replace", timeout=INSTALLER_TIMEOUT, dimensions=(25, 80))
    child.logfile_read = seen = io.StringIO()
    try:
        child.expect("Starting install...")
        child.expect(LANGUAGE_SCREEN)
        child.sendcontrol("]")
        child.expect("You can reconnect to the console to complete the installation process.",
                     timeout=60)
        child.expect(pexpect.EOF, timeout=60)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.before
    check_install_domain(host, "local", disk2, seen.getvalue(), LANGUAGE_SCREEN)


def _state(host: Host, tmp_path: Path) -> tuple[list[str], list[str], list[str]]:
    return (sorted(str(p.relative_to(host.paths.root)) for p in host.paths.root.glob("*.cfg")),
            sorted(os.listdir(tmp_path)), sorted(host.domains()))


def test_bad_input_changes_nothing(host: Host, served: str, tmp_path: Path) -> None:
    host.create("demo")
    (host.paths.root / "old.cfg").write_text('name = "old"\n')
    before = _state(host, tmp_path)
    disk = str(tmp_path / "bad.img")
    cases = [
        (["-n", "x", "-f", disk, "-s", "1", "-p", "-l", served], "--memory amount in MiB is required"),
        (["-n", "x", "-r", "256", "-f", disk, "-s", "1", "-p", "-l", served, "-w", "bridge=nosuchbr0"],
         "Cannot get interface MTU on 'nosuchbr0': No such device"),
        (["-n", "x", "-r", "256", "-f", disk, "--disk", f"{disk},size=1", "-p", "-l", served],
         "Cannot mix --file, --nonsparse, or --file-size with --disk options."),
        (["-n", "demo", "-r", "256", "-f", disk, "-s", "1", "-p", "-l", served],
         "Guest name 'demo' is already in use."),
        (["-n", "old", "-r", "256", "-f", disk, "-s", "1", "-p", "-l", served],
         "Guest name 'old' is already in use."),
        (["-n", "x", "-r", "256", "-f", disk, "-s", "1", "-p", "-l", served + "nosuch/"],
         "Could not find an installable distribution at URL"),
        (["-n", "x", "-r", "256", "-f", disk, "-s", "1", "-p"], "An install method must be specified"),
    ]
    for args, message in cases:
        done = virt_install(host, *args, "--noautoconsole", timeout=60)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert done.stderr.startswith("ERROR    "), done.stderr
        assert message in done.stderr, (args, done.stderr)
        assert _state(host, tmp_path) == before, args
        assert not host.paths.boot_dir.exists() or not list(host.paths.boot_dir.iterdir())


def test_pv_import_boots_a_debian_disk_through_pygrub(host: Host, tmp_path: Path) -> None:
    """``-p --import`` of a disk holding a distribution (a Debian 12 root filesystem made by
    ``pyxen image create --dir --ip``, from the cached base): pygrub boots its kernel to a login
    prompt, and its agent reports the image's static address."""
    made = subprocess.run([str(BIN / "pyxen"), "image", "create", "--hostname", "imp",
                           "--dir", str(tmp_path), "--noswap", "--size", "2G", "--password", "imp-pw",
                           "--ip", "10.81.0.7", "--output", str(tmp_path)], env=host.env, capture_output=True,
                          text=True, timeout=1200, stdin=subprocess.DEVNULL)
    assert made.returncode == 0, made.stderr + made.stdout[-2000:]
    disk = tmp_path / "domains" / "imp" / "disk.img"
    done = virt_install(host, "-n", "imp", "-r", "512", "-p", "--import", "--disk", str(disk),
                        "--network", "bridge=xenbr0", "--noautoconsole", "--os-variant", "debian12")
    assert done.returncode == 0, done.stderr + done.stdout
    assert "Domain creation completed." in done.stdout
    cfg = (host.paths.root / "imp.cfg").read_text()
    assert 'bootloader = "pygrub"' in cfg and f"file:{disk},xvda,w" in cfg and "kernel" not in cfg
    host.wait_console("imp", "imp login:", timeout=300)
    # systemd-networkd gives eth0 the image's static address, and the agent reports it.
    domid = int(host.xl("domid", "imp").stdout)
    deadline = time.monotonic() + 120
    while host.xs_read(f"/local/domain/{domid}/attr/vif/0/ipv4/0") != "10.81.0.7":
        assert time.monotonic() < deadline, f"imp's static address in xenstore: {host.xs_subtree(domid)}"
        time.sleep(1)
    host.xl("destroy", "imp")


@pytest.fixture
def vg() -> Iterator[str]:
    from pyxen.testing.lvm import loop_volume_group
    with loop_volume_group() as name:
        yield name


def test_the_seeds_lv_install(vg: str, host: Host, tree: Path) -> None:
    """``-f /dev/<vg>/<lv> -s N``: the LV is made in the volume group and the guest's disk is
    ``phy:`` on it (the seed's ``lvcreate`` + ``virt-install -f /dev/vg/f13``)."""
    from pyxen.storage import lvm
    done = virt_install(host, "-n", "f13", "-r", "512", "--vcpus=1", "-f", f"/dev/{vg}/f13",
                        "-s", "1", "--vnc", "-p", "-l", str(tree / TREE), "--noautoconsole")
    assert done.returncode == 0, done.stderr + done.stdout
    assert "no framebuffer" in done.stderr  # --vnc on a PV guest: said, not silently dropped
    lv = lvm.find(vg, "f13")
    assert lv.size == 1 << 30 and os.path.realpath(lv.path).startswith("/dev/loop")
    final = (host.paths.root / "f13.cfg").read_text()
    assert f"phy:/dev/{vg}/f13,xvda,w" in final and 'bootloader = "pygrub"' in final
    wait_first_screen(host, "f13", KERNEL_STARTED)
    host.xl("destroy", "f13")
    # a second run with the LV in place: the name is what is refused, and the LV stays
    again = virt_install(host, "-n", "f13", "-r", "512", "-f", f"/dev/{vg}/f13", "-p", "-l",
                         str(tree / TREE), "--noautoconsole")
    assert again.returncode == 1 and "Guest name 'f13' is already in use." in again.stderr
    assert lvm.find(vg, "f13").size == 1 << 30


def test_hvm_cdrom_and_pxe_start_with_vnc(host: Host, tmp_path: Path) -> None:
    """``--hvm --cdrom ISO`` and ``--hvm --pxe``: the install phase starts (the installer itself
    seen over VNC is the HVM installer-media test's), virt-install says where VNC is, and the
    final config boots the disk."""
    media = tmp_path / "media"
    media.mkdir()
    (media / "README").write_text("not bootable\n")
    iso = tmp_path / "d.iso"
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-o", str(iso), str(media)], check=True,
                   capture_output=True, timeout=60)
    done = virt_install(host, "-n", "hcd", "-r", "128", "--hvm", "--cdrom", str(iso), "--disk",
                        f"{tmp_path}/hcd.img,size=0.1", "--graphics", "vnc,password=s3cret,port=5942",
                        "--network", "none", "--noautoconsole")
    assert done.returncode == 0, done.stderr + done.stdout
    assert "VNC console of hcd" in done.stdout and "127.0.0.1:42 (port 5942)" in done.stdout
    assert "hcd" in host.domains()
    final = (host.paths.root / "hcd.cfg").read_text()
    assert f'"file:{iso},hdc:cdrom,r"' in final and 'boot = "c"' in final
    assert 'vncpasswd = "s3cret"' in final and "vncdisplay = 42" in final
    host.xl("destroy", "hcd")

    done = virt_install(host, "-n", "hpxe", "-r", "128", "--hvm", "--pxe", "--disk", "size=0.1",
                        "--noautoconsole")
    assert done.returncode == 0, done.stderr + done.stdout
    assert "VNC console of hpxe" in done.stdout
    assert (host.paths.images_dir / "hpxe.img").stat().st_size == int(0.1 * (1 << 30))
    final = (host.paths.root / "hpxe.cfg").read_text()
    assert "bridge=xenbr0" in final and "hda,w" in final and "vncunused = 1" in final
    assert "hpxe" in host.domains()
