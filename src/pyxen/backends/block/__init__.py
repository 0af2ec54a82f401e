"""blkback: the virtio-blk back-end (virtio 1.1 spec 5.2, "Block Device"), served over vhost-user.

Xen's blkback serves a vbd's shared ring to blkfront; pyxen's serves a virtio-blk ring to the
guest's virtio_blk driver, reached through QEMU's ``vhost-user-blk-pci``. Raw files and block
devices only: other formats go to QEMU's own block layer (``backendtype=qdisk``).
"""

from __future__ import annotations

# Request types (virtio_blk.h) and status bytes.
VIRTIO_BLK_T_IN = 0
VIRTIO_BLK_T_OUT = 1
VIRTIO_BLK_T_FLUSH = 4
VIRTIO_BLK_T_GET_ID = 8
VIRTIO_BLK_T_DISCARD = 11
VIRTIO_BLK_T_WRITE_ZEROES = 13
VIRTIO_BLK_S_OK = 0
VIRTIO_BLK_S_IOERR = 1
VIRTIO_BLK_S_UNSUPP = 2

# Feature bits (virtio spec 5.2.3).
VIRTIO_BLK_F_SIZE_MAX = 1 << 1
VIRTIO_BLK_F_SEG_MAX = 1 << 2
VIRTIO_BLK_F_RO = 1 << 5
VIRTIO_BLK_F_BLK_SIZE = 1 << 6
VIRTIO_BLK_F_FLUSH = 1 << 9
VIRTIO_BLK_F_MQ = 1 << 12
VIRTIO_BLK_F_DISCARD = 1 << 13

#: virtio-blk sectors are always 512 bytes, as blkif's (xl.md 5.2).
SECTOR_SIZE = 512
#: GET_ID answers 20 bytes (VIRTIO_BLK_ID_BYTES).
ID_BYTES = 20

from .device import BlockDevice  # noqa: E402

__all__ = ["BlockDevice", "SECTOR_SIZE"]
