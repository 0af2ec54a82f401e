"""What every pyxen daemon does around its main loop, once: its ``--root`` argument, its log
(``log/<name>.log``) and its pid file (``run/<name>.pid``, removed on the way out only if it is
still this process's: a supervisor may already have started a successor that wrote its own)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from typing import Iterator

from .paths import Paths
from .procfs import alive

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def arguments(prog: str, description: str) -> argparse.ArgumentParser:
    """A daemon's command line: ``--root`` and whatever the caller adds."""
    ap = argparse.ArgumentParser(prog=prog, description=description)
    ap.add_argument("--root", help="state folder (default $PYXEN_ROOT or /var/lib/pyxen)")
    return ap


def daemon_pid(paths: Paths, name: str) -> int | None:
    """The pid in daemon ``name``'s pid file, if that process is alive (running or starting:
    ``host start`` writes the file as soon as the process exists)."""
    try:
        pid = int(paths.pidfile(name).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if alive(pid) else None


@contextlib.contextmanager
def daemon_process(paths: Paths, name: str, level: int = logging.INFO) -> Iterator[None]:
    """Log to ``paths.daemon_log(name)`` and hold ``paths.pidfile(name)`` for the block."""
    paths.ensure()
    logging.basicConfig(filename=paths.daemon_log(name), level=level, format=LOG_FORMAT)
    pidfile = paths.pidfile(name)
    pidfile.write_text(f"{os.getpid()}\n")
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            if pidfile.read_text().strip() == str(os.getpid()):
                pidfile.unlink()
