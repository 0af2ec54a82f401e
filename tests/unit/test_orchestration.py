"""Orchestration without QEMU: create's rollback at every step, a killed ``xl create``, a destroy
racing a create, the typed createdomain request, VIRQ_DOM_EXC -> @releaseDomain, and the monitor's
actions. Real hypervisor and xenstored daemons (in-process, on their real sockets) with the
declared FakeDeviceModel in place of QEMU."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from pyxen.hypervisor.client import XenCtrl
from pyxen.hypervisor.domctl import CreateDomain
from pyxen.hypervisor.errors import HypercallError, InvalidArgument
from pyxen.paths import Paths
from pyxen.testing.fakes import FakeDeviceModel, FakeHost
from pyxen.toolstack import domain as libxl
from pyxen.toolstack import hotplug, userdata, xsdomain
from pyxen.toolstack.config import DomainConfig
from pyxen.toolstack.monitor import Monitor
from pyxen.xenstore.client import XenstoreClient


@pytest.fixture
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeHost]:
    root = Path(os.path.realpath("/tmp")) / f"pyxen-fake-{os.getpid()}-{time.monotonic_ns()}"
    with FakeHost(root) as host:
        yield host
    import shutil
    shutil.rmtree(root, ignore_errors=True)


def kernel(tmp: Path) -> str:
    k = tmp / "vmlinuz"
    k.write_bytes(b"\0" * 16)
    return str(k)


def cfg(tmp: Path, **kw: Any) -> DomainConfig:
    base: dict[str, Any] = dict(name="g", memory=64, maxmem=64, kernel=kernel(tmp), source="g.cfg")
    base.update(kw)
    return DomainConfig(**base)


def leftovers(host: FakeHost) -> dict[str, Any]:
    """Everything a domain leaves behind; all empty on a clean host."""
    assert host.hv is not None
    hv = host.hv
    with XenstoreClient(host.paths.xenstored_socket) as xs:
        local = [d for d in xs.directory("/local/domain") if d != "0"]
        libxl_nodes = xs.directory("/libxl") if xs.exists("/libxl") else []
        vms = xs.directory("/vm") if xs.exists("/vm") else []
        introduced = [d for d in range(1, 8) if xs.is_domain_introduced(d)]
    live_sleeps = [m.pid for m in FakeDeviceModel.instances
                   if m.pid is not None and os.path.exists(f"/proc/{m.pid}")
                   and open(f"/proc/{m.pid}/stat").read().split()[2] != "Z"]
    return {
        "domains": host.call(lambda: sorted(d for d in hv.domains if d != 0)),
        "reserved": host.call(lambda: hv.pool.free_kb != hv.pool.total_kb - hv.dom0.memory_kb),
        "records": sorted(p.name for p in host.paths.domains_dir.glob("*.json")),
        "local": local, "libxl": libxl_nodes, "vm": vms, "introduced": introduced,
        "userdata": sorted(userdata.domids(host.paths)), "processes": live_sleeps,
    }


CLEAN = {"domains": [], "reserved": False, "records": [], "local": [], "libxl": [], "vm": [],
         "introduced": [], "userdata": [], "processes": []}


def test_create_and_destroy_leave_nothing(fake: FakeHost, tmp_path: Path) -> None:
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        domid = libxl.create(xc, fake.paths, cfg(tmp_path))
        info = libxl.find(xc, "domid", domid)
        assert info is not None and info["state"][2] == "-" and not info["building"]
        assert userdata.retrieve(fake.paths, domid) == cfg(tmp_path, uuid=info["uuid"])
        libxl.destroy(xc, fake.paths, domid)
    assert leftovers(fake) == CLEAN


class Boom(Exception):
    pass


# Each step of create, made to fail (or interrupted: KeyboardInterrupt is Ctrl-C or SIGTERM).
STEPS: dict[str, Callable[[pytest.MonkeyPatch], None]] = {
    "userdata": lambda mp: mp.setattr(userdata, "store", _raise(OSError(28, "No space left on device"))),
    "introduce": lambda mp: mp.setattr(xsdomain, "introduce", _raise(OSError(104, "xenstored went away"))),
    "xenstore-port": lambda mp: FakeDeviceModel.fail_on.update({"chardev-add": "refused"}),
    "devices": lambda mp: mp.setattr(hotplug, "add_all", _raise(hotplug.DeviceError("vbd 51712: refused"))),
    "pin": lambda mp: mp.setattr(libxl, "pin_vcpus", _raise(libxl.DomainBuildError("bad cpus"))),
    "unpause": lambda mp: FakeDeviceModel.fail_on.update({"cont": "refused"}),
    "interrupt-devices": lambda mp: mp.setattr(hotplug, "add_all", _raise(KeyboardInterrupt())),
    "interrupt-introduce": lambda mp: mp.setattr(xsdomain, "introduce", _raise(KeyboardInterrupt())),
}


def _raise(err: BaseException) -> Callable[..., None]:
    def fail(*args: object, **kw: object) -> None:
        raise err
    return fail


@pytest.mark.parametrize("step", sorted(STEPS))
def test_create_rolls_back_at_every_step(fake: FakeHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          step: str) -> None:
    STEPS[step](monkeypatch)
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        with pytest.raises((OSError, RuntimeError, KeyboardInterrupt, HypercallError)):
            libxl.create(xc, fake.paths, cfg(tmp_path, cpus="0"))
    FakeDeviceModel.fail_on.clear()
    assert leftovers(fake) == CLEAN


def test_device_model_failing_at_start_claims_nothing(fake: FakeHost, tmp_path: Path) -> None:
    FakeDeviceModel.fail_on["start"] = "cannot run qemu"
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        with pytest.raises(HypercallError, match="cannot run qemu"):
            libxl.create(xc, fake.paths, cfg(tmp_path))
    assert leftovers(fake) == CLEAN


@pytest.mark.parametrize("field,value,message", [
    ("memory_kb", "64", "'memory_kb' must be an integer"),
    ("memory_kb", 1 << 50, "outside"),
    ("vcpus", 0, "'vcpus' = 0"),
    ("name", "123", "not a valid domain name"),
    ("kernel", "relative/vmlinuz", "not an absolute path"),
    ("uuid", "not-a-uuid", "not a UUID"),
    ("cmdline", "x" * 4096, "limit"),
    ("surprise", 1, "unknown field 'surprise'"),
])
def test_bad_request_is_einval_and_claims_nothing(fake: FakeHost, field: str, value: object,
                                                  message: str) -> None:
    req = CreateDomain("g", "3d5e8c2a-0c4f-4a55-9d3e-1c2b3a4d5e6f", "pv", 65536, 65536, 1, 1,
                       kernel="/vmlinuz").to_wire()
    req[field] = value
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        with pytest.raises(InvalidArgument, match=message):
            xc.call("domctl.createdomain", request=req)
    assert leftovers(fake) == CLEAN


def test_killed_builder_takes_its_domain_with_it(fake: FakeHost, tmp_path: Path) -> None:
    """xl create killed (SIGKILL) mid-build: its connection closes before finish_build; the
    hypervisor destroys the domain, xenstored releases it, the monitor removes its records."""
    xc = XenCtrl(fake.paths.hypervisor_socket)
    c = cfg(tmp_path)
    domid = xc.call("domctl.createdomain", request=libxl.build_request(c).to_wire())
    userdata.store(fake.paths, domid, c)
    xsdomain.introduce(fake.paths.xenstored_socket, domid, c.name, c.uuid, c.type, 65536, 65536, 1, 1)
    xc.sock.shutdown(socket.SHUT_RDWR)
    xc.close()
    _until(lambda: not leftovers(fake)["domains"] and not leftovers(fake)["introduced"])
    Monitor(fake.paths).run_pass()
    assert leftovers(fake) == CLEAN


def test_finished_build_outlives_its_builder(fake: FakeHost, tmp_path: Path) -> None:
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        domid = libxl.create(xc, fake.paths, cfg(tmp_path), paused=True)
    time.sleep(0.2)
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        assert libxl.find(xc, "domid", domid) is not None


def test_destroy_racing_create_leaves_no_device_model(fake: FakeHost, tmp_path: Path) -> None:
    """A destroy that arrives while the device model is starting kills what the start made."""
    import threading
    errors: list[BaseException] = []

    def build() -> None:
        try:
            with XenCtrl(fake.paths.hypervisor_socket) as xc:
                libxl.create(xc, fake.paths, cfg(tmp_path))
        except BaseException as err:  # noqa: BLE001 - the race decides which error
            errors.append(err)

    t = threading.Thread(target=build)
    t.start()
    deadline = time.monotonic() + 5
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        while time.monotonic() < deadline:
            doms = [d for d in libxl.list_domains(xc) if d["domid"] != 0]
            if doms:
                try:
                    libxl.destroy(xc, fake.paths, doms[0]["domid"])
                except HypercallError:
                    pass
                break
    t.join(10)
    _until(lambda: leftovers(fake) == CLEAN)


def _until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _shutdown(fake: FakeHost, domid: int, reason: str = "guest-shutdown") -> None:
    assert fake.hv is not None
    model = fake.call(lambda: fake.hv.models[domid])  # type: ignore[union-attr]
    fake.loop.call_soon_threadsafe(model.guest_shutdown, reason)


def test_shutdown_fires_release_domain_once(fake: FakeHost, tmp_path: Path) -> None:
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        domid = libxl.create(xc, fake.paths, cfg(tmp_path, on_poweroff="preserve"))
    with XenstoreClient(fake.paths.xenstored_socket) as xs:
        xs.watch("@releaseDomain", "t")
        assert xs.wait_event(2) == ("@releaseDomain", "t")  # the initial event
        _shutdown(fake, domid)
        assert xs.wait_event(3) == ("@releaseDomain", "t")
        assert xs.is_domain_introduced(domid)  # shut down, not gone
        assert xs.wait_event(0.5) is None  # once
        with XenCtrl(fake.paths.hypervisor_socket) as xc:
            libxl.destroy(xc, fake.paths, domid)
        assert xs.wait_event(3) == ("@releaseDomain", "t")


@pytest.mark.parametrize("action", ["destroy", "preserve", "restart", "rename-restart", "coredump-destroy"])
def test_monitor_applies_on_poweroff_once(fake: FakeHost, tmp_path: Path, action: str) -> None:
    c = cfg(tmp_path, on_poweroff=action)
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        domid = libxl.create(xc, fake.paths, c)
    _shutdown(fake, domid)
    _until(lambda: fake.call(lambda: fake.hv.domains[domid].shutdown))  # type: ignore[union-attr]
    for _ in range(3):  # a repeated pass (a monitor restarted) changes nothing more
        Monitor(fake.paths).run_pass()
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        doms = {d["name"]: d for d in libxl.list_domains(xc) if d["domid"] != 0}
    if action in ("destroy", "coredump-destroy"):
        assert doms == {}
        assert leftovers(fake) == CLEAN
    if action == "coredump-destroy":
        model = [m for m in FakeDeviceModel.instances if m.domid == domid][-1]
        assert ("dump-guest-memory", {"paging": False, "protocol": f"file:{fake.paths.dump_dir / 'g'}"}) \
            in model.commands
    if action == "preserve":
        assert list(doms) == ["g"] and doms["g"]["domid"] == domid and doms["g"]["state"][3:5] == "s-"
    if action == "restart":
        assert list(doms) == ["g"] and doms["g"]["domid"] != domid and not doms["g"]["shutdown"]
        assert doms["g"]["uuid"] == c.uuid
    if action == "rename-restart":
        assert sorted(doms) == ["g", *[n for n in doms if n.startswith("g-")]] and len(doms) == 2
        old = next(d for n, d in doms.items() if n != "g")
        assert old["domid"] == domid and old["uuid"] != c.uuid and old["shutdown"]
        assert doms["g"]["uuid"] == c.uuid and not doms["g"]["shutdown"]


def test_monitor_finishes_a_restart_it_died_in(fake: FakeHost, tmp_path: Path) -> None:
    """The monitor noted the restart and destroyed the old domain, then died: the next one
    creates the new domain, once."""
    c = cfg(tmp_path)
    mon = Monitor(fake.paths)
    mon._note(c)
    for _ in range(2):
        Monitor(fake.paths).run_pass()
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        assert [d["name"] for d in libxl.list_domains(xc) if d["domid"] != 0] == ["g"]
    assert not list(fake.paths.monitor_dir.glob("*.json"))


def test_stuck_device_model_does_not_stall_list(fake: FakeHost, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A QEMU that does not answer (SIGSTOP) costs at most QUERY_TIMEOUT, once per list."""
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        ids = [libxl.create(xc, fake.paths, cfg(tmp_path, name=f"g{i}", uuid=f"3d5e8c2a-0c4f-4a55-9d3e-1c2b3a4d5e6{i}"))
               for i in range(3)]
    import asyncio

    async def hang(self: FakeDeviceModel, cmd: str, args: dict[str, Any] | None = None, timeout: float = 10) -> Any:
        if cmd == "query-balloon":
            raise_after = timeout
            await asyncio.sleep(raise_after)
            from pyxen.hypervisor.errors import DeviceModelError
            raise DeviceModelError("timeout")
        return {}
    monkeypatch.setattr(FakeDeviceModel, "execute", hang)
    t0 = time.monotonic()
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        doms = libxl.list_domains(xc)
    assert time.monotonic() - t0 < 2.0
    assert sorted(d["domid"] for d in doms if d["domid"]) == ids
    assert all(d["current_kb"] == 64 * 1024 for d in doms if d["domid"])


