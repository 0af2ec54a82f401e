"""The SVR4 'newc' cpio format, as the Linux kernel unpacks an initramfs.

Pure encoding, no I/O beyond the caller's stream: see the kernel's
Documentation/driver-api/early-userspace/buffer-format.rst. Each member is a 110-byte ASCII
header ("070701" + 13 eight-digit hex fields), the NUL-terminated name, padding to 4 bytes, the
data, padding to 4 bytes; the archive ends with a member named TRAILER!!!.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from typing import BinaryIO, Iterable

MAGIC = b"070701"
TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Member:
    """One archive entry: a directory, a regular file or a symlink (data is the target)."""

    name: str
    mode: int
    data: bytes = b""


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _header(ino: int, mode: int, nlink: int, size: int, namesize: int) -> bytes:
    fields = (ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, namesize, 0)
    return MAGIC + b"".join(b"%08X" % f for f in fields)


def write(out: BinaryIO, members: Iterable[Member]) -> None:
    """Write ``members`` (parents before children) and the trailer to ``out``."""
    ino = 1
    for m in [*members, Member(TRAILER, 0)]:
        name = m.name.encode() + b"\0"
        nlink = 2 if stat.S_ISDIR(m.mode) else 1
        head = _header(ino, m.mode, nlink, len(m.data), len(name)) + name
        out.write(head + _pad(len(head)))
        out.write(m.data + _pad(len(m.data)))
        ino += 1


def directory(name: str) -> Member:
    return Member(name, stat.S_IFDIR | 0o755)


def regular(name: str, data: bytes, perm: int = 0o644) -> Member:
    return Member(name, stat.S_IFREG | perm, data)


def symlink(name: str, target: str) -> Member:
    return Member(name, stat.S_IFLNK | 0o777, target.encode())
