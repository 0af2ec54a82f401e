"""A guest's volumes the xen-tools way: create, resize, snapshot, remove and list them.

xen-tools (xen-create-image, xen-resize-guest, xen-delete-image) gives every guest two
volumes, named after its hostname: a swap volume and a root filesystem ("disk"), bare
filesystems with no partition table. With ``--lvm VG`` they are the logical volumes
``<host>-swap`` and ``<host>-disk`` (xl target ``phy:/dev/VG/<host>-disk``); with ``--dir DIR``
the files ``DIR/domains/<host>/swap.img`` and ``disk.img`` (``file:``), made with mode 0600.
The guest sees them as ``xvda<i+1>``, i being the volume's place in xen-tools' list (swap
first), so root is ``xvda2``, or ``xvda1`` with ``--noswap``. Sizes take xen-tools' units: M,
MB, G, GB in any case, a bare number being MB.

The first half of this module is pure (sizes, names, the plan of what a command will make, the
refusals it must give); the second half runs lvm2, mkfs, qemu-img and resize2fs. Every
refusal is a StorageError whose text is xen-tools' own message where xen-tools has one.
A volume in use by a running domain (asked of the toolstack: the backends' nodes in
xenstore) is never resized, removed or snapshotted underneath it.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, TypeVar

from ..paths import Paths
from . import lvm as lvm2
from .progress import Progress, QemuImgError, run_qemu_img

MiB = 1 << 20
#: xen-tools.conf as shipped: size = 4G, swap = 512M, fs = ext4.
DEFAULT_SIZE = "4G"
DEFAULT_SWAP = "512M"
DEFAULT_FS = "ext4"
#: xen-tools' --disk_device default.
DISK_DEVICE = "xvda"
#: Seconds mkfs, mkswap, e2fsck and resize2fs may take on a volume.
TOOL_TIMEOUT = 600.0
#: Chunk written per step when an image is fully allocated.
ZERO_CHUNK = 4 * MiB
#: Room a qcow2 overlay on an LV needs beyond its virtual size for its metadata (L1/L2
#: tables: 8 bytes per 64 KiB cluster; refcount blocks: 2 bytes per cluster), doubled.
QCOW2_OVERHEAD_DIVISOR = 2048

_SIZE = re.compile(r"([0-9]+(?:\.[0-9]*)?)([mg]b?)?\Z", re.IGNORECASE)
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_SNAP = re.compile(r"[A-Za-z0-9+_.][A-Za-z0-9+_.-]*\Z")

T = TypeVar("T")
ProgressFactory = Callable[[str, int], Progress]
Log = Callable[[str], None]


class StorageError(RuntimeError):
    """A storage command refused or failed; the text is one line (xen-tools' words where it
    has them)."""


class GuestRunning(StorageError):
    """The guest (or a domain using its volumes) is running."""


# ---- pure: sizes, names, plans ------------------------------------------------------------
def parse_size(text: str | int, option: str = "size") -> int:
    """xen-tools' size: a number with M, MB, G or GB (any case), MB when bare; bytes, rounded
    up to a whole MiB (a disk is whole sectors, LVM whole extents). An int is bytes already."""
    if isinstance(text, int):
        value = text
    else:
        m = _SIZE.match(text.strip())
        if not m:
            raise StorageError(f"ERROR: '{option}' argument takes a suffixed (mb, MB, G, etc.) integer.")
        unit = (m.group(2) or "m")[0].lower()
        value = int(float(m.group(1)) * (1024 if unit == "g" else 1) * MiB)
    if value <= 0:
        raise StorageError(f"ERROR: '{option}' argument must be more than zero.")
    return -(-value // MiB) * MiB


def format_size(size: int) -> str:
    """Bytes as xen-tools writes sizes: whole GiB as ``4G``, else MiB as ``512M``."""
    if size % (1 << 30) == 0:
        return f"{size >> 30}G"
    return f"{-(-size // MiB)}M"


def check_hostname(hostname: str) -> None:
    """xen-tools' is_hostname: dot-separated labels of letters, digits and inner hyphens."""
    if not hostname or len(hostname) > 253 or not all(_LABEL.match(p) for p in hostname.split(".")):
        raise StorageError("ERROR: 'hostname' argument must be a valid hostname.")


