"""server.XenstoreProtocol in-process, on a transport that records its writes: the replies
to pipelined requests leave in one write, in request order, and the durability gate still
holds back everything after a write until its flush."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from pyxen.xenstore.perms import DOM0
from pyxen.xenstore.server import XenstoreProtocol
from pyxen.xenstore.testing import memory_daemon
from pyxen.xenstore.wire import Op, PacketReader, encode


class RecordingTransport(asyncio.Transport):
    """Every ``write`` kept as one entry (one send() on a socket)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def replies(chunk: bytes) -> list[tuple[int, int, bytes]]:
    return [(p.op, p.req_id, p.payload) for p in PacketReader().feed(chunk)]


def test_pipelined_replies_leave_in_one_write_in_order() -> None:
    xs = memory_daemon()
    t = RecordingTransport()
    proto = XenstoreProtocol(xs, DOM0, "dom0")
    proto.connection_made(t)
    proto.data_received(encode(Op.READ, 1, 0, b"/local/domain/0/name\0")
                        + encode(Op.WRITE, 2, 0, b"/x\0v") + encode(Op.READ, 3, 0, b"/x\0")
                        + encode(Op.READ, 4, 0, b"/nope\0"))
    assert len(t.writes) == 1
    assert replies(t.writes[0]) == [(Op.READ, 1, b"Domain-0"), (Op.WRITE, 2, b"OK\0"),
                                    (Op.READ, 3, b"v"), (Op.ERROR, 4, b"ENOENT\0")]
    proto.data_received(encode(Op.READ, 5, 0, b"/x\0"))
    assert replies(t.writes[1]) == [(Op.READ, 5, b"v")]


class FakeJournal:
    """Accepts commits; flushing is what the test's loop turn does."""

    needs_compaction = False

    def append(self, records: list[Any]) -> None:
        pass

    def flush(self) -> None:
        pass


def test_gate_still_holds_what_follows_a_write_in_a_pipelined_batch() -> None:
    """The READ before the WRITE leaves at once; the WRITE's OK and the READ after it (which
    shows the new value) only after the journal flush."""
    xs = memory_daemon()
    xs.journal = FakeJournal()  # type: ignore[assignment]
    turn: list[Callable[[], None]] = []
    xs.schedule = turn.append
    t = RecordingTransport()
    proto = XenstoreProtocol(xs, DOM0, "dom0")
    proto.connection_made(t)
    proto.data_received(encode(Op.READ, 1, 0, b"/local/domain/0/name\0")
                        + encode(Op.WRITE, 2, 0, b"/x\0new") + encode(Op.READ, 3, 0, b"/x\0"))
    assert [replies(w) for w in t.writes] == [[(Op.READ, 1, b"Domain-0")]]
    assert len(turn) == 1
    turn.pop()()  # the next loop turn: flush, then release
    assert [r for w in t.writes for r in replies(w)] == [
        (Op.READ, 1, b"Domain-0"), (Op.WRITE, 2, b"OK\0"), (Op.READ, 3, b"new")]

