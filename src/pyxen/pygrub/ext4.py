"""A read-only ext2/3/4 reader in user space: what pygrub needs from a guest's filesystem.

Xen's pygrub reads the guest's disk through libxenfsimage (an ext2fs plugin) rather than by
mounting it: the host never hands a guest-controlled filesystem to its kernel. This module does
the same for ext2, ext3 and ext4 in Python: the superblock, 32- and 64-bit group descriptors,
inodes, extent trees and the older block maps, directories read linearly (an htree directory's
index blocks look like empty entries to a linear reader, so they need no special case), and
fast and slow symlinks, which Debian uses for /vmlinuz and /initrd.img.

Nothing is written and checksums are not verified; a journal that still needs recovery is
ignored, as libxenfsimage ignores it (a guest that shut down cleanly has none).
"""

from __future__ import annotations

import stat
import struct
from dataclasses import dataclass
from typing import Iterator

from .disk import Disk, DiskError

EXT4_MAGIC = 0xEF53
EXTENT_MAGIC = 0xF30A
ROOT_INODE = 2
#: i_flags
EXTENTS_FL = 0x80000
INLINE_DATA_FL = 0x10000000
#: s_feature_incompat bits this reader understands; any other one is refused by name.
INCOMPAT_FILETYPE = 0x2
INCOMPAT_RECOVER = 0x4
INCOMPAT_JOURNAL_DEV = 0x8
INCOMPAT_META_BG = 0x10
INCOMPAT_EXTENTS = 0x40
INCOMPAT_64BIT = 0x80
INCOMPAT_MMP = 0x100
INCOMPAT_FLEX_BG = 0x200
INCOMPAT_EA_INODE = 0x400
INCOMPAT_DIRDATA = 0x1000
INCOMPAT_CSUM_SEED = 0x2000
INCOMPAT_LARGEDIR = 0x4000
INCOMPAT_INLINE_DATA = 0x8000
INCOMPAT_ENCRYPT = 0x10000
INCOMPAT_CASEFOLD = 0x20000
SUPPORTED_INCOMPAT = (INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG | INCOMPAT_EXTENTS
                      | INCOMPAT_64BIT | INCOMPAT_MMP | INCOMPAT_FLEX_BG | INCOMPAT_EA_INODE
                      | INCOMPAT_CSUM_SEED | INCOMPAT_LARGEDIR | INCOMPAT_INLINE_DATA
                      | INCOMPAT_CASEFOLD)
#: Symlinks followed in one lookup before giving up (Linux's MAXSYMLINKS).
MAX_SYMLINKS = 40
#: Deepest extent tree accepted (ext4 allows 5 levels; more is a loop in a corrupt image).
MAX_EXTENT_DEPTH = 5


class FsError(Exception):
    """Not an ext filesystem, or a corrupt or unsupported one; str() says what is wrong."""


class NotFound(FsError):
    """A path that does not exist in the filesystem."""


@dataclass(frozen=True)
class Inode:
    number: int
    mode: int
    size: int
    flags: int
    block: bytes  # i_block: the extent tree root, the block map, or a fast symlink's target

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)


@dataclass(frozen=True)
class Extent:
    """``count`` blocks of the file from ``logical`` on, at ``physical`` on disk;
    an uninitialized extent reads as zeros."""

    logical: int
    physical: int
    count: int
    initialized: bool = True


