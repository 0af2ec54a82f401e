"""Test helpers: run a real xenstored in a scratch PYXEN_ROOT, and drive the handler table
in-process with a recording connection.

Used by tests/xenstore and tests/peers (and usable by other parts' tests that need a store).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from ..paths import Paths
from .config import XenstoredConfig
from .connection import Connection
from .perms import DOM0, Caller
from .process import process_packet
from .wire import Packet, PacketReader, encode
from .xenstored import Xenstored


class DaemonProcess:
    """``python -m pyxen.xenstore --foreground`` under ``root``; ``start``/``stop``/``kill``."""

    def __init__(self, root: str | os.PathLike[str], args: Sequence[str] = ()) -> None:
        self.paths = Paths.from_env(root)
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.paths.xenstored_socket

    def domain_socket(self, domid: int) -> Path:
        return self.paths.xenstored_domain_socket(domid)

    @property
    def env(self) -> dict[str, str]:
        """Environment for Debian's xenstore-utils / pyxs (XENSTORED_PATH)."""
        return {**os.environ, "XENSTORED_PATH": str(self.socket)}

    def start(self, timeout: float = 15.0) -> "DaemonProcess":
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pyxen.xenstore", "--root", str(self.paths.root),
             "--foreground", *self.args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"xenstored exited with {self.proc.returncode}: {err}\n"
                                   f"{self.log_text()}")
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(str(self.socket))
                if self._pid_written():
                    return self
                time.sleep(0.02)
            except OSError:
                time.sleep(0.02)
            finally:
                s.close()
        raise TimeoutError(f"xenstored did not listen on {self.socket}")

    def _pid_written(self) -> bool:
        """The pid file names our process: it, not another daemon, is listening."""
        try:
            text = self.paths.pidfile("xenstored").read_text().strip()
        except FileNotFoundError:
            return False
        return self.proc is not None and text == str(self.proc.pid)

    def log_text(self) -> str:
        try:
            return self.paths.daemon_log("xenstored").read_text()
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.stderr:
                self.proc.stderr.close()

    def kill(self) -> None:
        """kill -9, as a crash."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()


class RecordingConnection:
    """Drives ``process_packet`` in-process and decodes what the daemon sent back."""

    def __init__(self, xs: Xenstored, caller: Caller = DOM0) -> None:
        self.xs = xs
        self.reader = PacketReader(max_payload=1 << 20)
        self.received: list[Packet] = []
        self.conn: Connection = xs.connect(caller, self._write)
        self._req = 0

    def _write(self, data: bytes) -> None:
        self.received.extend(self.reader.feed(data))

    def send(self, op: int, payload: bytes, tx: int = 0) -> list[Packet]:
        """Process one request; returns every packet sent to *this* connection for it."""
        self._req += 1
        before = len(self.received)
        pkts = PacketReader().feed(encode(op, self._req, tx, payload))
        process_packet(self.xs, self.conn, pkts[0])
        return self.received[before:]

    def call(self, op: int, payload: bytes, tx: int = 0) -> Packet:
        """The reply (not the events) to one request."""
        out = [p for p in self.send(op, payload, tx) if p.req_id == self._req and p.op != 15]
        assert len(out) == 1, out
        return out[0]

    def events(self) -> list[tuple[bytes, bytes]]:
        evs = [p for p in self.received if p.op == 15]
        self.received = [p for p in self.received if p.op != 15]
        return [tuple(p.payload.split(b"\0")[:2]) for p in evs]  # type: ignore[misc]


def memory_daemon(config: XenstoredConfig | None = None) -> Xenstored:
    """A daemon state with no journal (nothing on disk)."""
    return Xenstored(config or XenstoredConfig())
