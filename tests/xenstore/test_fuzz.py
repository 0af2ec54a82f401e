"""Fuzz: malformed frames never crash the daemon nor corrupt the tree.

Bad lengths, missing NULs, huge payloads, unknown types, random garbage: the daemon answers
with an error or closes that connection; other connections keep working and a canary
subtree written before is intact, as read back through Xen's own C client.
"""

from __future__ import annotations

import socket
import struct
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyxen.xenstore.client import XenstoreClient
from pyxen.xenstore.testing import DaemonProcess
from pyxen.xenstore.wire import HEADER, PAYLOAD_MAX, Op, PacketReader, encode

pytestmark = pytest.mark.integration

CANARY = {f"/canary/{i}": f"value-{i}".encode() for i in range(20)}
# no letter of "canary" can be formed, so fuzzed requests cannot name the canary nodes
ALPHABET = b"/\0@_-0123456789TFbdefghijklmopqstuvwxzBE \xff\x80"


@pytest.fixture(scope="module")
def fuzz_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    d = DaemonProcess(Path(tmp_path_factory.mktemp("fuzz")) / "root").start()
    with XenstoreClient(d.socket) as xs:
        for path, value in CANARY.items():
            xs.write(path, value)
    yield d
    assert d.alive(), d.log_text()
    check_intact(d)
    assert "failed unexpectedly" not in d.log_text(), d.log_text()[-3000:]
    assert d.stop() == 0


def check_intact(d: DaemonProcess) -> None:
    with XenstoreClient(d.socket) as xs:
        for path, value in CANARY.items():
            assert xs.read(path) == value
    r = subprocess.run(["xenstore-ls", "-f", "/canary"], env=d.env, capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == len(CANARY)


def raw(d: DaemonProcess) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(str(d.socket))
    return s


def recv_reply(s: socket.socket, req_id: int) -> tuple[int, bytes] | None:
    """The reply to ``req_id`` (skipping watch events), or None if the daemon closed."""
    reader = PacketReader(max_payload=1 << 20)
    while True:
        data = s.recv(65536)
        if not data:
            return None
        for pkt in reader.feed(data):
            if pkt.op != Op.WATCH_EVENT and pkt.req_id == req_id:
                return pkt.op, pkt.payload


frames = st.tuples(
    st.one_of(st.sampled_from(list(Op)), st.integers(0, 40), st.integers(0, 2**32 - 1)),
    st.integers(1, 2**32 - 1),
    st.one_of(st.just(0), st.integers(0, 5), st.integers(0, 2**32 - 1)),
    st.binary(max_size=64).map(lambda b: bytes(ALPHABET[x % len(ALPHABET)] for x in b)),
)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batch=st.lists(frames, min_size=1, max_size=8))
def test_random_well_framed_requests_always_get_one_reply(fuzz_daemon: DaemonProcess,
                                                          batch: list) -> None:
    with raw(fuzz_daemon) as s:
        for op, req_id, tx_id, payload in batch:
            s.sendall(encode(op, req_id, tx_id, payload))
            reply = recv_reply(s, req_id)
            assert reply is not None, "daemon closed a well-framed connection"
            rop, rpayload = reply
            if rop == Op.ERROR:
                assert rpayload.endswith(b"\0") and rpayload[:-1].decode() in {
                    "EINVAL", "EACCES", "EEXIST", "ENOENT", "ENOSPC", "ENOSYS", "EBUSY",
                    "EAGAIN", "E2BIG", "EPERM"}, rpayload
            else:
                assert rop == op


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(min_size=1, max_size=300))
def test_random_garbage_streams(fuzz_daemon: DaemonProcess, garbage: bytes) -> None:
    with raw(fuzz_daemon) as s:
        try:
            s.sendall(garbage)
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
        except OSError:
            pass
    with XenstoreClient(fuzz_daemon.socket) as xs:
        assert xs.read("/canary/0") == CANARY["/canary/0"]


def test_oversized_length_closes_only_that_connection(fuzz_daemon: DaemonProcess) -> None:
    with XenstoreClient(fuzz_daemon.socket) as other, raw(fuzz_daemon) as s:
        s.sendall(HEADER.pack(Op.WRITE, 1, 0, PAYLOAD_MAX + 1) + b"x" * 100)
        assert s.recv(100) == b""  # closed
        assert other.read("/canary/1") == CANARY["/canary/1"]
    with raw(fuzz_daemon) as s:
        s.sendall(HEADER.pack(Op.READ, 1, 0, 0xFFFFFFFF))
        assert s.recv(100) == b""


def test_max_payload_is_accepted(fuzz_daemon: DaemonProcess) -> None:
    with raw(fuzz_daemon) as s:
        path = b"/fuzzbig\0"
        s.sendall(encode(Op.WRITE, 7, 0, path + b"v" * (PAYLOAD_MAX - len(path))))
        assert recv_reply(s, 7) == (Op.WRITE, b"OK\0")
        s.sendall(encode(Op.READ, 8, 0, path))
        reply = recv_reply(s, 8)
        assert reply is not None and len(reply[1]) == PAYLOAD_MAX - len(path)


def test_truncated_frames_and_abrupt_disconnects(fuzz_daemon: DaemonProcess) -> None:
    full = encode(Op.WRITE, 3, 0, b"/fuzztrunc\0value")
    for cut in range(1, len(full)):
        with raw(fuzz_daemon) as s:
            s.sendall(full[:cut])
    with raw(fuzz_daemon) as s:  # pipelined requests, then vanish before reading
        s.sendall(b"".join(encode(Op.READ, i, 0, b"/canary/2\0") for i in range(1, 200)))
    with raw(fuzz_daemon) as s:  # an open transaction and a watch, then vanish
        s.sendall(encode(Op.TRANSACTION_START, 1, 0, b"\0"))
        assert recv_reply(s, 1) is not None
        s.sendall(encode(Op.WATCH, 2, 0, b"/canary\0t\0"))
        assert recv_reply(s, 2) == (Op.WATCH, b"OK\0")
    check_intact(fuzz_daemon)


def test_request_header_fields_are_echoed(fuzz_daemon: DaemonProcess) -> None:
    with raw(fuzz_daemon) as s:
        s.sendall(encode(Op.READ, 0xDEADBEEF, 0, b"/canary/3\0"))
        data = s.recv(4096)
        op, req_id, tx_id, length = struct.unpack_from("<IIII", data)
        assert (op, req_id, tx_id, data[16:16 + length]) == (Op.READ, 0xDEADBEEF, 0,
                                                             CANARY["/canary/3"])
