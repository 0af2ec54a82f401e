"""A vif: its TAP port on a Dom0 bridge and the virtio-net features the back-end offers."""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import subprocess

from ..common.transport import VhostUserSession
from ..common.vhost_user import Feature, ProtocolFeature
from ..common.virtqueue import Virtqueue
from . import BACKEND_MAC, DEFAULT_BRIDGE, DEFAULT_MTU, RX_QUEUE
from .handler import NetHandler

TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
#: Linux's IFNAMSIZ, with its NUL.
IFNAMSIZ = 16
#: LOG_ALL and LOG_SHMFD: QEMU refuses to migrate (or save) a guest whose vhost-user back-end
#: cannot log the pages it dirties ("Migration disabled: vhost-user backend lacks
#: VHOST_USER_PROTOCOL_F_LOG_SHMFD feature."); the session logs RX buffers and used rings.
TRANSPORT_FEATURES = (Feature.VERSION_1 | Feature.PROTOCOL_FEATURES | Feature.RING_INDIRECT_DESC
                      | Feature.LOG_ALL)
#: VIRTIO_NET_F_MTU: QEMU offers the guest a device MTU (virtio-net-pci host_mtu, set from the
#: vif's ``mtu``) only if the back-end has the bit; netback has no MTU of its own to enforce
#: (its TAP's is the vif's mtu too), so it always offers it.
NET_F_MTU = 1 << 3
#: RARP: after a migration QEMU asks the back-end to announce the guest's MAC on the bridge
#: (SEND_RARP) when the guest driver has no GUEST_ANNOUNCE, so the bridge learns its new port.
PROTOCOL_FEATURES = ProtocolFeature.REPLY_ACK | ProtocolFeature.LOG_SHMFD | ProtocolFeature.RARP
ETH_P_RARP = 0x8035
#: How long one ``ip`` command may take (it talks to the kernel over netlink; seconds).
IP_TIMEOUT = 10.0


class NetDeviceError(OSError):
    """The TAP or the bridge could not be set up; ``strerror`` is the one-line message the
    daemon writes to the vif's ``hotplug-error``."""


def _ip(*args: str) -> None:
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT)
    except subprocess.TimeoutExpired as err:
        raise NetDeviceError(errno.ETIMEDOUT,
                             f"ip {' '.join(args)}: no answer in {IP_TIMEOUT:.0f} s") from err
    if done.returncode != 0:
        raise NetDeviceError(errno.EIO, f"ip {' '.join(args)}: {done.stderr.strip()}")


def valid_ifname(name: str) -> bool:
    """Linux's dev_valid_name: what the kernel accepts as an interface name."""
    return (0 < len(name.encode()) < IFNAMSIZ and name not in (".", "..")
            and not any(c == "/" or c == ":" or c.isspace() for c in name))


def find_bridge(bridge: str) -> None:
    """The bridge a vif names must exist, as Xen's vif-bridge script checks (``Could not find
    bridge device <name>``), so a mistyped name fails the vif instead of leaving a new bridge on
    the host. The exception is DEFAULT_BRIDGE: pyxen provides xenbr0 as the host's network (what
    a Xen host's network configuration provides), so it is made when missing. Brings it up.

    :raise NetDeviceError: missing (and not xenbr0), or not a bridge.
    """
    present = valid_ifname(bridge) and os.path.exists(f"/sys/class/net/{bridge}")
    if not present:
        if bridge != DEFAULT_BRIDGE:
            raise NetDeviceError(errno.ENODEV, f"Could not find bridge device {bridge}")
        try:
            _ip("link", "add", bridge, "type", "bridge")
        except NetDeviceError:
            if not os.path.exists(f"/sys/class/net/{bridge}"):  # lost a race with another vif
                raise
    if not os.path.isdir(f"/sys/class/net/{bridge}/bridge"):
        raise NetDeviceError(errno.ENOTSUP, f"{bridge} is not a bridge device")
    _ip("link", "set", bridge, "up")


def _attach_tap(name: str) -> int:
    """An fd on TAP ``name``: made if missing, attached again if a previous daemon left it."""
    if not valid_ifname(name):
        raise NetDeviceError(errno.EINVAL, f"invalid vif name '{name}'")
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise NetDeviceError(err.errno, f"/dev/net/tun: {err.strerror} (netback needs root)") from err
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    except OSError as err:
        os.close(fd)
        raise NetDeviceError(err.errno, f"cannot make TAP {name}: {err.strerror}") from err
    return fd


def delete_tap(fd: int) -> None:
    """Drop the TAP's persistence and close ``fd``: the kernel removes the interface."""
    try:
        fcntl.ioctl(fd, TUNSETPERSIST, 0)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_tap(name: str) -> None:
    """Remove a persistent TAP a previous daemon left behind (its domain is gone). A TAP some
    process holds open (EBUSY) is not ours to remove and is left alone."""
    if not os.path.exists(f"/sys/class/net/{name}/tun_flags"):
        return
    try:
        fd = _attach_tap(name)
    except NetDeviceError:
        return
    delete_tap(fd)


