"""The systemd units in systemd/ parse, run the modules pyxen's own ``host start`` runs (same
module, same arguments, one unit per service in SERVICES), restart as Xen's units are expected
to (Restart=always, RestartSec=1), order as Xen's (xenstored after the hypervisor, the rest
after xenstored, xendomains last), and pass ``systemd-analyze verify`` where it is installed."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from pyxen.host.services import SERVICES, Service

UNITS = Path(__file__).resolve().parents[2] / "systemd"
DAEMON_UNITS = {f"pyxen-{svc.name}.service": svc for svc in SERVICES}
ALL_UNITS = [*DAEMON_UNITS, "pyxen-xendomains.service", "pyxen.target"]


def _parse(name: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string((UNITS / name).read_text(), source=name)
    return cp


def _module_argv(exec_line: str) -> tuple[str, list[str]]:
    """(module, arguments after it) of an ``/usr/bin/env ${PYXEN_PYTHON} -m MODULE ...`` line."""
    words = shlex.split(exec_line)
    assert words[:2] == ["/usr/bin/env", "${PYXEN_PYTHON}"], exec_line
    assert words[2] == "-m", exec_line
    return words[3], words[4:]


def test_the_folder_holds_exactly_the_units() -> None:
    assert sorted(p.name for p in UNITS.iterdir()) == sorted(ALL_UNITS)


@pytest.mark.parametrize("unit", ALL_UNITS)
def test_unit_parses(unit: str) -> None:
    cp = _parse(unit)
    assert cp.get("Unit", "Description")
    assert cp.has_section("Install")


@pytest.mark.parametrize("unit", list(DAEMON_UNITS))
def test_daemon_unit_runs_the_service_module(unit: str) -> None:
    svc: Service = DAEMON_UNITS[unit]
    cp = _parse(unit)
    module, args = _module_argv(cp.get("Service", "ExecStart"))
    assert module == svc.module
    assert args == ["--root", "${PYXEN_ROOT}", *svc.args]
    assert cp.get("Service", "Restart") == "always"
    assert cp.get("Service", "RestartSec") == "1"
    assert cp.get("Service", "Type") == "simple"
    post_module, post_args = _module_argv(cp.get("Service", "ExecStartPost"))
    assert (post_module, post_args[-2:]) == ("pyxen.host.services", ["wait", svc.name])
    if not svc.available():
        pytest.skip(f"{svc.module} is not written yet (Service.available() is false)")


@pytest.mark.parametrize("unit", list(DAEMON_UNITS))
def test_daemon_unit_orders_after_the_services_before_it(unit: str) -> None:
    """As Xen's units: each daemon comes after every daemon before it in SERVICES, and all but
    the hypervisor pull in xenstored or the hypervisor (Xen's require proc-xen.mount and
    xenstored). With Wants=, not Requires=: systemd propagates an automatic restart along
    Requires= (systemd issue #2775), and one crash must restart one daemon only."""
    names = list(DAEMON_UNITS)
    before = names[:names.index(unit)]
    cp = _parse(unit)
    after = cp.get("Unit", "After", fallback="").split()
    assert after == before
    wants = cp.get("Unit", "Wants", fallback="").split()
    expected = [] if unit == "pyxen-hypervisor.service" else (
        ["pyxen-hypervisor.service"] if unit == "pyxen-xenstored.service" else ["pyxen-xenstored.service"])
    assert wants == expected
    assert cp.get("Unit", "PartOf") == "pyxen.target"
    assert cp.get("Install", "WantedBy") == "pyxen.target"


def test_xendomains_is_a_oneshot_after_every_daemon() -> None:
    cp = _parse("pyxen-xendomains.service")
    assert cp.get("Service", "Type") == "oneshot"
    assert cp.get("Service", "RemainAfterExit") in ("true", "yes")
    assert cp.get("Unit", "After").split() == list(DAEMON_UNITS)
    assert cp.get("Unit", "Wants").split() == ["pyxen-hypervisor.service", "pyxen-xenstored.service"]
    assert _module_argv(cp.get("Service", "ExecStart")) == ("pyxen.host.xendomains", ["--root", "${PYXEN_ROOT}", "start"])
    assert _module_argv(cp.get("Service", "ExecStop")) == ("pyxen.host.xendomains", ["--root", "${PYXEN_ROOT}", "stop"])
    assert Service("xendomains", "pyxen.host.xendomains", lambda p: p.root).available()


@pytest.mark.parametrize("unit", ALL_UNITS)
def test_no_unit_binds_its_fate_to_another(unit: str) -> None:
    """No Requires=/BindsTo=/Requisite=: a daemon's crash-restart must not stop or restart
    the others, nor run xendomains' ExecStop (which takes every guest down)."""
    cp = _parse(unit)
    for key in ("Requires", "BindsTo", "Requisite"):
        assert not cp.has_option("Unit", key), f"{unit}: {key}="


def test_target_wants_every_unit() -> None:
    cp = _parse("pyxen.target")
    assert cp.get("Unit", "Wants").split() == [*DAEMON_UNITS, "pyxen-xendomains.service"]
    assert cp.get("Install", "WantedBy") == "multi-user.target"


def test_wait_helper_module_exists() -> None:
    assert Service("wait", "pyxen.host.services", lambda p: p.root).available()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_is_silent() -> None:
    done = subprocess.run(["systemd-analyze", "verify", *(str(UNITS / u) for u in ALL_UNITS)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
