"""xl's commands on domains and the host: info, create, destroy, pause, unpause, shutdown,
reboot, console, dump-core, mem-set, mem-max, domid, domname,
uptime, dmesg, debug-keys, block-list, network-list.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from dataclasses import replace
from typing import Callable

from ...hypervisor.client import XenCtrl
from ...hypervisor.errors import HypercallError, NoSuchDomain
from ...libxlu.cfg import ConfigSyntaxError, atoi, strtol
from ...paths import Paths
from ...toolstack import domain as libxl
from ...toolstack import hotplug, libxl_json, userdata
from ...toolstack.config import ConfigError, DomainConfig, load
from ...toolstack.devices import DeviceSpecError, parse_all
from .. import render, render_misc
from ..console import CONSOLE_TYPES, ESCAPE, attach, parse_escape

from . import misc, xlconf
from .listing import sxp_refused
from .common import (GLOBALS, Usage, honours_dryrun, interrupts_on_termination, new_parser, ctrl)


# ---- commands --------------------------------------------------------------------------
def cmd_info(argv: list[str]) -> int:
    p = new_parser("info", "Get information about Xen host")
    p.add_argument("-n", "--numa", action="store_true")
    p.add_argument("-x", "--xenstore", action="store_true")
    p.add_argument("field", nargs="?")
    ns = p.parse_args(argv)
    with ctrl() as xc:
        fields = render.info_fields(xc.call("sysctl.physinfo"), xc.call("xen_version"))
        numa = misc.info_numa(xc) if ns.numa else ""
    sys.stdout.write(render_misc.xl_info_full(fields, ns.field, numa,
                                              misc.XENSTORE_FEATURES if ns.xenstore else None))
    return 0


def create_dryrun(cfg: DomainConfig) -> int:
    """``xl create -n`` (and ``xl -N create``): print libxl's JSON of the parsed config to
    stdout, create nothing (xl_vmcontrol.c create_domain, dryrun_only)."""
    try:
        sys.stdout.write(libxl_json.create_dryrun(cfg))
    except DeviceSpecError as err:
        print(str(err), file=sys.stderr)
        return 1
    return 0



@honours_dryrun
def cmd_create(argv: list[str]) -> int:
    p = new_parser("create", "Create a domain from config file <filename>")
    p.add_argument("-c", dest="console", action="store_true", help="Connect to the console after the domain is created")
    p.add_argument("-p", dest="paused", action="store_true", help="Leave the domain paused after it is created")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-f", "--defconfig", dest="defconfig")
    p.add_argument("-n", "--dryrun", action="store_true")
    p.add_argument("args", nargs="*", help="configfile and key=value overrides")
    ns = p.parse_args(argv)
    overrides = [a for a in ns.args if "=" in a]
    files = [a for a in ns.args if "=" not in a]
    if ns.defconfig:
        files.insert(0, ns.defconfig)
    if len(files) > 1:
        raise Usage(p.format_help(), 2)
    if not files:
        raise Usage(f"'xl create' requires a config file.\n\n{p.format_help()}", 2)
    if not ns.quiet:
        print(f"Parsing config from {files[0]}", file=sys.stderr)
    try:
        cfg = load(files[0], overrides)
    except (ConfigError, ConfigSyntaxError) as err:
        print(err.xl_report() if isinstance(err, ConfigSyntaxError) else str(err), file=sys.stderr)
        return 1
    for w in cfg.warnings:
        print(w, file=sys.stderr)
    conf = xlconf.current()
    cfg = replace(cfg, vifs=tuple(conf.vif_defaults(v) for v in cfg.vifs))
    # xl's -n and the global -N (GLOBALS.dryrun) are one switch: print the config, build nothing.
    if ns.dryrun or GLOBALS.dryrun:
        refused = sxp_refused()
        if refused is not None:
            return refused
        return create_dryrun(cfg)
    paths = Paths.from_env()
    _hotplug_notice(conf, cfg)
    balloon = conf.autoballoon_notice()
    if balloon:
        print(balloon, file=sys.stderr)
    try:
        libxl.check_files(cfg)
        with ctrl() as xc:
            with interrupts_on_termination(), libxl.create_lock(conf.lock_path(paths)):
                domid = libxl.create(xc, paths, cfg, paused=ns.paused,
                                     run_scripts=conf.runs_hotplug_scripts)
    except libxl.DomainBuildError as err:
        print(str(err), file=sys.stderr)
        return 1
    except HypercallError as err:
        print(f"libxl: error: cannot create domain '{cfg.name}': {err}", file=sys.stderr)
        return 1
    if ns.console:
        return attach(paths, domid)
    return 0


def _hotplug_notice(conf: xlconf.XlConf, cfg: DomainConfig) -> None:
    """run_hotplug_scripts=0: say once, before the build, which devices' scripts xl leaves to
    udev. A spec that does not parse says nothing here (create reports it)."""
    try:
        disks, nics = parse_all(cfg.disks, cfg.vifs)
    except DeviceSpecError:
        return
    notice = conf.skipped_scripts_notice([d.script for d in disks] + [n.script for n in nics])
    if notice:
        print(notice, file=sys.stderr)


def _domain_cmd(name: str, desc: str, op: Callable[[XenCtrl, Paths, int], None],
                failure: str | None = None) -> Callable[[list[str]], int]:
    def run(argv: list[str]) -> int:
        p = new_parser(name, desc)
        if name == "destroy":
            p.add_argument("-f", dest="force", action="store_true")
        p.add_argument("domain")
        ns = p.parse_args(argv)
        with ctrl() as xc:
            ref = libxl.resolve(xc, ns.domain)
            if name == "destroy" and ref.domid == 0 and not ns.force:
                print("Not destroying domain 0; use -f to force.\n"
                      "This can only be done when using a disaggregated hardware domain and toolstack.",
                      file=sys.stderr)
                return 1
            try:
                op(xc, Paths.from_env(), ref.domid)
            except NoSuchDomain as err:
                print(f"libxl: error: {err}" + (f"\n{failure} (rc=-21)" if failure else ""), file=sys.stderr)
                return 1 if failure else 0  # xl's pause_domain/unpause_domain ignore libxl's rc
            except HypercallError as err:
                print(f"libxl: error: {err}" + (f"\n{failure} (rc=-3)" if failure else ""), file=sys.stderr)
                return 1 if failure else 0
        return 0
    run.__doc__ = desc
    return run


def _shutdown_cmd(name: str, reboot: bool) -> Callable[[list[str]], int]:
    """xl shutdown / xl reboot [-a] [-w[w]] [-F] <Domain> (main_shutdown_or_reboot)."""
    verb = "Rebooting" if reboot else "Shutting down"
    what = "reboot" if reboot else "shutdown"
    event = "reset" if reboot else "power"

    def run(argv: list[str]) -> int:
        p = new_parser(name, f"Issue a {what} signal to a domain")
        p.add_argument("-a", "--all", action="store_true", help="all guest domains")
        p.add_argument("-w", "--wait", action="count", default=0, help="wait for shutdown (twice: for death)")
        p.add_argument("-F", dest="fallback", action="store_true", help="ACPI fallback for HVM guests without PV drivers")
        p.add_argument("domain", nargs="?")
        ns = p.parse_args(argv)
        if not ns.all and ns.domain is None:
            print("You must specify -a or a domain id.\n", file=sys.stderr)
            return 1
        paths = Paths.from_env()
        with ctrl() as xc:
            domids = ([d["domid"] for d in libxl.list_domains(xc) if d["domid"] != 0] if ns.all
                      else [libxl.resolve(xc, ns.domain).domid])
            for domid in domids:
                print(f"{verb} domain {domid}", file=sys.stderr)
                try:
                    libxl.request_shutdown(xc, paths, domid, "reboot" if reboot else "poweroff")
                except libxl.NoParavirt:
                    if not ns.fallback:
                        print(f"PV control interface not available: external graceful {what} not possible.\n"
                              f"Use \"-F\" to fallback to ACPI {event} event.\n"
                              f"{what} failed (rc=-10)", file=sys.stderr)
                        return 1
                    print(f"PV control interface not available: sending ACPI {event} button event.",
                          file=sys.stderr)
                    libxl.fallback_acpi(xc, domid, reboot)
            if ns.wait:
                return _wait_down(xc, domids, death_only=ns.wait > 1)
        return 0
    return run


def _wait_down(xc: XenCtrl, domids: list[int], death_only: bool, timeout: float = 300.0) -> int:
    """xl shutdown/reboot -w (wait_for_domain_deaths): until each domain has shut down or is
    gone; with -ww until it is gone (a reboot's restart destroys the old domain, so its domid
    goes either way). Polled: pyxen's xl has no event channel of its own for the death watch."""
    print(f"Waiting for {len(domids)} domains", file=sys.stderr)
    pending = set(domids)
    told: set[int] = set()
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        live = {d["domid"]: d for d in libxl.list_domains(xc)}
        for domid in sorted(pending):
            if domid not in live:
                print(f"Domain {domid} has been destroyed", file=sys.stderr)
                pending.discard(domid)
            elif live[domid]["shutdown"] and domid not in told:
                told.add(domid)
                print(f"Domain {domid} has been shut down, reason code {live[domid]['shutdown_reason']}",
                      file=sys.stderr)
                if death_only:
                    print(f"Domain {domid} continue waiting for death", file=sys.stderr)
                else:
                    pending.discard(domid)
        time.sleep(0.1)
    return 0 if not pending else 1