@dataclass(frozen=True)
class Location:
    """Where a guest's volumes live: a volume group (``--lvm``) or a directory (``--dir``)."""

    lvm: str | None = None
    dir: Path | None = None

    def __post_init__(self) -> None:
        if (self.lvm is None) == (self.dir is None):
            raise StorageError("choose where the volumes are: one of --lvm VG or --dir DIR")
        if self.lvm is not None:
            try:
                lvm2.check_name("volume group", self.lvm)
            except lvm2.LvmError as err:
                raise StorageError(str(err)) from err

    @property
    def vg(self) -> str:
        """The volume group (``--lvm`` only)."""
        assert self.lvm is not None
        return self.lvm

    @property
    def kind(self) -> str:
        return "lvm" if self.lvm is not None else "dir"

    @property
    def prefix(self) -> str:
        """xen-tools' ``imagetype``: ``phy:`` for a logical volume, ``file:`` for an image."""
        return "phy:" if self.lvm is not None else "file:"

    def guest_dir(self, hostname: str) -> Path:
        """``DIR/domains/<host>`` (``--dir`` only)."""
        assert self.dir is not None
        return self.dir / "domains" / hostname

    def lv_name(self, hostname: str, name: str) -> str:
        return f"{hostname}-{name}"

    def path(self, hostname: str, name: str, suffix: str = ".img") -> Path:
        """The volume ``name`` of ``hostname``: /dev/VG/<host>-<name> or DIR/domains/<host>/<name>.img."""
        if self.lvm is not None:
            return Path("/dev") / self.lvm / self.lv_name(hostname, name)
        return self.guest_dir(hostname) / f"{name}{suffix}"

    def __str__(self) -> str:
        return f"volume group {self.lvm}" if self.lvm is not None else f"{self.dir}"


@dataclass(frozen=True)
class Volume:
    """One volume of a guest and how the guest's xl.cfg names it."""

    hostname: str
    #: "disk" (the root filesystem), "swap", or a snapshot's name.
    name: str
    path: Path
    size: int
    #: The guest's device (xvda2 for root, xvda1 for swap, as xen-tools numbers them).
    vdev: str
    #: What is made on it: "ext4" (or another mkfs type), "swap", or None (left raw).
    fs: str | None
    #: "phy:" or "file:"
    prefix: str = "phy:"
    #: "raw", or "qcow2" for an overlay.
    format: str = "raw"
    #: A qcow2 overlay's backing file (the disk).
    backing: Path | None = None

    @property
    def target(self) -> str:
        """The xl target: ``phy:/dev/vg0/web-disk``, ``file:/srv/xen/domains/web/disk.img``,
        ``qcow2:/srv/.../snap.qcow2`` (an overlay is served by QEMU, as qdisk)."""
        return f"qcow2:{self.path}" if self.format == "qcow2" else f"{self.prefix}{self.path}"

    @property
    def disk_spec(self) -> str:
        """The xl ``disk=`` entry, e.g. ``phy:/dev/vg0/web-disk,xvda2,w``."""
        if self.format == "qcow2":
            return f"format=qcow2,vdev={self.vdev},access=rw,target={self.path}"
        return f"{self.target},{self.vdev},w"


