"""Issue 9, first part: ``xl save`` and ``xl restore`` of a real guest, with xl's container and
messages. The guest prints a counter; after save and restore it goes on from where it stopped."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from pyxen.toolstack.savefile import MAGIC

from ..conftest import Host, qemu_pids_under

pytestmark = pytest.mark.integration

COUNTER = 'i=0; while true; do echo "tick $i"; i=$((i+1)); sleep 0.1; done &'


def ticks(host: Host, name: str) -> list[int]:
    return [int(n) for n in re.findall(r"^tick (\d+)\r?$", host.console_text(name), re.M)]


def wait_ticks(host: Host, name: str, above: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ticks(host, name) or max(ticks(host, name)) <= above:
        assert time.monotonic() < deadline, host.console_text(name)[-800:]
        time.sleep(0.1)


def test_save_and_restore_continue_where_it_stopped(host: Host, tmp_path: Path) -> None:
    domid = host.create("sr", memory=128, script=COUNTER)
    host.wait_console("sr")
    wait_ticks(host, "sr", 10)
    free = int(host.info("free_memory"))
    save = tmp_path / "sr.save"
    done = host.xl("save", "sr", str(save))
    assert re.fullmatch(rf"Saving to {save} new xl format \(info 0x3/0x0/\d+\)\n", done.stderr), done.stderr
    assert "sr" not in host.domains() and qemu_pids_under(host.paths.root) == []
    assert int(host.info("free_memory")) == free + 128
    assert save.read_bytes()[:32] == MAGIC
    before = max(ticks(host, "sr"))
    time.sleep(1.0)
    assert max(ticks(host, "sr")) == before  # nothing runs while it is saved

    done = host.xl("restore", str(save))
    assert done.stderr.splitlines()[:3] == [
        f"Loading new save file {save} (new xl fmt info 0x3/0x0/{done.stderr.split('/')[-1].split(')')[0]})",
        " Savefile contains xl domain config in JSON format", "Parsing config from <saved>"], done.stderr
    row = host.domains()["sr"]
    assert row["id"] != str(domid) and row["mem"] == "128"
    wait_ticks(host, "sr", before + 10)
    after = ticks(host, "sr")
    # The counter went on from where it stopped: no new boot (no tick 0 again), no gap.
    assert after.count(0) == 1 and "pyxen demo guest up" in host.console_text("sr")
    assert host.console_text("sr").count("pyxen demo guest up") == 1
    # Around the save no tick is missing or repeated (early ticks may share a line with the
    # boot's own output, so the check starts a little before the save).
    tail = [n for n in after if n >= before - 5]
    assert tail == list(range(before - 5, max(after) + 1)), (before, tail)
    host.xl("destroy", "sr")


def test_save_keep_running_or_paused_and_restore_paused(host: Host, tmp_path: Path) -> None:
    host.create("kp", memory=128, script=COUNTER)
    host.wait_console("kp")
    wait_ticks(host, "kp", 3)
    host.xl("save", "-c", "kp", str(tmp_path / "c.save"))
    assert host.domains()["kp"]["state"][2] == "-"
    n = max(ticks(host, "kp"))
    wait_ticks(host, "kp", n + 3)  # still running
    host.xl("save", "-p", "kp", str(tmp_path / "p.save"))
    assert host.domains()["kp"]["state"][2] == "p"
    host.xl("destroy", "kp")
    host.xl("restore", "-p", str(tmp_path / "c.save"))
    assert host.domains()["kp"]["state"][2] == "p"
    n = max(ticks(host, "kp"))
    time.sleep(1.0)
    assert max(ticks(host, "kp")) == n  # paused: no progress
    host.xl("unpause", "kp")
    wait_ticks(host, "kp", n + 3)
    host.xl("destroy", "kp")


def test_restore_of_a_bad_file_is_one_line_and_creates_nothing(host: Host, tmp_path: Path) -> None:
    bad = tmp_path / "bad.save"
    for content, message in ((b"not a save file at all, but long enough to hold a header.....",
                              "File has wrong magic number - corrupt or for a different tool?"),
                             (MAGIC[:20], f"file/stream truncated reading header from {bad}")):
        bad.write_bytes(content)
        done = host.xl("restore", str(bad), check=False)
        assert done.returncode == 1 and done.stderr.strip().splitlines()[-1] == message, done.stderr
    done = host.xl("restore", str(tmp_path / "missing.save"), check=False)
    assert done.returncode == 1 and done.stderr == "Can't open restore file: No such file or directory\n"
    assert list(host.domains()) == ["Domain-0"] and qemu_pids_under(host.paths.root) == []


def test_save_and_restore_with_a_disk_and_a_vif(host: Host, tmp_path: Path) -> None:
    """Devices come back through the backends: the guest's file on its blkback disk is intact
    and still writable after the restore, and its vif is plugged again."""
    from pyxen.testing.bridge import link_local_bridge
    img = tmp_path / "d.img"
    img.write_bytes(bytes(8 << 20))
    script = (COUNTER + " dd if=/dev/urandom of=/dev/vda bs=64k count=16 conv=fsync 2>/dev/null; "
              "echo \"sum-before $(dd if=/dev/vda bs=64k count=16 2>/dev/null | md5sum)\"; "
              "while true; do echo 3 > /proc/sys/vm/drop_caches; "
              "echo \"sum-now $(dd if=/dev/vda bs=64k count=16 2>/dev/null | md5sum)\"; sleep 1; done &")
    with link_local_bridge() as (bridge, _):
        host.create("dv", memory=128, script=script,
                    extra_lines=f"disk = ['file:{img},xvda,w']\nvif = ['bridge={bridge}']\n")
        host.wait_console("dv", "sum-before")
        before = max(ticks(host, "dv"))
        save = tmp_path / "dv.save"
        host.xl("save", "dv", str(save))
        host.xl("restore", str(save))
        wait_ticks(host, "dv", before + 5)
        sums = re.findall(r"^sum-(before|now) (\w+)", host.console_text("dv"), re.M)
        restored_at = host.console_text("dv").rfind(f"tick {before}")
        later = re.findall(r"^sum-now (\w+)", host.console_text("dv")[restored_at:], re.M)
        deadline = time.monotonic() + 30
        while len(later) < 2:  # read back from the disk after the restore, caches dropped
            assert time.monotonic() < deadline, host.console_text("dv")[-800:]
            time.sleep(0.5)
            later = re.findall(r"^sum-now (\w+)", host.console_text("dv")[restored_at:], re.M)
        assert set(later) == {sums[0][1]}, (sums[0], later)
        assert len(host.xl("block-list", "dv").stdout.splitlines()) == 2
        assert len(host.xl("network-list", "dv").stdout.splitlines()) == 2
        host.xl("destroy", "dv")
    assert ticks(host, "dv").count(0) == 1
