"""The issue's "VM lifecycle on real guests": pyxen's XenAPI server driven with the official
``XenAPI`` client (XML-RPC), as a user would, against a started host and real demo guests.

A VM cloned from the "Debian Bookworm 12" template is provisioned (a real image file in the SR
folder), given a NIC on xenbr0 and two vCPUs, started, and taken through every lifecycle
message; after each step its power_state and allowed_operations are checked against xapi's
lifecycle table, ``xl list`` and the guest's own console (a counter every 100 ms, and each
second the online CPUs, block devices and NICs the guest sees), and event.from must have
reported the change. Wrong calls fail with xapi's error and change nothing. Then xl and xapi
are checked to agree both ways, and xapi is killed with SIGKILL in the middle of an
Async.VM.clean_shutdown.

TCG boots are slow: one host serves the module and there are few boots. The first VM has a vif
on xenbr0: run under ``flock /tmp/pyxen-net.lock``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import XenAPI

from pyxen.host.services import by_name, connects, running_pid
from pyxen.images.demo import DemoImage
from pyxen.testing.host import UP_LINE, Host, qemu_pids_under, started_host
from pyxen.xenstore.client import XenstoreClient

pytestmark = pytest.mark.integration

MiB = 1 << 20
NULL = "OpaqueRef:NULL"
TEMPLATE = "Debian Bookworm 12"
PASSWORD = "xint-secret"
#: A counter every 100 ms; each second the online CPUs, virtual disks and NICs the guest sees.
SCRIPT = ('i=0; while true; do echo "tick $i"; i=$((i+1)); sleep 0.1; done & '
          'while true; do echo "status cpus=$(cat /sys/devices/system/cpu/online)'
          ' disks=$(ls /sys/block | grep ^vd | tr "\\n" +) nics=$(ls /sys/class/net | grep -v ^lo | tr "\\n" +)"; '
          'sleep 1; done &')

# allowed_operations per power state (xapi_vm_lifecycle.ml's allowed_power_states, less its
# ignored_ops, for a non-template VM), as far as pyxen builds the operations.
HALTED_OPS = {"changing_dynamic_range", "changing_static_range", "clone", "copy", "destroy", "start", "start_on"}
RUNNING_OPS = {"changing_VCPUs_live", "changing_dynamic_range", "clean_reboot", "clean_shutdown", "hard_reboot",
               "hard_shutdown", "pause", "pool_migrate", "suspend"}
PAUSED_OPS = {"hard_reboot", "hard_shutdown", "unpause"}
SUSPENDED_OPS = {"destroy", "hard_shutdown", "resume", "resume_on"}
OPS = {"Halted": HALTED_OPS, "Running": RUNNING_OPS, "Paused": PAUSED_OPS, "Suspended": SUSPENDED_OPS}


def wait_for(cond: Callable[[], Any], what: Callable[[], str] | str, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise AssertionError(what() if callable(what) else what)
        time.sleep(0.2)


class Guest:
    """What a guest printed: its console log (and, after a same-host migration, the log
    xenconsoled opened for ``<name>--incoming``)."""

    def __init__(self, host: Host, name: str) -> None:
        self.host, self.name = host, name

    def text(self) -> str:
        return self.host.console_text(self.name) + self.host.console_text(f"{self.name}--incoming")

    def ticks(self) -> list[int]:
        return [int(n) for n in re.findall(r"^tick (\d+)\r?$", self.text(), re.M)]

    def status(self) -> dict[str, str]:
        found = re.findall(r"^status (cpus=\S* disks=\S* nics=\S*)\r?$", self.text(), re.M)
        return dict(kv.split("=", 1) for kv in found[-1].split()) if found else {}

    def ups(self) -> int:
        return len(re.findall(rf"^{UP_LINE}\r?$", self.text(), re.M))

    def wait_up(self, count: int = 1) -> None:
        wait_for(lambda: self.ups() >= count, lambda: f"{self.name}: not up {count} time(s):\n{self.text()[-1500:]}",
                 timeout=180)

    def counting_on(self, n: int = 5) -> None:
        now = max(self.ticks(), default=-1)
        wait_for(lambda: max(self.ticks(), default=-1) >= now + n,
                 lambda: f"{self.name} stopped counting at {now}:\n{self.text()[-1500:]}")

    def wait_status(self, key: str, value: str) -> None:
        wait_for(lambda: self.status().get(key) == value,
                 lambda: f"{self.name}: {key} is {self.status().get(key)!r}, not {value!r}:\n{self.text()[-800:]}")


class Events:
    """event.from with a token: every call reports what changed since the last one."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.token = self._from(["vm"], "", 0.1)["token"]

    def _from(self, classes: list[str], token: str, timeout: float) -> dict[str, Any]:
        return getattr(self.api.event, "from")(classes, token, timeout)  # type: ignore[no-any-return]

    def expect(self, ref: str, operation: str = "mod", timeout: float = 10.0,
               **fields: Any) -> dict[str, Any]:
        """The next event on ``ref`` with ``operation`` whose snapshot has ``fields``."""
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            got = self._from(["vm"], self.token, 1.0)
            self.token = got["token"]
            for ev in got["events"]:
                if ev["ref"] != ref:
                    continue
                seen.append((ev["operation"], {k: ev.get("snapshot", {}).get(k) for k in fields}))
                if ev["operation"] == operation and all(ev["snapshot"].get(k) == v for k, v in fields.items()):
                    return ev  # type: ignore[no-any-return]
        raise AssertionError(f"no {operation} event on {ref} with {fields}; saw {seen}")


