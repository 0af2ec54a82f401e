"""Issue 3: a host boots real guests through the pyxen hypervisor and xl.

Every test drives the ``xl``/``pyxen`` commands against real daemons and a real QEMU guest.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import pexpect
import pytest

from pyxen.procfs import alive as pid_alive

from ..conftest import BIN, Host

pytestmark = pytest.mark.integration


def wait_state(host: Host, name: str, letters: str, timeout: float = 30) -> str:
    """Wait until ``name``'s state has one of ``letters`` set; return the state."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = host.domains().get(name, {}).get("state", "")
        if any(c in state for c in letters):
            return state
        time.sleep(0.2)
    raise AssertionError(f"{name} never reached a state with {letters!r}; last {state!r}")


def test_lifecycle_console_and_memory(host: Host) -> None:
    total = int(host.info("total_memory"))
    free_before = int(host.info("free_memory"))
    assert total > free_before > 0
    domid = host.create("life", memory=160, script="echo marker-$((6*7))")
    text = host.wait_console("life")
    assert "marker-42" in text
    assert "pyxen run exit 0" in text

    rows = host.domains()
    assert list(rows)[0] == "Domain-0" and rows["Domain-0"]["id"] == "0"
    assert rows["life"]["id"] == str(domid) and rows["life"]["mem"] == "160" and rows["life"]["vcpus"] == "1"
    assert rows["life"]["state"][0] in "r-" and rows["life"]["state"][1] in "b-"
    assert rows["life"]["state"][2:] == "----"
    assert int(host.info("free_memory")) == free_before - 160

    host.xl("pause", "life")
    assert host.domains()["life"]["state"] == "--p---"
    t1 = float(host.domains()["life"]["time"])
    time.sleep(1.0)
    assert float(host.domains()["life"]["time"]) == t1  # a paused domain burns no CPU
    host.xl("unpause", str(domid))
    assert "p" not in wait_state(host, "life", "rb")

    host.xl("destroy", "life")
    assert "life" not in host.domains()
    assert int(host.info("free_memory")) == free_before
    assert host.xl("domid", "life", check=False).returncode == 1


def test_xl_info_fields_and_order(quiet_host: Host) -> None:
    host = quiet_host  # (shared: see quiet_host)
    out = host.xl("info").stdout.splitlines()
    keys = [line.split(":", 1)[0].strip() for line in out]
    assert keys[:12] == ["host", "release", "version", "machine", "nr_cpus", "max_cpu_id", "nr_nodes",
                         "cores_per_socket", "threads_per_core", "cpu_mhz", "hw_caps", "virt_caps"]
    assert keys[-1] == "xend_config_format"
    values = dict((line[:23].strip(), line[24:].strip()) for line in out)
    assert int(values["nr_cpus"]) == os.cpu_count()
    assert values["xen_commandline"] == "dom0_mem=1024M loglvl=all sched=credit"
    assert values["xen_scheduler"] == "credit"
    assert int(values["total_memory"]) - int(values["free_memory"]) == 1024  # only Dom0 holds memory
    assert host.xl("list").stdout.splitlines()[1].split()[2] == "1024"
    # The KVM probe result is real: on hosts whose KVM cannot run stock guests, TCG is used.
    dmesg = host.xl("dmesg").stdout
    assert "CPU virtualization:" in dmesg


def test_bad_configs_leave_nothing(quiet_host: Host) -> None:
    host = quiet_host  # (shared: see quiet_host)
    free = host.info("free_memory")
    cfg = host.write_cfg("bad")
    # An override is line 8: xl appends "\n", the override and "\n" to the 6-line file.
    syntax = (f"{cfg}:8: config parsing error near `lots': syntax error, unexpected IDENT, "
              "expecting STRING or NUMBER or '['")
    cases = [
        (["kernel=\"/no/such/kernel\""], ["kernel '/no/such/kernel' does not exist"]),
        ([f"memory={int(free) + 4096}"], ["not enough free memory"]),
        (["memory=lots"], [syntax, "Failed to parse config: Invalid argument"]),
        (["cpus=\"^all\""], ['Can\'t combine "^" and "all".']),
        (["type=\"zz\""], ["Invalid domain type zz."]),
    ]
    for overrides, messages in cases:
        done = host.xl("create", str(cfg), *overrides, check=False)
        assert done.returncode == 1, done
        errors = [line for line in done.stderr.splitlines() if not line.startswith("Parsing config")]
        assert len(errors) == len(messages), done.stderr
        assert all(m in e for m, e in zip(messages, errors)), done.stderr
        assert list(host.domains()) == ["Domain-0"]
        assert host.info("free_memory") == free
    assert not list(host.paths.domains_dir.glob("*.json"))


