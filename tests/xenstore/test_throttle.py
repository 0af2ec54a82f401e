"""xenstored bounds what one connection can make it hold.

A client that pipelines 200,000 READs and never reads the replies is throttled: the daemon
stops reading its socket while its unread output is over ``max_output``, so the client's own
send() blocks and the daemon's memory (VmRSS from /proc) stays flat, while other clients are
served promptly.  When the client then reads, it gets every reply, in order.  A watcher that
never reads its events is bounded too: an unprivileged one loses events, a privileged one is
disconnected.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from pyxen.xenstore.client import XenstoreClient
from pyxen.xenstore.errors import Disconnected
from pyxen.xenstore.testing import DaemonProcess
from pyxen.xenstore.wire import HEADER, Op, PacketReader

pytestmark = pytest.mark.integration

REQUESTS = 200_000
VALUE = bytes(range(256)) * 4  # 1 KiB: unthrottled, 200k replies would be ~200 MiB


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_pipelining_client_is_throttled_and_loses_nothing(daemon: DaemonProcess) -> None:
    assert daemon.proc is not None
    pid = daemon.proc.pid
    with XenstoreClient(daemon.socket) as xs:
        xs.write("/big", VALUE)
    base_rss = rss_kib(pid)

    chunk = 4096
    flood = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    flood.connect(str(daemon.socket))
    sent = [0]

    def send_all() -> None:
        """Pipeline every request (req_id 1..N) without reading a reply."""
        for start in range(1, REQUESTS + 1, chunk):
            ids = range(start, min(start + chunk, REQUESTS + 1))
            flood.sendall(b"".join(HEADER.pack(Op.READ, i, 0, 5) + b"/big\0" for i in ids))
            sent[0] = ids[-1]

    sender = threading.Thread(target=send_all, daemon=True)
    sender.start()
    # Let the daemon fill its output bound and the socket buffers until send() blocks.
    last, stalled_since = -1, time.monotonic()
    deadline = time.monotonic() + 60
    while time.monotonic() - stalled_since < 2.0:
        assert time.monotonic() < deadline, "the sender never stalled"
        if sent[0] != last:
            last, stalled_since = sent[0], time.monotonic()
        time.sleep(0.1)
    assert sender.is_alive() and sent[0] < REQUESTS, \
        f"all {sent[0]} requests were taken in: the daemon did not throttle the reader"
    held_rss = rss_kib(pid)
    assert held_rss - base_rss < 48 * 1024, (base_rss, held_rss)

    # Other clients are served promptly meanwhile.
    with XenstoreClient(daemon.socket, timeout=5) as other:
        for i in range(50):
            t0 = time.monotonic()
            other.write(f"/other/{i}", b"x")
            assert other.read(f"/other/{i}") == b"x"
            assert time.monotonic() - t0 < 1.0

    # Now read everything: every reply, in order, none lost.
    reader = PacketReader()
    expect = 1
    flood.settimeout(30)
    peak_rss = held_rss
    while expect <= REQUESTS:
        data = flood.recv(1 << 20)
        assert data, f"connection closed after {expect - 1} replies"
        for pkt in reader.feed(data):
            assert (pkt.op, pkt.req_id, pkt.payload) == (Op.READ, expect, VALUE), pkt[:3]
            expect += 1
        if expect % 20_000 < 200:
            peak_rss = max(peak_rss, rss_kib(pid))
    sender.join(10)
    assert not sender.is_alive()
    assert peak_rss - base_rss < 48 * 1024, (base_rss, peak_rss)
    flood.settimeout(0.5)
    with pytest.raises(TimeoutError):  # nothing more than the replies
        flood.recv(1)
    flood.close()


def test_privileged_watcher_that_never_reads_is_disconnected(root: Path) -> None:
    """16 x max_output (1 MiB here) of unread events: the watcher is dropped, not fed."""
    d = DaemonProcess(root, ["--set", "max_output=65536", "--no-fsync"]).start()
    try:
        assert d.proc is not None
        deep = "/w/" + "d" * 1000  # each event names a ~1 KiB path
        with XenstoreClient(d.socket) as watcher, XenstoreClient(d.socket) as writer:
            watcher.watch("/w", "tok")
            base = rss_kib(d.proc.pid)
            for i in range(3000):  # ~3 MiB of events to a reader that reads none
                writer.write(f"{deep}/{i % 20}", b"v")
            assert rss_kib(d.proc.pid) - base < 32 * 1024
            got = 0
            with pytest.raises(Disconnected):
                while watcher.wait_event(5) is not None:
                    got += 1
            assert got < 3000
            assert "does not read its watch events" in d.log_text()
            # Its next request opens a fresh connection, where it may watch again.
            watcher.watch("/w", "tok2")
            assert watcher.wait_event(5) == ("/w", "tok2")
    finally:
        d.stop()


def test_unprivileged_watcher_that_never_reads_loses_events(root: Path) -> None:
    """A guest's queue is capped at max_watch_events (x 64 bytes); its replies still come."""
    d = DaemonProcess(root, ["--set", "max_watch_events=16", "--no-fsync"]).start()
    try:
        with XenstoreClient(d.socket) as dom0:
            dom0.introduce(3)
            dom0.mkdir("/local/domain/3")
            dom0.set_perms("/local/domain/3", ["n3"])
            with XenstoreClient(d.domain_socket(3)) as guest:
                guest.watch("data", "tok")
                for i in range(400):
                    dom0.write(f"/local/domain/3/data/{i % 10}", b"x" * 100)
                guest.write("data/mine", b"1")  # a reply still gets through
                events = []
                while (ev := guest.wait_event(0.5)) is not None:
                    events.append(ev)
                assert 0 < len(events) < 400
                assert events[0] == ("data", "tok")
    finally:
        d.stop()
