"""Issue 11's development example: examples/xenapi_demo.py, run as a user runs it, against a started
host's xapi. It clones the Debian template, starts a real guest with a VIF on xenbr0, waits through
event.from for the guest agent's IP, shuts down and destroys everything it made.

Gives a guest a vif: run under ``flock /tmp/pyxen-net.lock`` (TAP names are host-global).
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from pyxen.images.demo import DemoImage
from pyxen.testing.host import Host, started_host
from pyxen.testing.xapi import ROOT_PASSWORD, login, set_root_password, xapi_url

pytestmark = pytest.mark.integration
pytest.importorskip("XenAPI")

DEMO = Path(__file__).resolve().parents[2] / "examples" / "xenapi_demo.py"


@pytest.fixture(scope="module")
def xapi_host(demo_image: DemoImage) -> Iterator[tuple[Host, str]]:
    """A started host with root's password set; yields it and its xapi URL."""
    with started_host(demo_image, prefix="pyxen-xd-") as h:
        set_root_password(h)
        yield h, xapi_url(h)


def run_demo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(DEMO), *args], env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.timeout(900)
def test_demo_runs_a_guest_to_its_ip_and_cleans_up(xapi_host: tuple[Host, str]) -> None:
    host, url = xapi_host
    s = login(url)
    try:
        vdis_before = set(s.xenapi.VDI.get_all())
        env = dict(os.environ, XAPI_URL=url, XAPI_USER="root", XAPI_PASSWORD=ROOT_PASSWORD)
        done = run_demo(env, "--name", "demo-xapi")
        out = done.stdout + done.stderr
        assert done.returncode == 0, out
        found = re.search(r"^guest IP address: (\S+) ", done.stdout, re.MULTILINE)
        assert found, out
        ip = ipaddress.ip_address(found.group(1))
        assert ip.version == 4 and not ip.is_loopback and not ip.is_unspecified, out
        assert "destroyed the VM and its disks" in done.stdout, out
        # nothing left behind: no VM by that name, no new VDI, no domain in xl list
        assert s.xenapi.VM.get_by_name_label("demo-xapi") == []
        assert set(s.xenapi.VDI.get_all()) == vdis_before
        assert "demo-xapi" not in host.domains()
    finally:
        s.xenapi.session.logout()


def test_demo_bad_password_is_one_line_error(xapi_host: tuple[Host, str]) -> None:
    url = xapi_host[1]
    done = run_demo(dict(os.environ), "--url", url, "--password", ROOT_PASSWORD + "-wrong")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "SESSION_AUTHENTICATION_FAILED" in done.stderr, done.stderr
    assert done.stdout == ""


def test_demo_needs_url_and_password() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XAPI_")}
    done = run_demo(env)
    assert done.returncode == 2 and "the URL and the password are needed" in done.stderr
