"""netback: the virtio-net back-end (virtio 1.1 spec 5.1, "Network Device") over vhost-user,
plugged into a Dom0 Linux bridge through a TAP device named as Xen names the backend
interface (``vif<domid>.<devid>``).

Why the Linux bridge and not a learning switch in Python: the kernel bridge already learns,
floods and forwards between ports without a Python hop per frame between two guests' backends,
gives Dom0 its interface on the bridge for free, and is what Xen's vif-bridge script uses, so
``brctl show``/``ip link`` tooling works as on Xen. A Python switch would add one more copy and
one more event-loop pass per frame on the same single-threaded daemon.

Queues: 0 = RX (to the guest), 1 = TX (from the guest); the control queue stays in QEMU. No
offloads are offered (no CSUM/GSO/MRG_RXBUF), so every frame is at most MTU + 14 bytes and the
12-byte ``virtio_net_hdr_mrg_rxbuf`` is all zeros on TX and zero but num_buffers=1 on RX.
"""

from __future__ import annotations

RX_QUEUE = 0
TX_QUEUE = 1
#: sizeof(struct virtio_net_hdr_mrg_rxbuf): VERSION_1 always uses the 12-byte header.
NET_HDR_LEN = 12
#: Xen's vif MAC in Dom0 (vif-common.sh): never chosen by the bridge as its own address.
BACKEND_MAC = "fe:ff:ff:ff:ff:ff"
DEFAULT_MTU = 1500
#: The host network pyxen provides (made when missing); any other bridge must exist already.
DEFAULT_BRIDGE = "xenbr0"


def __getattr__(name: str) -> object:
    """NetDevice, imported on first use: the toolstack reads this package's constants
    (DEFAULT_MTU) in xl, which must not pay for the vhost-user device behind them."""
    if name == "NetDevice":
        from .device import NetDevice
        return NetDevice
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["NetDevice", "RX_QUEUE", "TX_QUEUE"]
