"""vhost-user codec (docs/interop/vhost-user.rst): framing, fds, payload layouts, replies."""

from __future__ import annotations

import struct

import pytest

from pyxen.backends.common.vhost_user import (FLAG_NEED_REPLY, VERSION, ConfigRequest, MemoryRegion,
                                              MessageReader, Request, VhostUserError, VringAddr,
                                              VringState, encode, encode_reply, pack_mem_table,
                                              unpack_mem_table, vring_file)


def test_reply_flags_are_exactly_version_and_reply() -> None:
    raw = encode_reply(Request.GET_FEATURES, struct.pack("<Q", 1 << 32))
    assert struct.unpack_from("<III", raw) == (1, 0x5, 8)


def test_split_and_joined_messages() -> None:
    a = encode(Request.SET_OWNER)
    b = encode(Request.SET_FEATURES, struct.pack("<Q", 7), VERSION | FLAG_NEED_REPLY)
    r = MessageReader()
    stream = a + b
    msgs = []
    for i in range(len(stream)):
        msgs += r.feed(stream[i:i + 1])
    assert [m.request for m in msgs] == [Request.SET_OWNER, Request.SET_FEATURES]
    assert msgs[1].u64() == 7 and msgs[1].need_reply and not msgs[0].need_reply


def test_fds_belong_to_the_last_message_of_a_read() -> None:
    """Linux ends a read after the fd-carrying message; earlier fd-less ones share the read."""
    r = MessageReader()
    call = encode(Request.SET_VRING_CALL, struct.pack("<Q", 0))
    msgs = r.feed(encode(Request.SET_OWNER) + call, [42])
    assert msgs[0].fds == [] and msgs[1].fds == [42]
    assert vring_file(msgs[1]) == (0, 42)


def test_nofd_bit() -> None:
    r = MessageReader()
    (m,) = r.feed(encode(Request.SET_VRING_CALL, struct.pack("<Q", 1 | 0x100)))
    assert vring_file(m) == (1, None)


def test_missing_fd_is_an_error() -> None:
    (m,) = MessageReader().feed(encode(Request.SET_VRING_KICK, struct.pack("<Q", 0)))
    with pytest.raises(VhostUserError):
        vring_file(m)


def test_bad_version_and_oversize() -> None:
    with pytest.raises(VhostUserError):
        MessageReader().feed(struct.pack("<III", 1, 2, 0))
    with pytest.raises(VhostUserError):
        MessageReader().feed(struct.pack("<III", 1, 1, 1 << 20))


def test_payload_layouts() -> None:
    regions = [MemoryRegion(0, 0xA0000, 0x7F0000000000, 0), MemoryRegion(0xC0000, 0xFF40000, 0x7F00000C0000, 0xC0000)]
    assert unpack_mem_table(pack_mem_table(regions)) == regions
    addr = VringAddr.unpack(struct.pack("<IIQQQQ", 1, 0, 10, 20, 30, 0))
    assert (addr.desc, addr.used, addr.avail) == (10, 20, 30)  # desc, used, avail order
    assert VringState.unpack(VringState(1, 256).pack()) == VringState(1, 256)
    req = ConfigRequest.unpack(struct.pack("<III", 0, 57, 0))
    assert req.size == 57 and req.data == b""
    with pytest.raises(VhostUserError):
        unpack_mem_table(struct.pack("<II", 9, 0))
