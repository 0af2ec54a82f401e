"""A thin ctypes binding to Debian's libxenstore.so.4 (Xen's own C client library), so
tests and the benchmark drive our daemon through the real C client loop and see its errno."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

XBT_NULL = 0


class LibXenstore:
    """xs_open/xs_read/xs_write/... on one handle; errors come back as OSError(errno)."""

    def __init__(self, socket_path: str | os.PathLike[str]) -> None:
        os.environ["XENSTORED_PATH"] = str(socket_path)
        name = ctypes.util.find_library("xenstore") or "libxenstore.so.4"
        self.lib = ctypes.CDLL(name, use_errno=True)
        lib = self.lib
        lib.xs_open.restype = ctypes.c_void_p
        lib.xs_open.argtypes = [ctypes.c_ulong]
        lib.xs_close.argtypes = [ctypes.c_void_p]
        lib.xs_read.restype = ctypes.c_void_p
        lib.xs_read.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_char_p,
                                ctypes.POINTER(ctypes.c_uint)]
        lib.xs_write.restype = ctypes.c_bool
        lib.xs_write.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_char_p,
                                 ctypes.c_void_p, ctypes.c_uint]
        lib.xs_rm.restype = ctypes.c_bool
        lib.xs_rm.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_char_p]
        lib.xs_transaction_start.restype = ctypes.c_uint32
        lib.xs_transaction_start.argtypes = [ctypes.c_void_p]
        lib.xs_transaction_end.restype = ctypes.c_bool
        lib.xs_transaction_end.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_bool]
        self.libc = ctypes.CDLL(ctypes.util.find_library("c"))
        self.libc.free.argtypes = [ctypes.c_void_p]
        self.h = lib.xs_open(0)
        if not self.h:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e), str(socket_path))
        self._len = ctypes.c_uint()

    def _fail(self, path: str) -> OSError:
        e = ctypes.get_errno()
        return OSError(e, os.strerror(e), path)

    def read(self, path: str, tx: int = XBT_NULL) -> bytes:
        p = self.lib.xs_read(self.h, tx, path.encode(), ctypes.byref(self._len))
        if not p:
            raise self._fail(path)
        data = ctypes.string_at(p, self._len.value)
        self.libc.free(p)
        return data

    def write(self, path: str, value: bytes, tx: int = XBT_NULL) -> None:
        if not self.lib.xs_write(self.h, tx, path.encode(), value, len(value)):
            raise self._fail(path)

    def rm(self, path: str, tx: int = XBT_NULL) -> None:
        if not self.lib.xs_rm(self.h, tx, path.encode()):
            raise self._fail(path)

    def transaction_start(self) -> int:
        t = self.lib.xs_transaction_start(self.h)
        if not t:
            raise self._fail("")
        return int(t)

    def transaction_end(self, tx: int, abort: bool = False) -> None:
        if not self.lib.xs_transaction_end(self.h, tx, abort):
            raise self._fail("")

    def close(self) -> None:
        if self.h:
            self.lib.xs_close(self.h)
            self.h = None

    def __enter__(self) -> "LibXenstore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def available() -> bool:
    return Path("/usr/lib/x86_64-linux-gnu/libxenstore.so.4").exists() or bool(
        ctypes.util.find_library("xenstore"))
