"""pyxen.storage.volumes and .progress without a host: xen-tools' sizes, names and devices, the
plans and refusals, the filesystem and qcow2 headers (read from images made by the real
mkfs.ext4 and qemu-img), the ``--dir`` commands on a temporary directory, and the progress
display in both its forms."""

from __future__ import annotations

import io
import os
import struct
import subprocess
from pathlib import Path

import pytest

from pyxen.paths import Paths
from pyxen.storage import volumes
from pyxen.storage.progress import Progress, QemuImgError, percent, render_bar, render_line, run_qemu_img
from pyxen.storage.volumes import GuestRunning, Location, StorageError
from pyxen.toolstack import userdata
from pyxen.toolstack.config import DomainConfig

MiB = 1 << 20


# ---- sizes and names ------------------------------------------------------------------------
@pytest.mark.parametrize("text,size", [
    ("4G", 4 << 30), ("4g", 4 << 30), ("4GB", 4 << 30), ("4gb", 4 << 30), ("512M", 512 * MiB),
    ("512mb", 512 * MiB), ("512", 512 * MiB), ("1.5G", 1536 * MiB), ("0.0625G", 64 * MiB),
    ("0.5M", MiB), (" 128Mb ", 128 * MiB), (3 * MiB + 1, 4 * MiB)])
def test_sizes_take_xen_tools_units_and_round_up_to_a_mib(text: str | int, size: int) -> None:
    assert volumes.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "G", "4T", "4K", "-1G", "four", "4 G B", "1e3"])
def test_a_size_xen_tools_would_refuse_gets_its_message(text: str) -> None:
    with pytest.raises(StorageError) as err:
        volumes.parse_size(text, "swap")
    assert str(err.value) == "ERROR: 'swap' argument takes a suffixed (mb, MB, G, etc.) integer."


def test_a_zero_size_is_refused() -> None:
    with pytest.raises(StorageError, match="'size' argument must be more than zero"):
        volumes.parse_size("0M")


def test_format_size() -> None:
    assert [volumes.format_size(n) for n in (4 << 30, 512 * MiB, 1536 * MiB, MiB + 1)] == \
        ["4G", "512M", "1536M", "2M"]


@pytest.mark.parametrize("name", ["web", "web01.example.org", "a-b", "A9"])
def test_hostnames_accepted(name: str) -> None:
    volumes.check_hostname(name)


@pytest.mark.parametrize("name", ["", "-web", "web-", "we_b", "a..b", "web/x", "x" * 64, "web space"])
def test_hostnames_refused(name: str) -> None:
    with pytest.raises(StorageError, match=r"^ERROR: 'hostname' argument must be a valid hostname\.$"):
        volumes.check_hostname(name)


def test_a_location_is_exactly_one_of_lvm_and_dir() -> None:
    for bad in ({}, {"lvm": "vg0", "dir": Path("/srv")}):
        with pytest.raises(StorageError, match="one of --lvm VG or --dir DIR"):
            Location(**bad)  # type: ignore[arg-type]
    with pytest.raises(StorageError, match="invalid volume group name 'a/b'"):
        Location(lvm="a/b")


# ---- plans ----------------------------------------------------------------------------------
def test_lvm_plan_names_devices_and_xl_lines_as_xen_tools() -> None:
    vols = volumes.plan("web", Location(lvm="vg0"), "2Gb", "128Mb")
    assert [(v.name, str(v.path), v.size, v.vdev, v.fs) for v in vols] == [
        ("disk", "/dev/vg0/web-disk", 2 << 30, "xvda2", "ext4"),
        ("swap", "/dev/vg0/web-swap", 128 * MiB, "xvda1", "swap")]
    assert [v.target for v in vols] == ["phy:/dev/vg0/web-disk", "phy:/dev/vg0/web-swap"]
    assert volumes.disk_lines(vols) == (
        "disk        = [\n"
        "                  'phy:/dev/vg0/web-disk,xvda2,w',\n"
        "                  'phy:/dev/vg0/web-swap,xvda1,w',\n"
        "              ]\n")


