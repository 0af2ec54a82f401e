"""xl list: the domains, one line each (or libxl's JSON of their configs with -l).

A module of its own, importing only what the plain listing needs (the hypervisor client and the
renderer): it is the command scripts and monitoring poll, and with 50 guests its cost was
mostly the imports of the domain builder, the backends and asyncio (bench/scale.py). What only
``-l``, ``-c``, ``-n`` or a domain argument need is imported when they are given.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

from ...records import TYPE_CHECKING
from .. import render_misc
from . import xlconf
from .common import Usage, ctrl, new_parser

if TYPE_CHECKING:
    from typing import Any, Callable

    from .parser import XlParser


def sxp_refused() -> int | None:
    """xl.conf's output_format = "sxp": xl prints ``list -l`` and ``create -n`` as SXP, which
    pyxen does not write; one line and exit 1 instead of JSON the caller did not ask for."""
    if xlconf.current().output_format != "sxp":
        return None
    print("xl: output_format \"sxp\" (xl.conf) is not implemented by pyxen; "
          "set output_format=\"json\"", file=sys.stderr)
    return 1


def list_parser() -> XlParser:
    p = new_parser("list", "List information about all/some domains")
    p.add_argument("-l", "--long", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("-Z", "--context", action="store_true")
    p.add_argument("-c", "--cpupool", action="store_true")
    p.add_argument("-n", "--numa", action="store_true")
    p.add_argument("domain", nargs="*")
    return p


#: What list_parser reads from no arguments: plain ``xl list``, the one scripts and monitors
#: run, builds no parser (argparse with gettext and locale was a tenth of its time).
#: tests/unit/test_xl_cmdtable.py keeps the two the same.
NO_ARGUMENTS = SimpleNamespace(long=False, verbose=False, context=False, cpupool=False, numa=False, domain=[])


def cmd_list(argv: list[str]) -> int:
    ns: Any = list_parser().parse_args(argv) if argv else NO_ARGUMENTS
    if len(ns.domain) > 1:
        raise Usage(list_parser().format_help(), 1)
    cols = render_misc.ListColumns(verbose=ns.verbose, context=ns.context, cpupool=ns.cpupool, numa=ns.numa)
    pools: dict[int, str] = {}
    nodes: dict[int, str] = {}
    with ctrl() as xc:
        infos = list(xc.call("sysctl.getdomaininfolist"))  # libxl.list_domains
        if ns.domain:
            from ...toolstack.domain import resolve
            ref = resolve(xc, ns.domain[0])
            infos = [d for d in infos if d["domid"] == ref.domid]
            if not infos:
                print(f"Error: Domain '{ns.domain[0]}' does not exist.", file=sys.stderr)
                return 1
        if cols.cpupool or cols.numa:
            from .misc import list_extras
            pools, nodes = list_extras(xc, infos, cols)
    if ns.long:
        return _list_long(infos)
    sys.stdout.write(render_misc.xl_list_columns(cols, infos, pools, nodes))
    return 0


def _list_long(infos: list[dict[str, Any]]) -> int:
    """xl list -l: libxl's JSON of each domain's config with its live state."""
    from ...paths import Paths
    from ...toolstack import hotplug, libxl_json, userdata
    from .. import render
    refused = sxp_refused()
    if refused is not None:
        return refused
    paths = Paths.from_env()
    entries: list[tuple[int, dict[str, Any]]] = []
    for d in infos:
        if d["domid"] == 0:  # xen-init-dom0's stub config, as libxl reads it back
            entries.append((0, libxl_json.dom0_config(libxl_json.LiveState.from_info(d))))
            continue
        cfg = userdata.retrieve(paths, d["domid"])
        if cfg is None:  # no stored config: xl skips the domain (list_domains_details)
            continue
        macs = [(int(r["devid"]), r["mac"]) for r in hotplug.list_devices(paths, d["domid"], ("vif",))
                if "mac" in r and r["devid"].isdigit()]
        live = libxl_json.LiveState.from_info(d, macs)
        entries.append((d["domid"], libxl_json.live_config(cfg, live)))
    sys.stdout.write(render.xl_list_long(entries))
    return 0


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "list": (cmd_list, "List information about all/some domains"),
}
