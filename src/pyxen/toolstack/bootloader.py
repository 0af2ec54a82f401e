"""Running a PV guest's bootloader, as libxl_bootloader.c does.

For ``bootloader = "pygrub"`` (PV and PVH), the toolstack runs the bootloader on the guest's
first disk before building the domain, reads the kernel, ramdisk and command line it chose
(``simple0``: NUL-terminated ``kernel <path>``, ``ramdisk <path>``, ``args <text>`` items) and
boots QEMU on them. The argument vector is libxl's, in its order: the program; ``--kernel=``,
``--ramdisk=`` and ``--args=`` from xl.cfg when set; ``--output=<file>``,
``--output-format=simple0``, ``--output-directory=<dir>``; every ``bootloader_args`` item; the
disk's path. Differences from libxl, all for the host pyxen runs on: the work folder is
``Paths.bootloader_dir/<name>.<random>`` (the domain has no domid yet), the program's stdin is
not a terminal (so pygrub boots the default entry without a menu on ``xl console``), its
environment keeps PATH and PYTHONPATH besides TERM=vt100, and the timeout (120 s, or
``LIBXL_BOOTLOADER_TIMEOUT``) always applies.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..libxlu import disk as libxlu_disk
from ..paths import Paths
from .config import DomainConfig

#: libxl's default bootloader timeout in seconds (LIBXL_BOOTLOADER_TIMEOUT overrides it).
DEFAULT_TIMEOUT = 120
#: The names that mean pyxen's own pygrub: libxl looks a relative name up in its private bin
#: folder first (where Xen installs pygrub); /usr/bin/pygrub is its old, deprecated spelling.
PYGRUB_NAMES = ("pygrub", "/usr/bin/pygrub")


class BootloaderError(RuntimeError):
    """The bootloader could not run or gave no kernel; str() is one line naming why."""


@dataclass(frozen=True)
class BootloaderResult:
    """What the bootloader chose: host files inside ``workdir`` (removed with it) and args."""

    kernel: str
    ramdisk: str | None
    args: str
    workdir: Path

    def remove(self) -> None:
        """Delete the extracted files (once QEMU has loaded them, or the build failed)."""
        shutil.rmtree(self.workdir, ignore_errors=True)


def program(name: str) -> list[str]:
    """The command that runs bootloader ``name``: pyxen's pygrub for its names (run with this
    Python, so it is found without an installed script), else the program as given, a
    relative name looked up in PATH.

    :raise BootloaderError: a program that does not exist."""
    if name in PYGRUB_NAMES:
        return [sys.executable, "-m", "pyxen.pygrub"]
    if "/" not in name:
        found = shutil.which(name)
        if found is None:
            raise BootloaderError(f"bootloader '{name}' not found in PATH")
        return [found]
    if not os.access(name, os.X_OK):
        raise BootloaderError(f"bootloader '{name}' is not an executable program")
    return [name]


def boot_disk(cfg: DomainConfig) -> str:
    """The path the bootloader reads: the first disk's target (libxl's bootdisk), which must
    be a raw image or a block device (pyxen attaches nothing in Dom0 for a qcow2).

    :raise BootloaderError: no disk, or one pygrub cannot read."""
    if not cfg.disks:
        raise BootloaderError("cannot run bootloader with no boot disk")
    try:
        disk = libxlu_disk.parse_disk(cfg.disks[0])
    except libxlu_disk.DiskSyntaxError as err:
        raise BootloaderError(f"bootloader: cannot parse the first disk: {err}") from None
    target = disk.pdev_path
    if disk.script or not target:
        raise BootloaderError(f"bootloader: the first disk '{cfg.disks[0]}' is not a file or "
                              "block device pygrub can read (no target, or a script= target)")
    if disk.format != "raw":
        raise BootloaderError(f"bootloader: the first disk {target} is {disk.format}; pygrub "
                              "reads raw images and block devices only")
    if not os.path.exists(target):
        raise BootloaderError(f"bootloader: the first disk {target} does not exist")
    return target


def argv(cfg: DomainConfig, disk: str, output: Path, outdir: Path) -> list[str]:
    """libxl's argument vector for ``cfg`` (bootloader_arglist), without the program."""
    args: list[str] = []
    if cfg.kernel:
        args.append(f"--kernel={cfg.kernel}")
    if cfg.ramdisk:
        args.append(f"--ramdisk={cfg.ramdisk}")
    if cfg.cmdline:
        args.append(f"--args={cfg.cmdline}")
    args += [f"--output={output}", "--output-format=simple0", f"--output-directory={outdir}"]
    return args + list(cfg.bootloader_args) + [disk]