def test_dir_plan_without_swap_puts_root_on_xvda1() -> None:
    vols = volumes.plan("db", Location(dir=Path("/srv/xen")), 100, None, fs=None)
    assert [(v.name, str(v.path), v.vdev, v.fs, v.disk_spec) for v in vols] == [
        ("disk", "/srv/xen/domains/db/disk.img", "xvda1", None, "file:/srv/xen/domains/db/disk.img,xvda1,w")]
    assert volumes.root_vdev(True) == "xvda2" and volumes.root_vdev(False) == "xvda1"


def test_plan_refuses_an_lv_name_lvm2_would_refuse() -> None:
    with pytest.raises(StorageError, match="invalid logical volume name"):
        volumes.plan("x" * 63 + "." + "y" * 63, Location(lvm="vg0"))


def test_a_qcow2_overlay_is_named_for_qemu() -> None:
    disk = volumes.plan("web", Location(dir=Path("/srv")), "1G", None)[0]
    snap = volumes.Volume("web", "s1", Path("/srv/domains/web/s1.qcow2"), disk.size, disk.vdev, None, "file:",
                          "qcow2", disk.path)
    assert snap.target == "qcow2:/srv/domains/web/s1.qcow2"
    assert snap.disk_spec == "format=qcow2,vdev=xvda1,access=rw,target=/srv/domains/web/s1.qcow2"


def test_shrinks_are_refused_and_say_why() -> None:
    with pytest.raises(StorageError, match=r"from 4G to 2G: its filesystem fills 4G$"):
        volumes.check_resize("web", Path("/d"), 4 << 30, 2 << 30, 4 << 30)
    with pytest.raises(StorageError, match=r"from 4G to 3G: resize only grows a disk$"):
        volumes.check_resize("web", Path("/d"), 4 << 30, 3 << 30, 2 << 30)
    volumes.check_resize("web", Path("/d"), 4 << 30, 4 << 30, 4 << 30)
    volumes.check_resize("web", Path("/d"), 4 << 30, 8 << 30, None)


@pytest.mark.parametrize("name", ["disk", "swap", "a/b", "", "-x"])
def test_snapshot_names_refused(name: str) -> None:
    with pytest.raises(StorageError, match="invalid snapshot name"):
        volumes.check_snapshot_name("web", name)


# ---- headers --------------------------------------------------------------------------------
def _superblock(blocks: int, log_block: int, hi: int = 0) -> bytes:
    sb = bytearray(1024)
    struct.pack_into("<I", sb, 4, blocks)
    struct.pack_into("<I", sb, 24, log_block)
    struct.pack_into("<H", sb, 56, 0xEF53)
    if hi:
        struct.pack_into("<I", sb, 96, 0x80)
        struct.pack_into("<I", sb, 336, hi)
    return bytes(sb)


def test_ext_size_reads_the_superblock() -> None:
    assert volumes.ext_size(_superblock(1000, 2)) == 1000 * 4096
    assert volumes.ext_size(_superblock(5, 2, hi=1)) == ((1 << 32) + 5) * 4096
    assert volumes.ext_size(bytes(1024)) is None


def test_headers_of_real_images(tmp_path: Path) -> None:
    img = tmp_path / "fs.img"
    img.write_bytes(b"")
    os.truncate(img, 24 * MiB)
    subprocess.run(["mkfs.ext4", "-F", "-q", str(img)], check=True, timeout=60)
    head = img.read_bytes()[:4096]
    assert volumes.content_kind(head) == "ext"
    assert volumes.ext_size(head[1024:2048]) == 24 * MiB
    swap = tmp_path / "swap.img"
    os.truncate(swap, 8 * MiB) if swap.exists() else swap.write_bytes(bytes(8 * MiB))
    subprocess.run(["mkswap", str(swap)], check=True, capture_output=True, timeout=60)
    assert volumes.content_kind(swap.read_bytes()[:4096]) == "swap"
    over = tmp_path / "o.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(img), "-F", "raw", str(over)],
                   check=True, timeout=60)
    assert volumes.content_kind(over.read_bytes()[:4096]) == "qcow2"
    assert volumes.qcow2_backing(over.read_bytes()[:65536]) == str(img)
    assert volumes.qcow2_backing(head) is None
    assert volumes.content_kind(bytes(4096)) is None


