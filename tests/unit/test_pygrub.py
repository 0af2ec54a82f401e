"""pygrub: partition tables, the ext2/3/4 reader on images made by this host's mkfs.ext4, the
boot config parsers, the command line's outputs and errors, and the toolstack's bootloader run.

Images are built with ``mkfs.ext4 -d <dir>`` (e2fsprogs), so the reader is checked against
the real on-disk format (64bit, metadata_csum, extents, htree after ``e2fsck -D``)."""

from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyxen.paths import Paths
from pyxen.pygrub import conf
from pyxen.pygrub.__main__ import main as pygrub_main, render
from pyxen.pygrub.boot import PygrubError, boot, entry_index
from pyxen.pygrub.disk import Disk, partition_offsets
from pyxen.pygrub.ext4 import Ext4, FsError, NotFound
from pyxen.toolstack import bootloader
from pyxen.toolstack.config import ConfigError, DomainConfig, from_settings
from pyxen.libxlu.cfg import parse

MKFS = shutil.which("mkfs.ext4") or "/sbin/mkfs.ext4"
pytestmark = pytest.mark.skipif(not os.path.exists(MKFS), reason="needs e2fsprogs' mkfs.ext4")

GRUB_CFG = """\
# generated
set default="1"
set timeout=5
function load_video {
  insmod all_video
}
menuentry 'Debian GNU/Linux' --class debian $menuentry_id_option 'gnulinux-simple-x' {
\tinsmod ext2
\tsearch --no-floppy --fs-uuid --set=root abcd
\techo\t'Loading Linux ...'
\tlinux\t/boot/vmlinuz-6.1 root=/dev/xvda1 ro quiet
\tinitrd\t/boot/initrd.img-6.1
}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-x' {
\tmenuentry 'Debian GNU/Linux, with Linux 6.1' --class debian $menuentry_id_option 'gnulinux-6.1-advanced-x' {
\t\tlinux\t(hd0,msdos1)/boot/vmlinuz-6.1 root=/dev/xvda1 ro single
\t\tinitrd\t(hd0,msdos1)/boot/initrd.img-6.1
\t}
\tmenuentry 'Old kernel' {
\t\tlinux16\t/vmlinuz.old root=/dev/xvda1
\t\tinitrd16 /initrd.img.old
\t}
}
"""


# ---- images -------------------------------------------------------------------------------
def mkfs(tmp: Path, root: Path, size: str = "32M", *, fstype: str = "ext4",
         name: str = "fs.img", options: tuple[str, ...] = ()) -> Path:
    """A filesystem image holding ``root``'s tree, made by e2fsprogs."""
    image = tmp / name
    image.unlink(missing_ok=True)
    subprocess.run(["truncate", "-s", size, str(image)], check=True)
    subprocess.run([MKFS, "-q", "-F", "-t", fstype, *options, "-d", str(root), str(image)],
                   check=True, capture_output=True, timeout=60)
    return image


def guest_tree(tmp: Path, cfg_path: str = "boot/grub/grub.cfg", cfg_text: str = GRUB_CFG) -> Path:
    root = tmp / "root"
    (root / "boot").mkdir(parents=True, exist_ok=True)
    (root / "boot/vmlinuz-6.1").write_bytes(b"KERNEL-6.1" * 1000)
    (root / "boot/initrd.img-6.1").write_bytes(b"INITRD-6.1" * 3000)
    (root / "vmlinuz.old").write_bytes(b"OLD")
    (root / "initrd.img.old").write_bytes(b"OLDINITRD")
    os.symlink("boot/vmlinuz-6.1", root / "vmlinuz")
    os.symlink("boot/initrd.img-6.1", root / "initrd.img")
    (root / cfg_path).parent.mkdir(parents=True, exist_ok=True)
    (root / cfg_path).write_text(cfg_text)
    return root