def test_duplicate_name_refused(host: Host) -> None:
    host.create("twin", memory=96)
    done = host.xl("create", str(host.write_cfg("twin", memory=96)), check=False)
    assert done.returncode == 1 and 'Domain with name "twin" already exists.' in done.stderr
    assert list(host.domains()) == ["Domain-0", "twin"]


def test_non_root_control_client_refused(quiet_host: Host) -> None:
    """A peer that is not root gets EPERM from the hypervisor itself (SO_PEERCRED)."""
    host = quiet_host  # (shared: see quiet_host)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop to nobody, then try a hypercall
        try:
            os.close(r)
            os.setgid(65534)
            os.setuid(65534)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(host.paths.hypervisor_socket))
            s.sendall(b'{"id":1,"op":"sysctl.getdomaininfolist","args":{}}\n')
            os.write(w, s.makefile("rb").readline())
        except BaseException as err:  # report it to the parent: the test must say what broke
            os.write(w, json.dumps({"child": repr(err)}).encode())
        finally:
            os._exit(0)
    os.close(w)
    reply = os.read(r, 4096)
    os.waitpid(pid, 0)
    assert b'"child"' not in reply, reply
    err = json.loads(reply)["error"]
    assert err["errno"] == "EPERM" and "uid 65534" in err["message"]
    assert host.xl("list").returncode == 0  # root still gets through


