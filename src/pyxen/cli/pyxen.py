"""``pyxen``: the host's own commands (``pyxen host start|stop|status|passwd``, ``pyxen xenstore ...``,
``pyxen evtchn [domain]``, ``pyxen storage ...``: cli/storage.py).

``host start`` brings Dom0's services up in Xen's order and leaves the supervisor that restarts
any of them that dies (host/supervisor.py); run again, it starts only what is down. ``host stop``
stops the supervisor first (so nothing restarts what is being stopped), then does xendomains'
stop (each guest migrated, saved or shut down as host.cfg's xendomains_* keys say, whatever is
left destroyed) and stops the services in reverse order; its status is xendomains' (1 if a
guest could not be saved or shut down), the services are stopped either way.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..host import supervisor, xendomains
from ..host.services import (SUPERVISOR, ServiceError, available_services, running_pid, start_service,
                             start_services, stop_service, stop_services)
from ..host.xendomains import destroy_all
from ..hypervisor.client import XenCtrl
from ..hypervisor.errors import HypercallError
from ..hypervisor.evtchn_abi import dump_evtchn_info
from ..paths import Paths
from ..toolstack import domain as libxl
from ..xapi.state import read_addresses, set_password


def host_passwd(paths: Paths) -> int:
    """Set root's XenAPI password from standard input (one line, as ``chpasswd`` reads it)."""
    line = sys.stdin.readline()
    password = line[:-1] if line.endswith("\n") else line
    if not password:
        print("pyxen: host passwd: no password on standard input", file=sys.stderr)
        return 1
    paths.ensure()
    set_password(paths, password)
    return 0


def host_start(paths: Paths) -> int:
    paths.ensure()
    try:
        # the daemons together (their imports overlap), then the supervisor that watches them
        for group in (available_services(), [SUPERVISOR]):
            for svc, pid, started in start_services(paths, group):
                print(f"{svc.name:<12} {'started' if started else 'running'} (pid {pid})")
    except ServiceError as err:
        print(f"pyxen: {err}", file=sys.stderr)
        return 1
    return xendomains.start(paths)


def host_stop(paths: Paths) -> int:
    if stop_service(paths, SUPERVISOR):  # first: it would restart what is stopped below
        print(f"{SUPERVISOR.name:<12} stopped")
    services = available_services()
    if any(running_pid(paths, s) for s in services):
        # A daemon that died just before the supervisor stopped is started again, as the
        # supervisor would have done: xendomains needs them all to save the guests (the guests'
        # QEMUs outlive a dead hypervisor daemon, which re-adopts them).
        for svc in services:
            if running_pid(paths, svc) is None:
                try:
                    pid, _ = start_service(paths, svc)
                    print(f"{svc.name:<12} started (pid {pid}) for xendomains' stop")
                except ServiceError as err:
                    print(f"pyxen: {err}", file=sys.stderr)
    status = xendomains.stop(paths) if running_pid(paths, services[0]) else 0
    # xenstored and the hypervisor last, after the daemons that talk to them, which go together
    core = [s for s in services if s.name in ("hypervisor", "xenstored")]
    for group in ([s for s in reversed(services) if s not in core], *([s] for s in reversed(core))):
        for svc in stop_services(paths, group):
            print(f"{svc.name:<12} stopped")
    return status


def host_status(paths: Paths) -> int:
    """One line per daemon and one for the supervisor (with the restarts it made); exit 0 if all
    run, 3 if any does not (systemctl's LSB code for "not running")."""
    report = supervisor.query(paths) if running_pid(paths, SUPERVISOR) else None
    known = report["services"] if report else {}
    up = 0
    services = available_services()
    for svc in services:
        pid = running_pid(paths, svc)
        line = f"{svc.name:<12} {'running (pid %d)' % pid if pid else 'stopped'}"
        restarts = known.get(svc.name, {}).get("restarts", 0)
        if restarts:
            line += f", restarted {restarts} time{'s' if restarts > 1 else ''}"
        if known.get(svc.name, {}).get("state") == "start-limit-hit":
            line += ", start limit hit"
        print(line)
        up += pid is not None
    pid = running_pid(paths, SUPERVISOR)
    state = "stopped" if pid is None else f"running (pid {pid})" if report else f"not answering (pid {pid})"
    print(f"{SUPERVISOR.name:<12} {state}")
    if any(s.name == "xapi" and running_pid(paths, s) for s in services):
        for url in read_addresses(paths):
            print(f"xapi: {url}")
    return 0 if up == len(services) and report else 3


def evtchn_table(paths: Paths, domain: str | None) -> str:
    """``pyxen evtchn [domain]``: the event channel table Xen prints for debug key 'e'
    (every domain, or one given by name or id). Compute here, render with hypervisor/evtchn_abi.py."""
    with XenCtrl(paths.hypervisor_socket) as xc:
        if domain is None:
            doms = sorted(d["domid"] for d in xc.call("sysctl.getdomaininfolist"))
            ports = xc.call("event_channel_op.list")
        else:
            dom = libxl.resolve(xc, domain).domid
            doms, ports = [dom], xc.call("event_channel_op.list", dom=dom)
    return dump_evtchn_info(ports, doms) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) >= 3 and args[0] == "--root" and args[2] == "xenstore":
        args = ["xenstore", "--root", args[1], *args[3:]]
    if args[:1] == ["xenstore"]:
        try:
            mod = importlib.import_module("pyxen.cli.xenstore")
        except ImportError:
            print("pyxen: xenstore commands are not built yet", file=sys.stderr)
            return 1
        return int(mod.main(args[1:]))
    # Commands with their own parsers, after an optional --root R (as xenstore's above).
    root = args[1] if len(args) >= 3 and args[0] == "--root" else None
    rest = args[2:] if root is not None else args
    if rest[:1] == ["storage"]:
        from . import storage
        return storage.main(rest[1:], root)
    if rest[:1] == ["image"]:
        from . import image
        return image.main(rest[1:], Paths.from_env(root))
    ap = argparse.ArgumentParser(prog="pyxen", description="pyxen host control")
    ap.add_argument("--root", help="state folder (default $PYXEN_ROOT or /var/lib/pyxen)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    host = sub.add_parser("host", help="start, stop or show Dom0's services")
    host.add_argument("action", choices=("start", "stop", "status", "destroy-all", "passwd"))
    sub.add_parser("xenstore", help="xenstore read|write|ls|rm|watch|chmod ...")
    sub.add_parser("storage", help="create|resize|snapshot|remove|list a guest's volumes (xen-tools' way)")
    sub.add_parser("image", help="image create: a Debian guest and its xl config (xen-create-image)")
    ev = sub.add_parser("evtchn", help="list event channels (of every domain, or of one)")
    ev.add_argument("domain", nargs="?", help="domain name or id")
    ns = ap.parse_args(args)
    paths = Paths.from_env(ns.root)
    if ns.cmd == "evtchn":
        try:
            sys.stdout.write(evtchn_table(paths, ns.domain))
        except (HypercallError, OSError) as err:
            print(f"pyxen: {err}", file=sys.stderr)
            return 1
        return 0
    if ns.action == "start":
        return host_start(paths)
    if ns.action == "stop":
        return host_stop(paths)
    if ns.action == "passwd":
        return host_passwd(paths)
    if ns.action == "destroy-all":
        destroy_all(paths)
        return 0
    return host_status(paths)
