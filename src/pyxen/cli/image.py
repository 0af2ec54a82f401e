"""``pyxen image create``: a Debian guest on an LV or in image files, with its xl config, in the
manner of xen-tools' xen-create-image (same option names, sizes, volume names and config).

    pyxen image create --hostname web --lvm vg0 --dhcp
    pyxen image create --hostname web --dir /srv/xen --ip 10.0.0.5 --gateway 10.0.0.1 --password s3cret

The work is pyxen.images.debian; this module parses and prints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..images import debian
from ..paths import Paths


class _Parser(argparse.ArgumentParser):
    """argparse, but bad input is one line on stderr and exit status 1."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"pyxen image: {message}", file=sys.stderr)
        raise SystemExit(1)


def parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="pyxen image", description="make guest images the xen-tools way")
    sub = ap.add_subparsers(dest="action", required=True, parser_class=_Parser)
    c = sub.add_parser("create", help="install Debian into new volumes and write its xl config")
    c.add_argument("--hostname", required=True, help="the guest's name (and its volumes' and config's)")
    c.add_argument("--dist", default="bookworm", help="Debian release: bookworm or stable (default bookworm)")
    c.add_argument("--mirror", help="Debian archive (default: the one this host's apt uses)")
    c.add_argument("--size", default="4G", help="root filesystem size, M/MB/G/GB, no unit = MB (default 4G)")
    c.add_argument("--swap", default="512M", help="swap size (default 512M)")
    c.add_argument("--noswap", action="store_true", help="no swap volume")
    c.add_argument("--memory", default="256M", help="memory (default 256M)")
    c.add_argument("--vcpus", type=int, default=1, help="virtual CPUs (default 1)")
    where = c.add_mutually_exclusive_group(required=True)
    where.add_argument("--lvm", metavar="VG", help="make LVs <host>-disk and <host>-swap in this volume group")
    where.add_argument("--dir", metavar="DIR", type=Path, help="make DIR/domains/<host>/disk.img and swap.img")
    net = c.add_mutually_exclusive_group(required=True)
    net.add_argument("--ip", action="append", default=[], help="static address (repeatable), ADDR or ADDR/LEN")
    net.add_argument("--dhcp", action="store_true", help="configure eth0 by DHCP")
    c.add_argument("--gateway", help="default route for --ip")
    c.add_argument("--netmask", help="netmask for --ip (default 255.255.255.0)")
    c.add_argument("--nameserver", action="append", default=[], help="DNS server (repeatable)")
    c.add_argument("--mac", help="MAC of the vif (default: xen-tools' deterministic 00:16:3E:...)")
    c.add_argument("--bridge", default="xenbr0", help="bridge of the vif (default xenbr0)")
    c.add_argument("--password", help="root password (default: a generated one, printed at the end)")
    c.add_argument("--genpass", nargs="?", type=int, const=1, default=1, help="generate the root password (default)")
    c.add_argument("--genpass_len", "--genpass-len", type=int, default=23, help="generated password length (23)")
    c.add_argument("--hash_method", "--hash-method", default="sha512", choices=sorted(debian.HASH_METHODS),
                   help="crypt hash for /etc/shadow (default sha512)")
    c.add_argument("--role", action="append", default=[], help="role scripts to run, comma separated")
    c.add_argument("--roledir", type=Path, default=Path("/etc/xen-tools/role.d"), help="where roles are")
    c.add_argument("--output", type=Path, help="folder of the xl config (default: the pyxen config dir)")
    c.add_argument("--extension", default=".cfg", help="config file extension (default .cfg)")
    c.add_argument("--force", action="store_true", help="overwrite an existing config and volumes")
    c.add_argument("--keep", action="store_true", help="keep what was made when a step fails")
    c.add_argument("--verbose", action="store_true", help="show debootstrap's own output")
    return ap


def spec_from_args(ns: argparse.Namespace, paths: Paths) -> debian.ImageSpec:
    """The request, with sizes parsed; raises ImageError on a bad value."""
    roles = [r for item in ns.role for r in item.split(",") if r]
    return debian.ImageSpec(
        hostname=ns.hostname, dist=ns.dist, mirror=ns.mirror,
        size=debian.parse_size(ns.size, "--size"),
        swap=None if ns.noswap else debian.parse_size(ns.swap, "--swap"),
        memory=debian.parse_size(ns.memory, "--memory"), vcpus=ns.vcpus,
        lvm=ns.lvm, dir=ns.dir, ips=list(ns.ip), dhcp=ns.dhcp, gateway=ns.gateway, netmask=ns.netmask,
        nameservers=list(ns.nameserver), mac=ns.mac, bridge=ns.bridge, password=ns.password,
        genpass_len=ns.genpass_len, hash_method=ns.hash_method, roles=roles, roledir=ns.roledir,
        output=ns.output if ns.output is not None else paths.root, extension=ns.extension,
        force=ns.force, keep=ns.keep, verbose=ns.verbose)


def summary(spec: debian.ImageSpec, made: debian.Created) -> str:
    """xen-create-image's closing summary."""
    rows = [("Hostname", spec.hostname), ("Distribution", spec.release),
            ("MAC Address", spec.mac_address),
            ("IP Address(es)", "dynamic" if spec.dhcp else " ".join(spec.ips)),
            ("Config", str(made.cfg)),
            ("Volumes", " ".join(str(p) for p in made.volumes)),
            ("Kernel", f"{made.kernel} (initrd {made.ramdisk})"),
            ("Kernel args", made.args),
            ("Base", "cached" if made.cache_hit else "built and cached"),
            ("Time", f"{made.seconds:.1f} s")]
    if spec.password is None and made.password is not None:
        rows.append(("Root Password", made.password))
    return "\nInstallation Summary\n---------------------\n" + "".join(f"{k:<16}:  {v}\n" for k, v in rows)


def main(argv: list[str], paths: Paths | None = None) -> int:
    ns = parser().parse_args(argv)
    paths = paths or Paths.from_env()
    try:
        spec = spec_from_args(ns, paths)
        made = debian.create(spec)
    except debian.ImageError as err:
        print(f"pyxen image: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pyxen image: interrupted", file=sys.stderr)
        return 130
    sys.stdout.write(summary(spec, made))
    return 0
