"""xl save, restore, migrate and migrate-receive (xl_saverestore.c, xl_migrate.c)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from ...hypervisor.client import XenCtrl
from ...hypervisor.errors import HypercallError
from ...libxlu.cfg import ConfigSyntaxError
from ...paths import Paths
from ...toolstack import domain as libxl
from ...toolstack import libxl_json, migration, savefile
from ...toolstack.config import ConfigError, DomainConfig, load
from ...toolstack.devices import DeviceSpecError
from ..console import attach

from . import xlconf
from .common import (Usage, interrupts_on_termination, GLOBALS, new_parser, ctrl, positionals)


def cmd_save(argv: list[str]) -> int:
    """xl save [-c] [-p] [-D] <Domain> <CheckpointFile> [<ConfigFile>] (xl_saverestore.c): xl's
    header with the config, then the domain's state; the domain is destroyed unless -c (keep it
    running) or -p (keep it paused). -D writes the domain's id into the saved config, so that
    its restore asks for the same domid (ignored with a ConfigFile, as in xl)."""
    p = new_parser("save", "Save a domain state to restore later")
    p.add_argument("-c", dest="keep", action="store_true", help="Leave domain running after creating the snapshot")
    p.add_argument("-p", dest="paused", action="store_true", help="Leave domain paused after creating the snapshot")
    p.add_argument("-D", dest="same_domid", action="store_true", help="Store the domain id in the configuration")
    p.add_argument("domain", metavar="Domain")
    p.add_argument("file", metavar="CheckpointFile")
    p.add_argument("config", metavar="ConfigFile", nargs="?")
    ns = positionals(p, argv)
    override = None
    if ns.config:
        try:
            override = load(ns.config)
        except (ConfigError, ConfigSyntaxError):
            print("unable to read overridden config file", file=sys.stderr)
            return 1
    path = Path(os.path.abspath(ns.file))
    with ctrl() as xc:
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
    p = new_parser("restore", "Restore a domain from a saved state")
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
            print(err.xl_report() if isinstance(err, ConfigSyntaxError) else str(err), file=sys.stderr)
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
    if ns.debug:  # xl_vmcontrol.c: with -d, the libxl JSON create -n would print, to stderr
        try:
            sys.stderr.write(libxl_json.create_dryrun(cfg))
        except DeviceSpecError as err:
            print(str(err), file=sys.stderr)
            return 1
    paths = Paths.from_env()
    with ctrl() as xc:
        try:
            with interrupts_on_termination():
                domid = libxl.create(xc, paths, cfg, paused=ns.paused,
                                     restore_from=(path, header.stream_offset), monitored=not ns.no_monitor,
                                     run_scripts=xlconf.current().runs_hotplug_scripts)
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
        with ctrl() as xc:
            found = next((d for d in libxl.list_domains(xc) if d["uuid"] == uuid), None)
        if found is None and not paths.restart_note(name).exists():
            print(f"Domain {domid} has been destroyed.", file=sys.stderr)
            return 0
        if found is not None and found["domid"] != domid:
            domid = int(found["domid"])
            print(f"Waiting for domain {name} (domid {domid}) to die [pid {os.getpid()}]", file=sys.stderr)
        time.sleep(poll)


def say_line(text: str) -> None:
    """One line to stderr in one write (as C's unbuffered stderr does with each fprintf): the
    sender and the receiver share the terminal, so a line must not be split by the other's."""
    sys.stderr.flush()
    os.write(2, (text + "\n").encode(errors="replace"))


def cmd_migrate(argv: list[str]) -> int:
    """xl migrate [-s <sshcommand>] [-e] [-C <config>] [-p] [-D] [--debug] <Domain> <host>
    (xl_migrate.c:main_migrate): live migration to the xl migrate-receive that ``ssh <host>``
    (or the -s command; with -s "", <host> as a shell command) runs, over its stdin/stdout."""
    p = new_parser("migrate", "Migrate a domain to another host")
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
    with ctrl() as xc:
        ref = libxl.resolve(xc, ns.domain)
        if ns.config:
            try:
                cfg: DomainConfig | None = load(ns.config)
            except (ConfigError, ConfigSyntaxError):
                print("unable to read overridden config file", file=sys.stderr)
                return 1
        else:
            cfg = libxl.retrieve_config(xc, paths, ref.domid)
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
    """xl_migrate.c:migrate_domain over the rune's stdin/stdout: the sender's side of the
    protocol is the toolstack's (migration.send); the transport child is xl's."""
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
            say_line(f"migration child [{child.pid}] not exiting, no longer waiting "
                     "(exit status will be unreported)")
            return
        if status > 0:
            say_line(f"migration transport process [{child.pid}] exited with error status {status}")
        elif status < 0:
            say_line(f"migration transport process [{child.pid}] died due to fatal signal {-status}")

    return migration.send(xc, paths, ref, cfg, send_fd, recv_fd, say_line, child_report, rune)


def cmd_migrate_receive(argv: list[str]) -> int:
    """xl migrate-receive [-F] [-e] [-d] [-p] (xl_migrate.c:main_migrate_receive): the target of
    xl migrate, run by its rune; the protocol on stdin (stream in) and stdout (acks out),
    messages on stderr. The domain is built paused as ``<name>--incoming``, renamed and unpaused
    when the sender says go."""
    p = new_parser("migrate-receive", "Restore a domain from a saved state")
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
    with ctrl() as xc:
        return _migrate_receive(xc, Paths.from_env(), ns.paused, ns.debug)


def _migrate_receive(xc: XenCtrl, paths: Paths, paused: bool, debug: bool) -> int:
    """xl_migrate.c:migrate_receive, on fds 0 (from the sender) and 1 (to it): the toolstack's
    receiver (migration.receive). pyxen's monitor is the host's daemon, so nothing is forked
    here (-e and -F change nothing) and nothing keeps the sender's pipes open once this
    process exits."""
    return migration.receive(xc, paths, 0, 1, say_line, paused=paused, debug=debug,
                             run_scripts=xlconf.current().runs_hotplug_scripts)




#: xl's commands that this module implements: name -> (function, one-line description).
COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "save": (cmd_save, "Save a domain state to restore later"),
    "restore": (cmd_restore, "Restore a domain from a saved state"),
    "migrate": (cmd_migrate, "Migrate a domain to another host"),
    "migrate-receive": (cmd_migrate_receive, "Restore a domain from a saved state"),
}
