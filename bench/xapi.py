#!/usr/bin/env python3
"""XenAPI server: calls per second, event latency and VM.start against ``xl create``.

One started host in a fresh root, its root password set, its xapi URL from ``pyxen host status``:

1. Seeding: VM.create over the API until the database holds ``--vms`` (1000) halted VMs besides the
   seed's (a plain PV record each; the documented path, no back door into the database).
2. Calls: ``--rounds`` rounds of login + VM.get_all_records + logout, over XML-RPC (login with
   the official SDK) and JSON-RPC 2.0 (raw POSTs to /jsonrpc), alternating. VM.get_all_records is
   timed on the wire (request sent to answer read: the server's work and the transfer) apart from
   the client's decoding of the answer. Goal: VM.get_all_records on the wire <= 100 ms (median)
   with the 1000 VMs; calls/s counts login + get_all_records on the wire.
3. Events: a second session blocks in event.from on the VM class; the first changes a VM's
   name_label; latency = from just before VM.set_name_label to event.from returning that change.
4. Boot: a VM cloned from the Debian template (no VIF) is started with VM.start; the same guest
   (same kernel, ramdisk, args, memory, vCPUs and a disk of the same size) with ``xl create``;
   each timed to the guest's up line on its console, interleaved (xapi, xl, xapi, xl, ...).
   Goal: median VM.start / median xl create <= 1.1.

Prints a table and writes bench/results/xapi.json (date, revision, machine, every round).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import urllib.request
import xmlrpc.client
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import XenAPI  # type: ignore[import-untyped]  # noqa: E402

from pyxen.images.demo import build  # noqa: E402
from pyxen.testing.bench import figure, run_facts  # noqa: E402
from pyxen.testing.host import BOOT_TIMEOUT, UP_LINE, Host, started_host  # noqa: E402
from pyxen.testing.xapi import (ROOT_PASSWORD, destroy_vm, login, set_root_password,  # noqa: E402
                                vm_from_template, vm_record, xapi_url)

GAR_GOAL_S = 0.100
BOOT_GOAL = 1.1
MiB = 1 << 20


def seed(session: Any, count: int) -> tuple[float, list[str]]:
    t0 = time.perf_counter()
    refs = [session.xenapi.VM.create(vm_record(f"bench-{i:04d}")) for i in range(count)]
    return time.perf_counter() - t0, refs


def post(url: str, path: str, body: bytes, ctype: str) -> bytes:
    req = urllib.request.Request(url + path, data=body, headers={"Content-Type": ctype})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return bytes(resp.read())


def jsonrpc(url: str, method: str, params: list[Any]) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).encode()
    answer = json.loads(post(url, "/jsonrpc", body, "application/json"))
    if "error" in answer:
        raise RuntimeError(f"{method}: {answer['error']}")
    return answer["result"]


def round_xmlrpc(url: str) -> dict[str, float | int]:
    """Login with the SDK; VM.get_all_records as raw XML-RPC, so the time on the wire (the
    server's work and the transfer) and the client's decoding (xmlrpc.client.loads, slow in pure
    Python) are told apart; the SDK pays both."""
    t0 = time.perf_counter()
    s = XenAPI.Session(url)
    s.xenapi.login_with_password("root", ROOT_PASSWORD, "2.21", "bench")
    t1 = time.perf_counter()
    body = post(url, "/", xmlrpc.client.dumps((s.handle,), "VM.get_all_records").encode(), "text/xml")
    t2 = time.perf_counter()
    answer: Any = xmlrpc.client.loads(body)[0][0]
    t3 = time.perf_counter()
    s.xenapi.session.logout()
    if answer.get("Status") != "Success":
        raise RuntimeError(f"VM.get_all_records: {answer}")
    return {"login_s": t1 - t0, "get_all_records_s": t2 - t1, "decode_s": t3 - t2,
            "bytes": len(body), "vms": len(answer["Value"])}


def round_jsonrpc(url: str) -> dict[str, float | int]:
    t0 = time.perf_counter()
    ref = jsonrpc(url, "session.login_with_password", ["root", ROOT_PASSWORD, "2.21", "bench"])
    t1 = time.perf_counter()
    body = post(url, "/jsonrpc", json.dumps({"jsonrpc": "2.0", "method": "VM.get_all_records",
                                             "params": [ref], "id": 2}).encode(), "application/json")
    t2 = time.perf_counter()
    answer = json.loads(body)
    t3 = time.perf_counter()
    jsonrpc(url, "session.logout", [ref])
    if "result" not in answer:
        raise RuntimeError(f"VM.get_all_records: {answer}")
    return {"login_s": t1 - t0, "get_all_records_s": t2 - t1, "decode_s": t3 - t2,
            "bytes": len(body), "vms": len(answer["result"])}


def event_latency(url: str, vm: str, rounds: int) -> list[float]:
    """Seconds from just before VM.set_name_label to the watcher's event.from returning it."""
    writer, watcher = login(url, originator="bench-writer"), login(url, originator="bench-watcher")
    token = watcher.xenapi.event_from(["vm"], "", 0.0)["token"]
    out: list[float] = []
    try:
        for i in range(rounds):
            label = f"bench-latency-{i}"
            got: dict[str, Any] = {}

            def watch(tok: str = token, label: str = label) -> None:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    batch = watcher.xenapi.event_from(["vm"], tok, 10.0)
                    tok = batch["token"]
                    for ev in batch["events"]:
                        if ev["ref"] == vm and ev.get("snapshot", {}).get("name_label") == label:
                            got["t"], got["token"] = time.perf_counter(), tok
                            return
            th = threading.Thread(target=watch)
            th.start()
            time.sleep(0.3)  # let the watcher block in event.from
            t0 = time.perf_counter()
            writer.xenapi.VM.set_name_label(vm, label)
            th.join(40)
            if "t" not in got:
                raise RuntimeError(f"no event for VM.set_name_label round {i}")
            out.append(got["t"] - t0)
            token = got["token"]
    finally:
        writer.xenapi.session.logout()
        watcher.xenapi.session.logout()
    return out


def wait_up(host: Host, name: str, offset: int, t0: float) -> float:
    log = host.paths.console_log(name)
    while time.perf_counter() - t0 < BOOT_TIMEOUT:
        try:
            with open(log, "rb") as f:
                f.seek(offset)
                if UP_LINE.encode() in f.read():
                    return time.perf_counter() - t0
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    raise RuntimeError(f"{name}: no '{UP_LINE}' within {BOOT_TIMEOUT} s")


def log_size(host: Host, name: str) -> int:
    log = host.paths.console_log(name)
    return log.stat().st_size if log.exists() else 0


def xl_twin(host: Host, session: Any, vm: str, name: str) -> Path:
    """An xl config for the same guest as ``vm``: its kernel, ramdisk, args, memory, vCPUs and a
    raw disk of its first disk's size."""
    x = session.xenapi
    rec = x.VM.get_record(vm)
    disks = [x.VBD.get_VDI(v) for v in rec["VBDs"] if x.VBD.get_type(v) == "Disk"]
    lines = [f'name = "{name}"', f"memory = {int(rec['memory_static_max']) // MiB}",
             f"vcpus = {int(rec['VCPUs_at_startup'])}", f'kernel = "{rec["PV_kernel"]}"',
             f'ramdisk = "{rec["PV_ramdisk"]}"', f'extra = "{rec["PV_args"]}"']
    if disks:
        img = host.paths.root / f"{name}.img"
        with open(img, "wb") as f:
            f.truncate(int(x.VDI.get_virtual_size(disks[0])))
        lines.append(f'disk = ["format=raw, vdev=xvda, access=rw, target={img}"]')
    cfg = host.paths.root / f"{name}.cfg"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def boot_rounds(host: Host, url: str, rounds: int) -> tuple[list[float], list[float]]:
    s = login(url, originator="bench-boot")
    x = s.xenapi
    vm = vm_from_template(s, "bench-xapi")
    cfg = xl_twin(host, s, vm, "bench-xl")
    xapi_t: list[float] = []
    xl_t: list[float] = []
    try:
        for _ in range(rounds):
            # the console log is named after the domain; the VM's domain takes its name_label
            off = log_size(host, "bench-xapi")
            t0 = time.perf_counter()
            x.VM.start(vm, False, False)
            xapi_t.append(wait_up(host, "bench-xapi", off, t0))
            x.VM.hard_shutdown(vm)

            off = log_size(host, "bench-xl")
            t0 = time.perf_counter()
            host.xl("create", "-q", str(cfg))
            xl_t.append(wait_up(host, "bench-xl", off, t0))
            host.xl("destroy", "bench-xl")
    finally:
        destroy_vm(s, vm)
        x.session.logout()
    return xapi_t, xl_t


def summary(ts: list[float]) -> dict[str, float]:
    return {"median": statistics.median(ts), "min": min(ts), "max": max(ts)}


def row(name: str, ts: list[float], scale: float = 1.0, unit: str = "s") -> str:
    m = summary(ts)
    return f"{name:<34}{m['median'] * scale:>10.3f}{m['min'] * scale:>10.3f}{m['max'] * scale:>10.3f}  {unit}"


#: The README table's "what" (bench/table.py).
WHAT = ("XenAPI with 1000 VMs in the database: VM.get_all_records on the wire (the client's decoding "
        "apart), event.from latency from VM.set_name_label to its event, VM.start vs `xl create` of "
        "the same guest to its up line")


def figures(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The headline figures (pyxen.testing.bench.figure), from the rounds kept in the result."""
    out = [figure(f"{proto} VM.get_all_records", "ms", value=result[proto]["get_all_records"]["median"] * 1000,
                  goal=("<=", GAR_GOAL_S * 1000)) for proto in ("xmlrpc", "jsonrpc") if proto in result]
    if "event_latency_s" in result:
        out.append(figure("event.from latency", "ms", value=result["event_latency_s"]["median"] * 1000))
    if "boot" in result:
        boot = result["boot"]
        out.append(figure("VM.start / xl create", "s", pyxen=statistics.median(boot["vm_start_s"]),
                          reference=statistics.median(boot["xl_create_s"]), ratio=boot["ratio"],
                          goal=("<=", boot["goal"])))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vms", type=int, default=1000, help="VMs to create before the call rounds")
    ap.add_argument("--rounds", type=int, default=20, help="login + get_all_records rounds per protocol")
    ap.add_argument("--events", type=int, default=20, help="event latency rounds")
    ap.add_argument("--boots", type=int, default=3, help="VM.start / xl create rounds each (0: skip)")
    ns = ap.parse_args()
    facts = run_facts(ROOT)
    with started_host(build(), prefix="pyxen-bx-") as host:
        set_root_password(host)
        url = xapi_url(host)
        s = login(url, originator="bench-seed")
        seed_s, refs = seed(s, ns.vms)
        total_vms = len(s.xenapi.VM.get_all())
        s.xenapi.session.logout()

        calls: dict[str, list[dict[str, float | int]]] = {"xmlrpc": [], "jsonrpc": []}
        fns: dict[str, Callable[[str], dict[str, float | int]]] = {"xmlrpc": round_xmlrpc,
                                                                   "jsonrpc": round_jsonrpc}
        for _ in range(ns.rounds):
            for proto, fn in fns.items():
                r = fn(url)
                if r["vms"] != total_vms:
                    raise RuntimeError(f"{proto}: get_all_records gave {r['vms']} VMs, VM.get_all {total_vms}")
                calls[proto].append(r)
        latency = event_latency(url, refs[0], ns.events) if refs else []
        xapi_boot, xl_boot = boot_rounds(host, url, ns.boots) if ns.boots > 0 else ([], [])

    print(f"xapi with {total_vms} VMs in the database ({ns.vms} created in {seed_s:.1f} s, "
          f"{ns.vms / seed_s:.0f} VM.create/s)")
    print(f"{'measure':<34}{'median':>10}{'min':>10}{'max':>10}")
    result: dict[str, Any] = {**facts, "vms_created": ns.vms, "vms_total": total_vms, "seed_s": seed_s}
    for proto, rs in calls.items():
        gar = [float(r["get_all_records_s"]) for r in rs]
        both = [float(r["login_s"]) + float(r["get_all_records_s"]) for r in rs]
        print(row(f"{proto} login", [float(r["login_s"]) for r in rs], 1000, "ms"))
        print(row(f"{proto} VM.get_all_records (wire)", gar, 1000, "ms"))
        print(row(f"{proto} client decoding", [float(r["decode_s"]) for r in rs], 1000, "ms"))
        print(row(f"{proto} login+get_all_records /s", [1 / b for b in both], 1, "calls/s"))
        result[proto] = {"rounds": rs, "get_all_records": summary(gar),
                         "login_plus_get_all_records_per_s": 1 / statistics.median(both),
                         "goal_get_all_records_s": GAR_GOAL_S,
                         "goal_met": statistics.median(gar) <= GAR_GOAL_S}
    if latency:
        print(row("event.from latency (set_name_label)", latency, 1000, "ms"))
        result["event_latency_s"] = {"rounds": latency, **summary(latency)}
    ratio = statistics.median(xapi_boot) / statistics.median(xl_boot) if xapi_boot else float("nan")
    if xapi_boot:
        print(row("VM.start to guest up", xapi_boot))
        print(row("xl create to guest up", xl_boot))
    for proto in calls:
        med = result[proto]["get_all_records"]["median"]
        print(f"{proto} VM.get_all_records median {med * 1000:.1f} ms "
              f"(goal <= {GAR_GOAL_S * 1000:.0f} ms: {'met' if med <= GAR_GOAL_S else 'NOT met'})")
    if xapi_boot:
        print(f"ratio VM.start/xl create (medians): {ratio:.3f}  (goal <= {BOOT_GOAL}: "
              f"{'met' if ratio <= BOOT_GOAL else 'NOT met'})")
        result["boot"] = {"vm_start_s": xapi_boot, "xl_create_s": xl_boot, "ratio": ratio, "goal": BOOT_GOAL}
    out = ROOT / "bench" / "results" / "xapi.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result.update(what=WHAT, figures=figures(result))
    out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
