"""A domain's records in xenstore, as libxl writes them (libxl__domain_make, build_pre/post).

On create: /local/domain/<id> (readable by the domain, owned by Dom0), its name, domid, vm
link, memory/{static-max,target,videoram}, cpu/<n>/availability, the writable control/,
data/, drivers/, feature/, attr/, error/ folders; /vm/<uuid> with uuid, name, start_time; and
/libxl/<id> with the toolstack's own notes; then INTRODUCE, which fires @introduceDomain.
On destroy: all of that is removed and the domain RELEASEd, which fires @releaseDomain.
Paths and permissions follow docs/misc/xenstore-paths and libxl_create.c.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ..hypervisor.client import XenCtrl
from ..paths import Paths
from ..xenstore.client import ClientTransaction, XenstoreClient
from ..xenstore.errors import XenstoreError

log = logging.getLogger(__name__)


def dom_path(domid: int) -> str:
    return f"/local/domain/{domid}"


def vm_path(uuid: str) -> str:
    return f"/vm/{uuid}"


def introduce(socket: Path, domid: int, name: str, uuid: str, dtype: str, memory_kb: int,
              max_memkb: int, vcpus: int, max_vcpus: int, config_source: str = "") -> None:
    """Write the domain's layout in one transaction, then INTRODUCE it."""
    dp, vp = dom_path(domid), vm_path(uuid)
    # libxl's permission sets: roperm = Dom0 owns, the domain reads; rwperm = the domain owns.
    roperm, rwperm, noperm = ["n0", f"r{domid}"], [f"n{domid}"], ["n0"]

    def body(t: ClientTransaction) -> None:
        for path, perms in ((dp, roperm), (vp, roperm), (f"/libxl/{domid}", noperm)):
            if t.exists(path):  # left over from an earlier domain with this id
                t.rm(path)
            t.mkdir(path)
            t.set_perms(path, perms)
        t.write(f"{dp}/vm", vp)
        t.write(f"{dp}/name", name)
        t.write(f"{dp}/domid", str(domid))
        for sub in ("cpu", "memory", "device", "control", "console"):
            t.mkdir(f"{dp}/{sub}")
            t.set_perms(f"{dp}/{sub}", roperm)
        for sub in ("data", "drivers", "feature", "attr", "error", "control/shutdown",
                    "control/feature-poweroff", "control/feature-reboot", "control/feature-suspend",
                    "control/sysrq", "device/suspend/event-channel"):
            t.write(f"{dp}/{sub}", "")
            t.set_perms(f"{dp}/{sub}", rwperm)
        t.write(f"{dp}/memory/static-max", str(max_memkb))
        t.write(f"{dp}/memory/target", str(memory_kb))
        t.write(f"{dp}/memory/videoram", "-1" if dtype != "hvm" else "8192")
        for n in range(max_vcpus):
            t.write(f"{dp}/cpu/{n}/availability", "online" if n < vcpus else "offline")
        t.write(f"{dp}/image/os_type", "hvm" if dtype == "hvm" else "linux")
        # The console is xenconsoled's (libxl: console/type, console/output; xenconsoled
        # adds console/tty, where xl console connects).
        t.write(f"{dp}/console/type", "xenconsoled")
        t.write(f"{dp}/console/output", "pty")
        t.write(f"{vp}/uuid", uuid)
        t.write(f"{vp}/name", name)
        t.write(f"{vp}/start_time", "%.2f" % time.time())
        t.write(f"/libxl/{domid}/type", dtype)
        t.write(f"/libxl/{domid}/dm-version", "qemu_xen")
        if config_source:
            t.write(f"/libxl/{domid}/config-source", config_source)

    with XenstoreClient(socket) as xs:
        xs.transact(body)
        xs.introduce(domid)


def connect_guest(ctrl: XenCtrl, paths: Paths, domid: int) -> None:
    """Give the guest its own xenstore connection: xenstored's socket for the domain, plugged
    into its device model as the port a guest looks for. Requests arriving there act as the
    domain."""
    ctrl.call("dm_op.add_xenstore_port", domid=domid, socket=str(paths.xenstored_domain_socket(domid)))


def release(socket: Path, domid: int) -> None:
    """Remove the domain's layout and RELEASE it (fires @releaseDomain). Idempotent."""
    dp = dom_path(domid)
    with XenstoreClient(socket) as xs:
        vm = xs.get(f"{dp}/vm")
        for path in (dp, vm.decode() if vm else None, f"/libxl/{domid}"):
            if path and xs.exists(path):
                xs.rm(path)
        if xs.is_domain_introduced(domid):
            xs.release(domid)


def release_quietly(socket: Path, domid: int) -> None:
    """release() for teardown paths: a missing xenstored is logged, not raised."""
    try:
        release(socket, domid)
    except (OSError, XenstoreError) as err:
        log.warning("d%d: cannot clean xenstore: %s", domid, err)
