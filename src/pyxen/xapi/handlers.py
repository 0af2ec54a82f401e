"""Every behaviour module, imported once so its ``@message`` handlers are in the table, and the
background jobs they need (``install``)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from . import events, host, network, session, storage, tasks, vm  # noqa: F401  (they register handlers)
from .reconcile import reconcile_loop

if TYPE_CHECKING:
    from .server import Xapi

log = logging.getLogger("xapi")

#: xapi's GC thread period.
GC_PERIOD = 30.0


async def session_gc(server: "Xapi") -> None:
    """Remove sessions idle for more than 24 h (xapi's inactive_session_timeout)."""
    while True:
        t = time.time()
        for ref, rec in server.db.records("session").items():
            if session.expired(rec["last_active"], t):
                server.end_session(ref)
        await asyncio.sleep(GC_PERIOD)


def install(server: "Xapi") -> None:
    server.background.append(session_gc)
    server.background.append(reconcile_loop)
