"""Debian guest images the xen-tools way: ``pyxen image create`` (xen-create-image's model).

The pipeline, in xen-tools' order (docs/guests.md section 2): check the names are free, build the
guest's root tree, customise it (hostname, network, fstab, password, the guest agent, a GRUB 2
config the guest keeps up to date itself, roles), create the volumes and write the tree onto the
root volume, write the xl config. Unlike xen-tools nothing is mounted: the tree is made in a
temporary folder and ``mkfs.ext4 -d`` writes it into the new filesystem (a bare filesystem, no
partition table, as xen-tools makes them, so pygrub reads it at offset 0).

The slow part is debootstrap (about a minute, from the Debian archive this host's apt uses). Its
result, the installed base with the kernel, is kept as a tarball in the image cache keyed by
release, architecture, mirror and package list; the next image of that release unpacks it in
seconds. Whatever fails, the volumes and config made so far are removed (unless ``keep``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import string
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator, TextIO

from ..paths import cache_dir
from ..storage import lvm

#: The releases this builder knows: xen-tools' names (and ``stable``) -> Debian's codename.
RELEASES = {"bookworm": "bookworm", "stable": "bookworm", "12": "bookworm"}
#: Debian's package architecture for this machine.
ARCH = "amd64"
#: What debootstrap adds to its minbase variant: an init (systemd), udev (device units: the
#: serial getty waits for dev-ttyS0.device), the network (networkd is part of systemd; iproute2
#: for the agent), D-Bus (systemd's companions expect it), and a stock Debian kernel whose
#: virtio drivers are modules.
PACKAGES = ("systemd-sysv", "udev", "dbus", "iproute2", "linux-image-cloud-amd64")
#: Modules the guest's initramfs must hold to find its root filesystem and its devices.
INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "virtio_console", "ext4")
#: The kernel command line of every grub.cfg entry after ``root=UUID=... ro``: the serial console
#: (systemd starts serial-getty@ttyS0 for it) and the kernel's own NIC names (eth0, not enX0).
CMDLINE = "console=ttyS0 net.ifnames=0"
GRUB_TIMEOUT = 5
#: Seconds each external step may take (debootstrap fetches over the network).
TIMEOUTS = {"debootstrap": 1800.0, "chroot": 600.0, "tar": 600.0, "mkfs": 600.0, "default": 120.0}
HASH_METHODS = {"md5": "-1", "sha256": "-5", "sha512": "-6"}
SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY = "http://deb.debian.org/debian-security"
VERSION = "1.0"


class ImageError(Exception):
    """The image could not be made; the message is one line naming what is wrong."""


# -- parsing -----------------------------------------------------------------------------------

def parse_size(text: str, what: str = "size") -> int:
    """xen-tools' sizes: a number with M/MB/G/GB (any case), no unit = MB. Returns bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([mMgG][bB]?)?\s*", text)
    if not m:
        raise ImageError(f"invalid {what} '{text}' (a number with M, MB, G or GB)")
    unit = (m.group(2) or "M")[0].upper()
    value = float(m.group(1)) * (1 << (30 if unit == "G" else 20))
    if value < (1 << 20):
        raise ImageError(f"invalid {what} '{text}' (at least 1M)")
    return int(value) // (1 << 20) << 20


def release_of(dist: str) -> str:
    """The Debian codename for ``--dist``."""
    try:
        return RELEASES[dist]
    except KeyError:
        raise ImageError(f"unsupported distribution '{dist}' (known: {', '.join(sorted(RELEASES))})") from None


def mirror_from_sources(text: str, security: bool = False) -> str | None:
    """The Debian archive a sources file names: deb822 (``URIs:`` of a stanza whose suites are
    not the security ones) or one-line ``deb URI suite ...``. With ``security``, the archive of
    the ``-security`` suites instead. None if it names none."""
    def wanted(suites: list[str]) -> bool:
        return bool(suites) and all(s.endswith("-security") for s in suites) == security
    if re.search(r"(?mi)^\s*URIs\s*:", text):
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                m = re.match(r"([A-Za-z-]+)\s*:\s*(.*)", line)
                if m and not line.lstrip().startswith("#"):
                    fields[m.group(1).lower()] = m.group(2).strip()
            types = fields.get("types", "deb").split()
            if fields.get("enabled", "yes").lower() == "no" or "deb" not in types:
                continue
            uris = fields.get("uris", "").split()
            if uris and wanted(fields.get("suites", "").split()):
                return uris[0].rstrip("/")
        return None
    for line in text.splitlines():
        parts = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
        if len(parts) >= 3 and parts[0] == "deb" and wanted([parts[2]]):
            return parts[1].rstrip("/")
    return None