def partitioned(tmp: Path, fs_images: list[Path], gpt: bool = False, first_lba: int = 2048) -> Path:
    """A disk with ``fs_images`` as partitions (an MBR, or a protective MBR and a GPT)."""
    disk = tmp / "disk.img"
    starts, lba = [], first_lba
    for img in fs_images:
        starts.append(lba)
        lba += -(-img.stat().st_size // 512) + 2048
    with open(disk, "wb") as f:
        f.truncate(lba * 512 + 1024 * 1024)
        mbr = bytearray(512)
        mbr[0x1FE:0x200] = b"\x55\xaa"
        if gpt:
            mbr[446 + 4] = 0xEE
            struct.pack_into("<II", mbr, 446 + 8, 1, lba)
            header = bytearray(512)
            header[:8] = b"EFI PART"
            struct.pack_into("<QII", header, 72, 2, 128, 128)
            entries = bytearray(128 * 128)
            for i, start in enumerate(starts):
                entries[i * 128:i * 128 + 16] = b"\x83" * 16  # a type GUID, not zero
                struct.pack_into("<QQ", entries, i * 128 + 32, start, start + 100)
            f.seek(512)
            f.write(header)
            f.seek(1024)
            f.write(entries)
        else:
            for i, start in enumerate(starts):
                mbr[446 + 16 * i + 4] = 0x83
                struct.pack_into("<II", mbr, 446 + 16 * i + 8, start, 100)
        f.seek(0)
        f.write(mbr)
        for img, start in zip(fs_images, starts):
            f.seek(start * 512)
            f.write(img.read_bytes())
    return disk


@pytest.fixture
def grub_image(tmp_path: Path) -> Path:
    return mkfs(tmp_path, guest_tree(tmp_path))


# ---- partitions ---------------------------------------------------------------------------
def test_a_disk_without_the_mbr_signature_is_one_filesystem_at_0(grub_image: Path) -> None:
    with Disk(str(grub_image)) as disk:
        assert partition_offsets(disk) == [0]


def test_mbr_entries_in_table_order_and_gpt_entries(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    small = mkfs(tmp_path, empty, "4M", name="a.img")
    grub = mkfs(tmp_path, guest_tree(tmp_path), name="b.img")
    for gpt in (False, True):
        disk = partitioned(tmp_path, [small, grub], gpt=gpt)
        with Disk(str(disk)) as d:
            offsets = partition_offsets(d)
        assert offsets == [2048 * 512, (2048 + 8192 + 2048) * 512]
        # The first partition has no boot config: pygrub goes on to the second.
        out = tmp_path / "out"
        out.mkdir(exist_ok=True)
        got = boot(str(disk), str(out))
        assert Path(got.kernel).read_bytes() == b"KERNEL-6.1" * 1000  # default 1, in the submenu
        assert got.args == "root=/dev/xvda1 ro single"
        for f in out.iterdir():
            f.unlink()


def test_offset_skips_partition_detection(tmp_path: Path) -> None:
    grub = mkfs(tmp_path, guest_tree(tmp_path), name="b.img")
    disk = partitioned(tmp_path, [grub])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(PygrubError, match="Unable to find partition containing kernel"):
        boot(str(disk), str(out), offset=0)
    got = boot(str(disk), str(out), offset=2048 * 512)
    assert got.args == "root=/dev/xvda1 ro single"


# ---- ext4 ---------------------------------------------------------------------------------
def sparse_file(path: Path, pieces: int, hole: int = 256 * 1024, piece: int = 5000) -> bytes:
    """A file of ``pieces`` data runs separated by holes: one extent each, so more than four
    need an extent index block."""
    with open(path, "wb") as f:
        for i in range(pieces):
            f.seek(i * (hole + piece))
            f.write(bytes([i % 251 + 1]) * piece)
    return path.read_bytes()


@pytest.mark.parametrize("fstype, options", [
    ("ext4", ()), ("ext4", ("-b", "4096")), ("ext4", ("-O", "^64bit,^metadata_csum")),
    ("ext3", ()), ("ext2", ()), ("ext4", ("-O", "inline_data")),
])
def test_files_symlinks_holes_and_big_files_read_back(tmp_path: Path, fstype: str,
                                                       options: tuple[str, ...]) -> None:
    root = tmp_path / "root"
    (root / "a/b").mkdir(parents=True)
    big = os.urandom(3 * 1024 * 1024 + 123)
    (root / "a/b/big").write_bytes(big)
    holes = sparse_file(root / "a/holes", 40)
    (root / "small").write_bytes(b"x" * 20)
    (root / "empty").write_bytes(b"")
    os.symlink("a/b/big", root / "rel")
    os.symlink("/a/b", root / "absdir")
    os.symlink("../small", root / "a/up")
    long_target = "/" + "/".join(["a"] + ["."] * 40 + ["b", "big"])
    os.symlink(long_target, root / "slow")
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    os.symlink("nowhere", root / "dangling")
    image = mkfs(tmp_path, root, "64M", fstype=fstype, options=options)
    with Disk(str(image)) as disk:
        fs = Ext4(disk)
        for path, data in (("/a/b/big", big), ("rel", big), ("/absdir/big", big), ("/slow", big),
                           ("/a/holes", holes), ("/small", b"x" * 20), ("/a/up", b"x" * 20),
                           ("/empty", b"")):
            assert fs.read(fs.open_file(path)) == data, path
        assert fs.readlink(fs.lookup("/slow", follow=False)) == long_target
        assert fs.readlink(fs.lookup("/rel", follow=False)) == "a/b/big"
        assert fs.lookup("/absdir").is_dir
        assert len(fs.extents(fs.open_file("/a/holes"))) >= 40 or fstype == "ext2"
        with pytest.raises(FsError, match="too many levels"):
            fs.lookup("/loop1")
        for missing in ("/dangling", "/nope", "/small/x", "/a/nope/x"):
            with pytest.raises(NotFound):
                fs.open_file(missing)
        assert fs.read(fs.open_file("/a/b/big"), 10) == big[:10]


def test_htree_directories_read_linearly(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "many").mkdir(parents=True)
    for i in range(3000):
        (root / "many" / f"file-with-a-long-name-{i:05d}").write_text(str(i))
    image = mkfs(tmp_path, root, "64M")
    subprocess.run(["e2fsck", "-fyD", str(image)], capture_output=True, timeout=60)
    debug = subprocess.run(["debugfs", "-R", "htree many", str(image)], capture_output=True,
                           text=True, timeout=60)
    assert "Root node dump" in debug.stdout  # the directory is indexed now
    with Disk(str(image)) as disk:
        fs = Ext4(disk)
        names = {n for n, _ in fs.entries(fs.lookup("/many"))}
        assert len(names - {".", ".."}) == 3000
        assert fs.read(fs.open_file("/many/file-with-a-long-name-02999")) == b"2999"


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.dictionaries(st.from_regex(r"[a-z]{1,12}", fullmatch=True),
                             st.tuples(st.binary(max_size=3000), st.integers(0, 200_000),
                                       st.integers(0, 3)), min_size=1, max_size=6))
def test_any_file_set_reads_back(tmp_path: Path, files: dict[str, tuple[bytes, int, int]]) -> None:
    """Whatever mkfs.ext4 stores (small, sparse, repeated runs) reads back byte for byte."""
    root = tmp_path / "hroot"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    expect = {}
    for name, (data, gap, repeat) in files.items():
        with open(root / name, "wb") as f:
            for r in range(repeat + 1):
                f.seek(r * (gap + len(data)))
                f.write(data)
        expect[name] = (root / name).read_bytes()
    image = mkfs(tmp_path, root, "16M", name="h.img")
    with Disk(str(image)) as disk:
        fs = Ext4(disk)
        for name, data in expect.items():
            assert fs.read(fs.open_file(name)) == data


def test_not_an_ext_filesystem_and_a_short_disk(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\0" * 4096)
    with Disk(str(junk)) as disk:
        with pytest.raises(FsError, match="bad superblock magic"):
            Ext4(disk)
        with pytest.raises(FsError, match="no ext2/3/4 filesystem at offset 8192"):
            Ext4(disk, 8192)
    empty = tmp_path / "e"
    empty.mkdir()
    encrypted = mkfs(tmp_path, empty, "8M", options=("-O", "encrypt"))
    with Disk(str(encrypted)) as disk:
        with pytest.raises(FsError, match="incompatible features 0x10000 this reader does not know"):
            Ext4(disk)


# ---- config parsers -----------------------------------------------------------------------
def test_grub2_entries_submenus_flattened_default_and_timeout() -> None:
    cfg = conf.parse_grub2(GRUB_CFG)
    assert [e.title for e in cfg.entries] == ["Debian GNU/Linux", "Debian GNU/Linux, with Linux 6.1",
                                              "Old kernel"]
    assert (cfg.default, cfg.timeout) == (1, 5)
    e = cfg.entries[1]
    assert (e.kernel, e.args, e.initrd) == ("/boot/vmlinuz-6.1", "root=/dev/xvda1 ro single",
                                            "/boot/initrd.img-6.1")
    assert (cfg.entries[2].kernel, cfg.entries[2].initrd) == ("/vmlinuz.old", "/initrd.img.old")
    assert cfg.entries[0].root == "" or cfg.entries[0].root is None
    assert cfg.warnings == []


@pytest.mark.parametrize("default, env, index, warning", [
    ("saved", None, 0, None),
    ("${saved_entry}", None, 0, conf.SAVED_UNSUPPORTED),
    ("${next_entry}", {"next_entry": "2"}, 0, conf.SAVED_UNSUPPORTED),
    ("${saved_entry}", {"saved_entry": "2"}, 2, None),
    ("${saved_entry}", {"saved_entry": "Debian GNU/Linux"}, 0, None),
    ("${saved_entry}", {"saved_entry": "gnulinux-advanced-x>gnulinux-6.1-advanced-x"}, 1, None),
    ("${saved_entry}", {"saved_entry": "Advanced options for Debian GNU/Linux>Old kernel"}, 2, None),
    ("saved", {"saved_entry": "Old kernel"}, 0, None),  # not under its submenu: GRUB would not find it
    ("${saved_entry}", {"saved_entry": "no such"}, 0, conf.SAVED_UNSUPPORTED),
    ("Debian GNU/Linux", None, 0, "Invalid value Debian GNU/Linux, setting default to 0"),
    ("1>2", None, 0, "Invalid value 1>2, setting default to 0"),
    ("2", None, 2, None),
])
def test_grub2_default(default: str, env: dict[str, str] | None, index: int,
                       warning: str | None) -> None:
    text = GRUB_CFG.replace('set default="1"', f'set default="{default}"')
    cfg = conf.parse_grub2(text, grubenv=env)
    assert cfg.default == index
    assert cfg.warnings == ([warning] if warning else [])


def test_grub2_syntax_errors() -> None:
    with pytest.raises(conf.ConfigSyntaxError, match="cannot nest menuentry"):
        conf.parse_grub2("menuentry 'a' {\nmenuentry 'b' {\n}\n}\n")
    with pytest.raises(conf.ConfigSyntaxError, match="closing brace without menuentry"):
        conf.parse_grub2("}\n")
    with pytest.raises(conf.ConfigSyntaxError, match="end of file with open menuentry"):
        conf.parse_grub2("menuentry 'a' {\nlinux /k\n")


def test_grubenv_block() -> None:
    text = "# GRUB Environment Block\nsaved_entry=1\nnext_entry=\n" + "#" * 900
    assert conf.parse_grubenv(text) == {"saved_entry": "1", "next_entry": ""}


def test_extlinux_case_insensitive_initrd_from_append_and_default_label() -> None:
    cfg = conf.parse_extlinux(
        "DEFAULT second\nTIMEOUT 30\nPROMPT 1\n"
        "LABEL first\n  KERNEL /vmlinuz-a\n  APPEND root=/dev/xvda1 initrd=/initrd-a ro\n"
        "label second\n  kernel vmlinuz-b\n  append initrd=initrd-b console=hvc0\n"
        "label xen\n  kernel mboot.c32\n  append xen.gz --- /vmlinuz-x root=/dev/x --- /initrd-x\n",
        "/boot/extlinux/extlinux.conf")
    assert [e.title for e in cfg.entries] == ["first", "second", "xen"]
    assert (cfg.default, cfg.timeout) == (1, 30)
    first, second, xen = cfg.entries
    assert (first.kernel, first.args, first.initrd) == ("/vmlinuz-a", "root=/dev/xvda1 ro", "/initrd-a")
    assert (second.kernel, second.initrd) == ("/boot/extlinux/vmlinuz-b", "/boot/extlinux/initrd-b")
    assert (xen.kernel, xen.args, xen.initrd) == ("/vmlinuz-x", "root=/dev/x", "/initrd-x")
    assert conf.parse_extlinux("label a\nkernel /k\n").default == 0  # no default: the first


def test_legacy_menu_lst() -> None:
    cfg = conf.parse_grub("default 1\ntimeout 3\nhiddenmenu\n"
                          "title Debian A\nroot (hd0,0)\nkernel /boot/vmlinuz-a root=/dev/xvda1 ro\n"
                          "initrd /boot/initrd-a\n"
                          "title Debian B\nkernel (hd0,0)/boot/vmlinuz-b\n")
    assert [e.title for e in cfg.entries] == ["Debian A", "Debian B"]
    assert (cfg.default, cfg.timeout) == (1, 3)
    a, b = cfg.entries
    assert (a.root, a.kernel, a.args, a.initrd) == ("(hd0,0)", "/boot/vmlinuz-a", "root=/dev/xvda1 ro",
                                                    "/boot/initrd-a")
    assert (b.kernel, b.args, b.initrd) == ("/boot/vmlinuz-b", None, None)
    assert conf.parse_grub("default saved\ntitle x\nkernel /k\n").default == 0


def test_grub_split_is_xens() -> None:
    assert conf.grub_split("set default=0", 1) == ["set", "default=0"]
    assert conf.grub_split("default=0", 1) == ["default", "0"]
    assert conf.grub_split("linux\t/vmlinuz root=x", 1) == ["linux", "/vmlinuz root=x"]
    assert conf.grub_split("timeout 5", 1) == ["timeout", "5"]


@pytest.mark.parametrize("path, text, kernel", [
    ("boot/grub/menu.lst", "title A\nkernel /vmlinuz.old\n", "OLD"),
    ("extlinux.conf", "label A\nkernel /vmlinuz.old\n", "OLD"),
    ("boot/isolinux/isolinux.cfg", "label A\nkernel ../../vmlinuz.old\n", "OLD"),
    ("grub2/grub.cfg", "menuentry 'A' {\nlinux /vmlinuz.old\n}\n", "OLD"),
])
def test_each_config_location_is_found(tmp_path: Path, path: str, text: str, kernel: str) -> None:
    image = mkfs(tmp_path, guest_tree(tmp_path, path, text))
    out = tmp_path / "out"
    out.mkdir()
    got = boot(str(image), str(out))
    assert Path(got.kernel).read_bytes() == kernel.encode()


def test_grub_cfg_wins_over_menu_lst(tmp_path: Path) -> None:
    root = guest_tree(tmp_path)
    (root / "boot/grub/menu.lst").write_text("title Legacy\nkernel /vmlinuz.old\n")
    image = mkfs(tmp_path, root)
    assert run_cli(["-q", "-n", "--output-format=simple", str(image)])[1].startswith(
        "kernel <kernel:/boot/vmlinuz-6.1>\n")


# ---- the command line ---------------------------------------------------------------------
def run_cli(args: list[str], stdin: str = "") -> tuple[int, str, str]:
    """pygrub as the toolstack runs it: a separate process, stdin not a terminal."""
    proc = subprocess.run([sys.executable, "-m", "pyxen.pygrub", *args], input=stdin,
                          capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


def test_output_formats_exactly(grub_image: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    rc, text, err = run_cli(["-q", f"--output-directory={out}", str(grub_image)])
    assert rc == 0, err
    assert err.startswith("Using <class 'grub.GrubConf.Grub2ConfigFile'> to parse /boot/grub/grub.cfg\n")
    kernel, ramdisk = sorted(out.iterdir())
    assert kernel.name.startswith("boot_kernel.") and ramdisk.name.startswith("boot_ramdisk.")
    assert stat.S_IMODE(kernel.stat().st_mode) == 0o600
    assert kernel.read_bytes() == b"KERNEL-6.1" * 1000
    assert ramdisk.read_bytes() == b"INITRD-6.1" * 3000
    assert text == f"linux (kernel '{kernel}')(ramdisk '{ramdisk}')(args 'root=/dev/xvda1 ro single')"
    for f in out.iterdir():
        f.unlink()
    output = tmp_path / "result"
    output.write_bytes(b"")
    rc, text, _ = run_cli(["-q", "--entry=Old kernel", "--args=extra=1", f"--output={output}",
                           "--output-format=simple0", f"--output-directory={out}", str(grub_image)])
    assert rc == 0 and text == ""
    kernel, ramdisk = sorted(out.iterdir())
    assert output.read_bytes() == (f"kernel {kernel}\0ramdisk {ramdisk}\0"
                                   f"args root=/dev/xvda1 extra=1\0\0").encode()
    assert render("simple", "/k", None, None) == "kernel /k\n\n"
    assert render("sxp", "/k", None, "a 'b'") == "linux (kernel '/k')(args \"a 'b'\")"


def test_list_entries(grub_image: Path) -> None:
    rc, text, _ = run_cli(["-l", str(grub_image)])
    assert rc == 0
    assert text.splitlines()[:5] == ["title: Debian GNU/Linux", "  root: None",
                                     "  kernel: /boot/vmlinuz-6.1", "  args: root=/dev/xvda1 ro quiet",
                                     "  initrd: /boot/initrd.img-6.1"]
    assert text.count("title: ") == 3


@pytest.mark.parametrize("args, expect", [
    (["--entry=0"], "kernel <kernel:/boot/vmlinuz-6.1>\nramdisk <ramdisk:/boot/initrd.img-6.1>\n"
                    "args root=/dev/xvda1 ro quiet\n\n"),
    (["--entry=Old kernel"], "kernel <kernel:/vmlinuz.old>\nramdisk <ramdisk:/initrd.img.old>\n"
                             "args root=/dev/xvda1\n\n"),
    (["--entry=7", "-q"], "kernel <kernel:/boot/vmlinuz-6.1>\nramdisk <ramdisk:/boot/initrd.img-6.1>\n"
                          "args root=/dev/xvda1 ro single\n\n"),  # out of range: ignored
    (["-q", "--kernel=/vmlinuz", "--args=console=hvc0"], "kernel <kernel:/vmlinuz>\nargs console=hvc0\n\n"),
    (["-q", "--kernel=/vmlinuz", "--ramdisk=/initrd.img"],
     "kernel <kernel:/vmlinuz>\nramdisk <ramdisk:/initrd.img>\n\n"),
])
def test_not_really_and_entry_choice(grub_image: Path, args: list[str], expect: str) -> None:
    rc, text, err = run_cli(["-n", "--output-format=simple", *args, str(grub_image)])
    assert (rc, text) == (0, expect), err


@pytest.mark.parametrize("args, rc, message", [
    ([], 1, "Usage: "),
    (["--bogus"], 1, "Usage: "),
    (["--output-format=xml"], 1, "unknown output format xml"),
    (["-q", "--output-directory=/nonexistent/dir"], 1, "/nonexistent/dir is not an existing directory"),
    (["--runas=1000"], 1, "In order to use --runas, you must also set --entry or -q"),
    (["-q", "--runas=1000"], 1, "--runas is not supported"),
    (["-q", "-n", "--kernel=/nope"], 1, "The requested kernel file does not exist"),
    (["-q", "-n", "--offset=12"], 1, "RuntimeError: Unable to find partition containing kernel"),
    (["-q", "-n", "--offset=x"], 1, "--offset=x is not a byte offset"),
])
def test_errors(grub_image: Path, args: list[str], rc: int, message: str) -> None:
    got_rc, _, err = run_cli([*args, str(grub_image)] if args else [])
    assert got_rc == rc and message in err, err


def test_no_config_and_no_disk(tmp_path: Path) -> None:
    empty = tmp_path / "e"
    empty.mkdir()
    image = mkfs(tmp_path, empty, "8M")
    rc, _, err = run_cli(["-q", "-n", str(image)])
    assert rc == 1
    assert err.splitlines() == [
        "pygrub: offset 0: couldn't find bootloader config file in the image provided.",
        "RuntimeError: Unable to find partition containing kernel"]
    rc, _, err = run_cli(["-q", "-n", str(tmp_path / "missing.img")])
    assert rc == 1 and "cannot open" in err and "No such file or directory" in err


def test_isconfig_reads_a_host_file(tmp_path: Path) -> None:
    cfg = tmp_path / "grub.cfg"
    cfg.write_text(GRUB_CFG)
    rc, text, _ = run_cli(["--isconfig", "--entry=0", str(cfg)])
    assert (rc, text) == (0, "  kernel: /boot/vmlinuz-6.1\n  initrd: /boot/initrd.img-6.1\n"
                             "  args: root=/dev/xvda1 ro quiet\n")


def test_menu_boots_the_default_at_timeout_and_takes_a_number(grub_image: Path) -> None:
    """-i with a terminal-less stdin is -q; the menu itself is driven through a pipe here."""
    import io
    from pyxen.pygrub.__main__ import menu
    cfg = conf.parse_grub2(GRUB_CFG.replace("set timeout=5", "set timeout=1"))
    r, w = os.pipe()
    with os.fdopen(r) as stdin, os.fdopen(w, "w"):
        out = io.StringIO()
        assert menu(cfg, stdin, out) == 1
        assert "pyGRUB  version 0.7" in out.getvalue()
        assert "Will boot selected entry in  1 seconds" in out.getvalue()
    r, w = os.pipe()
    with os.fdopen(r) as stdin, os.fdopen(w, "w") as feed:
        feed.write("d\n2\n")
        feed.flush()
        assert menu(cfg, stdin, io.StringIO()) == 2


def test_entry_index() -> None:
    cfg = conf.parse_grub2(GRUB_CFG)
    assert (entry_index(cfg, "2"), entry_index(cfg, "Old kernel"), entry_index(cfg, "x")) == (2, 2, None)


# ---- the toolstack's side -----------------------------------------------------------------
def cfg_of(text: str) -> DomainConfig:
    return from_settings(parse(text, "t.cfg"), "t.cfg", cwd="/somewhere")


def test_xl_cfg_bootloader_keys() -> None:
    cfg = cfg_of('name = "g"\nbootloader = "pygrub"\nbootloader_args = ["-q", "--entry=1"]\n'
                 'kernel = "/vmlinuz"\ndisk = ["/d.img,raw,xvda,rw"]\n')
    assert (cfg.bootloader, cfg.bootloader_args, cfg.kernel) == ("pygrub", ("-q", "--entry=1"), "/vmlinuz")
    old = cfg_of('name = "g"\nbootloader = "/usr/bin/pygrub"\nbootloader_args = "-q  --entry=1"\n')
    assert old.bootloader_args == ("-q", "--entry=1")
    assert any("bootloader='/usr/bin/pygrub' is deprecated; use bootloader='pygrub' instead" in w
               for w in old.warnings)
    assert any('Specifying "bootloader_args" as a string is deprecated' in w for w in old.warnings)
    hvm = cfg_of('name = "h"\ntype = "hvm"\nbootloader = "pygrub"\n')
    assert hvm.bootloader is None  # libxl runs a bootloader for PV and PVH only
    with pytest.raises(ConfigError, match="Neither kernel nor bootloader specified"):
        cfg_of('name = "g"\n')
    assert cfg_of('name = "g"\nkernel = "k"\n').kernel == "/somewhere/k"
    assert cfg_of('name = "g"\nbootloader = "pygrub"\nkernel = "k"\n').kernel == "k"


def test_libxl_argument_vector() -> None:
    cfg = cfg_of('name = "g"\nbootloader = "pygrub"\nbootloader_args = ["--entry=1"]\n'
                 'kernel = "/vmlinuz"\nramdisk = "/initrd.img"\nroot = "/dev/xvda1"\nextra = "quiet"\n'
                 'disk = ["/d.img,raw,xvda,rw"]\n')
    assert bootloader.argv(cfg, "/d.img", Path("/w/out"), Path("/w/d")) == [
        "--kernel=/vmlinuz", "--ramdisk=/initrd.img", "--args=root=/dev/xvda1 quiet",
        "--output=/w/out", "--output-format=simple0", "--output-directory=/w/d", "--entry=1",
        "/d.img"]
    assert bootloader.program("pygrub") == [sys.executable, "-m", "pyxen.pygrub"]
    assert bootloader.program("/usr/bin/pygrub") == [sys.executable, "-m", "pyxen.pygrub"]
    with pytest.raises(bootloader.BootloaderError, match="not found in PATH"):
        bootloader.program("no-such-loader")


def test_simple0_output_parsing() -> None:
    found, unexpected = bootloader.parse_output(b"kernel /k\0ramdisk /r\0args a b  c\0junk x\0\0")
    assert found == {"kernel": "/k", "ramdisk": "/r", "args": "a b  c"}
    assert unexpected == ["unexpected output from bootloader: `junk x'"]


@pytest.mark.parametrize("disk, message", [
    (None, "cannot run bootloader with no boot disk"),
    ("/x.qcow2,qcow2,xvda,rw", "is qcow2; pygrub reads raw images and block devices only"),
    ("/nonexistent.img,raw,xvda,rw", "the first disk /nonexistent.img does not exist"),
])
def test_boot_disk_refusals(disk: str | None, message: str) -> None:
    text = 'name = "g"\nbootloader = "pygrub"\n' + (f'disk = ["{disk}"]\n' if disk else "")
    with pytest.raises(bootloader.BootloaderError, match=message):
        bootloader.boot_disk(cfg_of(text))


def test_run_pyxens_pygrub_and_failures(grub_image: Path, tmp_path: Path) -> None:
    paths = Paths(tmp_path / "root")
    cfg = cfg_of(f'name = "g"\nbootloader = "pygrub"\nbootloader_args = ["--entry=2"]\n'
                 f'extra = "x=1"\ndisk = ["{grub_image},raw,xvda,rw"]\n')
    got = bootloader.run(paths, cfg)
    assert Path(got.kernel).read_bytes() == b"OLD" and Path(got.ramdisk or "").read_bytes() == b"OLDINITRD"
    assert got.args == "root=/dev/xvda1 x=1"
    assert Path(got.kernel).parent.parent == got.workdir
    got.remove()
    assert not got.workdir.exists()
    assert list(paths.bootloader_dir.iterdir()) == []

    empty = tmp_path / "e"
    empty.mkdir()
    blank = mkfs(tmp_path, empty, "8M", name="blank.img")
    bad = cfg_of(f'name = "g"\nbootloader = "pygrub"\ndisk = ["{blank},raw,xvda,rw"]\n')
    with pytest.raises(bootloader.BootloaderError) as info:
        bootloader.run(paths, bad)
    assert str(info.value) == (f"bootloader failed - consult logfile {paths.bootloader_log('g')}: "
                               "RuntimeError: Unable to find partition containing kernel")
    assert list(paths.bootloader_dir.iterdir()) == []

    slow = tmp_path / "slow-loader"
    slow.write_text("#!/bin/sh\nsleep 30\n")
    slow.chmod(0o755)
    stuck = cfg_of(f'name = "g"\nbootloader = "{slow}"\ndisk = ["{grub_image},raw,xvda,rw"]\n')
    with pytest.raises(bootloader.BootloaderError, match="killing bootloader because of timeout"):
        bootloader.run(paths, stuck, limit=0.5)
    assert list(paths.bootloader_dir.iterdir()) == []


def test_a_loop_device_reads_like_its_file(grub_image: Path, tmp_path: Path) -> None:
    """An LV is a block device (pyxen.storage.lvm makes it a loop device): the same reads,
    sized by seeking to its end; boot_config gives the config pygrub would use."""
    from pyxen.pygrub import boot_config
    done = subprocess.run(["losetup", "-f", "--show", "-r", str(grub_image)], capture_output=True,
                          text=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"no loop device: {done.stderr.strip()}")
    dev = done.stdout.strip()
    try:
        out = tmp_path / "out"
        out.mkdir()
        got = boot(dev, str(out), entry="0")
        assert Path(got.kernel).read_bytes() == b"KERNEL-6.1" * 1000
        assert [e.title for e in boot_config(dev).entries][0] == "Debian GNU/Linux"
    finally:
        subprocess.run(["losetup", "-d", dev], timeout=30)


def test_xapi_pv_bootloader_becomes_xl_cfg_keys() -> None:
    """VM.PV_bootloader / PV_bootloader_args reach the toolstack as xl.cfg's keys."""
    from pyxen.xapi import xenops
    spec = xenops.VmSpec(uuid="6f1b3a2e-1111-4c3b-9a51-0123456789ab", name="vm",
                         memory_static_max=256 << 20, memory_dynamic_max=256 << 20,
                         bootloader="pygrub", bootloader_args="-q  --entry=1",
                         disks=(xenops.DiskSpec("/d.img", "xvda", "w"),))
    cfg = cfg_of(xenops.xl_cfg(spec))
    assert (cfg.bootloader, cfg.bootloader_args, cfg.kernel) == ("pygrub", ("-q", "--entry=1"), None)


DEBIAN_GRUB_CFG = r"""#
# DO NOT EDIT THIS FILE
#
### BEGIN /etc/grub.d/00_header ###
if [ -s $prefix/grubenv ]; then
  set have_grubenv=true
  load_env
fi
if [ "${next_entry}" ] ; then
   set default="${next_entry}"
   set next_entry=
   save_env next_entry
   set boot_once=true
else
   set default="${saved_entry}"
fi

if [ x"${feature_menuentry_id}" = xy ]; then
  menuentry_id_option="--id"
else
  menuentry_id_option=""
fi

export menuentry_id_option

function savedefault {
  if [ -z "${boot_once}" ]; then
    saved_entry="${chosen}"
    save_env saved_entry
  fi
}
function load_video {
  if [ x$feature_all_video_module = xy ]; then
    insmod all_video
  else
    insmod vga
  fi
}
terminal_input console
terminal_output console
if [ "${recordfail}" = 1 ] ; then
  set timeout=30
else
  if [ x$feature_timeout_style = xy ] ; then
    set timeout_style=menu
    set timeout=5
  else
    set timeout=5
  fi
fi
### END /etc/grub.d/00_header ###
### BEGIN /etc/grub.d/10_linux ###
function gfxmode {
	set gfxpayload="${1}"
}
set linux_gfx_mode=
export linux_gfx_mode
menuentry 'Debian GNU/Linux' --class debian --class gnu-linux --class gnu --class os $menuentry_id_option 'gnulinux-simple-0f3c' {
	load_video
	insmod gzio
	if [ x$grub_platform = xxen ]; then insmod xzio; insmod lzopio; fi
	insmod ext2
	set root='hd0'
	search --no-floppy --fs-uuid --set=root 0f3c
	echo	'Loading Linux 6.1.0-18-amd64 ...'
	linux	/boot/vmlinuz-6.1.0-18-amd64 root=UUID=0f3c ro console=hvc0 quiet
	echo	'Loading initial ramdisk ...'
	initrd	/boot/initrd.img-6.1.0-18-amd64
}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-0f3c' {
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-18-amd64' --class debian $menuentry_id_option 'gnulinux-6.1.0-18-amd64-advanced-0f3c' {
		linux	/boot/vmlinuz-6.1.0-18-amd64 root=UUID=0f3c ro console=hvc0 quiet
		initrd	/boot/initrd.img-6.1.0-18-amd64
	}
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-18-amd64 (recovery mode)' --class debian $menuentry_id_option 'gnulinux-6.1.0-18-amd64-recovery-0f3c' {
		linux	/boot/vmlinuz-6.1.0-18-amd64 root=UUID=0f3c ro single console=hvc0
		initrd	/boot/initrd.img-6.1.0-18-amd64
	}
}
### END /etc/grub.d/10_linux ###
### BEGIN /etc/grub.d/41_custom ###
if [ -f  ${config_directory}/custom.cfg ]; then
  source ${config_directory}/custom.cfg
elif [ -z "${config_directory}" -a -f  $prefix/custom.cfg ]; then
  source $prefix/custom.cfg
fi
### END /etc/grub.d/41_custom ###
"""


@pytest.mark.parametrize("grubenv, index, warnings", [
    (None, 0, [conf.SAVED_UNSUPPORTED, conf.SAVED_UNSUPPORTED]),
    ({"saved_entry": "gnulinux-advanced-0f3c>gnulinux-6.1.0-18-amd64-recovery-0f3c"}, 2,
     [conf.SAVED_UNSUPPORTED]),
    ({"saved_entry": "1"}, 1, [conf.SAVED_UNSUPPORTED]),
])
def test_a_debian_grub_mkconfig_file(grubenv: dict[str, str] | None, index: int,
                                     warnings: list[str]) -> None:
    """What grub-mkconfig writes on Debian 12 with GRUB_DEFAULT=saved: functions, if/else
    blocks and the submenu read line by line; the default from grubenv's saved_entry."""
    cfg = conf.parse_grub2(DEBIAN_GRUB_CFG, grubenv=grubenv)
    assert [e.title for e in cfg.entries] == [
        "Debian GNU/Linux", "Debian GNU/Linux, with Linux 6.1.0-18-amd64",
        "Debian GNU/Linux, with Linux 6.1.0-18-amd64 (recovery mode)"]
    assert (cfg.default, cfg.timeout) == (index, 5)
    assert cfg.warnings == warnings  # the ${next_entry} line always warns, as in Xen
    first = cfg.entries[0]
    assert (first.kernel, first.args, first.initrd, first.root) == (
        "/boot/vmlinuz-6.1.0-18-amd64", "root=UUID=0f3c ro console=hvc0 quiet",
        "/boot/initrd.img-6.1.0-18-amd64", "hd0")


def test_pygrub_stands_alone() -> None:
    """pygrub is a program of its own (Xen ships it apart from libxl): importing it loads no
    other part of pyxen, so it starts fast and runs wherever the disk is."""
    code = "import sys, pyxen.pygrub.__main__; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=60)
    ours = {m for m in out.stdout.split() if m.startswith("pyxen.")}
    assert ours and all(m.startswith("pyxen.pygrub") for m in ours), sorted(ours)
