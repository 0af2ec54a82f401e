"""LVM logical volumes for guest disks (``phy:/dev/<vg>/<lv>``), with or without device-mapper.

Xen hosts keep guest disks on LVM: ``lvcreate -L40G -n f13 vg`` and then ``phy:/dev/vg/f13`` in
the guest's config. lvm2 only edits metadata on the physical volumes; making ``/dev/vg/f13`` a
block device is device-mapper's job (a "linear" target mapping the LV's extents onto the PV).
Some kernels (this project's CI machine among them) have no device-mapper: lvm2 then refuses
every command that would activate. There the metadata commands still run with activation
switched off (``global{activation=0}``), and this module does device-mapper's part for the one
case it can: an LV made of one contiguous segment is a loop device over its PV with the
segment's offset and size, and ``/dev/<vg>/<lv>`` links to it, as udev would link the dm node.
LVs are therefore allocated contiguously here (``--alloc contiguous``); an LV that lvm2 had to
split cannot be activated without device-mapper, and says so. LVM snapshots need the kernel's
snapshot target and are refused without device-mapper.

With device-mapper present everything is plain lvm2 (``lvchange -ay``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

#: lvm2's switch that keeps every command away from device-mapper (lvm.conf global/activation).
NO_ACTIVATION = "global{activation=0}"
#: Seconds any one lvm2 or losetup command may take.
TIMEOUT = 60.0
_NAME = re.compile(r"[A-Za-z0-9+_.][A-Za-z0-9+_.-]*\Z")


class LvmError(RuntimeError):
    """An LVM operation failed; the message is one line naming the volume and the reason."""


@dataclass(frozen=True)
class LogicalVolume:
    """One LV as lvm2's metadata describes it."""

    vg: str
    name: str
    size: int
    #: (PV device, byte offset of the segment on it, byte length), in the LV's order.
    segments: tuple[tuple[str, int, int], ...]

    @property
    def path(self) -> Path:
        """Where Xen configs name it: /dev/<vg>/<lv>."""
        return Path("/dev") / self.vg / self.name


def device_mapper_present() -> bool:
    """Whether the kernel offers device-mapper: its misc device is registered. (The node
    /dev/mapper/control proves nothing: libdevmapper creates it when it is missing.)"""
    try:
        return any(line.split()[1:] == ["device-mapper"] for line in Path("/proc/misc").read_text().splitlines())
    except OSError:
        return False


def check_name(kind: str, name: str) -> None:
    """lvm2's rule for VG and LV names, checked before anything runs."""
    if not _NAME.match(name) or name in (".", "..") or len(name) > 127:
        raise LvmError(f"invalid {kind} name '{name}'")


def _run(argv: list[str], what: str) -> str:
    env = dict(os.environ, LVM_SUPPRESS_FD_WARNINGS="1")
    if argv[0] not in ("losetup",) and not device_mapper_present():
        argv = [argv[0], "--config", NO_ACTIVATION, *argv[1:]]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, env=env)
    except FileNotFoundError as err:
        raise LvmError(f"{what}: {argv[0]} not found (install lvm2)") from err
    except subprocess.TimeoutExpired as err:
        raise LvmError(f"{what}: {argv[0]} did not finish in {TIMEOUT:.0f} s") from err
    if done.returncode != 0:
        lines = [ln.strip() for ln in done.stderr.splitlines()
                 if ln.strip() and "WARNING: Activation disabled" not in ln and "--help" not in ln]
        raise LvmError(f"{what}: {lines[-1] if lines else f'{argv[0]} exited {done.returncode}'}")
    return done.stdout


def _report(argv: list[str], what: str) -> list[dict[str, str]]:
    out = _run([*argv, "--reportformat", "json", "--units", "b", "--nosuffix"], what)
    rows: list[dict[str, str]] = []
    for part in json.loads(out or '{"report": []}')["report"]:
        for rows_of_kind in part.values():
            rows.extend(rows_of_kind)
    return rows


def volume_groups() -> list[str]:
    """The names of the volume groups lvm2 sees."""
    return [r["vg_name"] for r in _report(["vgs", "-o", "vg_name"], "vgs")]


