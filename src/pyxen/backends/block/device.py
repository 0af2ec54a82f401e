"""A vbd's state: the opened target, its size, the offered features and the config space.

Config layout: virtio spec 5.2.4 ``struct virtio_blk_config`` (packed, little-endian); QEMU 7.2
asks for the first 57 bytes (discard and write-zeroes properties on by default).
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass

from ..common.transport import VhostUserSession
from ..common.vhost_user import Feature, ProtocolFeature
from ..common.virtqueue import Virtqueue
from . import (ID_BYTES, SECTOR_SIZE, VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH,
               VIRTIO_BLK_F_MQ, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX)
from .handler import BlockHandler

#: Queue size QEMU uses (vhost-user-blk-pci queue-size default 128); seg_max leaves room for the
#: header and status descriptors, as contrib/vhost-user-blk does.
QUEUE_SIZE = 128
SEG_MAX = QUEUE_SIZE - 2
#: One discard segment per request up to 4 GiB: Linux splits bigger ones.
MAX_DISCARD_SECTORS = (1 << 32) // SECTOR_SIZE - 1
#: RING_EVENT_IDX as qemu-storage-daemon's export offers it: the driver kicks only when the
#: device asked (avail_event) and the device interrupts only when the driver asked (used_event).
TRANSPORT_FEATURES = (Feature.VERSION_1 | Feature.PROTOCOL_FEATURES | Feature.LOG_ALL
                      | Feature.RING_INDIRECT_DESC | Feature.RING_EVENT_IDX)
PROTOCOL_FEATURES = (ProtocolFeature.MQ | ProtocolFeature.REPLY_ACK | ProtocolFeature.CONFIG
                     | ProtocolFeature.LOG_SHMFD)

CONFIG = struct.Struct("<QIIHBBIBBHIBBHIIIIIB3x")


class BlockDeviceError(OSError):
    """The target cannot be served (missing, unreadable, empty)."""


@dataclass(frozen=True)
class Target:
    """What ``params`` names, opened: the fd and what blkback publishes about it."""

    path: str
    fd: int
    size: int
    readonly: bool
    is_block_device: bool

    @property
    def sectors(self) -> int:
        return self.size // SECTOR_SIZE


def open_target(path: str, readonly: bool) -> Target:
    """Open a raw file or block device as blkback does (O_RDONLY for mode=r).

    :raise BlockDeviceError: the path is missing, not a file or block device, or empty.
    """
    try:
        fd = os.open(path, (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC)
    except OSError as err:
        raise BlockDeviceError(err.errno, f"cannot open {path}: {err.strerror}") from err
    st = os.fstat(fd)
    if stat.S_ISBLK(st.st_mode):
        size = os.lseek(fd, 0, os.SEEK_END)
    elif stat.S_ISREG(st.st_mode):
        size = st.st_size
    else:
        os.close(fd)
        raise BlockDeviceError(22, f"{path} is neither a regular file nor a block device")
    return Target(path, fd, size, readonly, stat.S_ISBLK(st.st_mode))


class BlockDevice:
    """One virtio-blk device over a Target; implements transport.VirtioDevice."""

    num_queues = 1
    protocol_features = int(PROTOCOL_FEATURES)
    #: Each ring is served from its own thread (transport.RingWorker): a request's wake-to-
    #: interrupt time is the guest's latency at queue depth 1, and preadv/pwritev/fdatasync
    #: release the GIL, so a disk's I/O does not hold up the loop (other devices, xenstore).
    ring_thread = True

    def __init__(self, name: str, target: Target, serial: str, discard: bool = True) -> None:
        self.name = name
        self.target = target
        self.serial = serial
        self.discard = discard
        feats = TRANSPORT_FEATURES | VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_BLK_SIZE | VIRTIO_BLK_F_FLUSH
        feats |= VIRTIO_BLK_F_MQ
        if target.readonly:
            feats |= VIRTIO_BLK_F_RO
        elif discard:
            feats |= VIRTIO_BLK_F_DISCARD
        self.features = int(feats)
        self.handler = BlockHandler(target.fd, target.size, target.readonly,
                                    serial.encode()[:ID_BYTES], target.is_block_device)

    def config_space(self) -> bytes:
        return CONFIG.pack(
            self.target.sectors, 0, SEG_MAX, 0, 0, 0, SECTOR_SIZE, 0, 0, 1, 1, 0, 0, self.num_queues,
            MAX_DISCARD_SECTORS, 1, 4096 // SECTOR_SIZE, 0, 0, 0)

    def get_config(self, offset: int, size: int) -> bytes:
        data = self.config_space()
        return data[offset:offset + size].ljust(size, b"\0")

    def set_config(self, offset: int, data: bytes) -> None:
        """Only ``wce`` is writable and CONFIG_WCE is not offered: always write-through."""

    def process(self, session: VhostUserSession, index: int, vq: Virtqueue) -> int:
        return self.handler.process(vq)

    def ring_started(self, session: VhostUserSession, index: int) -> None:
        pass

    def ring_stopped(self, session: VhostUserSession, index: int) -> None:
        pass

    def close(self) -> None:
        """Let go of the target (the daemon stops, or the vbd is gone), its writes on disk
        first: a detached disk loses no write the guest made, flushed or not."""
        if not self.target.readonly:
            try:
                os.fsync(self.target.fd)
            except OSError:
                pass  # a device that cannot sync (gone) is closed all the same
        os.close(self.target.fd)

    def remove(self) -> None:
        """The vbd is gone: a target leaves nothing behind on the host, so this is close()."""
        self.close()