def host_mirror(sources: tuple[Path, ...] = SOURCES, security: bool = False) -> str:
    """The archive this host's apt uses (the only network the build touches), or with
    ``security`` its security archive."""
    for path in sources:
        try:
            found = mirror_from_sources(path.read_text(), security)
        except OSError:
            continue
        if found:
            return found
    return DEFAULT_SECURITY if security else DEFAULT_MIRROR


def apt_sources(release: str, mirror: str, security: str) -> str:
    """The guest's /etc/apt/sources.list: the release, its updates and its security suite, so
    that ``apt upgrade`` inside the guest brings kernel updates (and pygrub then boots them)."""
    return (f"deb {mirror} {release} main\ndeb {mirror} {release}-updates main\n"
            f"deb {security} {release}-security main\n")


def xen_tools_mac(hostname: str, ips: list[str], dhcp: bool, dist: str) -> str:
    """xen-create-image's deterministic MAC: 00:16:3E and the first three bytes of
    md5_hex(hostname . join(',', ips) . dhcp . dist), upper case."""
    digest = hashlib.md5(f"{hostname}{','.join(ips)}{'1' if dhcp else ''}{dist}".encode()).hexdigest()
    return "00:16:3E:" + ":".join(digest[i:i + 2] for i in (0, 2, 4)).upper()


def check_mac(mac: str) -> str:
    if not re.fullmatch(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}", mac) or int(mac[:2], 16) & 1:
        raise ImageError(f"invalid MAC address '{mac}'")
    return mac


def genpass(length: int) -> str:
    """A random root password of letters and digits (xen-tools' --genpass)."""
    if length < 1:
        raise ImageError(f"invalid --genpass_len {length}")
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def hash_password(password: str, method: str = "sha512") -> str:
    """crypt(3) hash for /etc/shadow: md5 $1$, sha256 $5$, sha512 $6$ (openssl passwd)."""
    if method not in HASH_METHODS:
        raise ImageError(f"invalid --hash_method '{method}' (md5, sha256 or sha512)")
    out = _run(["openssl", "passwd", HASH_METHODS[method], "-stdin"], "hashing the password",
               input=password + "\n").strip()
    if not out.startswith("$"):
        raise ImageError(f"openssl passwd gave no crypt hash: {out!r}")
    return out


