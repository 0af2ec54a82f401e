"""VIRQ_DOM_EXC in xenstored: how the store learns that a domain shut down or died.

Xen's xenstored binds VIRQ_DOM_EXC; on each one it looks at every introduced domain
(``domain_cleanup`` in tools/xenstore/xenstored_domain.c): a domain newly shut down (or
crashed) fires ``@releaseDomain`` once; a domain that is dying or gone is released (its
connection closed, its record dropped) and ``@releaseDomain`` fires. The toolstack's monitor
and the backends watch ``@releaseDomain``; the hypervisor itself knows nothing of xenstore.

pyxen's VIRQ is a line on a hypervisor connection (``AsyncXenCtrl.bind_virq_dom_exc``). The
binding is remade whenever the hypervisor restarts, and each (re)binding is followed by a
cleanup pass, so deaths while either daemon was down are not missed.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from ..hypervisor.client import AsyncXenCtrl
from ..hypervisor.errors import HypercallError
from .xenstored import Xenstored

log = logging.getLogger(__name__)

#: Seconds between attempts to (re)bind while the hypervisor is away.
RETRY_INTERVAL = 0.5
#: Bound on the getdomaininfolist call of one cleanup pass.
CALL_TIMEOUT = 5.0


class DomainExc:
    """xenstored's side of VIRQ_DOM_EXC: ``domain_cleanup`` and the loop that feeds it."""

    def __init__(self, xs: Xenstored, hypervisor_socket: Path) -> None:
        self.xs = xs
        self.hypervisor_socket = hypervisor_socket
        #: Introduced domains already reported as shut down (each shutdown fires once).
        self.shutdown: set[int] = set()

    def cleanup(self, infos: list[dict[str, Any]]) -> bool:
        """One pass over the introduced domains against the hypervisor's list; True if
        @releaseDomain fired."""
        live = {int(d["domid"]): d for d in infos}
        fire = False
        for domid in sorted(self.xs.domains.table):
            info = live.get(domid)
            if info is None or info.get("dying"):
                self.xs.release_domain(domid)
                self.shutdown.discard(domid)
                log.info("domain %d is gone: released", domid)
                fire = True
            elif info.get("shutdown"):
                if domid not in self.shutdown:
                    self.shutdown.add(domid)
                    log.info("domain %d shut down (reason %s)", domid, info.get("shutdown_reason"))
                    fire = True
            else:
                self.shutdown.discard(domid)  # running again: its next shutdown fires anew
        self.shutdown &= set(self.xs.domains.table)
        if fire:
            self.xs.connections.fire_special("@releaseDomain")
        return fire

    async def run(self) -> None:
        """Bind VIRQ_DOM_EXC and clean up on every notification, for ever; rebind after the
        hypervisor restarts."""
        announced = False
        while True:
            try:
                async with AsyncXenCtrl(self.hypervisor_socket, timeout=CALL_TIMEOUT) as xc:
                    await xc.bind_virq_dom_exc()
                    log.info("VIRQ_DOM_EXC bound")
                    announced = False
                    while True:
                        self.cleanup(list(await xc.call("sysctl.getdomaininfolist")))
                        await xc.wait_virq()
            except (HypercallError, OSError) as err:
                if not announced:
                    log.warning("VIRQ_DOM_EXC: %s; retrying", err)
                    announced = True
            await asyncio.sleep(RETRY_INTERVAL)
