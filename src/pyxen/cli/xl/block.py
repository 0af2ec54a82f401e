"""xl's commands on a running domain's disks and channels: block-attach, block-detach,
cd-insert, cd-eject, channel-list (Xen's tools/xl/xl_block.c, xl_cdrom.c, xl_console.c).

Messages and exit codes are xl's: ``<dom> is an invalid domain identifier`` (block-attach's
libxl_domain_qualifier_to_domid), ``Error: Device <vdev> not connected.``, libxl's error lines
(``libxl: error: ...``) then ``libxl_device_disk_add failed.`` /
``libxl_device_disk_safe_remove failed.`` / ``libxl_device_disk_destroy failed.``, exit 1.
"""

from __future__ import annotations

import os
import sys
from typing import Callable

from ...hypervisor.errors import HypercallError, NoSuchDomain
from ...libxlu.domid import parse_uint
from ...paths import Paths
from ...toolstack import domain as libxl
from ...toolstack import hotplug, libxl_json
from ...toolstack.devices import DeviceSpecError, parse_disk, vdev_to_devid
from ...xenstore.client import XenstoreClient
from .. import render
from . import xlconf
from .common import GLOBALS, ctrl, honours_dryrun, interrupts_on_termination, new_parser, positionals


def _libxl_errors(err: BaseException) -> None:
    """libxl's error lines for a failed device operation, one per line of ``err``."""
    for line in str(err).splitlines():
        if line.strip():
            print(f"libxl: error: {line}", file=sys.stderr)


def _qualifier_to_domid(xc: object, arg: str) -> int | None:
    """libxl_domain_qualifier_to_domid: all digits is a domid (not checked), else a name."""
    domid = parse_uint(arg)
    if domid is not None:
        return domid
    try:
        return libxl.resolve(xc, arg).domid  # type: ignore[arg-type]
    except NoSuchDomain:
        return None


@honours_dryrun
def cmd_block_attach(argv: list[str]) -> int:
    """With the global -N, xl_block.c prints the parsed disk as libxl JSON (``disk: {...}``)
    and attaches nothing."""
    p = new_parser("block-attach", "Create a new virtual block device")
    p.add_argument("domain")
    p.add_argument("disk_spec", nargs="+", metavar="disk-spec-component")
    ns = p.parse_args(argv)
    with ctrl() as xc:
        domid = _qualifier_to_domid(xc, ns.domain)
        if domid is None:
            print(f"{ns.domain} is an invalid domain identifier", file=sys.stderr)
            return 1
        try:  # xl's parse_disk_config_multistring: the components are one spec
            disk = parse_disk(",".join(ns.disk_spec))
        except DeviceSpecError as err:
            print(f"xl: {err}", file=sys.stderr)
            return 1
        if GLOBALS.dryrun:
            sys.stdout.write("disk: " + libxl_json.device_disk(disk.spec) + "\n")
            sys.stdout.flush()
            return 0
        conf = xlconf.current()
        notice = conf.skipped_scripts_notice([disk.script])
        if notice:
            print(notice, file=sys.stderr)
        paths = Paths.from_env()
        try:
            with interrupts_on_termination():
                hotplug.attach_disk(xc, paths, domid, disk, run_scripts=conf.runs_hotplug_scripts)
        except (hotplug.DeviceError, HypercallError) as err:
            _libxl_errors(err)
            print("libxl_device_disk_add failed.", file=sys.stderr)
            return 1
    return 0


def cmd_block_detach(argv: list[str]) -> int:
    p = new_parser("block-detach", "Destroy a domain's virtual block device")
    p.add_argument("-f", "--force", action="store_true",
                   help="do not wait for the domain to release the device")
    p.add_argument("domain")
    p.add_argument("devid", metavar="DevId")
    ns = positionals(p, argv)
    paths = Paths.from_env()
    with ctrl() as xc:
        domid = libxl.resolve(xc, ns.domain).domid  # find_domain: "(rc=-6)", exit 1
        devid = vdev_to_devid(ns.devid)
        with XenstoreClient(paths.xenstored_socket) as xs:
            present = devid >= 0 and hotplug.disk_kind(xs, domid, devid) is not None
        if not present:
            print(f"Error: Device {ns.devid} not connected.", file=sys.stderr)
            return 1
        try:
            with interrupts_on_termination():
                hotplug.detach_disk(xc, paths, domid, devid, force=ns.force,
                                    run_scripts=xlconf.current().runs_hotplug_scripts)
        except (hotplug.DeviceError, HypercallError) as err:
            _libxl_errors(err)
            print(f"libxl_device_disk_{'destroy' if ns.force else 'safe_remove'} failed.", file=sys.stderr)
            return 1
    return 0


def cmd_channel_list(argv: list[str]) -> int:
    """pyxen builds no channels (xl.cfg's ``channel=`` is refused at create), so each domain
    has none: the header, and a domain that does not exist stops the command as find_domain
    does."""
    p = new_parser("channel-list", "List virtual channel devices for a domain")
    p.add_argument("domain", nargs="+")
    ns = p.parse_args(argv)
    sys.stdout.write(render.xl_channel_list([]))
    sys.stdout.flush()
    with ctrl() as xc:
        for arg in ns.domain:
            libxl.resolve(xc, arg)
    return 0


def _cd_command(name: str, desc: str, insert: bool) -> Callable[[list[str]], int]:
    def run(argv: list[str]) -> int:
        p = new_parser(name, desc)
        p.add_argument("domain")
        p.add_argument("vdev", metavar="VirtualDevice")
        if insert:
            p.add_argument("path")
        ns = positionals(p, argv)
        with ctrl() as xc:
            ref = libxl.resolve(xc, ns.domain)
            target = ns.path if insert else ""
            try:  # xl's cd_insert: the spec it builds, through the disk parser
                disk = parse_disk(f"vdev={ns.vdev},access=r,devtype=cdrom,target={target}")
            except DeviceSpecError as err:
                print(f"xl: {err}", file=sys.stderr)
                return 1
            if disk.format != "empty" and disk.target is not None and not os.path.exists(disk.target):
                print(f"Cannot stat file: {disk.target}", file=sys.stderr)
                return 1
            try:
                hotplug.cdrom_insert(xc, Paths.from_env(), ref.domid, disk)
            except (hotplug.DeviceError, HypercallError) as err:
                _libxl_errors(err)
                return 1
        return 0
    return run


#: xl's commands that this module implements: name -> (function, one-line description).
COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "cd-insert": (_cd_command("cd-insert", "Insert a cdrom into a guest's cd drive", True),
                  "Insert a cdrom into a guest's cd drive"),
    "cd-eject": (_cd_command("cd-eject", "Eject a cdrom from a guest's cd drive", False),
                 "Eject a cdrom from a guest's cd drive"),
    "channel-list": (cmd_channel_list, "List virtual channel devices for a domain"),
    "block-attach": (cmd_block_attach, "Create a new virtual block device"),
    "block-detach": (cmd_block_detach, "Destroy a domain's virtual block device"),
}

__all__ = ["COMMANDS"]