class Ext4:
    """One ext2/3/4 filesystem at ``offset`` bytes into ``disk``."""

    def __init__(self, disk: Disk, offset: int = 0) -> None:
        self.disk, self.offset = disk, offset
        try:
            sb = disk.read(offset + 1024, 1024)
        except DiskError as err:
            raise FsError(f"no ext2/3/4 filesystem at offset {offset}: {err}") from None
        if struct.unpack_from("<H", sb, 56)[0] != EXT4_MAGIC:
            raise FsError(f"no ext2/3/4 filesystem at offset {offset} (bad superblock magic)")
        (self.inodes_count, blocks_lo, _, _, _, self.first_data_block, log_block_size) = \
            struct.unpack_from("<7I", sb, 0)
        self.blocks_per_group, = struct.unpack_from("<I", sb, 32)
        self.inodes_per_group, = struct.unpack_from("<I", sb, 40)
        rev_level, = struct.unpack_from("<I", sb, 76)
        self.inode_size = struct.unpack_from("<H", sb, 88)[0] if rev_level >= 1 else 128
        self.incompat, = struct.unpack_from("<I", sb, 96)
        desc_size = struct.unpack_from("<H", sb, 254)[0]
        blocks_hi = struct.unpack_from("<I", sb, 336)[0] if self.incompat & INCOMPAT_64BIT else 0
        self.first_meta_bg, = struct.unpack_from("<I", sb, 260)
        if log_block_size > 6:
            raise FsError(f"ext superblock at offset {offset}: block size 2^{10 + log_block_size} "
                          "is not one ext uses")
        self.block_size = 1024 << log_block_size
        self.blocks_count = blocks_lo | (blocks_hi << 32)
        self.desc_size = desc_size if self.incompat & INCOMPAT_64BIT and desc_size >= 64 else 32
        unknown = self.incompat & ~SUPPORTED_INCOMPAT
        if self.incompat & INCOMPAT_JOURNAL_DEV:
            raise FsError(f"offset {offset} holds an external ext journal, not a filesystem")
        if unknown:  # encrypt and dirdata among them: names this reader cannot compare
            raise FsError(f"ext filesystem at offset {offset} has incompatible features "
                          f"0x{unknown:x} this reader does not know")
        if not self.inodes_per_group or not self.blocks_per_group or self.inode_size < 128:
            raise FsError(f"ext superblock at offset {offset} is corrupt")
        self.group_count = -(-(self.blocks_count - self.first_data_block) // self.blocks_per_group)

    # --- blocks, groups, inodes -------------------------------------------------------------
    def read_blocks(self, block: int, count: int = 1) -> bytes:
        if block + count > self.blocks_count:
            raise FsError(f"block {block} is past the end of the filesystem")
        return self.disk.read(self.offset + block * self.block_size, count * self.block_size)

    def _descriptor_block(self, group: int) -> tuple[int, int]:
        """(block, byte offset in it) of group ``group``'s descriptor: in the table after the
        superblock, or with meta_bg past first_meta_bg in the first block of its meta group."""
        per_block = self.block_size // self.desc_size
        if self.incompat & INCOMPAT_META_BG and group // per_block >= self.first_meta_bg:
            meta_group = group // per_block
            first_group = meta_group * per_block
            return (first_group * self.blocks_per_group + self.first_data_block
                    + (1 if self._has_super(first_group) else 0),
                    (group % per_block) * self.desc_size)
        return (self.first_data_block + 1 + group // per_block,
                (group % per_block) * self.desc_size)

    @staticmethod
    def _has_super(group: int) -> bool:
        """sparse_super: group 0, 1 and powers of 3, 5 and 7 hold a superblock backup."""
        if group in (0, 1):
            return True
        for base in (3, 5, 7):
            n = base
            while n < group:
                n *= base
            if n == group:
                return True
        return False

    def inode(self, number: int) -> Inode:
        if not 1 <= number <= self.inodes_count:
            raise FsError(f"inode {number} is out of range")
        group, index = divmod(number - 1, self.inodes_per_group)
        desc_block, at = self._descriptor_block(group)
        desc = self.read_blocks(desc_block)[at:at + self.desc_size]
        table = struct.unpack_from("<I", desc, 8)[0]
        if self.desc_size >= 64:
            table |= struct.unpack_from("<I", desc, 0x28)[0] << 32
        where = self.offset + table * self.block_size + index * self.inode_size
        raw = self.disk.read(where, self.inode_size)
        mode, = struct.unpack_from("<H", raw, 0)
        size_lo, = struct.unpack_from("<I", raw, 4)
        flags, = struct.unpack_from("<I", raw, 32)
        size_hi, = struct.unpack_from("<I", raw, 108)
        block = raw[40:100]
        if flags & INLINE_DATA_FL:
            block += _inline_tail(raw)
        return Inode(number, mode, size_lo | (size_hi << 32), flags, block)

    # --- a file's blocks -------------------------------------------------------------------
    def extents(self, ino: Inode) -> list[Extent]:
        """The file's blocks as runs, sorted by logical block (holes are simply absent)."""
        if ino.flags & EXTENTS_FL:
            runs = list(self._extent_tree(ino.block, MAX_EXTENT_DEPTH))
        else:
            runs = list(self._block_map(ino))
        return sorted(runs, key=lambda e: e.logical)

    def _extent_tree(self, node: bytes, budget: int) -> Iterator[Extent]:
        magic, entries, _max, depth = struct.unpack_from("<4H", node, 0)
        if magic != EXTENT_MAGIC or budget <= 0 or 12 + entries * 12 > len(node):
            raise FsError("corrupt extent tree")
        for i in range(entries):
            at = 12 + 12 * i
            if depth == 0:
                logical, length, start_hi, start_lo = struct.unpack_from("<IHHI", node, at)
                initialized = length <= 32768
                yield Extent(logical, start_lo | (start_hi << 32),
                             length if initialized else length - 32768, initialized)
            else:
                _logical, leaf_lo, leaf_hi = struct.unpack_from("<IIH", node, at)
                yield from self._extent_tree(self.read_blocks(leaf_lo | (leaf_hi << 32)),
                                             budget - 1)

    def _block_map(self, ino: Inode) -> Iterator[Extent]:
        """ext2/3's map: 12 direct blocks, then single, double and triple indirect ones."""
        ptrs = struct.unpack("<15I", ino.block)
        per = self.block_size // 4
        nblocks = -(-ino.size // self.block_size)
        logical = 0

        def walk(block: int, level: int) -> Iterator[Extent]:
            nonlocal logical
            span = per ** level
            if block == 0:
                logical += span  # a hole
                return
            if level == 0:
                yield Extent(logical, block, 1)
                logical += 1
                return
            for child in struct.unpack(f"<{per}I", self.read_blocks(block)):
                if logical >= nblocks:
                    return
                yield from walk(child, level - 1)

        for i, ptr in enumerate(ptrs):
            if logical >= nblocks:
                return
            yield from walk(ptr, 0 if i < 12 else i - 11)

    def read(self, ino: Inode, limit: int | None = None) -> bytes:
        """The file's contents (its first ``limit`` bytes)."""
        return b"".join(self.chunks(ino, limit))

    def chunks(self, ino: Inode, limit: int | None = None,
               max_chunk: int = 1 << 20) -> Iterator[bytes]:
        """The file's contents in pieces of at most ``max_chunk`` bytes, holes as zeros."""
        size = ino.size if limit is None else min(ino.size, limit)
        if ino.flags & INLINE_DATA_FL:
            if size > len(ino.block):
                raise FsError(f"inode {ino.number}: inline data past i_block is not supported")
            yield ino.block[:size]
            return
        pos = 0  # bytes produced so far
        bs = self.block_size
        per_chunk = max(1, max_chunk // bs)
        for ext in self.extents(ino):
            start = ext.logical * bs
            if start >= size:
                break
            if start > pos:  # a hole
                yield from _zeros(start - pos, max_chunk)
                pos = start
            done = 0
            while done < ext.count and pos < size:
                n = min(per_chunk, ext.count - done)
                want = min(n * bs, size - pos)
                data = (self.read_blocks(ext.physical + done, n) if ext.initialized
                        else bytes(n * bs))
                yield data[:want]
                pos += want
                done += n
        if pos < size:
            yield from _zeros(size - pos, max_chunk)

    # --- names -------------------------------------------------------------------------------
    def entries(self, ino: Inode) -> Iterator[tuple[str, int]]:
        """A directory's (name, inode) pairs, read block by block; entries with inode 0 (free
        space, htree index nodes, the metadata_csum tail) are skipped."""
        if not ino.is_dir:
            raise FsError(f"inode {ino.number} is not a directory")
        data = self.read(ino)
        if ino.flags & INLINE_DATA_FL:  # the parent's inode, then entries
            parent, = struct.unpack_from("<I", data, 0)
            yield "..", parent
            data = data[4:]
        has_type = bool(self.incompat & INCOMPAT_FILETYPE)
        at = 0
        while at + 8 <= len(data):
            number, rec_len = struct.unpack_from("<IH", data, at)
            name_len = data[at + 6] if has_type else struct.unpack_from("<H", data, at + 6)[0]
            if rec_len < 8 or rec_len % 4 or at + rec_len > len(data):
                raise FsError(f"directory inode {ino.number}: corrupt entry at {at}")
            if number and name_len and 8 + name_len <= rec_len:
                yield data[at + 8:at + 8 + name_len].decode("utf-8", "surrogateescape"), number
            at += rec_len

    def readlink(self, ino: Inode) -> str:
        """A symlink's target: in i_block (a fast symlink, or inline data), else in its block."""
        if not ino.is_symlink:
            raise FsError(f"inode {ino.number} is not a symlink")
        if not ino.flags & EXTENTS_FL and (ino.size < 60 or ino.flags & INLINE_DATA_FL):
            raw = ino.block[:ino.size]
        else:
            raw = self.read(ino, 4096)
        return raw.decode("utf-8", "surrogateescape")

    def lookup(self, path: str, follow: bool = True) -> Inode:
        """The inode ``path`` names, following symlinks on the way (and at the end with
        ``follow``): an absolute target restarts at the root, a relative one in the link's
        directory. :raise NotFound: a component is missing or is not a directory."""
        budget = [MAX_SYMLINKS]
        return self._walk(self.inode(ROOT_INODE), path, follow, budget, path)

    def _walk(self, cwd: Inode, path: str, follow: bool, budget: list[int], whole: str) -> Inode:
        if path.startswith("/"):
            cwd = self.inode(ROOT_INODE)
        parts = [p for p in path.split("/") if p and p != "."]
        current = cwd
        for i, name in enumerate(parts):
            if not current.is_dir:
                raise NotFound(f"{whole}: not a directory")
            number = next((n for entry, n in self.entries(current) if entry == name), None)
            if number is None:
                raise NotFound(f"{whole}: no such file or directory")
            found = self.inode(number)
            last = i == len(parts) - 1
            if found.is_symlink and (follow or not last):
                budget[0] -= 1
                if budget[0] < 0:
                    raise FsError(f"{whole}: too many levels of symbolic links")
                found = self._walk(current, self.readlink(found), True, budget, whole)
            current = found
        return current

    def exists(self, path: str) -> bool:
        try:
            self.lookup(path)
            return True
        except NotFound:
            return False

    def open_file(self, path: str) -> Inode:
        """The regular file at ``path`` (symlinks followed). :raise NotFound: missing or not
        a regular file."""
        ino = self.lookup(path)
        if not ino.is_file:
            raise NotFound(f"{path}: not a regular file")
        return ino


def _inline_tail(raw: bytes) -> bytes:
    """The part of an inline-data file past i_block's 60 bytes: the value of the in-inode
    extended attribute ``system.data`` (name index 7), after the 0xEA020000 magic."""
    if len(raw) <= 132:
        return b""
    extra, = struct.unpack_from("<H", raw, 128)
    base = 128 + extra
    if base + 4 > len(raw) or struct.unpack_from("<I", raw, base)[0] != 0xEA020000:
        return b""
    first = at = base + 4
    while at + 16 <= len(raw):
        name_len, index, value_offs, _inum, value_size = struct.unpack_from("<BBHII", raw, at)
        if name_len == 0 and index == 0:
            break
        if index == 7 and raw[at + 16:at + 16 + name_len] == b"data":
            return raw[first + value_offs:first + value_offs + value_size]
        at += (16 + name_len + 3) & ~3
    return b""


def _zeros(count: int, chunk: int) -> Iterator[bytes]:
    while count > 0:
        n = min(count, chunk)
        yield bytes(n)
        count -= n
