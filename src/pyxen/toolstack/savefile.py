"""xl's save-file container (tools/xl/xl.h ``struct save_file_header``, xl_saverestore.c): the
header a save file or a migration stream starts with, and the checks ``xl restore`` makes on it,
with xl's messages. Pure: bytes in, bytes out; the caller does the I/O.

Layout (host byte order, as xl writes it)::

    0   32  magic "Xen saved domain, xl format\\n \\0 \\r"
    32   4  byteorder 0x01020304
    36   4  mandatory_flags  (bit 0: the config is JSON; bit 1: stream v2)
    40   4  optional_flags   (0; never checked on restore)
    44   4  optional_data_len
    48   .  optional data: u32 config_len, then the config JSON with its trailing NUL

The domain stream follows the optional data. In Xen it is libxl's stream; in pyxen it is QEMU's
migration stream (docs/save-restore.md), so the files are not interchangeable with Xen's.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any, Protocol

MAGIC = b"Xen saved domain, xl format\n \0 \r"
BYTEORDER = 0x01020304
FLAG_JSON = 0x1
FLAG_STREAMV2 = 0x2
KNOWN_MANDATORY = FLAG_JSON | FLAG_STREAMV2
HEADER = struct.Struct("=32sIIII")  # native order, as xl writes it
assert HEADER.size == 48 and len(MAGIC) == 32


class Readable(Protocol):
    """Where a header is read from: a file, or xl migrate-receive's stdin (migration.py)."""

    def read(self, n: int, /) -> bytes: ...


class SaveFileError(ValueError):
    """A save file xl would refuse; str() is xl's message (one line)."""


@dataclass(frozen=True)
class SaveHeader:
    mandatory_flags: int
    optional_flags: int
    optional_data_len: int
    config: dict[str, Any] | None
    #: Where the domain stream starts.
    stream_offset: int

    def info(self) -> str:
        """xl's ``(info 0x%x/0x%x/%u)``."""
        return f"0x{self.mandatory_flags:x}/0x{self.optional_flags:x}/{self.optional_data_len}"


def encode(config: dict[str, Any]) -> bytes:
    """The header and optional data for ``config`` (always JSON, stream v2: flags 0x3)."""
    blob = json.dumps(config, indent=4).encode() + b"\0"
    optdata = struct.pack("=I", len(blob)) + blob
    return HEADER.pack(MAGIC, BYTEORDER, FLAG_JSON | FLAG_STREAMV2, 0, len(optdata)) + optdata


def info_of(header: bytes) -> str:
    """xl's ``(info 0x%x/0x%x/%u)`` of a header ``encode`` made."""
    _magic, _order, mandatory, optional, optlen = HEADER.unpack_from(header)
    return f"0x{mandatory:x}/0x{optional:x}/{optlen}"


def read_exactly(f: Readable, n: int, what: str, source: str) -> bytes:
    data = b""
    while len(data) < n:
        chunk = f.read(n - len(data))
        if not chunk:
            raise SaveFileError(f"file/stream truncated reading {what} from {source}")
        data += chunk
    return data


def decode(f: Readable, source: str) -> SaveHeader:
    """Read and check the header from ``f`` (positioned at its start), in xl's order: length,
    magic, byte order, mandatory flags, optional data, embedded config.

    :raise SaveFileError: with xl's message.
    """
    raw = read_exactly(f, HEADER.size, "header", source)
    magic, byteorder, mandatory, optional, optlen = HEADER.unpack(raw)
    if magic != MAGIC:
        raise SaveFileError("File has wrong magic number - corrupt or for a different tool?")
    if byteorder != BYTEORDER:
        raise SaveFileError("File has wrong byte order")
    unknown = mandatory & ~KNOWN_MANDATORY
    if unknown:
        raise SaveFileError(f"Savefile has mandatory flag(s) 0x{unknown:x} which are not supported; "
                            "need newer xl")
    optdata = read_exactly(f, optlen, "optdata", source)
    config = None
    if optlen:
        if len(optdata) < 4:
            raise SaveFileError("Savefile truncated.")
        (clen,) = struct.unpack_from("=I", optdata)
        if 4 + clen > len(optdata):
            raise SaveFileError("Savefile truncated.")
        text = optdata[4:4 + clen].rstrip(b"\0")
        if not mandatory & FLAG_JSON:
            raise SaveFileError("Savefile config is not JSON; pyxen restores only xl's JSON format")
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError) as err:
            raise SaveFileError(f"Savefile config is not valid JSON: {err}") from None
        if not isinstance(parsed, dict):
            raise SaveFileError("Savefile config is not a JSON object")
        config = parsed
    return SaveHeader(mandatory, optional, optlen, config, HEADER.size + optlen)
