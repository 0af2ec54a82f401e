"""The vhost-user wire protocol, as pure data: no sockets, no asyncio (STYLE.md item 6).

Spec: QEMU docs/interop/vhost-user.rst ("Message Specification", "Front-end message types"),
checked against hw/virtio/vhost-user.c of QEMU 7.2 and qemu-storage-daemon's libvhost-user.
A message is a 12-byte header ``u32 request; u32 flags; u32 size`` (native endian, little on
x86) and ``size`` payload bytes; file descriptors travel beside it as SCM_RIGHTS, so the codec
takes them as a list and the transport (transport.py) does the ``recvmsg``.

``MessageReader.feed(data, fds)`` turns a byte stream into ``Message`` objects; ``encode_reply``
builds the bytes of a back-end reply. Payload layouts are small frozen dataclasses with
``unpack``/``pack`` so the session code never indexes raw bytes.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

HEADER = struct.Struct("<III")
#: Protocol version in flags bits 0-1; QEMU accepts a reply only if flags == VERSION | REPLY.
VERSION = 0x1
FLAG_REPLY = 0x4
FLAG_NEED_REPLY = 0x8
#: Largest payload QEMU sends (a memory table of 8 regions is 264 bytes; config is <= 256+12).
#: A bigger size means a desynchronised or hostile peer: the transport drops the connection.
MAX_PAYLOAD = 4096
#: SCM_RIGHTS fds per message: VHOST_MEMORY_BASELINE_NREGIONS in vhost-user.c.
MAX_FDS = 8


class VhostUserError(Exception):
    """A malformed message from the front-end; the session cannot go on."""


class Request(enum.IntEnum):
    """VhostUserRequest (front-end to back-end), numbered as in vhost-user.rst."""

    GET_FEATURES = 1
    SET_FEATURES = 2
    SET_OWNER = 3
    RESET_OWNER = 4
    SET_MEM_TABLE = 5
    SET_LOG_BASE = 6
    SET_LOG_FD = 7
    SET_VRING_NUM = 8
    SET_VRING_ADDR = 9
    SET_VRING_BASE = 10
    GET_VRING_BASE = 11
    SET_VRING_KICK = 12
    SET_VRING_CALL = 13
    SET_VRING_ERR = 14
    GET_PROTOCOL_FEATURES = 15
    SET_PROTOCOL_FEATURES = 16
    GET_QUEUE_NUM = 17
    SET_VRING_ENABLE = 18
    SEND_RARP = 19
    NET_SET_MTU = 20
    SET_SLAVE_REQ_FD = 21
    IOTLB_MSG = 22
    SET_VRING_ENDIAN = 23
    GET_CONFIG = 24
    SET_CONFIG = 25
    CREATE_CRYPTO_SESSION = 26
    CLOSE_CRYPTO_SESSION = 27
    POSTCOPY_ADVISE = 28
    POSTCOPY_LISTEN = 29
    POSTCOPY_END = 30
    GET_INFLIGHT_FD = 31
    SET_INFLIGHT_FD = 32
    GPU_SET_SOCKET = 33
    RESET_DEVICE = 34
    VRING_KICK = 35
    GET_MAX_MEM_SLOTS = 36
    ADD_MEM_REG = 37
    REM_MEM_REG = 38
    SET_STATUS = 39
    GET_STATUS = 40


class Feature(enum.IntFlag):
    """Transport feature bits of GET/SET_FEATURES (virtio spec 6, vhost.h)."""

    NOTIFY_ON_EMPTY = 1 << 24
    LOG_ALL = 1 << 26
    ANY_LAYOUT = 1 << 27
    RING_INDIRECT_DESC = 1 << 28
    RING_EVENT_IDX = 1 << 29
    PROTOCOL_FEATURES = 1 << 30
    VERSION_1 = 1 << 32


class ProtocolFeature(enum.IntFlag):
    """VHOST_USER_PROTOCOL_F_* bits of GET/SET_PROTOCOL_FEATURES."""

    MQ = 1 << 0
    LOG_SHMFD = 1 << 1
    RARP = 1 << 2
    REPLY_ACK = 1 << 3
    NET_MTU = 1 << 4
    SLAVE_REQ = 1 << 5
    CROSS_ENDIAN = 1 << 6
    CONFIG = 1 << 9
    INFLIGHT_SHMFD = 1 << 12
    RESET_DEVICE = 1 << 13
    CONFIGURE_MEM_SLOTS = 1 << 15
    STATUS = 1 << 16


#: Requests that always carry a reply, whatever NEED_REPLY says (vhost-user.rst).
REPLY_REQUESTS = frozenset({
    Request.GET_FEATURES, Request.GET_PROTOCOL_FEATURES, Request.GET_VRING_BASE,
    Request.GET_QUEUE_NUM, Request.GET_CONFIG, Request.GET_MAX_MEM_SLOTS, Request.SET_LOG_BASE,
    Request.GET_INFLIGHT_FD, Request.GET_STATUS,
})

#: ``struct vhost_vring_addr`` flags bit 0: log the used ring's writes at log_guest_addr.
VHOST_VRING_F_LOG = 1 << 0

#: Bit 8 of a vring-file u64 payload: no fd follows, poll instead (vhost-user.rst, "vring file").
VRING_NOFD_MASK = 1 << 8
VRING_IDX_MASK = 0xFF


@dataclass
class Message:
    """One front-end message: its request number, flags, payload and fds (the owner closes them)."""

    request: int
    flags: int
    payload: bytes
    fds: list[int] = field(default_factory=list)

    @property
    def need_reply(self) -> bool:
        return bool(self.flags & FLAG_NEED_REPLY)

    @property
    def name(self) -> str:
        try:
            return Request(self.request).name
        except ValueError:
            return f"REQUEST_{self.request}"

    def u64(self) -> int:
        if len(self.payload) < 8:
            raise VhostUserError(f"{self.name}: payload of {len(self.payload)} bytes, need 8")
        return int(struct.unpack_from("<Q", self.payload)[0])


@dataclass(frozen=True)
class VringState:
    """``struct vhost_vring_state``: SET_VRING_NUM/BASE/ENABLE, GET_VRING_BASE."""

    index: int
    num: int
    FMT = struct.Struct("<II")

    @classmethod
    def unpack(cls, data: bytes) -> "VringState":
        if len(data) < cls.FMT.size:
            raise VhostUserError("short vring state")
        return cls(*cls.FMT.unpack_from(data))

    def pack(self) -> bytes:
        return self.FMT.pack(self.index, self.num)


@dataclass(frozen=True)
class VringAddr:
    """``struct vhost_vring_addr``: note the order desc, used, avail; addresses are QEMU VAs."""

    index: int
    flags: int
    desc: int
    used: int
    avail: int
    log: int
    FMT = struct.Struct("<IIQQQQ")

    @classmethod
    def unpack(cls, data: bytes) -> "VringAddr":
        if len(data) < cls.FMT.size:
            raise VhostUserError("short vring address")
        return cls(*cls.FMT.unpack_from(data))


@dataclass(frozen=True)
class LogArea:
    """SET_LOG_BASE payload ``VhostUserLog``: ``u64 mmap_size, mmap_offset`` of the log fd."""

    size: int
    offset: int
    FMT = struct.Struct("<QQ")

    @classmethod
    def unpack(cls, data: bytes) -> "LogArea":
        if len(data) < cls.FMT.size:
            raise VhostUserError("short log area")
        size, offset = cls.FMT.unpack_from(data)
        if not 0 < size <= 1 << 40 or offset > 1 << 48:
            raise VhostUserError(f"log area of {size} bytes at {offset}")
        return cls(size, offset)

    def pack(self) -> bytes:
        return self.FMT.pack(self.size, self.offset)


@dataclass(frozen=True)
class MemoryRegion:
    """One ``VhostUserMemoryRegion``: a slice of guest RAM and where its fd maps it."""

    guest_phys_addr: int
    memory_size: int
    userspace_addr: int
    mmap_offset: int
    FMT = struct.Struct("<QQQQ")


def unpack_mem_table(data: bytes) -> list[MemoryRegion]:
    """SET_MEM_TABLE payload: ``u32 nregions; u32 padding;`` then nregions regions."""
    if len(data) < 8:
        raise VhostUserError("short memory table")
    (n,) = struct.unpack_from("<I", data)
    if n > MAX_FDS or len(data) < 8 + n * MemoryRegion.FMT.size:
        raise VhostUserError(f"memory table of {n} regions in {len(data)} bytes")
    return [MemoryRegion(*MemoryRegion.FMT.unpack_from(data, 8 + i * MemoryRegion.FMT.size))
            for i in range(n)]


def pack_mem_table(regions: list[MemoryRegion]) -> bytes:
    """The front-end side of SET_MEM_TABLE (tests and tools use it)."""
    return struct.pack("<II", len(regions), 0) + b"".join(
        MemoryRegion.FMT.pack(r.guest_phys_addr, r.memory_size, r.userspace_addr, r.mmap_offset)
        for r in regions)


@dataclass(frozen=True)
class ConfigRequest:
    """GET_CONFIG/SET_CONFIG payload: ``u32 offset, size, flags`` then ``size`` bytes."""

    offset: int
    size: int
    flags: int
    data: bytes
    FMT = struct.Struct("<III")

    @classmethod
    def unpack(cls, data: bytes) -> "ConfigRequest":
        if len(data) < cls.FMT.size:
            raise VhostUserError("short config request")
        off, size, flags = cls.FMT.unpack_from(data)
        if size > 256:
            raise VhostUserError(f"config size {size} > 256")
        return cls(off, size, flags, data[cls.FMT.size:cls.FMT.size + size])

    def pack(self) -> bytes:
        return self.FMT.pack(self.offset, self.size, self.flags) + self.data


def vring_file(msg: Message) -> tuple[int, int | None]:
    """KICK/CALL/ERR payload: (queue index, fd or None when the NOFD bit is set)."""
    value = msg.u64()
    index = value & VRING_IDX_MASK
    if value & VRING_NOFD_MASK:
        return index, None
    if not msg.fds:
        raise VhostUserError(f"{msg.name} for vq {index} without an fd")
    return index, msg.fds[0]


def encode(request: int, payload: bytes = b"", flags: int = VERSION) -> bytes:
    """One message's bytes (the front-end direction, or a reply with ``flags`` set)."""
    return HEADER.pack(request, flags, len(payload)) + payload


