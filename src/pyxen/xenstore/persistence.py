"""Durability: an append-only journal of committed changes plus a periodic snapshot.

Spec: issue 4 ("every acknowledged write is on disk before its reply; restart restores
nodes, permissions and domain records; watches and open transactions are dropped, as in
Xen").  Xen's own C xenstored keeps its database in memory since 4.17 and only dumps it for
live update, so the on-disk format here is pyxen's.

Why a journal and not SQLite: the store is already an in-memory immutable tree; what must
reach the disk is a short list of node-level results per commit ("set /a/b = v, perms" /
"remove /a").  Appending that as one checksummed frame and calling ``fdatasync`` once is the
least I/O that makes a commit durable, and it lets the server *group-commit*: every write
answered in one event-loop turn shares one fsync.  SQLite in WAL mode would need a row per
node, an UPDATE per ancestor rewrite and its own page writes for the same guarantee.

Files in ``paths.xenstored_data``:
  snapshot  header (magic, epoch) + frames holding the full tree and the domain records
  journal   header (magic, epoch) + one frame per commit since that snapshot
A frame is ``<u32 length><u32 crc32><body>``; a torn or corrupt tail frame (a crash during
its write, before it was acknowledged) is cut off at load.  Compaction writes a new snapshot
with epoch+1 (tmp file, fsync, rename, fsync dir), then a new empty journal with the same
epoch; a journal whose epoch differs from the snapshot's is stale and ignored, so a crash
between the two steps loses nothing.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import zlib
from pathlib import Path
from typing import Iterator, NamedTuple

from .perms import PermEntry, Perms
from .store import Node, Record, join, walk

log = logging.getLogger(__name__)

MAGIC = b"PYXSTOR1"
FILE_HEADER = struct.Struct("<8sQ")
FRAME_HEADER = struct.Struct("<II")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_DOMAIN = struct.Struct("<Ii")
SNAPSHOT_CHUNK = 256 * 1024


class DomainRecord(NamedTuple):
    """What survives a restart of an introduced domain: its id and SET_TARGET target."""

    domid: int
    target: int | None = None


class Loaded(NamedTuple):
    root: Node
    domains: dict[int, DomainRecord]


def _perms_bytes(perms: Perms) -> bytes:
    return ",".join(f"{e.letter}{e.domid}" for e in perms).encode()


def _parse_perms(data: bytes) -> Perms:
    return tuple(PermEntry(t[0], int(t[1:])) for t in data.decode().split(","))


def encode_records(records: list[Record]) -> bytes:
    out = bytearray()
    for rec in records:
        kind = rec[0]
        if kind == "N":
            path = rec[1].encode()
            perms = _perms_bytes(rec[3])
            out += b"N" + _U16.pack(len(path)) + path + _U16.pack(len(perms)) + perms
            out += _U32.pack(len(rec[2])) + rec[2]
        elif kind == "D":
            path = rec[1].encode()
            out += b"D" + _U16.pack(len(path)) + path
        elif kind == "I":
            out += b"I" + _DOMAIN.pack(rec[1], -1 if rec[2] is None else rec[2])
        elif kind == "R":
            out += b"R" + _U32.pack(rec[1])
        else:  # pragma: no cover - programming error
            raise ValueError(f"unknown record {kind!r}")
    return bytes(out)


def decode_records(body: bytes) -> Iterator[Record]:
    pos = 0
    while pos < len(body):
        kind = body[pos:pos + 1]
        pos += 1
        if kind in (b"N", b"D"):
            (n,) = _U16.unpack_from(body, pos)
            path = body[pos + 2:pos + 2 + n].decode()
            pos += 2 + n
            if kind == b"D":
                yield ("D", path)
                continue
            (n,) = _U16.unpack_from(body, pos)
            perms = _parse_perms(body[pos + 2:pos + 2 + n])
            pos += 2 + n
            (n,) = _U32.unpack_from(body, pos)
            value = body[pos + 4:pos + 4 + n]
            pos += 4 + n
            yield ("N", path, value, perms)
        elif kind == b"I":
            domid, target = _DOMAIN.unpack_from(body, pos)
            pos += _DOMAIN.size
            yield ("I", domid, None if target < 0 else target)
        elif kind == b"R":
            (domid,) = _U32.unpack_from(body, pos)
            pos += 4
            yield ("R", domid)
        else:
            raise ValueError(f"bad record kind {kind!r}")


def frame(body: bytes) -> bytes:
    return FRAME_HEADER.pack(len(body), zlib.crc32(body)) + body


def read_frames(data: bytes, start: int) -> tuple[list[bytes], int]:
    """Complete, checksummed frames from ``start``; also the offset where validity ends."""
    frames = []
    pos = start
    while len(data) - pos >= FRAME_HEADER.size:
        length, crc = FRAME_HEADER.unpack_from(data, pos)
        body = data[pos + FRAME_HEADER.size:pos + FRAME_HEADER.size + length]
        if len(body) != length or zlib.crc32(body) != crc:
            break
        frames.append(body)
        pos += FRAME_HEADER.size + length
    return frames, pos


class _Builder:
    """A mutable tree used only while loading, frozen into Nodes at the end (loading a
    big store record by record through path copying would be quadratic)."""

    def __init__(self) -> None:
        self.root: list = [b"", (PermEntry("n", 0),), {}]

    def set(self, path: str, value: bytes, perms: Perms) -> None:
        node = self.root
        if path != "/":
            for name in path[1:].split("/"):
                child = node[2].get(name)
                if child is None:
                    child = node[2][name] = [b"", node[1], {}]
                node = child
        node[0] = value
        node[1] = perms

    def delete(self, path: str) -> None:
        parts = path[1:].split("/")
        node = self.root
        for name in parts[:-1]:
            node = node[2].get(name)
            if node is None:
                return
        node[2].pop(parts[-1], None)

    def freeze(self, gen: int) -> Node:
        def fz(m: list) -> Node:
            return Node(m[0], m[1], {k: fz(v) for k, v in m[2].items()}, gen)
        return fz(self.root)


class Journal:
    """Snapshot + journal files in one folder; ``append`` buffers, ``flush`` makes durable."""

    def __init__(self, directory: Path, fsync: bool = True,
                 compact_bytes: int = 8 * 1024 * 1024) -> None:
        self.dir = Path(directory)
        self.fsync = fsync
        self.compact_bytes = compact_bytes
        self.snapshot_path = self.dir / "snapshot"
        self.journal_path = self.dir / "journal"
        self.epoch = 0
        self._fd = -1
        self._size = 0
        self._pending = bytearray()
        self._lock_fd = -1

    def _lock(self) -> None:
        """One daemon per data folder: a second one must not append to our journal."""
        fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(f"another xenstored is using {self.dir}") from None
        self._lock_fd = fd

    # --- loading -----------------------------------------------------------------------------
    def load(self, initial: Node) -> Loaded:
        """Read snapshot and journal; cut a torn journal tail; open the journal for append.
        With no files yet, ``initial`` becomes the first snapshot."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        if not self.snapshot_path.exists():
            self.epoch = 0
            self.write_snapshot(initial, {})
            return Loaded(initial, {})
        builder = _Builder()
        domains: dict[int, DomainRecord] = {}
        data = self.snapshot_path.read_bytes()
        magic, self.epoch = FILE_HEADER.unpack_from(data, 0)
        if magic != MAGIC:
            raise ValueError(f"{self.snapshot_path}: not a pyxen xenstore snapshot")
        frames, _ = read_frames(data, FILE_HEADER.size)
        count = self._apply(builder, domains, frames)
        jdata = self.journal_path.read_bytes() if self.journal_path.exists() else b""
        valid_end = FILE_HEADER.size
        if len(jdata) >= FILE_HEADER.size:
            jmagic, jepoch = FILE_HEADER.unpack_from(jdata, 0)
            if jmagic == MAGIC and jepoch == self.epoch:
                jframes, valid_end = read_frames(jdata, FILE_HEADER.size)
                count += self._apply(builder, domains, jframes)
                if valid_end != len(jdata):
                    log.warning("journal: cut %d bytes of torn tail", len(jdata) - valid_end)
            else:
                log.warning("journal: stale (epoch %s, snapshot %s), ignored",
                            jepoch, self.epoch)
                jdata = b""
        if len(jdata) < FILE_HEADER.size:
            self._new_journal()
        else:
            self._open_journal(valid_end)
        log.info("loaded %d records (epoch %d), %d domains", count, self.epoch, len(domains))
        return Loaded(builder.freeze(1), domains)

    @staticmethod
    def _apply(builder: _Builder, domains: dict[int, DomainRecord], frames: list[bytes]) -> int:
        n = 0
        for body in frames:
            for rec in decode_records(body):
                n += 1
                kind = rec[0]
                if kind == "N":
                    builder.set(rec[1], rec[2], rec[3])
                elif kind == "D":
                    builder.delete(rec[1])
                elif kind == "I":
                    domains[rec[1]] = DomainRecord(rec[1], rec[2])
                elif kind == "R":
                    domains.pop(rec[1], None)
        return n

    # --- writing -------------------------------------------------------------------------------
    def _sync_dir(self) -> None:
        if self.fsync:
            fd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _open_journal(self, size: int) -> None:
        fd = os.open(self.journal_path, os.O_WRONLY)
        os.ftruncate(fd, size)
        os.lseek(fd, size, os.SEEK_SET)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = fd
        self._size = size

    def _new_journal(self) -> None:
        tmp = self.dir / "journal.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, FILE_HEADER.pack(MAGIC, self.epoch))
        if self.fsync:
            os.fsync(fd)
        os.rename(tmp, self.journal_path)
        self._sync_dir()
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = fd
        self._size = FILE_HEADER.size

    def write_snapshot(self, root: Node, domains: dict[int, DomainRecord]) -> None:
        """Write the full state as epoch+1 and start an empty journal for it."""
        self.epoch += 1
        tmp = self.dir / "snapshot.tmp"
        with open(tmp, "wb") as f:
            f.write(FILE_HEADER.pack(MAGIC, self.epoch))
            chunk: list[Record] = []
            size = 0
            for parts, node in walk(root):
                chunk.append(("N", join(parts), node.value, node.perms))
                size += len(node.value) + 64
                if size > SNAPSHOT_CHUNK:
                    f.write(frame(encode_records(chunk)))
                    chunk, size = [], 0
            chunk.extend(("I", d.domid, d.target) for d in domains.values())
            f.write(frame(encode_records(chunk)))
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
        os.rename(tmp, self.snapshot_path)
        self._sync_dir()
        self._new_journal()

    def append(self, records: list[Record]) -> None:
        """Queue one commit (an atomic frame); durable only after ``flush``."""
        self._pending += frame(encode_records(records))

    @property
    def dirty(self) -> bool:
        return bool(self._pending)

    def flush(self) -> None:
        """Write queued frames and fdatasync: after this, they survive kill -9 and power loss."""
        if not self._pending:
            return
        data = bytes(self._pending)
        self._pending.clear()
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        if self.fsync:
            os.fdatasync(self._fd)
        self._size += len(data)

    @property
    def needs_compaction(self) -> bool:
        return self._size > self.compact_bytes

    def close(self) -> None:
        self.flush()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
