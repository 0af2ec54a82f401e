"""Boot media for Debian's unmodified installer in an HVM guest: a bootable ISO and a TFTP tree,
both made from the files of Debian's debian-installer-12-netboot-amd64 package.

The package is a netboot tree (pxelinux.0, ldlinux.c32, pxelinux.cfg/default and
debian-installer/amd64/{linux,initrd.gz,boot-screens/}); the installer's own syslinux menu
(boot-screens/syslinux.cfg, "Debian GNU/Linux installer menu (BIOS mode)") names its files
relative to the tree's top. So:

- the TFTP tree is that tree as it is (symbolic links to the package's files, so it takes no
  space and follows package upgrades): pxelinux.0 is what DHCP names as the boot file, and
  pxelinux reads pxelinux.cfg/default;
- the ISO is the same tree plus Debian's isolinux (isolinux.bin from the isolinux package,
  ldlinux.c32 from syslinux-common, the same build as the package's own) and an isolinux.cfg
  that hands over to the installer's syslinux.cfg with the ISO's root as working directory
  (syslinux's ``CONFIG file dir``), written as an El Torito no-emulation image by xorriso.

Both are built once into the cache (``$PYXEN_CACHE/installer/``, pyxen.paths.cache_dir()) and
rebuilt when the package's version.info changes. Tests and ``virt-install --cdrom/--pxe`` use
them; nothing else in pyxen does.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..paths import cache_dir

#: Where debian-installer-12-netboot-amd64 puts its text-mode netboot tree.
NETBOOT = Path("/usr/lib/debian-installer/images/12/amd64/text")
#: The installer's kernel and initrd, relative to the tree's top (what its menu names).
KERNEL = "debian-installer/amd64/linux"
INITRD = "debian-installer/amd64/initrd.gz"
#: The installer's own syslinux configuration, relative to the tree's top.
MENU_CFG = "debian-installer/amd64/boot-screens/syslinux.cfg"
#: Debian's isolinux (package isolinux) and the BIOS syslinux modules (syslinux-common).
ISOLINUX_BIN = Path("/usr/lib/ISOLINUX/isolinux.bin")
SYSLINUX_BIOS = Path("/usr/lib/syslinux/modules/bios")
XORRISO = "xorriso"
#: The ISO's volume id (what blkid and the installer's cdrom detection see).
VOLUME_ID = "PYXEN_DI_12_AMD64"
#: Bound on xorriso writing a ~60 MB image.
XORRISO_TIMEOUT = 300.0


class MediaError(RuntimeError):
    """The installer's files or a tool to build the media is missing, or the tool failed."""


def isolinux_cfg() -> str:
    """/isolinux/isolinux.cfg: straight on (no prompt) to the installer's own menu, with the
    ISO's root as the working directory, since that menu names everything relative to the
    tree's top. CONFIG is a kernel-like directive (a label's), and its second word is the new
    working directory (syslinux 5 and later)."""
    return ("# pyxen: Debian's netboot installer menu, unchanged; its paths are relative to /.\n"
            "prompt 0\ntimeout 0\ndefault installer\nlabel installer\n"
            f"  config /{MENU_CFG} /\n")


def xorriso_argv(tree: Path, iso: Path) -> list[str]:
    """xorriso in mkisofs mode: an ISO 9660 image with Rock Ridge and Joliet names, symbolic
    links followed (the package's tree has some), isolinux as the El Torito no-emulation boot
    image with its boot info table (isolinux.bin needs it to find itself)."""
    return [XORRISO, "-as", "mkisofs", "-quiet", "-o", str(iso), "-V", VOLUME_ID, "-iso-level", "3",
            "-R", "-J", "-follow-links",
            "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat",
            "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table", str(tree)]


