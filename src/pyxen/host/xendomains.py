"""xendomains: start the domains whose configs sit in the auto/ folder (Xen's /etc/xen/auto).

Run at the end of ``pyxen host start``. A config whose domain already runs is skipped, so a
second start changes nothing; a config that fails (unreadable, binary or not UTF-8, bad syntax or
values, or a build that fails) is reported in one line and the others still start.
At host stop, Xen's xendomains saves or shuts guests down; pyxen destroys them for now.
"""

from __future__ import annotations

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