def encode_reply(request: int, payload: bytes) -> bytes:
    """A back-end reply: flags exactly VERSION|REPLY, never echoing NEED_REPLY (QEMU checks)."""
    return encode(request, payload, VERSION | FLAG_REPLY)


def encode_u64_reply(request: int, value: int) -> bytes:
    return encode_reply(request, struct.pack("<Q", value))


class MessageReader:
    """Reassembles messages from stream reads and gives each its fds.

    Linux ends a unix-stream read right after a message that carries SCM_RIGHTS (the fds belong
    to the last bytes read), while earlier fd-less messages may share that read. So fds received
    with a read attach to the message that holds the read's last byte.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._start = 0  # stream offset of _buf[0]
        self._marks: list[tuple[int, list[int]]] = []  # (stream offset of the last byte, fds)

    def feed(self, data: bytes, fds: list[int] | None = None) -> list[Message]:
        """Add bytes (and the fds that came with them); return every complete message.

        :raise VhostUserError: a header with a bad version or an oversized payload.
        """
        self._buf += data
        if fds:
            self._marks.append((self._start + len(self._buf) - 1, list(fds)))
        out: list[Message] = []
        while len(self._buf) >= HEADER.size:
            request, flags, size = HEADER.unpack_from(self._buf)
            if flags & 0x3 != VERSION:
                raise VhostUserError(f"bad protocol version in flags {flags:#x}")
            if size > MAX_PAYLOAD:
                raise VhostUserError(f"payload of {size} bytes exceeds {MAX_PAYLOAD}")
            total = HEADER.size + size
            if len(self._buf) < total:
                break
            payload = bytes(self._buf[HEADER.size:total])
            del self._buf[:total]
            end = self._start + total
            self._start = end
            mine: list[int] = []
            while self._marks and self._marks[0][0] < end:
                mine += self._marks.pop(0)[1]
            out.append(Message(request, flags, payload, mine))
        return out

    def pending_fds(self) -> list[int]:
        """Fds not yet attached to a message (the transport closes them on disconnect)."""
        fds = [fd for _, group in self._marks for fd in group]
        self._marks = []
        return fds
