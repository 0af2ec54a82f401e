"""xl's monitor: what happens to a domain after it shuts down (on_poweroff, on_reboot, on_crash,
on_watchdog, on_soft_reset), and the toolstack's cleanup after a domain is gone.

In Xen, ``xl create`` forks one monitor per domain that waits for the domain's death through
libxl, which watches ``@releaseDomain`` (fired by xenstored on VIRQ_DOM_EXC), reads the shutdown
reason from the hypervisor and applies the config's action (tools/xl/xl_vmcontrol.c,
handle_domain_death). pyxen runs one monitor for the host, as a daemon of its own: it watches
``@releaseDomain`` and on each event (and at start, and every PERIOD seconds) makes one pass:

- a shut-down domain gets its action, from the config the toolstack kept for it (userdata):
  destroy, restart (destroy, then a new domain from the same config: new domid, same uuid),
  preserve, rename-restart (the old one renamed ``<name>-%Y%m%dT%H%MZ`` with a new uuid and
  kept, a new one started), coredump-destroy / coredump-restart (an ELF core in
  ``paths.dump_dir/<name>`` first); soft-reset is handled as restart (pyxen has no in-place
  soft reset);
- a domain the hypervisor no longer has (destroyed, or killed half-built with its ``xl
  create``) loses its xenstore records, device nodes and userdata.

Exactly once, across its own death: every action leaves the domain in a state where the same
pass would do nothing (gone; renamed and marked preserve; running again), and a restart, the one
action that spans two domains, is written down (``paths.monitor_dir``) before the old domain is
destroyed and crossed out after the new one exists; a monitor that starts finishes what such a
note says, only if no domain has that name yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
import uuid as uuidlib
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..hypervisor.client import XenCtrl
from ..hypervisor.domain import ShutdownReason
from ..hypervisor.errors import HypercallError
from ..daemon import arguments, daemon_process
from ..paths import Paths
from ..xenstore.client import AsyncXenstoreClient, XenstoreClient
from ..xenstore.errors import NoEntry, XenstoreError
from . import domid_history, hotplug, userdata, xsdomain
from .config import DomainConfig
from .domain import DomainBuildError, create, destroy

log = logging.getLogger(__name__)

#: Seconds between passes when no event comes (a safety net, not the mechanism).
PERIOD = 10.0
#: Bound on one hypercall of a pass (create, the slowest, has its own).
CALL_TIMEOUT = 30.0
#: Passes that may try to create a restarted domain before its restart is given up.
RESTART_ATTEMPTS = 6
ACTION_KEYS = {
    ShutdownReason.POWEROFF: "on_poweroff", ShutdownReason.REBOOT: "on_reboot",
    ShutdownReason.SUSPEND: None, ShutdownReason.CRASH: "on_crash",
    ShutdownReason.WATCHDOG: "on_watchdog", ShutdownReason.SOFT_RESET: "on_soft_reset",
}


def preserved_name(name: str, now: float | None = None) -> str:
    """The name a rename-restart gives the old domain (xl: ``-%Y%m%dT%H%MZ``, UTC)."""
    return name + time.strftime("-%Y%m%dT%H%MZ", time.gmtime(now))


class Monitor:
    """One pass at a time; every pass is safe to repeat."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        #: (domid, uuid, reason) already reported as preserved: logged once, not acted on.
        self._seen: set[tuple[int, str, int]] = set()

    # ---- restart notes ---------------------------------------------------------------------
    def _note_path(self, name: str) -> Path:
        return self.paths.restart_note(name)

    def _note(self, cfg: DomainConfig, attempts: int = 0) -> None:
        self.paths.monitor_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._note_path(cfg.name).with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump({"config": cfg.to_json(), "attempts": attempts}, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.rename(self._note_path(cfg.name))

    def _finish_notes(self, xc: XenCtrl, names: set[str]) -> None:
        for note in sorted(self.paths.monitor_dir.glob("restart-*.json")):
            try:
                data = json.loads(note.read_text())
                cfg, attempts = DomainConfig.from_json(data["config"]), int(data["attempts"])
            except (OSError, ValueError, TypeError, KeyError) as err:
                log.error("dropping unreadable restart note %s: %s", note, err)
                note.unlink(missing_ok=True)
                continue
            if cfg.name in names:
                note.unlink(missing_ok=True)
                continue
            log.info("finishing the restart of %s", cfg.name)
            self._restart(xc, cfg, attempts)

    def _restart(self, xc: XenCtrl, cfg: DomainConfig, attempts: int = 0) -> None:
        """Create the new domain of a noted restart; the note goes once it exists. A create
        that fails (xenstored restarting, say) keeps the note for the next pass, up to
        RESTART_ATTEMPTS times."""
        try:
            domid = create(xc, self.paths, cfg)
        except (DomainBuildError, HypercallError, OSError, XenstoreError) as err:
            if attempts + 1 >= RESTART_ATTEMPTS:
                log.error("cannot restart %s, giving up after %d attempts: %s", cfg.name, attempts + 1, err)
                self._note_path(cfg.name).unlink(missing_ok=True)
            else:
                log.warning("cannot restart %s (attempt %d, will retry): %s", cfg.name, attempts + 1, err)
                self._note(cfg, attempts + 1)
            return
        log.info("%s restarted as domain %d", cfg.name, domid)
        self._note_path(cfg.name).unlink(missing_ok=True)

    # ---- one pass ----------------------------------------------------------------------------
    def _recorded_domids(self) -> set[int]:
        """Domains the toolstack has records of: xenstore's /local/domain and userdata."""
        found = userdata.domids(self.paths)
        try:
            with XenstoreClient(self.paths.xenstored_socket) as xs:
                for key in ("/local/domain", "/libxl"):
                    with contextlib.suppress(NoEntry):
                        found |= {int(d) for d in xs.directory(key) if d.isascii() and d.isdigit()}
        except (OSError, XenstoreError) as err:
            log.warning("cannot list xenstore: %s", err)
        found.discard(0)
        return found

    def run_pass(self) -> None:
        """Apply pending actions and clean up after gone domains."""
        # Records first, then the hypervisor's list: a domain created in between is in the
        # list, so it is never mistaken for a gone one.
        recorded = self._recorded_domids()
        with XenCtrl(self.paths.hypervisor_socket, timeout=CALL_TIMEOUT) as xc:
            infos = {int(d["domid"]): d for d in xc.call("sysctl.getdomaininfolist")}
            self._finish_notes(xc, {d["name"] for d in infos.values()})
            for info in infos.values():
                if info["domid"] != 0 and info["shutdown"] and not info["dying"] and not info.get("building"):
                    self._handle(xc, info)
        for domid in sorted(recorded - set(infos)):
            log.info("domain %d is gone: removing its records", domid)
            hotplug.remove_all(self.paths, domid)
            xsdomain.release_quietly(self.paths.xenstored_socket, domid)
            userdata.remove(self.paths, domid)
            domid_history.mark_recent(self.paths, domid)

    def _handle(self, xc: XenCtrl, info: dict[str, Any]) -> None:
        domid, reason = int(info["domid"]), int(info["shutdown_reason"] or 0)
        cfg = userdata.retrieve(self.paths, domid)
        key = ACTION_KEYS.get(ShutdownReason(reason)) if reason in ShutdownReason._value2member_map_ else None
        if key is None:  # suspended (save, migration): not the monitor's business
            return
        if userdata.unmonitored(self.paths, domid):  # started with -e: no monitor, as in xl
            mark = (domid, str(info["uuid"]), reason)
            if mark not in self._seen:
                self._seen.add(mark)
                log.info("Domain %d has shut down, reason code %d 0x%x; it has no monitor (-e): "
                         "left as it is", domid, reason, reason)
            return
        # No record: nothing to restart from. No on_soft_reset key: Xen's default, soft-reset.
        action = "destroy" if cfg is None else str(getattr(cfg, key, "soft-reset"))
        if action == "preserve":
            mark = (domid, str(info["uuid"]), reason)
            if mark not in self._seen:
                self._seen.add(mark)
                log.info("Domain %d has shut down, reason code %d 0x%x", domid, reason, reason)
                log.info("Action for shutdown reason code %d is %s", reason, action)
                log.info("Done. Domain %d is preserved", domid)
            return
        log.info("Domain %d has shut down, reason code %d 0x%x", domid, reason, reason)
        log.info("Action for shutdown reason code %d is %s", reason, action)
        if action.startswith("coredump-"):
            self._dump(xc, domid, str(info["name"]))
            action = action.removeprefix("coredump-")
        if action == "destroy" or cfg is None:
            destroy(xc, self.paths, domid)
            log.info("Done. Exiting now")
            return
        if action == "rename-restart":
            self._preserve_renamed(xc, domid, cfg)
            self._note(cfg)
        else:  # restart, soft-reset
            self._note(cfg)
            destroy(xc, self.paths, domid)
            log.info("Done. Rebooting now")
        self._restart(xc, cfg)

    def _dump(self, xc: XenCtrl, domid: int, name: str) -> None:
        self.paths.dump_dir.mkdir(parents=True, exist_ok=True)
        corefile = self.paths.dump_dir / name
        log.info("dumping core to %s", corefile)
        try:
            xc.call("dm_op.dump_core", domid=domid, path=str(corefile))
        except HypercallError as err:
            log.error("core dump failed (rc=-3): %s", err)  # and carry on, as xl does

    def _preserve_renamed(self, xc: XenCtrl, domid: int, cfg: DomainConfig) -> None:
        """libxl_domain_preserve: rename, new uuid, and from now on kept as it is."""
        new_name, new_uuid = preserved_name(cfg.name), str(uuidlib.uuid4())
        kept = replace(cfg, name=new_name, uuid=new_uuid, on_poweroff="preserve", on_reboot="preserve",
                       on_crash="preserve", on_watchdog="preserve")
        userdata.store(self.paths, domid, kept)
        xc.call("domctl.setdomainname", domid=domid, name=new_name)
        xc.call("domctl.setdomainhandle", domid=domid, uuid=new_uuid)
        with contextlib.suppress(OSError, XenstoreError):
            with XenstoreClient(self.paths.xenstored_socket) as xs:
                xs.write(f"{xsdomain.dom_path(domid)}/name", new_name)
        log.info("Preserving domain %d %s as %s", domid, cfg.name, new_name)


async def serve(paths: Paths, stop: asyncio.Event) -> None:
    """Run passes on @releaseDomain (and every PERIOD s) until ``stop``; survive xenstored,
    the hypervisor or a pass failing."""
    monitor = Monitor(paths)
    wake = asyncio.Event()
    wake.set()  # a first pass at start: whatever happened while no monitor ran

    async def status(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b'{"monitor": "running"}\n')
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def watch() -> None:
        while True:
            try:
                async with AsyncXenstoreClient(paths.xenstored_socket) as xs:
                    await xs.watch("@releaseDomain", "monitor")
                    while True:
                        await xs.wait_event(None)
                        wake.set()
            except (OSError, XenstoreError) as err:
                log.debug("xenstore watch lost: %s", err)
            await asyncio.sleep(0.5)

    async def passes() -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), PERIOD)
            wake.clear()
            try:
                await asyncio.to_thread(monitor.run_pass)
            except (HypercallError, OSError, XenstoreError) as err:
                log.warning("pass failed: %s", err)
            except Exception:  # a bug: keep monitoring
                log.exception("pass failed")

    sock = paths.monitor_socket
    sock.unlink(missing_ok=True)
    server = await asyncio.start_unix_server(status, path=str(sock))
    tasks = [asyncio.create_task(watch()), asyncio.create_task(passes())]
    log.info("monitoring domains of %s", paths.root)
    async with server:
        await stop.wait()
    for t in tasks:
        t.cancel()
    sock.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    ns = arguments("pyxen-monitor", "pyxen toolstack monitor (xl's)").parse_args(argv)
    paths = Paths.from_env(ns.root)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(paths, stop)

    with daemon_process(paths, "monitor"):
        asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