# ---- --dir commands on a temporary directory -------------------------------------------------
@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    """A host root with no xenstored: the toolstack's records are what says who runs."""
    return Paths(tmp_path / "root")


def test_create_sparse_and_full_images_with_xen_tools_refusals(tmp_path: Path, paths: Paths) -> None:
    said: list[str] = []
    vols = volumes.create("web", dir=tmp_path, size="32M", swap="8", paths=paths, log=said.append)
    disk, swap = vols
    assert disk.path == tmp_path / "domains/web/disk.img" and swap.path == tmp_path / "domains/web/swap.img"
    assert os.stat(disk.path).st_size == 32 * MiB and os.stat(disk.path).st_mode & 0o777 == 0o600
    assert os.stat(disk.path).st_blocks * 512 < 32 * MiB  # sparse: mkfs wrote a few blocks only
    assert volumes.content_kind(disk.path.read_bytes()[:4096]) == "ext"
    assert volumes.content_kind(swap.path.read_bytes()[:4096]) == "swap"
    assert said[0] == f"Creating partition image: {swap.path} (8M, sparse)"
    with pytest.raises(StorageError) as err:
        volumes.create("web", dir=tmp_path, size="32M", paths=paths)
    assert str(err.value) == "The partition image already exists.  Aborting."
    before = disk.path.read_bytes()[:4096]
    bars = io.StringIO()
    vols = volumes.create("web", dir=tmp_path, size="16M", swap=None, sparse=False, fs=None, force=True,
                          paths=paths, progress=lambda label, total: Progress(label, total, stream=bars, tty=False))
    assert os.stat(vols[0].path).st_size == 16 * MiB and os.stat(vols[0].path).st_blocks * 512 >= 16 * MiB
    assert vols[0].path.read_bytes()[:4096] != before
    assert bars.getvalue().splitlines()[0] == "Allocating disk.img: 0%"
    assert bars.getvalue().splitlines()[-1] == "Allocating disk.img: 100%"


def test_a_failing_mkfs_leaves_nothing(tmp_path: Path, paths: Paths) -> None:
    with pytest.raises(StorageError, match=r"nosuchfs filesystem on .*disk.img: mkfs.nosuchfs not found"):
        volumes.create("web", dir=tmp_path, size="8M", swap="4M", fs="nosuchfs", paths=paths)
    assert not (tmp_path / "domains/web").exists()


def _running(paths: Paths, domid: int, name: str, disks: tuple[str, ...]) -> None:
    userdata.store(paths, domid, DomainConfig(name=name, disks=disks))


def test_resize_grows_the_image_and_its_ext4_and_refuses_shrinks(tmp_path: Path, paths: Paths) -> None:
    disk = volumes.create("web", dir=tmp_path, size="16M", swap=None, paths=paths)[0]
    with pytest.raises(StorageError, match="from 16M to 8M: its filesystem fills 16M"):
        volumes.resize("web", dir=tmp_path, size="8M", paths=paths)
    grown = volumes.resize("web", dir=tmp_path, size="40M", paths=paths)
    assert grown.size == 40 * MiB == os.stat(disk.path).st_size
    assert volumes.ext_size(disk.path.read_bytes()[1024:2048]) == 40 * MiB
    with pytest.raises(StorageError, match=r"^The disk image for the guest domain db was not found where we "
                       r"expected it to be: .*/domains/db/disk.img$"):
        volumes.resize("db", dir=tmp_path, size="40M", paths=paths)