def parse_output(data: bytes) -> tuple[dict[str, str], list[str]]:
    """The ``simple0`` items (keyword, whitespace, value), and the unexpected ones as libxl
    logs them ("unexpected output from bootloader: `%s'")."""
    found: dict[str, str] = {}
    unexpected: list[str] = []
    for item in data.decode("utf-8", "surrogateescape").split("\0"):
        if not item:
            continue
        key, _, value = item.partition(" ")
        if key in ("kernel", "ramdisk", "args"):
            found[key] = value.lstrip(" \t")
        else:
            unexpected.append(f"unexpected output from bootloader: `{item}'")
    return found, unexpected


def timeout() -> float:
    """LIBXL_BOOTLOADER_TIMEOUT if it is a positive number of seconds, else 120."""
    text = os.environ.get("LIBXL_BOOTLOADER_TIMEOUT", "")
    try:
        value = float(text)
    except ValueError:
        return DEFAULT_TIMEOUT
    return value if value > 0 else DEFAULT_TIMEOUT


def run(paths: Paths, cfg: DomainConfig, limit: float | None = None) -> BootloaderResult:
    """Run ``cfg.bootloader`` on its first disk and return what it chose; its stderr goes to
    ``Paths.bootloader_log``. The caller removes the result (``remove``) once QEMU has loaded
    the files; on an error nothing is left.

    :raise BootloaderError: with libxl's messages, and the bootloader's last words."""
    assert cfg.bootloader is not None
    disk = boot_disk(cfg)
    command = program(cfg.bootloader)
    paths.bootloader_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"{cfg.name}.", dir=paths.bootloader_dir))
    try:
        output, outdir = workdir / "out", workdir / "d"
        outdir.mkdir(mode=0o700)
        output.touch(mode=0o600)
        log = paths.bootloader_log(cfg.name)
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {"TERM": "vt100"}
        for key in ("PATH", "PYTHONPATH"):
            if key in os.environ:
                env[key] = os.environ[key]
        seconds = timeout() if limit is None else limit
        with open(log, "wb") as errors:
            try:
                proc = subprocess.run(command + argv(cfg, disk, output, outdir),
                                      stdin=subprocess.DEVNULL, stdout=errors, stderr=errors,
                                      env=env, timeout=seconds, check=False)
            except subprocess.TimeoutExpired:
                raise BootloaderError(f"killing bootloader because of timeout ({seconds:g} s; "
                                      f"see {log})") from None
            except OSError as err:
                raise BootloaderError(f"cannot run bootloader {cfg.bootloader}: "
                                      f"{err.strerror}") from None
        if proc.returncode != 0:
            raise BootloaderError(f"bootloader failed - consult logfile {log}"
                                  + _last_words(log))
        found, unexpected = parse_output(output.read_bytes())
        if unexpected:
            with open(log, "a") as f:
                f.write("".join(u + "\n" for u in unexpected))
        kernel = found.get("kernel")
        if not kernel:
            raise BootloaderError(f"bootloader {cfg.bootloader} gave no kernel (see {log})")
        return BootloaderResult(kernel, found.get("ramdisk") or None, found.get("args", ""),
                                workdir)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def _last_words(log: Path) -> str:
    """": <the bootloader's last stderr line>", to make the error say why."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return f": {lines[-1]}" if lines else ""
