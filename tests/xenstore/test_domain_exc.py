"""xenstored's VIRQ_DOM_EXC binding while the hypervisor is away: it waits for the hypervisor's
socket to appear (inotify), with no asyncio timer pending.  A pending timer makes every
epoll_wait of the loop arm a kernel timer, which cost each request ~5 us (issue 13)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from pyxen.xenstore import domain_exc
from pyxen.xenstore.domain_exc import DomainExc, SocketAppears
from pyxen.xenstore.xenstored import Xenstored


class FakeHypervisor:
    """Just enough of the hypervisor's line protocol for DomainExc: it records the ops."""

    def __init__(self) -> None:
        self.ops: list[str] = []
        self.bound = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            req = json.loads(line)
            self.ops.append(req["op"])
            result: object = [] if req["op"] == "sysctl.getdomaininfolist" else None
            writer.write(json.dumps({"id": req["id"], "result": result}).encode() + b"\n")
            if req["op"] == "sysctl.getdomaininfolist":
                self.bound.set()
        writer.close()

    async def listen(self, path: Path) -> asyncio.AbstractServer:
        """As the hypervisor does: bind and listen, then chmod."""
        server = await asyncio.start_unix_server(self.serve, path=str(path))
        os.chmod(path, 0o666)
        return server


def _timers(loop: asyncio.AbstractEventLoop) -> list[asyncio.TimerHandle]:
    return [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]


async def test_waits_for_the_hypervisor_socket_without_a_timer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A poll on a timer would not reconnect within this test.
    monkeypatch.setattr(domain_exc, "RETRY_INTERVAL", 3600.0)
    sock = tmp_path / "hypervisor.sock"
    exc = DomainExc(Xenstored(), sock)
    task = asyncio.get_running_loop().create_task(exc.run())
    hv = FakeHypervisor()
    try:
        await asyncio.sleep(0.1)  # the connect fails and DomainExc waits
        assert not task.done()
        assert _timers(asyncio.get_running_loop()) == []
        server = await hv.listen(sock)
        await asyncio.wait_for(hv.bound.wait(), 5)
        assert hv.ops[:2] == ["event_channel_op.bind_virq", "sysctl.getdomaininfolist"]
        # Let the reply reach it: 3.11's wait_for loses a cancel that races its result.
        await asyncio.sleep(0.1)
        server.close()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_socket_appears_ignores_other_names(tmp_path: Path) -> None:
    appears = SocketAppears(tmp_path / "hypervisor.sock")
    try:
        (tmp_path / "other").write_text("x")
        waiter = asyncio.ensure_future(appears.wait())
        await asyncio.sleep(0.05)
        assert not waiter.done()
        (tmp_path / "hypervisor.sock.tmp").write_text("x")
        (tmp_path / "hypervisor.sock.tmp").rename(tmp_path / "hypervisor.sock")
        await asyncio.wait_for(waiter, 5)
    finally:
        appears.close()


async def test_socket_appears_reports_a_removed_directory(tmp_path: Path) -> None:
    """The run directory removed: the watch is gone, the waiter wakes, DomainExc polls."""
    run = tmp_path / "run"
    run.mkdir()
    appears = SocketAppears(run / "hypervisor.sock")
    try:
        run.rmdir()
        await asyncio.wait_for(appears.wait(), 5)
        assert not appears.watching
    finally:
        appears.close()


async def test_socket_appears_raises_when_it_cannot_watch(tmp_path: Path) -> None:
    """DomainExc.run then polls every RETRY_INTERVAL instead."""
    with pytest.raises(OSError):
        SocketAppears(tmp_path / "missing-dir" / "hypervisor.sock")
