"""Device-model operations (Xen's dm_op, and libxl's QMP calls to qemu-dm): plug a domain's
virtual devices into its QEMU over the QMP session the hypervisor holds.

Only device plumbing commands pass (``DM_COMMANDS``); anything else is refused, so this is not
a general QMP tunnel. The toolstack uses it while the domain is still paused, after the backend
daemon listens on the device's vhost-user socket (QEMU's vhost-user realize waits for it).
"""

from __future__ import annotations

from typing import Any

from .core import Hypervisor, hypercall
from .errors import InvalidArgument

DM_COMMANDS = frozenset({"chardev-add", "chardev-remove", "device_add", "device_del", "netdev_add",
                         "netdev_del", "blockdev-add", "blockdev-del",
                         # xl trigger power/reset and xl shutdown/reboot -F (HVM without PV drivers)
                         "system_powerdown", "system_reset"})


@hypercall("dm_op.qmp")
async def _dm_qmp(hv: Hypervisor, args: dict[str, Any]) -> list[Any]:
    """Run ``commands`` ([[name, args], ...]) in order; stop at the first failure."""
    op = "dm_op.qmp"
    dom = hv.domu(args, op)
    model = hv.models.get(dom.domid)
    if model is None:
        raise InvalidArgument(f"domain {dom.domid} has no device model", op)
    commands = args.get("commands")
    if not isinstance(commands, list):
        raise InvalidArgument("commands must be a list of [name, args]", op)
    results = []
    for item in commands:
        if not (isinstance(item, list) and len(item) == 2 and item[0] in DM_COMMANDS
                and isinstance(item[1], dict)):
            raise InvalidArgument(f"refused device-model command {item!r}", op)
        results.append(await model.execute(item[0], item[1]))
    return results
