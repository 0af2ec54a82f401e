"""xl's commands on domains and the host: info, list, create, destroy, pause, unpause, shutdown,
reboot, console, dump-core, mem-set, mem-max, sched-credit, vcpu-list, vcpu-pin, domid, domname,
uptime, dmesg, debug-keys, block-list, network-list.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Callable

from ...hypervisor.client import XenCtrl
from ...hypervisor.errors import HypercallError, NoSuchDomain
from ...libxlu.cfg import ConfigSyntaxError
from ...libxlu.domid import parse_uint
from ...paths import Paths
from ...toolstack import domain as libxl
from ...toolstack import hotplug, userdata
from ...toolstack.config import ConfigError, load
from ...toolstack.devices import DeviceSpecError, vif_warnings
from .. import render
from ..console import attach

from .common import (Usage, interrupts_on_termination, new_parser, integer, ctrl)


# ---- commands --------------------------------------------------------------------------
def cmd_info(argv: list[str]) -> int:
    p = new_parser("info", "Get information about Xen host")
    p.add_argument("-n", "--numa", action="store_true")
    p.add_argument("-x", "--xenstore", action="store_true")
    p.add_argument("field", nargs="?")
    ns = p.parse_args(argv)
    with ctrl() as xc:
        fields = render.info_fields(xc.call("sysctl.physinfo"), xc.call("xen_version"))
    sys.stdout.write(render.xl_info(fields, ns.field))
    return 0


def cmd_list(argv: list[str]) -> int:
    p = new_parser("list", "List information about all/some domains")
    p.add_argument("-l", "--long", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("domain", nargs="*")
    ns = p.parse_args(argv)
    if len(ns.domain) > 1:
        raise Usage(p.format_help(), 1)
    with ctrl() as xc:
        infos = libxl.list_domains(xc)
        if ns.domain:
            ref = libxl.resolve(xc, ns.domain[0])
            infos = [d for d in infos if d["domid"] == ref.domid]
            if not infos:
                print(f"Error: Domain '{ns.domain[0]}' does not exist.", file=sys.stderr)
                return 1
    if ns.long:
        paths = Paths.from_env()
        configs = {d["domid"]: c.to_json() for d in infos
                   if (c := userdata.retrieve(paths, d["domid"])) is not None}
        sys.stdout.write(render.xl_list_long(infos, configs))
    else:
        sys.stdout.write(render.xl_list(render.DomainRow.from_info(d) for d in infos))
    return 0


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
        print(str(err), file=sys.stderr)
        return 1
    for w in cfg.warnings:
        print(w, file=sys.stderr)
    try:
        for w in vif_warnings(cfg.vifs):
            print(w, file=sys.stderr)
    except DeviceSpecError as err:
        print(f"{cfg.source}: {err}", file=sys.stderr)
        return 1
    if ns.dryrun:
        print(json.dumps(cfg.to_json(), indent=4))
        return 0
    paths = Paths.from_env()
    try:
        libxl.check_files(cfg)
        with ctrl() as xc:
            with interrupts_on_termination():
                domid = libxl.create(xc, paths, cfg, paused=ns.paused)
    except libxl.DomainBuildError as err:
        print(str(err), file=sys.stderr)
        return 1
    except HypercallError as err:
        print(f"libxl: error: cannot create domain '{cfg.name}': {err}", file=sys.stderr)
        return 1
    if ns.console:
        return attach(paths, domid)
    return 0


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
                return 1
            except HypercallError as err:
                print(f"libxl: error: {err}" + (f"\n{failure} (rc=-3)" if failure else ""), file=sys.stderr)
                return 1
        return 0
    run.__doc__ = desc
    return run


def _shutdown_cmd(name: str, reboot: bool) -> Callable[[list[str]], int]:
    verb = "Rebooting" if reboot else "Shutting down"

    def run(argv: list[str]) -> int:
        p = new_parser(name, f"Issue a {'reboot' if reboot else 'shutdown'} signal to a domain")
        p.add_argument("-a", "--all", action="store_true", help="all guest domains")
        p.add_argument("-w", "--wait", action="count", default=0, help="wait for shutdown (twice: for death)")
        p.add_argument("-F", dest="fallback", action="store_true", help="ACPI fallback for HVM guests without PV drivers")
        p.add_argument("domain", nargs="?")
        ns = p.parse_args(argv)
        if not ns.all and ns.domain is None:
            print("You must specify -a or a domain id.", file=sys.stderr)
            return 1
        paths = Paths.from_env()
        with ctrl() as xc:
            domids = ([d["domid"] for d in libxl.list_domains(xc) if d["domid"] != 0] if ns.all
                      else [libxl.resolve(xc, ns.domain).domid])
            for domid in domids:
                print(f"{verb} domain {domid}", file=sys.stderr)
                try:
                    libxl.request_shutdown(xc, paths, domid, "reboot" if reboot else "poweroff")
                except libxl.NoParavirt as err:
                    if not ns.fallback:
                        print(f"{err}\nUse \"-F\" to fallback to ACPI {'reset' if reboot else 'power'} event.\n"
                              f"{name} failed (rc=-10)", file=sys.stderr)
                        return 1
                    libxl.fallback_acpi(xc, domid, reboot)
            if ns.wait and not reboot:
                return _wait_down(xc, domids, death_only=ns.wait > 1)
        return 0
    return run


def _wait_down(xc: XenCtrl, domids: list[int], death_only: bool, timeout: float = 300.0) -> int:
    """xl shutdown -w: until each domain is shut down (or, with -ww, gone)."""
    print(f"Waiting for {len(domids)} domains", file=sys.stderr)
    pending = set(domids)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        live = {d["domid"]: d for d in libxl.list_domains(xc)}
        for domid in sorted(pending):
            if domid not in live:
                print(f"Domain {domid} has been destroyed", file=sys.stderr)
                pending.discard(domid)
            elif live[domid]["shutdown"] and not death_only:
                print(f"Domain {domid} has been shut down, reason code {live[domid]['shutdown_reason']}",
                      file=sys.stderr)
                pending.discard(domid)
        time.sleep(0.2)
    return 0 if not pending else 1


def cmd_sched_credit(argv: list[str]) -> int:
    p = new_parser("sched-credit", "Get/set credit scheduler parameters")
    p.add_argument("-d", "--domain")
    p.add_argument("-w", "--weight", type=integer)
    p.add_argument("-c", "--cap", type=integer)
    p.add_argument("-s", "--schedparam", action="store_true")
    p.add_argument("-p", "--cpupool")
    ns = p.parse_args(argv)
    if ns.domain is not None and (ns.schedparam or ns.cpupool):
        print("Specifying a cpupool or schedparam is not allowed with domain options.", file=sys.stderr)
        return 1
    if ns.domain is None and (ns.weight is not None or ns.cap is not None):
        print("Must specify a domain.", file=sys.stderr)
        return 1
    if ns.cpupool not in (None, "Pool-0"):
        print(f"unknown cpupool '{ns.cpupool}'", file=sys.stderr)
        return 1
    with ctrl() as xc:
        ver = xc.call("xen_version")
        pool = f"Cpupool Pool-0: tslice={ver['tslice_ms']}ms ratelimit={ver['ratelimit_us']}us migration-delay=0us"
        if ns.schedparam:
            print(pool)
            return 0
        if ns.domain is not None:
            ref = libxl.resolve(xc, ns.domain)
            if ns.weight is not None or ns.cap is not None:
                change = {k: v for k, v in (("weight", ns.weight), ("cap", ns.cap)) if v is not None}
                try:
                    xc.call("domctl.scheduler_op.putinfo", domid=ref.domid, **change)
                except HypercallError as err:
                    print(f"{err}\nlibxl_domain_sched_params_set failed.", file=sys.stderr)
                    return 1
                return 0
            doms = [d for d in libxl.list_domains(xc) if d["domid"] == ref.domid]
            pool_line = None
        else:
            doms, pool_line = libxl.list_domains(xc), pool
        rows = []
        for d in doms:
            info = xc.call("domctl.scheduler_op.getinfo", domid=d["domid"])
            rows.append((d["name"], d["domid"], info["weight"], info["cap"]))
    sys.stdout.write(render.xl_sched_credit(pool_line, rows))
    return 0


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


def cmd_vcpu_list(argv: list[str]) -> int:
    p = new_parser("vcpu-list", "List the VCPUs for all/some domains")
    p.add_argument("domain", nargs="*")
    ns = p.parse_args(argv)
    with ctrl() as xc:
        nr_cpus = int(xc.call("sysctl.physinfo")["nr_cpus"])
        doms = libxl.list_domains(xc)
        if ns.domain:
            wanted = [libxl.resolve(xc, a).domid for a in ns.domain]
            doms = [d for d in doms if d["domid"] in wanted]
        rows = [(d["name"], d["domid"], v) for d in doms
                for v in xc.call("domctl.getvcpuinfo", domid=d["domid"])]
    sys.stdout.write(render.xl_vcpu_list(rows, nr_cpus))
    return 0


def cmd_vcpu_pin(argv: list[str]) -> int:
    p = new_parser("vcpu-pin", "Set which CPUs a VCPU can use")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("domain")
    p.add_argument("vcpu")
    p.add_argument("hard")
    p.add_argument("soft", nargs="?")
    ns = p.parse_args(argv)
    with ctrl() as xc:
        ref = libxl.resolve(xc, ns.domain)
        vcpus = [v["vcpu"] for v in xc.call("domctl.getvcpuinfo", domid=ref.domid) if v["online"]]
        if ns.vcpu == "all":
            chosen = vcpus
        elif parse_uint(ns.vcpu) in vcpus:
            chosen = [int(ns.vcpu)]
        else:
            print(f"Error: Invalid argument {ns.vcpu} as VCPU.", file=sys.stderr)
            return 1
        if ns.hard == "-":
            return 0
        try:
            libxl.pin_vcpus(xc, ref.domid, ns.hard, chosen)
        except (libxl.DomainBuildError, HypercallError) as err:
            print(f"{err}\nCould not set affinity for vcpu `{ns.vcpu}'.", file=sys.stderr)
            return 1
    return 0


def cmd_console(argv: list[str]) -> int:
    p = new_parser("console", "Attach to domain's console")
    p.add_argument("-t", dest="type", choices=("pv", "serial", "vuart"))
    p.add_argument("-n", dest="num", type=int, default=0)
    p.add_argument("domain")
    ns = p.parse_args(argv)
    with ctrl() as xc:
        ref = libxl.resolve(xc, ns.domain)
    return attach(Paths.from_env(), ref.domid)


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
    domid = parse_uint(ns.domid)
    if domid is None:
        print("Invalid domain id.", file=sys.stderr)
        return 1
    with ctrl() as xc:
        found = libxl.find(xc, "domid", domid)
    if found is not None:
        print(found["name"])
        return 0
    print(f"Can't get domain name of domain id '{ns.domid}', maybe this domain does not exist.", file=sys.stderr)
    return 1


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
        clock = time.strftime("%H:%M:%S")
        for name, domid, secs in rows:
            print(f" {clock} up {render.uptime_text(secs).strip()}, {name} ({domid})")
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
        recs: list[dict[str, str]] = []
        with ctrl() as xc:
            for arg in ns.domain:
                recs += hotplug.list_devices(paths, libxl.resolve(xc, arg).domid, kinds)
        sys.stdout.write(render_fn(recs))
        return 0
    return run



#: xl's commands that this module implements: name -> (function, one-line description).
COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "create": (cmd_create, "Create a domain from config file <filename>"),
    "list": (cmd_list, "List information about all/some domains"),
    "destroy": (_domain_cmd("destroy", "Terminate a domain immediately", libxl.destroy, "destroy failed"), "Terminate a domain immediately"),
    "pause": (_domain_cmd("pause", "Pause execution of a domain", libxl.pause),
              "Pause execution of a domain"),
    "unpause": (_domain_cmd("unpause", "Unpause a paused domain", libxl.unpause),
                "Unpause a paused domain"),
    "shutdown": (_shutdown_cmd("shutdown", False), "Issue a shutdown signal to a domain"),
    "reboot": (_shutdown_cmd("reboot", True), "Issue a reboot signal to a domain"),
    "console": (cmd_console, "Attach to domain's console"),
    "dump-core": (cmd_dump_core, "Core dump a domain"),
    "vcpu-list": (cmd_vcpu_list, "List the VCPUs for all/some domains"),
    "mem-set": (_mem_cmd("mem-set", libxl.set_memory_target, "dynamic max"),
                "Set the current memory usage for a domain"),
    "mem-max": (_mem_cmd("mem-max", libxl.set_max_memory, "static max"),
                "Set the maximum amount reservation for a domain"),
    "sched-credit": (cmd_sched_credit, "Get/set credit scheduler parameters"),
    "vcpu-pin": (cmd_vcpu_pin, "Set which CPUs a VCPU can use"),
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