def failure(call: Callable[..., Any], *args: Any) -> list[str]:
    """The ErrorDescription of a call that must fail."""
    try:
        call(*args)
    except XenAPI.Failure as err:
        return list(err.details)
    raise AssertionError(f"{call} {args} did not fail")


def wait_task(api: Any, task: str, timeout: float = 240) -> str:
    wait_for(lambda: api.task.get_status(task) != "pending", f"task {task} still pending", timeout)
    return str(api.task.get_status(task))


@pytest.fixture(scope="module")
def xhost(demo_image: DemoImage) -> Iterator[Host]:
    with started_host(demo_image, prefix="pyxen-xv") as h:
        h.run("pyxen", "host", "passwd", input=PASSWORD + "\n", check=True)
        yield h


def xapi_url(host: Host) -> str:
    status = host.run("pyxen", "host", "status")
    urls = re.findall(r"^xapi: (http://\S+)$", status.stdout, re.M)
    assert urls, status.stdout
    return urls[0]


@pytest.fixture(scope="module")
def session(xhost: Host) -> Iterator[Any]:
    s = XenAPI.Session(xapi_url(xhost))
    s.xenapi.login_with_password("root", PASSWORD, "2.21", "pyxen-test_xapi_vm")
    yield s
    try:
        s.xenapi.session.logout()
    except Exception:
        pass


def xl_row(host: Host, name: str) -> dict[str, str] | None:
    return host.domains().get(name)


def xl_uuid(host: Host, name: str) -> str:
    return str(json.loads(host.xl("list", "-l", name).stdout)[0]["config"]["c_info"]["uuid"])


def check_state(api: Any, vm: str, state: str) -> dict[str, Any]:
    rec = api.VM.get_record(vm)
    assert rec["power_state"] == state, rec["power_state"]
    assert set(rec["allowed_operations"]) == OPS[state], (state, sorted(rec["allowed_operations"]))
    assert rec["current_operations"] == {}
    if state == "Halted":
        assert rec["domid"] == "-1" and rec["resident_on"] == NULL
    return rec  # type: ignore[no-any-return]


def console_follows(api: Any, vm: str) -> None:
    """The VM's console record names its current domain."""
    locations = [api.console.get_location(c) for c in api.VM.get_consoles(vm)]
    assert locations == [f"pyxen://console/{api.VM.get_domid(vm)}"], locations


def unchanged(api: Any, vm: str, before: dict[str, Any]) -> None:
    assert api.VM.get_record(vm) == before


def sr_folder(api: Any) -> Path:
    pool = api.pool.get_all()[0]
    sr = api.pool.get_default_SR(pool)
    return Path(api.SR.get_sm_config(sr)["path"])


def new_vm(api: Any, name: str, script: str) -> str:
    """A VM cloned from the template and provisioned, booting the demo guest with ``script``."""
    template = api.VM.get_by_name_label(TEMPLATE)[0]
    vm = api.VM.clone(template, name)
    api.VM.provision(vm)
    if script:
        args = api.VM.get_PV_args(vm)
        api.VM.set_PV_args(vm, f"{args} pyxen.run={base64.b64encode(script.encode()).decode()}")
    return str(vm)


