"""netback's xenbus side: read the vif's backend keys, put its TAP on the bridge (what Xen's
vif-bridge hotplug script does), publish what Xen's netback publishes (feature-*,
hotplug-status)."""

from __future__ import annotations

import asyncio
import errno
import logging
import re

from ..common.xenbus import BackendNode
from . import DEFAULT_BRIDGE
from .device import NetDevice, NetDeviceError, open_tap, valid_ifname

log = logging.getLogger(__name__)


def read_rate(raw: str) -> tuple[int, int] | None:
    """The ``rate`` node as Linux's xen_net_read_rate reads it: "<bytes>,<usecs>" limits the
    guest's transmit path to that many bytes per interval; a missing node means no limit, and
    one it cannot parse too (netback says "Traffic unlimited"). A zero interval: no limit."""
    if not raw:
        return None
    m = re.fullmatch(r"([0-9]+),([0-9]+)", raw.strip())
    if m is None:
        log.warning("Failed to parse network rate limit %r. Traffic unlimited.", raw)
        return None
    if int(m.group(2)) == 0:
        return None
    return int(m.group(1)), int(m.group(2))


def vif_name(domid: int, devid: int) -> str:
    """Xen's name for a vif's backend interface."""
    return f"vif{domid}.{devid}"


async def tap_name(be: BackendNode) -> str:
    """The vif's backend interface: ``vifname`` if the config gave one, else Xen's name.

    :raise NetDeviceError: not a name Linux accepts for an interface.
    """
    name = await be.read("vifname") or vif_name(be.domid, be.devid)
    if not valid_ifname(name):
        raise NetDeviceError(errno.EINVAL, f"invalid vif name '{name}'")
    return name


async def make_net(be: BackendNode) -> tuple[NetDevice, dict[str, str]]:
    """:raise NetDeviceError: no TAP (not root), a bridge that does not exist ("Could not find
    bridge device <name>", as vif-bridge says), a bad mtu. A ``rate`` limits what the guest
    transmits (credit.py)."""
    bridge = await be.read("bridge", DEFAULT_BRIDGE)
    ifname = await tap_name(be)
    raw_mtu = await be.read("mtu")
    if raw_mtu and (not raw_mtu.isascii() or not raw_mtu.isdigit() or not 68 <= int(raw_mtu) <= 65535):
        raise NetDeviceError(errno.EINVAL, f"invalid mtu '{raw_mtu}'")
    # No mtu node (the vif's mtu is Ethernet's default): the TAP takes the bridge's MTU, as
    # vif-bridge's set_mtu does.
    fd = await asyncio.to_thread(open_tap, ifname, bridge, int(raw_mtu) if raw_mtu else None)
    rate = read_rate(await be.read("rate"))
    device = NetDevice(f"vif-{be.domid}-{be.devid}", fd, ifname, rate)
    keys = {"feature-sg": "0", "feature-gso-tcpv4": "0", "feature-gso-tcpv6": "0",
            "feature-rx-copy": "1", "feature-rx-flip": "0", "feature-split-event-channels": "1",
            "multi-queue-max-queues": "1", "hotplug-status": "connected"}
    # No ``vifname`` node of the backend's own: libxl writes one only for a configured
    # vifname=, and Xen's vif-common.sh renames the interface to whatever that node says (for
    # Xen's default name, into the interface that already has it: "Cannot rename interface").
    return device, keys