def bridge_mtu(bridge: str) -> int:
    """The bridge's MTU (sysfs), or Ethernet's default if it cannot be read."""
    try:
        with open(f"/sys/class/net/{bridge}/mtu") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return DEFAULT_MTU


def open_tap(name: str, bridge: str, mtu: int | None = DEFAULT_MTU) -> int:
    """Create TAP ``name``, enslave it to ``bridge``, bring it up: what Xen's vif-bridge hotplug
    script does for a vif. The bridge is checked first, so a bad one leaves no TAP. ``mtu``
    None: the bridge's (vif-bridge's set_mtu when the vif has no mtu of its own).

    The TAP is persistent (TUNSETPERSIST): it outlives the daemon, so a restarted daemon attaches
    to the same interface (still on its bridge) and the guest's network comes back by itself.
    ``delete_tap`` removes it when the vif goes (NetDevice.remove).

    :raise NetDeviceError: the bridge is missing or the TAP cannot be made.
    """
    find_bridge(bridge)
    if mtu is None:
        mtu = bridge_mtu(bridge)
    fd = _attach_tap(name)
    try:
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
        _ip("link", "set", name, "address", BACKEND_MAC, "mtu", str(mtu))
        _ip("link", "set", name, "master", bridge)
        _ip("link", "set", name, "up")
    except OSError as err:
        delete_tap(fd)
        if isinstance(err, NetDeviceError):
            raise
        raise NetDeviceError(err.errno, f"cannot make TAP {name} persistent: {err.strerror}") from err
    except BaseException:
        delete_tap(fd)
        raise
    return fd


def open_emulated_tap(name: str, bridge: str, mtu: int = DEFAULT_MTU) -> int:
    """The TAP of an emulated NIC (type=ioemu), on ``bridge``, up: not persistent, so it goes
    when the last descriptor on it closes (QEMU's, once the NIC is unplugged or QEMU exits).

    :raise NetDeviceError: the bridge is missing or the TAP cannot be made (or exists).
    """
    find_bridge(bridge)
    if os.path.exists(f"/sys/class/net/{name}"):
        raise NetDeviceError(errno.EEXIST, f"interface {name} exists already")
    fd = _attach_tap(name)
    try:
        _ip("link", "set", name, "mtu", str(mtu))
        _ip("link", "set", name, "master", bridge)
        _ip("link", "set", name, "up")
    except BaseException:
        os.close(fd)
        raise
    return fd


class NetDevice:
    """One virtio-net device over a TAP fd; implements transport.VirtioDevice."""

    num_queues = 2
    #: Served on the event loop: the RX path is driven by the TAP's readiness and the rate
    #: limit by loop timers, both on the loop.
    ring_thread = False
    features = int(TRANSPORT_FEATURES) | NET_F_MTU
    protocol_features = int(PROTOCOL_FEATURES)

    def __init__(self, name: str, tap_fd: int, ifname: str, rate: tuple[int, int] | None = None) -> None:
        """``rate``: the vif's transmit limit, (bytes per interval, interval in microseconds)."""
        self.name = name
        self.ifname = ifname
        self.handler = NetHandler(tap_fd, rate)

    def set_rate(self, rate: tuple[int, int] | None) -> None:
        """The vif's ``rate`` node changed (or was read again): see NetHandler.set_rate."""
        self.handler.set_rate(rate)

    def get_config(self, offset: int, size: int) -> bytes:
        return bytes(size)  # net config space (MAC, status) is QEMU's

    def set_config(self, offset: int, data: bytes) -> None:
        pass

    def process(self, session: VhostUserSession, index: int, vq: Virtqueue) -> int:
        if index == RX_QUEUE:
            return self.handler.rx_buffers_posted(session)
        return self.handler.transmit(vq, session)

    def ring_started(self, session: VhostUserSession, index: int) -> None:
        if index == RX_QUEUE:
            self.handler.attach(session)

    def ring_stopped(self, session: VhostUserSession, index: int) -> None:
        if index == RX_QUEUE:
            self.handler.detach()

    def send_rarp(self, mac: bytes) -> None:
        """SEND_RARP: broadcast the RARP request QEMU's announce_self_create builds (net/
        announce.c: reverse request, sender and target hardware address = the guest's MAC,
        padded to 60 bytes), from the guest's port of the bridge."""
        frame = (b"\xff" * 6 + mac + struct.pack(">HHHBBH", ETH_P_RARP, 1, 0x0800, 6, 4, 3)
                 + mac + bytes(4) + mac + bytes(4)).ljust(60, b"\0")
        try:
            os.write(self.handler.tap, frame)
        except OSError:  # TAP down: the guest's own traffic will teach the bridge
            pass

    def close(self) -> None:
        """The daemon stops: let go of the TAP, which stays (persistent) for its successor."""
        self.handler.detach()
        os.close(self.handler.tap)

    def remove(self) -> None:
        """The vif is gone (detached, domain dead): remove its TAP from the host."""
        self.handler.detach()
        delete_tap(self.handler.tap)