def test_a_template_vm_through_its_lifecycle(xhost: Host, session: Any) -> None:
    api, host = session.xenapi, xhost
    ev = Events(api)
    template = api.VM.get_by_name_label(TEMPLATE)
    assert len(template) == 1
    template = template[0]
    before = api.VM.get_record(template)
    assert before["is_a_template"] and before["is_default_template"]
    assert failure(api.VM.start, template, False, False) == ["VM_IS_TEMPLATE", template, "start"]
    unchanged(api, template, before)

    # clone + provision: a real (sparse) 1 GiB image in the SR folder, VDI and VBD linked
    vm = api.VM.clone(template, "xint")
    assert api.VM.get_is_a_template(vm) and "provision" in api.VM.get_allowed_operations(vm)
    ev.expect(vm, "add", name_label="xint")
    api.VM.provision(vm)
    rec = check_state(api, vm, "Halted")
    assert not rec["is_a_template"] and len(rec["VBDs"]) == 1
    vbd = api.VBD.get_record(rec["VBDs"][0])
    assert vbd["VM"] == vm and vbd["userdevice"] == "0" and vbd["bootable"] and vbd["type"] == "Disk"
    vdi = api.VDI.get_record(vbd["VDI"])
    assert rec["VBDs"][0] in vdi["VBDs"] and vdi["virtual_size"] == str(1 << 30)
    assert vbd["VDI"] in api.SR.get_VDIs(vdi["SR"])
    image = sr_folder(api) / f"{vdi['location']}.img"
    assert image.stat().st_size == 1 << 30 and image.stat().st_blocks * 512 < 1 << 20
    assert failure(api.VM.provision, vm) == ["ONLY_PROVISION_TEMPLATE"]

    # two vCPUs at most (one at start), the demo guest's script, a NIC on xenbr0
    api.VM.set_VCPUs_max(vm, "2")
    api.VM.set_PV_args(vm, api.VM.get_PV_args(vm) + " pyxen.run=" + base64.b64encode(SCRIPT.encode()).decode())
    xenbr0 = [n for n, r in api.network.get_all_records().items() if r["bridge"] == "xenbr0"]
    assert len(xenbr0) == 1
    vif = api.VIF.create({"VM": vm, "network": xenbr0[0], "device": "0", "MAC": "", "MTU": "1500",
                          "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}})
    assert re.fullmatch(r"00:16:3e(:[0-9a-f]{2}){3}", api.VIF.get_MAC(vif))

    # wrong calls on a halted VM: xapi's error, nothing changed
    before = check_state(api, vm, "Halted")
    assert failure(api.VM.pause, vm) == ["VM_BAD_POWER_STATE", vm, "running", "halted"]
    assert failure(api.VM.resume, vm, False, False) == ["VM_BAD_POWER_STATE", vm, "suspended", "halted"]
    assert failure(api.VM.hard_shutdown, vm) == ["VM_BAD_POWER_STATE", vm, "paused, suspended, running", "halted"]
    unchanged(api, vm, before)

    # Async.VM.start: a task that ends success; xl list shows the domain under its name and uuid
    task = api.Async.VM.start(vm, False, False)
    assert wait_task(api, task) == "success", api.task.get_error_info(task)
    rec = check_state(api, vm, "Running")
    ev.expect(vm, power_state="Running")
    uuid = rec["uuid"]
    row = xl_row(host, "xint")
    assert row is not None and row["id"] == rec["domid"] and row["vcpus"] == "1"
    assert xl_uuid(host, "xint") == uuid
    assert api.VIF.get_currently_attached(vif) and api.VBD.get_currently_attached(rec["VBDs"][0])
    guest = Guest(host, "xint")
    guest.wait_up()
    guest.wait_status("nics", "eth0+")
    assert guest.status() == {"cpus": "0", "disks": "vda+", "nics": "eth0+"}
    guest.counting_on()
    # a bad Async call: the task ends failure with xapi's error
    task = api.Async.VM.start(vm, False, False)
    assert wait_task(api, task) == "failure"
    assert api.task.get_error_info(task) == ["VM_BAD_POWER_STATE", vm, "halted", "running"]
    before = check_state(api, vm, "Running")
    assert failure(api.VM.destroy, vm) == ["VM_BAD_POWER_STATE", vm, "halted, suspended", "running"]
    assert failure(api.VM.unpause, vm) == ["VM_BAD_POWER_STATE", vm, "paused", "running"]
    unchanged(api, vm, before)

    # pause / unpause
    api.VM.pause(vm)
    check_state(api, vm, "Paused")
    ev.expect(vm, power_state="Paused")
    assert xl_row(host, "xint")["state"][2] == "p"  # type: ignore[index]
    time.sleep(0.5)
    frozen = max(guest.ticks())
    time.sleep(1.0)
    assert max(guest.ticks()) == frozen
    api.VM.unpause(vm)
    check_state(api, vm, "Running")
    ev.expect(vm, power_state="Running")
    assert xl_row(host, "xint")["state"][2] != "p"  # type: ignore[index]
    guest.counting_on()

    # suspend / resume: a suspend VDI while suspended, removed after; the counter goes on
    api.VM.suspend(vm)
    rec = check_state(api, vm, "Suspended")
    ev.expect(vm, power_state="Suspended")
    assert xl_row(host, "xint") is None
    suspend_vdi = rec["suspend_VDI"]
    assert suspend_vdi != NULL and api.VDI.get_type(suspend_vdi) == "suspend"
    suspend_image = sr_folder(api) / f"{api.VDI.get_location(suspend_vdi)}.img"
    assert suspend_image.stat().st_size > 0
    stopped = max(guest.ticks())
    api.VM.resume(vm, False, False)
    rec = check_state(api, vm, "Running")
    ev.expect(vm, power_state="Running", suspend_VDI=NULL)
    assert rec["suspend_VDI"] == NULL and not suspend_image.exists()
    assert failure(api.VDI.get_record, suspend_vdi) == ["HANDLE_INVALID", "VDI", suspend_vdi]
    assert xl_row(host, "xint")["id"] == rec["domid"]  # type: ignore[index]
    guest.counting_on()
    assert min(t for t in guest.ticks() if t > stopped) <= stopped + 2 and guest.ticks().count(0) == 1

    # pool_migrate to this same host: a new domid, the guest runs on
    old = rec["domid"]
    mark = len(guest.text())
    api.VM.pool_migrate(vm, api.VM.get_resident_on(vm), {"live": "true"})
    rec = check_state(api, vm, "Running")
    assert rec["domid"] != old
    ev.expect(vm, domid=rec["domid"])
    assert xl_row(host, "xint")["id"] == rec["domid"] and xl_uuid(host, "xint") == uuid  # type: ignore[index]
    console_follows(api, vm)
    guest.counting_on()
    after = [int(n) for n in re.findall(r"^tick (\d+)\r?$", guest.text()[mark:], re.M)]
    assert after and 0 not in after and guest.ups() == 1

    # memory: the balloon target follows memory_dynamic_max, and xl list's Mem with it
    before = api.VM.get_record(vm)
    for lo, hi in ((32, 96), (96, 64), (96, 256)):  # static_min 64 MiB, static_max 128 MiB
        assert failure(api.VM.set_memory_dynamic_range, vm, str(lo * MiB), str(hi * MiB)) == [
            "MEMORY_CONSTRAINT_VIOLATION_ORDER"]
    unchanged(api, vm, before)
    assert xl_row(host, "xint")["mem"] == "128"  # type: ignore[index]
    api.VM.set_memory_dynamic_range(vm, str(80 * MiB), str(96 * MiB))
    rec = check_state(api, vm, "Running")
    assert (rec["memory_dynamic_min"], rec["memory_dynamic_max"]) == (str(80 * MiB), str(96 * MiB))
    ev.expect(vm, memory_dynamic_max=str(96 * MiB))
    wait_for(lambda: xl_row(host, "xint")["mem"] == "96", lambda: f"mem: {xl_row(host, 'xint')}")  # type: ignore[index]

    # vCPUs: the second one comes online inside the guest
    api.VM.set_VCPUs_number_live(vm, "2")
    check_state(api, vm, "Running")
    ev.expect(vm, VCPUs_at_startup="2")
    guest.wait_status("cpus", "0-1")
    assert xl_row(host, "xint")["vcpus"] == "2"  # type: ignore[index]
    assert api.VM_metrics.get_VCPUs_number(api.VM.get_metrics(vm)) == "2"
    before = api.VM.get_record(vm)
    for bad in ("3", "0"):
        assert failure(api.VM.set_VCPUs_number_live, vm, bad) == [
            "INVALID_VALUE", "VCPU values must satisfy: 0 < VCPUs ≤ VCPUs_max", bad]
    unchanged(api, vm, before)

    # a second disk: VDI.create makes a sparse file, VBD.plug hotplugs it into the guest
    sr = api.pool.get_default_SR(api.pool.get_all()[0])
    disk = api.VDI.create({"name_label": "second", "SR": sr, "virtual_size": str(8 * MiB), "type": "user",
                           "sharable": False, "read_only": False, "other_config": {}})
    disk_file = sr_folder(api) / f"{api.VDI.get_location(disk)}.img"
    assert disk_file.stat().st_size == 8 * MiB and disk_file.stat().st_blocks == 0
    vbd2 = api.VBD.create({"VM": vm, "VDI": disk, "userdevice": "1", "bootable": False, "mode": "RW", "type": "Disk",
                           "empty": False, "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}})
    assert not api.VBD.get_currently_attached(vbd2) and api.VBD.get_allowed_operations(vbd2) == ["plug"]
    api.VBD.plug(vbd2)
    assert api.VBD.get_currently_attached(vbd2) and api.VBD.get_device(vbd2) == "xvdb"
    guest.wait_status("disks", "vda+vdb+")
    assert failure(api.VDI.destroy, disk) == ["VDI_IN_USE", disk, "destroy"]
    api.VBD.unplug(vbd2)
    assert not api.VBD.get_currently_attached(vbd2)
    guest.wait_status("disks", "vda+")
    api.VBD.destroy(vbd2)
    api.VDI.destroy(disk)
    assert not disk_file.exists() and disk not in api.SR.get_VDIs(sr)

    # a second NIC, hotplugged and unplugged
    vif2 = api.VIF.create({"VM": vm, "network": xenbr0[0], "device": "1", "MAC": "00:16:3e:5a:01:02", "MTU": "1500",
                           "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}})
    assert api.VIF.get_allowed_operations(vif2) == ["plug"]
    api.VIF.plug(vif2)
    assert api.VIF.get_currently_attached(vif2)
    guest.wait_status("nics", "eth0+eth1+")
    assert len(host.xl("network-list", "xint").stdout.splitlines()) == 3
    assert failure(api.VIF.destroy, vif2)[0] == "VIF_IN_USE"
    api.VIF.unplug(vif2)
    guest.wait_status("nics", "eth0+")
    api.VIF.destroy(vif2)
    assert api.VM.get_VIFs(vm) == [vif]

    # clean_reboot and hard_reboot: a new domain each time, the guest boots again
    for n, reboot in ((2, api.VM.clean_reboot), (3, api.VM.hard_reboot)):
        old = api.VM.get_domid(vm)
        reboot(vm)
        rec = check_state(api, vm, "Running")
        assert rec["domid"] != old and xl_row(host, "xint")["id"] == rec["domid"]  # type: ignore[index]
        ev.expect(vm, domid=rec["domid"])
        guest.wait_up(n)
        console_follows(api, vm)
        # the new domain is built from the VM as it is now: two vCPUs, memory_dynamic_max
        assert xl_row(host, "xint")["vcpus"] == "2"  # type: ignore[index]
        guest.wait_status("cpus", "0-1")
        wait_for(lambda: xl_row(host, "xint")["mem"] == "96", lambda: f"mem: {xl_row(host, 'xint')}")  # type: ignore[index]
    assert "pyxen: reboot requested" in guest.text()
    guest.wait_status("nics", "eth0+")
    assert len(host.xl("network-list", "xint").stdout.splitlines()) == 2

    # hard_shutdown of a suspended VM drops its suspend image; it starts afresh after
    api.VM.suspend(vm)
    suspend_vdi = api.VM.get_suspend_VDI(vm)
    suspend_image = sr_folder(api) / f"{api.VDI.get_location(suspend_vdi)}.img"
    assert suspend_image.exists()
    api.VM.hard_shutdown(vm)
    rec = check_state(api, vm, "Halted")
    ev.expect(vm, power_state="Halted")
    assert rec["suspend_VDI"] == NULL and not suspend_image.exists()
    assert failure(api.VDI.get_record, suspend_vdi) == ["HANDLE_INVALID", "VDI", suspend_vdi]
    api.VM.start(vm, False, False)
    check_state(api, vm, "Running")
    guest.wait_up(4)

    # Async.VM.clean_shutdown; a call meanwhile finds the operation in progress
    task = api.Async.VM.clean_shutdown(vm)
    wait_for(lambda: api.VM.get_current_operations(vm), "clean_shutdown never in current_operations", 10)
    assert api.VM.get_current_operations(vm) == {task: "clean_shutdown"}
    assert set(api.VM.get_allowed_operations(vm)) <= {"hard_shutdown", "hard_reboot"}  # (is_allowed_concurrently)
    assert failure(api.VM.pause, vm) == ["OTHER_OPERATION_IN_PROGRESS", "VM", vm, "clean_shutdown", task]
    assert wait_task(api, task) == "success", api.task.get_error_info(task)
    check_state(api, vm, "Halted")
    ev.expect(vm, power_state="Halted")
    assert "pyxen: shutdown requested" in guest.text() and xl_row(host, "xint") is None
    assert not api.VIF.get_currently_attached(vif)

    # started paused (no boot to wait for), then hard_shutdown
    api.VM.start(vm, True, False)
    check_state(api, vm, "Paused")
    ev.expect(vm, power_state="Paused")
    assert xl_row(host, "xint")["state"][2] == "p"  # type: ignore[index]
    api.VM.hard_shutdown(vm)
    check_state(api, vm, "Halted")
    ev.expect(vm, power_state="Halted")
    assert xl_row(host, "xint") is None

    # destroy: the VM, its VBDs and VIFs go; its VDI stays (xapi's VM.destroy)
    vbds, vifs = api.VM.get_VBDs(vm), api.VM.get_VIFs(vm)
    api.VM.destroy(vm)
    ev.expect(vm, "del")
    assert failure(api.VM.get_record, vm) == ["HANDLE_INVALID", "VM", vm]
    assert all(failure(api.VBD.get_record, v)[0] == "HANDLE_INVALID" for v in vbds)
    assert all(failure(api.VIF.get_record, v)[0] == "HANDLE_INVALID" for v in vifs)
    assert api.VDI.get_virtual_size(vbd["VDI"]) == str(1 << 30) and image.exists()


def test_xl_and_xapi_agree(xhost: Host, session: Any) -> None:
    api, host = session.xenapi, xhost
    ev = Events(api)
    # a domain made with xl create is a VM within ~2 s, and goes with xl destroy
    host.create("xlmade", memory=96)
    uuid = xl_uuid(host, "xlmade")
    t0 = time.monotonic()
    vm = wait_for(lambda: api.VM.get_by_uuid(uuid) if uuid in [r["uuid"] for r in api.VM.get_all_records().values()]
                  else None, "the xl domain never became a VM", 10)
    assert time.monotonic() - t0 < 3
    rec = api.VM.get_record(vm)
    assert rec["power_state"] == "Running" and rec["name_label"] == "xlmade"
    assert rec["domid"] == xl_row(host, "xlmade")["id"]  # type: ignore[index]
    ev.expect(vm, "add", power_state="Running")
    host.xl("pause", "xlmade")
    wait_for(lambda: api.VM.get_power_state(vm) == "Paused", "xl pause not seen", 5)
    ev.expect(vm, power_state="Paused")
    host.xl("unpause", "xlmade")
    ev.expect(vm, power_state="Running")
    host.xl("destroy", "xlmade")
    ev.expect(vm, "del")
    assert uuid not in [r["uuid"] for r in api.VM.get_all_records().values()]

    # a VM started over XenAPI whose guest reboots itself (the monitor makes a new domain: xapi
    # follows its domid), then powers itself off (Halted); its disk remembers the first boot
    script = ('if [ "$(dd if=/dev/vda bs=1 count=1 2>/dev/null)" = R ]; then (sleep 3; poweroff -f) & '
              'else printf R | dd of=/dev/vda conv=fsync 2>/dev/null; (sleep 3; reboot -f) & fi')
    vm = new_vm(api, "selfoff", script)
    ev.expect(vm, "add", power_state="Halted")
    api.VM.start(vm, False, False)
    rec = check_state(api, vm, "Running")
    assert xl_row(host, "selfoff")["id"] == rec["domid"] and xl_uuid(host, "selfoff") == rec["uuid"]  # type: ignore[index]
    ev.expect(vm, power_state="Running")
    Guest(host, "selfoff").wait_up(2)
    row = wait_for(lambda: xl_row(host, "selfoff"), "no domain after the guest's reboot", 10)
    assert row["id"] != rec["domid"]
    ev.expect(vm, power_state="Running", domid=row["id"])
    check_state(api, vm, "Running")
    console_follows(api, vm)
    ev.expect(vm, power_state="Halted", timeout=180)
    check_state(api, vm, "Halted")
    assert xl_row(host, "selfoff") is None
    api.VM.destroy(vm)


def test_async_failure_and_xapi_restart_mid_clean_shutdown(xhost: Host, session: Any) -> None:
    api, host = session.xenapi, xhost
    vm = new_vm(api, "restart", "")
    # an Async call that fails ends as a failed task with xapi's error
    task = api.Async.VM.clean_shutdown(vm)
    assert wait_task(api, task) == "failure"
    assert api.task.get_error_info(task) == ["VM_BAD_POWER_STATE", vm, "running", "halted"]
    qemus = set(qemu_pids_under(host.paths.root))
    api.VM.start(vm, False, False)
    Guest(host, "restart").wait_up()
    domid = int(api.VM.get_domid(vm))
    everything = {cls: sorted(getattr(api, cls).get_all()) for cls in ("VM", "VBD", "VDI", "VIF", "SR", "network")}
    records = api.VM.get_all_records()

    xapi = by_name("xapi")
    old_pid = running_pid(host.paths, xapi)
    assert old_pid
    ev = Events(api)
    task = api.Async.VM.clean_shutdown(vm)
    with XenstoreClient(host.paths.xenstored_socket) as xs:
        # killed once the request is on its way to the guest (its agent reads it within 1 s)
        wait_for(lambda: xs.get(f"/local/domain/{domid}/control/shutdown") == b"poweroff",
                 "xapi never asked the guest to shut down", 10)
    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: running_pid(host.paths, xapi) not in (None, old_pid) and connects(xapi.socket(host.paths)),
             "xapi not restarted", 30)

    # the old session still works (on the address xapi has now: the test host's xapi takes
    # a free port); nothing is lost; the interrupted task failed
    again = XenAPI.Session(xapi_url(host))
    again._session = session._session
    api = again.xenapi
    wait_for(lambda: api.VM.get_power_state(vm) == "Halted",
             lambda: f"VM is {api.VM.get_power_state(vm)}; xl list: {host.domains()}", 30)
    wait_for(lambda: xl_row(host, "restart") is None, lambda: f"xl list: {host.domains()}", 30)
    wait_for(lambda: set(qemu_pids_under(host.paths.root)) == qemus, "the guest's QEMU is still there", 30)
    check_state(api, vm, "Halted")
    ev.api = api
    ev.expect(vm, power_state="Halted")  # (with the token the first xapi gave)
    assert api.task.get_status(task) == "failure" and api.task.get_error_info(task)[0] == "INTERNAL_ERROR"
    # (the guest had powered off with its monitor set aside: the new xapi destroyed the domain)
    log = host.paths.daemon_log("xapi").read_text()
    assert f"domain {domid} shut down (reason 0) with no one to act on it: hard_shutdown" in log, log[-2000:]
    assert {cls: sorted(getattr(api, cls).get_all()) for cls in everything} == everything
    now = api.VM.get_all_records()
    assert set(now) == set(records)
    for ref, r in records.items():
        assert {k: v for k, v in now[ref].items() if k not in (
            "power_state", "domid", "resident_on", "allowed_operations", "current_operations",
            "consoles")} == {k: v for k, v in r.items() if k not in (
                "power_state", "domid", "resident_on", "allowed_operations", "current_operations", "consoles")}
    # and the VM starts again; xl pause and xl destroy of it are followed (with events)
    ev = Events(api)
    api.VM.start(vm, False, False)
    rec = check_state(api, vm, "Running")
    ev.expect(vm, power_state="Running")
    host.xl("pause", "restart")
    ev.expect(vm, power_state="Paused")
    check_state(api, vm, "Paused")
    host.xl("destroy", "restart")
    ev.expect(vm, power_state="Halted")
    check_state(api, vm, "Halted")
    assert api.VM.get_uuid(vm) == rec["uuid"]  # (a VM of xapi's: Halted, not forgotten)
    api.VM.destroy(vm)
