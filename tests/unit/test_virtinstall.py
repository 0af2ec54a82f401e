"""virt-install's parse -> compute -> render, without a host: every flag and its conversion,
virt-install's refusals, the xl.cfg texts (read back by pyxen's own xl.cfg parser), and install
tree detection on fake trees."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from pyxen.cli import virtinstall as vi
from pyxen.libxlu.cfg import parse
from pyxen.paths import Paths
from pyxen.toolstack import installtree
from pyxen.toolstack.config import from_settings

ROOT = Paths(Path("/srv/pyxen"))
URL = "http://127.0.0.1:8000/debian/dists/bookworm/main/installer-amd64/"


def facts(names: tuple[str, ...] = ("taken",), bridges: tuple[str, ...] = ("xenbr0", "br1"),
          paths: tuple[str, ...] = ("/var/img", "/var/img/old.img", "/isos/d.iso", "/dev/vg0/root"),
          vgs: tuple[str, ...] = ("vg0",)) -> vi.HostFacts:
    return vi.HostFacts(lambda n: n in names, lambda b: b in bridges,
                        lambda p: p in paths or p == "/", lambda v: v in vgs)


def plan(cmd: str, **kw: object) -> vi.Plan:
    return vi.make_plan(cmd.split(), ROOT, random.Random(7), facts(**kw))  # type: ignore[arg-type]


def refused(cmd: str, **kw: object) -> str:
    with pytest.raises(vi.VirtInstallError) as info:
        plan(cmd, **kw)
    return str(info.value)


SEED = f"-n f13 -r 768 --vcpus=1 -f /dev/vg0/f13 -s 40 --vnc -p -l {URL}"
PV = f"-n inst -r 512 --vcpus=1 -f /var/img/inst.img --file-size 1 -p -l {URL} --noautoconsole"


# ---- flags and conversions -------------------------------------------------------------------
def test_the_seeds_command():
    p = plan(SEED)
    assert (p.name, p.memory, p.vcpus, p.hvm, p.method, p.location) == ("f13", 768, 1, False, "location", URL)
    (d,) = p.disks
    assert (d.path, d.size_gib, d.create, d.lv, d.vdev) == ("/dev/vg0/f13", 40.0, True, ("vg0", "f13"), "xvda")
    assert d.xl_spec() == "phy:/dev/vg0/f13,xvda,w"
    assert p.graphics == vi.Graphics()
    assert any("no framebuffer" in w for w in p.warnings)
    assert p.autoconsole == "text" and p.config_path == Path("/srv/pyxen/f13.cfg")


def test_long_and_short_spellings_agree():
    short = plan(f"-n a -r 256 -f /var/img/a.img -s 2 -p -l {URL} -x quiet -w bridge=br1 -m 00:16:3e:00:00:01")
    long = plan(f"--name a --memory 256 --disk path=/var/img/a.img,size=2 --paravirt --location {URL} "
                "--extra-args quiet --network bridge=br1,mac=00:16:3e:00:00:01")
    assert short == long
    assert short.nics == (vi.Nic("br1", "00:16:3e:00:00:01"),)
    assert short.extra_args == "quiet console=ttyS0"


def test_memory_forms():
    assert plan(f"-n a --memory 1024 --disk none -p -l {URL}").memory == 1024
    p = plan(f"-n a --memory 512,maxmemory=1024 --disk none -p -l {URL}")
    assert (p.memory, p.maxmem) == (512, 1024)
    assert plan(f"-n a --ram 300 --memory 400 --disk none -p -l {URL}").memory == 400  # --memory wins
    assert "not a number of MiB" in refused(f"-n a --memory lots --disk none -p -l {URL}")
    assert "less than memory" in refused(f"-n a --memory 512,maxmemory=256 --disk none -p -l {URL}")


def test_vcpus_forms():
    p = plan(f"-n a -r 64 --disk none -p -l {URL} --vcpus 2,maxvcpus=4,cpuset=0-1")
    assert (p.vcpus, p.maxvcpus, p.cpuset) == (2, 4, "0-1")
    assert plan(f"-n a -r 64 --disk none -p -l {URL} --vcpus maxvcpus=3").vcpus == 3
    assert plan(f"-n a -r 64 --disk none -p -l {URL} --vcpus 2 --cpuset 1").cpuset == "1"
    assert plan(f"-n a -r 64 --disk none -p -l {URL} --vcpus 2,cpuset=auto").cpuset is None
    assert plan(f"-n a -r 64 --disk none -p -l {URL}").vcpus == 1
    assert "Invalid --vcpus" in refused(f"-n a -r 64 --disk none -p -l {URL} --vcpus 4,maxvcpus=2")
    assert refused(f"-n a -r 64 --disk none -p -l {URL} --vcpus 1,cpuset=x") == \
        "cpuset can only contain numeric, ',', '^', or '-' characters"
    assert refused(f"-n a -r 64 --disk none -p -l {URL} --vcpus 1,foo=2") == "Unknown --vcpus options: ['foo']"


def test_old_disk_flags_pair_up():
    p = plan(f"-n a -r 64 -p -l {URL} -f /var/img/a.img -s 1 -f /var/img/b.img -s 2.5 --nonsparse")
    assert [(d.path, d.size_gib, d.sparse, d.vdev) for d in p.disks] == \
        [("/var/img/a.img", 1.0, False, "xvda"), ("/var/img/b.img", 2.5, False, "xvdb")]
    p = plan(f"-n a -r 64 -p -l {URL} -f /var/img/old.img")
    assert (p.disks[0].create, p.disks[0].size_gib) == (False, None)


def test_disk_syntax():
    p = plan(f"-n a -r 64 -p -l {URL} --disk /var/img/n.img,size=3,sparse=no,format=qcow2,bus=xen,cache=none "
             "--disk path=/isos/d.iso,device=cdrom --disk /var/img/old.img,readonly=on,target=xvdz")
    n, cd, old = p.disks
    assert (n.size_gib, n.sparse, n.format, n.create, n.cache) == (3.0, False, "qcow2", True, "none")
    assert n.xl_spec() == "qcow2:/var/img/n.img,xvda,w"
    assert cd.xl_spec() == "file:/isos/d.iso,xvdb:cdrom,r"
    assert old.xl_spec() == "file:/var/img/old.img,xvdz,r"
    assert any("no cache mode" in w for w in p.warnings)
    assert plan(f"-n a -r 64 -p -l {URL} --disk none").disks == ()
    assert plan(f"-n a -r 64 -p -l {URL} --nodisks").disks == ()
    auto = plan(f"-n web -r 64 -p -l {URL} --disk size=4").disks[0]
    assert (auto.path, auto.create) == ("/srv/pyxen/images/web.img", True)
    existing_lv = plan(f"-n a -r 64 -p -l {URL} --disk /dev/vg0/root").disks[0]
    assert (existing_lv.create, existing_lv.lv, existing_lv.xl_spec()) == \
        (False, ("vg0", "root"), "phy:/dev/vg0/root,xvda,w")


def test_disk_refusals():
    mix = ("Cannot mix --file, --nonsparse, or --file-size with --disk options. "
           "Use --disk PATH[,size=SIZE][,sparse=yes|no]")
    assert refused(f"-n a -r 64 -p -l {URL} -f /var/img/a.img --disk /var/img/b.img,size=1") == mix
    assert refused(f"-n a -r 64 -p -l {URL} -s 1 --disk none") == mix
    assert refused(f"-n a -r 64 -p -l {URL} --nonsparse --disk none") == mix
    assert refused(f"-n a -r 64 -p -l {URL} --nodisks -f /x") == "Cannot specify storage and use --nodisks"
    assert refused(f"-n a -r 64 -p -l {URL} --disk /var/img/new.img") == \
        "size is required for non-existent disk '/var/img/new.img'"
    assert refused(f"-n a -r 64 -p -l {URL} --disk /var/img/n.img,size=1,foo=1,bar=2") == \
        "Unknown --disk options: ['foo', 'bar']"
    assert "Unknown '--disk format' value 'vmdk'" in refused(f"-n a -r 64 -p -l {URL} --disk /var/img/n,size=1,format=vmdk")
    assert "no volume group 'vgX'" in refused(f"-n a -r 64 -p -l {URL} -f /dev/vgX/lv -s 1")
    assert "directory '/nowhere' does not exist" in refused(f"-n a -r 64 -p -l {URL} -f /nowhere/a.img -s 1")
    assert "greater than 0" in refused(f"-n a -r 64 -p -l {URL} --disk /var/img/n,size=0")


def test_networks():
    p = plan(f"-n a -r 64 --disk none -p -l {URL}")
    (nic,) = p.nics
    assert nic.bridge == "xenbr0" and nic.mac.startswith("00:16:3e:") and int(nic.mac[9:11], 16) <= 0x7F
    assert plan(f"-n a -r 64 --disk none -p -l {URL} -w bridge:br1").nics[0].bridge == "br1"
    assert plan(f"-n a -r 64 --disk none -p -l {URL} -b br1").nics[0].bridge == "br1"
    assert plan(f"-n a -r 64 --disk none -p -l {URL} -w network=default").nics[0].bridge == "xenbr0"
    assert plan(f"-n a -r 64 --disk none -p -l {URL} -w none").nics == ()
    assert plan(f"-n a -r 64 --disk none -p -l {URL} --nonetworks").nics == ()
    two = plan(f"-n a -r 64 --disk none -p -l {URL} -m 00:16:3E:AA:00:01 -m 00:16:3e:aa:00:02")
    assert [n.mac for n in two.nics] == ["00:16:3e:aa:00:01", "00:16:3e:aa:00:02"]
    hvm = plan("-n a -r 64 --disk none --hvm --pxe -w bridge=br1,model=e1000")
    assert hvm.nics[0].xl_spec().endswith(",bridge=br1,model=e1000")
    assert refused(f"-n a -r 64 --disk none -p -l {URL} -w bridge=nobr") == \
        "Cannot get interface MTU on 'nobr': No such device"
    assert refused(f"-n a -r 64 --disk none -p -l {URL} -b br1 -w bridge=br1") == \
        "Cannot use --bridge and --network at the same time"
    assert "MAC address must be" in refused(f"-n a -r 64 --disk none -p -l {URL} -m 00:16:3e")
    assert "Network not found: no network with matching name 'lan'" in refused(f"-n a -r 64 --disk none -p -l {URL} -w network=lan")
    assert refused(f"-n a -r 64 --disk none -p -l {URL} -w bridge=br1,vlan=2") == \
        "Unknown --network options: ['vlan']"


def test_random_macs_are_xen_ones_and_differ():
    macs = {vi._random_mac(random.Random(s)) for s in range(50)}
    assert len(macs) == 50 and all(vi._MAC.match(m) and m.startswith("00:16:3e:") for m in macs)


def test_graphics():
    base = "-n a -r 64 --disk none --hvm --pxe"
    assert plan(base).graphics == vi.Graphics()  # HVM default: VNC, autoport
    g = plan(base + " --graphics vnc,password=s3cret,port=5907,listen=0.0.0.0").graphics
    assert g == vi.Graphics(5907, "0.0.0.0", "s3cret") and g.display == 7
    assert plan(base + " --vnc --vncport 5901 --vnclisten 127.0.0.2 -k de").graphics == \
        vi.Graphics(5901, "127.0.0.2", None, "de")
    assert plan(base + " --graphics none").graphics is None
    assert plan(base + " --nographics").graphics is None
    assert plan(f"-n a -r 64 --disk none -p -l {URL}").graphics is None  # PV default: text console
    assert refused(base + " --graphics vnc --vnc") == "Cannot mix --graphics and old style graphical options"
    assert refused(base + " --vnc --nographics") == \
        "Can't specify more than one of VNC, SDL, --graphics or --nographics"
    assert "Unknown '--graphics type' value 'spice'" in refused(base + " --graphics spice")
    assert "5900-5999" in refused(base + " --graphics vnc,port=80")


def test_install_methods_and_their_priority():
    assert plan(f"-n a -r 64 --disk none -p -l {URL} --import").method == "location"
    assert plan("-n a -r 64 --disk none --hvm --cdrom /isos/d.iso --pxe").method == "cdrom"
    assert plan("-n a -r 64 --disk none --hvm -c /isos/d.iso").method == "cdrom"
    assert plan("-n a -r 64 --disk none --hvm --pxe --import").method == "pxe"
    assert plan("-n a -r 64 --disk /var/img/old.img -p --import").method == "import"
    p = plan("-n a -r 64 --disk /var/img/old.img --hvm --boot cdrom,hd")
    assert (p.method, p.boot) == ("boot", "dc")
    assert refused("-n a -r 64 --disk none --hvm --boot floppy") == "Unknown --boot options: ['floppy']"
    assert refused("-n a -r 64 --disk none --hvm -c qemu:///system") == (
        "-c specified with what looks like a libvirt URI. Did you mean to use --connect? "
        "If not, use --cdrom instead")
    assert refused("-n a -r 64 --disk none --hvm -c /isos/d.iso --cdrom /isos/d.iso") == \
        "Cannot use -c and --cdrom at the same time"
    assert "needs an HVM guest" in refused("-n a -r 64 --disk none -p --cdrom /isos/d.iso")
    assert "needs an HVM guest" in refused("-n a -r 64 --disk none --pxe")
    assert "Validating install media '/isos/none.iso' failed" in \
        refused("-n a -r 64 --disk none --hvm --cdrom /isos/none.iso")
    assert refused("-n a -r 64 --disk none --hvm --pxe -x quiet") == \
        "Kernel arguments are only supported with location or kernel installs."
    p = plan(f"-n a -r 64 --disk none -p -l {URL},kernel=k/vmlinuz,initrd=k/initrd")
    assert (p.location, p.location_kernel, p.location_initrd) == (URL, "k/vmlinuz", "k/initrd")


def test_missing_essentials_are_reported_together():
    msg = refused("-n a")
    assert msg == ("\n--memory amount in MiB is required"
                   "\n--disk storage must be specified (override with --disk none)"
                   "\nAn install method must be specified\n(--location URL, --cdrom CD/ISO, "
                   "--pxe, --import, --boot hd|cdrom|...)")
    assert refused(f"-n a --disk none -p -l {URL}") == "\n--memory amount in MiB is required"


def test_hvm_and_pv_are_exclusive(capsys):
    with pytest.raises(SystemExit) as ex:
        plan(f"-n a -r 64 --disk none -p --hvm -l {URL}")
    assert ex.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_names():
    assert refused(f"-n taken -r 64 --disk none -p -l {URL}") == "Guest name 'taken' is already in use."
    assert plan(f"-r 64 --disk none -p -l {URL}").name == "vm1"
    assert plan(f"-r 64 --disk none -p -l {URL}", names=("vm1",)).name == "vm2"
    assert plan(f"-r 64 --disk none -p -l {URL} --os-variant debian12").name == "debian12"
    assert plan(f"-r 64 --disk none -p -l {URL} --osinfo debian12", names=("debian12",)).name == "debian12-2"


def test_console_and_wait_options():
    assert plan(PV).autoconsole == "none"
    assert plan(PV.replace(" --noautoconsole", "")).autoconsole == "text"
    assert plan(PV.replace(" --noautoconsole", " --autoconsole text")).autoconsole == "text"
    assert plan("-n a -r 64 --disk none --hvm --pxe").autoconsole == "graphical"
    w0 = plan(PV.replace(" --noautoconsole", " --wait 0"))
    assert (w0.autoconsole, w0.wait) == ("none", None)
    assert "Treating --wait 0 as --noautoconsole" in w0.warnings
    assert plan(PV + " --wait").wait == -1 and plan(PV + " --wait 10").wait == 10
    assert refused(PV + " --autoconsole fancy") == "Unknown autoconsole type 'fancy'"
    p = plan(PV + " --os-type linux --os-variant debian12")
    assert "--os-type is deprecated and does nothing. Please stop using it." in p.warnings
    assert p.os_variant == "debian12"


# ---- the xl.cfg texts ------------------------------------------------------------------------
def read_back(text: str):
    return from_settings(parse(text, "t.cfg"), "t.cfg")


def test_pv_location_phases():
    p = plan(PV + " -x 'priority=low'".replace("'", ""))
    install = vi.render_cfg(p, "install", "/srv/pyxen/boot/virtinst-1-linux", "/srv/pyxen/boot/virtinst-1-initrd.gz")
    cfg = read_back(install)
    assert (cfg.name, cfg.type, cfg.memory, cfg.vcpus) == ("inst", "pv", 512, 1)
    assert cfg.kernel == "/srv/pyxen/boot/virtinst-1-linux"
    assert cfg.ramdisk == "/srv/pyxen/boot/virtinst-1-initrd.gz"
    assert cfg.cmdline == "priority=low console=ttyS0"
    assert (cfg.on_reboot, cfg.on_poweroff) == ("destroy", "destroy")
    assert cfg.disks == ("file:/var/img/inst.img,xvda,w",)
    assert cfg.vifs == (f"mac={p.nics[0].mac},bridge=xenbr0",)
    assert cfg.uuid == p.uuid
    final = vi.render_cfg(p, "final")
    assert 'bootloader = "pygrub"' in final and "kernel" not in final and "extra" not in final
    assert 'on_reboot = "restart"' in final and f'uuid = "{p.uuid}"' in final
    fcfg = read_back(final)
    assert fcfg.kernel is None and fcfg.on_reboot == "restart" and fcfg.bootloader == "pygrub"


def test_extra_args_keep_a_given_console():
    p = plan(PV + " -x console=hvc0")
    assert p.extra_args == "console=hvc0"


def test_pv_options_in_the_config():
    p = plan(f"-n a --memory 256,maxmemory=512 --vcpus 2,maxvcpus=4,cpuset=0 --disk none -p -l {URL} "
             "--graphics vnc,port=5902,password=pw")
    cfg = read_back(vi.render_cfg(p, "install", "/k", "/i"))
    assert (cfg.memory, cfg.maxmem, cfg.vcpus, cfg.maxvcpus, cfg.cpus) == (256, 512, 2, 4, "0")
    assert cfg.disks == ()
    assert cfg.setting("vfb") == ("vnc=1,vnclisten=127.0.0.1,vncdisplay=2,vncunused=0,vncpasswd=pw",)


def test_hvm_cdrom_phases():
    p = plan("-n win -r 1024 --hvm --cdrom /isos/d.iso --disk /var/img/w.img,size=8 "
             "--graphics vnc,password=s3,port=5901,listen=0.0.0.0")
    cfg = read_back(vi.render_cfg(p, "install"))
    assert (cfg.type, cfg.boot, cfg.on_reboot) == ("hvm", "d", "destroy")
    assert cfg.disks == ("file:/var/img/w.img,hda,w", "file:/isos/d.iso,hdc:cdrom,r")
    assert (cfg.vnc, cfg.vncdisplay, cfg.vncunused, cfg.vncpasswd, cfg.vnclisten) == \
        (True, 1, False, "s3", "0.0.0.0")
    final = read_back(vi.render_cfg(p, "final"))
    assert (final.boot, final.on_reboot, final.disks) == ("c", "restart", cfg.disks)
    assert p.graphics is not None and p.graphics.where() == "0.0.0.0:1 (port 5901)"


def test_hvm_pxe_and_autoport():
    p = plan("-n net -r 512 --hvm --pxe --disk size=4 -w bridge=br1")
    cfg = read_back(vi.render_cfg(p, "install"))
    assert (cfg.boot, cfg.vnc, cfg.vncdisplay, cfg.vncunused) == ("n", True, None, True)
    assert cfg.vifs == (f"mac={p.nics[0].mac},bridge=br1",)
    assert read_back(vi.render_cfg(p, "final")).boot == "c"
    assert read_back(vi.render_cfg(plan("-n n -r 64 --hvm --pxe --disk none --nographics"), "install")).vnc is False


def test_hvm_import_is_one_phase():
    p = plan("-n old -r 512 --hvm --import --disk /var/img/old.img")
    assert not p.two_phase
    assert vi.render_cfg(p, "install") == vi.render_cfg(p, "final")
    cfg = read_back(vi.render_cfg(p, "final"))
    assert (cfg.boot, cfg.on_reboot, cfg.disks) == ("c", "restart", ("file:/var/img/old.img,hda,w",))


def test_pv_import_uses_pygrub():
    p = plan("-n deb -r 512 -p --import --disk /var/img/old.img --network none")
    text = vi.render_cfg(p, "final")
    assert text == vi.render_cfg(p, "install")
    assert 'bootloader = "pygrub"' in text and "vif" not in text
    assert 'disk = [ "file:/var/img/old.img,xvda,w" ]' in text


def test_downloads_are_named_as_virtinst_names_them():
    p = plan(PV)
    assert p.download("current/images/netboot/debian-installer/amd64/linux") == \
        Path(f"/srv/pyxen/boot/virtinst-{p.download_tag}-linux")
    assert len(p.download_tag) == 8


# ---- install trees -----------------------------------------------------------------------------
class FakeTree:
    """A tree of (path -> bytes) as the Tree protocol asks it."""

    def __init__(self, location: str, files: dict[str, bytes]) -> None:
        self.location, self.files = location, files

    def read(self, rel: str) -> bytes | None:
        return self.files.get(rel)

    def exists(self, rel: str) -> bool:
        return rel in self.files

    def fetch(self, rel: str, dest: Path) -> None:
        dest.write_bytes(self.files[rel])


DEBIAN_MANIFEST = b"netboot/debian-installer/amd64/: Debian installer netboot files\n"


def test_debian_tree_prefers_the_xen_pair():
    files = {"current/images/MANIFEST": DEBIAN_MANIFEST,
             "current/images/netboot/xen/vmlinuz": b"k", "current/images/netboot/xen/initrd.gz": b"i",
             "current/images/netboot/debian-installer/amd64/linux": b"K",
             "current/images/netboot/debian-installer/amd64/initrd.gz": b"I"}
    m = installtree.detect(FakeTree(URL, files))
    assert m == installtree.TreeMedia("debian", "current/images/netboot/xen/vmlinuz",
                                      "current/images/netboot/xen/initrd.gz")
    del files["current/images/netboot/xen/initrd.gz"]  # half a pair does not count
    m = installtree.detect(FakeTree(URL, files))
    assert (m.kernel, m.initrd) == ("current/images/netboot/debian-installer/amd64/linux",
                                    "current/images/netboot/debian-installer/amd64/initrd.gz")


def test_debian_arch_comes_from_the_url():
    files = {"current/images/MANIFEST": DEBIAN_MANIFEST,
             "current/images/netboot/debian-installer/i386/linux": b"K",
             "current/images/netboot/debian-installer/i386/initrd.gz": b"I"}
    i386 = "http://m/debian/dists/bookworm/main/installer-i386/"
    assert installtree.detect(FakeTree(i386, files)).kernel.endswith("i386/linux")
    with pytest.raises(installtree.TreeError, match="Couldn't find kernel for install tree."):
        installtree.detect(FakeTree("/srv/tree", files))  # pyxen's default arch is amd64
    assert installtree.find_arch("/srv/tree") == "amd64"
    assert installtree.find_arch("https://d-i.debian.org/daily-images/arm64/") == "arm64"


def test_legacy_daily_and_disk_info_prefixes():
    for manifest, prefix in (("current/legacy-images/MANIFEST", "current/legacy-images"),
                             ("daily/MANIFEST", "daily"), (".disk/info", "install")):
        files = {manifest: b"Debian GNU/Linux 12", f"{prefix}/netboot/xen/vmlinuz": b"k",
                 f"{prefix}/netboot/xen/initrd.gz": b"i"}
        assert installtree.detect(FakeTree(URL, files)).kernel == f"{prefix}/netboot/xen/vmlinuz"


def test_ubuntu_and_unknown_trees_are_refused():
    ubuntu = {"current/images/MANIFEST": b"Ubuntu netboot", "current/images/netboot/xen/vmlinuz": b"k",
              "current/images/netboot/xen/initrd.gz": b"i"}
    with pytest.raises(installtree.TreeError) as info:
        installtree.detect(FakeTree(URL, ubuntu))
    assert str(info.value) == (f"Could not find an installable distribution at URL '{URL}'\n\n"
                               "The location must be the root directory of an install tree.\n"
                               "See virt-install man page for various distro examples.")
    with pytest.raises(installtree.TreeError, match="Could not find an installable"):
        installtree.detect(FakeTree(URL, {}))


def test_treeinfo_images_xen():
    ti = (b"[general]\nfamily = Fedora\nversion = 13\narch = x86_64\n\n"
          b"[images-x86_64]\nkernel = images/pxeboot/vmlinuz\ninitrd = images/pxeboot/initrd.img\n\n"
          b"[images-xen]\nkernel = images/xen/vmlinuz\ninitrd = images/xen/initrd.img\n")
    files = {".treeinfo": ti, "images/xen/vmlinuz": b"k", "images/xen/initrd.img": b"i"}
    assert installtree.detect(FakeTree("http://m/f13/", files)) == \
        installtree.TreeMedia("Fedora", "images/xen/vmlinuz", "images/xen/initrd.img")
    no_xen = {"treeinfo": b"[general]\nfamily = CentOS\n"}
    with pytest.raises(installtree.TreeError, match="Couldn't find kernel"):
        installtree.detect(FakeTree("http://m/c/", no_xen))


def test_location_kernel_and_initrd_name_the_pair():
    files = {"k/vmlinuz": b"k", "k/initrd": b"i"}
    assert installtree.detect(FakeTree(URL, files), "k/vmlinuz", "k/initrd").kernel == "k/vmlinuz"
    with pytest.raises(installtree.TreeError, match="Couldn't find kernel"):
        installtree.detect(FakeTree(URL, files), "k/vmlinuz", "k/nope")


def test_local_tree_and_open_tree(tmp_path):
    nb = tmp_path / "current/images/netboot/debian-installer/amd64"
    nb.mkdir(parents=True)
    (tmp_path / "current/images/MANIFEST").write_bytes(DEBIAN_MANIFEST)
    (nb / "linux").write_bytes(b"kernel")
    (nb / "initrd.gz").write_bytes(b"initrd")
    tree = installtree.open_tree(str(tmp_path))
    m = installtree.detect(tree)
    tree.fetch(m.kernel, tmp_path / "k")
    assert (tmp_path / "k").read_bytes() == b"kernel"
    assert isinstance(installtree.open_tree("http://127.0.0.1:1/x/"), installtree.URLTree)
    with pytest.raises(installtree.TreeError, match="No such file or directory"):
        installtree.open_tree(str(tmp_path / "nowhere"))
    with pytest.raises(installtree.TreeError, match="an ISO as --location"):
        installtree.open_tree(str(nb / "linux"))
    with pytest.raises(installtree.TreeError, match="http"):
        installtree.open_tree("ftp://m/debian/")


def test_url_tree_over_http(tmp_path):
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    (tmp_path / "current/images").mkdir(parents=True)
    (tmp_path / "current/images/MANIFEST").write_bytes(DEBIAN_MANIFEST)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(
        SimpleHTTPRequestHandler, directory=str(tmp_path)))
    server.RequestHandlerClass.log_message = lambda *a: None  # type: ignore[method-assign]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        tree = installtree.URLTree(f"http://127.0.0.1:{server.server_address[1]}")
        assert tree.exists("current/images/MANIFEST") and not tree.exists("nope")
        assert tree.read("current/images/MANIFEST") == DEBIAN_MANIFEST and tree.read("nope") is None
        with pytest.raises(installtree.TreeError, match="Couldn't acquire file .*/nope"):
            tree.fetch("nope", tmp_path / "x")
    finally:
        server.shutdown()
        server.server_close()


# ---- the runner's rollback ---------------------------------------------------------------------
def _local_tree(root: Path) -> Path:
    nb = root / "current/images/netboot/debian-installer/amd64"
    nb.mkdir(parents=True)
    (root / "current/images/MANIFEST").write_bytes(DEBIAN_MANIFEST)
    (nb / "linux").write_bytes(b"kernel")
    (nb / "initrd.gz").write_bytes(b"initrd")
    return root


def _real_plan(tmp_path: Path, extra: str = "") -> tuple[vi.Plan, Paths]:
    paths = Paths(tmp_path / "root")
    tree = _local_tree(tmp_path / "tree")
    (tmp_path / "img").mkdir()
    f = vi.HostFacts(lambda n: False, lambda b: True, lambda p: Path(p).exists(), lambda v: False)
    argv = (f"-n inst -r 64 -f {tmp_path}/img/inst.img -s 0.01 -p -l {tree} --noautoconsole {extra}").split()
    return vi.make_plan(argv, paths, random.Random(3), f), paths


def test_a_failed_start_leaves_nothing(tmp_path, monkeypatch, capsys):
    p, paths = _real_plan(tmp_path)
    seen = {}

    def failing_start(paths_: Paths, cfg):
        seen["cfg"] = cfg
        seen["files"] = sorted(str(x.relative_to(tmp_path)) for x in tmp_path.rglob("*") if x.is_file())
        raise vi.libxl.DomainBuildError("cannot add the devices of 'inst': no backend")

    monkeypatch.setattr(vi, "_start", failing_start)
    with pytest.raises(vi.VirtInstallError) as info:
        vi.run(p, paths)
    assert str(info.value).startswith("cannot add the devices of 'inst': no backend\n"
                                      "Domain installation does not appear to have been successful.")
    # everything was there when the start was tried: downloads, the disk, the final config
    assert "root/inst.cfg" in seen["files"] and "img/inst.img" in seen["files"]
    assert sum(f.startswith("root/boot/virtinst-") for f in seen["files"]) == 2
    assert seen["cfg"].kernel == str(p.download("current/images/netboot/debian-installer/amd64/linux"))
    assert seen["cfg"].on_reboot == "destroy"
    # and none of it is left
    assert not (tmp_path / "img/inst.img").exists() and not paths.domain_cfg("inst").exists()
    assert list(paths.boot_dir.iterdir()) == []
    out = capsys.readouterr().out
    assert "Starting install..." in out and "Retrieving 'linux'" in out and "Allocating 'inst.img'" in out


def test_noautoconsole_leaves_the_installer_running(tmp_path, monkeypatch, capsys):
    p, paths = _real_plan(tmp_path)
    monkeypatch.setattr(vi, "_start", lambda paths_, cfg: 7)
    monkeypatch.setattr(vi, "_alive", lambda domid: True)
    assert vi.run(p, paths) == 0
    out = capsys.readouterr().out
    assert out.endswith("Domain is still running. Installation may be in progress.\n"
                        "You can reconnect to the console to complete the installation process.\n")
    assert 'bootloader = "pygrub"' in paths.domain_cfg("inst").read_text()
    assert (tmp_path / "img/inst.img").stat().st_size == int(0.01 * (1 << 30))
    assert len(list(paths.boot_dir.iterdir())) == 2


def test_wait_starts_the_final_config_when_the_installer_ends(tmp_path, monkeypatch, capsys):
    p, paths = _real_plan(tmp_path, "--wait 5")
    started = []
    alive = iter([True, True, False])
    monkeypatch.setattr(vi, "POLL", 0)
    monkeypatch.setattr(vi, "_start", lambda paths_, cfg: started.append(cfg) or len(started))
    monkeypatch.setattr(vi, "_alive", lambda domid: next(alive))
    vi.run(p, paths)
    assert started[1].kernel is None and started[1].on_reboot == "restart"
    assert started[1].bootloader == "pygrub"
    out = capsys.readouterr().out
    assert ("Waiting 5 minutes for the installation to complete.\nDomain has shutdown. Continuing.\n"
            "Domain creation completed.\nRestarting guest.\n") in out
    assert started[0].on_reboot == "destroy"
    assert list(paths.boot_dir.iterdir()) == []  # the installer's kernel is not kept


def test_dry_run_makes_nothing(tmp_path, capsys):
    p, paths = _real_plan(tmp_path, "--dry-run")
    assert vi.run(p, paths) == 0
    assert "Dry run completed successfully" in capsys.readouterr().out
    assert not paths.root.exists() and list((tmp_path / "img").iterdir()) == []
