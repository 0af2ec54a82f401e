"""A started host's XenAPI as its clients see it: the URL ``pyxen host status`` prints, the root
password set with ``pyxen host passwd``, and a VM made the way XenServer's samples and Ansible
make one (clone the Debian template, point its "disks" at the default SR, provision). Shared by
tests/peers/test_xapi_clients.py, tests/integration/test_xapi_demo.py and bench/xapi.py; the
client is the official ``XenAPI`` SDK (XML-RPC), imported lazily since it is a test extra.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from typing import Any

from pyxen.testing.host import Host

#: The password the tests give root (mini-xenrt's, as the XenAPI digest notes).
ROOT_PASSWORD = "xenroot"
#: How long xapi may take to answer after ``pyxen host start`` returns.
XAPI_READY_TIMEOUT = 30.0
_URL_LINE = re.compile(r"^xapi: (http://\S+?)/?\s*$", re.MULTILINE)


def set_root_password(host: Host, password: str = ROOT_PASSWORD) -> None:
    """``pyxen host passwd`` reads the new password from standard input."""
    host.run("pyxen", "host", "passwd", input=password + "\n", check=True, timeout=30)


def xapi_url(host: Host) -> str:
    """The plain-HTTP URL from ``pyxen host status``'s ``xapi: http://ADDR:PORT/`` line (without
    the trailing slash, as clients are given it), once the server answers on it."""
    status = host.run("pyxen", "host", "status", check=True, timeout=30).stdout
    found = _URL_LINE.search(status)
    if found is None:
        raise AssertionError(f"`pyxen host status` printed no 'xapi: http://...' line:\n{status}")
    url = found.group(1)
    wait_ready(url)
    return url


def wait_ready(url: str, timeout: float = XAPI_READY_TIMEOUT) -> None:
    """Poll until an HTTP request to ``url`` gets any answer (xapi may still be binding)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/", timeout=5).close()
            return
        except urllib.error.HTTPError:
            return  # an HTTP error status is an answer: the server is up
        except OSError as e:
            last = e
            time.sleep(0.2)
    raise AssertionError(f"xapi at {url} did not answer within {timeout} s: {last}")


def login(url: str, password: str = ROOT_PASSWORD, originator: str = "pyxen-tests") -> Any:
    """A logged-in ``XenAPI.Session`` (XML-RPC) as root."""
    import XenAPI  # type: ignore[import-untyped]

    session = XenAPI.Session(url)
    session.xenapi.login_with_password("root", password, "2.21", originator)
    return session


def vm_record(name: str, memory_mib: int = 128) -> dict[str, Any]:
    """A halted PV VM for VM.create: the datamodel's required keys and a name, 64-bit ints as
    strings (as the SDK must send them over XML-RPC)."""
    mem = str(memory_mib << 20)
    return {"name_label": name, "name_description": "made by pyxen.testing.xapi", "user_version": "1",
            "is_a_template": False, "affinity": "OpaqueRef:NULL",
            "memory_static_max": mem, "memory_dynamic_max": mem, "memory_dynamic_min": mem,
            "memory_static_min": str(16 << 20), "VCPUs_params": {}, "VCPUs_max": "1",
            "VCPUs_at_startup": "1", "actions_after_shutdown": "destroy",
            "actions_after_reboot": "restart", "actions_after_crash": "destroy",
            "PV_bootloader": "", "PV_kernel": "", "PV_ramdisk": "", "PV_args": "",
            "PV_bootloader_args": "", "PV_legacy_args": "", "HVM_boot_policy": "",
            "HVM_boot_params": {}, "platform": {}, "PCI_bus": "", "other_config": {},
            "recommendations": ""}


def debian_template(session: Any) -> str:
    """The ref of the seed's "Debian ..." template (the first by name, as install.py picks)."""
    found = sorted((rec["name_label"], ref) for ref, rec in session.xenapi.VM.get_all_records().items()
                   if rec["is_a_template"] and rec["name_label"].startswith("Debian"))
    if not found:
        raise AssertionError("the host has no template whose name starts with 'Debian'")
    return found[0][1]


def disks_on_sr(disks_xml: str, sr_uuid: str) -> str:
    """The template's other_config "disks" with every disk that names no SR put on ``sr_uuid``
    (what install.py and Ansible do before VM.provision)."""
    root = ET.fromstring(disks_xml)
    for disk in root.iter("disk"):
        if not disk.get("sr"):
            disk.set("sr", sr_uuid)
    return ET.tostring(root, encoding="unicode")


def management_network(session: Any) -> str:
    """The network whose bridge is xenbr0 (the seed's, over PIF eth0)."""
    for ref, rec in session.xenapi.network.get_all_records().items():
        if rec["bridge"] == "xenbr0":
            return str(ref)
    raise AssertionError("the host has no network on bridge xenbr0")


def vm_from_template(session: Any, name: str, vif: bool = False) -> str:
    """Clone the Debian template as ``name``, provision its disks on the default SR and, with
    ``vif``, give it VIF 0 on xenbr0. Returns the new (Halted) VM's ref."""
    x = session.xenapi
    vm = x.VM.clone(debian_template(session), name)
    other = x.VM.get_other_config(vm)
    if "disks" in other:
        pool = x.pool.get_all()[0]
        sr_uuid = x.SR.get_uuid(x.pool.get_default_SR(pool))
        x.VM.remove_from_other_config(vm, "disks")
        x.VM.add_to_other_config(vm, "disks", disks_on_sr(other["disks"], sr_uuid))
    x.VM.provision(vm)
    if vif:
        x.VIF.create({"device": "0", "network": management_network(session), "VM": vm, "MAC": "",
                      "MTU": "1500", "other_config": {}, "qos_algorithm_type": "",
                      "qos_algorithm_params": {}})
    return str(vm)


def destroy_vm(session: Any, vm: str) -> None:
    """Halt ``vm`` if it runs, then destroy it and the disks it owned (VM.destroy leaves VDIs)."""
    x = session.xenapi
    if x.VM.get_power_state(vm) != "Halted":
        x.VM.hard_shutdown(vm)
    vdis = [x.VBD.get_VDI(vbd) for vbd in x.VM.get_VBDs(vm) if x.VBD.get_type(vbd) == "Disk"]
    x.VM.destroy(vm)
    for vdi in vdis:
        if vdi != "OpaqueRef:NULL":
            x.VDI.destroy(vdi)
