#!/usr/bin/env python3
"""XenAPI development example: a guest's whole life over the API, as XenServer's SDK samples do it.

Logs in, clones the "Debian ..." template, provisions its disks on the default SR, gives it a VIF
on xenbr0, starts it, waits through events (event.from on VM and VM_guest_metrics) until the guest
agent reports its IP address (VM_guest_metrics.networks["0/ip"]), prints the address, shuts the
guest down and destroys the VM and its disks.

    python3 examples/xenapi_demo.py --url http://127.0.0.1:PORT --user root --password PW

The URL, user and password may also come from XAPI_URL, XAPI_USER and XAPI_PASSWORD. Needs the
official SDK (``pip install XenAPI``). Exit status 0 on success; 1 with a one-line error otherwise.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
import xml.etree.ElementTree as ET
from typing import Any

import XenAPI  # type: ignore[import-untyped]

NULL = "OpaqueRef:NULL"


def log(msg: str) -> None:
    print(msg, flush=True)


def find_template(x: Any, prefix: str) -> str:
    """The first template (by name) whose name_label starts with ``prefix``."""
    found = sorted((rec["name_label"], ref) for ref, rec in x.VM.get_all_records().items()
                   if rec["is_a_template"] and rec["name_label"].startswith(prefix))
    if not found:
        raise RuntimeError(f"no template whose name starts with {prefix!r}")
    return found[0][1]


def provision(x: Any, vm: str) -> None:
    """Put the template's disks that name no SR on the pool's default SR, then VM.provision
    (which creates the VDIs and VBDs listed in other_config "disks" and clears is_a_template)."""
    other = x.VM.get_other_config(vm)
    if "disks" in other:
        default_sr = x.pool.get_default_SR(x.pool.get_all()[0])
        sr_uuid = x.SR.get_uuid(default_sr)
        root = ET.fromstring(other["disks"])
        for disk in root.iter("disk"):
            if not disk.get("sr"):
                disk.set("sr", sr_uuid)
        x.VM.remove_from_other_config(vm, "disks")
        x.VM.add_to_other_config(vm, "disks", ET.tostring(root, encoding="unicode"))
    x.VM.provision(vm)


def add_vif(x: Any, vm: str, bridge: str) -> str:
    """VIF 0 on the network whose bridge is ``bridge``; MAC "" lets the server make one."""
    nets = [ref for ref, rec in x.network.get_all_records().items() if rec["bridge"] == bridge]
    if not nets:
        raise RuntimeError(f"no network on bridge {bridge}")
    return str(x.VIF.create({"device": "0", "network": nets[0], "VM": vm, "MAC": "", "MTU": "1500",
                             "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}}))


def wait_for_ip(x: Any, vm: str, token: str, timeout: float) -> str:
    """Follow event.from from ``token`` until the VM's guest metrics carry networks["0/ip"].

    The VM event tells which VM_guest_metrics object is the VM's (VM.guest_metrics is NULL until
    the guest agent first reports); that object's events then bring the networks map."""
    deadline = time.monotonic() + timeout
    gm = x.VM.get_guest_metrics(vm)
    if gm != NULL:  # the agent may have reported before we subscribed
        ip = x.VM_guest_metrics.get_networks(gm).get("0/ip")
        if ip:
            return str(ip)
    while (left := deadline - time.monotonic()) > 0:
        batch = x.event_from(["vm", "vm_guest_metrics"], token, float(min(left, 30.0)))
        token = batch["token"]
        for ev in batch["events"]:
            if ev["operation"] == "del":
                if ev["ref"] == vm:
                    raise RuntimeError("the VM was destroyed while we waited for its IP")
                continue
            if ev["class"] == "vm" and ev["ref"] == vm:
                gm = ev["snapshot"]["guest_metrics"]
                if ev["snapshot"]["power_state"] == "Halted":
                    raise RuntimeError("the VM halted before reporting an IP address")
                if gm != NULL:
                    ip = x.VM_guest_metrics.get_networks(gm).get("0/ip")
                    if ip:
                        return str(ip)
            elif ev["class"] == "vm_guest_metrics" and ev["ref"] == gm and gm != NULL:
                ip = ev["snapshot"]["networks"].get("0/ip")
                if ip:
                    return str(ip)
    raise RuntimeError(f"no IP address reported within {timeout:.0f} s")