def test_readopt_after_hypervisor_sigkill(host: Host) -> None:
    host.create("keep", memory=128)
    host.wait_console("keep")
    qemu_pid = json.loads((host.paths.domains_dir / f"{host.domains()['keep']['id']}.json").read_text())["pid"]
    hv_pid = int(host.paths.pidfile("hypervisor").read_text())
    with host.supervisor_held():  # (it would restart the hypervisor at once)
        os.kill(hv_pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid_alive(hv_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert host.xl("list", check=False).returncode == 1  # nobody answers
        assert pid_alive(qemu_pid)  # but the guest lives on
    rows = host.domains()
    assert rows["keep"]["mem"] == "128"
    assert int(host.info("free_memory")) == int(host.info("total_memory")) - 1024 - 128
    host.xl("pause", "keep")
    assert host.domains()["keep"]["state"] == "--p---"
    host.xl("unpause", "keep")
    # The console is kept again: type into it and see the guest answer in the log.
    child = pexpect.spawn(str(BIN / "xl"), ["console", "keep"], env=host.env, timeout=60)
    child.sendline("")
    child.expect("# ")
    child.sendline("echo readopt-$((40+2))")
    child.expect("readopt-42")
    child.sendcontrol("]")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    host.wait_console("keep", "readopt-42")
    host.xl("destroy", "keep")
    assert not pid_alive(qemu_pid)


def test_create_console_flag_and_detach(host: Host) -> None:
    """``xl create -c`` attaches at once; the boot is seen live and Ctrl-] detaches."""
    cfg = host.write_cfg("live", memory=96)
    child = pexpect.spawn(str(BIN / "xl"), ["create", "-c", str(cfg)], env=host.env, timeout=120)
    child.expect("pyxen demo guest up")
    child.sendline("uname -r")
    child.expect(host.image.kernel_release)
    child.sendcontrol("]")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "live" in host.domains()


def test_guest_poweroff_runs_on_poweroff_destroy(host: Host) -> None:
    free = host.info("free_memory")
    host.create("brief", memory=96, script="poweroff -f")
    deadline = time.monotonic() + 120
    while "brief" in host.domains() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert "brief" not in host.domains()
    assert host.info("free_memory") == free


def _no_such_domain(stderr: str) -> bool:
    """xl's words for a domain name that names no domain now."""
    return "invalid domain identifier" in stderr or "does not exist" in stderr


def test_guest_reboot_restarts(host: Host) -> None:
    """on_reboot=restart: a guest that reboots comes back up (it reboots on every boot here), as
    Xen's monitor does it: a new domain (new domid) from the same config (same uuid)."""
    domid = host.create("again", memory=96, script="reboot -f")
    uuid = json.loads(host.xl("list", "-l", "again").stdout)[0]["config"]["c_info"]["uuid"]
    deadline = time.monotonic() + 180
    while host.console_text("again").count("pyxen demo guest:") < 2:
        assert time.monotonic() < deadline, host.console_text("again")[-1000:]
        time.sleep(0.3)
    # It reboots again at once, so between two domains of it there may be none for a moment:
    # every xl call naming it is retried across that gap.
    while (again := host.domains().get("again")) is None:
        assert time.monotonic() < deadline, "again: no domain after its reboot"
        time.sleep(0.1)
    assert again["id"] != str(domid)
    while (listed := host.xl("list", "-l", "again", check=False)).returncode != 0:
        assert time.monotonic() < deadline and _no_such_domain(listed.stderr), listed.stderr
        time.sleep(0.1)
    assert json.loads(listed.stdout)[0]["config"]["c_info"]["uuid"] == uuid
    while (gone := host.xl("destroy", "again", check=False)).returncode != 0:
        assert time.monotonic() < deadline and _no_such_domain(gone.stderr), gone.stderr
        time.sleep(0.1)


def test_on_poweroff_preserve_keeps_shut_down_domain(host: Host) -> None:
    cfg = host.write_cfg("kept", memory=96, script="poweroff -f", extra_lines='on_poweroff = "preserve"\n')
    host.xl("create", str(cfg))
    wait_state(host, "kept", "s", timeout=120)
    assert host.domains()["kept"]["state"] == "---s--"  # shut down, reason poweroff ('-')
    assert host.domains()["kept"]["mem"] == "96"  # still holds its memory
    host.xl("destroy", "kept")
    assert "kept" not in host.domains()


def test_two_hosts_side_by_side(host: Host, tmp_path: object) -> None:
    """A second PYXEN_ROOT is a second host: its own sockets, domains and logs."""
    import shutil
    import tempfile
    from pathlib import Path

    root2 = Path(tempfile.mkdtemp(prefix="pyxen-", dir="/tmp"))
    env2 = dict(host.env, PYXEN_ROOT=str(root2))
    try:
        subprocess_run = __import__("subprocess").run
        assert subprocess_run([str(BIN / "pyxen"), "host", "start"], env=env2).returncode == 0
        host.create("one", memory=96)
        out2 = subprocess_run([str(BIN / "xl"), "list"], env=env2, capture_output=True, text=True).stdout
        assert "one" not in out2 and "Domain-0" in out2
        assert (root2 / "run" / "hypervisor.sock").exists()
        assert "one" in host.domains()
    finally:
        __import__("subprocess").run([str(BIN / "pyxen"), "host", "stop"], env=env2)
        shutil.rmtree(root2, ignore_errors=True)


def test_xendomains_starts_auto_configs_once(host: Host) -> None:
    host.paths.auto_dir.mkdir(exist_ok=True)
    host.write_cfg("auto1", memory=96).rename(host.paths.auto_dir / "auto1.cfg")
    (host.paths.auto_dir / "broken.cfg").write_text('name = "broken"\nmemory = "x"\n')
    first = host.run("pyxen", "host", "start")
    assert first.returncode == 1  # the broken one is reported
    assert "auto1.cfg: started auto1" in first.stdout and "broken.cfg: failed:" in first.stdout
    assert list(host.domains()) == ["Domain-0", "auto1"]
    second = host.run("pyxen", "host", "start")
    assert "auto1 already running" in second.stdout
    assert list(host.domains()) == ["Domain-0", "auto1"]


def test_hvm_guest_has_a_device_model_with_vnc(host: Host) -> None:
    """type = "hvm": the same QEMU as qemu-dm with emulated PC devices and a VNC console."""
    display = 40 + os.getpid() % 50
    cfg = host.write_cfg("hvm", memory=128, extra_lines=f'type = "hvm"\nvnc = 1\nvncdisplay = {display}\n')
    host.xl("create", str(cfg))
    host.wait_console("hvm")
    with socket.create_connection(("127.0.0.1", 5900 + display), timeout=10) as s:
        assert s.recv(12).startswith(b"RFB 003.")
    out = json.loads(host.xl("list", "-l", "hvm").stdout)
    assert out[0]["config"]["c_info"]["type"] == "hvm"
