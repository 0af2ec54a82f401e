"""A Debian guest end to end, as the seed makes one: a volume group on a loop device,
``pyxen image create`` (run as a user runs it) onto LVs, the guest booted with ``xl create`` to a
login prompt on its serial console, a root login over ``xl console`` and a command run, its
DHCP address (from the host's dnsmasq on xenbr0) reported in xenstore by the guest agent, and
``xl shutdown`` powering it off through systemd. A second image, in files under --dir, comes
from the cached base.

The guest boots as its config says, ``bootloader = 'pygrub'``: pygrub reads the kernel, initrd
and command line of grub.cfg's default entry from the LV (no mount). A kernel "upgrade" inside
the guest (a new /boot/vmlinuz-<v>, the kernel hooks rewrite grub.cfg) puts the new entry
first, and its removal takes it out. (Rebooting onto a new entry, a second Debian boot of a
minute or two under TCG, is test_pygrub_boot.py's, on its own disk; CI's time budget.)

The first run on a machine builds the base (debootstrap, about a minute and a half); later runs
unpack it from $PYXEN_CACHE. A vif on xenbr0: run under ``flock /tmp/pyxen-net.lock``."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Callable, TypeVar

import pexpect
import pytest

from pyxen.host.dhcp import query
from pyxen.storage import lvm
from pyxen.testing.host import BIN, Host
from pyxen.testing.lvm import loop_volume_group
from pyxen.xapi.guest_metrics import derive, guest_agent_nodes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

PASSWORD = "pyxen-debian"
#: A Debian guest under TCG on a loaded 2-core machine: boot to the login prompt.
BOOT_TIMEOUT = 300.0
T = TypeVar("T")


def wait_for(get: Callable[[], T | None], timeout: float, what: Callable[[], str]) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = get()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what()}: not within {timeout:.0f} s")


def image_create(host: Host, *args: str) -> subprocess.CompletedProcess[str]:
    """``pyxen image create`` as a user runs it (the host's PYXEN_ROOT: the config lands there)."""
    return subprocess.run([str(BIN / "pyxen"), "image", "create", *args], env=host.env, capture_output=True,
                          text=True, timeout=1500)


def test_debian_guest_on_lvm_boots_logs_in_reports_and_powers_off(host: Host, tmp_path: Path) -> None:
    wait_for(lambda: (st := query(host.paths)) and st["state"] == "serving", 30,
             lambda: f"the DHCP service on xenbr0: {query(host.paths)}")
    with loop_volume_group() as vg:
        # A bad request changes nothing.
        bad = image_create(host, "--hostname", "debg", "--lvm", vg, "--dhcp", "--size", "4Q")
        assert bad.returncode == 1 and bad.stderr.startswith("pyxen image: invalid --size '4Q'"), bad.stderr
        t0 = time.monotonic()
        made = image_create(host, "--hostname", "debg", "--lvm", vg, "--dhcp", "--size", "2G",
                            "--password", PASSWORD, "--hash_method", "sha512")
        created_s = time.monotonic() - t0
        assert made.returncode == 0, made.stderr + made.stdout[-3000:]
        out = made.stdout
        assert re.search(r"(?m)^\[\s*\d+%\] ", out) and "[100%] done" in out, out
        assert {lv.name for lv in lvm.lvs(vg)} == {"debg-disk", "debg-swap"}
        cfg_path = host.paths.root / "debg.cfg"
        cfg = cfg_path.read_text()
        assert "bootloader = 'pygrub'" in cfg and "name        = 'debg'" in cfg, cfg
        assert f"'phy:/dev/{vg}/debg-disk,xvda2,w'" in cfg and f"'phy:/dev/{vg}/debg-swap,xvda1,w'" in cfg
        mac = re.search(r"mac=(00:16:3E:[0-9A-F:]{8})", cfg)
        assert mac, cfg
        # The same name again is refused as xen-tools refuses it, and leaves everything as it was.
        again = image_create(host, "--hostname", "debg", "--lvm", vg, "--dhcp")
        assert again.returncode == 1 and "exists" in again.stderr, again.stderr
        assert cfg_path.read_text() == cfg

        t0 = time.monotonic()
        host.xl("create", str(cfg_path))
        domid = int(host.xl("domid", "debg").stdout)
        host.wait_console("debg", "debg login:", timeout=BOOT_TIMEOUT)
        boot_s = time.monotonic() - t0
        text = host.console_text("debg")
        assert "Debian GNU/Linux 12 debg ttyS0" in text

        # Log in on the console, as a user does, and run a command.
        con = pexpect.spawn(str(BIN / "xl"), ["console", "debg"], env=host.env, timeout=60, encoding="utf-8")
        try:
            con.sendline("")
            con.expect("debg login: ")
            con.sendline("root")
            con.expect("Password: ")
            con.sendline(PASSWORD)
            con.expect(r"root@debg:~# ")
            con.sendline("echo up-$((6*7)); ip -o link show eth0; systemctl is-system-running --wait")
            con.expect(r"up-42\r\n")
            con.expect(r"root@debg:~# ")
            shown = con.before
            assert "eth0:" in shown and mac.group(1).lower() in shown, shown
            assert re.search(r"\b(running|degraded)\b", shown), shown
            # A kernel upgrade as the guest sees it: a new /boot/vmlinuz-<v>, the package's
            # postinst hooks, and grub.cfg's first entry is the new kernel; removal takes it out.
            con.sendline("cp /boot/vmlinuz-$(uname -r) /boot/vmlinuz-9.9.9-test && "
                         "/etc/kernel/postinst.d/zz-pyxen-update-grub 9.9.9-test && "
                         "grep -m1 '^menuentry' /boot/grub/grub.cfg && rm /boot/vmlinuz-9.9.9-test && "
                         "/etc/kernel/postrm.d/zz-pyxen-update-grub 9.9.9-test && grep -c '^menuentry' "
                         "/boot/grub/grub.cfg && echo hooks-$((1+1))")
            con.expect(r"hooks-2\r\n")
            shown = con.before
            assert "menuentry 'Debian GNU/Linux, with Linux 9.9.9-test' {" in shown, shown
            assert re.search(r"\r\n1\r\n", shown), shown
            con.expect(r"root@debg:~# ")
            con.sendcontrol("]")
            con.expect(pexpect.EOF)
        finally:
            con.close(force=True)

        # The agent: OS and the DHCP address in xenstore.
        base = f"/local/domain/{domid}"
        ip = wait_for(lambda: host.xs_read(f"{base}/attr/vif/0/ipv4/0"), 120,
                      lambda: f"attr/vif/0/ipv4/0 (console: {host.console_text('debg')[-1500:]})")
        assert ip.startswith("10.80.0."), ip
        # What xapi makes of it (VM_guest_metrics), from the domain's nodes as xenopsd reads them.
        gm = derive(guest_agent_nodes(wait_for(lambda: (t := host.xs_subtree(domid)).get("data/updated") and t, 30,
                                               lambda: "data/updated")))
        assert gm.os_version["name"] == "Debian GNU/Linux 12 (bookworm)" and gm.os_version["distro"] == "debian"
        assert gm.os_version["major"] == "12" and gm.os_version["uname"].endswith("-cloud-amd64"), gm.os_version
        assert gm.networks["0/ip"] == ip and gm.other["feature-poweroff"] == "1", (gm.networks, gm.other)

        # xl shutdown: systemd stops the services and powers off; the domain goes away.
        host.xl("shutdown", "debg")
        wait_for(lambda: "debg" not in host.domains(), 180,
                 lambda: f"debg gone after xl shutdown (console: {host.console_text('debg')[-1500:]})")
        text = host.console_text("debg")
        assert "pyxen: shutdown requested" not in text  # (the agent's note goes to the journal)
        assert "reboot: Power down" in text, text[-2000:]
        assert re.search(r"Reached target .*Power-Off", text) or "systemd-shutdown" in text, text[-2000:]

        # Failure leaves nothing: the swap volume does not fit in the group, so the disk made
        # before it is removed again, and no config is written.
        failed = image_create(host, "--hostname", "debf", "--lvm", vg, "--dhcp", "--size", "1G", "--swap", "500G")
        assert failed.returncode == 1 and "debf-swap" in failed.stderr, failed.stderr
        assert {lv.name for lv in lvm.lvs(vg)} == {"debg-disk", "debg-swap"}
        assert not (host.paths.root / "debf.cfg").exists()

    # A second image of the same release: from the cached base.
    t0 = time.monotonic()
    second = image_create(host, "--hostname", "debd", "--dir", str(tmp_path), "--ip", "10.81.0.5",
                          "--gateway", "10.81.0.1", "--noswap", "--size", "1G", "--output", str(tmp_path))
    cached_s = time.monotonic() - t0
    assert second.returncode == 0, second.stderr
    assert "base system: cache hit" in second.stdout, second.stdout
    assert (tmp_path / "domains/debd/disk.img").stat().st_size == 1 << 30
    assert not (tmp_path / "domains/debd/swap.img").exists()
    cfg2 = (tmp_path / "debd.cfg").read_text()
    assert "'file:" + str(tmp_path / "domains/debd/disk.img") + ",xvda1,w'" in cfg2, cfg2
    assert "ip=10.81.0.5 ," in cfg2
    network = subprocess.run(["debugfs", "-R", "cat /etc/systemd/network/eth0.network",
                              str(tmp_path / "domains/debd/disk.img")], capture_output=True, text=True).stdout
    assert "Address=10.81.0.5/24" in network and "Gateway=10.81.0.1" in network, network
    # (virt-install's -p --import test boots such an image from its file: disk and sees the
    # static address reported by the agent.)
    print(f"image create: {created_s:.1f} s (first in this test), {cached_s:.1f} s cached; "
          f"xl create to login prompt {boot_s:.1f} s")