def destroy(x: Any, vm: str) -> None:
    """Halt if needed, destroy the VM (which takes its VBDs and VIFs), then its disks."""
    if x.VM.get_power_state(vm) != "Halted":
        x.VM.hard_shutdown(vm)
    vdis = [x.VBD.get_VDI(vbd) for vbd in x.VM.get_VBDs(vm) if x.VBD.get_type(vbd) == "Disk"]
    x.VM.destroy(vm)
    for vdi in vdis:
        if vdi != NULL:
            x.VDI.destroy(vdi)


def run(ns: argparse.Namespace) -> str:
    session = XenAPI.Session(ns.url)
    session.xenapi.login_with_password(ns.user, ns.password, "2.21", "xenapi_demo.py")
    x = session.xenapi
    vm: str | None = None
    try:
        pool = x.pool.get_all()[0]
        host = x.pool.get_master(pool)
        log(f"logged in to {x.host.get_name_label(host)} "
            f"(API {x.host.get_API_version_major(host)}.{x.host.get_API_version_minor(host)})")
        template = find_template(x, ns.template)
        vm = str(x.VM.clone(template, ns.name))
        log(f"cloned {x.VM.get_name_label(template)!r} as {ns.name!r} ({x.VM.get_uuid(vm)})")
        provision(x, vm)
        log(f"provisioned: {len(x.VM.get_VBDs(vm))} disk(s)")
        add_vif(x, vm, ns.bridge)
        # the token before the start: every change after it reaches us, none is missed
        token = x.event_from(["vm", "vm_guest_metrics"], "", 0.0)["token"]
        t0 = time.monotonic()
        x.VM.start(vm, False, False)
        log(f"started: domid {x.VM.get_domid(vm)}")
        ip = wait_for_ip(x, vm, token, ns.timeout)
        log(f"guest IP address: {ip} ({time.monotonic() - t0:.1f} s after VM.start)")
        try:
            x.VM.clean_shutdown(vm)
            log("shut down (clean)")
        except XenAPI.Failure as e:
            log(f"clean shutdown refused ({e.details[0]}); hard shutdown")
            x.VM.hard_shutdown(vm)
        destroy(x, vm)
        vm = None
        log("destroyed the VM and its disks")
        return ip
    finally:
        if vm is not None:
            try:
                destroy(x, vm)
            except Exception as e:  # report the first error, not the clean-up's
                log(f"clean-up failed: {e}")
        x.session.logout()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default=os.environ.get("XAPI_URL"), help="e.g. http://127.0.0.1:PORT (XAPI_URL)")
    ap.add_argument("--user", default=os.environ.get("XAPI_USER", "root"), help="(XAPI_USER; root)")
    ap.add_argument("--password", default=os.environ.get("XAPI_PASSWORD"), help="(XAPI_PASSWORD)")
    ap.add_argument("--name", default="xenapi-demo", help="the new VM's name_label")
    ap.add_argument("--template", default="Debian", help="the template's name prefix")
    ap.add_argument("--bridge", default="xenbr0", help="the bridge of the network for VIF 0")
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the guest's IP")
    ns = ap.parse_args(argv)
    if not ns.url or ns.password is None:
        ap.error("the URL and the password are needed (--url/--password or XAPI_URL/XAPI_PASSWORD)")
    # every call has a deadline: the longest is one event.from (30 s at most) plus slack
    socket.setdefaulttimeout(120.0)
    try:
        run(ns)
    except XenAPI.Failure as e:
        print(f"xenapi_demo: XenAPI error: {' '.join(map(str, e.details))}", file=sys.stderr)
        return 1
    except (RuntimeError, OSError) as e:
        print(f"xenapi_demo: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