def _mem_cmd(name: str, setter: Callable[[XenCtrl, Paths, int, int], None],
             failure: str) -> Callable[[list[str]], int]:
    def run(argv: list[str]) -> int:
        p = new_parser(name, "Set the current memory usage for a domain" if name == "mem-set"
                    else "Set the maximum amount reservation for a domain")
        p.add_argument("domain")
        p.add_argument("size")
        ns = p.parse_args(argv)
        try:
            kb = libxl.parse_memory_size(ns.size)
        except ValueError as err:
            print(str(err), file=sys.stderr)
            return 1
        with ctrl() as xc:
            ref = libxl.resolve(xc, ns.domain)
            try:
                setter(xc, Paths.from_env(), ref.domid, kb)
            except HypercallError as err:
                print(f"{err}\ncannot set domid {ref.domid} {failure} memory to : {ns.size}", file=sys.stderr)
                return 1
        return 0
    return run


def cmd_console(argv: list[str]) -> int:
    """xl console [-t pv|serial|vuart] [-n N] [-e ESC] <Domain> (main_console and xenconsole):
    without -t the primary console (serial for HVM, PV otherwise); -e as xl since 4.18."""
    p = new_parser("console", "Attach to domain's console")
    p.add_argument("-t", dest="type")
    p.add_argument("-n", dest="num", default="0")
    p.add_argument("-e", dest="escape")
    p.add_argument("domain")
    ns = p.parse_args(argv)
    if ns.type is not None and ns.type not in CONSOLE_TYPES:
        print("console type supported are: pv, serial, vuart", file=sys.stderr)
        return 1
    escape = ESCAPE
    if ns.escape is not None:
        try:
            escape = parse_escape(ns.escape)
        except ValueError:
            print("Invalid escape argument", file=sys.stderr)
            return errno.EINVAL
    with ctrl() as xc:
        ref = libxl.resolve(xc, ns.domain)
        info = libxl.find(xc, "domid", ref.domid)
    ctype = ns.type or ("serial" if info is not None and info["type"] == "hvm" else "pv")
    return attach(Paths.from_env(), ref.domid, escape, ctype=ctype, num=atoi(ns.num))


