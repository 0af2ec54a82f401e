"""xenconsoled without QEMU: real FIFOs (this test holds QEMU's ends, O_RDWR as its pipe
chardev does), a real xenstored, real sockets.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from pyxen.cli import console as xl_console
from pyxen.console.domain import Console, fifo_identity, fifo_pair
from pyxen.console.xenconsoled import Plan, plan
from pyxen.paths import Paths
from pyxen.xenstore.client import XenstoreClient
from pyxen.xenstore.testing import DaemonProcess


# ---- plan(): which consoles a scan opens and drops ---------------------------------------------
def test_plan_opens_domus_with_fifos_only() -> None:
    got = plan(["0", "3", "4", "5"], {0: (1, 9), 3: (1, 10), 4: None, 5: (1, 12)}, {}, {})
    assert got == Plan(drop=(), open=(3, 5))


def test_plan_drops_released_vanished_and_replaced() -> None:
    kept = {3: (1, 10), 4: (1, 11), 5: (1, 12), 6: (1, 13)}
    # 3 released (not listed), 4's FIFOs vanished, 5's FIFOs are new files (domid reused), 6 kept
    got = plan(["0", "4", "5", "6"], {4: None, 5: (1, 99), 6: (1, 13)}, kept, {})
    assert got == Plan(drop=(3, 4, 5), open=(5,))


def test_plan_does_not_reopen_an_ended_console_until_its_fifos_change() -> None:
    assert plan(["7"], {7: (1, 20)}, {}, {7: (1, 20)}) == Plan((), ())
    assert plan(["7"], {7: (1, 21)}, {}, {7: (1, 20)}) == Plan((), (7,))


def test_plan_ignores_non_domid_entries() -> None:
    assert plan(["٣", "x", "-1", "8"], {8: (1, 1)}, {}, {}) == Plan((), (8,))


# ---- one Console on real FIFOs -------------------------------------------------------------------
class FakeDeviceModel:
    """QEMU's side of the pipe chardev: both FIFOs opened O_RDWR (declared stand-in for QEMU)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        base.parent.mkdir(parents=True, exist_ok=True)
        fifo_in, fifo_out = fifo_pair(base)
        for f in (fifo_in, fifo_out):
            os.mkfifo(f, 0o600)
        self.in_fd = os.open(fifo_in, os.O_RDWR | os.O_NONBLOCK)
        self.out_fd = os.open(fifo_out, os.O_RDWR)

    def prints(self, data: bytes) -> None:
        os.write(self.out_fd, data)

    def received(self) -> bytes:
        try:
            return os.read(self.in_fd, 65536)
        except BlockingIOError:
            return b""

    def exit(self) -> None:
        for fd in (self.in_fd, self.out_fd):
            os.close(fd)
        self.in_fd = self.out_fd = -1


async def _until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_console_logs_what_waited_then_serves_two_clients(tmp_path: Path) -> None:
    base = tmp_path / "run" / "console"
    dm = FakeDeviceModel(base)
    dm.prints(b"printed while nobody read\n")
    log_path = tmp_path / "guest-g.log"
    log_path.write_bytes(b"earlier boot\n")
    ended: list[Console] = []
    con = Console(3, "g", base, log_path, tmp_path / "c.sock", on_end=ended.append)
    await con.open()
    assert con.identity == fifo_identity(base)
    await _until(lambda: log_path.read_bytes() == b"earlier boot\nprinted while nobody read\n")

    (r1, w1), (r2, w2) = [await asyncio.open_unix_connection(str(con.socket_path)) for _ in range(2)]
    await _until(lambda: con.clients == 2)
    dm.prints(b"hello both\n")
    assert await asyncio.wait_for(r1.readline(), 5) == b"hello both\n"
    assert await asyncio.wait_for(r2.readline(), 5) == b"hello both\n"
    big = b"".join(b"line %06d\n" % i for i in range(20000))  # more than one splice chunk
    dm.prints(big[:60000])
    dm.prints(big[60000:])  # (O_RDWR writer blocks when full; we read meanwhile)
    assert await asyncio.wait_for(r1.readexactly(len(big)), 10) == big
    assert await asyncio.wait_for(r2.readexactly(len(big)), 10) == big

    w1.write(b"typed by one\n")
    await w1.drain()
    w2.write(b"and two\n")
    await w2.drain()
    got = b""
    deadline = time.monotonic() + 5
    while len(got) < len(b"typed by one\nand two\n"):
        assert time.monotonic() < deadline, got
        got += dm.received()
        await asyncio.sleep(0.02)
    assert sorted(got.splitlines()) == [b"and two", b"typed by one"]

    dm.exit()  # QEMU exits: the console ends, its clients see EOF, the log stays
    await _until(lambda: ended == [con])
    assert await asyncio.wait_for(r1.read(), 5) == b""
    assert not con.socket_path.exists()
    assert log_path.read_bytes().endswith(big)
    w1.close()
    w2.close()


