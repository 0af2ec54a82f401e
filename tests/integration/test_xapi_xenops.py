"""pyxen.xapi.xenops on a real guest: the demo guest, started from a VmSpec with a disk and a
vif, goes through what xapi asks of xenopsd (pause, memory, vCPUs, suspend/resume, a same-host
live migration, disk hotplug, clean shutdown), and ``xl`` sees each step as if xl had done it.
The guest prints a counter every 100 ms, its online CPUs and its disks, so each step is checked
from inside too. Run under flock /tmp/pyxen-net.lock (the vif's bridge and TAP names)."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import time
import uuid as uuidlib
from pathlib import Path

import pytest

from pyxen.testing.bridge import link_local_bridge
from pyxen.xapi import xenops
from pyxen.xapi.seed import demo_kernel
from pyxen.xapi.xenops import DiskSpec, VifSpec, VmSpec, XenopsError

from ..conftest import Host, qemu_pids_under

pytestmark = pytest.mark.integration

MiB = 1 << 20
#: Ticks every 100 ms; every second the online CPUs and the virtio disks the guest sees.
SCRIPT = ('i=0; while true; do echo "tick $i"; i=$((i+1)); sleep 0.1; done & '
          'while true; do echo "cpus $(cat /sys/devices/system/cpu/online) disks $(ls /dev | grep ^vd | tr "\\n" +)"; '
          'sleep 1; done &')


def logs(host: Host, name: str) -> str:
    """Everything the guest printed (after a same-host migration its console log is named
    after ``<name>--incoming``, as xenconsoled names a log when it first sees the domain)."""
    return host.console_text(name) + host.console_text(f"{name}--incoming")


def ticks(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"^tick (\d+)\r?$", text, re.M)]


def wait_for(cond, what: str, timeout: float = 90) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def last_status(host: Host, name: str) -> str:
    found = re.findall(r"^cpus (\S+) disks (\S*)\r?$", logs(host, name), re.M)
    return f"{found[-1][0]} {found[-1][1]}" if found else ""


def counting_on(host: Host, name: str, n: int = 5) -> None:
    """The counter goes on: ``n`` more ticks than now, with no restart from 0."""
    now = max(ticks(logs(host, name)), default=-1)
    wait_for(lambda: max(ticks(logs(host, name)), default=-1) >= now + n,
             f"{name} stopped counting at {now}:\n{logs(host, name)[-1500:]}")


def test_a_vm_through_xenops(host: Host, tmp_path: Path) -> None:
    kernel, ramdisk, cmdline = demo_kernel()
    assert Path(kernel) == host.image.kernel and Path(ramdisk) == host.image.ramdisk
    disk = tmp_path / "a.img"
    subprocess.run(["truncate", "-s", "16M", str(disk)], check=True)
    second = tmp_path / "b.img"
    subprocess.run(["truncate", "-s", "8M", str(second)], check=True)
    vm_uuid = str(uuidlib.uuid4())
    name = "xops"
    paths = host.paths
    with link_local_bridge() as (bridge, _):
        spec = VmSpec(uuid=vm_uuid, name=name, memory_static_max=160 * MiB, memory_dynamic_max=128 * MiB,
                      vcpus_max=2, vcpus_at_startup=1, kernel=kernel, ramdisk=ramdisk,
                      cmdline=f"{cmdline} pyxen.run={base64.b64encode(SCRIPT.encode()).decode()}",
                      disks=(DiskSpec(str(disk), "xvda"),),
                      vifs=(VifSpec(0, "00:16:3e:5a:00:01", bridge),))
        domid = xenops.start(paths, spec)
        row = host.domains()[name]
        assert row["id"] == str(domid) and row["vcpus"] == "1"
        long = json.loads(host.xl("list", "-l", name).stdout)[0]
        assert long["config"]["c_info"]["uuid"] == vm_uuid
        live = {d.name: d for d in xenops.live_domains(paths)}
        assert live[name].domid == domid and live[name].uuid == vm_uuid
        assert live[name].memory_bytes // MiB in range(120, 161)
        assert live["Domain-0"].domid == 0
        assert len(host.xl("block-list", name).stdout.splitlines()) == 2
        assert len(host.xl("network-list", name).stdout.splitlines()) == 2
        host.wait_console(name, "pyxen demo guest up")
        # memory_dynamic_max is the balloon's target: the booted guest gives the rest back
        wait_for(lambda: host.domains()[name]["mem"] == "128", f"mem: {host.domains()[name]}")
        wait_for(lambda: last_status(host, name) == "0 vda+", f"status: {last_status(host, name)}")
        counting_on(host, name)

        # pause / unpause: xl list shows "p"; nothing runs while paused
        xenops.pause(paths, domid)
        assert host.domains()[name]["state"][2] == "p"
        assert [d.state for d in xenops.live_domains(paths) if d.domid == domid] == ["paused"]
        time.sleep(0.5)
        frozen = max(ticks(logs(host, name)))
        time.sleep(1.0)
        assert max(ticks(logs(host, name))) == frozen
        xenops.unpause(paths, domid)
        assert host.domains()[name]["state"][2] != "p"
        counting_on(host, name)

        # memory: the balloon gives 32 MiB back (xl list follows the guest's balloon)
        xenops.set_memory_target(paths, domid, 96 * MiB)
        wait_for(lambda: host.domains()[name]["mem"] == "96", f"mem: {host.domains()[name]}")

        # vCPUs: the second one comes online in the guest
        xenops.set_vcpus_online(paths, domid, 2)
        wait_for(lambda: last_status(host, name) == "0-1 vda+", f"status: {last_status(host, name)}")
        assert host.domains()[name]["vcpus"] == "2"
        with pytest.raises(XenopsError, match=rf"domain {domid}: set_vcpus_online 3: 3 is not within 1..VCPUs_max \(2\)"):
            xenops.set_vcpus_online(paths, domid, 3)

        # suspend / resume: gone in between; back under the same name and uuid, counting on
        image = tmp_path / "xops.suspend"
        xenops.suspend(paths, domid, image)
        assert name not in host.domains()
        before = max(ticks(logs(host, name)))
        domid = xenops.resume(paths, image)
        assert host.domains()[name]["id"] == str(domid)
        assert [d.uuid for d in xenops.live_domains(paths) if d.name == name] == [vm_uuid]
        counting_on(host, name)
        assert min(t for t in ticks(logs(host, name)) if t > before) <= before + 2  # no reboot, no gap

        # same-host live migration: a new domid, the same name and uuid, the counter goes on
        mark = len(logs(host, name))
        old = domid
        domid = xenops.migrate_local(paths, old)
        assert domid != old
        rows = host.domains()
        assert rows[name]["id"] == str(domid) and set(rows) == {"Domain-0", name}
        assert json.loads(host.xl("list", "-l", name).stdout)[0]["config"]["c_info"]["uuid"] == vm_uuid
        assert [(d.domid, d.state) for d in xenops.live_domains(paths) if d.uuid == vm_uuid] == [(domid, "running")]
        counting_on(host, name)
        after = ticks(logs(host, name)[mark:])
        assert after and after.count(0) == 0 and after == list(range(after[0], after[0] + len(after)))
        assert ticks(logs(host, name)).count(0) == 1  # one boot in all
        assert len(host.xl("block-list", name).stdout.splitlines()) == 2  # the devices came along
        assert len(host.xl("network-list", name).stdout.splitlines()) == 2

        # disk hotplug: the guest sees a second disk come and go
        xenops.plug_disk(paths, domid, DiskSpec(str(second), "xvdb"))
        wait_for(lambda: last_status(host, name).endswith("vda+vdb+"), f"status: {last_status(host, name)}")
        assert len(host.xl("block-list", name).stdout.splitlines()) == 3
        with pytest.raises(XenopsError, match=rf"domain {domid}: plug disk xvdb: .*already exists"):
            xenops.plug_disk(paths, domid, DiskSpec(str(second), "xvdb"))
        xenops.unplug_disk(paths, domid, "xvdb")
        wait_for(lambda: last_status(host, name).endswith(" vda+"), f"status: {last_status(host, name)}")
        assert len(host.xl("block-list", name).stdout.splitlines()) == 2

        # clean shutdown: the guest powers itself off, the domain is gone with its QEMU (twice in
        # CI the agent did not act on it here: the failure shows what the guest printed last)
        try:
            xenops.clean_shutdown(paths, domid, timeout=60)
        except XenopsError as err:
            pytest.fail(f"{err}\nthe guest's console, last lines:\n{logs(host, name)[-3000:]}")
        assert name not in host.domains()
        assert "pyxen: shutdown requested" in logs(host, name)
        assert [d for d in xenops.live_domains(paths) if d.uuid == vm_uuid] == []
        assert qemu_pids_under(paths.root) == []
        with pytest.raises(XenopsError, match=rf"domain {domid}: pause: "):
            xenops.pause(paths, domid)


NICS = ('while true; do echo "nics $(ls /sys/class/net | grep -v ^lo | tr "\\n" +)"; sleep 1; done &')


def boots(host: Host, name: str) -> int:
    return logs(host, name).count("pyxen demo guest up")


def test_reboots_vif_hotplug_and_shutdowns_xapi_asks_for(host: Host) -> None:
    """A clean shutdown halts the VM even when its on_poweroff says restart (xapi asked for a
    halt); reboots rebuild it with the same uuid and name; a guest that does not answer a
    clean shutdown keeps running and the error says so; vifs come and go in the guest."""
    kernel, ramdisk, cmdline = demo_kernel()
    vm_uuid = str(uuidlib.uuid4())
    name = "xreb"
    paths = host.paths

    def spec(extra: str = "") -> VmSpec:
        return VmSpec(uuid=vm_uuid, name=name, memory_static_max=128 * MiB, memory_dynamic_max=128 * MiB,
                      kernel=kernel, ramdisk=ramdisk, on_poweroff="restart",
                      cmdline=f"{cmdline} {extra}pyxen.run={base64.b64encode(NICS.encode()).decode()}")

    def nics() -> str:
        found = re.findall(r"^nics (\S*)\r?$", logs(host, name), re.M)
        return found[-1] if found else "?"

    with link_local_bridge() as (bridge, _):
        domid = xenops.start(paths, spec(), paused=True)
        assert host.domains()[name]["state"][2] == "p"
        time.sleep(1.0)
        assert boots(host, name) == 0
        xenops.unpause(paths, domid)
        host.wait_console(name)
        wait_for(lambda: nics() == "", f"nics: {nics()}")

        xenops.plug_vif(paths, domid, VifSpec(1, "00:16:3e:5a:00:02", bridge))
        wait_for(lambda: nics() == "eth0+", f"nics: {nics()}")
        rows = host.xl("network-list", name).stdout.splitlines()
        assert len(rows) == 2 and "00:16:3e:5a:00:02" in rows[1]
        with pytest.raises(XenopsError, match=rf"domain {domid}: plug vif 1: vif 1 of domain {domid} exists already"):
            xenops.plug_vif(paths, domid, VifSpec(1, "00:16:3e:5a:00:03", bridge))
        xenops.unplug_vif(paths, domid, 1)
        wait_for(lambda: nics() == "", f"nics: {nics()}")
        assert len(host.xl("network-list", name).stdout.splitlines()) == 1
        with pytest.raises(XenopsError, match=rf"domain {domid}: unplug vif 1: no such vif"):
            xenops.unplug_vif(paths, domid, 1)

        # clean reboot: the guest reboots itself, the VM comes back as a new domain
        old = domid
        domid = xenops.clean_reboot(paths, old, timeout=60)
        assert domid != old and host.domains()[name]["id"] == str(domid)
        assert "pyxen: reboot requested" in logs(host, name)
        assert [d.uuid for d in xenops.live_domains(paths) if d.name == name] == [vm_uuid]
        wait_for(lambda: boots(host, name) == 2, "no second boot")

        old = domid
        domid = xenops.hard_reboot(paths, old)
        assert domid != old and [d.domid for d in xenops.live_domains(paths) if d.uuid == vm_uuid] == [domid]
        wait_for(lambda: boots(host, name) == 3, "no third boot")

        # clean shutdown halts it although on_poweroff is restart, and it stays halted
        xenops.clean_shutdown(paths, domid, timeout=60)
        assert name not in host.domains()
        time.sleep(3.0)  # the monitor's pass after @releaseDomain: nothing to restart
        assert name not in host.domains() and not paths.restart_note(name).exists()

    # A guest without its PV control agent never answers: the error says so, it runs on, and
    # its on_* actions are the monitor's again.
    domid = xenops.start(paths, spec("pyxen.xsagent=0 "))
    host.wait_console(name)
    with pytest.raises(XenopsError, match=rf"^domain {domid} \({name}\): clean_shutdown: the guest did not "
                                          r"shut down within 3 s$"):
        xenops.clean_shutdown(paths, domid, timeout=3)
    assert host.domains()[name]["id"] == str(domid)
    from pyxen.toolstack import userdata
    assert not userdata.unmonitored(paths, domid)
    xenops.hard_shutdown(paths, domid)
    assert name not in host.domains() and qemu_pids_under(paths.root) == []
