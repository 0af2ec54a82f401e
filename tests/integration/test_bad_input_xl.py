"""Bad input through the real commands (issue 8): one line on stderr, exit 1 (2 for bad usage),
and nothing changed on the host; relative paths in a config are xl's working directory's."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pyxen.host.services import SERVICES, running_pid
from pyxen.hypervisor.client import XenCtrl

from ..conftest import BIN, Host

pytestmark = pytest.mark.integration

BINARY = bytes([0xFF, 0x00, 0xFE, 0x01, 0x80]) * 20


def errors(done: subprocess.CompletedProcess[str]) -> list[str]:
    """stderr without xl's progress line."""
    return [line for line in done.stderr.splitlines() if not line.startswith("Parsing config from")]


def state(host: Host) -> tuple[object, str]:
    """What a refused command must leave alone: the domains (but their CPU time) and the
    xenstore tree."""
    doms = {name: {k: v for k, v in row.items() if k != "time"} for name, row in host.domains().items()}
    return doms, host.run("pyxen", "xenstore", "ls", "/", check=True).stdout


def test_bad_configs_and_domain_ids_change_nothing(host: Host) -> None:
    root = host.paths.root
    (root / "binary.cfg").write_bytes(BINARY)
    (root / "deep.cfg").write_text(f'name = "deep"\nkernel = "{host.image.kernel}"\n'
                                   "x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    digits = host.write_cfg("123", memory=64)
    before = state(host)

    done = host.xl("create", str(root / "binary.cfg"), check=False)
    assert done.returncode == 1 and errors(done) == [
        f"{root}/binary.cfg:1: not a config file: binary data (a NUL byte)"], done.stderr
    done = host.xl("create", str(root / "deep.cfg"), check=False)
    assert done.returncode == 1 and errors(done) == [
        f"{root}/deep.cfg:3: config parsing error near `[': memory exhausted",
        "Failed to parse config: Invalid argument"], done.stderr
    done = host.xl("create", str(digits), check=False)
    assert done.returncode == 1 and errors(done) == [
        f"{digits}:1: name: '123' is all digits, which xl reads as a domain id"], done.stderr

    # Other scripts' digits are names to xl (strtoul takes only 0-9), so no domain has them.
    for argv in (["list", "\u0660"], ["destroy", "\uff10"], ["pause", "\u0661\u0662"], ["vcpu-list", "\u0660"]):
        done = host.xl(*argv, check=False)
        assert done.returncode == 1 and errors(done) == [
            f"{argv[1]} is an invalid domain identifier (rc=-6)"], (argv, done.stderr)
    done = host.xl("domname", "\u0660", check=False)
    assert done.returncode == 1 and done.stderr == "Invalid domain id.\n\n"  # xl_info.c: its blank line
    done = host.run("pyxen", "evtchn", "\u0660")
    assert done.returncode == 1 and len(errors(done)) == 1 and "invalid domain identifier" in done.stderr
    done = host.xl("sched-credit", "-d", "0", "-w", "\u0665\u0661\u0662", check=False)
    assert done.returncode == 2 and "invalid integer value" in done.stderr
    assert host.xl("list", "0").stdout.splitlines()[1].startswith("Domain-0")  # ASCII still a domid
    assert state(host) == before


def test_xendomains_skips_a_binary_config_and_xl_survives_xenstored_down(host: Host) -> None:
    auto = host.paths.auto_dir
    auto.mkdir(exist_ok=True)
    (auto / "a-binary.cfg").write_bytes(BINARY)
    good = host.write_cfg("autogood", memory=96)  # (64 MiB is too small for the demo guest: it resets at once)
    shutil.move(str(good), auto / "b-good.cfg")
    done = host.run("pyxen", "host", "start")
    assert done.returncode == 1, done  # one config failed
    lines = [line for line in done.stdout.splitlines() if line.startswith("xendomains")]
    assert len(lines) == 2, done.stdout
    assert lines[0].startswith("xendomains   a-binary.cfg: failed: ") and "not a config file" in lines[0]
    assert lines[1].startswith("xendomains   b-good.cfg: started autogood (domid ")
    assert "autogood" in host.domains()

    with host.supervisor_held():  # xenstored stays down until the block ends
        xenstored = next(s for s in SERVICES if s.name == "xenstored")
        pid = running_pid(host.paths, xenstored)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while running_pid(host.paths, xenstored) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        for argv in (["list"], ["info"], ["mem-set", "autogood", "48m"], ["pause", "autogood"],
                     ["destroy", "autogood"], ["block-list", "autogood"], ["shutdown", "autogood"]):
            done = host.xl(*argv, check=False, timeout=30)
            assert done.returncode == 1, (argv, done)
            assert errors(done) == [f"xl: cannot connect to xenstore at {host.paths.xenstored_socket} "
                                    "(Connection refused); is the host started? (pyxen host start)"], (argv, done.stderr)
        # Nothing was applied: the domain still runs, unpaused, with its memory.
        with XenCtrl(host.paths.hypervisor_socket) as xc:
            dom = next(d for d in xc.call("sysctl.getdomaininfolist") if d["name"] == "autogood")
        assert not dom["paused"] and dom["memory_kb"] == 96 * 1024, dom


def test_relative_kernel_ramdisk_and_disk_are_xls_cwd(host: Host) -> None:
    """``cd`` to a folder holding the kernel, initrd and disk image; a config naming them
    relatively boots, and the guest reads that image."""
    here = host.paths.root / "guest"
    here.mkdir()
    shutil.copy(host.image.kernel, here / "vmlinuz")
    shutil.copy(host.image.ramdisk, here / "initrd")
    data = os.urandom(1 << 20)
    (here / "disk.img").write_bytes(data)
    script = ('for d in /sys/block/vd*; do [ "$(cat $d/serial)" = xvdb ] && B=/dev/${d##*/}; done\n'
              'echo "rel-sum $(dd if=$B bs=1M count=1 2>/dev/null | sha256sum)"\n')
    extra = "console=ttyS0 quiet panic=-1 pyxen.run=" + base64.b64encode(script.encode()).decode()
    (here / "rel.cfg").write_text('name = "rel"\nmemory = 128\nkernel = "vmlinuz"\nramdisk = "initrd"\n'
                                  f'extra = "{extra}"\ndisk = [ "disk.img,raw,xvdb,w" ]\n')
    done = subprocess.run([str(BIN / "xl"), "create", "rel.cfg"], cwd=here, env=host.env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    text = host.wait_console("rel", "rel-sum")
    assert f"rel-sum {hashlib.sha256(data).hexdigest()}" in text
    cfg = json.loads(host.xl("list", "-l", "rel").stdout)[0]["config"]
    assert cfg["b_info"]["kernel"] == f"{here}/vmlinuz"
    assert cfg["b_info"]["ramdisk"] == f"{here}/initrd"
    assert [(d["pdev_path"], d["vdev"]) for d in cfg["disks"]] == [(f"{here}/disk.img", "xvdb")]
