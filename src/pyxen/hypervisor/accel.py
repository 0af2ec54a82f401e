"""Choosing how QEMU virtualizes guest CPUs: KVM when it can run a stock guest, else TCG.

Some hosts expose a /dev/kvm that runs simple code but hangs a stock Linux kernel (a
paravirtual KVM without the CPU features Linux needs). So the probe is a real guest: a stock
kernel with no root device, which under a working accelerator panics and, with panic=-1 and
-no-reboot, makes QEMU exit 0 within a second or two. A hang past the deadline means "no".
The verdict is cached by everything it depends on (QEMU, host kernel, /dev/kvm, probe kernel).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..paths import cache_dir

PROBE_TIMEOUT = 8.0


@dataclass(frozen=True)
class AccelChoice:
    """The accelerator and why it was chosen (shown in the hypervisor log and xl dmesg)."""

    accel: str
    reason: str


def _probe_kernel() -> Path | None:
    boots = sorted(Path("/boot").glob("vmlinuz-*"))
    demo = cache_dir() / "demo" / "vmlinuz"
    for k in [*boots, demo]:
        if k.is_file() and os.access(k, os.R_OK):
            return k
    return None


def _probe(qemu: str, kernel: Path) -> bool:
    cmd = [qemu, "-accel", "kvm", "-machine", "pc", "-cpu", "host", "-m", "128", "-display", "none",
           "-nodefaults", "-no-user-config", "-no-reboot", "-serial", "none", "-monitor", "none",
           "-kernel", str(kernel), "-append", "panic=-1 console=ttyS0 quiet"]
    try:
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=PROBE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return False
    except OSError:
        return False
    return done.returncode == 0


def choose(setting: str, qemu: str) -> AccelChoice:
    """Resolve host.cfg's ``accel`` (auto, kvm, tcg) to what QEMU will use."""
    if setting in ("kvm", "tcg"):
        return AccelChoice(setting, f"accel={setting} in host.cfg")
    if not os.path.exists("/dev/kvm"):
        return AccelChoice("tcg", "no /dev/kvm")
    kernel = _probe_kernel()
    if kernel is None:
        return AccelChoice("tcg", "no stock kernel to probe KVM with")
    try:
        qemu_id = subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    except OSError:
        return AccelChoice("tcg", f"{qemu} not runnable")
    st = kernel.stat()
    key = f"{qemu_id}|{os.uname().release}|{kernel}|{st.st_size}|{int(st.st_mtime)}|{os.stat('/dev/kvm').st_rdev}"
    cache = cache_dir() / "accel-probe.json"
    try:
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return AccelChoice(cached["accel"], cached["reason"] + " (cached)")
    except (OSError, ValueError):
        pass
    if _probe(qemu, kernel):
        choice = AccelChoice("kvm", f"KVM booted a stock kernel ({kernel.name})")
    else:
        choice = AccelChoice("tcg", f"KVM cannot run a stock kernel ({kernel.name} hung or failed "
                                    f"within {PROBE_TIMEOUT:.0f} s): using TCG")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"key": key, "accel": choice.accel, "reason": choice.reason}))
    except OSError:
        pass
    return choice
