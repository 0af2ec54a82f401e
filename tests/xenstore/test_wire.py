"""wire.py: the xs_wire.h codec."""

import pytest

from pyxen.xenstore import errors
from pyxen.xenstore.wire import (HEADER, PAYLOAD_MAX, XSD_ERRORS, FrameError, Op, Packet,
                                 PacketReader, encode, split_strings)


def test_op_numbers_follow_xs_wire_h() -> None:
    assert [Op.CONTROL, Op.DIRECTORY, Op.READ, Op.GET_PERMS, Op.WATCH, Op.UNWATCH] == \
        list(range(6))
    assert (Op.TRANSACTION_START, Op.TRANSACTION_END, Op.INTRODUCE, Op.RELEASE) == (6, 7, 8, 9)
    assert (Op.GET_DOMAIN_PATH, Op.WRITE, Op.MKDIR, Op.RM, Op.SET_PERMS) == (10, 11, 12, 13, 14)
    assert (Op.WATCH_EVENT, Op.ERROR, Op.IS_DOMAIN_INTRODUCED, Op.RESUME) == (15, 16, 17, 18)
    assert (Op.SET_TARGET, Op.RESET_WATCHES, Op.DIRECTORY_PART) == (19, 21, 22)
    assert Op.INVALID == 0xFFFF


def test_xsd_errors_table_order() -> None:
    assert XSD_ERRORS[:5] == ("EINVAL", "EACCES", "EEXIST", "EISDIR", "ENOENT")
    assert XSD_ERRORS[-3:] == ("EISCONN", "E2BIG", "EPERM")


def test_every_error_class_has_a_wire_name_in_the_table() -> None:
    for cls in errors.ALL_ERRORS:
        assert cls.wire in XSD_ERRORS, cls
    assert errors.XenstoreError.wire in XSD_ERRORS


def test_error_from_wire_maps_unknown_to_einval() -> None:
    assert isinstance(errors.error_from_wire("ENOENT"), errors.NoEntry)
    assert isinstance(errors.error_from_wire("EQUOTA"), errors.InvalidArgument)


def test_header_is_four_little_endian_u32() -> None:
    data = encode(Op.READ, 7, 3, b"/a\0")
    assert data[:16] == bytes([2, 0, 0, 0, 7, 0, 0, 0, 3, 0, 0, 0, 3, 0, 0, 0])
    assert HEADER.size == 16


def test_reader_reassembles_split_and_batched_packets() -> None:
    stream = encode(Op.READ, 1, 0, b"/a\0") + encode(Op.WRITE, 2, 5, b"/b\0xy")
    for cut in range(len(stream) + 1):
        r = PacketReader()
        got = r.feed(stream[:cut]) + r.feed(stream[cut:])
        assert got == [Packet(2, 1, 0, b"/a\0"), Packet(11, 2, 5, b"/b\0xy")]
        assert r.pending == 0


def test_reader_byte_by_byte() -> None:
    stream = encode(Op.DIRECTORY, 9, 0, b"/\0") * 3
    r = PacketReader()
    got = []
    for i in range(len(stream)):
        got += r.feed(stream[i:i + 1])
    assert len(got) == 3


def test_reader_accepts_max_and_rejects_oversized_payload() -> None:
    r = PacketReader()
    assert len(r.feed(encode(Op.WRITE, 1, 0, b"x" * PAYLOAD_MAX))) == 1
    with pytest.raises(FrameError):
        r.feed(HEADER.pack(Op.WRITE, 1, 0, PAYLOAD_MAX + 1))


def test_split_strings() -> None:
    assert split_strings(b"a\0b\0") == [b"a", b"b"]
    assert split_strings(b"") == []
    assert split_strings(b"a\0b") == [b"a", b"b"]


def test_reader_single_whole_packet_and_oversized_header_alone() -> None:
    """The one-packet-per-read shortcut returns what the general path would, and an
    oversized length is refused there too, also when the header arrives alone."""
    r = PacketReader()
    assert r.feed(encode(Op.READ, 4, 2, b"/x\0")) == [Packet(2, 4, 2, b"/x\0")]
    assert r.feed(encode(Op.READ, 5, 0, b"")) == [Packet(2, 5, 0, b"")]
    assert r.pending == 0
    with pytest.raises(FrameError):
        PacketReader(max_payload=8).feed(encode(Op.WRITE, 1, 0, b"x" * 9))
    with pytest.raises(FrameError):
        PacketReader().feed(HEADER.pack(Op.WRITE, 1, 0, PAYLOAD_MAX + 1) + b"x" * (PAYLOAD_MAX + 1))
