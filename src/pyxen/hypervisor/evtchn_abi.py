"""Event channels as seen from outside the hypervisor: the EVTCHNSTAT_* codes of
xen/include/public/event_channel.h and the table debug key 'e' prints (dump_evtchn_info in
xen/common/event_channel.c).

Pure: the hypervisor's evtchn.py renders its own table with it for ``xl debug-keys e``, and
``pyxen evtchn`` renders the ports it fetched with ``event_channel_op.list``, without importing
the module that registers the hypercalls.
"""

from __future__ import annotations

import enum
from typing import Any


class Status(enum.IntEnum):
    """EVTCHNSTAT_* of evtchn_status."""

    CLOSED = 0
    UNBOUND = 1
    INTERDOMAIN = 2
    PIRQ = 3
    VIRQ = 4
    IPI = 5


def dump_evtchn_info(ports: list[dict[str, Any]], doms: list[int]) -> str:
    """``xl debug-keys e`` as Xen prints it (dump_evtchn_info), without the '(XEN)' prefix.

    ``ports`` are Port.to_json() records (``event_channel_op.list``'s answer).
    """
    out = []
    for dom in doms:
        out.append(f"Event channel information for domain {dom}:")
        out.append("Polling vCPUs: {}")
        out.append("    port [p/m/s]")
        for p in (p for p in ports if p["dom"] == dom):
            state = Status[p["status"].upper()]
            tail = (f" d={p['remote_dom']} p={p['remote_port']}" if state == Status.INTERDOMAIN
                    else f" d={p['remote_dom']}" if state == Status.UNBOUND else "")
            label = f" ({p['label']})" if p.get("label") else ""
            out.append(f"{p['port']:8d} [{min(p['pending'], 1)}/0/0]: s={int(state)} n=0 x=0{tail}{label}")
    return "\n".join(out)
