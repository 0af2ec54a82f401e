"""The host class's behaviour that a one-host pool has: the time, free memory, the management
interface."""

from __future__ import annotations

import time

from . import xenops
from .dispatch import Context, message, now
from .errors import ApiError, domain_work
from .wire import DateTime


@message("host.get_servertime")
def get_servertime(ctx: Context, host: str) -> str:
    ctx.db.get("host", host)
    return DateTime(now())


@message("host.get_server_localtime")
def get_server_localtime(ctx: Context, host: str) -> str:
    ctx.db.get("host", host)
    return DateTime(time.strftime("%Y%m%dT%H:%M:%S", time.localtime()))


@message("host.compute_free_memory")
def compute_free_memory(ctx: Context, host: str) -> int:
    """The hypervisor's free memory (what a new VM could get), as xapi's host.compute_free_memory."""
    ctx.db.get("host", host)
    with domain_work():
        total, free = xenops.host_memory(ctx.paths)
    metrics = ctx.db.field("host", host, "metrics")
    if ctx.db.exists("host_metrics", metrics):
        ctx.db.set("host_metrics", metrics, memory_total=total, memory_free=free, last_updated=now())
    return free


@message("host.get_management_interface")
def get_management_interface(ctx: Context, host: str) -> str:
    for pif in ctx.db.find("PIF", host=host, management=True):
        return pif
    raise ApiError("HANDLE_INVALID", "PIF", "OpaqueRef:NULL")
