"""Per-domain connections over real sockets: identity, permissions, quotas, special watches."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from pyxen.xenstore.client import XenstoreClient
from pyxen.xenstore.errors import (NoEntry, NotPermitted, PermissionDenied, QuotaExceeded,
                                   TooBig)
from pyxen.xenstore.testing import DaemonProcess

pytestmark = pytest.mark.integration

QUOTAS = ["--set", "quota_nodes=8", "--set", "quota_watches=3",
          "--set", "quota_transactions=2", "--set", "quota_node_size=300"]


@pytest.fixture
def small(root: Path) -> Iterator[DaemonProcess]:
    d = DaemonProcess(root, QUOTAS).start()
    yield d
    if d.alive():
        d.stop()


def make_domain(dom0: XenstoreClient, domid: int) -> None:
    """What the toolstack does on create: introduce, then the domain's own subtree."""
    dom0.introduce(domid)
    home = f"/local/domain/{domid}"
    dom0.write(f"{home}/name", f"guest{domid}")
    dom0.write(f"{home}/domid", str(domid))
    dom0.set_perms(home, [f"n{domid}", "r0"])
    dom0.set_perms(f"{home}/name", ["n0", f"r{domid}"])
    dom0.set_perms(f"{home}/domid", ["n0", f"r{domid}"])


def test_introduce_release_and_special_watches(small: DaemonProcess) -> None:
    with XenstoreClient(small.socket) as dom0, XenstoreClient(small.socket) as watcher:
        watcher.watch("@introduceDomain", "in")
        watcher.watch("@releaseDomain", "out")
        assert sorted([watcher.wait_event(2), watcher.wait_event(2)]) == [  # type: ignore
            ("@introduceDomain", "in"), ("@releaseDomain", "out")]
        assert not small.domain_socket(7).exists()
        dom0.introduce(7)
        assert watcher.wait_event(2) == ("@introduceDomain", "in")
        assert small.domain_socket(7).exists()
        with XenstoreClient(small.domain_socket(7)) as guest:
            assert guest.get_domain_path(7) == "/local/domain/7"
            dom0.release(7)
            assert watcher.wait_event(2) == ("@releaseDomain", "out")
            with pytest.raises(OSError):  # RELEASE dropped the domain's connection
                guest.read("/local/domain/7")
        assert not small.domain_socket(7).exists()
        with pytest.raises(NoEntry):
            dom0.release(7)


def test_domain_connection_acts_as_the_domain(small: DaemonProcess) -> None:
    with XenstoreClient(small.socket) as dom0:
        make_domain(dom0, 3)
        dom0.write("/secret", b"s")
        with XenstoreClient(small.domain_socket(3)) as guest:
            assert guest.read("name") == b"guest3"  # relative to /local/domain/3
            guest.write("data/x", b"1")
            assert dom0.get_perms("/local/domain/3/data/x") == ["n3", "r0"]
            with pytest.raises(PermissionDenied):
                guest.read("/secret")
            with pytest.raises(PermissionDenied):
                guest.write("/local/domain/0/name", b"evil")
            with pytest.raises(PermissionDenied):
                guest.write("name", b"renamed")  # read-only for the guest
            with pytest.raises(PermissionDenied):
                guest.introduce(9)
            with pytest.raises(NotPermitted):
                guest.set_perms("data/x", ["n0"])
            guest.set_perms("data/x", ["n3", "r5"])
            # a domU sees events only for nodes it may read
            guest.watch("/", "all")
            assert guest.wait_event(2) == ("/", "all")
            dom0.write("/secret", b"t")
            dom0.write("/local/domain/3/data/y", b"2")
            assert guest.wait_event(2) == ("/local/domain/3/data/y", "all")


def test_domain_quotas(small: DaemonProcess) -> None:
    with XenstoreClient(small.socket) as dom0:
        make_domain(dom0, 4)
        with XenstoreClient(small.domain_socket(4)) as guest:
            # the domain owns /local/domain/4 only; name and domid are Dom0's
            owned = 1
            for i in range(8 - owned):
                guest.write(f"n{i}", b"")
            with pytest.raises(QuotaExceeded):
                guest.write("one-too-many", b"")
            guest.rm("n0")
            guest.write("fits-again", b"")
            with pytest.raises(QuotaExceeded):  # node size quota (300 bytes)
                guest.write("fits-again", b"x" * 300)
            guest.write("fits-again", b"x" * 200)
            for i in range(3):
                guest.watch(f"w{i}", "t")
            with pytest.raises(TooBig):
                guest.watch("w3", "t")
            t1, t2 = guest.transaction_start(), guest.transaction_start()
            with pytest.raises(QuotaExceeded):
                guest.transaction_start()
            guest.transaction_end(t1, False)
            guest.transaction_end(t2, False)
            with pytest.raises(QuotaExceeded):  # too many permission entries
                guest.set_perms("fits-again", ["n4", "r1", "r2", "r3", "r5", "r6"])
        # Dom0 is never limited
        for i in range(20):
            dom0.write(f"/dom0-many/{i}", b"y" * 1000)


def test_release_permission_granted_to_a_domain(small: DaemonProcess) -> None:
    with XenstoreClient(small.socket) as dom0:
        make_domain(dom0, 5)
        make_domain(dom0, 6)
        with XenstoreClient(small.domain_socket(5)) as guest:
            guest.watch("@releaseDomain", "r")
            assert guest.wait_event(2) == ("@releaseDomain", "r")
            dom0.release(6)
            assert guest.wait_event(0.3) is None  # not allowed to know
            dom0.set_perms("@releaseDomain", ["n0", "r5"])
            assert dom0.get_perms("@releaseDomain") == ["n0", "r5"]
            make_domain(dom0, 6)
            dom0.release(6)
            assert guest.wait_event(2) == ("@releaseDomain", "r")
