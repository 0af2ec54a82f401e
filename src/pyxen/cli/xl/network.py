"""xl's network devices on a running domain: network-attach and network-detach (xl_nic.c).
network-list is domains.py's (it only reads xenstore).

Messages and exit codes as xl_nic.c: a bad vif key stops network-attach with parse_nic_config's
line and exit 1 before anything is made; a failed add prints the reason (libxl's error line)
and ``libxl_device_nic_add failed.``; network-detach takes a devid (atoi) or, if the argument
holds a ':', a MAC, and answers ``Unknown device X.`` when the domain has no such vif.
"""

from __future__ import annotations

import sys
from typing import Callable

from ...paths import Paths
from ...toolstack import domain as libxl
from ...toolstack import hotplug, libxl_json
from ...toolstack.devices import DeviceSpecError, parse_vif
from . import xlconf
from .common import GLOBALS, ctrl, honours_dryrun, new_parser, positionals

#: network-attach's config source in libxlu's messages (xlu_cfg_init(stderr, "command line")).
SOURCE = "command line"


@honours_dryrun
def cmd_network_attach(argv: list[str]) -> int:
    """With the global -N, xl_nic.c prints the parsed NIC as libxl JSON (``vif: {...}``) and
    adds nothing."""
    p = new_parser("network-attach", "Create a new virtual network device")
    p.add_argument("domain")
    p.add_argument("vifspec", nargs="*", metavar="key=value",
                   help="[type=<type>] [mac=<mac>] [bridge=<bridge>] [ip=<ip>] [script=<script>] "
                        "[backend=<BackDomain>] [vifname=<name>] [rate=<rate>] [model=<model>] "
                        "[mtu=<mtu>] [gatewaydev=<dev>]")
    ns = positionals(p, argv)
    paths = Paths.from_env()
    with ctrl() as xc:
        dom = libxl.resolve(xc, ns.domain)
        try:
            # The arguments, one item each, read as one vif entry (an item holding a comma is
            # split there, where xl keeps it whole), after xl.conf's vif defaults.
            spec = xlconf.current().vif_defaults(",".join(ns.vifspec))
            nic = parse_vif(spec, hotplug.next_devid(paths, dom.domid, "vif"), strict=True, source=SOURCE)
        except DeviceSpecError as err:
            print(str(err), file=sys.stderr)
            return 1
        for w in nic.warnings:
            print(w, file=sys.stderr)
        if GLOBALS.dryrun:
            sys.stdout.write("vif: " + libxl_json.device_nic(spec) + "\n")
            sys.stdout.flush()
            return 0
        conf = xlconf.current()
        notice = conf.skipped_scripts_notice([nic.script])
        if notice:
            print(notice, file=sys.stderr)
        info = libxl.find(xc, "domid", dom.domid)
        try:
            if info is None:
                raise hotplug.DeviceError(f"Domain {dom.domid}: no such domain")
            hotplug.attach_nic(xc, paths, dom.domid, nic, str(info.get("type", "pv")),
                               run_scripts=conf.runs_hotplug_scripts)
        except hotplug.DeviceError as err:
            print(f"libxl: error: {err}", file=sys.stderr)
            print("libxl_device_nic_add failed.", file=sys.stderr)
            return 1
    return 0


def cmd_network_detach(argv: list[str]) -> int:
    p = new_parser("network-detach", "Destroy a domain's virtual network device")
    p.add_argument("domain")
    p.add_argument("devid", metavar="<DevId|mac>")
    ns = positionals(p, argv)
    paths = Paths.from_env()
    with ctrl() as xc:
        dom = libxl.resolve(xc, ns.domain)
        rec = hotplug.find_nic(paths, dom.domid, ns.devid)
        if rec is None:
            print(f"Unknown device {ns.devid}.", file=sys.stderr)
            return 1
        try:
            hotplug.detach_nic(xc, paths, dom.domid, int(rec["devid"]),
                               run_scripts=xlconf.current().runs_hotplug_scripts)
        except hotplug.DeviceError as err:
            print(f"libxl: error: {err}", file=sys.stderr)
            print("libxl_device_nic_del failed.", file=sys.stderr)
            return 1
    return 0


#: xl's commands that this module implements: name -> (function, one-line description).
COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "network-attach": (cmd_network_attach, "Create a new virtual network device"),
    "network-detach": (cmd_network_detach, "Destroy a domain's virtual network device"),
}
