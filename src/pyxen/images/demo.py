"""Builds the demo guest: a Debian cloud kernel and a busybox initramfs with its virtio modules.

Both come from Debian packages: the kernel .deb is downloaded with ``apt-get download`` and
unpacked (never installed on the host), busybox is the host's busybox-static. The result lives in
a cache folder (``$PYXEN_CACHE``, default /var/cache/pyxen) and is built once: a second build finds
it and returns at once.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..paths import cache_dir
from . import cpio

KERNEL_META_PACKAGE = "linux-image-cloud-amd64"
BUSYBOX = Path("/bin/busybox")
#: Drivers the guest loads at boot; their dependencies are found from each module's .modinfo.
WANTED_MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "virtio_console", "virtio_balloon")


class ImageBuildError(Exception):
    """The demo guest could not be built; the message names the step."""


@dataclass(frozen=True)
class DemoImage:
    """A built demo guest: what an xl.cfg's kernel= and ramdisk= point at."""

    kernel: Path
    ramdisk: Path
    kernel_release: str


def _run(argv: list[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(argv, cwd=cwd, check=True, capture_output=True, text=True)
    except FileNotFoundError as err:
        raise ImageBuildError(f"{argv[0]} not found (run 'make deps')") from err
    except subprocess.CalledProcessError as err:
        raise ImageBuildError(f"{' '.join(argv)} failed: {err.stderr.strip()}") from err
    return done.stdout


def kernel_package() -> str:
    """The versioned kernel package the cloud meta-package depends on.

    A machine whose package lists were never fetched knows no such package: fetch them once.
    """
    for attempt in range(2):
        try:
            out = _run(["apt-cache", "depends", KERNEL_META_PACKAGE])
        except ImageBuildError:
            out = ""
        for line in out.splitlines():
            m = re.match(r"\s*Depends:\s*(linux-image-\S+-cloud-amd64)\s*$", line)
            if m:
                return m.group(1)
        if attempt == 0:
            _run(["apt-get", "update", "-q"])
    raise ImageBuildError(f"apt-cache knows no kernel behind {KERNEL_META_PACKAGE}")


def fetch_kernel(dest: Path) -> Path:
    """Download and unpack the kernel .deb into ``dest``; return the unpacked tree."""
    tree = dest / "kernel"
    if (tree / "boot").is_dir():
        return tree
    dest.mkdir(parents=True, exist_ok=True)
    debs = sorted(dest.glob("linux-image-*.deb"))
    if not debs:
        _run(["apt-get", "download", kernel_package()], cwd=dest)
        debs = sorted(dest.glob("linux-image-*.deb"))
    tmp = Path(tempfile.mkdtemp(dir=dest))
    _run(["dpkg-deb", "-x", str(debs[-1]), str(tmp)])
    tmp.rename(tree)
    return tree


def module_depends(ko: bytes) -> list[str]:
    """The ``depends=`` list of a kernel module's .modinfo section."""
    m = re.search(rb"(?:^|\0)depends=([^\0]*)\0", ko)
    return [d for d in m.group(1).decode().split(",") if d] if m else []


def module_load_order(index: dict[str, Path], wanted: tuple[str, ...]) -> list[str]:
    """Modules to insmod, dependencies first."""
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        if name not in index:
            raise ImageBuildError(f"kernel has no module {name}")
        for dep in module_depends(index[name].read_bytes()):
            visit(dep)
        order.append(name)

    for name in wanted:
        visit(name)
    return order


def build_initramfs(modules_root: Path, out: Path) -> None:
    """A gzip'd newc cpio: busybox, the init script and the virtio modules."""
    index = {p.stem.replace("-", "_"): p for p in modules_root.rglob("*.ko")}
    order = module_load_order(index, WANTED_MODULES)
    init = resources.files("pyxen.images").joinpath("init.sh").read_bytes()
    agent = resources.files("pyxen.images").joinpath("xs-agent.sh").read_bytes()
    members = [cpio.directory(d) for d in ("bin", "dev", "lib", "lib/modules", "proc", "sys", "tmp")]
    members += [
        cpio.regular("bin/busybox", BUSYBOX.read_bytes(), 0o755),
        cpio.symlink("bin/sh", "busybox"),
        cpio.regular("init", init, 0o755),
        cpio.regular("bin/pyxen-guest-agent", agent, 0o755),
        cpio.regular("lib/modules/load", ("\n".join(order) + "\n").encode()),
    ]
    members += [cpio.regular(f"lib/modules/{n}.ko", index[n].read_bytes()) for n in order]
    raw = io.BytesIO()
    cpio.write(raw, members)
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(gzip.compress(raw.getvalue(), compresslevel=6))
    tmp.rename(out)


def build(cache: Path | None = None) -> DemoImage:
    """Build (or find) the demo guest under ``cache``/demo."""
    root = (cache or cache_dir()) / "demo"
    kernel_tree = fetch_kernel(root)
    vmlinuz = sorted((kernel_tree / "boot").glob("vmlinuz-*"))
    if not vmlinuz:
        raise ImageBuildError(f"no vmlinuz in {kernel_tree}/boot")
    release = vmlinuz[-1].name.removeprefix("vmlinuz-")
    kernel = root / "vmlinuz"
    ramdisk = root / "initrd.img"
    if not kernel.exists():
        shutil.copyfile(vmlinuz[-1], kernel)
    stamp = root / "initrd.stamp"
    scripts = b"".join(resources.files("pyxen.images").joinpath(n).read_bytes() for n in ("init.sh", "xs-agent.sh"))
    # Rebuild when the kernel, the init script or the guest agent changes.
    want = f"{release}\n{hashlib.sha256(scripts).hexdigest()}\n"
    if not ramdisk.exists() or not stamp.exists() or stamp.read_text() != want:
        if not BUSYBOX.exists():
            raise ImageBuildError(f"{BUSYBOX} missing (apt-get install busybox-static)")
        build_initramfs(kernel_tree / "lib" / "modules" / release, ramdisk)
        stamp.write_text(want)
    return DemoImage(kernel, ramdisk, release)


def main() -> int:
    try:
        image = build()
    except ImageBuildError as err:
        print(f"pyxen: demo guest: {err}")
        return 1
    print(f"kernel  = \"{image.kernel}\"\nramdisk = \"{image.ramdisk}\"")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
