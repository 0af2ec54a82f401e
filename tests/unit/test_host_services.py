"""The service table: which daemons ``host start`` runs (a module not written yet, or a package
without ``__main__``, is skipped rather than started to fail), lookups by name, and the
readiness helper the systemd units call."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pyxen.host.services import SERVICES, SUPERVISOR, Service, ServiceError, by_name, wait_ready
from pyxen.paths import Paths


def test_services_are_in_xens_order() -> None:
    assert [s.name for s in SERVICES] == ["hypervisor", "xenstored", "xenconsoled", "backendd", "monitor", "dhcp", "xapi"]
    assert SUPERVISOR not in SERVICES


@pytest.mark.parametrize("module, runnable", [
    ("pyxen.hypervisor", True),          # a package with __main__
    ("pyxen.host.supervisor", True),     # a plain module
    ("pyxen.host", False),               # a package without __main__
    ("pyxen.no_such_daemon", False),
    ("no_such_package.daemon", False),
])
def test_available_means_python_dash_m_can_run_it(module: str, runnable: bool) -> None:
    assert Service("x", module, lambda p: p.root).available() is runnable


def test_by_name_names_the_choices() -> None:
    assert by_name("supervisor") is SUPERVISOR
    with pytest.raises(ValueError, match=r"unknown service 'xend' \(one of: hypervisor, .*supervisor\)"):
        by_name("xend")


def test_wait_ready(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    paths.ensure()
    svc = Service("probe", "json.tool", lambda p: p.run / "probe.sock")
    with pytest.raises(ServiceError, match="probe did not come up within 0.2 s"):
        wait_ready(paths, svc, timeout=0.2)
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(paths.run / "probe.sock"))
        listener.listen(1)
        wait_ready(paths, svc, timeout=0.2)


def test_wait_cli_is_one_line_and_exit_1(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pyxen.host.services", "--root", str(tmp_path), "wait", "xend"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "unknown service 'xend'" in done.stderr
