"""A vif: its TAP port on a Dom0 bridge and the virtio-net features the back-end offers."""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess

from ..common.transport import VhostUserSession
from ..common.vhost_user import Feature, ProtocolFeature
from ..common.virtqueue import Virtqueue
from . import BACKEND_MAC, DEFAULT_MTU, RX_QUEUE
from .handler import NetHandler

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
TRANSPORT_FEATURES = Feature.VERSION_1 | Feature.PROTOCOL_FEATURES | Feature.RING_INDIRECT_DESC
PROTOCOL_FEATURES = ProtocolFeature.REPLY_ACK


class NetDeviceError(OSError):
    """The TAP or the bridge could not be set up."""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise NetDeviceError(1, f"ip {' '.join(args)}: {done.stderr.strip()}")


def ensure_bridge(bridge: str) -> None:
    """Create the bridge if it is missing (as a Xen host's network config provides xenbr0)."""
    if not os.path.exists(f"/sys/class/net/{bridge}"):
        try:
            _ip("link", "add", bridge, "type", "bridge")
        except NetDeviceError:
            if not os.path.exists(f"/sys/class/net/{bridge}"):  # lost a race with another vif
                raise
    _ip("link", "set", bridge, "up")


def open_tap(name: str, bridge: str, mtu: int = DEFAULT_MTU) -> int:
    """Create TAP ``name`` (gone when the fd closes), enslave it to ``bridge``, bring it up:
    what Xen's vif-bridge hotplug script does for a vif."""
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise NetDeviceError(err.errno, f"/dev/net/tun: {err.strerror} (netback needs root)") from err
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
        ensure_bridge(bridge)
        _ip("link", "set", name, "address", BACKEND_MAC, "mtu", str(mtu))
        _ip("link", "set", name, "master", bridge)
        _ip("link", "set", name, "up")
    except BaseException:
        os.close(fd)
        raise
    return fd


class NetDevice:
    """One virtio-net device over a TAP fd; implements transport.VirtioDevice."""

    num_queues = 2
    features = int(TRANSPORT_FEATURES)
    protocol_features = int(PROTOCOL_FEATURES)

    def __init__(self, name: str, tap_fd: int, ifname: str) -> None:
        self.name = name
        self.ifname = ifname
        self.handler = NetHandler(tap_fd)

    def get_config(self, offset: int, size: int) -> bytes:
        return bytes(size)  # net config space (MAC, status) is QEMU's

    def set_config(self, offset: int, data: bytes) -> None:
        pass

    def process(self, session: VhostUserSession, index: int, vq: Virtqueue) -> int:
        if index == RX_QUEUE:
            return self.handler.rx_buffers_posted(session)
        return self.handler.transmit(vq)

    def ring_started(self, session: VhostUserSession, index: int) -> None:
        if index == RX_QUEUE:
            self.handler.attach(session)

    def ring_stopped(self, session: VhostUserSession, index: int) -> None:
        if index == RX_QUEUE:
            self.handler.detach()

    def close(self) -> None:
        self.handler.detach()
        os.close(self.handler.tap)