def test_virtio_net_under_tcg_has_msix_off(tmp_path: Path) -> None:
    """QEMU 7.2 virtio-net + vhost-user segfaults under TCG with MSI-X: pin vectors=0."""
    import asyncio
    for accel, vectors in (("tcg", 0), ("kvm", None)):
        dm = FakeDeviceModel(1, Paths(tmp_path), lambda *a: None)
        asyncio.run(dm.add_vhost_user_nic(0, Path("/r/vif.sock"), "00:16:3e:00:00:01", accel))
        dev = [a for c, a in dm.commands if c == "device_add"][0]
        assert dev["driver"] == "virtio-net-pci" and dev.get("vectors") == vectors


def test_refused_device_add_undoes_its_chardev(tmp_path: Path) -> None:
    import asyncio
    dm = FakeDeviceModel(1, Paths(tmp_path), lambda *a: None)
    FakeDeviceModel.fail_on = {"device_add": "no"}
    try:
        with pytest.raises(HypercallError):
            asyncio.run(dm.add_vhost_user_disk(51712, Path("/r/vbd.sock")))
    finally:
        FakeDeviceModel.fail_on = {}
    assert [c for c, _ in dm.commands] == ["chardev-add", "device_add", "chardev-remove"]
    json.dumps(dm.commands)  # plain data, as it goes over QMP


