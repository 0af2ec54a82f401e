"""xendomains: at host start, restore the domains saved at the last stop and create those whose
configs sit in the auto folder (Xen's /etc/xen/auto); at host stop, migrate, save or shut down
the running guests. Xen's tools/hotplug/Linux/xendomains.in, with its settings
(sysconfig.xendomains) read from host.cfg's ``xendomains_*`` keys (hypervisor/hostcfg.py).

Run at the end of ``pyxen host start`` and at the beginning of ``pyxen host stop`` (or as
pyxen-xendomains.service under systemd: ``python -m pyxen.host.xendomains --root R
start|stop|status``).

start, as Xen's script:

1. restore (``xendomains_restore``): each regular file of the save folder whose first 16 bytes
   are ``Xen saved domain`` is given to ``xl restore``; a restored file is deleted, one that
   fails is kept and reported (``An error occurred while restoring domain <f>:`` and xl's
   words), and the next file is tried;
2. auto: each config whose domain runs (a restored one too) or still has a save file is
   skipped, the others are created, ``xendomains_create_usleep`` apart. A config that fails
   (unreadable, binary or not UTF-8, bad syntax or values, or a build that fails) is reported
   in one line and the others still start. So a second start changes nothing.

stop, for each DomU (only those named by an auto config with ``xendomains_auto_only``), in
Xen's order, the first step that succeeds ends it: ``xl migrate <domid> <xendomains_migrate>``,
``xl save <domid> <save>/<name>``, ``xl shutdown <xendomains_shutdown> <domid>``; then
``xl shutdown <xendomains_shutdown_all>`` if DomUs remain. Each xl runs as its own process,
killed (as Xen's watchdog does) after ``xendomains_stop_maxwait`` seconds, so a stuck save or a
guest that ignores its shutdown cannot hold the host's stop for longer. Then whatever is left is destroyed (on a real host, the power goes; here its QEMU would outlive
the daemons).

Restore and save are ``xl restore``/``xl save`` themselves (one way to do them, and the same
process boundary and failure reports as Xen's script), not a copy of their code.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..hypervisor.client import XenCtrl
from ..hypervisor.errors import HypercallError
from ..hypervisor.hostcfg import HostConfig, HostConfigError, XendomainsConfig
from ..libxlu.cfg import ConfigSyntaxError
from ..paths import Paths
from ..toolstack import domain as libxl
from ..toolstack import savefile
from ..toolstack.config import ConfigError, load
from ..xenstore.errors import XenstoreError

#: Where relative paths in auto/ configs point: Xen's xendomains is an init script or systemd
#: unit, which runs ``xl create`` in /, whoever typed the command that started the host.
XENDOMAINS_CWD = "/"
#: What Xen's script compares a save folder file's first 16 bytes with (``HEADCOMP``).
HEADCOMP = b"Xen saved domain"
#: The xl command line (``$sbindir/xl`` in Xen's script): this Python's pyxen, whatever PATH says.
XL = (sys.executable, "-c", "import sys; from pyxen.cli.xl import main; sys.exit(main())")
#: How long one ``xl restore`` at host start may take (Xen sets no limit; here every call across a
#: process boundary has one). A 1 GiB guest restores in seconds; this only catches a hung one.
RESTORE_TIMEOUT = 600.0
#: After the watchdog's SIGTERM, how long xl has to unwind before SIGKILL.
TERM_GRACE = 5.0


@dataclass(frozen=True)
class XlRun:
    """One xl command's outcome: its exit status and its messages (stderr, as Xen's
    ``2>&1 1>/dev/null`` keeps them)."""

    returncode: int
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run_xl(paths: Paths, args: list[str], timeout: float | None) -> XlRun:
    """Run ``xl <args>`` on this host; killed after ``timeout`` seconds (None: no limit), as
    Xen's watchdog_xencmd kills a stuck xl: then its status is -1 and the message says so."""
    env = dict(os.environ, PYXEN_ROOT=str(paths.root))
    proc = subprocess.Popen([*XL, *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env, text=True, errors="replace")
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM: xl unwinds what it was doing
        try:
            _, err = proc.communicate(timeout=TERM_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        return XlRun(-1, f"{err}xl {args[0]} killed after {timeout:g} s (xendomains_stop_maxwait)\n")
    return XlRun(proc.returncode, err)


def settings(paths: Paths) -> XendomainsConfig:
    """host.cfg's xendomains settings. :raise HostConfigError: host.cfg is bad."""
    return HostConfig.load(paths.host_cfg).xendomains


def _error(headline: str, run: XlRun) -> None:
    """Xen's report of a failed step: its headline, then xl's own words."""
    print(headline)
    for line in run.stderr.rstrip("\n").splitlines():
        print(f"  {line}")


# ---- start ----------------------------------------------------------------------------

def saved_images(save_dir: Path) -> list[Path]:
    """The save folder's regular files that start with ``Xen saved domain`` (anything else there
    is not xendomains' business), sorted."""
    found = []
    for f in sorted(save_dir.iterdir()) if save_dir.is_dir() else []:
        if not f.is_file():
            continue
        try:
            with open(f, "rb") as fh:
                head = fh.read(len(HEADCOMP))
        except OSError:
            continue
        if head == HEADCOMP:
            found.append(f)
    return found


def _saved_name(image: Path) -> str:
    """The domain name in a save file's header, or the file's name if it has none readable."""
    try:
        with open(image, "rb") as f:
            config = savefile.decode(f, str(image)).config
    except (OSError, savefile.SaveFileError):
        return image.name
    name = (config or {}).get("name")
    return name if isinstance(name, str) else image.name


def restore_saved(paths: Paths, save_dir: Path) -> int:
    """xendomains start, step 1: ``xl restore`` each save file; delete it once restored, keep
    and report it if not. Returns how many failed."""
    failed = 0
    for image in saved_images(save_dir):
        name = _saved_name(image)
        run = run_xl(paths, ["restore", str(image)], RESTORE_TIMEOUT)
        if not run.ok:
            _error(f"An error occurred while restoring domain {image.name}:", run)
            failed += 1
            continue
        image.unlink(missing_ok=True)
        try:
            with XenCtrl(paths.hypervisor_socket) as xc:
                found = libxl.find(xc, "name", name)
        except (HypercallError, OSError):
            found = None  # (only for the message)
        where = f" (domid {found['domid']})" if found else ""
        print(f"xendomains   {image.name}: restored {name}{where}")
    return failed


def start_auto(paths: Paths, auto_dir: Path | None = None, saved: frozenset[str] = frozenset(),
               create_usleep: int = 0) -> list[tuple[Path, str]]:
    """xendomains start, step 2: create each auto domain that neither runs nor has a save file
    left in ``saved`` (names; such a domain "requires administrative attention", as Xen's
    script says); (config, outcome) for each config. Creates are ``create_usleep`` µs apart
    (Xen sleeps after every create; the sleep after the last one delays nothing useful)."""
    auto_dir = paths.auto_dir if auto_dir is None else auto_dir
    results: list[tuple[Path, str]] = []
    configs = sorted(auto_dir.glob("*.cfg")) if auto_dir.is_dir() else []
    if not configs:
        return results
    created = 0
    with XenCtrl(paths.hypervisor_socket) as xc:
        running = {d["name"] for d in libxl.list_domains(xc)}
        for cfg_path in configs:
            try:
                cfg = load(cfg_path, cwd=XENDOMAINS_CWD)
                if cfg.name in running:
                    results.append((cfg_path, f"{cfg.name} already running"))
                    continue
                if cfg.name in saved:
                    results.append((cfg_path, f"{cfg.name} skipped: its save file was not restored"))
                    continue
                if created and create_usleep:
                    time.sleep(create_usleep / 1e6)
                domid = libxl.create(xc, paths, cfg)
                created += 1
                results.append((cfg_path, f"started {cfg.name} (domid {domid})"))
            except (ConfigError, ConfigSyntaxError, libxl.DomainBuildError, HypercallError,
                    XenstoreError, OSError) as err:  # OSError: a daemon stopped answering
                message = "; ".join(str(err).splitlines())
                results.append((cfg_path, f"failed: {message}"))
    return results


def start(paths: Paths) -> int:
    """Restore the saved domains, then start the auto ones, one line each; 1 if any failed."""
    try:
        x = settings(paths)
    except HostConfigError as err:
        print(f"pyxen: {err}", file=sys.stderr)
        return 1
    failed = 0
    save_dir = x.save_dir(paths.root)
    saved: frozenset[str] = frozenset()
    if x.restore and save_dir is not None and save_dir.is_dir():
        failed += restore_saved(paths, save_dir)
        saved = frozenset(_saved_name(f) for f in saved_images(save_dir))  # the ones kept
    auto_dir = x.auto_dir(paths.root)
    if auto_dir is not None:
        for cfg, outcome in start_auto(paths, auto_dir, saved, x.create_usleep):
            print(f"xendomains   {cfg.name}: {outcome}")
            failed += outcome.startswith("failed")
    return 1 if failed else 0


# ---- stop -----------------------------------------------------------------------------

def auto_names(auto_dir: Path | None) -> set[str]:
    """The domain names of the auto configs (a config that does not load names none)."""
    names = set()
    for cfg_path in sorted(auto_dir.glob("*.cfg")) if auto_dir is not None and auto_dir.is_dir() else []:
        try:
            names.add(load(cfg_path, cwd=XENDOMAINS_CWD).name)
        except (ConfigError, ConfigSyntaxError, OSError):
            continue
    return names


def _domus(paths: Paths) -> list[dict[str, Any]]:
    """The DomUs (sysctl.getdomaininfolist rows), as Xen's script reads them from xl list -l."""
    with XenCtrl(paths.hypervisor_socket) as xc:
        return [d for d in libxl.list_domains(xc) if d["domid"] != 0]


def stop_domain(paths: Paths, x: XendomainsConfig, domid: int, name: str) -> tuple[str, int]:
    """Xen's chain for one domain: migrate, else save, else shut down, each step tried only if
    configured and only if the one before failed. (what happened, how many steps failed)."""
    wait = float(x.stop_maxwait) or None
    failed = 0
    if x.migrate:
        run = run_xl(paths, ["migrate", str(domid), *x.migrate], wait)
        if run.ok:
            return "migrated", failed
        _error("An error occurred while migrating domain:", run)
        failed += 1
    save_dir = x.save_dir(paths.root)
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
        target = save_dir / name
        run = run_xl(paths, ["save", str(domid), str(target)], wait)
        if run.ok:
            return f"saved to {target}", failed
        _error("An error occurred while saving domain:", run)
        failed += 1
    if x.shutdown is not None:
        run = run_xl(paths, ["shutdown", *x.shutdown, str(domid)], wait)
        if run.ok:
            return "shut down", failed
        _error("An error occurred while shutting down domain:", run)
        failed += 1
        return "not shut down", failed
    return "left running", failed


def stop(paths: Paths) -> int:
    """xendomains stop, then every DomU still there destroyed (its QEMU would otherwise outlive
    the host's daemons); 1 if any step failed (every domain is still tried)."""
    try:
        x = settings(paths)
    except HostConfigError as err:
        x = XendomainsConfig()
        print(f"pyxen: {err}; xendomains stop uses the defaults", file=sys.stderr)
    only = auto_names(x.auto_dir(paths.root)) if x.auto_only else None
    failed = 0
    try:
        domus = _domus(paths)
    except (HypercallError, OSError) as err:
        print(f"pyxen: {err}", file=sys.stderr)
        destroy_all(paths)
        return 1
    for d in domus:
        domid, name = int(d["domid"]), str(d["name"])
        if d.get("dying"):
            outcome = "dying (skip)"
        elif only is not None and name not in only:
            outcome = "not an auto domain (skip)"
        else:
            outcome, n = stop_domain(paths, x, domid, name)
            failed += n
        print(f"xendomains   {name}: {outcome}")
    try:
        left = [d for d in _domus(paths) if not d.get("dying")]
    except (HypercallError, OSError) as err:
        print(f"pyxen: {err}", file=sys.stderr)
        left = []
        failed += 1
    if left and x.shutdown_all is not None:
        wait = float(x.stop_maxwait) or None
        run = run_xl(paths, ["shutdown", *x.shutdown_all], wait)
        if run.ok:
            print(f"xendomains   shut down {', '.join(str(d['name']) for d in left)}")
        else:
            _error("An error occurred while shutting down all domains:", run)
            failed += 1
    destroy_all(paths)
    return 1 if failed else 0


# ---- status ---------------------------------------------------------------------------

def status(paths: Paths) -> int:
    """Xen's ``xendomains status``: the auto domains that run, then ``MISS AUTO:`` those that do
    not and ``MISS SAVED:`` the save folder's files (saved domains not restored); 0 if none
    is missing, else 1."""
    try:
        x = settings(paths)
        with XenCtrl(paths.hypervisor_socket) as xc:
            running = {d["name"] for d in libxl.list_domains(xc) if d["domid"] != 0}
    except (HostConfigError, HypercallError, OSError) as err:
        print(f"pyxen: {err}", file=sys.stderr)
        return 1
    wanted = sorted(auto_names(x.auto_dir(paths.root)))
    line = "Checking for xendomains:" + "".join(f" {n}" for n in wanted if n in running)
    missing = [n for n in wanted if n not in running]
    if missing:
        line += " MISS AUTO: " + " ".join(missing)
    save_dir = x.save_dir(paths.root)
    saved = sorted(f.name for f in save_dir.iterdir()) if save_dir is not None and save_dir.is_dir() else []
    if saved:
        line += " MISS SAVED: " + " ".join(saved)
    print(line)
    return 1 if missing or saved else 0


# ---- the host's end -------------------------------------------------------------------

def destroy_all(paths: Paths) -> int:
    """Take every DomU down at once (``pyxen host destroy-all``, and the end of ``host stop``
    for what xendomains' stop left running). Returns how many."""
    try:
        with XenCtrl(paths.hypervisor_socket) as xc:
            doms = [d for d in xc.call("sysctl.getdomaininfolist") if d["domid"] != 0]
            for d in doms:
                libxl.destroy(xc, paths, d["domid"])
                print(f"destroyed {d['name']} ({d['domid']})")
            return len(doms)
    except HypercallError as err:
        print(f"pyxen: {err}", file=sys.stderr)
        return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pyxen.host.xendomains",
                                 description="restore and start the host's domains, or save or shut them down")
    ap.add_argument("--root", help="state folder (default $PYXEN_ROOT or /var/lib/pyxen)")
    ap.add_argument("action", choices=("start", "stop", "status"))
    ns = ap.parse_args(argv)
    paths = Paths.from_env(ns.root)
    if ns.action == "start":
        return start(paths)
    if ns.action == "status":
        return status(paths)
    return stop(paths)


if __name__ == "__main__":
    raise SystemExit(main())
