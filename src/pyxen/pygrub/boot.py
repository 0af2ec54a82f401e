"""Which kernel a guest's disk boots, and its copy on the host: pygrub's work without its UI.

``choose`` walks the partitions (disk.partition_offsets, or one ``offset``), opens each as an
ext filesystem and, unless a kernel was given, reads the first boot config of CONFIG_FILES and
takes the default entry (or the one ``entry`` names, or the one ``pick`` returns, which is where
the CLI's menu and ``-l`` plug in). The first partition that yields a kernel wins; a partition
that fails in any way is skipped, as in Xen. ``extract`` then copies the kernel and ramdisk
into the output directory as ``boot_kernel.*`` / ``boot_ramdisk.*`` files (mode 0600).
"""

from __future__ import annotations

import os
import posixpath
import tempfile
import traceback
from dataclasses import dataclass
from typing import Callable, TextIO

from . import conf
from .disk import Disk, partition_offsets
from .ext4 import Ext4, FsError, NotFound

#: A boot config larger than this is not read whole (Xen's FS_READ_MAX).
CONFIG_READ_MAX = 1024 * 1024
NO_PARTITION = "Unable to find partition containing kernel"
NO_CONFIG = "couldn't find bootloader config file in the image provided."


class PygrubError(Exception):
    """pygrub cannot give a kernel; str() is Xen's message, ``reasons`` why each partition
    tried gave none ("offset N: ...")."""

    def __init__(self, message: str, reasons: list[str] | None = None) -> None:
        super().__init__(message)
        self.reasons = reasons or []


@dataclass
class Choice:
    """What to boot, as paths inside the guest filesystem at ``offset``."""

    offset: int
    kernel: str
    ramdisk: str | None
    args: str
    config: conf.BootConfig | None = None
    index: int | None = None


@dataclass
class Extracted:
    """The host copies pygrub made (``ramdisk`` None when the entry has no initrd)."""

    kernel: str
    ramdisk: str | None
    args: str


def find_config(fs: Ext4) -> tuple[str, str] | None:
    """(path, parser) of the first boot config that exists, in Xen's search order."""
    for path, kind in conf.CONFIG_FILES:
        try:
            if fs.lookup(path).is_file:
                return path, kind
        except NotFound:
            continue
    return None


def read_config(fs: Ext4, log: TextIO | None = None) -> conf.BootConfig:
    """The guest's boot config, parsed (grubenv beside a grub.cfg read for saved_entry).

    :raise PygrubError: no config exists."""
    found = find_config(fs)
    if found is None:
        raise PygrubError(NO_CONFIG)
    path, kind = found
    if log is not None:
        print(f"Using <class '{kind}'> to parse {path}", file=log)
    text = fs.read(fs.open_file(path), CONFIG_READ_MAX).decode("utf-8", "replace")
    grubenv = None
    if kind == conf.GRUB2:
        try:
            env = fs.open_file(posixpath.join(posixpath.dirname(path), "grubenv"))
            grubenv = conf.parse_grubenv(fs.read(env, 4096).decode("utf-8", "replace"))
        except FsError:
            grubenv = None
    return conf.parse(kind, text, path, grubenv)


def entry_index(cfg: conf.BootConfig, entry: str) -> int | None:
    """``--entry``: an integer is an index, anything else an exact title (Xen's get_entry_idx)."""
    try:
        return int(entry)
    except ValueError:
        pass
    return next((i for i, e in enumerate(cfg.entries) if e.title == entry), None)


def select(cfg: conf.BootConfig, entry: str | None, chosen: int | None, args: str,
           offset: int) -> Choice:
    """Xen's run_grub after the menu: the chosen (or default) entry, ``--entry`` if it is in
    range, the first entry when the index is past the end; ``args`` appended after a space.

    :raise PygrubError: "No kernel image selected!" (the menu returned -1); no entries."""
    sel = cfg.default if chosen is None else chosen
    if entry is not None:
        idx = entry_index(cfg, entry)
        if idx is not None and 0 <= idx < len(cfg.entries):
            sel = idx
    if sel == -1:
        raise PygrubError("No kernel image selected!")
    if not cfg.entries:
        raise PygrubError(f"{cfg.path} has no boot entries")
    if not 0 <= sel < len(cfg.entries):
        sel = 0
    img = cfg.entries[sel]
    if not img.kernel:
        raise PygrubError(f"entry '{img.title}' of {cfg.path} names no kernel")
    full = img.args or ""
    if args:
        full += " " + args
    return Choice(offset, img.kernel, img.initrd or None, full, cfg, sel)