def test_grants_and_channels_survive_a_hypervisor_restart(fake: FakeHost, tmp_path: Path) -> None:
    """The guests and their backends outlive the hypervisor daemon: so do the grants and event
    channels between them (a restarted backend maps the same grant and binds the same port)."""
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        domid = libxl.create(xc, fake.paths, cfg(tmp_path))
        ref = xc.call("grant_table_op.grant_access", dom=domid, remote_dom=0, label="vbd")
        port = xc.call("event_channel_op.alloc_unbound", dom=domid, remote_dom=0, label="vbd")
        before = (xc.call("grant_table_op.list"), xc.call("event_channel_op.list"))
    fake.restart_hypervisor()
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        assert [d["domid"] for d in libxl.list_domains(xc)] == [0, domid]
        assert (xc.call("grant_table_op.list"), xc.call("event_channel_op.list")) == before
        pid = fake.call(lambda: fake.hv.domains[domid].pid)  # type: ignore[union-attr]
        assert xc.call("grant_table_op.map_grant_ref", dom=domid, ref=ref, mapper=0, pid=pid)["status"] == 0
        assert xc.call("event_channel_op.bind_interdomain", dom=0, remote_dom=domid, remote_port=port) > 0
        libxl.destroy(xc, fake.paths, domid)
        assert xc.call("grant_table_op.list") == {"grants": [], "maps": []}
    fake.restart_hypervisor()
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        assert xc.call("event_channel_op.list") == []


