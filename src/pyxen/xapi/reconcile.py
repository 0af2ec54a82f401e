"""Keeping the database true to the hypervisor: xapi's xenopsd event thread, as a poll.

Once a second (and at start) the live domains are compared with the VM rows. A domain no VM
knows (made with ``xl create``) gets a VM row, marked ``other_config:pyxen_origin=xl``, removed
again when the domain goes; a VM whose domain died (the guest shut down, ``xl destroy``) goes
Halted; a domain rebooted by the monitor or paused with ``xl pause`` has its domid and power
state followed. VMs with an operation in progress are left to that operation, and every write
re-checks the row under the database lock, so an operation that ends mid-poll always wins.

After xapi itself died mid-operation (kill -9, a crash), the new one finds (once the dead
operations are cleared at start) a domain that shut down while its monitor was set aside for
the operation (xenops' clean shutdown and reboot do that): nobody else will act on it, so the
VM's actions_after_* are applied here, as xenopsd does on the domain's shutdown event.
"""

from __future__ import annotations

import asyncio
import logging
import uuid as uuidlib
from typing import TYPE_CHECKING, Any

from . import guest_metrics, xenops
from .datamodel import NULL_REF
from .dispatch import now
from .vm import mark_halted, mark_running, refresh, release, set_domid, spec_of

if TYPE_CHECKING:
    from .server import Xapi

log = logging.getLogger("xapi.reconcile")
PERIOD = 1.0
ORIGIN = "pyxen_origin"
#: The hypervisor's shutdown reasons (SHUTDOWN_* in xen/include/public/sched.h) -> the VM field
#: with the action xapi applies; suspend and soft_reset belong to the operation that asked.
REASON_ACTION = {0: "actions_after_shutdown", 1: "actions_after_reboot", 3: "actions_after_crash",
                 4: "actions_after_crash"}
RESTARTS = {"restart", "rename_restart", "coredump_and_restart"}


def _same(db: Any, vm: str, snap: dict[str, Any]) -> bool:
    if not db.exists("VM", vm):
        return False
    cur = db.get("VM", vm)
    return (not cur["current_operations"] and cur["power_state"] == snap["power_state"]
            and cur["domid"] == snap["domid"])


def reconcile_once(server: "Xapi") -> None:
    db = server.db
    snapshot = db.records("VM")  # first: see the module docstring
    try:
        live = xenops.live_domains(server.paths)
    except xenops.XenopsError as err:
        log.debug("no live domains: %s", err)
        return
    by_uuid = {d.uuid: d for d in live}
    put_right(server, snapshot, by_uuid)  # (what it changes, the loop below sees next time)
    known = set()
    for vm, rec in snapshot.items():
        known.add(rec["uuid"])
        if rec["is_control_domain"]:
            d0 = next((d for d in live if d.domid == 0), None)
            if d0 is not None and rec["metrics"] != NULL_REF and db.exists("VM_metrics", rec["metrics"]):
                if db.field("VM_metrics", rec["metrics"], "memory_actual") != d0.memory_bytes:
                    db.set("VM_metrics", rec["metrics"], memory_actual=d0.memory_bytes, last_updated=now())
            continue
        if rec["is_a_template"] or rec["current_operations"]:
            continue
        d = by_uuid.get(rec["uuid"])
        state = rec["power_state"]
        with db.transaction():
            if not _same(db, vm, rec):
                continue
            if d is None or d.state == "dying":
                if state in ("Running", "Paused"):
                    if rec["other_config"].get(ORIGIN) == "xl":
                        forget(db, vm)
                        continue
                    mark_halted(db, vm)
                    refresh(db, vm)
                continue
            if d.state in ("shutdown", "building"):
                continue  # the monitor is applying on_poweroff/on_reboot; look next time
            want = "Paused" if d.state == "paused" else "Running"
            if state in ("Halted",):
                mark_running(db, server.host_ref, vm, d.domid, paused=want == "Paused")
                refresh(db, vm)
            elif state in ("Running", "Paused") and (state != want or rec["domid"] != d.domid):
                set_domid(db, vm, d.domid, power_state=want)
                refresh(db, vm)
            m = rec["metrics"]
            if m != NULL_REF and db.exists("VM_metrics", m) and db.field("VM_metrics", m, "memory_actual") != d.memory_bytes:
                db.set("VM_metrics", m, memory_actual=d.memory_bytes, VCPUs_number=d.vcpus, last_updated=now())
    for vm, rec in snapshot.items():
        d = by_uuid.get(rec["uuid"])
        if d is not None and d.domid != 0 and d.state in ("running", "paused") and not rec["is_a_template"]:
            update_guest_metrics(server, vm, d.domid)
    for d in live:
        if d.domid == 0 or d.uuid in known or d.state in ("dying", "building") or d.name.endswith(("--incoming", "--migratedaway")):
            continue
        adopt(server, d)


#: domid -> the data/updated last read, so a domain's nodes are read again only after its
#: agent reported (or every AGENT_REREAD polls).
_stamps: dict[int, tuple[str | None, int]] = {}
AGENT_REREAD = 10


