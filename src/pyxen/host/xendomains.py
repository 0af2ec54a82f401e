"""xendomains: start the domains whose configs sit in the auto/ folder (Xen's /etc/xen/auto),
and take every guest down when the host stops.

Run at the end of ``pyxen host start`` (or as pyxen-xendomains.service under systemd:
``python -m pyxen.host.xendomains --root R start|stop``). A config whose domain already runs is
skipped, so a second start changes nothing; a config that fails (unreadable, binary or not
UTF-8, bad syntax or values, or a build that fails) is reported in one line and the others
still start. At host stop, Xen's xendomains saves or shuts guests down; pyxen destroys them for
now.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..hypervisor.client import XenCtrl
from ..hypervisor.errors import HypercallError
from ..libxlu.cfg import ConfigSyntaxError
from ..paths import Paths
from ..toolstack import domain as libxl
from ..toolstack.config import ConfigError, load
from ..xenstore.errors import XenstoreError

#: Where relative paths in auto/ configs point: Xen's xendomains is an init script or systemd
#: unit, which runs ``xl create`` in /, whoever typed the command that started the host.
XENDOMAINS_CWD = "/"


def start_auto(paths: Paths) -> list[tuple[Path, str]]:
    """Create each auto/ domain not yet running; (config, outcome) for each config."""
    results: list[tuple[Path, str]] = []
    configs = sorted(paths.auto_dir.glob("*.cfg")) if paths.auto_dir.is_dir() else []
    if not configs:
        return results
    with XenCtrl(paths.hypervisor_socket) as xc:
        running = {d["name"] for d in libxl.list_domains(xc)}
        for cfg_path in configs:
            try:
                cfg = load(cfg_path, cwd=XENDOMAINS_CWD)
                if cfg.name in running:
                    results.append((cfg_path, f"{cfg.name} already running"))
                    continue
                domid = libxl.create(xc, paths, cfg)
                results.append((cfg_path, f"started {cfg.name} (domid {domid})"))
            except (ConfigError, ConfigSyntaxError, libxl.DomainBuildError, HypercallError,
                    XenstoreError, OSError) as err:  # OSError: a daemon stopped answering
                message = "; ".join(str(err).splitlines())
                results.append((cfg_path, f"failed: {message}"))
    return results


def start(paths: Paths) -> int:
    """Start auto/'s domains, one line each; 1 if any failed."""
    failed = 0
    for cfg, outcome in start_auto(paths):
        print(f"xendomains   {cfg.name}: {outcome}")
        failed += outcome.startswith("failed")
    return 1 if failed else 0


def destroy_all(paths: Paths) -> int:
    """xendomains stop: take every DomU down. Returns how many."""
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
                                 description="start auto/'s domains, or take every guest down")
    ap.add_argument("--root", help="state folder (default $PYXEN_ROOT or /var/lib/pyxen)")
    ap.add_argument("action", choices=("start", "stop"))
    ns = ap.parse_args(argv)
    paths = Paths.from_env(ns.root)
    if ns.action == "start":
        return start(paths)
    destroy_all(paths)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