def test_a_disk_in_use_is_not_resized_snapshotted_or_removed(tmp_path: Path, paths: Paths) -> None:
    disk = volumes.create("web", dir=tmp_path, size="8M", swap=None, paths=paths)[0]
    _running(paths, 7, "other", (f"file:{disk.path},xvda1,w",))
    with pytest.raises(GuestRunning, match=r"^The guest web appears to be running!$"):
        volumes.resize("web", dir=tmp_path, size="16M", paths=paths)
    with pytest.raises(GuestRunning, match=r"^The guest web appears to be running!$"):
        volumes.snapshot("web", dir=tmp_path, name="s", qcow2=True, paths=paths)
    with pytest.raises(GuestRunning, match=r"^Skipping xen guest 'web' - it appears to be running\.$"):
        volumes.remove("web", dir=tmp_path, paths=paths)
    assert os.stat(disk.path).st_size == 8 * MiB
    userdata.remove(paths, 7)
    _running(paths, 8, "web", ())  # a domain by the guest's name counts as the guest, as in xen-tools
    with pytest.raises(GuestRunning):
        volumes.remove("web", dir=tmp_path, paths=paths)
    userdata.remove(paths, 8)
    assert volumes.remove("web", dir=tmp_path, paths=paths) == [tmp_path / "domains/web"]
    with pytest.raises(StorageError, match=f"no volumes of web in {tmp_path}"):
        volumes.remove("web", dir=tmp_path, paths=paths)


def test_qcow2_snapshot_of_an_image_and_what_it_blocks(tmp_path: Path, paths: Paths) -> None:
    disk = volumes.create("web", dir=tmp_path, size="8M", swap="4M", paths=paths)[0]
    with pytest.raises(StorageError, match="is an image file: only a qcow2 overlay"):
        volumes.snapshot("web", dir=tmp_path, name="s", paths=paths)
    snap = volumes.snapshot("web", dir=tmp_path, name="s", qcow2=True, paths=paths)
    assert snap.path == tmp_path / "domains/web/s.qcow2" and snap.backing == disk.path
    assert snap.disk_spec == f"format=qcow2,vdev=xvda2,access=rw,target={snap.path}"
    info = subprocess.run(["qemu-img", "info", "--output=json", str(snap.path)], capture_output=True,
                          text=True, check=True, timeout=60).stdout
    assert f'"backing-filename": "{disk.path}"' in info and '"backing-filename-format": "raw"' in info
    with pytest.raises(StorageError, match="snapshot 's' of web exists already"):
        volumes.snapshot("web", dir=tmp_path, name="s", qcow2=True, paths=paths)
    with pytest.raises(StorageError, match="backs the qcow2 overlay .*s.qcow2"):
        volumes.resize("web", dir=tmp_path, size="16M", paths=paths)
    rows = volumes.list_volumes(dir=tmp_path, paths=paths)
    assert [(r.hostname, r.volume.name, r.volume.fs, r.volume.format) for r in rows] == [
        ("web", "disk", "ext4", "raw"), ("web", "s", None, "qcow2"), ("web", "swap", "swap", "raw")]


def test_lvm_snapshot_without_device_mapper_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from pyxen.storage import lvm
    monkeypatch.setattr(lvm, "device_mapper_present", lambda: False)
    monkeypatch.setattr(lvm, "find", lambda vg, name: lvm.LogicalVolume(vg, name, MiB, ()))
    with pytest.raises(lvm.LvmError, match=r"LVM snapshots need the kernel's device-mapper \(dm-snapshot\)"):
        lvm.lvsnapshot("vg0", "web-disk", "web-s", MiB)


