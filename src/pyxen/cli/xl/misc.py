"""The rest of xl's commands (tools/xl/xl_misc.c, xl_info.c, xl_console.c): rename,
config-update, vm-list, trigger, button-press, sysrq, qemu-monitor-command, vncviewer, claims,
set-parameters, top; and the pieces ``list``/``info``/``uptime``/``console`` take from here for
their extra options (list -v/-Z/-c/-n, info -n/-x, uptime -s, console -t/-n/-e).

libxl's own diagnostics are printed in libxl's log format (``libxl: error: <file>:<line>:<func>:
Domain N:<message>[: <strerror>]``), with the source positions of Xen 4.17.
"""

from __future__ import annotations

import errno as errnomod
import json
import os
import shutil
import sys
from typing import Any, Callable

from ...hypervisor.client import XenCtrl
from ...hypervisor.errors import HypercallError, InvalidArgument, NoSuchDomain
from ...libxlu.cfg import ConfigSyntaxError, strtol
from ...paths import Paths
from ...toolstack import domain as libxl
from ...toolstack import userdata, xsdomain
from ...toolstack.config import ConfigError, load
from ...xenstore.client import XenstoreClient
from .. import render_misc
from .common import Usage, ctrl, new_parser, positionals
from .saverestore import start_vncviewer

#: libxl's trigger names (libxl_types.idl: libxl_trigger), in its order.
TRIGGERS = ("power", "sleep", "nmi", "init", "reset", "s3resume")
#: xentop's module, which ``xl top`` runs (Xen's main_top: system("xentop")).
XENTOP = "pyxen.cli.xentop"


def libxl_error(where: str, domid: int | None, message: str, err: OSError | None = None) -> None:
    """One line in libxl's log format on stderr (LOGD/LOGED: the domain, then the message and,
    for LOGED, the errno's text)."""
    dom = f"Domain {domid}:" if domid is not None else ""
    tail = f": {os.strerror(err.errno)}" if err is not None and err.errno else ""
    print(f"libxl: error: {where}: {dom}{message}{tail}", file=sys.stderr)


def cpupool_names(xc: XenCtrl) -> dict[int, str]:
    """poolid -> name, from the hypervisor's pool table (libxl_cpupoolid_to_name)."""
    return {int(p["poolid"]): str(p["name"]) for p in xc.call("sysctl.cpupool_op.info")}


def claim_mode() -> bool:
    """xl.conf's claim_mode as xl applies it. pyxen's hypervisor has no claims
    (XENMEM_claim_pages; outstanding_pages is always 0), so xl runs as with claim_mode=0."""
    return False


# ---- rename, config-update, vm-list ------------------------------------------------------
def cmd_rename(argv: list[str]) -> int:
    """xl rename <Domain> <NewDomainName> (main_rename, libxl__domain_rename): the domain's
    name in the hypervisor and in xenstore (its ``name`` and ``/vm/<uuid>/name``) and in the
    toolstack's stored config, so xl list, domid and a later on_reboot restart follow it. A name
    another domain has is refused as libxl refuses it; renaming to its own name is no change."""
    p = new_parser("rename", "Rename a domain")
    p.add_argument("domain", metavar="Domain")
    p.add_argument("new_name", metavar="NewDomainName")
    ns = positionals(p, argv)
    with ctrl() as xc:
        ref = libxl.resolve(xc, ns.domain)
        other = libxl.find(xc, "name", ns.new_name)
        if other is not None and other["domid"] != ref.domid:
            libxl_error("libxl_domain.c:81:libxl__domain_rename", ref.domid,
                        f'Domain with name "{ns.new_name}" already exists.')
        elif ref.name == ns.new_name:
            return 0
        else:
            try:
                libxl.rename(xc, Paths.from_env(), ref.domid, ref.name, ns.new_name)
                return 0
            except libxl.DomainBuildError as err:
                libxl_error("libxl_domain.c:88:libxl__domain_rename", ref.domid, str(err))
    print(f"Can't rename domain '{ns.domain}'.", file=sys.stderr)
    return 1


