"""Dom0's services and their order, Xen's: hypervisor, xenstored, xenconsoled, the backends,
then xl's monitor (ARCHITECTURE.md), then xenbr0's DHCP service (host/dhcp.py).

Each service is a Python module run as its own process, in its own session (so it survives the
shell that started it), with a pid file and a log under PYXEN_ROOT. It is "up" when its socket
accepts a connection. ``start`` starts only what is not running, so it also restarts a daemon
that died (the hypervisor then re-adopts the running guests). ``pyxen host start`` and the
supervisor (supervisor.py) both start services through :func:`start_services`; a per-host lock
file makes them take turns, so a dead daemon is never started twice.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ..daemon import daemon_pid
from ..paths import Paths
from ..procfs import alive

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
        """Whether ``python -m <module>`` can run here: the module exists and, for a package,
        has a ``__main__``. A daemon not written yet is skipped rather than started to fail."""
        try:
            spec = importlib.util.find_spec(self.module)
            if spec is not None and spec.submodule_search_locations is not None:
                spec = importlib.util.find_spec(self.module + ".__main__")
        except (ImportError, ValueError):
            return False
        return spec is not None


#: Dom0's daemons in start order (Xen's: xenstored needs the hypervisor, everything else
#: needs xenstored). ``host stop`` walks it backwards.
SERVICES: tuple[Service, ...] = (
    Service("hypervisor", "pyxen.hypervisor", lambda p: p.hypervisor_socket),
    Service("xenstored", "pyxen.xenstore", lambda p: p.xenstored_socket, ("--foreground",)),
    Service("xenconsoled", "pyxen.console", lambda p: p.xenconsoled_socket),
    Service("backendd", "pyxen.backends", lambda p: p.backendd_socket),
    Service("monitor", "pyxen.toolstack.monitor", lambda p: p.monitor_socket),
    Service("dhcp", "pyxen.host.dhcp", lambda p: p.dhcp_socket),
    Service("xapi", "pyxen.xapi", lambda p: p.xapi_socket),
)

#: The process that restarts any of SERVICES that dies (supervisor.py); not one of them.
SUPERVISOR = Service("supervisor", "pyxen.host.supervisor", lambda p: p.supervisor_socket)


def running_pid(paths: Paths, svc: Service) -> int | None:
    return daemon_pid(paths, svc.name)


def connects(path: Path) -> bool:
    """Whether a daemon accepts on its socket (the readiness test for every service)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def status_line(path: Path, timeout: float = 2.0) -> dict[str, Any] | None:
    """The one JSON line a daemon's control socket answers (the supervisor's, the DHCP
    service's), or None if it does not answer within ``timeout``."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(path))
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        result: dict[str, Any] = json.loads(data)
        return result
    except (OSError, ValueError):
        return None
    finally:
        s.close()


def _tail(path: Path, n: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def argv(paths: Paths, svc: Service) -> list[str]:
    """The command line of ``svc`` for the host at ``paths`` (the systemd units run the same)."""
    return [sys.executable, "-m", svc.module, "--root", str(paths.root), *svc.args]


@contextmanager
def _start_lock(paths: Paths) -> Iterator[None]:
    """Serialise starts on one host: ``pyxen host start`` and the supervisor may both find a
    daemon dead at the same moment, and two copies would fight over its socket."""
    paths.run.mkdir(parents=True, exist_ok=True)
    with open(paths.run / "start.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def start_service(paths: Paths, svc: Service,
                  abort: Callable[[], bool] = lambda: False) -> tuple[int, bool]:
    """Start ``svc`` unless it runs; (pid, started_now).

    The pid file is written as soon as the process exists (the daemon writes the same pid
    again when ready), so a ``host stop`` that comes while it starts still finds it. ``abort``
    is polled while waiting for readiness: when it turns true the new process is killed and
    ServiceError raised (the supervisor passes its stop flag).
    """
    ((_, pid, started),) = start_services(paths, [svc], abort)
    return pid, started


def start_services(paths: Paths, svcs: list[Service],
                   abort: Callable[[], bool] = lambda: False) -> list[tuple[Service, int, bool]]:
    """Start those of ``svcs`` that do not run, and return (service, pid, started_now) for
    each, in order, once every one accepts.

    All are launched at once, in order, and then waited for in order: a daemon spends most of
    its start importing Python modules, which needs no other daemon, so on two cores the
    imports overlap and a host starts in about the time of its slowest daemon rather than the
    sum of all. A daemon whose dependency is not up yet meets it as it meets one restarting
    (each retries its connections: every daemon is expendable). If one fails, the ones
    launched after it are killed, so the host is left as a one-by-one start would leave it.
    """
    with _start_lock(paths):
        launched: list[tuple[Service, int, subprocess.Popen[bytes] | None]] = []
        for svc in svcs:
            pid = running_pid(paths, svc)
            if pid is not None and connects(svc.socket(paths)):
                launched.append((svc, pid, None))
                continue
            if pid is not None:  # alive but not answering: a hung daemon; replace it
                os.kill(pid, signal.SIGKILL)
            new = _launch(paths, svc)
            launched.append((svc, new.pid, new))
        try:
            for n, (svc, _, proc) in enumerate(launched):
                if proc is not None:
                    _wait_ready(paths, svc, proc, abort)
        except BaseException:
            for later, _, other in launched[n + 1:]:
                if other is not None:
                    other.kill()
                    other.wait()
                    paths.pidfile(later.name).unlink(missing_ok=True)
            raise
        return [(svc, pid, proc is not None) for svc, pid, proc in launched]


def _launch(paths: Paths, svc: Service) -> subprocess.Popen[bytes]:
    """Exec ``svc`` in its own session, its output to its log, and write its pid file."""
    log_path = paths.daemon_log(svc.name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYXEN_ROOT=str(paths.root))
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(argv(paths, svc), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                env=env, start_new_session=True, close_fds=True)
    paths.pidfile(svc.name).write_text(f"{proc.pid}\n")
    return proc


def _wait_ready(paths: Paths, svc: Service, proc: subprocess.Popen[bytes], abort: Callable[[], bool]) -> None:
    """Until ``svc`` (just launched as ``proc``) accepts; on death, abort or READY_TIMEOUT
    the process is killed and ServiceError raised, quoting its log."""
    log_path = paths.daemon_log(svc.name)
    deadline = time.monotonic() + READY_TIMEOUT
    while not connects(svc.socket(paths)):
        if proc.poll() is not None:
            raise ServiceError(f"{svc.name} exited with status {proc.returncode} at start:\n{_tail(log_path)}")
        if abort():
            proc.kill()
            proc.wait()
            raise ServiceError(f"{svc.name}: start abandoned (stopping)")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise ServiceError(f"{svc.name} did not come up within {READY_TIMEOUT:.0f} s:\n{_tail(log_path)}")
        time.sleep(0.02)


def stop_service(paths: Paths, svc: Service) -> bool:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT; True if it was running."""
    return stop_services(paths, [svc]) == [svc]