# ---- progress -------------------------------------------------------------------------------
def test_render_bar_and_line() -> None:
    assert percent(0, 0) == 100 and percent(50, 200) == 25 and percent(300, 200) == 100
    assert render_bar("copy", 50 * MiB, 200 * MiB, width=8) == "copy [##......]  25%  50.0/200.0 MiB"
    assert render_bar("copy", 200 * MiB, 200 * MiB, width=4) == "copy [####] 100%  200.0/200.0 MiB"
    assert render_line("copy", 1, 3) == "copy: 33%"


def test_progress_on_a_terminal_redraws_one_line() -> None:
    out = io.StringIO()
    now = [0.0]
    with Progress("alloc", 100, stream=out, tty=True, clock=lambda: now[0]) as bar:
        for i in range(1, 101):
            now[0] += 0.05
            bar.update(i)
    text = out.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1
    frames = text[:-1].split("\r")[1:]
    assert frames[0].startswith("alloc [....") and frames[-1].startswith("alloc [######") and "100%" in frames[-1]
    assert 40 <= len(frames) <= 60  # at most one redraw per 0.1 s


def test_progress_in_a_log_is_a_line_per_step() -> None:
    out = io.StringIO()
    with Progress("copy", 1000, stream=out, tty=False, step=25) as bar:
        for i in range(0, 1001, 7):
            bar.update(i)
    assert out.getvalue() == "copy: 0%\ncopy: 25%\ncopy: 50%\ncopy: 75%\ncopy: 100%\n"


def test_qemu_img_progress_and_errors(tmp_path: Path) -> None:
    src = tmp_path / "a.raw"
    src.write_bytes(os.urandom(MiB) * 4)
    out = io.StringIO()
    run_qemu_img(["convert", "-O", "qcow2", str(src), str(tmp_path / "a.qcow2")],
                 Progress("convert", 0, stream=out, tty=False))
    lines = out.getvalue().splitlines()
    assert lines[0] == "convert: 0%" and lines[-1] == "convert: 100%"
    with pytest.raises(QemuImgError, match="Could not open '.*/missing.raw'"):
        run_qemu_img(["info", str(tmp_path / "missing.raw")])


# ---- the CLI's own refusals (before anything runs) --------------------------------------------
@pytest.mark.parametrize("argv,message", [
    (["create", "--hostname", "web"], "pyxen storage: one of the arguments --lvm --dir is required"),
    (["create", "--hostname", "web", "--dir", "/x", "--swap", "1G", "--noswap"],
     "pyxen storage: argument --noswap: not allowed with argument --swap"),
    (["create", "--hostname", "web", "--dir", "/x", "--image", "thin"],
     "pyxen storage: argument --image: invalid choice: 'thin' (choose from 'sparse', 'full')"),
    (["create", "--hostname=-web", "--dir", "/x"], "ERROR: 'hostname' argument must be a valid hostname."),
    (["resize", "--hostname", "web", "--lvm", "vg0"], "pyxen storage: the following arguments are required: --size"),
    (["snapshot", "--hostname", "web", "--dir", "/nonexistent", "--name", "s"],
     "pyxen storage: /nonexistent is not a directory"),
])
def test_cli_refusals_are_one_line(argv: list[str], message: str, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    from pyxen.cli import storage
    try:
        rc = storage.main(argv, str(tmp_path))
    except SystemExit as exc:
        rc = int(exc.code or 0)
    out = capsys.readouterr()
    assert (rc, out.err, out.out) == (1, message + "\n", "")
    assert not Path("/x").exists()


def test_cli_list_table() -> None:
    from pyxen.cli.storage import render_list
    vol = volumes.plan("web", Location(lvm="vg0"), "4G", "512M")[0]
    rows = [volumes.Listed("vg0", "web", vol, ("web", "web2"))]
    assert render_list(rows).splitlines() == [
        "Host                 Volume        Size Content  Used by      Path",
        "web                  disk            4G ext4     web,web2     /dev/vg0/web-disk"]
