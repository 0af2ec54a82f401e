"""xl.conf's run_hotplug_scripts and autoballoon, and the global -N of block-attach and
network-attach, with a real guest (run under ``flock /tmp/pyxen-net.lock``: the guest has vifs).

- run_hotplug_scripts=0: a vif whose ``script=`` would write a marker file, given at create
  and by network-attach: xl says once per command that the script was not run, no marker is
  written, and the vif is made all the same (its TAP on the bridge, a network-list row). With
  xl.conf gone (the default 1) the same script runs: the marker appears.
- autoballoon="on": xl create says, in one line, that pyxen does not balloon Domain-0.
- xl -N block-attach / network-attach print ``disk: {...}`` / ``vif: {...}`` and the guest gets
  no device (no backend node, no network-list row).
"""

from __future__ import annotations

import json
import os

import pytest

from pyxen.testing.bridge import link_local_bridge
from pyxen.xenstore.client import XenstoreClient
from pyxen.xenstore.errors import NoEntry

pytestmark = pytest.mark.integration


def _xs_dir(host, path: str) -> list[str]:  # type: ignore[no-untyped-def]
    with XenstoreClient(host.paths.xenstored_socket) as xs:
        try:
            return list(xs.directory(path))
        except NoEntry:
            return []


def test_xlconf_hotplug_autoballoon_and_dryrun(host) -> None:  # type: ignore[no-untyped-def]
    marker = host.paths.root / "script-ran"
    script = host.paths.root / "mark-script"
    script.write_text(f'#!/bin/sh\necho "$1" >> {marker}\nexit 0\n')
    script.chmod(0o755)
    with link_local_bridge(dom0_ip="169.254.83.100", tag="83") as (br, _ns):
        host.paths.xl_conf.write_text('run_hotplug_scripts = 0\nautoballoon = "on"\n')
        try:
            cfg = host.write_cfg("hk", extra_lines=f"vif = ['bridge={br},mac=00:16:3e:00:83:01,script={script}']\n")
            made = host.xl("create", str(cfg))
            domid = int(host.xl("domid", "hk").stdout)
            notices = [ln for ln in made.stderr.splitlines() if "run_hotplug_scripts=0" in ln]
            assert len(notices) == 1 and str(script) in notices[0] and "not run" in notices[0], made.stderr
            balloon = [ln for ln in made.stderr.splitlines() if "autoballoon" in ln]
            assert len(balloon) == 1 and "does not balloon Domain-0" in balloon[0], made.stderr
            assert not marker.exists()
            assert os.path.exists(f"/sys/class/net/vif{domid}.0/brport")

            att = host.xl("network-attach", "hk", f"bridge={br}", "mac=00:16:3e:00:83:02", f"script={script}")
            assert att.stderr.count("run_hotplug_scripts=0") == 1, att.stderr
            assert not marker.exists()
            assert os.path.exists(f"/sys/class/net/vif{domid}.1/brport")
            assert host.xl("network-list", "hk").stdout.count("\n") == 3  # header + two vifs

            # -N: printed, nothing added.
            img = host.paths.root / "dry.img"
            img.write_bytes(b"\0" * (1 << 20))
            dry = host.xl("-N", "block-attach", "hk", f"{img},raw,xvdb,w")
            assert dry.stdout.startswith("disk: {") and dry.stderr == ""
            assert json.loads(dry.stdout[len("disk: "):])["pdev_path"] == str(img)
            assert _xs_dir(host, f"/local/domain/0/backend/vbd/{domid}") == []
            dry = host.xl("-N", "network-attach", "hk", f"bridge={br}", "mac=00:16:3e:00:83:03")
            assert json.loads(dry.stdout[len("vif: "):]) == {"mac": "00:16:3e:00:83:03", "bridge": br}
            assert host.xl("network-list", "hk").stdout.count("\n") == 3
            assert not os.path.exists(f"/sys/class/net/vif{domid}.2")
        finally:
            host.paths.xl_conf.unlink(missing_ok=True)

        # The default (1): the same script runs once the interface exists.
        att = host.xl("network-attach", "hk", f"bridge={br}", "mac=00:16:3e:00:83:04", f"script={script}")
        assert "run_hotplug_scripts" not in att.stderr
        assert marker.read_text().split() == ["online"]
        host.xl("destroy", "hk")
