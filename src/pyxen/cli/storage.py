"""``pyxen storage create|resize|snapshot|remove|list``: a guest's volumes, the xen-tools way.

xl has no storage commands; xen-tools' xen-create-image, xen-resize-guest and xen-delete-image
do this on Xen hosts, and these keep their option names, naming and messages (the work itself
is storage/volumes.py). Progress of long work goes to stderr; what was made, and the xl
``disk=`` lines for it, to stdout. Any refusal is one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..paths import Paths
from ..storage import volumes
from ..storage.lvm import LvmError
from ..storage.progress import Progress, QemuImgError
from ..storage.volumes import StorageError


class _Parser(argparse.ArgumentParser):
    """argparse with pyxen's one-line errors (``pyxen storage: <what>``), exit status 1."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"pyxen storage: {message}", file=sys.stderr)
        raise SystemExit(1)


def _where(p: argparse.ArgumentParser, required: bool = True) -> None:
    group = p.add_mutually_exclusive_group(required=required)
    group.add_argument("--lvm", metavar="VG", help="the volume group holding <host>-disk and <host>-swap")
    group.add_argument("--dir", metavar="DIR", help="images in DIR/domains/<host>/")


def parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="pyxen storage", description="create, resize, snapshot, remove and list guests' volumes")
    sub = ap.add_subparsers(dest="action", required=True, parser_class=_Parser)
    c = sub.add_parser("create", help="make a guest's root disk and swap (xen-create-image's storage)")
    c.add_argument("--hostname", required=True)
    _where(c)
    c.add_argument("--size", default=volumes.DEFAULT_SIZE, help="root disk size (M, MB, G, GB; bare = MB)")
    swap = c.add_mutually_exclusive_group()
    swap.add_argument("--swap", default=volumes.DEFAULT_SWAP, help="swap size")
    swap.add_argument("--noswap", action="store_true", help="no swap volume")
    c.add_argument("--image", choices=("sparse", "full"), default="sparse",
                   help="--dir images: sparse (a hole) or full (zeros written)")
    c.add_argument("--fs", default=volumes.DEFAULT_FS, help="filesystem made on the disk ('none': raw)")
    c.add_argument("--force", action="store_true", help="replace existing volumes of a guest not running")
    r = sub.add_parser("resize", help="grow a guest's disk and the ext4 on it (xen-resize-guest)")
    r.add_argument("--hostname", required=True)
    _where(r)
    r.add_argument("--size", required=True, help="the disk's new size")
    s = sub.add_parser("snapshot", help="an LVM snapshot, or a qcow2 overlay backed by the disk")
    s.add_argument("--hostname", required=True)
    _where(s)
    s.add_argument("--name", required=True, help="the snapshot's name")
    s.add_argument("--qcow2", action="store_true", help="a qcow2 overlay (qemu-img create -b <disk>)")
    d = sub.add_parser("remove", help="remove a guest's volumes (xen-delete-image)")
    d.add_argument("--hostname", required=True)
    _where(d)
    ls = sub.add_parser("list", help="the guests' volumes and the domains using them")
    _where(ls, required=False)
    return ap


def _say(msg: str) -> None:
    print(msg, file=sys.stderr)


def _bar(label: str, total: int) -> Progress:
    return Progress(label, total)


def render_list(rows: list[volumes.Listed]) -> str:
    """The table of ``pyxen storage list``."""
    lines = [f"{'Host':<20} {'Volume':<10} {'Size':>7} {'Content':<8} {'Used by':<12} Path"]
    for row in rows:
        v = row.volume
        content = "qcow2" if v.format == "qcow2" else (v.fs or "-")
        lines.append(f"{row.hostname:<20} {v.name or '-':<10} {volumes.format_size(v.size):>7} {content:<8} "
                     f"{','.join(row.used_by) or '-':<12} {v.path}")
    return "\n".join(lines) + "\n"


def run(ns: argparse.Namespace, paths: Paths) -> int:
    where = {"lvm": ns.lvm, "dir": ns.dir}
    if ns.action == "create":
        fs = None if ns.fs == "none" else ns.fs
        made = volumes.create(ns.hostname, **where, size=ns.size, swap=None if ns.noswap else ns.swap,
                              sparse=ns.image == "sparse", fs=fs, force=ns.force, progress=_bar, log=_say,
                              paths=paths)
        for v in made:
            print(f"{v.name:<5} {v.path} ({volumes.format_size(v.size)}, {v.fs or 'raw'}) as {v.vdev}")
        print(volumes.disk_lines(made), end="")
    elif ns.action == "resize":
        disk = volumes.resize(ns.hostname, **where, size=ns.size, progress=_bar, log=_say, paths=paths)
        print(f"disk  {disk.path} ({volumes.format_size(disk.size)})")
    elif ns.action == "snapshot":
        snap = volumes.snapshot(ns.hostname, **where, name=ns.name, qcow2=ns.qcow2, log=_say, paths=paths)
        backing = f", backed by {snap.backing}" if snap.backing else ""
        print(f"{snap.name} {snap.path} ({snap.format}{backing})")
        print(volumes.disk_lines([snap]), end="")
    elif ns.action == "remove":
        for path in volumes.remove(ns.hostname, **where, log=_say, paths=paths):
            print(f"removed {path}")
    else:
        sys.stdout.write(render_list(volumes.list_volumes(**where, paths=paths)))
    return 0


def main(argv: list[str], root: str | None = None) -> int:
    ns = parser().parse_args(argv)
    if getattr(ns, "dir", None) is not None and not Path(ns.dir).is_dir() and ns.action != "create":
        print(f"pyxen storage: {ns.dir} is not a directory", file=sys.stderr)
        return 1
    try:
        return run(ns, Paths.from_env(root))
    except StorageError as err:
        print(err, file=sys.stderr)
        return 1
    except (LvmError, QemuImgError, OSError) as err:
        print(f"pyxen storage: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pyxen storage: interrupted", file=sys.stderr)
        return 130
