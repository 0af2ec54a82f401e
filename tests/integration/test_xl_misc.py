"""Issue 10, "the rest of the commands", against a real host and a real demo guest under QEMU:
rename (xl list, domid, xenstore and the console follow), vm-list, list -v/-c/-n, info -n/-x,
uptime -s, claims, sysrq (the guest's agent hands the letter to its kernel), trigger nmi (the
guest's kernel reports it) and reset (it boots again, same domain), qemu-monitor-command,
set-parameters, vncviewer, console -t/-n/-e, xentop -b, config-update then reboot -w (the
domain comes back built from the updated config); a negative test per error class.

One guest serves the module's tests, in file order (the last ones restart it). One test gives
a guest a vif: run the module under ``flock /tmp/pyxen-net.lock``.
"""

from __future__ import annotations

import re
import sys
import time
from typing import Iterator

import pexpect
import pytest

from pyxen.images.demo import DemoImage
from pyxen.testing.bridge import link_local_bridge
from pyxen.testing.host import BIN, Host, started_host

pytestmark = pytest.mark.integration

NAME = "misc"


@pytest.fixture(scope="module")
def mhost(demo_image: DemoImage) -> Iterator[Host]:
    with started_host(demo_image, prefix="pyxen-misc-") as h:
        h.create(NAME, memory=128, vcpus=2)
        h.wait_console(NAME)
        yield h


def domid(h: Host, name: str) -> int:
    return int(h.xl("domid", name).stdout)


def fails(h: Host, *args: str) -> tuple[int, str, str]:
    done = h.xl(*args, check=False)
    return done.returncode, done.stdout, done.stderr


