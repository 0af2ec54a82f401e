"""The xenstore wire format: a 16-byte header and at most 4096 payload bytes.

Spec: xen/include/public/io/xs_wire.h (``struct xsd_sockmsg``, ``enum xsd_sockmsg_type``,
``xsd_errors[]``, ``XENSTORE_PAYLOAD_MAX``) and docs/misc/xenstore.txt.  This module is a pure
codec: it never touches a socket, so the Unix-socket transport, the client and the tests share
it (a ring transport would too).
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import NamedTuple

HEADER = struct.Struct("<IIII")
HEADER_SIZE = HEADER.size
#: XENSTORE_PAYLOAD_MAX: "violating this is very bad" -- the connection is dropped.
PAYLOAD_MAX = 4096
#: XENSTORE_ABS_PATH_MAX / XENSTORE_REL_PATH_MAX (the daemon enforces ``path_max`` from config).
ABS_PATH_MAX = 3072
REL_PATH_MAX = 2048
#: DOMID_SELF: IS_DOMAIN_INTRODUCED answers T for it.
DOMID_SELF = 0x7FF0


class Op(IntEnum):
    """``enum xsd_sockmsg_type``, in xs_wire.h order (values are the wire numbers)."""

    CONTROL = 0  # alias DEBUG
    DIRECTORY = 1
    READ = 2
    GET_PERMS = 3
    WATCH = 4
    UNWATCH = 5
    TRANSACTION_START = 6
    TRANSACTION_END = 7
    INTRODUCE = 8
    RELEASE = 9
    GET_DOMAIN_PATH = 10
    WRITE = 11
    MKDIR = 12
    RM = 13
    SET_PERMS = 14
    WATCH_EVENT = 15
    ERROR = 16
    IS_DOMAIN_INTRODUCED = 17
    RESUME = 18
    SET_TARGET = 19
    RESTRICT = 20  # removed in Xen 4.9: answered with ENOSYS
    RESET_WATCHES = 21
    DIRECTORY_PART = 22
    GET_FEATURE = 23
    SET_FEATURE = 24
    GET_QUOTA = 25
    SET_QUOTA = 26
    INVALID = 0xFFFF


#: ``xsd_errors[]`` in table order; the table may only grow at its end.
XSD_ERRORS: tuple[str, ...] = (
    "EINVAL", "EACCES", "EEXIST", "EISDIR", "ENOENT", "ENOMEM", "ENOSPC", "EIO",
    "ENOTEMPTY", "ENOSYS", "EROFS", "EBUSY", "EAGAIN", "EISCONN", "E2BIG", "EPERM",
)

OK = b"OK\0"


class Packet(NamedTuple):
    """One message, either direction. ``op`` is an int so unknown types survive decoding."""

    op: int
    req_id: int
    tx_id: int
    payload: bytes


class FrameError(Exception):
    """The peer broke framing (payload length > PAYLOAD_MAX): drop the connection."""


def encode(op: int, req_id: int, tx_id: int, payload: bytes) -> bytes:
    """One message as bytes (header + payload)."""
    return HEADER.pack(op, req_id, tx_id, len(payload)) + payload


def encode_error(req_id: int, tx_id: int, name: str) -> bytes:
    return encode(Op.ERROR, req_id, tx_id, name.encode() + b"\0")


def encode_watch_event(path: str, token: bytes) -> bytes:
    """An unsolicited WATCH_EVENT (req_id 0, tx_id 0)."""
    return encode(Op.WATCH_EVENT, 0, 0, path.encode() + b"\0" + token + b"\0")


class PacketReader:
    """Reassembles packets from a byte stream; no I/O.

    ``feed`` returns every complete packet; a header announcing more than PAYLOAD_MAX
    raises FrameError (the caller closes the connection, as C xenstored does).
    """

    __slots__ = ("_buf", "max_payload")

    def __init__(self, max_payload: int = PAYLOAD_MAX) -> None:
        self._buf = b""
        self.max_payload = max_payload

    @property
    def pending(self) -> int:
        """Bytes of an incomplete packet held back."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Packet]:
        if not self._buf and len(data) >= HEADER_SIZE:
            # The common case, one whole request per read: no slicing bookkeeping.
            op, req_id, tx_id, length = HEADER.unpack_from(data)
            if len(data) == HEADER_SIZE + length and length <= self.max_payload:
                return [Packet(op, req_id, tx_id, data[HEADER_SIZE:])]
        buf = self._buf + data if self._buf else data
        out: list[Packet] = []
        pos = 0
        end = len(buf)
        unpack = HEADER.unpack_from
        while end - pos >= HEADER_SIZE:
            op, req_id, tx_id, length = unpack(buf, pos)
            if length > self.max_payload:
                self._buf = b""
                raise FrameError(f"payload length {length} > {self.max_payload}")
            stop = pos + HEADER_SIZE + length
            if stop > end:
                break
            out.append(Packet(op, req_id, tx_id, buf[pos + HEADER_SIZE:stop]))
            pos = stop
        self._buf = buf[pos:] if pos < end else b""
        return out


def split_strings(payload: bytes) -> list[bytes]:
    """NUL-terminated strings of a payload, without the terminators; a trailing fragment
    without NUL is kept as the last element (callers that require NULs check first)."""
    parts = payload.split(b"\0")
    if parts and parts[-1] == b"":
        parts.pop()
    return parts


def join_strings(items: list[bytes] | tuple[bytes, ...]) -> bytes:
    """Each item followed by a NUL (DIRECTORY / GET_PERMS reply shape)."""
    return b"".join(i + b"\0" for i in items)
