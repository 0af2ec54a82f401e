"""bootloader = "pygrub" end to end: a PV guest whose kernel, initrd and command line come from
the grub.cfg inside its own disk image (made with mkfs.ext4 -d, never mounted), the extracted
files gone while it runs, a save and restore that need them no more, a grub.cfg changed from
the host that the next ``xl reboot`` obeys, and one-line refusals of disks pygrub cannot read.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ..conftest import Host, qemu_pids_under
from .test_save_restore import ticks, wait_ticks

pytestmark = pytest.mark.integration

COUNTER = 'i=0; while true; do echo "tick $i"; i=$((i+1)); sleep 0.2; done &'
SCRIPT = 'echo "pygrub entry $(hostname)"; ' + COUNTER
KERNEL = "/boot/vmlinuz-6.1.0-57-cloud-amd64"
INITRD = "/boot/initrd.img-6.1.0-57-cloud-amd64"


def grub_cfg(default: int) -> str:
    run = base64.b64encode(SCRIPT.encode()).decode()
    entries = "".join(
        f"menuentry 'Debian GNU/Linux ({name})' --class debian $menuentry_id_option '{name}' {{\n"
        f"\tinsmod ext2\n\tlinux\t{KERNEL} root=/dev/xvda ro pyxen.name={name} pyxen.run={run}\n"
        f"\tinitrd\t{INITRD}\n}}\n" for name in ("first", "second"))
    return f'set default="{default}"\nset timeout=5\n{entries}'


def guest_disk(host: Host, tmp_path: Path, cfg_text: str | None) -> Path:
    """A whole-disk ext4 image (xen-tools' layout) with the demo kernel and initramfs in /boot,
    Debian's /vmlinuz links, and ``cfg_text`` as /boot/grub/grub.cfg."""
    root = tmp_path / "tree"
    (root / "boot/grub").mkdir(parents=True)
    shutil.copy(host.image.kernel, root / KERNEL.lstrip("/"))
    shutil.copy(host.image.ramdisk, root / INITRD.lstrip("/"))
    (root / "vmlinuz").symlink_to(KERNEL.lstrip("/"))
    (root / "initrd.img").symlink_to(INITRD.lstrip("/"))
    if cfg_text is not None:
        (root / "boot/grub/grub.cfg").write_text(cfg_text)
    image = tmp_path / "disk.img"
    subprocess.run(["truncate", "-s", "96M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(root), str(image)], check=True,
                   capture_output=True, timeout=120)
    return image


def write_cfg(host: Host, name: str, disk: str) -> Path:
    cfg = host.paths.root / f"{name}.cfg"
    cfg.write_text(f'name = "{name}"\nmemory = 128\nbootloader = "pygrub"\n'
                   f'extra = "console=ttyS0 quiet panic=-1"\ndisk = ["{disk}"]\n')
    return cfg


def qemu_cmdline(host: Host) -> list[str]:
    (pid,) = qemu_pids_under(host.paths.root)
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def test_pygrub_boots_grub_cfg_survives_save_restore_and_reboot_rereads_it(
        host: Host, tmp_path: Path) -> None:
    image = guest_disk(host, tmp_path, grub_cfg(0))
    cfg = write_cfg(host, "pg", f"{image},raw,xvda,rw")
    host.xl("create", str(cfg))
    host.wait_console("pg", "pygrub entry first")
    assert "pyxen demo guest up" in host.wait_console("pg")
    # xl.cfg's extra= went to pygrub as --args and is appended to the entry's args.
    argv = qemu_cmdline(host)
    append = argv[argv.index("-append") + 1]
    assert "pyxen.name=first" in append and append.endswith("console=ttyS0 quiet panic=-1")
    # The extracted kernel and initrd are gone once QEMU has them; the guest runs on.
    kernel = argv[argv.index("-kernel") + 1]
    assert kernel.startswith(str(host.paths.bootloader_dir)) and not Path(kernel).exists()
    assert list(host.paths.bootloader_dir.iterdir()) == []
    wait_ticks(host, "pg", 3)
    # xl list -l keeps the config as written: the bootloader, not the extracted files.
    (record,) = json.loads(host.xl("list", "-l", "pg").stdout)
    assert record["config"]["b_info"]["bootloader"] == "pygrub"
    assert "kernel" not in record["config"]["b_info"]

    # Save and restore: the restored guest goes on counting; it does not boot again.
    save = tmp_path / "pg.save"
    host.xl("save", "pg", str(save))
    before = max(ticks(host, "pg"))
    host.xl("restore", str(save))
    wait_ticks(host, "pg", before + 5)
    assert host.console_text("pg").count("pygrub entry") == 1
    assert list(host.paths.bootloader_dir.iterdir()) == []

    # The host edits grub.cfg inside the image (debugfs, no mount); the reboot obeys it.
    new_cfg = tmp_path / "grub.cfg"
    new_cfg.write_text(grub_cfg(1))
    done = subprocess.run(["debugfs", "-w", "-f", "-", str(image)], capture_output=True, text=True,
                          input=f"cd /boot/grub\nrm grub.cfg\nwrite {new_cfg} grub.cfg\n", timeout=60)
    assert done.returncode == 0, done.stderr
    host.xl("reboot", "pg")
    host.wait_console("pg", "pygrub entry second", timeout=180)
    argv = qemu_cmdline(host)
    assert "pyxen.name=second" in argv[argv.index("-append") + 1]
    assert list(host.paths.bootloader_dir.iterdir()) == []
    assert "pg" in host.domains()
    host.xl("destroy", "pg")


def test_disks_pygrub_cannot_read_are_refused_in_one_line(host: Host, tmp_path: Path) -> None:
    qcow = tmp_path / "disk.qcow2"
    qcow.write_bytes(b"QFI\xfb" + bytes(1020))
    blank = guest_disk(host, tmp_path, None)  # no boot config in it
    cases = (
        (f"{qcow},qcow2,xvda,rw", f"bootloader: the first disk {qcow} is qcow2; pygrub reads raw images and block devices only"),
        (f"{blank},raw,xvda,rw", "bootloader failed - consult logfile "
                                 f"{host.paths.bootloader_log('bad')}: RuntimeError: Unable to find "
                                 "partition containing kernel"),
        (f"{tmp_path / 'missing.img'},raw,xvda,rw", "bootloader: the first disk "
                                                    f"{tmp_path / 'missing.img'} does not exist"),
    )
    for disk, message in cases:
        cfg = write_cfg(host, "bad", disk)
        done = host.xl("create", str(cfg), check=False)
        assert done.returncode == 1
        last = done.stderr.splitlines()[-1]
        assert last == f"{cfg}: {message}", done.stderr
        assert list(host.domains()) == ["Domain-0"]
        assert qemu_pids_under(host.paths.root) == []
    assert not host.paths.bootloader_dir.exists() or list(host.paths.bootloader_dir.iterdir()) == []
    log = host.paths.bootloader_log("bad").read_text()
    assert "couldn't find bootloader config file in the image provided." in log
