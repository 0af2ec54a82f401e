"""The hypervisor's event channel and grant tables: binding rules, refusals, domain death."""

from __future__ import annotations

import pytest

from pyxen.hypervisor.errors import HypercallError, PermissionDenied
from pyxen.hypervisor.evtchn import EventChannels, Status
from pyxen.hypervisor.gnttab import GrantDenied, GrantError, GrantTables


def test_interdomain_bind_and_close() -> None:
    ec = EventChannels()
    fe = ec.alloc_unbound(5, 0, "vbd-5-51712")
    be = ec.bind_interdomain(0, 5, fe.port)
    assert ec.get(5, fe.port).status == Status.INTERDOMAIN and ec.get(5, fe.port).remote_port == be.port
    ec.close(0, be.port)
    assert ec.get(5, fe.port).status == Status.UNBOUND


def test_bind_refused_for_another_domain() -> None:
    ec = EventChannels()
    fe = ec.alloc_unbound(5, 0)
    with pytest.raises(PermissionDenied):
        ec.bind_interdomain(7, 5, fe.port)


def test_domain_death_empties_both_ends() -> None:
    ec = EventChannels()
    fe = ec.alloc_unbound(5, 0)
    ec.bind_interdomain(0, 5, fe.port)
    ec.domain_destroyed(5)
    assert ec.list(5) == [] and ec.list(0) == []


def test_grants() -> None:
    gt = GrantTables()
    g = gt.grant_access(5, 0, False, "vbd")
    assert g.ref >= 8
    m = gt.map(5, g.ref, 0, pid=1234, model_pid=1234)
    with pytest.raises(GrantDenied):
        gt.map(5, g.ref, 0, pid=999, model_pid=1234)  # not the domain's QEMU
    with pytest.raises(GrantDenied):
        gt.map(5, g.ref, 3, pid=0, model_pid=1234)  # granted to dom0, not dom3
    with pytest.raises(GrantError):
        gt.map(5, 4242, 0, pid=0, model_pid=1234)
    gt.domain_destroyed(5)
    assert gt.list(5) == {"grants": [], "maps": []}
    with pytest.raises(HypercallError):
        gt.unmap(m.handle)