def wait_for(pred: object, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_vm_list_and_list_columns(mhost: Host) -> None:
    d = domid(mhost, NAME)
    uuid = _vm_uuid(mhost, d)
    out = mhost.xl("vm-list").stdout.splitlines()
    assert out[0] == "UUID                                  ID    name"
    assert f"{uuid}  {d}    {NAME:<30}" in out
    verbose = mhost.xl("list", "-v", NAME).stdout.splitlines()
    assert verbose[0].endswith("   UUID                            Reason-Code\tSecurity Label")
    assert re.fullmatch(rf"{NAME} +{d} +\d+ +2 +[-rb]{{2}}---- +\d+\.\d {uuid} +- +-", verbose[1]), verbose[1]
    pools = mhost.xl("list", "-c").stdout.splitlines()
    assert pools[0].endswith("         Cpupool") and all(line.endswith("Pool-0") for line in pools[1:])
    numa = mhost.xl("list", "-n").stdout.splitlines()
    assert numa[0].endswith(" NODE Affinity") and all(line.endswith(" all") for line in numa[1:])
    claims = mhost.xl("claims")
    assert claims.stderr == "claim_mode not enabled (see man xl.conf).\n"
    assert claims.stdout.splitlines()[0].endswith("  Claimed")


def _vm_uuid(h: Host, d: int) -> str:
    return h.run("pyxen", "xenstore", "read", f"/local/domain/{d}/vm", check=True).stdout.strip().split("/")[-1]


def test_info_numa_and_xenstore(mhost: Host) -> None:
    out = mhost.xl("info", "-n").stdout
    lines = out.splitlines()
    nr_cpus = int(mhost.info("nr_cpus"))
    top = lines.index("cpu_topology           :")
    assert lines[top - 1].startswith("free_cpus")
    assert lines[top + 1] == "cpu:    core    socket     node"
    assert all(re.fullmatch(r" *\d+: +\d+ +\d+ +\d+", row) for row in lines[top + 2: top + 2 + nr_cpus])
    numa = lines.index("numa_info              :")
    assert lines[numa + 1] == "node:    memsize    memfree    distances"
    total = int(mhost.info("total_memory"))
    assert re.fullmatch(rf"   0: +{total} +\d+ +10", lines[numa + 2]), lines[numa + 2]
    assert mhost.xl("info", "-x", "xenstore_features").stdout == "0x00000000\n"
    assert "xenstore_features" not in mhost.xl("info").stdout


def test_uptime_short(mhost: Host) -> None:
    out = mhost.xl("uptime", "-s", NAME).stdout
    assert re.fullmatch(rf" \d\d:\d\d:\d\d up  0:\d\d, {NAME} \({domid(mhost, NAME)}\)\n", out), out


def test_qemu_monitor_command(mhost: Host) -> None:
    out = mhost.xl("qemu-monitor-command", NAME, "info status").stdout
    assert out == "VM status: running\n\n"  # QEMU's "\r\n" (text mode reads it as "\n"), then xl's
    code, _, err = fails(mhost, "qemu-monitor-command", "Domain-0", "info status")
    assert code == 1 and re.fullmatch(r"libxl: error: libxl_qmp.c:1334:qmp_ev_connect: Domain 0:Failed to "
                                      r"connect to QMP socket \S+: No such file or directory\n", err), err
    code, _, err = fails(mhost, "qemu-monitor-command", NAME, "info", "status")
    assert (code, err) == (1, "Invalid arguments.\n")


def test_sysrq_reaches_the_guest_kernel(mhost: Host) -> None:
    before = mhost.console_text(NAME).count("sysrq: HELP")
    mhost.xl("sysrq", NAME, "h")
    wait_for(lambda: mhost.console_text(NAME).count("sysrq: HELP") > before, what="the guest's sysrq help")
    d = domid(mhost, NAME)
    # the agent acknowledged it, as Linux's sysrq handler does
    assert mhost.run("pyxen", "xenstore", "read", f"/local/domain/{d}/control/sysrq").stdout.strip() == ""
    code, out, err = fails(mhost, "sysrq", NAME, "hb")
    assert (code, err) == (1, "Invalid sysrq.\n\n") and " sysrq <Domain> <letter>" in out  # and the help, on stdout
    code, _, err = fails(mhost, "sysrq", "999", "h")
    assert (code, err) == (1, "Domain 999 does not exist.\n")


def test_trigger_nmi_and_errors(mhost: Host) -> None:
    mhost.xl("trigger", NAME, "nmi")
    mhost.wait_console(NAME, "NMI received for unknown reason", timeout=60)
    code, _, err = fails(mhost, "trigger", NAME, "bogus")
    assert (code, err) == (1, 'Invalid trigger "bogus"\n')
    code, _, err = fails(mhost, "trigger", NAME)
    assert code == 2 and err.startswith("'xl trigger' requires at least 2 arguments.")
    code, _, err = fails(mhost, "trigger", "nosuch", "nmi")
    assert (code, err) == (1, "nosuch is an invalid domain identifier (rc=-6)\n")
    # Xen 4.17: a PV guest has no ACPI power button, x86 has no INIT trigger; xl says so and exits 0
    d = domid(mhost, NAME)
    code, _, err = fails(mhost, "trigger", NAME, "power")
    assert code == 0 and f"Domain {d}:Send trigger 'power' failed: Invalid argument" in err
    code, _, err = fails(mhost, "trigger", NAME, "init")
    assert code == 0 and "Send trigger 'init' failed: Function not implemented" in err
    code, _, err = fails(mhost, "button-press", NAME, "lid")
    assert (code, err) == (1, 'WARNING: "button-press" is deprecated. Please use "trigger"\n'
                              "lid is an invalid button identifier\n")


def test_set_parameters(mhost: Host) -> None:
    mhost.xl("set-parameters", "loglvl=all guest_loglvl=info")
    assert any("loglvl set to all" in line for line in mhost.xl("dmesg").stdout.splitlines())
    code, _, err = fails(mhost, "set-parameters", "dom0_mem=2G")
    assert code == 1
    assert err.endswith("setting parameters: No such file or directory\ncannot set parameters: dom0_mem=2G\n")
    code, _, err = fails(mhost, "set-parameters", "loglvl=loud")
    assert code == 1 and "Invalid argument" in err


def test_vncviewer_needs_a_vnc_display(mhost: Host) -> None:
    code, _, err = fails(mhost, "vncviewer", NAME)
    assert code == 1 and "Cannot get vnc-port" in err


def test_xentop_batch(mhost: Host) -> None:
    """Two samples a few seconds apart while the guest is busy: its CPU(sec) moves and CPU(%)
    is what it used in between."""
    child = pexpect.spawn(str(BIN / "xl"), ["console", NAME], env=mhost.env, timeout=60)
    try:
        child.sendline("timeout 30 sh -c 'while :; do :; done' & echo busy-$((6*7))")
        child.expect("busy-42")
        child.sendcontrol("]")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    done = mhost.run(sys.executable, "-m", "pyxen.cli.xentop", "-b", "-i", "2", "-d", "4", timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    headers = [i for i, line in enumerate(lines) if line.lstrip().startswith("NAME  STATE")]
    assert len(headers) == 2
    assert lines[0] == ("      NAME  STATE   CPU(sec) CPU(%)     MEM(k) MEM(%)  MAXMEM(k) MAXMEM(%) VCPUS NETS "
                        "NETTX(k) NETRX(k) VBDS   VBD_OO   VBD_RD   VBD_WR  VBD_RSECT  VBD_WSECT SSID")
    rows = [line.split() for line in lines if line.split()[:1] == [NAME]]
    assert len(rows) == 2
    (first, second) = rows
    assert int(second[2]) >= int(first[2]) + 1, rows  # CPU(sec) moved
    assert float(first[3]) == 0.0 and float(second[3]) > 20.0, rows  # no previous sample, then busy
    assert second[8] == "2" and second[12] == "0"  # VCPUS, VBDS
    assert any(line.split()[0] == "Domain-0" for line in lines[1:headers[1]])


def test_xentop_network_counters(mhost: Host) -> None:
    """A guest with a vif pings Dom0 (on a link-local test bridge, Dom0's end in a namespace):
    xentop's NETS, NETTX(k)/NETRX(k) and its -n line show the traffic from the guest's side.
    Run under flock /tmp/pyxen-net.lock (the vif's TAP name is host-global)."""
    with link_local_bridge(dom0_ip="169.254.79.100", tag="misc") as (br, _ns):
        script = ("ip link set eth0 up\nip addr add 169.254.79.2/16 dev eth0\n"
                  "ping -c 20 -s 1000 -i 0.2 -w 60 169.254.79.100 >/dev/null; echo \"pinged $?\"\n")
        mhost.create("netg", memory=96, script=script,
                     extra_lines=f"vif = ['mac=00:16:3e:00:79:02,bridge={br}']\n")
        try:
            assert "pinged 0" in mhost.wait_console("netg", "pinged", timeout=180)
            done = mhost.run(sys.executable, "-m", "pyxen.cli.xentop", "-b", "-i", "1", "-n", timeout=60)
            assert done.returncode == 0, done.stderr
            lines = done.stdout.splitlines()
            at = next(i for i, line in enumerate(lines) if line.split()[:1] == ["netg"])
            row = lines[at].split()
            assert row[9] == "1"  # NETS
            assert int(row[10]) >= 19 and int(row[11]) >= 19, row  # 20 pings of 1 KB each way
            m = re.fullmatch(r"Net0 RX: +(\d+)bytes +(\d+)pkts +0err +0drop  TX: +(\d+)bytes +(\d+)pkts +0err +0drop",
                             lines[at + 1])
            assert m and int(m.group(2)) >= 20 and int(m.group(4)) >= 20, lines[at + 1]
        finally:
            mhost.xl("destroy", "netg", check=False)


def test_console_options(mhost: Host) -> None:
    code, _, err = fails(mhost, "console", "-t", "bogus", NAME)
    assert (code, err) == (1, "console type supported are: pv, serial, vuart\n")
    code, _, err = fails(mhost, "console", "-e", "xyz", NAME)
    assert (code, err) == (22, "Invalid escape argument\n")
    code, _, err = fails(mhost, "console", "-n", "1", NAME)  # no second console
    assert code == 1 and "Could not read tty from store" in err
    # serial falls back to the PV console, as xenconsole does; -e q detaches on 'q'
    child = pexpect.spawn(str(BIN / "xl"), ["console", "-t", "serial", "-e", "q", NAME], env=mhost.env, timeout=60)
    try:
        child.sendline("echo esc-$((40+2))")
        child.expect("esc-42")
        child.send("q")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_rename(mhost: Host) -> None:
    d = domid(mhost, NAME)
    mhost.xl("rename", NAME, "renamed")
    assert mhost.domains()["renamed"]["id"] == str(d) and NAME not in mhost.domains()
    assert domid(mhost, "renamed") == d
    assert mhost.run("pyxen", "xenstore", "read", f"/local/domain/{d}/name").stdout.strip() == "renamed"
    assert mhost.run("pyxen", "xenstore", "read", f"/vm/{_vm_uuid(mhost, d)}/name").stdout.strip() == "renamed"
    assert mhost.xl("qemu-monitor-command", "renamed", "info status").stdout.startswith("VM status: running")
    child = pexpect.spawn(str(BIN / "xl"), ["console", "renamed"], env=mhost.env, timeout=60)
    try:
        child.sendline("echo renamed-$((6*7))")
        child.expect("renamed-42")
        child.sendcontrol("]")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    code, _, err = fails(mhost, "rename", "renamed", "Domain-0")
    assert code == 1
    assert err == (f'libxl: error: libxl_domain.c:81:libxl__domain_rename: Domain {d}:Domain with name '
                   f'"Domain-0" already exists.\nCan\'t rename domain \'renamed\'.\n')
    code, _, err = fails(mhost, "rename", "nosuch", "x")
    assert (code, err) == (1, "nosuch is an invalid domain identifier (rc=-6)\n")
    code, _, err = fails(mhost, "rename", "renamed")
    assert code == 2 and err.startswith("'xl rename' requires at least 2 arguments.")
    mhost.xl("rename", "renamed", NAME)


def test_trigger_reset_restarts_the_guest(mhost: Host) -> None:
    """A reset is the PC resetting: the domain shuts down with reason reboot and on_reboot
    (restart) rebuilds it, under its name, with a new domid, as Xen's toolstack does."""
    d = domid(mhost, NAME)
    boots = mhost.console_text(NAME).count("pyxen demo guest up")
    mhost.xl("trigger", NAME, "reset")
    wait_for(lambda: mhost.console_text(NAME).count("pyxen demo guest up") > boots, timeout=180,
             what="the guest to boot again")
    assert int(mhost.domains()[NAME]["id"]) > d
    assert "Domain %d has shut down, reason code 1" % d in mhost.paths.daemon_log("monitor").read_text()


def test_sysrq_b_reboots_the_guest(mhost: Host) -> None:
    """sysrq b: the guest's kernel resets the machine at once; the toolstack restarts it."""
    d = domid(mhost, NAME)
    boots = mhost.console_text(NAME).count("pyxen demo guest up")
    mhost.xl("sysrq", NAME, "b")
    wait_for(lambda: mhost.console_text(NAME).count("pyxen demo guest up") > boots, timeout=180,
             what="the guest to boot again")
    assert "sysrq: Resetting" in mhost.console_text(NAME)
    assert int(mhost.domains()[NAME]["id"]) > d


def test_config_update_then_reboot_wait(mhost: Host) -> None:
    code, _, err = fails(mhost, "config-update", NAME, "/nonexistent.cfg")
    assert code == 253  # ERROR_FAIL returned from main
    assert err.endswith("Failed to read config file: /nonexistent.cfg: No such file or directory\n")
    code, _, err = fails(mhost, "config-update")
    assert (code, err) == (1, "xl config-update requires a domain argument\n")
    d = domid(mhost, NAME)
    cfg = mhost.write_cfg(NAME, memory=96, vcpus=1)
    done = mhost.xl("config-update", NAME, str(cfg))
    assert done.stderr.endswith(f"setting dom{d} configuration\n")
    assert done.stderr.startswith("WARNING: xl now has better capability to manage domain configuration")
    assert mhost.domains()[NAME]["vcpus"] == "2"  # the running domain is unchanged
    done = mhost.xl("reboot", "-w", NAME, timeout=240)
    assert done.stderr.startswith(f"Rebooting domain {d}\nWaiting for 1 domains\n")
    assert re.search(rf"Domain {d} has been (shut down, reason code 1|destroyed)\n", done.stderr), done.stderr
    wait_for(lambda: NAME in mhost.domains() and mhost.domains()[NAME]["id"] != str(d), timeout=120,
             what="the restarted domain")
    row = mhost.domains()[NAME]
    assert (row["mem"], row["vcpus"]) == ("96", "1")  # built from the updated config