def lvs(vg: str) -> list[LogicalVolume]:
    """The LVs of ``vg`` with their segments on the physical volumes."""
    check_name("volume group", vg)
    sizes = {r["lv_name"]: int(r["lv_size"])
             for r in _report(["lvs", "-o", "lv_name,lv_size", vg], f"volume group {vg}")}
    segs: dict[str, list[tuple[int, str, int, int]]] = {name: [] for name in sizes}
    rows = _report(["lvs", "--segments", "-o", "lv_name,seg_le_ranges,seg_pe_ranges,vg_extent_size",
                    vg], f"volume group {vg}")
    starts = {r["pv_name"]: int(r["pe_start"])
              for r in _report(["pvs", "-o", "pv_name,pe_start", "-S", f"vg_name={vg}"], f"volume group {vg}")}
    for r in rows:
        extent = int(r["vg_extent_size"])
        le = int(r["seg_le_ranges"].rsplit(":", 1)[1].split("-")[0]) if r["seg_le_ranges"] else 0
        for rng in r["seg_pe_ranges"].split():
            pv, span = rng.rsplit(":", 1)
            first, last = (int(x) for x in span.split("-"))
            segs[r["lv_name"]].append((le, pv, starts[pv] + first * extent, (last - first + 1) * extent))
    return [LogicalVolume(vg, name, size, tuple((pv, off, n) for _, pv, off, n in sorted(segs[name])))
            for name, size in sizes.items()]


def find(vg: str, name: str) -> LogicalVolume:
    """The LV ``vg/name``; LvmError if lvm2 knows no such volume."""
    check_name("logical volume", name)
    for lv in lvs(vg):
        if lv.name == name:
            return lv
    raise LvmError(f"logical volume {vg}/{name} not found")


def parse_lv_path(path: str) -> tuple[str, str] | None:
    """``/dev/<vg>/<lv>`` -> (vg, lv); None for any other path."""
    parts = Path(path).parts
    if len(parts) == 4 and parts[:2] == ("/", "dev") and _NAME.match(parts[2]) and _NAME.match(parts[3]):
        return parts[2], parts[3]
    return None


def _loops() -> list[dict[str, str]]:
    out = _run(["losetup", "--json", "--list", "-O", "NAME,BACK-FILE,OFFSET,SIZELIMIT"], "losetup")
    return list(json.loads(out or '{"loopdevices": []}')["loopdevices"])


def _loop_for(pv: str, offset: int, size: int) -> str | None:
    real = os.path.realpath(pv)
    for loop in _loops():
        if (loop.get("back-file") in (pv, real) and int(loop.get("offset") or 0) == offset
                and int(loop.get("sizelimit") or 0) == size):
            return str(loop["name"])
    return None