def plan(hostname: str, location: Location, size: str | int = DEFAULT_SIZE,
         swap: str | int | None = DEFAULT_SWAP, fs: str | None = DEFAULT_FS) -> list[Volume]:
    """The volumes ``create`` makes, root first (the order of xl's ``disk=`` lines); ``swap``
    None is ``--noswap``. Devices follow xen-tools' partition list, swap first: root is xvda2,
    swap xvda1; without swap root is xvda1."""
    check_hostname(hostname)
    disk_size = parse_size(size, "size")
    parts: list[tuple[str, int, str | None]] = []
    if swap is not None:
        parts.append(("swap", parse_size(swap, "swap"), "swap"))
    parts.append(("disk", disk_size, fs))
    if location.lvm is not None:
        for name, _, _ in parts:
            try:
                lvm2.check_name("logical volume", location.lv_name(hostname, name))
            except lvm2.LvmError as err:
                raise StorageError(str(err)) from err
    vols = [Volume(hostname, name, location.path(hostname, name), n, f"{DISK_DEVICE}{i + 1}", kind,
                   location.prefix) for i, (name, n, kind) in enumerate(parts)]
    return vols[::-1]


def disk_lines(volumes: Iterable[Volume]) -> str:
    """The ``disk = [...]`` block of the guest's xl.cfg, laid out as xen-tools' template does."""
    body = "".join(f"                  '{v.disk_spec}',\n" for v in volumes)
    return f"disk        = [\n{body}              ]\n"


def root_vdev(has_swap: bool) -> str:
    """The root volume's device: xvda2 after the swap, xvda1 without one."""
    return f"{DISK_DEVICE}{2 if has_swap else 1}"


#: ext2/3/4 superblock: at byte 1024; s_blocks_count_lo @4, s_log_block_size @24, s_magic @56,
#: s_feature_incompat @96 (INCOMPAT_64BIT 0x80), s_blocks_count_hi @336.
EXT_SUPERBLOCK = 1024
EXT_MAGIC = 0xEF53
EXT_INCOMPAT_64BIT = 0x80


def ext_size(superblock: bytes) -> int | None:
    """The size in bytes of the ext2/3/4 filesystem whose 1024-byte superblock this is (the
    bytes from offset 1024 of the volume), or None when it is no ext filesystem."""
    if len(superblock) < 340 or struct.unpack_from("<H", superblock, 56)[0] != EXT_MAGIC:
        return None
    blocks, log_block = struct.unpack_from("<II", superblock, 4)[0], struct.unpack_from("<I", superblock, 24)[0]
    if struct.unpack_from("<I", superblock, 96)[0] & EXT_INCOMPAT_64BIT:
        blocks |= struct.unpack_from("<I", superblock, 336)[0] << 32
    return int(blocks * (1024 << log_block))


def content_kind(head: bytes) -> str | None:
    """What the first 4 KiB of a volume hold: "ext" (ext2/3/4), "swap", "qcow2", or None."""
    if head[:4] == b"QFI\xfb":
        return "qcow2"
    if len(head) >= 4096 and head[4086:4096] in (b"SWAPSPACE2", b"SWAP-SPACE"):
        return "swap"
    if ext_size(head[EXT_SUPERBLOCK:EXT_SUPERBLOCK + 1024]) is not None:
        return "ext"
    return None


def qcow2_backing(header: bytes) -> str | None:
    """The backing file named in a qcow2 header (big-endian: magic, version, then
    backing_file_offset u64 at 8 and backing_file_size u32 at 16), or None."""
    if len(header) < 20 or header[:4] != b"QFI\xfb":
        return None
    offset, size = struct.unpack_from(">QI", header, 8)
    if not offset or not size or offset + size > len(header):
        return None
    return header[offset:offset + size].decode(errors="replace")


def _fs_of(kind: str | None) -> str | None:
    """A volume's ``fs`` from its content_kind (a qcow2 image holds no filesystem we read)."""
    return {"ext": "ext4", "swap": "swap"}.get(kind or "")


def check_resize(hostname: str, path: Path, current: int, wanted: int, fs_size: int | None) -> None:
    """Refuse any shrink: a filesystem cannot be cut from underneath, and xen-resize-guest
    only ever adds space. :raise StorageError:"""
    if wanted < current:
        what = (f"its filesystem fills {format_size(fs_size)}" if fs_size is not None and wanted < fs_size
                else "resize only grows a disk")
        raise StorageError(f"cannot shrink the disk of {hostname} ({path}) from {format_size(current)} to "
                           f"{format_size(wanted)}: {what}")


