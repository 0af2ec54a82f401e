"""Issue 9: ``xl dump-core <Domain> <filename>``, an ELF core of a real guest's memory that gdb
can open; the guest keeps running (a paused one stays paused); Xen's messages and exit codes."""

from __future__ import annotations

import re
import shutil
import stat
import struct
import subprocess
import time
from pathlib import Path

import pytest

from ..conftest import BIN, Host

pytestmark = pytest.mark.integration

#: The guest computes the marker, so only its memory (a file on the initramfs's tmpfs, and the
#: shell's buffers) holds the expanded text, never the kernel command line that carries the script.
SCRIPT = """\
echo pyxen-core-marker-$((6*7))-$((1000+234)) > /tmp/marker
(i=0; while :; do i=$((i+1)); echo "tick $i"; sleep 0.2; done) &
"""
MARKER = b"pyxen-core-marker-42-1234"
ET_CORE = 4


def ticks(host: Host, name: str) -> int:
    found = re.findall(r"tick (\d+)(?=\r?\n)", host.console_text(name))
    return int(found[-1]) if found else 0


def wait_ticks_past(host: Host, name: str, n: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (now := ticks(host, name)) > n:
            return now
        time.sleep(0.2)
    raise AssertionError(f"{name}: the counter stayed at {ticks(host, name)} (wanted > {n})")


def check_core(core: Path) -> None:
    """An ELF core holding the marker: the header by hand, readelf's view, and gdb's if present."""
    data = core.read_bytes()
    assert data[:4] == b"\x7fELF", data[:16]
    endian = "<" if data[5] == 1 else ">"
    assert struct.unpack_from(endian + "H", data, 16)[0] == ET_CORE
    assert MARKER in data
    assert stat.S_IMODE(core.stat().st_mode) == 0o600  # as xc_domain_dumpcore creates it
    if shutil.which("readelf"):
        header = subprocess.run(["readelf", "-h", str(core)], capture_output=True, text=True, check=True).stdout
        assert re.search(r"Type:\s+CORE \(Core file\)", header), header


def test_dump_core_running_and_paused_guest(host: Host, tmp_path: Path) -> None:
    host.create("dumpme", memory=96, script=SCRIPT)
    host.wait_console("dumpme")
    before = wait_ticks_past(host, "dumpme", 0)

    core = tmp_path / "dumpme.core"
    done = host.xl("dump-core", "dumpme", str(core))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    check_core(core)
    # Still running: no 'p' in its state, and its counter moves on.
    assert "p" not in host.domains()["dumpme"]["state"]
    wait_ticks_past(host, "dumpme", before + 3)

    # gdb opens it as a core file (its load segments are the guest's memory).
    gdb = shutil.which("gdb")
    if gdb is not None:
        out = subprocess.run([gdb, "--batch", "-nx", "-ex", "info files", "-c", str(core)],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "Local core dump file" in out.stdout and str(core) in out.stdout, out.stdout
        assert "is load" in out.stdout, out.stdout

    # A paused guest stays paused through the dump; a relative name is xl's working directory's,
    # and the domain may be given by id. Dumping to an existing file replaces it.
    domid = host.xl("domid", "dumpme").stdout.strip()
    host.xl("pause", "dumpme")
    work = tmp_path / "cwd"
    work.mkdir()
    (work / "again.core").write_bytes(b"old")
    done = subprocess.run([str(BIN / "xl"), "dump-core", domid, "again.core"], env=host.env, cwd=work,
                          capture_output=True, text=True, timeout=300)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", ""), done
    check_core(work / "again.core")
    assert host.domains()["dumpme"]["state"] == "--p---"
    paused_at = ticks(host, "dumpme")
    time.sleep(1.0)
    assert ticks(host, "dumpme") == paused_at  # it did not run
    host.xl("unpause", "dumpme")
    wait_ticks_past(host, "dumpme", paused_at)


def test_dump_core_errors(host: Host, tmp_path: Path) -> None:
    host.create("dumperr", memory=96)
    host.wait_console("dumperr")

    done = host.xl("dump-core", "dumperr", check=False)
    assert done.returncode == 2, done
    assert done.stderr.startswith("'xl dump-core' requires at least 2 arguments.\n"), done.stderr
    done = host.xl("dump-core", check=False)
    assert done.returncode == 2 and "requires at least 2 arguments." in done.stderr

    done = host.xl("dump-core", "nosuch", str(tmp_path / "c"), check=False)
    assert (done.returncode, done.stderr) == (1, "nosuch is an invalid domain identifier (rc=-6)\n"), done
    done = host.xl("dump-core", "77", str(tmp_path / "c"), check=False)  # digits: a domid, unchecked
    assert (done.returncode, done.stderr) == (1, "core dump failed (rc=-3)\n"), done
    assert not (tmp_path / "c").exists()

    done = host.xl("dump-core", "dumperr", "/nonexistent/dir/core", check=False)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", "core dump failed (rc=-3)\n"), done
    assert "p" not in host.domains()["dumperr"]["state"]  # a failed dump leaves it running too

    assert "Core dump a domain" in host.xl("help").stdout
    assert "Core dump a domain" in host.xl("help", "dump-core").stdout
    assert host.xl("dump-c", "dumperr", str(tmp_path / "p.core")).returncode == 0  # a prefix will do