def activate(vg: str, name: str) -> Path:
    """Make /dev/<vg>/<name> a block device (lvchange -ay, or a loop device without
    device-mapper); idempotent. Returns the path."""
    lv = find(vg, name)
    if device_mapper_present():
        _run(["lvchange", "-ay", f"{vg}/{name}"], f"logical volume {vg}/{name}")
        return lv.path
    if len(lv.segments) != 1:
        raise LvmError(f"logical volume {vg}/{name} has {len(lv.segments)} segments; without "
                       "device-mapper only a contiguous volume can be activated")
    pv, offset, size = lv.segments[0]
    loop = _loop_for(pv, offset, size)
    if loop is None:
        loop = _run(["losetup", "--find", "--show", "--offset", str(offset), "--sizelimit", str(size), pv],
                    f"logical volume {vg}/{name}").strip()
    link = lv.path
    link.parent.mkdir(exist_ok=True)
    if not (link.is_symlink() and os.readlink(link) == loop):
        tmp = link.with_name(f".{name}.tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(loop)
        tmp.replace(link)
    return link


def activate_path(path: str) -> bool:
    """Make a missing ``/dev/<vg>/<lv>`` exist when lvm2 knows that volume (a host reboot
    forgot the loop device, or the LV was made with activation off), as udev's lvm2 rules
    would at boot. False (nothing done) when the path exists, does not look like an LV's path,
    or names a volume group lvm2 does not know; LvmError when the LV cannot be activated."""
    if os.path.exists(path):
        return False
    parsed = parse_lv_path(path)
    if parsed is None or parsed[0] not in volume_groups():
        return False
    activate(*parsed)
    return True


def deactivate(vg: str, name: str) -> None:
    """Undo ``activate``: lvchange -an, or detach the loop device and remove the link."""
    if device_mapper_present():
        _run(["lvchange", "-an", f"{vg}/{name}"], f"logical volume {vg}/{name}")
        return
    link = Path("/dev") / vg / name
    if link.is_symlink():
        loop = os.readlink(link)
        if loop.startswith("/dev/loop"):
            _run(["losetup", "--detach", loop], f"logical volume {vg}/{name}")
        link.unlink()
    try:
        link.parent.rmdir()
    except OSError:
        pass


def lvcreate(vg: str, name: str, size: int) -> Path:
    """``lvcreate -L <size>b -n <name> <vg>`` (contiguous without device-mapper), activated."""
    check_name("volume group", vg)
    check_name("logical volume", name)
    if size <= 0:
        raise LvmError(f"logical volume {vg}/{name}: size must be positive")
    argv = ["lvcreate", "--yes", "-L", f"{size}b", "-n", name, vg]
    if not device_mapper_present():
        argv[1:1] = ["-Zn", "--alloc", "contiguous"]
    _run(argv, f"logical volume {vg}/{name}")
    try:
        return activate(vg, name)
    except LvmError:
        _run(["lvremove", "-fy", f"{vg}/{name}"], f"logical volume {vg}/{name}")
        raise


def lvremove(vg: str, name: str) -> None:
    """Deactivate and remove ``vg/name``."""
    find(vg, name)
    deactivate(vg, name)
    _run(["lvremove", "-fy", f"{vg}/{name}"], f"logical volume {vg}/{name}")


def lvresize(vg: str, name: str, size: int,
             progress: Callable[[int, int], None] | None = None) -> Path:
    """Grow or shrink ``vg/name`` to ``size`` bytes (rounded up to whole extents) and activate
    it again. Without device-mapper the loop device is made anew, so the caller must know the
    volume is not in use; and when the extents after the LV are taken, a grown LV is moved:
    a new contiguous LV is made, the data copied (``progress(done, total)`` after each chunk),
    the old one removed and the new one renamed (what pvmove would do with device-mapper)."""
    lv = find(vg, name)
    if size <= 0:
        raise LvmError(f"logical volume {vg}/{name}: size must be positive")
    if size == lv.size:
        return activate(vg, name)
    argv = ["lvresize", "--yes", "-L", f"{size}b", f"{vg}/{name}"]
    if not device_mapper_present():
        argv[1:1] = ["--alloc", "contiguous"]
        deactivate(vg, name)
    try:
        _run(argv, f"logical volume {vg}/{name}")
    except LvmError as err:
        if device_mapper_present() or size < lv.size or "contiguous" not in str(err):
            activate(vg, name)
            raise
        return _relocate(vg, name, size, lv.size, progress)
    return activate(vg, name)


#: Bytes copied per step when an LV is moved to grow it.
COPY_CHUNK = 4 << 20


def _relocate(vg: str, name: str, size: int, old_size: int,
              progress: Callable[[int, int], None] | None) -> Path:
    """Grow ``vg/name`` by moving it to a new contiguous place of ``size`` bytes."""
    tmp = f"{name}_grow"
    check_name("logical volume", tmp)
    _run(["lvcreate", "--yes", "-Zn", "--alloc", "contiguous", "-L", f"{size}b", "-n", tmp, vg],
         f"logical volume {vg}/{name} (no room to grow it in place or elsewhere)")
    try:
        src, dst = activate(vg, name), activate(vg, tmp)
        with open(src, "rb") as fin, open(dst, "r+b") as fout:
            done = 0
            while done < old_size:
                chunk = fin.read(min(COPY_CHUNK, old_size - done))
                if not chunk:
                    break
                fout.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, old_size)
            fout.flush()
            os.fsync(fout.fileno())
    except BaseException:
        deactivate(vg, tmp)
        _run(["lvremove", "-fy", f"{vg}/{tmp}"], f"logical volume {vg}/{tmp}")
        activate(vg, name)
        raise
    deactivate(vg, tmp)
    deactivate(vg, name)
    _run(["lvremove", "-fy", f"{vg}/{name}"], f"logical volume {vg}/{name}")
    _run(["lvrename", vg, tmp, name], f"logical volume {vg}/{name}")
    return activate(vg, name)


def lvsnapshot(vg: str, origin: str, name: str, size: int) -> Path:
    """``lvcreate -s -L <size>b -n <name> <vg>/<origin>``: a copy-on-write snapshot with ``size``
    bytes for changed extents. It needs device-mapper's snapshot target in the kernel, so
    without device-mapper it is refused before lvm2 runs (a loop device cannot stand in)."""
    check_name("logical volume", name)
    find(vg, origin)
    if not device_mapper_present():
        raise LvmError(f"cannot snapshot {vg}/{origin}: LVM snapshots need the kernel's device-mapper "
                       "(dm-snapshot), which this kernel does not have")
    _run(["lvcreate", "--yes", "-s", "-L", f"{size}b", "-n", name, f"{vg}/{origin}"],
         f"logical volume {vg}/{name}")
    return activate(vg, name)