Pick = Callable[[conf.BootConfig], int | None]


def choose(disk: Disk, *, entry: str | None = None, kernel: str | None = None,
           ramdisk: str | None = None, args: str = "", offset: int | None = None,
           pick: Pick | None = None, log: TextIO | None = None,
           debug: bool = False) -> tuple[Ext4, Choice]:
    """The filesystem and the entry pygrub boots (see the module's docstring).

    With ``kernel`` the boot config is not read: ``kernel``, ``ramdisk`` and ``args`` are used
    as given, from the first partition holding an ext filesystem. ``pick`` (the menu) is called
    with each config found and returns an index, or None for the default.

    :raise PygrubError: with Xen's "Unable to find partition containing kernel"."""
    offsets = [offset] if offset is not None else partition_offsets(disk)
    reasons: list[str] = []
    for off in offsets:
        try:
            fs = Ext4(disk, off)
            if kernel:
                return fs, Choice(off, kernel, ramdisk, args)
            cfg = read_config(fs, log)
            if log is not None:
                for w in cfg.warnings + (cfg.unknown if debug else []):
                    print(w, file=log)
            chosen = pick(cfg) if pick is not None else None
            return fs, select(cfg, entry, chosen, args, off)
        except PygrubError as err:
            if str(err) == "No kernel image selected!":
                raise
            reasons.append(f"offset {off}: {err}")
        except (FsError, OSError, conf.ConfigSyntaxError, ValueError) as err:
            if debug and log is not None:
                traceback.print_exception(err, file=log)
            reasons.append(f"offset {off}: {err}")
    raise PygrubError(NO_PARTITION, reasons)


def copy_out(fs: Ext4, path: str, kind: str, directory: str) -> str:
    """Copy the guest file ``path`` to a new ``boot_<kind>.XXXXXXXX`` file in ``directory``.

    :raise PygrubError: missing in the guest, or the host copy failed (nothing is left)."""
    try:
        ino = fs.open_file(path)
    except FsError as err:
        raise PygrubError(f"Error opening {path} in guest ({err})") from None
    fd, out = tempfile.mkstemp(prefix=f"boot_{kind}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in fs.chunks(ino):
                f.write(chunk)
    except (OSError, FsError) as err:
        os.unlink(out)
        raise PygrubError(f"Error writing temporary copy of {kind} ({err})") from None
    return out


def extract(fs: Ext4, choice: Choice, directory: str) -> Extracted:
    """Host copies of the chosen kernel and ramdisk (the kernel removed if the ramdisk fails)."""
    kernel = copy_out(fs, choice.kernel, "kernel", directory)
    ramdisk = None
    if choice.ramdisk:
        try:
            ramdisk = copy_out(fs, choice.ramdisk, "ramdisk", directory)
        except PygrubError:
            os.unlink(kernel)
            raise
    return Extracted(kernel, ramdisk, choice.args)


def boot(image: str, output_directory: str, *, entry: str | None = None,
         kernel: str | None = None, ramdisk: str | None = None, args: str = "",
         offset: int | None = None) -> Extracted:
    """The whole of non-interactive pygrub in one call: the kernel, ramdisk and args that
    ``image`` (a disk image file or a block device such as /dev/<vg>/<lv>) boots, copied into
    ``output_directory``. The caller removes the files once it has used them.

    :raise PygrubError: no kernel (Xen's messages); DiskError (an OSError): unreadable disk."""
    with Disk(image) as disk:
        fs, choice = choose(disk, entry=entry, kernel=kernel, ramdisk=ramdisk, args=args,
                            offset=offset)
        return extract(fs, choice, output_directory)


def boot_config(image: str, offset: int | None = None) -> conf.BootConfig:
    """The boot config pygrub would use on ``image`` (the first partition that has one), for
    callers that check an image before booting it (``pygrub -l`` without the printing).

    :raise PygrubError: no partition has a readable config; DiskError: unreadable disk."""
    found: list[conf.BootConfig] = []

    def keep(cfg: conf.BootConfig) -> int | None:
        found.append(cfg)
        return None

    with Disk(image) as disk:
        try:
            choose(disk, offset=offset, pick=keep)
        except PygrubError:
            if not found:
                raise
    return found[-1]
