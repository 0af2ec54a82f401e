"""blkback's xenbus side: read the vbd's backend keys, open the target, publish what Xen's
blkback publishes (sectors, sector-size, info, feature-flush-cache, feature-discard, ...)."""

from __future__ import annotations

import asyncio
import os

from ..common.xenbus import BackendNode
from . import SECTOR_SIZE
from .device import BlockDevice, open_target

#: info bits (blkif.h): VDISK_CDROM 1, VDISK_REMOVABLE 2, VDISK_READONLY 4.
VDISK_CDROM, VDISK_REMOVABLE, VDISK_READONLY = 1, 2, 4


async def make_block(be: BackendNode) -> tuple[BlockDevice, dict[str, str]]:
    """:raise OSError: the target cannot be opened (the daemon reports it in hotplug-error)."""
    params = await be.read("params")
    readonly = (await be.read("mode", "w")) == "r"
    cdrom = (await be.read("device-type", "disk")) == "cdrom"
    discard = (await be.read("discard-enable", "1")) == "1"
    vdev = await be.read("dev", str(be.devid))
    target = await asyncio.to_thread(open_target, params, readonly or cdrom)
    device = BlockDevice(f"vbd-{be.domid}-{be.devid}", target, serial=vdev, discard=discard)
    info = (VDISK_READONLY if target.readonly else 0) | (VDISK_CDROM | VDISK_REMOVABLE if cdrom else 0)
    keys = {
        "sectors": str(target.sectors), "sector-size": str(SECTOR_SIZE),
        "physical-sector-size": str(SECTOR_SIZE), "info": str(info),
        "feature-flush-cache": "1", "feature-discard": "1" if discard and not target.readonly else "0",
        "feature-persistent": "0", "max-ring-page-order": "0", "multi-queue-max-queues": "1",
        "physical-device-path": params, "hotplug-status": "connected",
    }
    if target.is_block_device:
        rdev = os.stat(params).st_rdev
        keys["physical-device"] = f"{os.major(rdev):x}:{os.minor(rdev):x}"
    return device, keys
