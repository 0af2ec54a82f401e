"""QEMU's own migration stream of a pyxen guest with a blkback disk and a netback vif.

A probe for issue 9 (save/restore, migration): with the guest stopped, QEMU's ``migrate`` to a
file must complete, which it refuses while a vhost-user back-end lacks VHOST_F_LOG_ALL or
VHOST_USER_PROTOCOL_F_LOG_SHMFD ("Migration disabled: vhost lacks VHOST_F_LOG_ALL feature").
QMP is used directly, only as a probe of the stream (the toolstack's QMP client, the
hypervisor, is stopped for the duration so the single QMP monitor is free). Run under
``flock /tmp/pyxen-net.lock``: the vif's TAP name is host-global.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from pyxen.host.services import SERVICES, stop_service
from pyxen.testing.bridge import link_local_bridge

pytestmark = pytest.mark.integration


class Qmp:
    """A minimal QMP client (greeting, qmp_capabilities, execute; events are skipped)."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock.connect(str(path))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.buf = b""
        self._read()  # greeting
        self.execute("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("QMP closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return dict(json.loads(line))

    def execute(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        msg: dict[str, Any] = {"execute": cmd}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            reply = self._read()
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise RuntimeError(f"{cmd}: {reply['error'].get('desc')}")

    def close(self) -> None:
        self.sock.close()


def migrate_to_file(qmp: Qmp, path: Path, timeout: float = 120.0) -> dict[str, Any]:
    """stop, migrate to ``path`` through exec:cat, wait for the end; query-migrate's answer."""
    qmp.execute("stop")
    qmp.execute("migrate", {"uri": f"exec:cat > {path}"})
    deadline = time.monotonic() + timeout
    while True:
        info = dict(qmp.execute("query-migrate"))
        if info.get("status") in ("completed", "failed", "cancelled") or time.monotonic() > deadline:
            return info
        time.sleep(0.2)


def test_stopped_guest_with_blkback_and_netback_migrates_to_a_file(host) -> None:  # type: ignore[no-untyped-def]
    root = host.paths.root
    disk = root / "disk.img"
    disk.write_bytes(os.urandom(4 << 20))
    script = ("ip link set eth0 up\nip addr add 169.254.78.2/16 dev eth0\n"
              "dd if=/dev/vda of=/dev/null bs=1M count=4 2>/dev/null; echo \"read-rc $?\"\n")
    with link_local_bridge() as (br, _):
        extra = (f"disk = ['file:{disk},xvda,w']\n"
                 f"vif = ['mac=00:16:3e:00:78:02,bridge={br}']\n")
        domid = host.create("mig", memory=128, script=script, extra_lines=extra)
        text = host.wait_console("mig")
        assert "read-rc 0" in text
        stream = root / "stream.bin"
        with host.supervisor_held():
            assert stop_service(host.paths, SERVICES[0])  # the hypervisor: frees QEMU's QMP monitor
            qmp = Qmp(host.paths.qmp_socket(domid))
            try:
                blockers = qmp.execute("query-migrate")  # the blocker only shows on migrate
                info = migrate_to_file(qmp, stream)
                qmp.execute("cont")
            finally:
                qmp.close()
        print("stopped migration:", {k: info.get(k) for k in ("status", "total-time", "downtime")},
              "stream bytes", stream.stat().st_size)
        assert info.get("status") == "completed", (blockers, info)
        data = stream.read_bytes()
        assert data[:4] == b"QEVM", data[:16]
        assert b"vhost-user-blk" in data and b"virtio-net" in data
        host.xl("destroy", "mig")


def test_running_guest_migrates_with_dirty_logging_under_disk_and_network_io(host) -> None:  # type: ignore[no-untyped-def]
    """Live (pre-copy) migration of a guest that reads its disk (page cache dropped each pass)
    and receives pings while QEMU copies its memory: the back-ends log the pages they write,
    and the migration completes."""
    root = host.paths.root
    disk = root / "disk.img"
    disk.write_bytes(os.urandom(4 << 20))
    script = ("ip link set eth0 up\nip addr add 169.254.79.2/16 dev eth0\n"
              "(while :; do echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/vda of=/dev/null bs=64k 2>/dev/null;"
              " done) &\n")
    with link_local_bridge(dom0_ip="169.254.79.100") as (br, ns):
        assert ns is not None
        extra = (f"disk = ['file:{disk},xvda,w']\n"
                 f"vif = ['mac=00:16:3e:00:79:02,bridge={br}']\n")
        domid = host.create("live", memory=128, script=script, extra_lines=extra)
        host.wait_console("live")
        pinger = subprocess.Popen(["ip", "netns", "exec", ns, "/bin/busybox", "ping", "-i", "0.05", "-s", "1000",
                                   "169.254.79.2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stream = root / "live.bin"
        try:
            with host.supervisor_held():
                assert stop_service(host.paths, SERVICES[0])
                qmp = Qmp(host.paths.qmp_socket(domid))
                try:
                    qmp.execute("migrate-set-parameters", {"downtime-limit": 2000, "max-bandwidth": 1 << 30})
                    qmp.execute("migrate", {"uri": f"exec:cat > {stream}"})
                    deadline = time.monotonic() + 240
                    while True:
                        info = dict(qmp.execute("query-migrate"))
                        if info.get("status") in ("completed", "failed", "cancelled") or time.monotonic() > deadline:
                            break
                        time.sleep(0.2)
                    qmp.execute("cont")
                finally:
                    qmp.close()
        finally:
            pinger.terminate()
            pinger.wait(10)
        print("live migration:", {k: info.get(k) for k in ("status", "total-time", "downtime", "setup-time")},
              {k: info["ram"].get(k) for k in ("transferred", "dirty-sync-count", "normal", "duplicate")})
        assert info.get("status") == "completed", info
        assert info["ram"]["dirty-sync-count"] >= 2, info["ram"]  # at least one pass after the first
        backend_log = host.paths.daemon_log("backendd").read_text()
        assert "dirty log:" in backend_log and "dirty-page logging on" in backend_log, backend_log[-3000:]
        host.xl("destroy", "live")
