"""Declared fakes for the parts above the QEMU line, so unit tests reach orchestration (create's
rollback, the monitor's actions, a killed ``xl create``) in milliseconds instead of TCG boots.

- ``FakeDeviceModel``: the hypervisor's device model without QEMU. Its device-model verbs are
  the real ones (they build the real QMP commands, kept in ``commands``); ``execute`` answers as
  QEMU would for the queries the hypervisor makes, and fails on demand (``fail_on``). Each
  domain is a real ``sleep`` process, so pids, cgroups and kills are real.
- ``FakeHost``: a real hypervisor (with FakeDeviceModel) and a real xenstored, in-process, on a
  private event loop thread, at a temporary PYXEN_ROOT: the sync toolstack (``XenCtrl``,
  ``XenstoreClient``) talks to them over their real sockets.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, ClassVar

from ..hypervisor.accel import AccelChoice
from ..hypervisor.bootline import BootLine
from ..hypervisor.core import ConRing, Hypervisor
from ..hypervisor.errors import DeviceModelError
from ..hypervisor.hostcfg import DEFAULT_COMMANDLINE, HostConfig
from ..hypervisor.qemu import BuildInfo, DeviceModel
from ..hypervisor.server import serve as serve_hypervisor
from ..paths import Paths
from ..xenstore.config import XenstoredConfig
from ..xenstore.server import serve as serve_xenstored


class FakeDeviceModel(DeviceModel):
    """A device model with no QEMU (declared fake). ``fail_on`` maps a QMP command name (or
    "start") to the error message it fails with, for every instance."""

    fail_on: ClassVar[dict[str, str]] = {}
    instances: ClassVar[list["FakeDeviceModel"]] = []
    #: What a migration writes to the stream's descriptor, in place of QEMU's stream.
    STREAM: ClassVar[bytes] = b"QEVM pyxen fake migration stream\n"

    def __init__(self, domid: int, paths: Paths, on_event: Callable[[int, str, dict[str, Any]], None]):
        super().__init__(domid, paths, on_event)
        self.commands: list[tuple[str, dict[str, Any]]] = []
        self.status_name = "prelaunch"
        self.balloon_kb = 0
        #: The descriptor handed over by getfd (as QEMU keeps it), and what migrate-incoming read.
        self.migration_fd: int | None = None
        self.received = b""
        FakeDeviceModel.instances.append(self)

    async def _getfd(self, fd: int) -> None:
        self.commands.append(("getfd", {}))
        self.migration_fd = os.dup(fd)

    async def start(self, qemu: str, info: BuildInfo, log_path: Path) -> int:
        if "start" in self.fail_on:
            raise DeviceModelError(self.fail_on["start"], "domctl.createdomain")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.balloon_kb = max(info.maxmem_mib, info.memory_mib) << 10
        # A process whose command line names the domain's uuid, as QEMU's does (-uuid), so a
        # restarted hypervisor re-adopts it (is_our_qemu).
        self.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)", info.uuid],
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.proc.pid
        self.status_name = "paused"
        return self.pid

    async def adopt(self, pid: int) -> None:
        self.pid = pid

    async def execute(self, cmd: str, args: dict[str, Any] | None = None, timeout: float = 0) -> Any:
        self.commands.append((cmd, dict(args or {})))
        if cmd in self.fail_on:
            raise DeviceModelError(f"domain {self.domid}: QMP {cmd} failed: {self.fail_on[cmd]}")
        if cmd == "query-balloon":
            return {"actual": self.balloon_kb << 10}
        if cmd == "balloon":  # the fake guest complies at once, and QEMU reports the change
            self.balloon_kb = int((args or {})["value"]) >> 10
            self._on_event(self.domid, "BALLOON_CHANGE", {"actual": self.balloon_kb << 10})
        elif cmd == "query-status":
            return {"status": self.status_name}
        elif cmd == "query-cpus-fast":
            return [{"thread-id": self.pid}]
        elif cmd == "query-migrate":  # a save or restore (migrate, migrate-incoming) is done at once
            return {"status": "completed"}
        elif cmd == "stop":
            self.status_name = "paused"
        elif cmd == "cont":
            self.status_name = "running"
        elif cmd in ("migrate", "migrate-incoming") and self.migration_fd is not None:
            if cmd == "migrate":
                os.write(self.migration_fd, self.STREAM)
                self.status_name = "postmigrate"
            else:
                self.received = os.read(self.migration_fd, 4096)
            os.close(self.migration_fd)
            self.migration_fd = None
        elif cmd == "query-migrate":
            return {"status": "completed"}
        return {}

    def guest_shutdown(self, reason: str = "guest-shutdown") -> None:
        """What QEMU reports when the guest powers off ("guest-reset": reboots)."""
        self.status_name = "shutdown"
        self._on_event(self.domid, "SHUTDOWN", {"guest": True, "reason": reason})

    def guest_panic(self) -> None:
        self.status_name = "guest-panicked"
        self._on_event(self.domid, "GUEST_PANICKED", {})


class FakeHost:
    """A hypervisor (FakeDeviceModel) and xenstored at ``root``, served on a loop thread."""

    def __init__(self, root: Path) -> None:
        self.paths = Paths(root)
        self.paths.ensure()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._stop: asyncio.Event | None = None
        self._tasks: list[asyncio.Future[Any]] = []
        self.hv: Hypervisor | None = None

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the loop thread (to look at the hypervisor's state safely)."""
        async def run() -> Any:
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def start(self) -> "FakeHost":
        FakeDeviceModel.fail_on = {}
        self._thread.start()

        async def begin() -> None:
            self._stop = asyncio.Event()
            cfg = HostConfig(BootLine.parse(DEFAULT_COMMANDLINE), "tcg", "qemu-system-x86_64")
            self.hv = Hypervisor(self.paths, cfg, AccelChoice("tcg", "fake host"), ConRing(),
                                 device_model=FakeDeviceModel)
            self._tasks.append(asyncio.ensure_future(serve_xenstored(
                self.paths, XenstoredConfig(fsync=False), self._stop)))
            self._tasks.append(asyncio.ensure_future(serve_hypervisor(self.hv, self._stop)))
            for _ in range(200):
                if self.paths.hypervisor_socket.exists() and self.paths.xenstored_socket.exists():
                    return
                await asyncio.sleep(0.01)
            raise RuntimeError("fake host did not come up")

        asyncio.run_coroutine_threadsafe(begin(), self.loop).result(10)
        return self

    def restart_hypervisor(self) -> None:
        """The hypervisor daemon dies (its memory is gone; its guests run on) and a new one
        starts and re-adopts them, as after a kill -9 and the supervisor's restart."""
        async def restart() -> None:
            old = self._tasks.pop()
            old.cancel()
            await asyncio.gather(old, return_exceptions=True)
            assert self.hv is not None and self._stop is not None
            self.hv = Hypervisor(self.paths, self.hv.cfg, self.hv.accel, ConRing(),
                                 device_model=FakeDeviceModel)
            self.paths.hypervisor_socket.unlink(missing_ok=True)
            self._tasks.append(asyncio.ensure_future(serve_hypervisor(self.hv, self._stop)))
            for _ in range(200):
                if self.paths.hypervisor_socket.exists():
                    return
                await asyncio.sleep(0.01)
            raise RuntimeError("the restarted hypervisor did not come up")

        asyncio.run_coroutine_threadsafe(restart(), self.loop).result(10)

    def stop(self) -> None:
        async def end() -> None:
            assert self._stop is not None
            self._stop.set()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self.hv is not None:
                for domid in [d for d in self.hv.domains if d != 0]:
                    await self.hv.destroy(domid)

        asyncio.run_coroutine_threadsafe(end(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        FakeDeviceModel.fail_on = {}

    def __enter__(self) -> "FakeHost":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
