"""``pyxen image create``'s pure parts: options, sizes, the MAC, password hashes, the xl config,
the guest's grub.cfg (its own generator script run on a fake tree, and again after a "kernel
upgrade" through the kernel hook), apt sources, and the guest agent's syntax under dash and busybox."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pyxen.cli import image as cli
from pyxen.images import debian
from pyxen.images.debian import ImageError, ImageSpec
from pyxen.paths import Paths


def spec(**kw: object) -> ImageSpec:
    base: dict[str, object] = {"hostname": "web", "lvm": "vg0", "dhcp": True}
    base.update(kw)
    return ImageSpec(**base)  # type: ignore[arg-type]


# -- sizes, names, options ---------------------------------------------------------------------

@pytest.mark.parametrize("text,size", [("4G", 4 << 30), ("4gb", 4 << 30), ("512M", 512 << 20),
                                       ("512mb", 512 << 20), ("256", 256 << 20), ("1.5G", 3 << 29)])
def test_sizes_are_xen_tools_units(text: str, size: int) -> None:
    assert debian.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "4T", "G", "-1G", "0", "4 Q"])
def test_bad_sizes_are_refused_by_name(text: str) -> None:
    with pytest.raises(ImageError, match=f"invalid --size '{text}'"):
        debian.parse_size(text, "--size")


def test_dist_names() -> None:
    assert debian.release_of("stable") == debian.release_of("bookworm") == "bookworm"
    with pytest.raises(ImageError, match="unsupported distribution 'sid'"):
        debian.release_of("sid")


def test_mac_is_xen_tools_deterministic_one() -> None:
    digest = hashlib.md5(b"web10.0.0.5,10.0.0.6bookworm").hexdigest()
    want = "00:16:3E:" + ":".join([digest[0:2], digest[2:4], digest[4:6]]).upper()
    assert debian.xen_tools_mac("web", ["10.0.0.5", "10.0.0.6"], False, "bookworm") == want
    assert debian.xen_tools_mac("web", [], True, "bookworm").startswith("00:16:3E:")
    assert debian.xen_tools_mac("web", [], True, "bookworm") != debian.xen_tools_mac("db", [], True, "bookworm")
    assert spec(mac="00:16:3e:00:00:01").mac_address == "00:16:3e:00:00:01"
    with pytest.raises(ImageError, match="invalid MAC address '01:00:00:00:00:00'"):
        spec(mac="01:00:00:00:00:00").validate()


@pytest.mark.parametrize("kw,message", [
    ({"hostname": "bad_name"}, "invalid hostname 'bad_name'"),
    ({"lvm": None}, "exactly one of --lvm and --dir"),
    ({"dir": Path("/srv")}, "exactly one of --lvm and --dir"),
    ({"dhcp": False}, "give --ip or --dhcp"),
    ({"ips": ["10.0.0.5"]}, "--ip and --dhcp exclude each other"),
    ({"dhcp": False, "ips": ["10.0.0"]}, "invalid --ip '10.0.0'"),
    ({"vcpus": 0}, "invalid --vcpus 0"),
    ({"size": 100 << 20}, "--size must be at least 512M"),
    ({"dist": "sid"}, "unsupported distribution"),
    ({"hash_method": "des"}, "invalid --hash_method 'des'"),
])
def test_bad_requests_are_refused_before_anything_is_made(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ImageError, match=message):
        spec(**kw).validate()


def test_cli_options_map_to_the_spec(tmp_path: Path) -> None:
    ns = cli.parser().parse_args(["create", "--hostname", "web", "--dir", "/srv/xen", "--ip", "10.0.0.5",
                                  "--ip", "10.0.0.6", "--gateway", "10.0.0.1", "--netmask", "255.255.0.0",
                                  "--size", "8G", "--noswap", "--memory", "1G", "--vcpus", "2",
                                  "--role", "a,b", "--role", "c", "--genpass_len", "12",
                                  "--hash_method", "md5", "--dist", "stable"])
    s = cli.spec_from_args(ns, Paths.from_env(tmp_path))
    assert (s.size, s.swap, s.memory, s.vcpus) == (8 << 30, None, 1 << 30, 2)
    assert s.ips == ["10.0.0.5", "10.0.0.6"] and s.gateway == "10.0.0.1" and not s.dhcp
    assert s.roles == ["a", "b", "c"] and s.genpass_len == 12 and s.hash_method == "md5"
    assert s.output == tmp_path  # the pyxen config folder (Xen's /etc/xen)
    assert s.release == "bookworm"
    assert debian.prefix_len(s.netmask) == 16
    d = cli.spec_from_args(cli.parser().parse_args(["create", "--hostname", "w", "--lvm", "vg", "--dhcp"]),
                           Paths.from_env(tmp_path))
    assert (d.size, d.swap, d.memory, d.vcpus, d.bridge) == (4 << 30, 512 << 20, 256 << 20, 1, "xenbr0")


@pytest.mark.parametrize("argv,message", [
    (["create", "--lvm", "vg", "--dhcp"], "the following arguments are required: --hostname"),
    (["create", "--hostname", "w", "--lvm", "vg", "--dir", "/x", "--dhcp"], "not allowed with argument"),
    (["create", "--hostname", "w", "--lvm", "vg"], "one of the arguments --ip --dhcp is required"),
])
def test_cli_refuses_bad_option_sets_in_one_line(argv: list[str], message: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.parser().parse_args(argv)
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_cli_bad_size_exits_1_and_makes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["create", "--hostname", "w", "--dir", str(tmp_path), "--dhcp", "--size", "4Q",
                   "--output", str(tmp_path)])
    assert rc == 1
    assert capsys.readouterr().err == "pyxen image: invalid --size '4Q' (a number with M, MB, G or GB)\n"
    assert list(tmp_path.iterdir()) == []


def test_existing_config_or_image_is_refused_without_force(tmp_path: Path) -> None:
    s = spec(lvm=None, dir=tmp_path, output=tmp_path)
    (tmp_path / "web.cfg").write_text("name = 'web'\n")
    with pytest.raises(ImageError, match=f"The Xen configuration file {tmp_path}/web.cfg exists"):
        debian.check_free(s)
    (tmp_path / "web.cfg").unlink()
    (tmp_path / "domains/web").mkdir(parents=True)
    (tmp_path / "domains/web/disk.img").write_bytes(b"")
    with pytest.raises(ImageError, match="The partition image .*/domains/web/disk.img already exists.  Aborting."):
        debian.check_free(s)
    s.force = True
    debian.check_free(s)


def test_file_volumes_are_exact_sparse_files_and_undo_removes_them(tmp_path: Path) -> None:
    s = spec(lvm=None, dir=tmp_path, size=1 << 30)
    undo = debian.Undo()
    (name, target, size), (sname, starget, ssize) = s.volumes()
    assert (name, sname) == ("disk", "swap")
    assert target == f"file:{tmp_path}/domains/web/disk.img" and starget == f"file:{tmp_path}/domains/web/swap.img"
    path = debian.make_volume(s, name, target, size, undo)
    assert path.stat().st_size == 1 << 30 and path.stat().st_blocks == 0
    assert path.stat().st_mode & 0o777 == 0o600  # xen-tools' umask 077
    lines: list[str] = []
    undo.run(lambda pct, text: lines.append(text))
    assert not (tmp_path / "domains").exists()
    assert lines == [f"removed {tmp_path}/domains", f"removed {path}"]


# -- passwords ---------------------------------------------------------------------------------

@pytest.mark.parametrize("method,prefix,flag", [("md5", "$1$", "-1"), ("sha256", "$5$", "-5"),
                                                ("sha512", "$6$", "-6")])
def test_password_hashes_verify(method: str, prefix: str, flag: str) -> None:
    hashed = debian.hash_password("s3cret", method)
    assert hashed.startswith(prefix)
    salt = hashed.split("$")[2]
    again = subprocess.run(["openssl", "passwd", flag, "-salt", salt, "s3cret"], capture_output=True,
                           text=True, check=True).stdout.strip()
    assert again == hashed
    wrong = subprocess.run(["openssl", "passwd", flag, "-salt", salt, "other"], capture_output=True,
                           text=True, check=True).stdout.strip()
    assert wrong != hashed


def test_genpass_and_shadow() -> None:
    pw = debian.genpass(23)
    assert len(pw) == 23 and pw.isalnum() and debian.genpass(23) != pw
    shadow = "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"
    out = debian.set_shadow_password(shadow, "root", "$6$salt$hash")
    assert out.splitlines()[0].startswith("root:$6$salt$hash:") and out.splitlines()[1] == shadow.splitlines()[1]
    with pytest.raises(ImageError, match="no nobody in /etc/shadow"):
        debian.set_shadow_password(shadow, "nobody", "x")


# -- the xl config and the guest's files -------------------------------------------------------

def test_xl_cfg_is_xen_tools_template_with_pygrub(tmp_path: Path) -> None:
    text = debian.xl_cfg(spec(vcpus=2, memory=512 << 20, output=tmp_path), when="Tue Dec  1 05:00:00 2026")
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    mac = debian.xen_tools_mac("web", [], True, "bookworm")
    assert lines == [
        "bootloader = 'pygrub'",
        "vcpus       = '2'",
        "memory      = '512'",
        "disk        = [",
        "                  'phy:/dev/vg0/web-disk,xvda2,w',",
        "                  'phy:/dev/vg0/web-swap,xvda1,w',",
        "              ]",
        "name        = 'web'",
        "dhcp        = 'dhcp'",
        f"vif         = [ 'mac={mac},bridge=xenbr0' ]",
        "on_poweroff = 'destroy'",
        "on_reboot   = 'restart'",
        "on_crash    = 'restart'",
    ]
    assert text.startswith("# Configuration file for the Xen instance web, created\n")
    static = debian.xl_cfg(spec(lvm=None, dir=Path("/srv"), dhcp=False, ips=["10.0.0.5", "10.0.0.6"], swap=None))
    assert "'file:/srv/domains/web/disk.img,xvda1,w'," in static and "swap" not in static
    assert "vif         = [ 'ip=10.0.0.5 10.0.0.6 ,mac=" in static and "dhcp" not in static


def test_xl_cfg_parses_with_xls_own_config_parser() -> None:
    from pyxen.libxlu.cfg import parse  # libxlu's grammar, as xl reads the file
    settings = parse(debian.xl_cfg(spec(vcpus=2)), "web.cfg")
    assert {k: str(v.value) for k, v in settings.items() if k in ("name", "bootloader", "vcpus", "memory")} == {
        "name": "web", "bootloader": "pygrub", "vcpus": "2", "memory": "256"}
    assert [str(d) for d in settings["disk"].value] == ["phy:/dev/vg0/web-disk,xvda2,w",  # type: ignore[union-attr]
                                                        "phy:/dev/vg0/web-swap,xvda1,w"]


def test_network_units() -> None:
    assert debian.network_unit(spec()) == "[Match]\nName=eth0\n\n[Network]\nDHCP=ipv4\n"
    static = debian.network_unit(spec(dhcp=False, ips=["10.0.0.5", "10.0.1.5/16"], gateway="10.0.0.1",
                                      netmask="255.255.255.0", nameservers=["10.0.0.2"]))
    assert static.splitlines()[4:] == ["Address=10.0.0.5/24", "Address=10.0.1.5/16", "Gateway=10.0.0.1",
                                       "DNS=10.0.0.2"]
    with pytest.raises(ImageError, match="invalid --netmask '255.0.255.0'"):
        debian.prefix_len("255.0.255.0")


def test_fstab_names_root_and_swap_by_uuid() -> None:
    text = debian.fstab("1111", "2222")
    assert "UUID=1111  /  ext4  errors=remount-ro  0  1" in text and "UUID=2222  none  swap  sw  0  0" in text
    assert "swap" not in debian.fstab("1111", None).split("\n", 2)[2]


def fake_tree(tmp_path: Path, versions: list[str]) -> Path:
    tree = tmp_path / "root"
    for d in ("boot", "etc/default", "usr/sbin", "etc/kernel/postinst.d", "etc/kernel/postrm.d"):
        (tree / d).mkdir(parents=True, exist_ok=True)
    (tree / "etc/fstab").write_text(debian.fstab("4e1e52c0-2d1d-472f-802e-2e41ab575fe0", None))
    (tree / "etc/default/pyxen-grub").write_text(debian.grub_defaults(timeout=3))
    (tree / "usr/sbin/pyxen-update-grub").write_bytes(debian.guest_file("pyxen-update-grub"))
    for v in versions:
        (tree / f"boot/vmlinuz-{v}").write_bytes(b"k")
        (tree / f"boot/initrd.img-{v}").write_bytes(b"i")
    return tree


def test_grub_cfg_lists_kernels_newest_first(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path, ["6.1.0-9-cloud-amd64", "6.1.0-50-cloud-amd64", "6.1.0-10-cloud-amd64"])
    cfg = debian.update_grub(tree)
    assert "set default=0\nset timeout=3\n" in cfg
    entries = debian.grub_entries(cfg)
    assert [e["kernel"] for e in entries] == ["/boot/vmlinuz-6.1.0-50-cloud-amd64", "/boot/vmlinuz-6.1.0-10-cloud-amd64",
                                              "/boot/vmlinuz-6.1.0-9-cloud-amd64"]
    assert entries[0] == {"title": "Debian GNU/Linux, with Linux 6.1.0-50-cloud-amd64",
                          "kernel": "/boot/vmlinuz-6.1.0-50-cloud-amd64",
                          "args": "root=UUID=4e1e52c0-2d1d-472f-802e-2e41ab575fe0 ro console=ttyS0 net.ifnames=0",
                          "initrd": "/boot/initrd.img-6.1.0-50-cloud-amd64"}
    # The block syntax GRUB 2 reads (and pygrub's GrubConf parses): menuentry '...' { ... }.
    assert "menuentry 'Debian GNU/Linux, with Linux 6.1.0-50-cloud-amd64' {\n\tlinux /boot/vmlinuz-6.1.0-50" in cfg


def test_grub_cfg_without_a_root_uuid_fails(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path, ["6.1.0-50-cloud-amd64"])
    (tree / "etc/fstab").write_text("/dev/vda / ext4 defaults 0 1\n")
    with pytest.raises(ImageError, match="writing /boot/grub/grub.cfg"):
        debian.update_grub(tree)


@pytest.mark.skipif(not shutil.which("unshare"), reason="needs unshare")
def test_kernel_hook_regenerates_grub_cfg_in_the_guest(tmp_path: Path) -> None:
    """What a kernel upgrade inside the guest does: the package adds /boot/vmlinuz-<new>, its
    postinst runs /etc/kernel/postinst.d/zz-pyxen-update-grub, and the new kernel is entry 0; a
    removal runs postrm.d and the entry goes. (The hook runs the script at /usr/sbin: here a
    chroot-free stand-in runs it with the tree as ROOT.)"""
    tree = fake_tree(tmp_path, ["6.1.0-50-cloud-amd64"])
    debian.update_grub(tree)
    hook = debian.guest_file("zz-pyxen-update-grub").decode()
    assert hook.splitlines()[0] == "#!/bin/sh" and "exec /usr/sbin/pyxen-update-grub" in hook
    stand_in = tmp_path / "hook"
    stand_in.write_text(hook.replace("/usr/sbin/pyxen-update-grub", f"sh {tree}/usr/sbin/pyxen-update-grub {tree}"))
    (tree / "boot/vmlinuz-6.1.0-51-cloud-amd64").write_bytes(b"k")
    (tree / "boot/initrd.img-6.1.0-51-cloud-amd64").write_bytes(b"i")
    subprocess.run(["sh", str(stand_in), "6.1.0-51-cloud-amd64"], check=True, timeout=30)
    cfg = (tree / "boot/grub/grub.cfg").read_text()
    assert debian.grub_entries(cfg)[0]["kernel"] == "/boot/vmlinuz-6.1.0-51-cloud-amd64"
    (tree / "boot/vmlinuz-6.1.0-51-cloud-amd64").unlink()
    subprocess.run(["sh", str(stand_in), "6.1.0-51-cloud-amd64"], check=True, timeout=30)
    assert [e["kernel"] for e in debian.grub_entries((tree / "boot/grub/grub.cfg").read_text())] == [
        "/boot/vmlinuz-6.1.0-50-cloud-amd64"]


def test_customise_writes_the_guests_files(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path, ["6.1.0-50-cloud-amd64"])
    (tree / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n")
    (tree / "lib/systemd/system").mkdir(parents=True)
    s = spec(lvm=None, dir=tmp_path, dhcp=False, ips=["10.0.0.5"], gateway="10.0.0.1", nameservers=["10.0.0.2"],
             mirror="http://m/debian")
    debian.customise(tree, s, "4e1e52c0-2d1d-472f-802e-2e41ab575fe0", "5555", "$6$s$h")
    assert (tree / "etc/hostname").read_text() == "web\n"
    assert "10.0.0.5\tweb\n" in (tree / "etc/hosts").read_text()
    assert (tree / "etc/shadow").read_text().startswith("root:$6$s$h:")
    assert (tree / "etc/shadow").stat().st_mode & 0o777 == 0o640
    assert os.readlink(tree / "etc/systemd/system/multi-user.target.wants/pyxen-guest-agent.service") == \
        "/etc/systemd/system/pyxen-guest-agent.service"
    assert os.readlink(tree / "etc/systemd/system/multi-user.target.wants/systemd-networkd.service") == \
        "/lib/systemd/system/systemd-networkd.service"
    assert os.access(tree / "usr/sbin/pyxen-guest-agent", os.X_OK)
    for hook in ("postinst.d", "postrm.d"):
        assert os.access(tree / "etc/kernel" / hook / "zz-pyxen-update-grub", os.X_OK)
    assert "UUID=5555  none  swap" in (tree / "etc/fstab").read_text()
    assert (tree / "etc/resolv.conf").read_text() == "nameserver 10.0.0.2\n"
    assert (tree / "etc/apt/sources.list").read_text().splitlines()[:2] == [
        "deb http://m/debian bookworm main", "deb http://m/debian bookworm-updates main"]
    assert debian.grub_entries((tree / "boot/grub/grub.cfg").read_text())[0]["args"].startswith(
        "root=UUID=4e1e52c0-2d1d-472f-802e-2e41ab575fe0 ro")


def test_roles_run_with_the_tree_and_unexecutable_ones_are_skipped(tmp_path: Path) -> None:
    roledir = tmp_path / "roles"
    roledir.mkdir()
    (roledir / "mark").write_text('#!/bin/sh\necho "$hostname" > "$1/marked"\n')
    (roledir / "mark").chmod(0o755)
    (roledir / "lazy").write_text("#!/bin/sh\nexit 1\n")
    tree = tmp_path / "tree"
    tree.mkdir()
    said: list[str] = []
    debian.run_roles(tree, spec(roles=["mark", "lazy"], roledir=roledir), lambda p, t: said.append(t))
    assert (tree / "marked").read_text() == "web\n"
    assert f"Role script not executable : {roledir}/lazy" in said
    with pytest.raises(ImageError, match="role script .*/missing not found"):
        debian.run_roles(tree, spec(roles=["missing"], roledir=roledir), lambda p, t: None)


# -- sources and the cache key -----------------------------------------------------------------

DEB822 = """Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
"""


def test_sources_deb822_and_one_line() -> None:
    assert debian.mirror_from_sources(DEB822) == "http://deb.debian.org/debian"
    security_first = DEB822.split("\n\n")[1] + "\n\n" + DEB822.split("\n\n")[0].replace("deb.debian.org",
                                                                                          "mirror.example")
    assert debian.mirror_from_sources(security_first) == "http://mirror.example/debian"
    one_line = ("# comment\ndeb-src http://src.example/debian bookworm main\n"
                "deb http://security.debian.org/debian-security bookworm-security main\n"
                "deb [arch=amd64 signed-by=/k.gpg] http://ftp.example/debian/ bookworm main\n")
    assert debian.mirror_from_sources(one_line) == "http://ftp.example/debian"
    assert debian.mirror_from_sources("") is None
    assert debian.mirror_from_sources(DEB822, security=True) == "http://deb.debian.org/debian-security"
    assert debian.mirror_from_sources(one_line, security=True) == "http://security.debian.org/debian-security"
    assert debian.apt_sources("bookworm", "http://m/debian", "http://s/debian-security") == (
        "deb http://m/debian bookworm main\ndeb http://m/debian bookworm-updates main\n"
        "deb http://s/debian-security bookworm-security main\n")
    assert debian.mirror_from_sources("Types: deb\nURIs: http://x/debian\nSuites: bookworm\nEnabled: no\n") is None


def test_host_mirror_falls_back_in_order(tmp_path: Path) -> None:
    a, b = tmp_path / "debian.sources", tmp_path / "sources.list"
    b.write_text("deb http://b.example/debian bookworm main\n")
    assert debian.host_mirror((a, b)) == "http://b.example/debian"
    a.write_text(DEB822)
    assert debian.host_mirror((a, b)) == "http://deb.debian.org/debian"
    assert debian.host_mirror((tmp_path / "none",)) == debian.DEFAULT_MIRROR
    assert debian.host_mirror((a, b), security=True) == "http://deb.debian.org/debian-security"
    assert debian.host_mirror((tmp_path / "none",), security=True) == debian.DEFAULT_SECURITY


def test_cache_key_follows_release_mirror_and_packages(tmp_path: Path) -> None:
    k = debian.base_key("bookworm", "amd64", "http://deb.debian.org/debian")
    assert k == debian.base_key("bookworm", "amd64", "http://deb.debian.org/debian")
    assert k != debian.base_key("trixie", "amd64", "http://deb.debian.org/debian")
    assert k != debian.base_key("bookworm", "amd64", "http://other/debian")
    assert k != debian.base_key("bookworm", "amd64", "http://deb.debian.org/debian", debian.PACKAGES + ("vim",))
    assert debian.base_tarball("bookworm", "amd64", "http://m", tmp_path).parent == tmp_path / "debian"


def test_initramfs_check_knows_modules_and_builtins() -> None:
    listing = ("usr/lib/modules/6.1/kernel/drivers/virtio/virtio_pci.ko\n"
               "usr/lib/modules/6.1/kernel/drivers/block/virtio_blk.ko.zst\n"
               "usr/lib/modules/6.1/kernel/drivers/net/virtio_net.ko\n")
    builtin = "kernel/fs/ext4/ext4.ko\nkernel/fs/jbd2/jbd2.ko\n"
    assert debian.initramfs_missing(listing, builtin) == ["virtio_console"]
    listing += "usr/lib/modules/6.1/kernel/drivers/char/virtio_console.ko\n"
    assert debian.initramfs_missing(listing, builtin) == []
    assert debian.initramfs_missing(listing, "") == ["ext4"]


def test_mounts_under_is_deepest_first(tmp_path: Path) -> None:
    table = ("/dev/vda / ext4 rw 0 0\nproc /s/t/root/proc proc rw 0 0\n"
             "udev /s/t/root/dev devtmpfs rw 0 0\ndevpts /s/t/root/dev/pts devpts rw 0 0\n"
             "proc /s/t2/proc proc rw 0 0\nx /s/t/my\\040dir ext4 rw 0 0\n")
    assert debian.mounts_under(Path("/s/t"), table) == ["/s/t/root/dev/pts", "/s/t/root/proc", "/s/t/root/dev",
                                                        "/s/t/my dir"]
    assert debian.mounts_under(tmp_path) == []


def test_progress_lines(capsys: pytest.CaptureFixture[str]) -> None:
    import io
    buf = io.StringIO()
    report = debian.progress_printer(buf)
    report(5, "base system")
    report(None, "role x")
    assert buf.getvalue() == "[  5%] base system\n       role x\n"


# -- the guest agent script --------------------------------------------------------------------

@pytest.mark.parametrize("shell", [["dash", "-n"], ["/bin/busybox", "sh", "-n"]])
def test_agent_script_parses_under_dash_and_busybox(shell: list[str]) -> None:
    if not shutil.which(shell[0]):
        pytest.skip(f"no {shell[0]}")
    script = debian.guest_file("xs-agent.sh")
    done = subprocess.run([*shell], input=script, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_agent_without_a_port_gives_up_with_one_line(tmp_path: Path) -> None:
    """No org.xenproject.xenstore port (on this host there is none): after PYXEN_AGENT_WAIT
    seconds the agent exits 1 and says why, so systemd's Restart= tries again later."""
    agent = tmp_path / "agent"
    agent.write_bytes(debian.guest_file("xs-agent.sh"))
    done = subprocess.run(["dash", str(agent)], env=dict(os.environ, PYXEN_AGENT_WAIT="0"), capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr == "pyxen-guest-agent: no org.xenproject.xenstore port in /sys/class/virtio-ports\n"


def test_the_agent_frames_xenstore_requests_the_same_under_dash_and_busybox(tmp_path: Path) -> None:
    """The wire bytes of XS_WRITE data/os_uname (type 11, req_id 7) built by the agent's printf
    helper, and a length past one byte (300)."""
    script = debian.guest_file("xs-agent.sh").decode()
    funcs = script[script.index("xs_send() {"):script.index("xs_call() {")]
    out = {}
    for shell in (["dash"], ["/bin/busybox", "sh"]):
        if not shutil.which(shell[0]):
            continue
        prog = funcs + 'exec 3>"$1"\nxs_send 11 7 16 >&3\nprintf \'%s\\000%s\' data/os_uname 6.1 >&3\nxs_send 2 255 300 >&3\n'
        f = tmp_path / "wire"
        subprocess.run([*shell, "-c", prog, "sh", str(f)], check=True, timeout=30)
        out[shell[0]] = f.read_bytes()
    assert out, "no shell"
    for wire in out.values():
        assert wire == (bytes([11, 0, 0, 0, 7, 0, 0, 0]) + bytes(4) + bytes([16, 0, 0, 0]) + b"data/os_uname\x006.1"
                        + bytes([2, 0, 0, 0, 255, 0, 0, 0]) + bytes(4) + (300).to_bytes(4, "little"))


def test_pyxen_image_defaults_its_output_to_the_pyxen_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``pyxen --root R image create`` writes R/<host>.cfg (Xen's /etc/xen): an existing one
    there is refused before anything is built."""
    from pyxen.cli.pyxen import main
    (tmp_path / "w.cfg").write_text("name = 'w'\n")
    rc = main(["--root", str(tmp_path), "image", "create", "--hostname", "w", "--dir", str(tmp_path / "d"),
               "--dhcp"])
    assert rc == 1
    assert capsys.readouterr().err == f"pyxen image: The Xen configuration file {tmp_path}/w.cfg exists\n"
    assert not (tmp_path / "d").exists()


def test_scratch_is_tmpfs_only_when_it_is_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYXEN_CACHE", str(tmp_path / "cache"))
    assert debian.scratch_base(tmp_path) == tmp_path / "cache" / "tmp"  # not a tmpfs mount point
    assert debian.scratch_base(tmp_path / "missing") == tmp_path / "cache" / "tmp"


def fake_debootstrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    """A stand-in debootstrap first on PATH (declared fake: prints debootstrap's I: lines)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "debootstrap").write_text("#!/bin/sh\n" + body)
    (bindir / "debootstrap").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")


def test_debootstrap_progress_shows_each_phase_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_debootstrap(tmp_path, monkeypatch, 'echo "$@" > "$6.argv"\n'
                     'for p in a b c; do echo "I: Retrieving $p 1.0"; echo "I: Validating $p 1.0"; done\n'
                     'echo "I: Extracting a..."; echo "I: Unpacking a..."; echo "I: Configuring a..."\n'
                     'echo "I: Unpacking b..."; echo "I: Configuring b..."; echo "I: Base system installed successfully."\n')
    said: list[tuple[int | None, str]] = []
    tree = tmp_path / "tree"
    debian.debootstrap(tree, "bookworm", "http://m/debian", tmp_path / "cache", lambda p, t: said.append((p, t)), False)
    assert said == [(12, "debootstrap: retrieving packages"), (14, "debootstrap: validating packages"),
                    (20, "debootstrap: extracting packages"), (32, "debootstrap: unpacking packages"),
                    (40, "debootstrap: configuring packages")]
    argv = Path(f"{tree}.argv").read_text().split()
    assert argv == ["--variant=minbase", "--arch=amd64", f"--include={','.join(debian.PACKAGES)}",
                    f"--cache-dir={tmp_path}/cache/debian/debs", "bookworm", str(tree), "http://m/debian"]


def test_debootstrap_failure_names_its_last_words(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_debootstrap(tmp_path, monkeypatch, 'echo "I: Retrieving InRelease"\n'
                     'echo "E: Failed getting release file http://m/debian/dists/bookworm/InRelease"\nexit 1\n')
    with pytest.raises(ImageError, match="debootstrap bookworm from http://m/debian failed: I: Retrieving InRelease"
                                         " | E: Failed getting release file"):
        debian.debootstrap(tmp_path / "t", "bookworm", "http://m/debian", tmp_path / "c", lambda p, t: None, False)


def test_a_stalled_debootstrap_is_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_debootstrap(tmp_path, monkeypatch, 'echo "I: Retrieving InRelease"\nexec sleep 60\n')
    monkeypatch.setitem(debian.TIMEOUTS, "debootstrap", 0.5)
    with pytest.raises(ImageError, match="debootstrap did not finish within 0 s"):
        debian.debootstrap(tmp_path / "t", "bookworm", "http://m/debian", tmp_path / "c", lambda p, t: None, False)