async def test_console_refuses_fifos_without_a_device_model(tmp_path: Path) -> None:
    base = tmp_path / "console"
    for f in fifo_pair(base):
        os.mkfifo(f, 0o600)
    con = Console(4, "nobody", base, tmp_path / "l.log", tmp_path / "c.sock")
    with pytest.raises(OSError):
        await con.open()
    assert not con.socket_path.exists()
    missing = Console(5, "none", tmp_path / "absent", tmp_path / "m.log", tmp_path / "m.sock")
    with pytest.raises(OSError):
        await missing.open()


async def test_stuck_client_is_dropped_not_buffered(tmp_path: Path) -> None:
    base = tmp_path / "console"
    dm = FakeDeviceModel(base)
    con = Console(6, "g", base, tmp_path / "l.log", tmp_path / "c.sock")
    await con.open()
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(str(con.socket_path))  # and never reads
    await _until(lambda: con.clients == 1)
    chunk = b"x" * 65536
    for _ in range(40):  # 2.5 MiB, more than MAX_CLIENT_BACKLOG
        dm.prints(chunk)
        await asyncio.sleep(0.01)
    await _until(lambda: con.clients == 0)
    await _until(lambda: (tmp_path / "l.log").stat().st_size == 40 * len(chunk))
    con.close()
    stuck.close()
    dm.exit()


# ---- the daemon against a real xenstored ---------------------------------------------------------
@pytest.fixture
def xenstored(tmp_path: Path) -> Iterator[DaemonProcess]:
    root = Path(os.environ.get("TMPDIR", "/tmp")) / f"pxc{os.getpid()}"  # short: sun_path limit
    d = DaemonProcess(root).start()
    yield d
    if d.alive():
        d.stop()
    subprocess.run(["rm", "-rf", str(root)], check=False)


def _domain(xs: XenstoreClient, domid: int, name: str) -> None:
    xs.write(f"/local/domain/{domid}/name", name)
    xs.introduce(domid)


def _status(paths: Paths) -> dict[str, Any]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(str(paths.xenconsoled_socket))
    data = s.makefile("rb").readline()
    s.close()
    return dict(json.loads(data))


def _wait(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_daemon_follows_xenstore_and_outlives_xenstored(xenstored: DaemonProcess) -> None:
    paths = xenstored.paths
    g5 = FakeDeviceModel(paths.console_pipe(5))  # a guest that exists before xenconsoled
    g5.prints(b"g5 first line\n")
    with XenstoreClient(paths.xenstored_socket) as xs:
        _domain(xs, 5, "g5")
    proc = subprocess.Popen([sys.executable, "-m", "pyxen.console", "--root", str(paths.root)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: paths.console_log("g5").exists()
              and paths.console_log("g5").read_bytes() == b"g5 first line\n")
        assert paths.pidfile("xenconsoled").read_text().strip() == str(proc.pid)
        second = subprocess.run([sys.executable, "-m", "pyxen.console", "--root", str(paths.root)],
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 1  # one xenconsoled per host: two would split a log
        assert second.stderr == f"xenconsoled: already running (pid {proc.pid})\n"
        assert paths.pidfile("xenconsoled").read_text().strip() == str(proc.pid)
        with XenstoreClient(paths.xenstored_socket) as xs:
            assert xs.read("/local/domain/5/console/tty") == str(paths.console_socket(5)).encode()
            assert xl_console.console_socket(paths, 5) == paths.console_socket(5)
            g6 = FakeDeviceModel(paths.console_pipe(6))  # a guest made while it runs
            _domain(xs, 6, "g6")
        _wait(lambda: [c["domid"] for c in _status(paths)["consoles"]] == [5, 6])
        s = xl_console.connect(paths, 6, wait=0)
        _wait(lambda: _status(paths)["consoles"][1]["clients"] == 1)
        g6.prints(b"to the reader\n")
        s.settimeout(5)
        assert s.makefile("rb").readline() == b"to the reader\n"
        s.close()

        xenstored.kill()  # consoles go on without xenstored
        g5.prints(b"while xenstored is down\n")
        _wait(lambda: paths.console_log("g5").read_bytes().endswith(b"while xenstored is down\n"))
        with pytest.raises(xl_console.ConsoleUnavailable, match="domain 7"):
            xl_console.connect(paths, 7, wait=0)
        xenstored.start()
        g7 = FakeDeviceModel(paths.console_pipe(7))
        g7.prints(b"g7 up\n")
        with XenstoreClient(paths.xenstored_socket) as xs:
            _domain(xs, 7, "g7")  # (the restarted store is durable: 5 and 6 are still there)
            _wait(lambda: paths.console_log("g7").exists()
                  and paths.console_log("g7").read_bytes() == b"g7 up\n")
            xs.rm("/local/domain/6")
            xs.release(6)
        _wait(lambda: [c["domid"] for c in _status(paths)["consoles"]] == [5, 7])
        assert not paths.console_socket(6).exists()
        assert paths.console_log("g6").exists()  # the log stays
        with pytest.raises(xl_console.ConsoleUnavailable, match="domain 0"):
            xl_console.connect(paths, 0)
        for g in (g5, g6, g7):
            g.exit()
    finally:
        proc.terminate()
        proc.wait(10)
    assert not paths.xenconsoled_socket.exists()