def cmd_dump_core(argv: list[str]) -> int:
    """xl dump-core <Domain> <filename> (xl_misc.c:main_dump_core): an ELF core of the guest's
    memory, written by its device model (QEMU's dump-guest-memory, which stops a running guest
    for the copy and lets it run again; a paused one stays paused). No options. A relative
    filename is xl's working directory's. Failure is Xen's one line, ``core dump failed (rc=-3)``."""
    p = new_parser("dump-core", "Core dump a domain")
    p.add_argument("domain", metavar="Domain")
    p.add_argument("filename")
    ns = p.parse_args(argv)
    path = os.path.abspath(ns.filename) if ns.filename else ns.filename
    with ctrl() as xc:
        ref = libxl.resolve(xc, ns.domain)
        try:
            xc.call("dm_op.dump_core", domid=ref.domid, path=path)
        except HypercallError:
            print("core dump failed (rc=-3)", file=sys.stderr)
            return 1
    return 0




def cmd_domid(argv: list[str]) -> int:
    p = new_parser("domid", "Convert a domain name to domain id")
    p.add_argument("name")
    ns = p.parse_args(argv)
    with ctrl() as xc:
        found = libxl.find(xc, "name", ns.name)
    if found is not None:
        print(found["domid"])
        return 0
    print(f"Can't get domid of domain name '{ns.name}', maybe this domain does not exist.", file=sys.stderr)
    return 1


def cmd_domname(argv: list[str]) -> int:
    p = new_parser("domname", "Convert a domain id to domain name")
    p.add_argument("domid")
    ns = p.parse_args(argv)
    domid = strtol_domid(ns.domid)
    if domid is None:
        print("Invalid domain id.\n", file=sys.stderr)
        return 1
    with ctrl() as xc:
        found = libxl.find(xc, "domid", domid)
    if found is not None:
        print(found["name"])
        return 0
    print(f"Can't get domain name of domain id '{domid}', maybe this domain does not exist.", file=sys.stderr)
    return 1


def strtol_domid(text: str) -> int | None:
    """main_domname's ``domid = strtol(arg, &endptr, 10)`` into a uint32_t: leading white space
    and a sign, then as many decimal digits as there are ("12x" is 12; out of range clamps to
    LONG_MIN/LONG_MAX, then wraps to 32 bits). None when no digit was read at all (xl's
    "Invalid domain id.")."""
    value = strtol(text, 10)[0]
    return None if value is None else value & 0xFFFFFFFF


