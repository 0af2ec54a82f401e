"""Changing a domain's memory while it runs: its target (ballooning) and its ceiling.

In Xen the toolstack writes ``~/memory/target`` and the guest's balloon driver hands pages back
to Xen (or takes them), so the domain's reservation follows the target; ``maxmem`` is the
ceiling the hypervisor enforces. pyxen's pool follows the target at once: growing claims the
difference from free memory (ENOMEM if it is not there, changing nothing), shrinking returns it;
the guest's virtio balloon is told the new size through the device model.
"""

from __future__ import annotations

from typing import Any

from .core import Hypervisor, int_arg, hypercall
from .errors import InvalidArgument


@hypercall("memory_op.set_target")
async def _set_target(hv: Hypervisor, args: dict[str, Any]) -> dict[str, int]:
    op = "memory_op.set_target"
    dom = hv.domu(args, op)
    target_kb = int_arg(args, "target_kb")
    if target_kb > dom.max_memkb:
        raise InvalidArgument("memory_dynamic_max must be less than or equal to memory_static_max", op)
    if target_kb < 16 * 1024:
        raise InvalidArgument(f"a target of {target_kb} KiB is below the 16 MiB pyxen allows", op)
    held = hv.pool.held(dom.domid)
    hv.pool.resize(dom.domid, target_kb, dom.name, op)
    try:
        await hv.model(args, op).balloon(target_kb >> 10)
    except Exception:
        hv.pool.resize(dom.domid, held)  # undo: nothing changed
        raise
    dom.memory_kb = target_kb
    dom.save(hv.paths.domains_dir)
    return {"target_kb": target_kb, "free_kb": hv.pool.free_kb}


@hypercall("domctl.max_mem")
async def _max_mem(hv: Hypervisor, args: dict[str, Any]) -> None:
    """The ceiling: at most the RAM the device model was started with, at least the target."""
    op = "domctl.max_mem"
    dom = hv.domu(args, op)
    max_kb = int_arg(args, "max_kb")
    boot_max_kb = int(dom.build.get("max_memkb", dom.max_memkb))
    if not dom.memory_kb <= max_kb <= boot_max_kb:
        raise InvalidArgument(f"maxmem must be between the target ({dom.memory_kb >> 10} MiB) and the "
                              f"memory the domain was built with ({boot_max_kb >> 10} MiB)", op)
    dom.max_memkb = max_kb
    dom.save(hv.paths.domains_dir)