def cmd_config_update(argv: list[str]) -> int:
    """xl config-update <Domain> [ConfigFile] [-f FILE] [-d] [key=value ...]
    (main_config_update): parse the new config as create does and keep it as the domain's
    stored config, which its next restart (on_reboot) builds from; the running domain does not
    change. -d (or xl -N) prints the parsed config."""
    p = new_parser("config-update", "Update a running domain's saved configuration, used when "
                   "rebuilding the domain after reboot.\nWARNING: xl now has better capability to "
                   "manage domain configuration, avoid using this command when possible")
    p.add_argument("-f", "--defconfig", dest="defconfig")
    p.add_argument("-d", dest="debug", action="store_true")
    p.add_argument("-q", dest="quiet", action="store_true")
    p.add_argument("args", nargs="*")
    if argv[:1] in (["-h"], ["--help"]):  # (xl help config-update; xl itself would take it
        p.parse_args(argv)                   # for a domain name)
    if not argv:
        print("xl config-update requires a domain argument", file=sys.stderr)
        sys.stdout.write(p.format_help())
        return 1
    print("WARNING: xl now has better capability to manage domain configuration, "
          "avoid using this command when possible", file=sys.stderr)
    with ctrl() as xc:
        domid = libxl.resolve(xc, argv[0]).domid
    rest = argv[1:]
    filename = None
    if rest and not rest[0].startswith("-") and "=" not in rest[0]:
        filename = rest.pop(0)
    ns = p.parse_args(rest)
    filename = ns.defconfig or filename
    overrides: list[str] = []
    for word in ns.args:
        if "=" in word:
            overrides.append(word)
        elif filename is None:
            filename = word
        else:
            raise Usage(p.format_help(), 2)
    if filename is None:
        print("Config file not specified", file=sys.stderr)
        return 1
    try:
        with open(filename, "rb") as f:
            f.read(1)
    except OSError as err:
        print(f"Failed to read config file: {filename}: {os.strerror(err.errno or errnomod.EIO)}",
              file=sys.stderr)
        return -3  # ERROR_FAIL, returned from main as xl does (exit status 253)
    try:
        cfg = load(filename, overrides)
    except (ConfigError, ConfigSyntaxError) as err:
        print(str(err), file=sys.stderr)
        return 1
    for w in cfg.warnings:
        print(w, file=sys.stderr)
    if ns.debug:
        print(json.dumps(cfg.to_json(), indent=4))
    print(f"setting dom{domid} configuration", file=sys.stderr)
    paths = Paths.from_env()
    if userdata.retrieve(paths, domid) is None and domid != 0:
        print("failed to update configuration", file=sys.stderr)
        return 1
    try:
        userdata.store(paths, domid, cfg)
    except OSError:
        print("failed to update configuration", file=sys.stderr)
        return 1
    return 0


def cmd_vm_list(argv: list[str]) -> int:
    """xl vm-list (list_vm): uuid, domid and name of every domain but stub domains (pyxen has
    none); Domain-0 is listed, as libxl_list_vm does, whatever the description says."""
    p = new_parser("vm-list", "List guest domains, excluding dom0, stubdoms, etc.")
    positionals(p, argv)
    with ctrl() as xc:
        infos = libxl.list_domains(xc)
    sys.stdout.write(render_misc.xl_vm_list((d["uuid"], d["domid"], d["name"]) for d in infos))
    return 0


# ---- trigger, button-press, sysrq --------------------------------------------------------
def send_trigger(xc: XenCtrl, domid: int, trigger: str, vcpu: int = 0) -> bool:
    """libxl_send_trigger: the hypervisor's answer is logged as libxl logs it; xl's callers go
    on (and exit 0) either way, as Xen 4.17's do. True if it was carried out."""
    try:
        xc.call("dm_op.trigger", domid=domid, trigger=trigger, vcpu=vcpu)
        return True
    except HypercallError as err:
        if trigger == "s3resume":
            libxl_error("libxl_domain.c:2162:domain_s3_resume_done", domid,
                        f"Send trigger '{trigger}' failed, rc=-6")
        else:
            libxl_error("libxl_domain.c:2207:libxl_send_trigger", domid,
                        f"Send trigger '{trigger}' failed", err)
        return False


def cmd_trigger(argv: list[str]) -> int:
    """xl trigger <Domain> <nmi|reset|init|power|sleep|s3resume> [<VCPU>] (main_trigger)."""
    p = new_parser("trigger", "Send a trigger to a domain")
    p.add_argument("domain", metavar="Domain")
    p.add_argument("trigger", metavar="nmi|reset|init|power|sleep|s3resume")
    p.add_argument("vcpu", nargs="?", metavar="VCPU")
    ns, _ = p.parse_known_args(argv)  # xl ignores words past the vCPU
    with ctrl() as xc:
        domid = libxl.resolve(xc, ns.domain).domid
        trigger = ns.trigger.lower()  # libxl__enum_from_string: strcasecmp
        if trigger not in TRIGGERS:
            print(f'Invalid trigger "{ns.trigger}"', file=sys.stderr)
            return 1
        vcpu = strtol(ns.vcpu, 10)[0] if ns.vcpu is not None else 0
        if vcpu is None:
            print("Invalid vcpuid, using default vcpuid=0.\n", file=sys.stderr)
        send_trigger(xc, domid, trigger, vcpu or 0)
    return 0


