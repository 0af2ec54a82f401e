"""A guest disk read as bytes, and where its filesystems start (pygrub's partition detection).

The disk is a regular file or a block device (an LV, a loop device), read with ``os.pread`` and
never written: pygrub runs on a disk a guest may be using. Partition detection is Xen pygrub's
``get_partition_offsets``: no 0xAA55 signature at 0x1FE means the whole disk is one filesystem
at offset 0 (xen-tools' images); otherwise the four MBR entries give their start LBA x 512 in
table order, and a protective entry of type 0xee sends the search to the GPT entries instead.
"""

from __future__ import annotations

import os
import struct
from types import TracebackType

SECTOR_SIZE = 512
#: MBR partition type of a GPT protective entry (Xen's FDISK_PART_GPT).
FDISK_PART_GPT = 0xEE
#: A GPT table pygrub will look at: more entries than this is a corrupt header, not a disk.
GPT_MAX_ENTRIES = 1024


class DiskError(OSError):
    """The disk cannot be opened or read; str() names the disk."""


class Disk:
    """A read-only view of a disk image or block device."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as err:
            raise DiskError(f"cannot open {path}: {err.strerror}") from None
        try:
            self.size = os.lseek(self.fd, 0, os.SEEK_END)  # also right for a block device
        except OSError as err:
            os.close(self.fd)
            raise DiskError(f"cannot size {path}: {err.strerror}") from None

    def read(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset``; reading past the end is an error (a
        filesystem that claims blocks its disk lacks is corrupt or truncated)."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise DiskError(f"{self.path}: read of {length} bytes at {offset} is outside the "
                            f"disk ({self.size} bytes)")
        parts = []
        while length:
            try:
                chunk = os.pread(self.fd, length, offset)
            except OSError as err:
                raise DiskError(f"{self.path}: read at {offset}: {err.strerror}") from None
            if not chunk:
                raise DiskError(f"{self.path}: unexpected end of disk at {offset}")
            parts.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
        return b"".join(parts)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "Disk":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _gpt_offsets(disk: Disk) -> list[int]:
    """The start offsets of the GPT's used entries (header at LBA 1: entry LBA at 72, count at
    80, entry size at 84; an entry's first LBA at 32). Unused entries (start 0) are skipped,
    where Xen's pygrub tries offset 0 for each of them and fails."""
    header = disk.read(SECTOR_SIZE, SECTOR_SIZE)
    if header[:8] != b"EFI PART":
        return []
    table_lba, count, size = struct.unpack_from("<QII", header, 72)
    if not 0 < count <= GPT_MAX_ENTRIES or size < 128:
        return []
    table = disk.read(table_lba * SECTOR_SIZE, count * size)
    offsets = []
    for i in range(count):
        first_lba = struct.unpack_from("<Q", table, i * size + 32)[0]
        if first_lba:
            offsets.append(first_lba * SECTOR_SIZE)
    return offsets


def partition_offsets(disk: Disk) -> list[int]:
    """Where the filesystems pygrub tries may start, in the order it tries them."""
    if disk.size < SECTOR_SIZE:
        return [0]
    mbr = disk.read(0, SECTOR_SIZE)
    if struct.unpack_from("<H", mbr, 0x1FE)[0] != 0xAA55:
        return [0]  # no partition table: a whole-disk filesystem
    offsets: list[int] = []
    if disk.size >= 0x8006 and disk.read(0x8001, 5) == b"CD001":
        offsets.append(0)  # a hybrid ISO: the ISO filesystem is at 0 as well
    for entry in (446, 462, 478, 494):
        ptype = mbr[entry + 4]
        start = struct.unpack_from("<I", mbr, entry + 8)[0] * SECTOR_SIZE
        if start == 0:
            continue  # an unused entry
        if ptype == FDISK_PART_GPT:
            offsets += _gpt_offsets(disk)
            break
        offsets.append(start)
    return offsets