def stop_services(paths: Paths, svcs: list[Service]) -> list[Service]:
    """Stop ``svcs`` together: SIGTERM to each in order, then wait for all, SIGKILL for any
    still there after STOP_TIMEOUT. Returns those that were running. For daemons that do not
    need each other on the way out (``host stop`` stops xenstored and the hypervisor, which
    every other daemon talks to, only after the rest)."""
    running = []
    for svc in svcs:
        pid = running_pid(paths, svc)
        if pid is None:
            paths.pidfile(svc.name).unlink(missing_ok=True)
            continue
        os.kill(pid, signal.SIGTERM)
        running.append((svc, pid))
    deadline = time.monotonic() + STOP_TIMEOUT
    for svc, pid in running:
        while alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        paths.pidfile(svc.name).unlink(missing_ok=True)
    return [svc for svc, _ in running]


def available_services() -> list[Service]:
    """SERVICES whose module can run here, in start order."""
    return [s for s in SERVICES if s.available()]


def wait_ready(paths: Paths, svc: Service, timeout: float = READY_TIMEOUT) -> None:
    """Block until ``svc``'s socket accepts; ServiceError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not connects(svc.socket(paths)):
        if time.monotonic() > deadline:
            raise ServiceError(f"{svc.name} did not come up within {timeout:g} s")
        time.sleep(0.05)


def by_name(name: str) -> Service:
    """The service called ``name`` (the supervisor included); ValueError naming the choices."""
    for svc in (*SERVICES, SUPERVISOR):
        if svc.name == name:
            return svc
    raise ValueError(f"unknown service '{name}' (one of: {', '.join(s.name for s in (*SERVICES, SUPERVISOR))})")


def main(argv: list[str] | None = None) -> int:
    """``python -m pyxen.host.services --root R wait NAME``: the systemd units' ExecStartPost,
    so that a unit ordered After= this one starts only once this daemon accepts."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m pyxen.host.services",
                                 description="wait until one of Dom0's daemons accepts on its socket")
    ap.add_argument("--root", help="state folder (default $PYXEN_ROOT or /var/lib/pyxen)")
    ap.add_argument("--timeout", type=float, default=READY_TIMEOUT, help="seconds (default %(default)s)")
    ap.add_argument("action", choices=("wait",))
    ap.add_argument("service")
    ns = ap.parse_args(argv)
    try:
        wait_ready(Paths.from_env(ns.root), by_name(ns.service), ns.timeout)
    except (ValueError, ServiceError) as err:
        print(f"pyxen.host.services: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