def update_guest_metrics(server: "Xapi", vm: str, domid: int) -> None:
    """VM_guest_metrics from the guest agent's nodes (xapi_guest_agent.ml), written only when
    they changed, as xapi does."""
    db = server.db
    try:
        stamp = xenops.agent_stamp(server.paths, domid)
        seen, polls = _stamps.get(domid, (None, AGENT_REREAD))
        if stamp is None or (stamp == seen and polls < AGENT_REREAD):
            _stamps[domid] = (seen, polls + 1)
            return
        nodes, states = xenops.guest_nodes(server.paths, domid)
    except xenops.XenopsError as err:
        log.debug("%s", err)
        return
    _stamps[domid] = (stamp, 0)
    metrics = guest_metrics.derive(guest_metrics.guest_agent_nodes(nodes))
    detected = any(s == guest_metrics.XENBUS_CONNECTED for s in states)
    with db.transaction():
        if not db.exists("VM", vm) or db.field("VM", vm, "domid") != domid:
            return
        gm = db.field("VM", vm, "guest_metrics")
        record = metrics.record(last_updated=now(), pv_drivers_detected=detected)
        if gm == NULL_REF or not db.exists("VM_guest_metrics", gm):
            db.set("VM", vm, guest_metrics=db.create("VM_guest_metrics", record))
            return
        cur = db.get("VM_guest_metrics", gm)
        if any(cur.get(k) != v for k, v in record.items() if k != "last_updated"):
            db.set("VM_guest_metrics", gm, **{k: v for k, v in record.items() if k in cur})


def adopt(server: "Xapi", d: xenops.LiveDomain) -> str:
    """A VM row for a domain made outside xapi (xl create), as xapi imports one it finds."""
    db = server.db
    with db.transaction():
        vm = db.create("VM", {
            "uuid": d.uuid, "name_label": d.name, "name_description": "Made with xl",
            "power_state": "Halted", "domid": -1, "is_a_template": False,
            "memory_static_max": d.memory_bytes, "memory_dynamic_max": d.memory_bytes,
            "memory_dynamic_min": d.memory_bytes, "memory_static_min": d.memory_bytes,
            "VCPUs_max": d.vcpus, "VCPUs_at_startup": d.vcpus, "domain_type": "pv",
            "other_config": {ORIGIN: "xl"}})
        db.set("VM", vm, metrics=db.create("VM_metrics", {}))
        mark_running(db, server.host_ref, vm, d.domid, paused=d.state == "paused")
        refresh(db, vm)
    return vm


def forget(db: Any, vm: str) -> None:
    rec = db.get("VM", vm)
    with db.transaction():
        for cls, field in (("console", "consoles"), ("VBD", "VBDs"), ("VIF", "VIFs")):
            for ref in rec[field]:
                db.destroy(cls, ref)
        for cls, ref in (("VM_metrics", rec["metrics"]), ("VM_guest_metrics", rec["guest_metrics"])):
            if ref != NULL_REF and db.exists(cls, ref):
                db.destroy(cls, ref)
        db.destroy("VM", vm)


def put_right(server: "Xapi", snapshot: dict[str, dict[str, Any]], by_uuid: dict[str, xenops.LiveDomain]) -> None:
    """What a dead xapi left (see the module docstring): the domains of its clean shutdowns and
    reboots that shut down with their monitor set aside."""
    db = server.db
    for vm, rec in snapshot.items():
        if rec["is_control_domain"] or rec["is_a_template"] or rec["current_operations"]:
            continue
        d = by_uuid.get(rec["uuid"])
        if d is None or d.state != "shutdown" or d.shutdown_reason not in REASON_ACTION \
                or rec["other_config"].get(ORIGIN) == "xl" or not xenops.monitor_set_aside(server.paths, d.domid):
            continue
        with db.transaction():
            cur = db.get("VM", vm) if db.exists("VM", vm) else None
            if cur is None or cur["current_operations"] or cur["power_state"] not in ("Running", "Paused") \
                    or cur["domid"] != d.domid:
                continue
            claimed = claim(db, vm, d)
        if claimed:
            after_shutdown(server, vm, d, claimed)


def claim(db: Any, vm: str, d: xenops.LiveDomain) -> str:
    """Hold the VM (current_operations) while after_shutdown acts on its domain; the key."""
    action = db.field("VM", vm, REASON_ACTION[d.shutdown_reason or 0])
    if action == "preserve":
        return ""
    key = f"OpaqueRef:{uuidlib.uuid4()}"
    db.set("VM", vm, current_operations={key: "hard_reboot" if action in RESTARTS else "hard_shutdown"},
           allowed_operations=[])
    return key


def after_shutdown(server: "Xapi", vm: str, d: xenops.LiveDomain, key: str) -> None:
    """xenopsd on a domain that shut down with nobody to act on it: the VM's action for the
    reason (destroy, or restart in a new domain)."""
    db = server.db
    try:
        op = db.field("VM", vm, "current_operations").get(key)
        log.info("VM %s: domain %d shut down (reason %s) with no one to act on it: %s", d.uuid, d.domid,
                 d.shutdown_reason, op)
        try:
            if op == "hard_reboot":
                domid = xenops.hard_reboot(server.paths, d.domid, spec=spec_of(db, vm))
                mark_running(db, server.host_ref, vm, domid)
            else:
                xenops.hard_shutdown(server.paths, d.domid)
                mark_halted(db, vm)
        except xenops.XenopsError as err:
            log.error("VM %s: %s", d.uuid, err)
    finally:
        release(db, vm, key)


async def reconcile_loop(server: "Xapi") -> None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            await loop.run_in_executor(server.executor, reconcile_once, server)
        except Exception:
            log.exception("reconcile failed")
        await asyncio.sleep(PERIOD)