def set_shadow_password(shadow: str, user: str, hashed: str) -> str:
    """/etc/shadow's text with ``user``'s password field replaced (last change set to today)."""
    lines = shadow.splitlines()
    for i, line in enumerate(lines):
        parts = line.split(":")
        if parts[0] == user and len(parts) >= 3:
            parts[1] = hashed
            parts[2] = str(int(time.time() // 86400))
            lines[i] = ":".join(parts)
            return "\n".join(lines) + "\n"
    raise ImageError(f"no {user} in /etc/shadow")


# -- the request -------------------------------------------------------------------------------

@dataclass
class ImageSpec:
    """What ``pyxen image create`` was asked for (xen-create-image's options)."""

    hostname: str
    dist: str = "bookworm"
    size: int = 4 << 30
    swap: int | None = 512 << 20
    memory: int = 256 << 20
    vcpus: int = 1
    lvm: str | None = None
    dir: Path | None = None
    ips: list[str] = field(default_factory=list)
    dhcp: bool = False
    gateway: str | None = None
    netmask: str | None = None
    nameservers: list[str] = field(default_factory=list)
    mac: str | None = None
    bridge: str = "xenbr0"
    password: str | None = None
    genpass_len: int = 23
    hash_method: str = "sha512"
    roles: list[str] = field(default_factory=list)
    roledir: Path = Path("/etc/xen-tools/role.d")
    output: Path = Path("/etc/xen")
    extension: str = ".cfg"
    force: bool = False
    keep: bool = False
    verbose: bool = False
    mirror: str | None = None

    def validate(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", self.hostname):
            raise ImageError(f"invalid hostname '{self.hostname}'")
        release_of(self.dist)
        if (self.lvm is None) == (self.dir is None):
            raise ImageError("exactly one of --lvm and --dir is required")
        if self.lvm is not None:
            lvm.check_name("volume group", self.lvm)
        if self.ips and self.dhcp:
            raise ImageError("--ip and --dhcp exclude each other")
        if not self.ips and not self.dhcp:
            raise ImageError("give --ip or --dhcp")
        for ip in self.ips:
            if not re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}(/\d{1,2})?", ip):
                raise ImageError(f"invalid --ip '{ip}'")
        if self.vcpus < 1:
            raise ImageError(f"invalid --vcpus {self.vcpus}")
        if self.mac is not None:
            check_mac(self.mac)
        if self.hash_method not in HASH_METHODS:
            raise ImageError(f"invalid --hash_method '{self.hash_method}' (md5, sha256 or sha512)")
        if self.size < (512 << 20):
            raise ImageError("--size must be at least 512M (the base system needs about 450M)")

    @property
    def release(self) -> str:
        return release_of(self.dist)

    @property
    def mac_address(self) -> str:
        return self.mac or xen_tools_mac(self.hostname, self.ips, self.dhcp, self.dist)

    @property
    def cfg_path(self) -> Path:
        return self.output / f"{self.hostname}{self.extension}"

    def volumes(self) -> list[tuple[str, str, int]]:
        """(name, xl target with its prefix, size) in xen-tools' order: the root disk, then swap."""
        vols = [("disk", self.size)] + ([("swap", self.swap)] if self.swap else [])
        out = []
        for name, size in vols:
            if self.lvm is not None:
                out.append((name, f"phy:/dev/{self.lvm}/{self.hostname}-{name}", size))
            else:
                assert self.dir is not None
                out.append((name, f"file:{self.dir}/domains/{self.hostname}/{name}.img", size))
        return out


def prefix_len(netmask: str | None) -> int:
    """A dotted netmask (or a bare prefix length) as a prefix length; /24 when none is given."""
    if not netmask:
        return 24
    if netmask.isdigit():
        return int(netmask)
    bits = "".join(f"{int(o):08b}" for o in netmask.split("."))
    if len(bits) != 32 or "01" in bits:
        raise ImageError(f"invalid --netmask '{netmask}'")
    return bits.count("1")


# -- what goes into the guest ------------------------------------------------------------------

def xl_cfg(spec: ImageSpec, when: str | None = None) -> str:
    """The xl config xen-tools' xm.tmpl writes (docs/guests.md 2.4), with pygrub."""
    when = when or time.strftime("%a %b %d %H:%M:%S %Y")
    vols = spec.volumes()
    # xen-tools numbers the devices by the order of its partitions (swap first, then /), and
    # lists the root volume first.
    order = {"swap": 1, "disk": 2} if spec.swap else {"disk": 1}
    lines = [
        f"# Configuration file for the Xen instance {spec.hostname}, created",
        f"# by pyxen image create {VERSION} on {when}.",
        "#",
        "",
        "#",
        "#  Kernel + memory size",
        "#",
        "bootloader = 'pygrub'",
        "",
        f"vcpus       = '{spec.vcpus}'",
        f"memory      = '{spec.memory >> 20}'",
        "",
        "#",
        "#  Disk device(s).",
        "#",
        # (xen-tools' `root = '/dev/xvda2 ro'` line is left out: libxl hands root= and extra= to
        # pygrub as --args, which appends them to the grub.cfg entry's own root=UUID=..., and in
        # a pyxen guest the disks are virtio ones, vdX, so /dev/xvda2 would name nothing.)
        "disk        = [",
    ]
    for name, target, _ in vols:
        lines.append(f"                  '{target},xvda{order[name]},w',")
    lines += ["              ]", "", "#", "#  Physical volumes", "#", "", "#", "#  Hostname", "#",
              f"name        = '{spec.hostname}'", "", "#", "#  Networking", "#"]
    if spec.dhcp:
        lines += ["dhcp        = 'dhcp'", f"vif         = [ 'mac={spec.mac_address},bridge={spec.bridge}' ]"]
    else:
        ips = "".join(f"{ip.split('/')[0]} " for ip in spec.ips)
        lines.append(f"vif         = [ 'ip={ips},mac={spec.mac_address},bridge={spec.bridge}' ]")
    lines += ["", "#", "#  Behaviour", "#", "on_poweroff = 'destroy'", "on_reboot   = 'restart'",
              "on_crash    = 'restart'", "", ""]
    return "\n".join(lines)


def network_unit(spec: ImageSpec) -> str:
    """systemd-networkd's eth0.network: DHCP, or the static address with gateway and DNS."""
    lines = ["[Match]", "Name=eth0", "", "[Network]"]
    if spec.dhcp:
        lines.append("DHCP=ipv4")
    else:
        for ip in spec.ips:
            lines.append(f"Address={ip if '/' in ip else f'{ip}/{prefix_len(spec.netmask)}'}")
        if spec.gateway:
            lines.append(f"Gateway={spec.gateway}")
    lines += [f"DNS={ns}" for ns in spec.nameservers]
    return "\n".join(lines) + "\n"


def fstab(root_uuid: str, swap_uuid: str | None) -> str:
    lines = ["# /etc/fstab: static file system information (written by pyxen image create).",
             "# <file system>  <mount point>  <type>  <options>  <dump>  <pass>",
             f"UUID={root_uuid}  /  ext4  errors=remount-ro  0  1"]
    if swap_uuid:
        lines.append(f"UUID={swap_uuid}  none  swap  sw  0  0")
    return "\n".join(lines) + "\n"


def grub_defaults(timeout: int = GRUB_TIMEOUT, cmdline: str = CMDLINE) -> str:
    return ("# Read by pyxen-update-grub, which writes /boot/grub/grub.cfg for pygrub.\n"
            f"GRUB_TIMEOUT={timeout}\nGRUB_DISTRIBUTOR=Debian\nGRUB_CMDLINE_LINUX=\"{cmdline}\"\n")


def guest_file(name: str) -> bytes:
    """A file shipped for the guest (src/pyxen/images/guest/ or the agent script)."""
    base = resources.files("pyxen.images")
    return (base / name).read_bytes() if name == "xs-agent.sh" else (base / "guest" / name).read_bytes()


def update_grub(tree: Path) -> str:
    """Run the guest's own grub.cfg generator on ``tree`` (the same script its kernel hooks run)."""
    script = tree / "usr/sbin/pyxen-update-grub"
    _run(["sh", str(script), str(tree)], "writing /boot/grub/grub.cfg")
    return (tree / "boot/grub/grub.cfg").read_text()


def grub_entries(cfg: str) -> list[dict[str, str]]:
    """The menu entries of a grub.cfg as this module writes it: title, kernel, args, initrd."""
    entries = []
    for m in re.finditer(r"menuentry '([^']*)' \{(.*?)\n\}", cfg, re.S):
        entry = {"title": m.group(1)}
        for line in m.group(2).splitlines():
            words = line.split(None, 2)
            if words and words[0] == "linux":
                entry["kernel"] = words[1]
                entry["args"] = words[2] if len(words) > 2 else ""
            elif words and words[0] == "initrd":
                entry["initrd"] = words[1]
        entries.append(entry)
    return entries


# -- running things ----------------------------------------------------------------------------

def _run(argv: list[str], what: str, timeout: float | None = None, input: str | None = None,
         env: dict[str, str] | None = None) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, input=input, env=env,
                              timeout=timeout or TIMEOUTS["default"])
    except FileNotFoundError:
        raise ImageError(f"{what}: {argv[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise ImageError(f"{what}: {argv[0]} did not finish within {timeout or TIMEOUTS['default']:.0f} s") from None
    if done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or [""]
        raise ImageError(f"{what}: {' '.join(argv[:2])} exited {done.returncode}: {tail[0]}")
    return done.stdout


Report = Callable[[int | None, str], None]


def progress_printer(out: TextIO | None = None) -> Report:
    """One status line per step, with a percentage where the step is known."""
    stream = out or sys.stdout

    def report(pct: int | None, text: str) -> None:
        stream.write(f"[{pct:3d}%] {text}\n" if pct is not None else f"       {text}\n")
        stream.flush()
    return report


def base_key(release: str, arch: str, mirror: str, packages: tuple[str, ...] = PACKAGES) -> str:
    """The cache key of an installed base: what makes two bases differ."""
    text = "\n".join([release, arch, mirror, *sorted(packages), *INITRAMFS_MODULES, "1"])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def base_tarball(release: str, arch: str, mirror: str, cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / "debian" / f"{release}-{arch}-{base_key(release, arch, mirror)}.tar.zst"


def debootstrap(tree: Path, release: str, mirror: str, cache: Path, report: Report, verbose: bool) -> None:
    """debootstrap the minbase variant with PACKAGES into ``tree``, showing its steps."""
    debs = cache / "debian" / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    argv = ["debootstrap", "--variant=minbase", f"--arch={ARCH}", f"--include={','.join(PACKAGES)}",
            f"--cache-dir={debs}", release, str(tree), mirror]
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except FileNotFoundError:
        raise ImageError("debootstrap not found (apt-get install debootstrap)") from None
    # A watchdog, since a stalled download prints nothing for the loop below to notice.
    watchdog = threading.Timer(TIMEOUTS["debootstrap"], proc.kill)
    watchdog.start()
    seen: set[str] = set()
    last: list[str] = []
    assert proc.stdout is not None
    # debootstrap's "I: <Verb>ing <package>..." lines: the verb is the phase shown.
    pct = {"Retrieving": 12, "Validating": 14, "Extracting": 20, "Installing": 26, "Unpacking": 32,
           "Configuring": 40}
    shown = 0
    for line in proc.stdout:
        line = line.rstrip()
        last = (last + [line])[-5:]
        if verbose:
            report(None, line)
        m = re.match(r"I: (Retrieving|Validating|Extracting|Installing|Unpacking|Configuring)\b", line)
        if m and m.group(1) not in seen:
            # Each phase once: they come round twice (the required packages, then the rest),
            # and retrieving and validating alternate package by package.
            seen.add(m.group(1))
            shown = max(shown, pct[m.group(1)])
            report(shown, f"debootstrap: {m.group(1).lower()} packages")
    status = proc.wait()
    if not watchdog.is_alive():
        raise ImageError(f"debootstrap did not finish within {TIMEOUTS['debootstrap']:.0f} s")
    watchdog.cancel()
    if status != 0:
        raise ImageError(f"debootstrap {release} from {mirror} failed: {' | '.join(last[-2:])}")


def chroot(tree: Path, *argv: str, what: str) -> str:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
    return _run(["chroot", str(tree), *argv], what, timeout=TIMEOUTS["chroot"], env=env)


def build_base(tree: Path, release: str, mirror: str, cache: Path, report: Report, verbose: bool) -> None:
    """The cold path: debootstrap, an initramfs with the virtio modules, no package cache."""
    debootstrap(tree, release, mirror, cache, report, verbose)
    report(45, "initramfs: adding " + " ".join(INITRAMFS_MODULES))
    modules = tree / "etc/initramfs-tools/modules"
    modules.write_text(modules.read_text() + "".join(f"{m}\n" for m in INITRAMFS_MODULES)
                       if modules.exists() else "".join(f"{m}\n" for m in INITRAMFS_MODULES))
    chroot(tree, "update-initramfs", "-u", "-k", "all", what="update-initramfs")
    for initrd in sorted((tree / "boot").glob("initrd.img-*")):
        kver = initrd.name.removeprefix("initrd.img-")
        listing = chroot(tree, "lsinitramfs", f"/boot/{initrd.name}", what="lsinitramfs")
        builtin = (tree / "lib/modules" / kver / "modules.builtin").read_text()
        if missing := initramfs_missing(listing, builtin):
            raise ImageError(f"the initramfs of {kver} lacks {', '.join(missing)}")
    chroot(tree, "apt-get", "clean", what="apt-get clean")
    for leftover in ("var/lib/apt/lists",):
        for p in (tree / leftover).glob("*_*"):
            p.unlink()


def initramfs_missing(listing: str, builtin: str) -> list[str]:
    """INITRAMFS_MODULES neither in an initramfs (``lsinitramfs``'s listing) nor built into
    the kernel (its modules.builtin). Names compare with - and _ alike, as modprobe does."""
    def norm(path: str) -> str:
        return path.rsplit("/", 1)[-1].split(".ko")[0].replace("-", "_")
    have = {norm(p) for p in listing.split() if ".ko" in p} | {norm(p) for p in builtin.split()}
    return [m for m in INITRAMFS_MODULES if m not in have]


def unpack(tarball: Path, tree: Path) -> None:
    _run(["tar", "--zstd", "--numeric-owner", "--xattrs", "-xpf", str(tarball), "-C", str(tree)],
         f"unpacking {tarball}", timeout=TIMEOUTS["tar"])


def pack(tree: Path, tarball: Path) -> None:
    """Keep the installed base; written aside and renamed, so readers never see half of it."""
    tarball.parent.mkdir(parents=True, exist_ok=True)
    tmp = tarball.with_name(f".{tarball.name}.{os.getpid()}")
    try:
        _run(["tar", "--zstd", "--numeric-owner", "--xattrs", "-cf", str(tmp), "-C", str(tree), "."],
             f"caching the base in {tarball}", timeout=TIMEOUTS["tar"])
        tmp.rename(tarball)
    finally:
        tmp.unlink(missing_ok=True)


def _write(path: Path, text: str | bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    path.chmod(mode)


def _enable(tree: Path, unit: str, target: str = "multi-user.target", unit_dir: str = "lib/systemd/system") -> None:
    """``systemctl enable``'s symlink, made by hand (no systemd runs in the tree)."""
    wants = tree / "etc/systemd/system" / f"{target}.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / unit
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(f"/{unit_dir}/{unit}")


def customise(tree: Path, spec: ImageSpec, root_uuid: str, swap_uuid: str | None, hashed: str) -> None:
    """xen-tools' hooks, done on the tree: names, network, fstab, password, agent, GRUB config."""
    host = spec.hostname
    _write(tree / "etc/hostname", f"{host}\n")
    addr = spec.ips[0].split("/")[0] if spec.ips else "127.0.1.1"
    _write(tree / "etc/hosts", f"127.0.0.1\tlocalhost\n{addr}\t{host}\n\n"
           "::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n")
    _write(tree / "etc/machine-id", uuid.uuid4().hex + "\n", 0o444)
    _write(tree / "etc/fstab", fstab(root_uuid, swap_uuid))
    _write(tree / "etc/apt/sources.list", apt_sources(spec.release, spec.mirror or host_mirror(),
                                                      host_mirror(security=True)))
    _write(tree / "etc/systemd/network/eth0.network", network_unit(spec))
    _enable(tree, "systemd-networkd.service")
    if spec.nameservers:
        _write(tree / "etc/resolv.conf", "".join(f"nameserver {ns}\n" for ns in spec.nameservers))
    shadow = tree / "etc/shadow"
    _write(shadow, set_shadow_password(shadow.read_text(), "root", hashed), 0o640)
    # The guest agent and its unit.
    _write(tree / "usr/sbin/pyxen-guest-agent", guest_file("xs-agent.sh"), 0o755)
    _write(tree / "etc/systemd/system/pyxen-guest-agent.service", guest_file("pyxen-guest-agent.service"))
    _enable(tree, "pyxen-guest-agent.service", unit_dir="etc/systemd/system")
    # GRUB 2's config for pygrub, kept current by the kernel packages' hooks.
    _write(tree / "usr/sbin/pyxen-update-grub", guest_file("pyxen-update-grub"), 0o755)
    _write(tree / "etc/default/pyxen-grub", grub_defaults())
    for hook in ("postinst.d", "postrm.d"):
        _write(tree / "etc/kernel" / hook / "zz-pyxen-update-grub", guest_file("zz-pyxen-update-grub"), 0o755)
    update_grub(tree)


def run_roles(tree: Path, spec: ImageSpec, report: Report) -> None:
    """``<roledir>/<role> <mountpoint>`` for each role, as xen-tools runs them (here the
    mountpoint is the tree that becomes the filesystem)."""
    for role in spec.roles:
        script = spec.roledir / role
        if not script.is_file():
            raise ImageError(f"role script {script} not found")
        if not os.access(script, os.X_OK):
            report(None, f"Role script not executable : {script}")
            continue
        report(None, f"role {role}")
        env = dict(os.environ, hostname=spec.hostname, dist=spec.release)
        _run([str(script), str(tree)], f"role {role}", timeout=TIMEOUTS["chroot"], env=env)


def default_entry(tree: Path) -> tuple[str, str, str]:
    """The kernel, initrd and args of grub.cfg's first entry, as the guest names them (what
    pygrub will boot)."""
    entries = grub_entries((tree / "boot/grub/grub.cfg").read_text())
    if not entries or "initrd" not in entries[0]:
        raise ImageError("grub.cfg has no entry with a kernel and an initrd")
    return entries[0]["kernel"], entries[0]["initrd"], entries[0]["args"]


# -- storage -----------------------------------------------------------------------------------

class Undo:
    """What was made so far, removed in reverse order on failure (xen-delete-image's part)."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, Callable[[], None]]] = []

    def add(self, what: str, fn: Callable[[], None]) -> None:
        self.steps.append((what, fn))

    def run(self, report: Report) -> None:
        for what, fn in reversed(self.steps):
            try:
                fn()
                report(None, f"removed {what}")
            except Exception as err:  # noqa: BLE001 - cleanup goes on, and says what stayed
                report(None, f"could not remove {what}: {err}")


def check_free(spec: ImageSpec) -> None:
    """xen-tools' refusals, before anything is made."""
    if spec.cfg_path.exists() and not spec.force:
        raise ImageError(f"The Xen configuration file {spec.cfg_path} exists")
    if spec.lvm is not None:
        if spec.lvm not in lvm.volume_groups():
            raise ImageError(f"volume group {spec.lvm} not found")
        existing = {lv.name for lv in lvm.lvs(spec.lvm)}
        for name, _, _ in spec.volumes():
            lv = f"{spec.hostname}-{name}"
            if lv in existing and not spec.force:
                raise ImageError(f"logical volume {spec.lvm}/{lv} already exists.  Aborting.")
    else:
        for _, target, _ in spec.volumes():
            if Path(target.split(":", 1)[1]).exists() and not spec.force:
                raise ImageError(f"The partition image {target.split(':', 1)[1]} already exists.  Aborting.")


def make_volume(spec: ImageSpec, name: str, target: str, size: int, undo: Undo) -> Path:
    """Create one volume (an LV, or a sparse file of exactly ``size`` bytes) and return its path."""
    if spec.lvm is not None:
        lv = f"{spec.hostname}-{name}"
        if spec.force and any(v.name == lv for v in lvm.lvs(spec.lvm)):
            lvm.lvremove(spec.lvm, lv)
        path = lvm.lvcreate(spec.lvm, lv, size)
        vg = spec.lvm
        undo.add(f"logical volume {vg}/{lv}", lambda: lvm.lvremove(vg, lv))
        return path
    path = Path(target.split(":", 1)[1])
    # The topmost folder this makes (DIR/domains or DIR/domains/<host>), removed on failure.
    made_dir = next((p for p in reversed(path.parents) if not p.exists()), None)
    old_umask = os.umask(0o077)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.truncate(size)
    finally:
        os.umask(old_umask)
    undo.add(str(path), lambda: path.unlink(missing_ok=True))
    if made_dir is not None:
        top = made_dir
        undo.add(str(top), lambda: shutil.rmtree(top, ignore_errors=True))
    return path


# -- the whole thing ---------------------------------------------------------------------------

@dataclass
class Created:
    """What ``create`` made: the config, the volumes, and the boot entry pygrub will pick."""

    cfg: Path
    volumes: list[Path]
    password: str | None
    kernel: str
    ramdisk: str
    args: str
    cache_hit: bool
    seconds: float


def mounts_under(top: Path, table: str | None = None) -> list[str]:
    """Mount points at or below ``top`` in ``table`` (default /proc/mounts, which escapes
    blanks as \\040), deepest first."""
    found = []
    for line in (Path("/proc/mounts").read_text() if table is None else table).splitlines():
        point = line.split()[1].replace("\\040", " ")
        if point == str(top) or point.startswith(f"{top}/"):
            found.append(point)
    return sorted(found, key=len, reverse=True)


#: Room the work tree needs in memory (the base is about 450 MiB unpacked).
SCRATCH_ROOM = 2 << 30


def scratch_base(shm: Path = Path("/dev/shm")) -> Path:
    """Where the root tree is put together: tmpfs when it has room (unpacking the cached base
    there takes about a second, against ten on a busy disk, and debootstrap's dpkg is spared
    its fsyncs), else the image cache's tmp/ folder."""
    try:
        st = os.statvfs(shm)
        on_tmpfs = any(line.split()[1:3] == [str(shm), "tmpfs"]
                       for line in Path("/proc/mounts").read_text().splitlines())
    except OSError:
        on_tmpfs = False
    if on_tmpfs and st.f_bavail * st.f_frsize >= SCRATCH_ROOM:
        return shm
    return cache_dir() / "tmp"


@contextlib.contextmanager
def _scratch(spec: ImageSpec) -> Iterator[Path]:
    """A work folder, removed afterwards. debootstrap mounts /proc, /sys (and in a container
    binds /dev) inside its target and may leave them when it fails: those are unmounted first,
    and the folder is kept rather than removed through a mount that is still there."""
    base = scratch_base()
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"pyxen-image-{spec.hostname}-", dir=base))
    try:
        yield tmp
    finally:
        for point in mounts_under(tmp):
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=60)
        if not mounts_under(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def create(spec: ImageSpec, report: Report | None = None) -> Created:
    """Make the guest: root tree, volumes, filesystem, xl config. Raises ImageError."""
    report = report or progress_printer()
    t0 = time.monotonic()
    spec.validate()
    check_free(spec)
    release = spec.release
    mirror = (spec.mirror or host_mirror()).rstrip("/")
    cache = cache_dir()
    password = spec.password if spec.password is not None else genpass(spec.genpass_len)
    hashed = hash_password(password, spec.hash_method)
    undo = Undo()
    try:
        with _scratch(spec) as scratch:
            tree = scratch / "root"
            tree.mkdir()
            tarball = base_tarball(release, ARCH, mirror, cache)
            hit = tarball.exists()
            if hit:
                report(5, f"base system: cache hit, unpacking {tarball}")
                unpack(tarball, tree)
            else:
                report(5, f"base system: cache miss, debootstrap {release} ({ARCH}) from {mirror}")
                build_base(tree, release, mirror, cache, report, spec.verbose)
                report(50, f"base system: caching it as {tarball}")
                pack(tree, tarball)
            if not (tree / "bin/ls").exists():
                raise ImageError("the installed system has no /bin/ls")
            report(60, "customising: hostname, network (eth0), fstab, root password, guest agent, grub.cfg")
            root_uuid = str(uuid.uuid4())
            swap_uuid = str(uuid.uuid4()) if spec.swap else None
            customise(tree, spec, root_uuid, swap_uuid, hashed)
            run_roles(tree, spec, report)
            kernel, ramdisk, args = default_entry(tree)
            paths = []
            for name, target, size in spec.volumes():
                report(66 if name == "disk" else 68, f"creating {target} ({size >> 20} MiB)")
                path = make_volume(spec, name, target, size, undo)
                paths.append(path)
                if name == "swap":
                    _run(["mkswap", "-U", str(swap_uuid), str(path)], f"mkswap {path}")
            disk = paths[0]
            report(75, f"mkfs.ext4 -d: writing the root filesystem onto {disk}")
            _run(["mkfs.ext4", "-F", "-q", "-U", root_uuid, "-L", "root", "-d", str(tree), str(disk)],
                 f"mkfs.ext4 {disk}", timeout=TIMEOUTS["mkfs"])
        report(95, f"writing {spec.cfg_path}")
        spec.output.mkdir(parents=True, exist_ok=True)
        existed = spec.cfg_path.exists()
        spec.cfg_path.write_text(xl_cfg(spec))
        if not existed:
            cfg = spec.cfg_path
            undo.add(str(cfg), lambda: cfg.unlink(missing_ok=True))
    except BaseException as err:
        if not spec.keep:
            undo.run(report)
        if isinstance(err, (lvm.LvmError, OSError)):
            raise ImageError(str(err)) from err
        raise
    report(100, f"done in {time.monotonic() - t0:.1f} s")
    return Created(spec.cfg_path, paths, password, kernel, ramdisk, args, hit, time.monotonic() - t0)
