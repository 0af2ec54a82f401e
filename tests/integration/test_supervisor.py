"""The supervisor on an idle host (no guests): a daemon killed with SIGKILL is back within
2.5 s (new pid, its socket accepts), ``pyxen host stop`` afterwards leaves no pyxen process
under the root, ``host start`` run again changes nothing but revives a dead supervisor, and a
daemon that dies at once every time is restarted at most START_LIMIT_BURST times per window."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from pyxen.host import services
from pyxen.host import supervisor as sup_mod
from pyxen.host.services import SERVICES, SUPERVISOR, Service, connects, running_pid
from pyxen.host.supervisor import START_LIMIT_BURST, START_LIMIT_INTERVAL, Supervisor
from pyxen.paths import Paths
from pyxen.testing.host import daemon_argvs

pytestmark = pytest.mark.integration

#: The brief's bound: systemd's Restart=always on a loaded machine, plus a daemon's start.
BACK_WITHIN = 2.5


def pyxen_processes(root: Path) -> list[str]:
    """Command lines of pyxen daemons (``python -m pyxen...``) that name ``root``."""
    return [" ".join(argv) for argv in daemon_argvs(root).values()]


def wait_back(paths: Paths, svc: Service, old_pid: int, within: float) -> tuple[int, float]:
    """(new pid, seconds) once ``svc`` runs under a new pid and accepts; AssertionError if not
    within ``within`` seconds."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < within:
        pid = running_pid(paths, svc)
        if pid is not None and pid != old_pid and connects(svc.socket(paths)):
            return pid, time.monotonic() - t0
        time.sleep(0.02)
    raise AssertionError(f"{svc.name} not back within {within} s (pid file: {running_pid(paths, svc)}); "
                         f"supervisor log:\n{_tail(paths.daemon_log('supervisor'))}")


def _tail(path: Path) -> str:
    try:
        return "\n".join(path.read_text().splitlines()[-10:])
    except OSError:
        return "(no log)"


@pytest.mark.parametrize("svc", SERVICES, ids=[s.name for s in SERVICES])
def test_killed_daemon_is_back_and_host_stop_stops_all(host, svc: Service) -> None:  # type: ignore[no-untyped-def]
    if not svc.available():
        pytest.skip(f"{svc.module} is not written yet")
    paths = host.paths
    old = running_pid(paths, svc)
    assert old is not None
    others = {s.name: running_pid(paths, s) for s in SERVICES if s.available() and s != svc}
    os.kill(old, signal.SIGKILL)
    new, took = wait_back(paths, svc, old, BACK_WITHIN)
    assert new != old
    status = host.run("pyxen", "host", "status")
    assert status.returncode == 0, status.stdout
    assert f"{svc.name:<12} running (pid {new}), restarted 1 time" in status.stdout
    assert f"supervisor   running (pid {running_pid(paths, SUPERVISOR)})" in status.stdout
    # Every other daemon still runs under the pid it had: only the dead one was restarted.
    assert {s.name: running_pid(paths, s) for s in SERVICES if s.available() and s != svc} == others
    stop = host.run("pyxen", "host", "stop")
    assert stop.returncode == 0, stop.stderr
    assert stop.stdout.splitlines()[0] == "supervisor   stopped"
    time.sleep(0.5)  # a supervisor that fought the stop would have restarted something by now
    assert pyxen_processes(paths.root) == []


def test_host_start_again_changes_nothing_and_revives_the_supervisor(host) -> None:  # type: ignore[no-untyped-def]
    paths = host.paths
    before = {s.name: running_pid(paths, s) for s in (*SERVICES, SUPERVISOR) if s.available()}
    again = host.run("pyxen", "host", "start", check=True)
    assert "started" not in again.stdout, again.stdout
    assert {s.name: running_pid(paths, s) for s in (*SERVICES, SUPERVISOR) if s.available()} == before

    os.kill(before["supervisor"], signal.SIGKILL)
    time.sleep(0.2)
    status = host.run("pyxen", "host", "status")
    assert status.returncode == 3 and "supervisor   stopped" in status.stdout, status.stdout
    again = host.run("pyxen", "host", "start", check=True)
    assert f"supervisor   started (pid {running_pid(paths, SUPERVISOR)})" in again.stdout, again.stdout
    assert sum("started" in ln for ln in again.stdout.splitlines()) == 1, again.stdout
    # ... and the revived supervisor restarts a killed daemon too.
    xenstored = SERVICES[1]
    old = running_pid(paths, xenstored)
    assert old is not None
    os.kill(old, signal.SIGKILL)
    wait_back(paths, xenstored, old, BACK_WITHIN)


def test_restart_storm_is_rate_limited(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A daemon that exits at once (``python -m json.tool --root R`` rejects its arguments) is
    started START_LIMIT_BURST times, then refused until the window slides; logged once."""
    paths = Paths(tmp_path)
    paths.ensure()
    crasher = Service("crasher", "json.tool", lambda p: p.run / "crasher.sock")
    now = [1000.0]
    sup = Supervisor(paths, [crasher], clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger=sup_mod.log.name)
    for _ in range(3 * START_LIMIT_BURST):
        sup.check()
        now[0] += 0.1
    w = sup.watched[0]
    assert len(w.starts) == START_LIMIT_BURST
    assert w.state == "start-limit-hit"
    assert "exited with status 2" in w.last_error
    assert sum("start limit hit" in r.getMessage() for r in caplog.records) == 1
    assert sup.status()["services"]["crasher"]["state"] == "start-limit-hit"
    now[0] += START_LIMIT_INTERVAL  # the window has slid past every start: one more try
    sup.check()
    assert len(w.starts) == 1 and w.state == "down"
    assert "usage" in paths.daemon_log("crasher").read_text()


def test_start_services_launches_together_and_undoes_a_failed_start(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``host start`` launches its daemons together and waits for each in order. One that exits
    at start fails the start naming it, and the ones launched after it are killed, their pid
    files gone: the host is left as a one-by-one start would have left it."""
    paths = Paths(tmp_path)
    paths.ensure()
    # A "daemon" that accepts on the socket it is given.
    server = ("import socket,sys,pathlib\n"
              "pathlib.Path(sys.argv[1]).unlink(missing_ok=True)  # a killed one's, as daemons do\n"
              "s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen()\n"
              "while True: s.accept()[0].close()\n")
    (tmp_path / "fakesvc.py").write_text(server)
    ok = Service("fakeok", "fakesvc", lambda p: p.run / "fakeok.sock")
    crasher = Service("crasher", "json.tool", lambda p: p.run / "crasher.sock")
    later = Service("later", "fakesvc", lambda p: p.run / "later.sock")

    def argv(p: Paths, svc: Service) -> list[str]:
        if svc.module == "fakesvc":
            return [sys.executable, str(tmp_path / "fakesvc.py"), str(svc.socket(p))]
        return [sys.executable, "-m", svc.module, "--root", str(p.root)]

    monkeypatch.setattr(services, "argv", argv)
    try:
        with pytest.raises(services.ServiceError, match="crasher exited with status 2 at start"):
            services.start_services(paths, [ok, crasher, later])
        assert running_pid(paths, ok) is not None  # started before the failure: stays
        assert not paths.pidfile("later").exists()
        started = services.start_services(paths, [ok, later])
        assert [(s.name, new) for s, _, new in started] == [("fakeok", False), ("later", True)]
        assert services.connects(later.socket(paths))
    finally:
        assert [s.name for s in services.stop_services(paths, [later, ok])] == ["later", "fakeok"]
    assert running_pid(paths, ok) is None and running_pid(paths, later) is None
