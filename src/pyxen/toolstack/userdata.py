"""The toolstack's per-domain records (libxl's userdata, /var/lib/xen/userdata-d<domid>.<uuid>.*).

libxl keeps each domain's config as JSON beside the domain, so that a reboot (on_reboot =
"restart") rebuilds the same domain and ``xl list -l`` can show it; the hypervisor knows
nothing of xl.cfg. One file per domain, written atomically, removed when the domain is gone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..paths import Paths
from .config import DomainConfig


def _path(paths: Paths, domid: int) -> Path:
    return paths.userdata_dir / f"d{domid}.libxl-json"


def _no_monitor_path(paths: Paths, domid: int) -> Path:
    return paths.userdata_dir / f"d{domid}.xl-no-monitor"


def store(paths: Paths, domid: int, cfg: DomainConfig) -> None:
    """Keep ``cfg`` as domain ``domid``'s config (atomically: old or new, never half)."""
    paths.userdata_dir.mkdir(parents=True, exist_ok=True)
    path = _path(paths, domid)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(cfg.to_json(), f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    tmp.rename(path)


def retrieve(paths: Paths, domid: int) -> DomainConfig | None:
    """The config domain ``domid`` was built from, or None if there is no (readable) record."""
    try:
        data = json.loads(_path(paths, domid).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    try:
        return DomainConfig.from_json(data)
    except TypeError:
        return None


def remove(paths: Paths, domid: int) -> None:
    _path(paths, domid).unlink(missing_ok=True)
    _no_monitor_path(paths, domid).unlink(missing_ok=True)


def mark_unmonitored(paths: Paths, domid: int) -> None:
    """The domain was started with ``-e`` (xl create/restore: no monitor for it). In Xen no xl
    process then waits for its death; pyxen's one monitor leaves it alone instead: when it shuts
    down, its on_poweroff/on_reboot/on_crash are not applied and it stays shut down until
    someone destroys it. Goes with the domain's other records."""
    paths.userdata_dir.mkdir(parents=True, exist_ok=True)
    _no_monitor_path(paths, domid).touch()


def mark_monitored(paths: Paths, domid: int) -> None:
    """Undo ``mark_unmonitored``: the monitor applies the domain's on_* actions again."""
    _no_monitor_path(paths, domid).unlink(missing_ok=True)


def unmonitored(paths: Paths, domid: int) -> bool:
    """Whether the domain was started without a monitor (``mark_unmonitored``)."""
    return _no_monitor_path(paths, domid).exists()


def domids(paths: Paths) -> set[int]:
    """Domains that have a record."""
    out = set()
    for p in paths.userdata_dir.glob("d*.libxl-json"):
        num = p.name[1:].split(".", 1)[0]
        if num.isascii() and num.isdigit():
            out.add(int(num))
    return out
