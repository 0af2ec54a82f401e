"""xenconsoled as a daemon of its own, with real guests: several ``xl console`` readers, a guest
started while it was down, kill -9 losing no console line, and a console nobody serves.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from typing import Any, Iterator

import pexpect
import pytest

from pyxen.host.services import available_services
from pyxen.testing.host import BIN, Host

#: How long xenconsoled may take to come up (a Python start on a loaded 2-core machine).
UP_TIMEOUT = 20.0


def _pid(host: Host) -> int | None:
    """xenconsoled's pid if it runs (its pid file names a live process)."""
    try:
        pid = int(host.paths.pidfile("xenconsoled").read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    stat = f"/proc/{pid}/stat"
    try:
        return pid if open(stat).read().rsplit(")", 1)[1].split()[0] != "Z" else None
    except (OSError, IndexError):
        return None


def status(host: Host) -> dict[str, Any]:
    """xenconsoled's status line (it is up when its socket accepts)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect(str(host.paths.xenconsoled_socket))
        return dict(json.loads(s.makefile("rb").readline()))
    finally:
        s.close()


def _up(host: Host) -> bool:
    try:
        status(host)
        return _pid(host) is not None
    except OSError:
        return False


def start_xenconsoled(host: Host) -> None:
    """Start xenconsoled unless it runs (or its supervisor brings it back within 3 s)."""
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        if _up(host):
            return
        time.sleep(0.1)
    with open(host.paths.daemon_log("xenconsoled"), "ab") as out:
        subprocess.Popen([sys.executable, "-m", "pyxen.console", "--root", str(host.paths.root)],
                         stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=host.env,
                         start_new_session=True)
    deadline = time.monotonic() + UP_TIMEOUT
    while not _up(host):
        assert time.monotonic() < deadline, "xenconsoled did not come up"
        time.sleep(0.05)


def kill_xenconsoled(host: Host) -> None:
    pid = _pid(host)
    assert pid is not None, "xenconsoled is not running"
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _pid(host) == pid:
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.fixture
def chost(host: Host) -> Iterator[Host]:
    """A host with xenconsoled, started here while ``pyxen host start`` does not list it yet."""
    listed = "xenconsoled" in {s.name for s in available_services()}
    start_xenconsoled(host)
    yield host
    pid = _pid(host)
    if pid is not None and not listed:
        os.kill(pid, signal.SIGTERM)


def _wait_clients(host: Host, domid: int, n: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        got = [c["clients"] for c in status(host)["consoles"] if c["domid"] == domid]
        if got == [n]:
            return
        assert time.monotonic() < deadline, status(host)
        time.sleep(0.05)


def test_two_readers_see_the_same_output(chost: Host) -> None:
    domid = chost.create("two", memory=96)
    chost.wait_console("two")
    tty = chost.run("pyxen", "xenstore", "read", f"/local/domain/{domid}/console/tty", check=True)
    assert tty.stdout.strip() == str(chost.paths.console_socket(domid))
    a, b = (pexpect.spawn(str(BIN / "xl"), ["console", "two"], env=chost.env, timeout=60)
            for _ in range(2))
    _wait_clients(chost, domid, 2)
    a.sendline("echo shared-$((6*7))")
    a.expect("shared-42")
    b.expect("shared-42")  # b sees what a's keystrokes made the guest print
    b.sendline("echo from-b-$((50+5))")
    b.expect("from-b-55")
    a.expect("from-b-55")
    for child in (a, b):
        child.sendcontrol("]")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
    _wait_clients(chost, domid, 0)
    text = chost.wait_console("two", "from-b-55")
    assert text.index("shared-42") < text.index("from-b-55")


def test_guest_started_while_xenconsoled_was_down(chost: Host) -> None:
    """Its log starts at the kernel's first line, and has all it printed while its FIFO was full
    (the serial port stalled); meanwhile ``xl console`` fails in one line."""
    no_console = chost.xl("console", "Domain-0", check=False)
    assert no_console.returncode == 1
    assert no_console.stderr.count("\n") == 1 and "domain 0" in no_console.stderr, no_console.stderr
    with chost.supervisor_held():  # xenconsoled stays down until the block ends
        kill_xenconsoled(chost)
        # loglevel=8: the kernel's own boot messages reach the serial port, from its first line.
        count = 8000  # ~90 KB with the boot messages: more than the FIFO's 64 KiB
        script = f'i=0; while [ $i -lt {count} ]; do echo "early $i"; i=$((i+1)); done'
        domid = chost.create("late", memory=96, cmdline_extra="loglevel=8", script=script)
        down = chost.xl("console", "late", check=False)
        assert down.returncode == 1
        assert down.stderr.count("\n") == 1 and f"domain {domid}" in down.stderr, down.stderr
        assert not chost.paths.console_log("late").exists()
        # The guest prints into its FIFO with nobody reading, until the FIFO is full.
        out = str(chost.paths.console_pipe(domid)) + ".out"
        deadline = time.monotonic() + 120
        while _queued(out) < 65536:
            assert time.monotonic() < deadline, _queued(out)
            time.sleep(0.2)
        time.sleep(2)  # stalled: it stays full
        assert _queued(out) == 65536
    text = chost.wait_console("late")
    first = text.lstrip("\r\n").splitlines()[0]
    assert "Linux version" in first, text[:500]
    assert text.count("Linux version") == 1
    numbers = [int(n) for n in re.findall(r"^early (\d+)\r?$", text, re.M)]
    assert numbers == list(range(count)), (len(numbers), _first_gap(numbers))


def _queued(fifo: str) -> int:
    """Bytes waiting in a FIFO (FIONREAD through a reader opened and closed: nothing consumed)."""
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0])
    finally:
        os.close(fd)


def test_kill_9_of_xenconsoled_loses_no_console_line(chost: Host) -> None:
    """The guest prints numbered lines while xenconsoled is killed and restarted three times."""
    count = 4000  # in bursts of 250 a second, so that every kill (near 1000, 2000, 3000) falls in the middle of it
    script = (f'i=0; while [ $i -lt {count} ]; do echo "seq $i"; i=$((i+1)); '
              f'[ $((i%250)) = 0 ] && sleep 1; done; echo seq-done')
    chost.create("seq", memory=96, script=script)
    seen = 0
    for kill in range(1, 4):
        deadline = time.monotonic() + 180
        while True:  # let some more lines through, then kill it mid-stream
            lines = re.findall(r"seq (\d+)", chost.console_text("seq"))
            if lines and int(lines[-1]) >= seen + 1000 or "seq-done" in chost.console_text("seq"):
                break
            assert time.monotonic() < deadline, chost.console_text("seq")[-500:]
            time.sleep(0.05)
        seen = int(lines[-1])
        assert "seq-done" not in chost.console_text("seq"), f"the guest finished before kill {kill}"
        kill_xenconsoled(chost)
        time.sleep(0.5)
        start_xenconsoled(chost)
    text = chost.wait_console("seq", "seq-done", timeout=300)
    numbers = [int(n) for n in re.findall(r"^seq (\d+)\r?$", text, re.M)]
    assert numbers == list(range(count)), (len(numbers), _first_gap(numbers))
    assert "pyxen demo guest up" in chost.wait_console("seq")


def _first_gap(numbers: list[int]) -> tuple[int, int] | None:
    for i, n in enumerate(numbers):
        if n != i:
            return i, n
    return None