def _check_netboot(netboot: Path) -> str:
    """The package's version.info (what the cached media were built from).

    :raise MediaError: the package is not installed."""
    for rel in (KERNEL, INITRD, MENU_CFG, "pxelinux.0", "ldlinux.c32", "pxelinux.cfg/default"):
        if not (netboot / rel).exists():
            raise MediaError(f"{netboot / rel}: missing (install Debian's debian-installer-12-netboot-amd64)")
    info = netboot / "version.info"
    text = info.read_text() if info.exists() else ""
    st = (netboot / INITRD).stat()
    return f"{text.strip()}\ninitrd {st.st_size} {int(st.st_mtime)}\n"


def _fresh(stamp: Path, want: str, *outputs: Path) -> bool:
    return all(p.exists() for p in outputs) and stamp.exists() and stamp.read_text() == want


def build_tftp_tree(dest: Path | None = None, netboot: Path = NETBOOT) -> Path:
    """A TFTP root serving the installer over PXE (DHCP's boot file: ``pxelinux.0``): each
    top-level entry of the package's tree as a symbolic link into it. ``dest`` default:
    ``<cache>/installer/tftp``. Returns ``dest``.

    :raise MediaError:"""
    want = _check_netboot(netboot)
    dest = dest or cache_dir() / "installer" / "tftp"
    stamp = dest / ".pyxen-stamp"
    if _fresh(stamp, want, dest / "pxelinux.0"):
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    for entry in sorted(netboot.iterdir()):
        link = dest / entry.name
        if link.is_dir() and not link.is_symlink():
            shutil.rmtree(link)
        # Links to the resolved target: dnsmasq follows them, and the package's own top-level
        # links are relative (pxelinux.0 -> debian-installer/amd64/pxelinux.0). Made aside and
        # renamed over the old one, so two builders at once both succeed.
        tmp = dest / f".{entry.name}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(entry.resolve())
        os.replace(tmp, link)
    stamp.write_text(want)
    return dest


def build_iso(dest: Path | None = None, netboot: Path = NETBOOT) -> Path:
    """The installer as a bootable CD image (isolinux, El Torito), built once: ``dest`` default
    ``<cache>/installer/debian-12-netboot-amd64.iso``. Returns the image's path.

    :raise MediaError:"""
    want = _check_netboot(netboot)
    for need in (ISOLINUX_BIN, SYSLINUX_BIOS / "ldlinux.c32"):
        if not need.exists():
            raise MediaError(f"{need}: missing (install Debian's isolinux and syslinux-common)")
    want += f"isolinux {hashlib.sha256(ISOLINUX_BIN.read_bytes()).hexdigest()}\n{isolinux_cfg()}"
    iso = dest or cache_dir() / "installer" / "debian-12-netboot-amd64.iso"
    stamp = iso.with_name(iso.name + ".stamp")
    if _fresh(stamp, want, iso):
        return iso
    iso.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pyxen-iso-", dir=iso.parent) as tmp:
        tree = Path(tmp) / "tree"
        tree.mkdir()
        (tree / "debian-installer").symlink_to(netboot / "debian-installer")
        (tree / "version.info").symlink_to(netboot / "version.info")
        boot = tree / "isolinux"
        boot.mkdir()
        # isolinux.bin is patched in place by -boot-info-table: a copy, not a link.
        shutil.copyfile(ISOLINUX_BIN, boot / "isolinux.bin")
        (boot / "ldlinux.c32").symlink_to(SYSLINUX_BIOS / "ldlinux.c32")
        (boot / "isolinux.cfg").write_text(isolinux_cfg())
        out = Path(tmp) / iso.name
        argv = xorriso_argv(tree, out)
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=XORRISO_TIMEOUT)
        except FileNotFoundError:
            raise MediaError(f"cannot run {XORRISO} (install Debian's xorriso)") from None
        except subprocess.TimeoutExpired:
            raise MediaError(f"{XORRISO} did not finish in {XORRISO_TIMEOUT:g} s") from None
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
            raise MediaError(f"{XORRISO}: {last}")
        os.replace(out, iso)
    stamp.write_text(want)
    return iso