def test_monitor_retries_a_restart_whose_create_failed(fake: FakeHost, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The old domain is destroyed, the new one's create fails (xenstored restarting): the note
    stays, and a later pass creates the domain, once."""
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        domid = libxl.create(xc, fake.paths, cfg(tmp_path))
    _shutdown(fake, domid, "guest-reset")
    _until(lambda: fake.call(lambda: fake.hv.domains[domid].shutdown))  # type: ignore[union-attr]
    real = xsdomain.introduce
    monkeypatch.setattr(xsdomain, "introduce", _raise(OSError(111, "Connection refused")))
    Monitor(fake.paths).run_pass()
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        assert [d["name"] for d in libxl.list_domains(xc) if d["domid"]] == []
    assert len(list(fake.paths.monitor_dir.glob("restart-*.json"))) == 1
    monkeypatch.setattr(xsdomain, "introduce", real)
    for _ in range(2):
        Monitor(fake.paths).run_pass()
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        assert [d["name"] for d in libxl.list_domains(xc) if d["domid"]] == ["g"]
    assert not list(fake.paths.monitor_dir.glob("*.json"))


def test_listing_asks_each_qemu_for_its_balloon_only_when_no_event_said(fake: FakeHost, tmp_path: Path) -> None:
    """getdomaininfolist reads a domain's memory from QEMU's BALLOON_CHANGE events: one
    query-balloon for the first reading (and after BALLOON_REFRESH s), not one per listing
    (with 50 domains those round trips were most of xl list's time in the hypervisor)."""
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        domid = libxl.create(xc, fake.paths, cfg(tmp_path))
        model = [m for m in FakeDeviceModel.instances if m.domid == domid][-1]

        def queries() -> int:
            return sum(1 for cmd, _ in model.commands if cmd == "query-balloon")

        def current_kb() -> int:
            return int(next(d for d in libxl.list_domains(xc) if d["domid"] == domid)["current_kb"])

        assert current_kb() == 64 << 10
        asked = queries()
        assert asked >= 1
        for _ in range(3):
            assert current_kb() == 64 << 10
        assert queries() == asked
        xc.call("memory_op.set_target", domid=domid, target_kb=48 << 10)  # the guest's balloon moves
        assert current_kb() == 48 << 10 and queries() == asked
        assert fake.hv is not None
        fake.hv.balloon_read[domid] -= 3600  # a reading too old is asked again
        assert current_kb() == 48 << 10 and queries() == asked + 1


def test_listing_reads_each_guests_vcpu_time_once(fake: FakeHost, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """getdomaininfolist reads each guest's vCPU threads once: Dom0's time (the host's less the
    guests') is computed from the guests' figures of the same listing, not from a second read
    of every guest's threads (with 50 guests those /proc reads were most of the call)."""
    from pyxen.hypervisor import core
    reads: list[int] = []

    def counted(pid: int, tids: list[int]) -> int:
        reads.append(pid)
        return 1_000 * pid
    monkeypatch.setattr(core, "thread_cpu_ns", counted)
    monkeypatch.setattr(core, "_host_cpu_ns", lambda: 10 ** 15)
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        for name in ("a", "b"):
            libxl.create(xc, fake.paths, cfg(tmp_path, name=name))
        reads.clear()
        infos = xc.call("sysctl.getdomaininfolist")
    guests = [d for d in infos if d["domid"] != 0]
    assert [d["domid"] for d in infos][0] == 0 and len(guests) == 2
    assert sorted(reads) == sorted(set(reads)) and len(reads) == 2
    assert infos[0]["cpu_time_ns"] == 10 ** 15 - sum(d["cpu_time_ns"] for d in guests)
    assert all(d["cpu_time_ns"] > 0 for d in guests)
