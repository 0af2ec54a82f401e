"""Issue 9, xendomains: ``pyxen host stop`` saves the running guests to ``$PYXEN_ROOT/save/``
(or shuts them down, as host.cfg's xendomains_* keys say) and the next ``pyxen host start``
restores them, as Xen's xendomains script does at a host reboot. Real daemons, real QEMU
guests, driven with the ``pyxen`` and ``xl`` commands. No vif: none is needed."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from pyxen.host.services import SERVICES, SUPERVISOR, running_pid, stop_service
from pyxen.toolstack import savefile

from ..conftest import Host, qemu_pids_under
from .test_save_restore import COUNTER, ticks, wait_ticks

pytestmark = pytest.mark.integration

DISK_SCRIPT = (COUNTER + " dd if=/dev/urandom of=/dev/vda bs=64k count=16 conv=fsync 2>/dev/null; "
               "echo \"sum-before $(dd if=/dev/vda bs=64k count=16 2>/dev/null | md5sum)\"; "
               "while true; do echo 3 > /proc/sys/vm/drop_caches; "
               "echo \"sum-now $(dd if=/dev/vda bs=64k count=16 2>/dev/null | md5sum)\"; sleep 1; done &")


def uuid_of(host: Host, name: str) -> str:
    return str(json.loads(host.xl("list", "-l", name).stdout)[0]["config"]["c_info"]["uuid"])


def set_host_cfg(host: Host, text: str) -> None:
    """Append xendomains settings to host.cfg: read again by each host start and stop."""
    with open(host.paths.host_cfg, "a") as f:
        f.write(text)


def all_daemons_up(host: Host) -> bool:
    return host.run("pyxen", "host", "status").returncode == 0


def test_host_stop_saves_an_auto_guest_and_host_start_restores_it(host: Host, tmp_path: Path) -> None:
    """Xen's defaults: the auto domain is saved to save/<name> at stop (no QEMU left), restored
    at start (same name and uuid, counter and disk intact, file deleted), its auto config then
    skipped as running."""
    img = tmp_path / "d.img"
    img.write_bytes(bytes(8 << 20))
    cfg = host.write_cfg("xd", memory=128, script=DISK_SCRIPT, extra_lines=f"disk = ['file:{img},xvda,w']\n")
    cfg.rename(host.paths.auto_dir / "xd.cfg")
    first = host.run("pyxen", "host", "start", check=True)
    assert "xendomains   xd.cfg: started xd (domid" in first.stdout, first.stdout
    host.wait_console("xd", "sum-before")
    wait_ticks(host, "xd", 5)
    uuid = uuid_of(host, "xd")

    stop = host.run("pyxen", "host", "stop", check=True, timeout=300)
    save = host.paths.root / "save" / "xd"
    assert f"xendomains   xd: saved to {save}" in stop.stdout, stop.stdout
    assert save.read_bytes()[:16] == b"Xen saved domain"
    assert qemu_pids_under(host.paths.root) == []
    assert "destroyed" not in stop.stdout  # nothing was left to destroy
    before = max(ticks(host, "xd"))

    start = host.run("pyxen", "host", "start", check=True, timeout=300)
    assert re.search(r"^xendomains   xd: restored xd \(domid \d+\)$", start.stdout, re.M), start.stdout
    assert "xendomains   xd.cfg: xd already running" in start.stdout, start.stdout
    assert not save.exists()
    assert list(host.domains()) == ["Domain-0", "xd"] and uuid_of(host, "xd") == uuid
    wait_ticks(host, "xd", before + 10)
    text = host.console_text("xd")
    assert ticks(host, "xd").count(0) == 1 and text.count("pyxen demo guest up") == 1  # no reboot
    tail = [n for n in ticks(host, "xd") if n >= before - 5]
    assert tail == list(range(before - 5, max(tail) + 1)), (before, tail)
    # The disk, read back after the restore with the page cache dropped, holds what was written.
    written = re.findall(r"^sum-before ([0-9a-f]{32})  -", text, re.M)
    restored_at = text.rfind(f"tick {before}")
    deadline = time.monotonic() + 30
    while len(later := re.findall(r"^sum-now ([0-9a-f]{32})  -", host.console_text("xd")[restored_at:], re.M)) < 2:
        assert time.monotonic() < deadline, host.console_text("xd")[-800:]
        time.sleep(0.5)
    assert len(written) == 1 and set(later) == set(written), (written, later)
    status = host.run("python", "-m", "pyxen.host.xendomains", "status")
    assert (status.returncode, status.stdout) == (0, "Checking for xendomains: xd\n"), status


def test_with_saving_off_host_stop_shuts_the_guest_down(host: Host) -> None:
    """xendomains_save = "": the guest is asked to power off (xl shutdown --wait) instead; no
    save file, nothing to restore. xendomains_auto_only = "false": a guest made by hand counts."""
    set_host_cfg(host, 'xendomains_save = ""\nxendomains_auto_only = "false"\n')
    host.create("sd", memory=96, script=COUNTER)
    host.wait_console("sd")
    stop = host.run("pyxen", "host", "stop", check=True, timeout=300)
    assert "xendomains   sd: shut down" in stop.stdout, stop.stdout
    assert "pyxen: shutdown requested" in host.console_text("sd")
    assert "destroyed" not in stop.stdout
    assert not (host.paths.root / "save").exists() and qemu_pids_under(host.paths.root) == []
    start = host.run("pyxen", "host", "start", check=True)
    assert "xendomains" not in start.stdout
    assert list(host.domains()) == ["Domain-0"]


def test_a_corrupt_save_file_is_kept_and_reported_and_the_others_restore(host: Host) -> None:
    """A save file whose stream is cut short fails to restore: Xen's message with xl's words,
    the file kept, the next file restored, every daemon up, ``host start`` exits 1; the auto
    config of the domain whose file was kept is not created (it needs the admin's attention).
    A file that is not a save file is left alone."""
    set_host_cfg(host, 'xendomains_auto_only = "false"\n')
    host.create("good", memory=128, script=COUNTER)
    host.wait_console("good")
    wait_ticks(host, "good", 3)
    host.run("pyxen", "host", "stop", check=True, timeout=300)
    save_dir = host.paths.root / "save"
    good = (save_dir / "good").read_bytes()
    with open(save_dir / "good", "rb") as f:
        header = savefile.decode(f, "good")
    assert header.config is not None
    stream = good[header.stream_offset:]
    # Another domain's save file, its stream cut in half.
    (save_dir / "bad").write_bytes(savefile.encode(dict(header.config, name="other"))
                                   + stream[:len(stream) // 2])
    host.write_cfg("other", memory=96).rename(host.paths.auto_dir / "other.cfg")
    (save_dir / "notes.txt").write_text("not a save file\n")
    before = max(ticks(host, "good"))

    start = host.run("pyxen", "host", "start", timeout=300)
    assert start.returncode == 1, start
    lines = start.stdout.splitlines()
    at = lines.index("An error occurred while restoring domain bad:")
    assert lines[at + 1].startswith("  "), start.stdout  # xl's own words follow
    assert re.search(r"^xendomains   good: restored good \(domid \d+\)$", start.stdout, re.M), start.stdout
    assert "xendomains   other.cfg: other skipped: its save file was not restored" in start.stdout
    assert (save_dir / "bad").exists() and (save_dir / "notes.txt").exists()
    assert not (save_dir / "good").exists()
    assert all_daemons_up(host)
    assert list(host.domains()) == ["Domain-0", "good"]
    wait_ticks(host, "good", before + 5)
    assert ticks(host, "good").count(0) == 1
    status = host.run("python", "-m", "pyxen.host.xendomains", "status")
    assert (status.returncode, status.stdout) == (
        1, "Checking for xendomains: MISS AUTO: other MISS SAVED: bad notes.txt\n"), status


def test_host_stop_is_bounded_by_stop_maxwait(host: Host) -> None:
    """A guest that cannot answer (paused) with saving off: the migration to a host that is not
    there fails, ``xl shutdown --wait`` is killed after xendomains_stop_maxwait, so is the final
    ``shutdown --all``, and the guest is destroyed: host stop ends in seconds, exit 1."""
    set_host_cfg(host, 'xendomains_save = ""\nxendomains_auto_only = "false"\n'
                       'xendomains_migrate = "-s false nohost"\nxendomains_stop_maxwait = 2\n')
    host.xl("create", "-p", str(host.write_cfg("stuck", memory=96)))
    t0 = time.monotonic()
    stop = host.run("pyxen", "host", "stop", timeout=120)
    took = time.monotonic() - t0
    assert stop.returncode == 1, stop
    out = stop.stdout
    assert "An error occurred while migrating domain:" in out, out
    assert "An error occurred while shutting down domain:\n" in out, out
    assert "xl shutdown killed after 2 s (xendomains_stop_maxwait)" in out, out
    assert "xendomains   stuck: not shut down" in out, out
    assert "An error occurred while shutting down all domains:" in out, out
    assert re.search(r"^destroyed stuck \(\d+\)$", out, re.M), out
    assert qemu_pids_under(host.paths.root) == []
    assert took < 60, took


@pytest.mark.parametrize("dead", ["hypervisor", "xenstored"])
def test_a_daemon_dead_at_host_stop_is_started_again_and_the_guest_saved(host: Host, dead: str) -> None:
    """Every daemon is expendable: one killed after the supervisor stopped (nobody restarts it)
    is started again by host stop, so the guest is still saved (the hypervisor re-adopts the
    QEMU that outlived it) and restored at the next start."""
    set_host_cfg(host, 'xendomains_auto_only = "false"\n')
    host.create("kd", memory=128, script=COUNTER)
    host.wait_console("kd")
    wait_ticks(host, "kd", 3)
    stop_service(host.paths, SUPERVISOR)
    svc = next(s for s in SERVICES if s.name == dead)
    pid = running_pid(host.paths, svc)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while running_pid(host.paths, svc) is not None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    stop = host.run("pyxen", "host", "stop", check=True, timeout=300)
    assert re.search(rf"^{dead} +started \(pid \d+\) for xendomains' stop$", stop.stdout, re.M), stop.stdout
    assert f"xendomains   kd: saved to {host.paths.root / 'save' / 'kd'}" in stop.stdout, stop.stdout
    assert qemu_pids_under(host.paths.root) == []
    before = max(ticks(host, "kd"))
    start = host.run("pyxen", "host", "start", check=True, timeout=300)
    assert "xendomains   kd: restored kd" in start.stdout, start.stdout
    wait_ticks(host, "kd", before + 5)
    assert ticks(host, "kd").count(0) == 1
