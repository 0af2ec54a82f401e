"""Recently destroyed domids (libxl's domid history: libxl__mark_domid_recent and
libxl__is_domid_recent, /var/run/xen/domid-history).

A domid names a domain in xenstore watches, backends and logs; a new domain that gets the id of
one destroyed a moment ago can be taken for it by whatever has not caught up yet. So a domain
built with a *requested* domid (``xl save -D`` then ``xl restore``) is refused that id for
LIBXL_DOMID_REUSE_TIMEOUT seconds after the id's last destroy, with libxl's words ``domain id
recently used``. The toolstack marks every destroy it makes (domain.destroy) and the monitor
marks the domains it finds gone.

One line per destroy, ``<unix time, whole seconds> <domid>`` (libxl's layout); lines older than the timeout are dropped when
the next one is written. Writers hold a lock file and replace the history atomically, so a
reader sees the old history or the new one. Times are wall-clock seconds (the file outlives a
reboot of the machine, unlike Xen's on tmpfs): an entry from the future is not recent.
"""

from __future__ import annotations

import fcntl
import os
import time

from ..paths import Paths

#: libxl's default (LIBXL_DOMID_REUSE_TIMEOUT in libxl_internal.h), in seconds.
DEFAULT_REUSE_TIMEOUT = 60
#: The environment variable that overrides it, read by the toolstack process as libxl does.
REUSE_TIMEOUT_ENV = "LIBXL_DOMID_REUSE_TIMEOUT"


def reuse_timeout() -> int:
    """Seconds a destroyed domid stays recent: $LIBXL_DOMID_REUSE_TIMEOUT, else 60. As libxl's
    strtol: leading digits count, anything else is 0."""
    text = os.environ.get(REUSE_TIMEOUT_ENV)
    if text is None:
        return DEFAULT_REUSE_TIMEOUT
    digits = text.strip()
    end = 1 if digits[:1] in ("-", "+") else 0
    while end < len(digits) and digits[end].isascii() and digits[end].isdigit():
        end += 1
    try:
        return int(digits[:end])
    except ValueError:
        return 0


def _entries(paths: Paths) -> list[tuple[float, int]]:
    try:
        text = paths.domid_history.read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            sec, domid = line.split()
            out.append((float(sec), int(domid)))
        except ValueError:
            continue  # a damaged line says nothing about any domid
    return out


def _recent(sec: float, now: float, timeout: int) -> bool:
    return 0 <= now - sec < timeout


def mark_recent(paths: Paths, domid: int) -> None:
    """Record that ``domid`` was destroyed now (libxl__mark_domid_recent)."""
    now, timeout = time.time(), reuse_timeout()
    paths.run.mkdir(parents=True, exist_ok=True)
    with open(paths.domid_history.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        kept = [(s, d) for s, d in _entries(paths) if _recent(s, now, timeout) and d != domid]
        tmp = paths.domid_history.with_suffix(".tmp")
        tmp.write_text("".join(f"{int(s)} {d}\n" for s, d in [*kept, (now, domid)]))
        tmp.rename(paths.domid_history)


def is_recent(paths: Paths, domid: int) -> bool:
    """Whether ``domid`` was destroyed less than reuse_timeout() seconds ago
    (libxl__is_domid_recent)."""
    now, timeout = time.time(), reuse_timeout()
    return any(d == domid and _recent(s, now, timeout) for s, d in _entries(paths))
