"""``xl`` (and ``xm``): Xen's toolstack command line, with xl's names, options, output and exit codes.

Each command parses its arguments, calls the toolstack, and renders with render.py. Subcommands
may be abbreviated to any unambiguous prefix, as in xl. Diagnostics go to stderr as plain
sentences; a bad option exits 2, a failed operation 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, NoReturn

from ..hypervisor.client import XenCtrl
from ..hypervisor.errors import HypercallError, NoSuchDomain
from ..libxlu.cfg import ConfigSyntaxError
from ..libxlu.domid import parse_uint
from ..paths import Paths
from ..toolstack import domain as libxl
from ..toolstack import hotplug, migration, savefile, userdata
from ..toolstack.config import ConfigError, DomainConfig, load
from ..xenstore.client import XenstoreClient
from ..xenstore.errors import XenstoreError
from . import render
from .console import attach


class Usage(Exception):
    """Bad command-line usage: message for stderr, and xl's exit code for it."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


class XlParser(argparse.ArgumentParser):
    """argparse with xl's messages: ``option `-x' not supported.`` and exit 2."""

    def error(self, message: str) -> NoReturn:
        if "unrecognized arguments" in message:
            opt = message.split(":", 1)[1].split()[0]
            raise Usage(f"option `{opt.lstrip('-')}' not supported.")
        if "required" in message:
            # xl's def_getopt: the command's fixed number of arguments, whichever are missing.
            n = sum(1 for a in self._actions if not a.option_strings and a.nargs in (None, "+"))
            raise Usage(f"'xl {self.prog.split()[-1]}' requires at least {n} argument{'s' if n > 1 else ''}."
                        "\n\n" + self.format_help())
        raise Usage(message)


@contextlib.contextmanager
def interrupts_on_termination() -> Iterator[None]:
    """SIGTERM and SIGHUP act as Ctrl-C while the block runs, so an ``xl create`` told to stop
    unwinds (destroying what it built) instead of dying half-way. (SIGKILL cannot be caught;
    then the hypervisor destroys the unfinished domain when xl's connection closes.)"""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


@dataclass
class GlobalOptions:
    """xl's options before the subcommand (``xl -v -t migrate ...``): xl migrate passes them on
    to the receiver's xl."""

    verbose: int = 0
    #: -t: progress with carriage returns (xl passes it on when stderr is a terminal too).
    tty: bool = False
    #: -T: timestamps on messages.
    timestamps: bool = False


GLOBALS = GlobalOptions()


class XenstoreUnavailable(OSError):
    """xenstored does not answer on its socket: no xl context (libxl_ctx_alloc's xs_open)."""


def _parser(cmd: str, desc: str) -> XlParser:
    return XlParser(prog=f"xl {cmd}", description=desc, add_help=True)


def integer(text: str) -> int:
    """An option's number as xl's strtol reads it: ASCII digits with an optional '-' only
    (argparse's ``int`` would also take other scripts' digits, spaces and underscores)."""
    value = parse_uint(text[1:] if text.startswith("-") else text)
    if value is None:
        raise argparse.ArgumentTypeError(f"invalid integer value: '{text}'")
    return -value if text.startswith("-") else value


def _ctrl() -> XenCtrl:
    """The xl context (libxl_ctx_alloc): a handle on the hypervisor, once xenstored is known to
    listen too. libxl opens both before any command runs, so with either daemon down every
    command stops here, with one line and before it has applied anything (mem-set does not move
    a reservation whose memory/target it then could not write).

    :raise HypervisorUnavailable: the hypervisor's socket does not answer.
    :raise XenstoreUnavailable: xenstored's socket does not answer.
    """
    paths = Paths.from_env()
    xc = XenCtrl(paths.hypervisor_socket)
    try:
        XenstoreClient(paths.xenstored_socket).connect().close()
    except OSError as err:
        xc.close()
        raise XenstoreUnavailable(
            err.errno or 0, f"cannot connect to xenstore at {paths.xenstored_socket} "
            f"({os.strerror(err.errno) if err.errno else err}); is the host started? "
            "(pyxen host start)") from err
    return xc


# ---- commands --------------------------------------------------------------------------
def cmd_info(argv: list[str]) -> int:
    p = _parser("info", "Get information about Xen host")
    p.add_argument("-n", "--numa", action="store_true")
    p.add_argument("-x", "--xenstore", action="store_true")
    p.add_argument("field", nargs="?")
    ns = p.parse_args(argv)
    with _ctrl() as xc:
        fields = render.info_fields(xc.call("sysctl.physinfo"), xc.call("xen_version"))
    sys.stdout.write(render.xl_info(fields, ns.field))
    return 0


