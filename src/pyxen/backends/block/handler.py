"""blkback's ring work: virtio-blk requests from a virtqueue to the target fd and back.

Spec: virtio 1.1 5.2.6 "Device Operation". A request is a readable 16-byte header
``<IIQ`` (type, ioprio, sector), data, and a writable status byte that is the **last** writable
byte; segment boundaries carry no meaning (VERSION_1 implies ANY_LAYOUT). Reads and writes go
straight between the guest's pages and the file with ``preadv``/``pwritev`` (no copy in Python);
FLUSH is ``fdatasync`` before the status is written, so a flush the guest saw completed is on
disk even if this process is killed right after.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import struct

from ..common.virtqueue import Chain, IovChain, Virtqueue
from ..common.virtqueue import split_views as split
from . import (SECTOR_SIZE, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD,
               VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT)

log = logging.getLogger(__name__)

HEADER = struct.Struct("<IIQ")
DISCARD_SEG = struct.Struct("<QII")
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
BLKDISCARD = 0x1277  # _IO(0x12, 119)
#: The C library (fallocate), from the process's own symbols: ctypes.util.find_library("c")
#: would run `ldconfig -p` in a subprocess at every import.
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
# preadv/pwritev on an iovec array built from the descriptor table (IovChain): ctypes releases
# the GIL around the call as os.preadv does.
for _fn in (_libc.preadv, _libc.pwritev):
    _fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int64]
    _fn.restype = ctypes.c_ssize_t
_preadv, _pwritev = _libc.preadv, _libc.pwritev


def gather(views: list[memoryview]) -> bytes:
    return b"".join(bytes(v) for v in views)


def punch_hole(fd: int, offset: int, length: int, is_block_device: bool) -> None:
    """DISCARD: free the range (a hole in a file, BLKDISCARD on a device)."""
    if is_block_device:
        fcntl.ioctl(fd, BLKDISCARD, struct.pack("<QQ", offset, length))
        return
    if _libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class BlockHandler:
    """Serves requests of one vbd; no state beyond the target."""

    def __init__(self, fd: int, size: int, readonly: bool, serial: bytes, is_block_device: bool) -> None:
        self.fd = fd
        self.size = size
        self.readonly = readonly
        self.serial = serial.ljust(20, b"\0")
        self.is_block_device = is_block_device
        self.stats = {"read": 0, "write": 0, "flush": 0, "discard": 0, "error": 0}

    def process(self, vq: Virtqueue) -> int:
        """Serve every available request; return how many were completed."""
        done = 0
        pop = vq.pop_iov
        while (chain := pop()) is not None:
            try:
                if type(chain) is IovChain:
                    written = self.request_iov(chain)
                else:
                    written = self.request(chain)  # type: ignore[arg-type]
            except Exception:  # a bug here must not leave the chain unused (the ring would stall)
                log.exception("request on head %d failed", chain.head)
                self.stats["error"] += 1
                written = 0
                if type(chain) is IovChain:
                    if chain.readable < len(chain.lens) and chain.lens[-1]:
                        chain.mv[chain.addrs[-1] + chain.delta + chain.lens[-1] - 1] = VIRTIO_BLK_S_IOERR
                        written = 1
                elif chain.writable and len(chain.writable[-1]):  # type: ignore[union-attr]
                    chain.writable[-1][-1] = VIRTIO_BLK_S_IOERR  # type: ignore[union-attr]
                    written = 1
            finally:
                chain.release()
            vq.push(chain.head, written)
            done += 1
        return done

    def request_iov(self, chain: IovChain) -> int:
        """Serve a read or write in Linux's layout (16-byte header, data, 1-byte status) with
        one preadv/pwritev on the chain's iovecs; anything else goes to ``request``."""
        lens, nr = chain.lens, chain.readable
        n = len(lens)
        if lens[0] == 16 and lens[-1] == 1 and nr < n:
            mv, d, addrs = chain.mv, chain.delta, chain.addrs
            rtype, _ioprio, sector = HEADER.unpack_from(mv, addrs[0] + d)
            if rtype == VIRTIO_BLK_T_IN and nr == 1 or rtype == VIRTIO_BLK_T_OUT and nr == n - 1:
                written = 0
                try:
                    if rtype == VIRTIO_BLK_T_IN:
                        written = self._iov_io(_preadv, chain, sector)
                        status = VIRTIO_BLK_S_OK
                        self.stats["read"] += 1
                    elif self.readonly:
                        status = VIRTIO_BLK_S_IOERR
                    else:
                        self._iov_io(_pwritev, chain, sector)
                        status = VIRTIO_BLK_S_OK
                        self.stats["write"] += 1
                except OSError as err:
                    log.warning("request type %d sector %d failed: %s", rtype, sector, err)
                    status, written = VIRTIO_BLK_S_IOERR, 0
                if status == VIRTIO_BLK_S_IOERR:
                    self.stats["error"] += 1
                mv[addrs[-1] + d] = status
                return written + 1
        views = chain.as_chain()
        try:
            return self.request(views)
        finally:
            views.release()

    def _iov_io(self, fn: "ctypes._NamedFuncPointer", chain: IovChain, sector: int) -> int:
        """One preadv/pwritev of the chain's data descriptors (all but the first and last);
        a short transfer is finished with views."""
        lens = chain.lens
        count = len(lens) - 2
        total = sum(lens) - 17
        off = sector * SECTOR_SIZE
        if off + total > self.size:
            raise OSError(5, f"I/O beyond the end: sector {sector} + {total} bytes")
        if count == 1:  # one buffer (a 4 KiB request): os.preadv costs less than a ctypes call
            a, d = chain.addrs[1] + chain.delta, chain.mv
            done = (os.preadv if fn is _preadv else os.pwritev)(self.fd, [d[a:a + total]], off)
        else:
            done = fn(self.fd, chain.iov[16:16 + 16 * count], count, off) if count else 0
            if done < 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
        if done < total:
            views = chain.views(1, -1)
            io = os.preadv if fn is _preadv else os.pwritev
            try:
                while done < total:
                    _, rest = split(views, done)
                    n = io(self.fd, rest, off + done)
                    if n <= 0:
                        raise OSError(5, f"short transfer at sector {sector}")
                    done += n
            finally:
                for v in views:
                    v.release()
        return done

    def request(self, chain: Chain) -> int:
        """Serve one chain; return the bytes written into guest buffers (data + status)."""
        readable, writable = chain.readable, chain.writable
        if readable and writable and len(readable[0]) == 16 and len(writable[-1]) == 1:
            # Linux's layout: a 16-byte header descriptor and a 1-byte status one.
            rtype, _ioprio, sector = HEADER.unpack(readable[0])
            data_out, data_in, status_view = readable[1:], writable[:-1], writable[-1]
        else:
            hdr_views, data_out = split(readable, HEADER.size)
            data_in, status_views = split(writable, chain.writable_len - 1)
            if not status_views or sum(map(len, hdr_views)) < HEADER.size:
                log.error("malformed request: header %d bytes, %d writable", chain.readable_len,
                          chain.writable_len)
                return 0
            rtype, _ioprio, sector = HEADER.unpack(gather(hdr_views))
            status_view = status_views[-1]
        status, written = VIRTIO_BLK_S_OK, 0
        try:
            if rtype == VIRTIO_BLK_T_IN:
                written = self._read(sector, data_in)
            elif rtype == VIRTIO_BLK_T_OUT:
                status = self._write(sector, data_out)
            elif rtype == VIRTIO_BLK_T_FLUSH:
                if not self.readonly:
                    os.fdatasync(self.fd)
                self.stats["flush"] += 1
            elif rtype == VIRTIO_BLK_T_GET_ID:
                written = self._copy_in(self.serial, data_in)
            elif rtype == VIRTIO_BLK_T_DISCARD:
                status = self._discard(gather(data_out))
            else:
                status = VIRTIO_BLK_S_UNSUPP
        except OSError as err:
            log.warning("request type %d sector %d failed: %s", rtype, sector, err)
            status = VIRTIO_BLK_S_IOERR
        if status == VIRTIO_BLK_S_IOERR:
            self.stats["error"] += 1
        status_view[-1] = status
        return written + 1

    def _in_range(self, sector: int, length: int) -> bool:
        return sector * SECTOR_SIZE + length <= self.size

    def _read(self, sector: int, views: list[memoryview]) -> int:
        length = sum(map(len, views))
        off, done = sector * SECTOR_SIZE, 0
        if off + length > self.size:
            raise OSError(5, f"read beyond the end: sector {sector} + {length} bytes")
        while done < length:  # one preadv in the usual case
            n = os.preadv(self.fd, views, off + done)
            if n <= 0:
                raise OSError(5, "short read")
            done += n
            if done < length:
                _, views = split(views, n)
        self.stats["read"] += 1
        return done

    def _write(self, sector: int, views: list[memoryview]) -> int:
        if self.readonly:
            return VIRTIO_BLK_S_IOERR
        length = sum(map(len, views))
        off, done = sector * SECTOR_SIZE, 0
        if off + length > self.size:
            return VIRTIO_BLK_S_IOERR
        while done < length:  # one pwritev in the usual case
            n = os.pwritev(self.fd, views, off + done)
            if n <= 0:
                raise OSError(5, "short write")
            done += n
            if done < length:
                _, views = split(views, n)
        self.stats["write"] += 1
        return VIRTIO_BLK_S_OK

    def _discard(self, payload: bytes) -> int:
        if self.readonly:
            return VIRTIO_BLK_S_IOERR
        for i in range(len(payload) // DISCARD_SEG.size):
            sector, count, _flags = DISCARD_SEG.unpack_from(payload, i * DISCARD_SEG.size)
            if not self._in_range(sector, count * SECTOR_SIZE):
                return VIRTIO_BLK_S_IOERR
            punch_hole(self.fd, sector * SECTOR_SIZE, count * SECTOR_SIZE, self.is_block_device)
        self.stats["discard"] += 1
        return VIRTIO_BLK_S_OK

    @staticmethod
    def _copy_in(data: bytes, views: list[memoryview]) -> int:
        total = 0
        for v in views:
            n = min(len(v), len(data) - total)
            if n <= 0:
                break
            v[:n] = data[total:total + n]
            total += n
        return total