def cmd_button_press(argv: list[str]) -> int:
    """xl button-press <Domain> <power|sleep> (deprecated for trigger; main_button_press)."""
    print('WARNING: "button-press" is deprecated. Please use "trigger"', file=sys.stderr)
    p = new_parser("button-press", "Indicate an ACPI button press to the domain")
    p.add_argument("domain", metavar="Domain")
    p.add_argument("button", metavar="Button")
    ns, _ = p.parse_known_args(argv)
    with ctrl() as xc:
        domid = libxl.resolve(xc, ns.domain).domid
        if ns.button not in ("power", "sleep"):
            print(f"{ns.button} is an invalid button identifier", file=sys.stderr)
            return 1
        send_trigger(xc, domid, ns.button)
    return 0


def cmd_sysrq(argv: list[str]) -> int:
    """xl sysrq <Domain> <letter> (main_sysrq, libxl_send_sysrq): the letter is written to the
    domain's ``control/sysrq``, where the guest's xenbus driver (the demo guest's agent) picks
    it up, writes "" back and hands it to its kernel's magic SysRq."""
    p = new_parser("sysrq", "Send a sysrq to a domain")
    p.add_argument("domain", metavar="Domain")
    p.add_argument("letter")
    ns, _ = p.parse_known_args(argv)
    with ctrl() as xc:
        ref = libxl.resolve(xc, ns.domain)
        exists = libxl.find(xc, "domid", ref.domid) is not None
    if len(ns.letter) != 1:
        print("Invalid sysrq.\n", file=sys.stderr)
        sys.stdout.write(p.format_help())
        return 1
    if not exists:  # (libxl would write the key of a domain that is not there; pyxen does not)
        print(f"Domain {ref.domid} does not exist.", file=sys.stderr)
        return 1
    with XenstoreClient(Paths.from_env().xenstored_socket) as xs:
        xs.write(f"{xsdomain.dom_path(ref.domid)}/control/sysrq", ns.letter)
    return 0


# ---- qemu-monitor-command, vncviewer -----------------------------------------------------
def cmd_qemu_monitor_command(argv: list[str]) -> int:
    """xl qemu-monitor-command <Domain> <Command> (main_qemu_monitor_command): one HMP command
    line for the domain's device model, sent as QMP human-monitor-command; its output is
    printed as QEMU gives it, plus xl's newline."""
    p = new_parser("qemu-monitor-command", "Issue a qemu monitor command to the device model of a domain")
    p.add_argument("domain", metavar="Domain")
    p.add_argument("command", metavar="Command")
    ns, extra = p.parse_known_args(argv)
    with ctrl() as xc:
        domid = libxl.resolve(xc, ns.domain).domid
        if extra:
            print("Invalid arguments.", file=sys.stderr)
            return 1
        try:
            output = xc.call("dm_op.qemu_monitor_command", domid=domid, command=ns.command)
        except (NoSuchDomain, InvalidArgument):  # no device model to connect to
            libxl_error("libxl_qmp.c:1334:qmp_ev_connect", domid, "Failed to connect to QMP socket "
                        f"{Paths.from_env().qmp_socket(domid)}", OSError(errnomod.ENOENT, ""))
            return 1
        except HypercallError as err:  # QEMU's error, as libxl logs its desc
            libxl_error("libxl_qmp.c:1837:qmp_ev_parse_error_messages", domid, str(err))
            return 1
    if output:
        sys.stdout.write(f"{output}\n")
    return 0


def cmd_vncviewer(argv: list[str]) -> int:
    """xl vncviewer [--autopass] <Domain> (main_vncviewer): $VNCVIEWER (else ``vncviewer``) on
    the domain's VNC display. Without a viewer installed, the display's address is printed (so
    one can be pointed at it) and the exit status is 1, as xl's when the exec fails."""
    p = new_parser("vncviewer", "Attach to domain's VNC server.")
    p.add_argument("-a", "--autopass", "--vncviewer-autopass", dest="autopass", action="store_true")
    p.add_argument("domain", metavar="Domain")
    ns = positionals(p, argv)
    with ctrl() as xc:
        domid = libxl.resolve(xc, ns.domain).domid
    cfg = userdata.retrieve(Paths.from_env(), domid)
    if cfg is None or not cfg.vnc:
        libxl_error("libxl_console.c:201:libxl_vncviewer_exec", domid, "Cannot get vnc-port")
        return 1
    viewer = os.environ.get("VNCVIEWER") or "vncviewer"
    if shutil.which(viewer) is None:
        print(f"{cfg.vnclisten}:{cfg.vncdisplay or 0}")
        print(f"Unable to exec vncviewer: {viewer}: not installed (set VNCVIEWER to a VNC viewer)",
              file=sys.stderr)
        return 1
    start_vncviewer(cfg, domid)
    return 0


