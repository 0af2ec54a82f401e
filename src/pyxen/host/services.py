"""Dom0's services and their order: hypervisor, xenstored, then the rest (ARCHITECTURE.md).

Each service is a Python module run as its own process, in its own session (so it survives the
shell that started it), with a pid file and a log under PYXEN_ROOT. It is "up" when its socket
accepts a connection. ``start`` starts only what is not running, so it also restarts a daemon
that died (the hypervisor then re-adopts the running guests).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..paths import Paths

#: How long a service may take to come up. The hypervisor's first start may probe KVM (~8 s).
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


class ServiceError(RuntimeError):
    """A service failed to start or stop; the message names it and quotes its log."""


@dataclass(frozen=True)
class Service:
    name: str
    module: str
    socket: Callable[[Paths], Path]
    #: Extra arguments; every service must stay in the foreground so its pid is the one we keep.
    args: tuple[str, ...] = ()

    def available(self) -> bool:
        return importlib.util.find_spec(self.module) is not None


SERVICES: tuple[Service, ...] = (
    Service("hypervisor", "pyxen.hypervisor", lambda p: p.hypervisor_socket),
    Service("xenstored", "pyxen.xenstore", lambda p: p.xenstored_socket, ("--foreground",)),
    Service("xenconsoled", "pyxen.console", lambda p: p.xenconsoled_socket),
    Service("backendd", "pyxen.backends", lambda p: p.backendd_socket),
    Service("monitor", "pyxen.toolstack.monitor", lambda p: p.monitor_socket),
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def running_pid(paths: Paths, svc: Service) -> int | None:
    try:
        pid = int(paths.pidfile(svc.name).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _alive(pid) else None


def _connects(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _tail(path: Path, n: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def start_service(paths: Paths, svc: Service) -> tuple[int, bool]:
    """Start ``svc`` unless it runs; (pid, started_now)."""
    pid = running_pid(paths, svc)
    if pid is not None and _connects(svc.socket(paths)):
        return pid, False
    if pid is not None:  # alive but not answering: a hung daemon; replace it
        os.kill(pid, signal.SIGKILL)
    log_path = paths.daemon_log(svc.name)
    env = dict(os.environ, PYXEN_ROOT=str(paths.root))
    with open(log_path, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", svc.module, "--root", str(paths.root), *svc.args],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                                start_new_session=True, close_fds=True)
    deadline = time.monotonic() + READY_TIMEOUT
    while not _connects(svc.socket(paths)):
        if proc.poll() is not None:
            raise ServiceError(f"{svc.name} exited with status {proc.returncode} at start:\n{_tail(log_path)}")
        if time.monotonic() > deadline:
            proc.kill()
            raise ServiceError(f"{svc.name} did not come up within {READY_TIMEOUT:.0f} s:\n{_tail(log_path)}")
        time.sleep(0.05)
    return proc.pid, True


def stop_service(paths: Paths, svc: Service) -> bool:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT; True if it was running."""
    pid = running_pid(paths, svc)
    if pid is None:
        paths.pidfile(svc.name).unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while _alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    paths.pidfile(svc.name).unlink(missing_ok=True)
    return True


def available_services() -> list[Service]:
    return [s for s in SERVICES if s.available()]
