"""Debian's own /etc/xen/scripts/vif-bridge (xen-utils-common 4.17, unpacked, used as it is,
with the vif-common.sh, xen-hotplug-common.sh, xen-network-common.sh, logging.sh and
locking.sh it sources) as a vif's ``script=``: pyxen runs it with Xen's convention (``online``
/ ``offline type_if=vif``, XENBUS_PATH, vif=): the script reads the backend's ``bridge`` node,
checks the bridge, makes the TAP a bridge port on it (pyxen's netback has already enslaved the
TAP, as its docstring says, so the script's add_to_bridge finds it there; its
_setup_bridge_port still takes the TAP down, gives it fe:ff:ff:ff:ff:ff and brings it up) and
writes ``hotplug-status`` = connected (pyxen's netback writes it too, so what shows the script
succeeded is its exit status 0: any ``fatal`` would fail the create with its hotplug-error);
the guest's NIC works after all that: it pings a namespace on the bridge. Run under
``flock /tmp/pyxen-net.lock``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pyxen.testing.bridge import link_local_bridge
from pyxen.xenstore.client import XenstoreClient

from .test_block_hotplug import _debian_scripts

pytestmark = pytest.mark.integration

MAC = "00:16:3e:00:85:02"


def test_debian_vif_bridge_online_and_offline(host) -> None:  # type: ignore[no-untyped-def]
    if shutil.which("xenstore-write") is None or shutil.which("brctl") is None and shutil.which("bridge") is None:
        pytest.skip("xenstore-utils, or both brctl and iproute2's bridge, missing")
    scripts = _debian_scripts(host.paths.root)
    if scripts is None:
        pytest.skip("Debian's xen-utils-common cannot be downloaded here")
    host.paths.scripts_dir.mkdir(exist_ok=True)
    for f in scripts.iterdir():
        shutil.copy2(f, host.paths.scripts_dir / f.name)
    Path("/var/log/xen").mkdir(parents=True, exist_ok=True)  # Debian's scripts log there

    with link_local_bridge(dom0_ip="169.254.85.100", tag="85") as (br, ns):
        guest = ("for i in $(seq 600); do [ -e /sys/class/net/eth0 ] && break; sleep 0.5; done\n"
                 "ip link set eth0 up\nip addr add 169.254.85.2/16 dev eth0\n"
                 "ping -c 3 -w 90 169.254.85.100 >/dev/null; echo \"ping-ns $?\"\n")
        vif = f"vif = ['bridge={br},mac={MAC},script=vif-bridge']\n"
        domid = host.create("vbr", memory=192, script=guest, extra_lines=vif)
        tap = f"vif{domid}.0"
        be = f"/local/domain/0/backend/vif/{domid}/0"
        with XenstoreClient(host.paths.xenstored_socket) as xs:
            assert xs.read(f"{be}/hotplug-status") == b"connected"
            assert xs.read(f"{be}/script") == str(host.paths.scripts_dir / "vif-bridge").encode()
        assert os.path.realpath(f"/sys/class/net/{tap}/master").endswith("/" + br)
        with open(f"/sys/class/net/{tap}/address") as f:
            assert f.read().strip() == "fe:ff:ff:ff:ff:ff"  # _setup_bridge_port's dummy MAC
        text = host.wait_console("vbr", "ping-ns ", timeout=300)
        assert "ping-ns 0" in text, text[-1500:]

        log = host.paths.hotplug_log.read_text()
        assert f"vif-bridge online (backend/vif/{domid}/0)" in log, log[-2000:]
        host.xl("network-detach", "vbr", "0")
        log = host.paths.hotplug_log.read_text()
        assert f"vif-bridge offline (backend/vif/{domid}/0)" in log, log[-2000:]
        assert "failed" not in log, log[-2000:]
        assert not os.path.exists(f"/sys/class/net/{tap}")
        host.xl("destroy", "vbr")
