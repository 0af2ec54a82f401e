"""The backend's XenbusState with a real guest and QEMU: boot, ``xl pause``/``unpause`` and
``xl reboot`` each take the vbd away from Connected only through allowed moves
(Connected -> Closing -> Closed -> InitWait -> Connected); the rebooted guest is a new domain
whose vbd ends Connected, frontend too."""

from __future__ import annotations

import re
import time

import pytest

from pyxen.backends.common.xenbus import XenbusState, check_transition
from pyxen.testing.host import Host
from pyxen.xenstore.client import XenstoreClient

pytestmark = pytest.mark.integration


def _states(host: Host, be: str, fe: str) -> tuple[bytes | None, bytes | None]:
    with XenstoreClient(host.paths.xenstored_socket) as xs:
        return xs.get(f"{be}/state"), xs.get(f"{fe}/state")


def _wait_connected(host: Host, be: str, fe: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _states(host, be, fe) == (b"4", b"4"):
            return
        time.sleep(0.2)
    raise AssertionError(f"not Connected: {_states(host, be, fe)}")


def test_pause_and_reboot_walk_allowed_moves(host: Host) -> None:
    img = host.paths.root / "d.img"
    img.write_bytes(bytes(4 << 20))
    domid = host.create("walk", memory=96, extra_lines=f"disk = ['file:{img},xvdb,w']\n")
    host.wait_console("walk")
    be = f"/local/domain/0/backend/vbd/{domid}/51728"
    fe = f"/local/domain/{domid}/device/vbd/51728"
    _wait_connected(host, be, fe)
    host.xl("pause", "walk")
    time.sleep(1)
    host.xl("unpause", "walk")
    _wait_connected(host, be, fe)
    before = host.console_text("walk").count("pyxen demo guest up")
    host.xl("reboot", "walk")
    deadline = time.monotonic() + 120
    while host.console_text("walk").count("pyxen demo guest up") <= before:
        assert time.monotonic() < deadline, "the guest did not come up again"
        time.sleep(0.2)
    # Xen's restart: the monitor destroyed the old domain and built a new one from its config.
    new = int(host.xl("domid", "walk").stdout)
    assert new != domid
    _wait_connected(host, f"/local/domain/0/backend/vbd/{new}/51728", f"/local/domain/{new}/device/vbd/51728")
    log = host.paths.daemon_log("backendd").read_text()
    for d in (domid, new):
        walk = [XenbusState[m] for m in re.findall(rf"vbd-{d}-51728: state (\w+)", log)]
        if d == domid:  # the pause and the reboot; its destroy removes the nodes it would walk
            assert walk.count(XenbusState.CLOSED) >= 2, walk
        state = XenbusState.INITIALISING
        for step in walk:
            check_transition(state, step)
            state = step
        if d == new:
            assert state == XenbusState.CONNECTED, walk
    assert "not allowed" not in log
