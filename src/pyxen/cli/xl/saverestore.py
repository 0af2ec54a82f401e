"""xl save, restore, migrate and migrate-receive (xl_saverestore.c, xl_migrate.c)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from ...hypervisor.client import XenCtrl
from ...hypervisor.errors import HypercallError
from ...libxlu.cfg import ConfigSyntaxError
from ...paths import Paths
from ...toolstack import domain as libxl
from ...toolstack import libxl_json, migration, savefile, userdata
from ...toolstack.config import ConfigError, DomainConfig, load
from ...toolstack.devices import DeviceSpecError
from ..console import attach

from . import xlconf
from .common import (Usage, interrupts_on_termination, GLOBALS, new_parser, ctrl, positionals, one_line)


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
    say = say_line

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
            say(f"libxl: error: {one_line(str(err))}")
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
        say(f"libxl: error: {one_line(str(err))}")
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
            say(f"libxl: error: {one_line(str(err))}")
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
    """xl_migrate.c:migrate_receive, on fds 0 (from the sender) and 1 (to it). pyxen's monitor
    is the host's daemon, so nothing is forked here (-e and -F change nothing) and nothing
    keeps the sender's pipes open once this process exits."""
    say = say_line

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
    incoming = replace(cfg, name=cfg.name + migration.INCOMING_SUFFIX)
    if debug:  # xl_vmcontrol.c prints the config once it has the --incoming name
        try:
            say(libxl_json.create_dryrun(incoming).rstrip("\n"))
        except DeviceSpecError as err:
            say(str(err))
    try:
        domid = libxl.create(xc, paths, incoming, paused=True, migrate_fd=recv_fd,
                             run_scripts=xlconf.current().runs_hotplug_scripts)
    except (libxl.DomainBuildError, HypercallError) as err:
        say(f"libxl: error: {one_line(str(err))}")
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
            say(f"libxl: error: {one_line(str(err))}")
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




#: xl's commands that this module implements: name -> (function, one-line description).
COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "save": (cmd_save, "Save a domain state to restore later"),
    "restore": (cmd_restore, "Restore a domain from a saved state"),
    "migrate": (cmd_migrate, "Migrate a domain to another host"),
    "migrate-receive": (cmd_migrate_receive, "Restore a domain from a saved state"),
}
