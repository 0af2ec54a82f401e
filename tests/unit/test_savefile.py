"""xl's save-file container: byte layout as xl_saverestore.c writes it, and xl restore's checks
in xl's order and words (docs: shared/docs/migration.md §1)."""

from __future__ import annotations

import io
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyxen.toolstack.savefile import HEADER, MAGIC, SaveFileError, decode, encode


def test_layout_is_xls() -> None:
    blob = encode({"c_info": {"name": "g"}})
    assert blob[:32] == b"Xen saved domain, xl format\n \x00 \r"
    assert blob[:32].hex(" ") == ("58 65 6e 20 73 61 76 65 64 20 64 6f 6d 61 69 6e 2c 20 78 6c 20 66 "
                                  "6f 72 6d 61 74 0a 20 00 20 0d")
    byteorder, mandatory, optional, optlen = struct.unpack_from("=IIII", blob, 32)
    assert (byteorder, mandatory, optional) == (0x01020304, 0x3, 0)
    assert blob[32:36] == b"\x04\x03\x02\x01"  # x86: little-endian host order
    (clen,) = struct.unpack_from("=I", blob, 48)
    assert optlen == 4 + clen and len(blob) == 48 + optlen
    assert blob[-1:] == b"\0"  # the config keeps its C terminator


@given(st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=5),
       st.binary(max_size=64))
def test_round_trip_and_stream_offset(config: dict[str, object], stream: bytes) -> None:
    f = io.BytesIO(encode(config) + stream)
    h = decode(f, "f")
    assert h.config == config and h.info() == f"0x3/0x0/{h.optional_data_len}"
    assert f.read() == stream and h.stream_offset == len(encode(config))


def _bad(blob: bytes) -> str:
    with pytest.raises(SaveFileError) as err:
        decode(io.BytesIO(blob), "/tmp/s")
    assert "\n" not in str(err.value)
    return str(err.value)


def test_restore_checks_in_xls_order_with_xls_words() -> None:
    good = encode({"a": 1})
    assert _bad(good[:20]) == "file/stream truncated reading header from /tmp/s"
    assert _bad(b"Y" + good[1:]) == "File has wrong magic number - corrupt or for a different tool?"
    swapped = good[:32] + struct.pack(">I", 0x01020304) + good[36:]
    assert _bad(swapped) == "File has wrong byte order"
    # magic first: a file wrong in both ways is reported for its magic
    assert _bad(b"Y" + swapped[1:]).startswith("File has wrong magic")
    flags = good[:36] + struct.pack("=I", 0x7) + good[40:]
    assert _bad(flags) == "Savefile has mandatory flag(s) 0x4 which are not supported; need newer xl"
    assert _bad(good[:60]) == "file/stream truncated reading optdata from /tmp/s"
    short = bytearray(good)
    struct.pack_into("=I", short, 48, 10_000)
    assert _bad(bytes(short)) == "Savefile truncated."
    optional = good[:40] + struct.pack("=I", 0xFFFF) + good[44:]
    assert decode(io.BytesIO(optional), "s").optional_flags == 0xFFFF  # never checked


def test_header_without_config() -> None:
    blob = HEADER.pack(MAGIC, 0x01020304, 0x2, 0, 0)
    h = decode(io.BytesIO(blob), "s")
    assert h.config is None and h.stream_offset == 48