def check_snapshot_name(hostname: str, name: str) -> None:
    """A snapshot's name becomes an LV or file name; it must not take the disk's or swap's."""
    if not _SNAP.match(name) or name in ("disk", "swap") or len(name) > 64:
        raise StorageError(f"invalid snapshot name '{name}' for {hostname} (letters, digits, '+_.-'; not "
                           "'disk' or 'swap')")


# ---- commands ------------------------------------------------------------------------------
def _tool(argv: list[str], what: str, ok: tuple[int, ...] = (0,)) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    except FileNotFoundError as err:
        raise StorageError(f"{what}: {argv[0]} not found") from err
    except subprocess.TimeoutExpired as err:
        raise StorageError(f"{what}: {argv[0]} did not finish in {TOOL_TIMEOUT:.0f} s") from err
    if done.returncode not in ok:
        lines = [ln.strip() for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
        raise StorageError(f"{what}: {lines[-1] if lines else f'{argv[0]} exited {done.returncode}'}")
    return done.stdout


def _lvm(step: Callable[[], T]) -> T:
    try:
        return step()
    except lvm2.LvmError as err:
        raise StorageError(str(err)) from err


def _head(path: Path, n: int = 4096) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def _size_of(path: Path) -> int:
    with open(path, "rb") as f:
        return f.seek(0, os.SEEK_END)


def users(hostname: str, volumes: Iterable[Path], paths: Paths | None = None) -> list[str]:
    """The running domains that are this guest or use any of ``volumes`` (names, sorted)."""
    from ..toolstack import hotplug  # the toolstack's view; imported late, storage is below it

    paths = paths or Paths.from_env()
    found = {name for name in hotplug.domain_names(paths).values() if name == hostname}
    by_disk = hotplug.disk_users(paths)
    for vol in volumes:
        for _, name in by_disk.get(os.path.realpath(vol), []):
            found.add(name)
    return sorted(found)


def _exists(location: Location, hostname: str, name: str) -> bool:
    if location.lvm is not None:
        lv = location.lv_name(hostname, name)
        if location.vg not in _lvm(lvm2.volume_groups):
            raise StorageError(f"volume group {location.vg} not found")
        return any(v.name == lv for v in _lvm(lambda: lvm2.lvs(location.vg)))
    return location.path(hostname, name).exists()


def _allocate_file(vol: Volume, sparse: bool, progress: ProgressFactory | None) -> None:
    """dd's job in xen-tools: a file of exactly ``vol.size`` bytes, mode 0600; sparse (a hole)
    or full (zeros written, so the space is really taken), with progress for a full one."""
    fd = os.open(vol.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        if sparse:
            os.ftruncate(fd, vol.size)
            return
        bar = progress(f"Allocating {vol.path.name}", vol.size) if progress else None
        if bar:
            bar.update(0)
        zeros = bytes(ZERO_CHUNK)
        done = 0
        while done < vol.size:
            n = os.write(fd, zeros[:min(ZERO_CHUNK, vol.size - done)])
            done += n
            if bar:
                bar.update(done)
        os.fsync(fd)
        if bar:
            bar.finish()
    finally:
        os.close(fd)


def _make_fs(vol: Volume, sparse: bool) -> None:
    """mkswap or ``mkfs.<fs> -F`` (xen-tools' make_fs_* commands). A full image stays full:
    mkfs.ext* would otherwise discard (punch out) the zeros just written."""
    if vol.fs == "swap":
        _tool(["mkswap", str(vol.path)], f"swap on {vol.path}")
    elif vol.fs is not None:
        keep = ["-E", "nodiscard"] if not sparse and vol.fs.startswith("ext") else []
        _tool([f"mkfs.{vol.fs}", "-F", "-q", *keep, str(vol.path)], f"{vol.fs} filesystem on {vol.path}")


def create(hostname: str, *, lvm: str | None = None, dir: str | os.PathLike[str] | None = None,
           size: str | int = DEFAULT_SIZE, swap: str | int | None = DEFAULT_SWAP, sparse: bool = True,
           fs: str | None = DEFAULT_FS, force: bool = False, progress: ProgressFactory | None = None,
           log: Log | None = None, paths: Paths | None = None) -> list[Volume]:
    """Make a guest's volumes as xen-create-image does (swap unless ``swap`` is None, then the
    root disk), with ``mkswap`` and ``mkfs.<fs>`` on them (``fs=None`` leaves the disk raw).
    Returns them root first. ``sparse=False`` is ``--image=full``: every byte of an image file
    written (LVs are always fully allocated). ``force`` replaces existing volumes of a guest
    that is not running. On failure, what this call made is removed again.

    :raise StorageError: a bad name or size, volumes already there (xen-tools' "The partition
        image already exists.  Aborting." / "The LVM disk image already exists.  Aborting."),
        the guest running, or a tool failing.
    """
    say = log or (lambda _msg: None)
    location = Location(lvm=lvm, dir=Path(dir).absolute() if dir is not None else None)
    volumes = plan(hostname, location, size, swap, fs)
    if location.lvm is not None and location.lvm not in _lvm(lvm2.volume_groups):
        raise StorageError(f"volume group {location.lvm} not found")
    existing = [v for v in volumes if _exists(location, hostname, v.name)]
    if existing and not force:
        raise StorageError("The LVM disk image already exists.  Aborting." if location.lvm is not None
                           else "The partition image already exists.  Aborting.")
    if existing and users(hostname, [v.path for v in existing], paths):
        raise GuestRunning(f"ERROR: Xen guest {hostname} appears to be running.  Aborting.")
    made: list[Volume] = []
    try:
        if location.lvm is None:
            location.guest_dir(hostname).mkdir(parents=True, exist_ok=True, mode=0o755)
        for vol in reversed(volumes):  # xen-tools' order: swap, then disk
            if location.lvm is not None:
                if vol in existing:
                    say(f"Removing {vol.path} - since we're forcing the install")
                    _lvm(lambda: lvm2.lvremove(location.vg, location.lv_name(hostname, vol.name)))
                say(f"Creating LVM volume: {vol.path} ({format_size(vol.size)})")
                _lvm(lambda: lvm2.lvcreate(location.vg, location.lv_name(hostname, vol.name), vol.size))
            else:
                say(f"Creating partition image: {vol.path} ({format_size(vol.size)}, "
                    f"{'sparse' if sparse else 'full'})")
                _allocate_file(vol, sparse, progress)
            made.append(vol)
            if vol.fs is not None:
                say(f"Creating {vol.fs} on {vol.path}")
                _make_fs(vol, sparse or location.lvm is not None)
    except BaseException:
        for vol in made:
            _discard(location, hostname, vol)
        if location.lvm is None and made:
            try:
                location.guest_dir(hostname).rmdir()
            except OSError:
                pass
        raise
    return volumes


def _discard(location: Location, hostname: str, vol: Volume) -> None:
    try:
        if location.lvm is not None:
            lvm2.lvremove(location.vg, location.lv_name(hostname, vol.name))
        else:
            vol.path.unlink(missing_ok=True)
    except (lvm2.LvmError, OSError):
        pass


def find_volumes(hostname: str, location: Location) -> list[Volume]:
    """The guest's disk and swap as they are now (root first), with their sizes and contents."""
    check_hostname(hostname)
    out = []
    has_swap = _exists(location, hostname, "swap")
    for name in ("disk", "swap"):
        if not _exists(location, hostname, name):
            continue
        path = location.path(hostname, name)
        if location.lvm is not None:
            lv = _lvm(lambda: lvm2.find(location.vg, location.lv_name(hostname, name)))
            size = lv.size
        else:
            size = path.stat().st_size
        kind = content_kind(_head(path)) if path.exists() else None
        vdev = root_vdev(has_swap) if name == "disk" else f"{DISK_DEVICE}1"
        out.append(Volume(hostname, name, path, size, vdev, _fs_of(kind), location.prefix))
    return out


def overlays(hostname: str, location: Location, disk: Path) -> list[Path]:
    """The guest's qcow2 overlays whose backing file is ``disk`` (its ``--qcow2`` snapshots)."""
    if location.lvm is not None:
        candidates = [lv.path for lv in _lvm(lambda: lvm2.lvs(location.vg))
                      if lv.name.startswith(f"{hostname}-") and lv.name[len(hostname) + 1:] not in ("disk", "swap")]
    else:
        gdir = location.guest_dir(hostname)
        candidates = sorted(gdir.glob("*.qcow2")) if gdir.is_dir() else []
    return [p for p in candidates if p.exists() and qcow2_backing(_head(p, 65536)) == str(disk)]


def _disk(hostname: str, location: Location) -> Volume:
    disk = next((v for v in find_volumes(hostname, location) if v.name == "disk"), None)
    if disk is None:
        raise StorageError(f"The disk image for the guest domain {hostname} was not found where we expected "
                           f"it to be: {location.path(hostname, 'disk')}")
    if location.lvm is not None:
        _lvm(lambda: lvm2.activate(location.vg, location.lv_name(hostname, "disk")))
    return disk


def _mounted(path: Path) -> str | None:
    """Where the host has ``path`` mounted, if it does."""
    real = os.path.realpath(path)
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    for line in mounts:
        fields = line.split()
        if len(fields) >= 2 and fields[0].startswith("/") and os.path.realpath(fields[0]) == real:
            return fields[1]
    try:  # an image file mounted through a loop device
        for loop in lvm2._loops():
            if loop.get("back-file") == real:
                name = str(loop["name"])
                for line in mounts:
                    fields = line.split()
                    if fields and fields[0] == name:
                        return fields[1]
    except lvm2.LvmError:
        pass
    return None


def resize(hostname: str, *, lvm: str | None = None, dir: str | os.PathLike[str] | None = None,
           size: str | int, progress: ProgressFactory | None = None, log: Log | None = None,
           paths: Paths | None = None) -> Volume:
    """Grow the guest's disk to ``size`` (xen-resize-guest): extend the LV or the image file,
    then, when it holds an ext filesystem, ``e2fsck -f`` and ``resize2fs`` it to fill the
    disk. Without device-mapper an LV with no free extents after it is moved to grow (a copy,
    shown on ``progress``). Returns the disk as it is now.

    :raise StorageError: no such disk, a shrink, the disk mounted on the host; GuestRunning
        ("The guest H appears to be running!") when a running domain is the guest or uses it.
    """
    say = log or (lambda _msg: None)
    location = Location(lvm=lvm, dir=Path(dir).absolute() if dir is not None else None)
    wanted = parse_size(size, "size")
    disk = _disk(hostname, location)
    if users(hostname, [disk.path], paths):
        raise GuestRunning(f"The guest {hostname} appears to be running!")
    head = _head(disk.path, 2048)
    fs_size = ext_size(head[EXT_SUPERBLOCK:]) if len(head) == 2048 else None
    check_resize(hostname, disk.path, disk.size, wanted, fs_size)
    if wanted == disk.size:
        say(f"{disk.path} is {format_size(wanted)} already")
        return disk
    backs = overlays(hostname, location, disk.path)
    if backs:
        raise StorageError(f"{disk.path} backs the qcow2 overlay {', '.join(map(str, backs))}: growing it would "
                           "change the data under the overlay; remove the overlay first")
    where = _mounted(disk.path)
    if where is not None:
        raise StorageError(f"{disk.path} is mounted on {where}: unmount it before resizing")
    say(f"Resizing {disk.path} from {format_size(disk.size)} to {format_size(wanted)}")
    if location.lvm is not None:
        bar = progress(f"Moving {disk.path.name} to grow it", disk.size) if progress else None
        _lvm(lambda: lvm2.lvresize(location.vg, location.lv_name(hostname, "disk"), wanted,
                                   progress=(lambda done, _total: bar.update(done)) if bar else None))
        if bar and bar.done:  # the LV was moved: end the bar's line
            bar.finish()
    else:
        full = os.stat(disk.path).st_blocks * 512 >= disk.size  # --image=full stays full
        with open(disk.path, "r+b") as f:
            f.truncate(wanted)
            if full:
                os.posix_fallocate(f.fileno(), disk.size, wanted - disk.size)
    if fs_size is not None:
        say("Checking filesystem")
        # e2fsck: 0 clean, 1 errors corrected; anything else needs a human.
        _tool(["e2fsck", "-f", "-p", str(disk.path)], f"checking the filesystem on {disk.path}", ok=(0, 1))
        say("Resizing in place")
        _tool(["resize2fs", str(disk.path)], f"growing the filesystem on {disk.path}")
    return replace(disk, size=_size_of(disk.path))


def snapshot(hostname: str, *, lvm: str | None = None, dir: str | os.PathLike[str] | None = None,
             name: str, qcow2: bool = False, log: Log | None = None, paths: Paths | None = None) -> Volume:
    """Snapshot the guest's disk: an LVM snapshot ``<host>-<name>`` (needs device-mapper), or
    with ``qcow2`` an overlay whose backing file is the disk (``qemu-img create -f qcow2 -b
    <disk> -F raw``): ``DIR/domains/<host>/<name>.qcow2``, or on LVM an LV ``<host>-<name>``
    holding the qcow2 image. A guest booted on the overlay writes to it only; the disk stays as
    it was, and must not change while an overlay depends on it.

    :raise StorageError: bad name, no disk, the snapshot exists, no device-mapper for an LVM
        snapshot, a ``--dir`` snapshot without ``qcow2``; GuestRunning when the disk is in use.
    """
    say = log or (lambda _msg: None)
    location = Location(lvm=lvm, dir=Path(dir).absolute() if dir is not None else None)
    check_hostname(hostname)
    check_snapshot_name(hostname, name)
    disk = _disk(hostname, location)
    if not qcow2 and location.lvm is None:
        raise StorageError(f"{disk.path} is an image file: only a qcow2 overlay (--qcow2) can snapshot it")
    path = location.path(hostname, name, ".qcow2")
    if _exists(location, hostname, name) if location.lvm is not None else path.exists():
        raise StorageError(f"snapshot '{name}' of {hostname} exists already: {path}")
    if users(hostname, [disk.path], paths):
        raise GuestRunning(f"The guest {hostname} appears to be running!")
    if not qcow2:
        _lvm(lambda: lvm2.lvsnapshot(location.vg, location.lv_name(hostname, "disk"),
                                     location.lv_name(hostname, name), disk.size))
        say(f"Created LVM snapshot {path} of {disk.path}")
        return replace(disk, name=name, path=path, fs=disk.fs)
    overlay = replace(disk, name=name, path=path, format="qcow2", backing=disk.path, fs=None)
    if location.lvm is not None:
        say(f"Creating LVM volume: {path} for a qcow2 overlay")
        room = disk.size + disk.size // QCOW2_OVERHEAD_DIVISOR + 4 * MiB
        _lvm(lambda: lvm2.lvcreate(location.vg, location.lv_name(hostname, name), room))
    say(f"Creating qcow2 overlay {path} backed by {disk.path}")
    try:
        run_qemu_img(["create", "-q", "-f", "qcow2", "-b", str(disk.path), "-F", "raw", str(path)],
                     timeout=TOOL_TIMEOUT)
        if location.lvm is None:
            os.chmod(path, 0o600)
    except (QemuImgError, OSError) as err:
        _discard(location, hostname, overlay)
        raise StorageError(f"qcow2 overlay {path}: {err}") from err
    return overlay


def remove(hostname: str, *, lvm: str | None = None, dir: str | os.PathLike[str] | None = None,
           log: Log | None = None, paths: Paths | None = None) -> list[Path]:
    """xen-delete-image: the ``DIR/domains/<host>`` tree (its snapshots with it), or the LVs
    ``<host>-swap`` and ``<host>-disk`` and the qcow2 overlay LVs backed by the disk. Returns
    what was removed.

    :raise GuestRunning: "Skipping xen guest '<host>' - it appears to be running."
    :raise StorageError: the guest has no volumes there.
    """
    say = log or (lambda _msg: None)
    location = Location(lvm=lvm, dir=Path(dir).absolute() if dir is not None else None)
    check_hostname(hostname)
    found = find_volumes(hostname, location)
    tree = location.guest_dir(hostname) if location.lvm is None else None
    if not found and not (tree is not None and tree.is_dir()):
        raise StorageError(f"no volumes of {hostname} in {location}")
    in_tree = [p for p in tree.rglob("*") if p.is_file()] if tree is not None else []
    disk = next((v for v in found if v.name == "disk"), None)
    snaps = overlays(hostname, location, disk.path) if disk is not None and tree is None else []
    if users(hostname, [v.path for v in found] + in_tree + snaps, paths):
        raise GuestRunning(f"Skipping xen guest '{hostname}' - it appears to be running.")
    removed: list[Path] = []
    if tree is not None:
        say(f"Removing: {tree}")
        shutil.rmtree(tree)
        removed.append(tree)
        return removed
    for path in snaps:
        say(f"Removing qcow2 overlay volume {path}")
        _lvm(lambda: lvm2.lvremove(location.vg, path.name))
        removed.append(path)
    for vol in sorted(found, key=lambda v: v.name != "swap"):  # swap first, as xen-delete-image
        say(f"Removing {'swap' if vol.name == 'swap' else 'LVM disk'} volume {vol.path}")
        _lvm(lambda: lvm2.lvremove(location.vg, location.lv_name(hostname, vol.name)))
        removed.append(vol.path)
    return removed


@dataclass(frozen=True)
class Listed:
    """One row of ``pyxen storage list``."""

    location: str
    hostname: str
    volume: Volume
    used_by: tuple[str, ...]


def list_volumes(*, lvm: str | None = None, dir: str | os.PathLike[str] | None = None,
                 paths: Paths | None = None) -> list[Listed]:
    """The guests' volumes: of one volume group, one directory, or (neither given) of every
    volume group lvm2 sees. An LV ``<host>-<name>`` is ``name`` of ``host``; a directory's
    ``domains/<host>/<name>.img|.qcow2`` likewise (a qcow2 file's size is its virtual size).
    Each with the domains using it."""
    from ..toolstack import hotplug

    paths = paths or Paths.from_env()
    rows: list[tuple[str, str, Volume]] = []
    if dir is not None:
        base = Path(dir).absolute()
        for gdir in sorted((base / "domains").glob("*")) if (base / "domains").is_dir() else []:
            for f in sorted(gdir.iterdir()):
                if f.suffix not in (".img", ".qcow2") or not f.is_file():
                    continue
                head = _head(f)
                kind = content_kind(head)
                size = struct.unpack_from(">Q", head, 24)[0] if kind == "qcow2" else f.stat().st_size
                vol = Volume(gdir.name, f.stem, f, size, "", _fs_of(kind),
                             "file:", "qcow2" if kind == "qcow2" else "raw")
                rows.append((str(base), gdir.name, vol))
    else:
        groups = [lvm] if lvm is not None else list(_lvm(lvm2.volume_groups))
        for vg in groups:
            for lv in _lvm(lambda: lvm2.lvs(vg)):
                host, _, name = lv.name.rpartition("-")
                kind = content_kind(_head(lv.path)) if lv.path.exists() else None
                vol = Volume(host or lv.name, name if host else "", lv.path, lv.size, "",
                             _fs_of(kind), "phy:", "qcow2" if kind == "qcow2" else "raw")
                rows.append((vg, host or lv.name, vol))
    by_disk = hotplug.disk_users(paths)
    return [Listed(loc, host, vol, tuple(sorted({n for _, n in by_disk.get(os.path.realpath(vol.path), [])})))
            for loc, host, vol in rows]