def cmd_list(argv: list[str]) -> int:
    p = _parser("list", "List information about all/some domains")
    p.add_argument("-l", "--long", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("domain", nargs="*")
    ns = p.parse_args(argv)
    if len(ns.domain) > 1:
        raise Usage(p.format_help(), 1)
    with _ctrl() as xc:
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
    p = _parser("create", "Create a domain from config file <filename>")
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
    if ns.dryrun:
        print(json.dumps(cfg.to_json(), indent=4))
        return 0
    paths = Paths.from_env()
    try:
        libxl.check_files(cfg)
        with _ctrl() as xc:
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
        p = _parser(name, desc)
        if name == "destroy":
            p.add_argument("-f", dest="force", action="store_true")
        p.add_argument("domain")
        ns = p.parse_args(argv)
        with _ctrl() as xc:
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
        p = _parser(name, f"Issue a {'reboot' if reboot else 'shutdown'} signal to a domain")
        p.add_argument("-a", "--all", action="store_true", help="all guest domains")
        p.add_argument("-w", "--wait", action="count", default=0, help="wait for shutdown (twice: for death)")
        p.add_argument("-F", dest="fallback", action="store_true", help="ACPI fallback for HVM guests without PV drivers")
        p.add_argument("domain", nargs="?")
        ns = p.parse_args(argv)
        if not ns.all and ns.domain is None:
            print("You must specify -a or a domain id.", file=sys.stderr)
            return 1
        paths = Paths.from_env()
        with _ctrl() as xc:
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
    p = _parser("sched-credit", "Get/set credit scheduler parameters")
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
    with _ctrl() as xc:
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
        p = _parser(name, "Set the current memory usage for a domain" if name == "mem-set"
                    else "Set the maximum amount reservation for a domain")
        p.add_argument("domain")
        p.add_argument("size")
        ns = p.parse_args(argv)
        try:
            kb = libxl.parse_memory_size(ns.size)
        except ValueError as err:
            print(str(err), file=sys.stderr)
            return 1
        with _ctrl() as xc:
            ref = libxl.resolve(xc, ns.domain)
            try:
                setter(xc, Paths.from_env(), ref.domid, kb)
            except HypercallError as err:
                print(f"{err}\ncannot set domid {ref.domid} {failure} memory to : {ns.size}", file=sys.stderr)
                return 1
        return 0
    return run


def cmd_vcpu_list(argv: list[str]) -> int:
    p = _parser("vcpu-list", "List the VCPUs for all/some domains")
    p.add_argument("domain", nargs="*")
    ns = p.parse_args(argv)
    with _ctrl() as xc:
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
    p = _parser("vcpu-pin", "Set which CPUs a VCPU can use")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("domain")
    p.add_argument("vcpu")
    p.add_argument("hard")
    p.add_argument("soft", nargs="?")
    ns = p.parse_args(argv)
    with _ctrl() as xc:
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
    p = _parser("console", "Attach to domain's console")
    p.add_argument("-t", dest="type", choices=("pv", "serial", "vuart"))
    p.add_argument("-n", dest="num", type=int, default=0)
    p.add_argument("domain")
    ns = p.parse_args(argv)
    with _ctrl() as xc:
        ref = libxl.resolve(xc, ns.domain)
    return attach(Paths.from_env(), ref.domid)


def cmd_dump_core(argv: list[str]) -> int:
    """xl dump-core <Domain> <filename> (xl_misc.c:main_dump_core): an ELF core of the guest's
    memory, written by its device model (QEMU's dump-guest-memory, which stops a running guest
    for the copy and lets it run again; a paused one stays paused). No options. A relative
    filename is xl's working directory's. Failure is Xen's one line, ``core dump failed (rc=-3)``."""
    p = _parser("dump-core", "Core dump a domain")
    p.add_argument("domain", metavar="Domain")
    p.add_argument("filename")
    ns = p.parse_args(argv)
    path = os.path.abspath(ns.filename) if ns.filename else ns.filename
    with _ctrl() as xc:
        ref = libxl.resolve(xc, ns.domain)
        try:
            xc.call("dm_op.dump_core", domid=ref.domid, path=path)
        except HypercallError:
            print("core dump failed (rc=-3)", file=sys.stderr)
            return 1
    return 0


def _positionals(p: XlParser, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``; positional arguments beyond the parser's print the command's help and
    exit 1, as xl's commands that count their arguments after def_getopt do."""
    ns, extra = p.parse_known_args(argv)
    for word in extra:
        if word.startswith("-") and word != "-":
            raise Usage(f"option `{word.lstrip('-')}' not supported.")
    if extra:
        raise Usage(p.format_help(), 1)
    return ns


def cmd_save(argv: list[str]) -> int:
    """xl save [-c] [-p] [-D] <Domain> <CheckpointFile> [<ConfigFile>] (xl_saverestore.c): xl's
    header with the config, then the domain's state; the domain is destroyed unless -c (keep it
    running) or -p (keep it paused). -D writes the domain's id into the saved config, so that
    its restore asks for the same domid (ignored with a ConfigFile, as in xl)."""
    p = _parser("save", "Save a domain state to restore later")
    p.add_argument("-c", dest="keep", action="store_true", help="Leave domain running after creating the snapshot")
    p.add_argument("-p", dest="paused", action="store_true", help="Leave domain paused after creating the snapshot")
    p.add_argument("-D", dest="same_domid", action="store_true", help="Store the domain id in the configuration")
    p.add_argument("domain", metavar="Domain")
    p.add_argument("file", metavar="CheckpointFile")
    p.add_argument("config", metavar="ConfigFile", nargs="?")
    ns = _positionals(p, argv)
    override = None
    if ns.config:
        try:
            override = load(ns.config)
        except (ConfigError, ConfigSyntaxError):
            print("unable to read overridden config file", file=sys.stderr)
            return 1
    path = Path(os.path.abspath(ns.file))
    with _ctrl() as xc:
        ref = libxl.resolve(xc, ns.domain)
        try:
            info = libxl.save(xc, Paths.from_env(), ref.domid, path, keep=ns.keep or ns.paused,
                              paused=ns.paused, config=override, same_domid=ns.same_domid)
        except libxl.DomainBuildError as err:
            print(str(err), file=sys.stderr)
            return 1
    print(f"Saving to {path} new xl format (info {info})", file=sys.stderr)
    return 0


def cmd_restore(argv: list[str]) -> int:
    """xl restore [-p] [-e] [-d] [-F] [-c] [-V] [-A] [<ConfigFile>] <CheckpointFile>
    (xl_saverestore.c main_restore, xl_vmcontrol.c create_domain): check xl's header in xl's
    order and words, then build the domain from the saved config, or from ConfigFile (xl.cfg
    text that replaces it whole; /dev/null is an empty one), load its state and let it run on
    where it stopped (unless -p).

    -e: no monitor (the host's monitor leaves the domain alone: its on_* actions are not
    applied). -F: wait in the foreground until the domain is gone (following its restarts).
    -d: the resulting config to stderr. -c: attach its console. -V/-A: start a VNC viewer on
    its display."""
    p = _parser("restore", "Restore a domain from a saved state")
    p.add_argument("-p", dest="paused", action="store_true", help="Do not unpause domain after restoring it")
    p.add_argument("-e", dest="no_monitor", action="store_true", help="Do not wait in the background for the death of the domain")
    p.add_argument("-d", dest="debug", action="store_true", help="Enable debug messages")
    p.add_argument("-F", dest="foreground", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("-c", dest="console", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("-V", "--vncviewer", dest="vnc", action="store_true", help="Connect to the VNC display after the domain is created")
    p.add_argument("-A", "--vncviewer-autopass", dest="vncautopass", action="store_true",
                   help="Pass VNC password to viewer via stdin")
    p.add_argument("files", nargs="+", metavar="[ConfigFile] CheckpointFile")
    p.usage = "xl restore [options] [<ConfigFile>] <CheckpointFile>"
    ns = p.parse_args(argv)
    if len(ns.files) > 2:
        raise Usage(p.format_help(), 1)
    config_file, save_file = (ns.files[0], ns.files[1]) if len(ns.files) == 2 else (None, ns.files[0])
    path = Path(os.path.abspath(save_file))
    try:
        f = open(path, "rb")
    except OSError as err:
        print(f"Can't open restore file: {err.strerror}", file=sys.stderr)
        return 1
    with f:
        try:
            header = savefile.decode(f, str(path))
        except savefile.SaveFileError as err:
            print(str(err), file=sys.stderr)
            return 1
    print(f"Loading new save file {path} (new xl fmt info {header.info()})", file=sys.stderr)
    if header.config is not None:
        print(" Savefile contains xl domain config in JSON format", file=sys.stderr)
    if config_file is not None:
        print(f"Parsing config from {config_file}", file=sys.stderr)
        try:
            cfg = load(config_file)
        except (ConfigError, ConfigSyntaxError) as err:
            print(str(err), file=sys.stderr)
            return 1
    elif header.config is not None:
        print("Parsing config from <saved>", file=sys.stderr)
        try:
            cfg = DomainConfig.from_json(header.config)
        except TypeError as err:
            print(f"unable to parse the saved domain config: {err}", file=sys.stderr)
            return 1
    else:
        print("Config file not specified and none in save file", file=sys.stderr)
        return 1
    for w in cfg.warnings:
        print(w, file=sys.stderr)
    if ns.debug:
        print(json.dumps(cfg.to_json(), indent=4), file=sys.stderr)
    paths = Paths.from_env()
    with _ctrl() as xc:
        try:
            with interrupts_on_termination():
                domid = libxl.create(xc, paths, cfg, paused=ns.paused,
                                     restore_from=(path, header.stream_offset), monitored=not ns.no_monitor)
        except libxl.DomainBuildError as err:
            print(str(err), file=sys.stderr)
            return 1
        except HypercallError as err:
            print(f"libxl: error: cannot restore domain '{cfg.name}': {err}", file=sys.stderr)
            return 1
    if ns.vnc or ns.vncautopass:
        start_vncviewer(cfg, domid)
    rc = attach(paths, domid) if ns.console else 0
    if ns.foreground and not ns.no_monitor:
        return wait_for_death(paths, cfg.name, cfg.uuid, domid)
    return rc


def start_vncviewer(cfg: DomainConfig, domid: int) -> None:
    """xl's -V/-A (autoconnect_vncviewer, libxl_vncviewer_exec): $VNCVIEWER (else
    ``vncviewer``) on ``<vnclisten>:<display>``, started in the background; xl does not wait
    for it, and its failing does not change xl's exit status. pyxen sets no VNC password
    (``vncpasswd`` is not read), so -A has none to hand over and acts as -V."""
    viewer = os.environ.get("VNCVIEWER") or "vncviewer"
    if not cfg.vnc:
        print(f"libxl: error: Domain {domid}:Cannot get vnc-port: the domain has no VNC display "
              "(its config has no vnc=1)\nUnable to exec vncviewer", file=sys.stderr)
        return
    try:
        subprocess.Popen([viewer, f"{cfg.vnclisten}:{cfg.vncdisplay or 0}"], stdin=subprocess.DEVNULL,
                         start_new_session=True)
    except OSError as err:
        print(f"Unable to exec vncviewer: {viewer}: {err.strerror} (set VNCVIEWER to a VNC viewer)",
              file=sys.stderr)


def wait_for_death(paths: Paths, name: str, uuid: str, domid: int, poll: float = 0.5) -> int:
    """xl's foreground monitor (-F), as far as xl itself goes in pyxen: the host's monitor
    applies the domain's on_* actions; this waits until the domain is gone for good. A restart
    keeps the uuid (and the monitor notes it before it destroys the old domain), so the wait
    follows it to its new domid."""
    print(f"Waiting for domain {name} (domid {domid}) to die [pid {os.getpid()}]", file=sys.stderr)
    while True:
        with _ctrl() as xc:
            found = next((d for d in libxl.list_domains(xc) if d["uuid"] == uuid), None)
        if found is None and not paths.restart_note(name).exists():
            print(f"Domain {domid} has been destroyed.", file=sys.stderr)
            return 0
        if found is not None and found["domid"] != domid:
            domid = int(found["domid"])
            print(f"Waiting for domain {name} (domid {domid}) to die [pid {os.getpid()}]", file=sys.stderr)
        time.sleep(poll)


def _say(text: str) -> None:
    """One line to stderr in one write (as C's unbuffered stderr does with each fprintf): the
    sender and the receiver share the terminal, so a line must not be split by the other's."""
    sys.stderr.flush()
    os.write(2, (text + "\n").encode(errors="replace"))


def cmd_migrate(argv: list[str]) -> int:
    """xl migrate [-s <sshcommand>] [-e] [-C <config>] [-p] [-D] [--debug] <Domain> <host>
    (xl_migrate.c:main_migrate): live migration to the xl migrate-receive that ``ssh <host>``
    (or the -s command; with -s "", <host> as a shell command) runs, over its stdin/stdout."""
    p = _parser("migrate", "Migrate a domain to another host")
    p.add_argument("-C", dest="config", help="Send <config> instead of config file from creation")
    p.add_argument("-s", dest="ssh_command", default="ssh", help="Use <sshcommand> instead of ssh")
    p.add_argument("-e", dest="no_monitor", action="store_true", help="Do not wait in the background (on <host>) for the death of the domain")
    p.add_argument("-F", dest="foreground", action="store_true")
    p.add_argument("-p", dest="paused", action="store_true", help="Do not unpause domain after migrating it")
    p.add_argument("-D", dest="same_domid", action="store_true", help="Preserve the domain id")
    p.add_argument("--debug", action="store_true", help="Print huge (!) amount of debug during the migration process")
    p.add_argument("--live", action="store_true", help="ignored (xm compatibility)")
    p.add_argument("domain", metavar="Domain")
    p.add_argument("host")
    p.add_argument("ignored", nargs="*", help=argparse.SUPPRESS)  # xl ignores extra arguments
    ns = p.parse_args(argv)
    if ns.same_domid:
        print("xl migrate: -D (keep the domain id) is not supported by pyxen", file=sys.stderr)
        return 1
    paths = Paths.from_env()
    with _ctrl() as xc:
        ref = libxl.resolve(xc, ns.domain)
        if ns.config:
            try:
                cfg: DomainConfig | None = load(ns.config)
            except (ConfigError, ConfigSyntaxError):
                print("unable to read overridden config file", file=sys.stderr)
                return 1
        else:
            cfg = userdata.retrieve(paths, ref.domid)
        if cfg is None or not ref.name:
            print("No config file stored for running domain and none supplied - cannot migrate.",
                  file=sys.stderr)
            return 1
        rune = migration.rune(ns.ssh_command, ns.host, tty=GLOBALS.tty or sys.stderr.isatty(),
                              timestamps=GLOBALS.timestamps, verbose=GLOBALS.verbose,
                              no_monitor=ns.no_monitor or ns.foreground, debug=ns.debug,
                              paused=ns.paused)
        return _migrate_domain(xc, paths, ref, cfg, rune)


def _migrate_domain(xc: XenCtrl, paths: Paths, ref: libxl.DomainRef, cfg: DomainConfig, rune: str) -> int:
    """xl_migrate.c:migrate_domain: the sender's side of the protocol (toolstack/migration.py),
    with xl's messages, and who resumes or destroys the domain on each path."""
    say = _say

    # stderr is inherited: the receiver's messages appear here, as with xl.
    child = subprocess.Popen(["sh", "-c", rune], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    send_fd, recv_fd = child.stdin.fileno(), child.stdout.fileno()
    migration.widen_pipe(send_fd)

    def child_report() -> None:
        """Close our end, then wait a little for the transport (migration_child_report)."""
        child.stdin.close()  # type: ignore[union-attr]
        try:
            status = child.wait(migration.CHILD_WAIT)
        except subprocess.TimeoutExpired:
            say(f"migration child [{child.pid}] not exiting, no longer waiting "
                "(exit status will be unreported)")
            return
        if status > 0:
            say(f"migration transport process [{child.pid}] exited with error status {status}")
        elif status < 0:
            say(f"migration transport process [{child.pid}] died due to fatal signal {-status}")

    def failed_resume() -> int:
        child_report()
        say("Migration failed, resuming at sender.")
        try:
            xc.call("domctl.unpausedomain", domid=ref.domid)
        except HypercallError as err:
            say(f"libxl: error: {_one_line(str(err))}")
        return 1

    def failed_badly() -> int:
        say("** Migration failed during final handshake **\n"
            "Domain state is now undefined !\n"
            "Please CHECK AT BOTH ENDS for running instances, before renaming and\n"
            " resuming at most one instance.  Two simultaneous instances of the domain\n"
            " would probably result in SEVERE DATA LOSS and it is now your\n"
            " responsibility to avoid that.  Sorry.")
        child_report()
        return 1

    try:
        migration.read_fixed(recv_fd, migration.BANNER, "banner", migration.RECEIVER_STREAM, rune)
        header = savefile.encode(cfg.to_json())
        migration.write_exactly(send_fd, header, migration.SENDER_STREAM, "header")
    except migration.StreamError as err:
        say(str(err))
        child_report()
        return 1
    say(f"Saving to migration stream new xl format (info {savefile.info_of(header)})")
    try:
        xc.call("dm_op.migrate_send", domid=ref.domid, live=True, fds=[send_fd])
    except HypercallError as err:
        say(f"libxl: error: {_one_line(str(err))}")
        say(f"migration sender: libxl_domain_suspend failed (rc={migration.ERROR_FAIL})")
        return failed_resume()
    try:
        migration.read_fixed(recv_fd, migration.READY, "ready message", migration.RECEIVER_STREAM, rune)
    except migration.StreamError as err:
        say(str(err))
        return failed_resume()
    say("migration sender: Target has acknowledged transfer.")
    away = ref.name + migration.AWAY_SUFFIX
    try:
        libxl.rename(xc, paths, ref.domid, ref.name, away)
    except libxl.DomainBuildError as err:
        say(f"libxl: error: {err}")
        return failed_resume()
    # The point of no return: once GO may have reached the receiver, two copies could run.
    say("migration sender: Giving target permission to start.")
    try:
        migration.write_exactly(send_fd, migration.GO, migration.SENDER_STREAM, "GO message")
        migration.read_fixed(recv_fd, migration.REPORT, "success/failure report message",
                             migration.RECEIVER_STREAM, rune)
        status = migration.read_exactly(recv_fd, 1, migration.ACK_STREAM, "success/failure status")[0]
    except migration.StreamError as err:
        say(str(err))
        return failed_badly()
    if status:
        say(f"migration sender: Target reports startup failure (status code {migration.status_code(status)}).")
        try:
            migration.read_fixed(recv_fd, migration.GO, "permission for sender to resume",
                                 migration.RECEIVER_STREAM, rune)
        except migration.StreamError as err:
            say(str(err))
            return failed_badly()
        say("migration sender: Trying to resume at our end.")
        try:
            libxl.rename(xc, paths, ref.domid, away, ref.name)
        except libxl.DomainBuildError as err:
            say(f"libxl: error: {err}")
        try:
            xc.call("domctl.unpausedomain", domid=ref.domid)
            say("migration sender: Resumed OK.")
        except HypercallError as err:
            say(f"libxl: error: {_one_line(str(err))}")
        say("Migration failed due to problems at target.")
        return 1
    say("migration sender: Target reports successful startup.")
    libxl.destroy(xc, paths, ref.domid)
    say("Migration successful.")
    return 0


def cmd_migrate_receive(argv: list[str]) -> int:
    """xl migrate-receive [-F] [-e] [-d] [-p] (xl_migrate.c:main_migrate_receive): the target of
    xl migrate, run by its rune; the protocol on stdin (stream in) and stdout (acks out),
    messages on stderr. The domain is built paused as ``<name>--incoming``, renamed and unpaused
    when the sender says go."""
    p = _parser("migrate-receive", "Restore a domain from a saved state")
    p.add_argument("-F", dest="foreground", action="store_true")
    p.add_argument("-e", dest="no_monitor", action="store_true")
    p.add_argument("-d", dest="debug", action="store_true")
    p.add_argument("-r", dest="remus", action="store_true")
    p.add_argument("-p", dest="paused", action="store_true")
    p.add_argument("--colo", action="store_true")
    p.add_argument("--coloft-script")
    p.add_argument("--userspace-colo-proxy", action="store_true")
    p.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    ns = p.parse_args(argv)
    if ns.args:
        raise Usage(p.format_help(), 1)
    if ns.remus or ns.colo:
        print("migration target: Remus (-r) and COLO (--colo) checkpointed streams are not "
              "supported by pyxen", file=sys.stderr)
        return 1
    with _ctrl() as xc:
        return _migrate_receive(xc, Paths.from_env(), ns.paused, ns.debug)


def _migrate_receive(xc: XenCtrl, paths: Paths, paused: bool, debug: bool) -> int:
    """xl_migrate.c:migrate_receive, on fds 0 (from the sender) and 1 (to it). pyxen's monitor
    is the host's daemon, so nothing is forked here (-e and -F change nothing) and nothing
    keeps the sender's pipes open once this process exits."""
    say = _say

    recv_fd, send_fd = 0, 1
    migration.widen_pipe(recv_fd)
    say("migration target: Ready to receive domain.")
    try:
        migration.write_exactly(send_fd, migration.BANNER, migration.ACK_STREAM, "banner")
    except migration.StreamError as err:
        say(str(err))
        return 1
    source = "<incoming migration stream>"
    try:
        header = savefile.decode(migration.TimedReader(recv_fd, migration.SENDER_STREAM), source)
        say(f"Loading new save file {source} (new xl fmt info {header.info()})")
        if header.config is None:
            raise savefile.SaveFileError("Config file not specified and none in save file")
        say(" Savefile contains xl domain config in JSON format")
        say("Parsing config from <saved>")
        cfg = DomainConfig.from_json(header.config)
    except (savefile.SaveFileError, migration.StreamError, ConfigError, TypeError) as err:
        say(str(err))
        say(f"migration target: Domain creation failed (code {migration.ERROR_INVAL}).")
        return 1
    if debug:
        say(json.dumps(cfg.to_json(), indent=4))
    incoming = replace(cfg, name=cfg.name + migration.INCOMING_SUFFIX)
    try:
        domid = libxl.create(xc, paths, incoming, paused=True, migrate_fd=recv_fd)
    except (libxl.DomainBuildError, HypercallError) as err:
        say(f"libxl: error: {_one_line(str(err))}")
        say(f"migration target: Domain creation failed (code {migration.ERROR_FAIL}).")
        return 1
    finally:
        os.set_blocking(recv_fd, True)  # (QEMU set the shared description non-blocking)
    say("migration target: Transfer complete, requesting permission to start domain.")
    try:
        migration.write_exactly(send_fd, migration.READY, migration.ACK_STREAM, "ready message")
    except migration.StreamError as err:
        say(str(err))
        return 1
    rc = 0
    try:
        migration.read_fixed(recv_fd, migration.GO, "GO message", migration.SENDER_STREAM)
    except migration.StreamError as err:
        say(str(err))
        rc = 1  # (migrate_read_fixedmessage's failure, as xl sends it)
    if rc == 0:
        say("migration target: Got permission, starting domain.")
        try:
            libxl.rename(xc, paths, domid, incoming.name, cfg.name)
            if not paused:
                xc.call("domctl.unpausedomain", domid=domid)
            say("migration target: Domain started successsfully.")
        except (libxl.DomainBuildError, HypercallError) as err:
            say(f"libxl: error: {_one_line(str(err))}")
            rc = migration.ERROR_FAIL
    try:
        migration.write_exactly(send_fd, migration.REPORT, migration.ACK_STREAM, "success/failure report")
        migration.write_exactly(send_fd, migration.status_byte(rc), migration.ACK_STREAM, "success/failure code")
    except migration.StreamError as err:
        say(str(err))
        return 1
    if rc:
        say("migration target: Failure, destroying our copy.")
        try:
            libxl.destroy(xc, paths, domid)
        except HypercallError:
            say(f"migration target: Failed to destroy our copy (code {migration.ERROR_FAIL}).")
            return 1
        say("migration target: Cleanup OK, granting sender permission to resume.")
        try:
            migration.write_exactly(send_fd, migration.GO, migration.ACK_STREAM,
                                    "permission to sender to have domain back")
        except migration.StreamError as err:
            say(str(err))
            return 1
    return 0


def cmd_domid(argv: list[str]) -> int:
    p = _parser("domid", "Convert a domain name to domain id")
    p.add_argument("name")
    ns = p.parse_args(argv)
    with _ctrl() as xc:
        found = libxl.find(xc, "name", ns.name)
    if found is not None:
        print(found["domid"])
        return 0
    print(f"Can't get domid of domain name '{ns.name}', maybe this domain does not exist.", file=sys.stderr)
    return 1


def cmd_domname(argv: list[str]) -> int:
    p = _parser("domname", "Convert a domain id to domain name")
    p.add_argument("domid")
    ns = p.parse_args(argv)
    domid = parse_uint(ns.domid)
    if domid is None:
        print("Invalid domain id.", file=sys.stderr)
        return 1
    with _ctrl() as xc:
        found = libxl.find(xc, "domid", domid)
    if found is not None:
        print(found["name"])
        return 0
    print(f"Can't get domain name of domain id '{ns.domid}', maybe this domain does not exist.", file=sys.stderr)
    return 1


def cmd_uptime(argv: list[str]) -> int:
    p = _parser("uptime", "Print uptime for all/some domains")
    p.add_argument("-s", dest="short", action="store_true")
    p.add_argument("domain", nargs="*")
    ns = p.parse_args(argv)
    now = time.time()
    with _ctrl() as xc:
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
    p = _parser("dmesg", "Read and/or clear dmesg buffer")
    p.add_argument("-c", "--clear", action="store_true")
    ns = p.parse_args(argv)
    with _ctrl() as xc:
        lines = xc.call("sysctl.readconsole", clear=ns.clear)
    sys.stdout.write("".join(line + "\n" for line in lines))
    return 0


def cmd_debug_keys(argv: list[str]) -> int:
    p = _parser("debug-keys", "Send debug keys to Xen")
    p.add_argument("keys")
    ns = p.parse_args(argv)
    with _ctrl() as xc:
        xc.call("sysctl.debug_keys", keys=ns.keys)
    return 0


def _device_list(name: str, kinds: tuple[str, ...],
                 render_fn: Callable[[list[dict[str, str]]], str]) -> Callable[[list[str]], int]:
    def run(argv: list[str]) -> int:
        p = _parser(name, f"List virtual {'block' if 'vbd' in kinds else 'network'} devices for a domain")
        p.add_argument("domain", nargs="+")
        ns = p.parse_args(argv)
        paths = Paths.from_env()
        recs: list[dict[str, str]] = []
        with _ctrl() as xc:
            for arg in ns.domain:
                recs += hotplug.list_devices(paths, libxl.resolve(xc, arg).domid, kinds)
        sys.stdout.write(render_fn(recs))
        return 0
    return run


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
    "save": (cmd_save, "Save a domain state to restore later"),
    "restore": (cmd_restore, "Restore a domain from a saved state"),
    "migrate": (cmd_migrate, "Migrate a domain to another host"),
    "migrate-receive": (cmd_migrate_receive, "Restore a domain from a saved state"),
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


def usage() -> str:
    lines = ["Usage xl [-vfNtT] <subcommand> [args]", "", "xl full list of subcommands:", ""]
    lines += [f" {name:<20}{desc}" for name, (_, desc) in COMMANDS.items()]
    return "\n".join(lines) + "\n"


def lookup(word: str) -> Callable[[list[str]], int] | None:
    """Exact name, else the only command the word is a prefix of."""
    if word in COMMANDS:
        return COMMANDS[word][0]
    hits = [c for c in COMMANDS if c.startswith(word)]
    return COMMANDS[hits[0]][0] if len(hits) == 1 else None


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    while args and args[0].startswith("-") and args[0] not in ("-h", "--help"):
        opt = args.pop(0)
        if opt.strip("-vfNtT"):
            print("unknown global option", file=sys.stderr)
            return 1
        GLOBALS.verbose += opt.count("v")
        GLOBALS.tty = GLOBALS.tty or "t" in opt
        GLOBALS.timestamps = GLOBALS.timestamps or "T" in opt
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(usage())
        return 0 if args else 1
    if args[0] == "help":
        if len(args) > 1 and lookup(args[1]) is not None:
            return _help(args[1])
        sys.stdout.write(usage())
        return 0
    fn = lookup(args[0])
    if fn is None:
        print("command not implemented", file=sys.stderr)
        return 1
    try:
        return fn(args[1:])
    except SystemExit as ex:  # argparse's --help
        return int(ex.code or 0)
    except Usage as err:
        print(str(err).rstrip("\n"), file=sys.stderr)
        return err.code
    except HypercallError as err:
        print(_one_line(str(err)), file=sys.stderr)
        return 1
    except XenstoreUnavailable as err:
        print(f"xl: {_one_line(err.strerror or str(err))}", file=sys.stderr)
        return 1
    except (XenstoreError, libxl.DomainBuildError, ConfigError) as err:
        print(f"xl: {_one_line(str(err))}", file=sys.stderr)
        return 1
    except OSError as err:  # a daemon went away or stopped answering mid-command
        text = str(err) if err.strerror is None else err.strerror
        print(f"xl: {_one_line(text)}" + (f": {err.filename}" if err.filename else ""), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _one_line(text: str) -> str:
    """A daemon's message as one line of stderr."""
    return "; ".join(line for line in text.splitlines() if line.strip()) or text


def _help(word: str) -> int:
    fn = lookup(word)
    assert fn is not None
    try:
        fn(["--help"])
    except SystemExit:
        pass
    return 0
