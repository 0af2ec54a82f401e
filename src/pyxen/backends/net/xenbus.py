"""netback's xenbus side: read the vif's backend keys, create its TAP on the bridge, publish
what Xen's netback publishes (feature-*, hotplug-status)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from . import DEFAULT_MTU
from .device import NetDevice, open_tap

if TYPE_CHECKING:
    from ..daemon import DeviceBackend


async def make_net(be: "DeviceBackend") -> tuple[NetDevice, dict[str, str]]:
    """:raise OSError: no TAP (not root) or no bridge."""
    bridge = await be.read("bridge", "xenbr0")
    ifname = await be.read("vifname") or f"vif{be.domid}.{be.devid}"
    mtu = int(await be.read("mtu", str(DEFAULT_MTU)))
    fd = await asyncio.to_thread(open_tap, ifname, bridge, mtu)
    device = NetDevice(f"vif-{be.domid}-{be.devid}", fd, ifname)
    keys = {"feature-sg": "0", "feature-gso-tcpv4": "0", "feature-gso-tcpv6": "0",
            "feature-rx-copy": "1", "feature-rx-flip": "0", "feature-split-event-channels": "1",
            "multi-queue-max-queues": "1", "vifname": ifname, "hotplug-status": "connected"}
    return device, keys
