"""blkback's xenbus side: read the vbd's backend keys, open the target, publish what Xen's
blkback publishes (sectors, sector-size, info, feature-flush-cache, feature-discard, ...)."""

from __future__ import annotations

import asyncio
import os

from ...paths import DEFAULT_BLOCK_SCRIPT
from ..common.xenbus import BackendNode
from . import SECTOR_SIZE
from .device import BlockDevice, open_target

#: A script other than Xen's default (paths.DEFAULT_BLOCK_SCRIPT) is the user's (xl.cfg
#: ``script=``): the toolstack runs it once the backend is in InitWait, and blkback waits for
#: the ``physical-device-path`` it writes, as Xen's blkback waits for ``physical-device``.

#: info bits (blkif.h): VDISK_CDROM 1, VDISK_REMOVABLE 2, VDISK_READONLY 4.
VDISK_CDROM, VDISK_REMOVABLE, VDISK_READONLY = 1, 2, 4


async def has_user_script(be: BackendNode) -> bool:
    """The vbd has a hotplug script of the user's (not Xen's default ``block``)."""
    return (await be.read("script", DEFAULT_BLOCK_SCRIPT)) != DEFAULT_BLOCK_SCRIPT


async def script_done(be: BackendNode) -> bool:
    """A user script has said where the device is (``physical-device-path``) and that it is
    ``connected``: blkback may open it (True also when there is no user script)."""
    if not await has_user_script(be):
        return True
    return bool(await be.read("physical-device-path")) and \
        (await be.read("hotplug-status")) == "connected"


async def make_block(be: BackendNode) -> tuple[BlockDevice, dict[str, str]]:
    """:raise OSError: the target cannot be opened (the daemon reports it in hotplug-error)."""
    params = await be.read("params")
    scripted = await has_user_script(be)
    if scripted:
        # The script's answer (Debian's block puts a file on a loop device and names that).
        params = await be.read("physical-device-path", params)
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
    if scripted:  # the script's own nodes stay as it wrote them
        for key in ("physical-device-path", "hotplug-status", "physical-device"):
            keys.pop(key, None)
        return device, keys
    if target.is_block_device:
        rdev = os.stat(params).st_rdev
        keys["physical-device"] = f"{os.major(rdev):x}:{os.minor(rdev):x}"
    return device, keys
