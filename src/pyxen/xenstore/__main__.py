"""``python -m pyxen.xenstore [--root DIR] [--foreground] [--config FILE] [--set K=V]``.

Starts xenstored for the pyxen host at PYXEN_ROOT: pid file at run/xenstored.pid, log at
log/xenstored.log, Dom0 socket at run/xenstored/socket.  Without --foreground it detaches
(double fork, like C xenstored without -F) once the socket is listening.  SIGTERM stops it
cleanly (socket and pid file removed); after a kill -9 the next start replaces the stale
socket and restores the store from its journal.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from ..paths import Paths
from .config import XenstoredConfig
from .server import serve


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pyxen.xenstore", description=__doc__)
    p.add_argument("--root", help="PYXEN_ROOT (default: $PYXEN_ROOT or /var/lib/pyxen)")
    p.add_argument("--foreground", "-F", action="store_true", help="do not detach")
    p.add_argument("--config", help="xenstored config file (key = value lines)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set quota_nodes=2000")
    p.add_argument("--no-fsync", action="store_true",
                   help="do not fsync the journal (benchmarks only: loses durability)")
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--access-log", action="store_true", help="write the access log too")
    return p.parse_args(argv)


def build_config(ns: argparse.Namespace) -> XenstoredConfig:
    overrides: dict[str, str | bool] = {}
    for item in ns.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key] = value
    if ns.no_fsync:
        overrides["fsync"] = False
    if ns.config:
        return XenstoredConfig.from_file(ns.config, **overrides)
    return XenstoredConfig.from_mapping(overrides)


def setup_logging(paths: Paths, level: str, access: bool, foreground: bool) -> None:
    paths.log.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(paths.daemon_log("xenstored"))
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())
    access_log = logging.getLogger("pyxen.xenstore.access")
    if access:
        ah = logging.FileHandler(paths.log / "xenstored-access.log")
        ah.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        access_log.addHandler(ah)
        access_log.setLevel(logging.INFO)
    else:
        access_log.setLevel(logging.WARNING)
    access_log.propagate = False


def _daemonize(ready_r: int, ready_w: int) -> None:
    """Double fork; the original process exits when the daemon says it is listening."""
    if os.fork() > 0:
        os.close(ready_w)
        ok = os.read(ready_r, 1)
        os._exit(0 if ok == b"1" else 1)
    os.close(ready_r)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(sys.argv[1:] if argv is None else argv)
    paths = Paths.from_env(ns.root)
    config = build_config(ns)
    ready_w = -1
    if not ns.foreground:
        ready_r, ready_w = os.pipe()
        _daemonize(ready_r, ready_w)
    setup_logging(paths, ns.log_level, ns.access_log, ns.foreground)

    async def run() -> None:
        stop = asyncio.Event()
        import signal
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.create_task(serve(paths, config, stop))
        if ready_w >= 0:
            sock = paths.xenstored_socket
            while not task.done() and not paths.pidfile("xenstored").exists():
                await asyncio.sleep(0.01)
            os.write(ready_w, b"1" if not task.done() and sock.exists() else b"0")
            os.close(ready_w)
        await task

    try:
        asyncio.run(run())
    except Exception:  # noqa: BLE001 - report why the daemon could not run
        logging.getLogger("pyxen.xenstore").exception("xenstored failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