# ---- claims, set-parameters, top ---------------------------------------------------------
def cmd_claims(argv: list[str]) -> int:
    """xl claims (main_claims): the list table with a Claimed column, after xl's note that
    claim mode is off (see claim_mode)."""
    p = new_parser("claims", "List outstanding claim information about all domains")
    positionals(p, argv)
    if not claim_mode():
        print("claim_mode not enabled (see man xl.conf).", file=sys.stderr)
    with ctrl() as xc:
        infos = libxl.list_domains(xc)
    sys.stdout.write(render_misc.xl_list_columns(render_misc.ListColumns(claim=True), infos))
    return 0


def cmd_set_parameters(argv: list[str]) -> int:
    """xl set-parameters <Params> (main_set_parameters, libxl_set_parameters): space-separated
    ``name=value`` (or ``noname``) words, each written to the hypervisor's runtime parameter of
    that name in turn; the first one refused stops it."""
    p = new_parser("set-parameters", "Set hypervisor parameters")
    p.add_argument("params", metavar="Params")
    ns, _ = p.parse_known_args(argv)
    with ctrl() as xc:
        for name, value in split_parameters(ns.params):
            try:
                xc.call("sysctl.set_parameter", name=name, value=value)
            except HypercallError as err:
                libxl_error("libxl.c:706:libxl_set_parameters", None, "setting parameters", err)
                print(f"cannot set parameters: {ns.params}", file=sys.stderr)
                return 1
    return 0


def split_parameters(text: str) -> list[tuple[str, str]]:
    """libxl_set_parameters' split: words separated by blanks; ``name=value``, or ``noname``
    (which sets ``name`` to "no"), or a bare ``name`` (an empty value)."""
    out = []
    for word in text.split():
        name, eq, value = word.partition("=")
        if not eq and word.startswith("no"):
            name, value = word[2:], "no"
        out.append((name, value))
    return out


def cmd_top(argv: list[str]) -> int:
    """xl top (main_top): runs xentop, with no options of its own."""
    p = new_parser("top", "Monitor a host and the domains in real time")
    positionals(p, argv)
    from .. import xentop
    return xentop.main([])


#: xl's commands that this module implements: name -> (function, one-line description).
COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "config-update": (cmd_config_update, "Update a running domain's saved configuration, used when "
                      "rebuilding the domain after reboot."),
    "vncviewer": (cmd_vncviewer, "Attach to domain's VNC server."),
    "button-press": (cmd_button_press, "Indicate an ACPI button press to the domain"),
    "vm-list": (cmd_vm_list, "List guest domains, excluding dom0, stubdoms, etc."),
    "rename": (cmd_rename, "Rename a domain"),
    "trigger": (cmd_trigger, "Send a trigger to a domain"),
    "sysrq": (cmd_sysrq, "Send a sysrq to a domain"),
    "set-parameters": (cmd_set_parameters, "Set hypervisor parameters"),
    "top": (cmd_top, "Monitor a host and the domains in real time"),
    "claims": (cmd_claims, "List outstanding claim information about all domains"),
    "qemu-monitor-command": (cmd_qemu_monitor_command,
                             "Issue a qemu monitor command to the device model of a domain"),
}


# ---- what list, info, uptime and console take from here ----------------------------------
def list_extras(xc: XenCtrl, infos: list[dict[str, Any]], cols: render_misc.ListColumns
                ) -> tuple[dict[int, str], dict[int, str]]:
    """xl list -c's pool names and -n's node affinities, by domid."""
    names = cpupool_names(xc) if cols.cpupool else {}
    pools = {d["domid"]: names.get(int(d.get("cpupool", 0)), "Pool-0") for d in infos} if cols.cpupool else {}
    nodes: dict[int, str] = {}
    if cols.numa:
        nr_nodes = int(xc.call("sysctl.physinfo")["nr_nodes"])
        cpu_nodes = [c["node"] for c in xc.call("sysctl.cputopoinfo")]
        for d in infos:
            if d["domid"] == 0:
                hard = [range(len(cpu_nodes))]
            else:
                hard = [v["hard"] for v in xc.call("domctl.getvcpuinfo", domid=d["domid"])]
            nodes[d["domid"]] = render_misc.node_affinity(hard, cpu_nodes, nr_nodes)
    return pools, nodes


def info_numa(xc: XenCtrl) -> str:
    """xl info -n's cpu_topology, device topology and numa_info blocks."""
    return (render_misc.topology_block(xc.call("sysctl.cputopoinfo"), xc.call("sysctl.pcitopoinfo"))
            + render_misc.numa_block(xc.call("sysctl.numainfo")))


#: xs_get_features_supported's answer: pyxen's xenstored implements no optional feature
#: (XENSTORE_SERVER_FEATURE_RECONNECTION, _ERROR, _QUOTA), which is what 0 says.
XENSTORE_FEATURES = 0