def cmd_uptime(argv: list[str]) -> int:
    p = new_parser("uptime", "Print uptime for all/some domains")
    p.add_argument("-s", dest="short", action="store_true")
    p.add_argument("domain", nargs="*")
    ns = p.parse_args(argv)
    now = time.time()
    with ctrl() as xc:
        infos = libxl.list_domains(xc)
        wanted = {libxl.resolve(xc, a).domid for a in ns.domain}
    rows = []
    for d in infos:
        if wanted and d["domid"] not in wanted:
            continue
        secs = float(open("/proc/uptime").read().split()[0]) if d["domid"] == 0 else now - d["created"]
        rows.append((d["name"], d["domid"], secs))
    if ns.short:
        sys.stdout.write(render_misc.xl_uptime_short(rows, now))
    else:
        sys.stdout.write(render.xl_uptime(rows))
    return 0


def cmd_dmesg(argv: list[str]) -> int:
    p = new_parser("dmesg", "Read and/or clear dmesg buffer")
    p.add_argument("-c", "--clear", action="store_true")
    ns = p.parse_args(argv)
    with ctrl() as xc:
        lines = xc.call("sysctl.readconsole", clear=ns.clear)
    sys.stdout.write("".join(line + "\n" for line in lines))
    return 0


def cmd_debug_keys(argv: list[str]) -> int:
    p = new_parser("debug-keys", "Send debug keys to Xen")
    p.add_argument("keys")
    ns = p.parse_args(argv)
    with ctrl() as xc:
        xc.call("sysctl.debug_keys", keys=ns.keys)
    return 0


def _device_list(name: str, kinds: tuple[str, ...],
                 render_fn: Callable[[list[dict[str, str]]], str]) -> Callable[[list[str]], int]:
    def run(argv: list[str]) -> int:
        p = new_parser(name, f"List virtual {'block' if 'vbd' in kinds else 'network'} devices for a domain")
        p.add_argument("domain", nargs="+")
        ns = p.parse_args(argv)
        paths = Paths.from_env()
        # The header first, then each domain's rows as xl prints them: block-list skips a bad
        # domain with a line and goes on (exit 0); network-list's find_domain stops (exit 1).
        header, _, _ = render_fn([]).partition("\n")
        with ctrl() as xc:  # the xl context first: with a daemon down, no header either
            print(header, flush=True)
            for arg in ns.domain:
                try:
                    domid = libxl.resolve(xc, arg).domid
                except NoSuchDomain:
                    if name != "block-list":
                        raise
                    print(f"{arg} is an invalid domain identifier", file=sys.stderr)
                    continue
                rows = render_fn(hotplug.list_devices(paths, domid, kinds)).split("\n", 1)[1]
                sys.stdout.write(rows)
                sys.stdout.flush()
        return 0
    return run



#: xl's commands that this module implements: name -> (function, one-line description).
COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "create": (cmd_create, "Create a domain from config file <filename>"),
    "destroy": (_domain_cmd("destroy", "Terminate a domain immediately", libxl.destroy, "destroy failed"), "Terminate a domain immediately"),
    "pause": (_domain_cmd("pause", "Pause execution of a domain", libxl.pause),
              "Pause execution of a domain"),
    "unpause": (_domain_cmd("unpause", "Unpause a paused domain", libxl.unpause),
                "Unpause a paused domain"),
    "shutdown": (_shutdown_cmd("shutdown", False), "Issue a shutdown signal to a domain"),
    "reboot": (_shutdown_cmd("reboot", True), "Issue a reboot signal to a domain"),
    "console": (cmd_console, "Attach to domain's console"),
    "dump-core": (cmd_dump_core, "Core dump a domain"),
    "mem-set": (_mem_cmd("mem-set", libxl.set_memory_target, "dynamic max"),
                "Set the current memory usage for a domain"),
    "mem-max": (_mem_cmd("mem-max", libxl.set_max_memory, "static max"),
                "Set the maximum amount reservation for a domain"),
    "info": (cmd_info, "Get information about Xen host"),
    "domid": (cmd_domid, "Convert a domain name to domain id"),
    "domname": (cmd_domname, "Convert a domain id to domain name"),
    "uptime": (cmd_uptime, "Print uptime for all/some domains"),
    "dmesg": (cmd_dmesg, "Read and/or clear dmesg buffer"),
    "debug-keys": (cmd_debug_keys, "Send debug keys to Xen"),
    "block-list": (_device_list("block-list", ("vbd", "qdisk"), render.xl_block_list),
                   "List virtual block devices for a domain"),
    "network-list": (_device_list("network-list", ("vif",), render.xl_network_list),
                     "List virtual network interfaces for a domain"),
}
