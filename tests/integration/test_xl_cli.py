"""xl's command-line conventions: prefixes, error sentences on stderr, exit codes."""

from __future__ import annotations

import pytest

from ..conftest import Host

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("argv, code, stderr", [
    (["frobnicate"], 1, "command not implemented"),
    (["list", "-z"], 2, "option `z' not supported."),
    (["destroy", "0"], 1, "Not destroying domain 0; use -f to force."),
    (["pause", "nosuch"], 1, "nosuch is an invalid domain identifier (rc=-6)"),
    (["list", "77"], 1, "Error: Domain '77' does not exist."),
    (["domid", "nosuch"], 1, "Can't get domid of domain name 'nosuch', maybe this domain does not exist."),
    (["domname", "abc"], 1, "Invalid domain id."),
    (["domname", "42"], 1, "Can't get domain name of domain id '42', maybe this domain does not exist."),
    (["destroy", "42"], 1, "destroy failed (rc=-21)"),
    (["create", "/no/such.cfg"], 1, "Failed to read config file: /no/such.cfg: No such file or directory"),
])
def test_errors_as_xl(quiet_host: Host, argv: list[str], code: int, stderr: str) -> None:
    done = quiet_host.xl(*argv, check=False)
    assert done.returncode == code, done
    assert stderr in done.stderr, done.stderr
    assert done.stdout == ""
    assert list(quiet_host.domains()) == ["Domain-0"]  # (shared: the next case starts from this)


def test_prefixes_help_and_xm(quiet_host: Host) -> None:
    host = quiet_host  # (read only: xl list, help, domid, domname, info)
    assert host.xl("li").stdout.splitlines()[0] == host.xl("list").stdout.splitlines()[0]
    assert host.xl("list", "--help").returncode == 0
    assert "create" in host.xl("help").stdout
    xm = host.run("xm", "list", check=True).stdout
    assert xm.splitlines()[0].startswith("Name") and "Domain-0" in xm
    assert host.xl("domid", "Domain-0").stdout == "0\n"
    assert host.xl("domname", "0").stdout == "Domain-0\n"
    assert host.xl("info", "xen_scheduler").stdout == "credit\n"


def test_create_paused_then_unpause(host: Host) -> None:
    cfg = host.write_cfg("held", memory=96, script="echo held-ran")
    host.xl("create", "-p", str(cfg))
    assert host.domains()["held"]["state"] == "--p---"
    assert "held-ran" not in host.console_text("held")
    host.xl("unpause", "held")
    assert "held-ran" in host.wait_console("held", "held-ran")


def test_host_status_and_hypervisor_down(host: Host) -> None:
    assert host.run("pyxen", "host", "status").returncode == 0
    host.run("pyxen", "host", "stop", check=True)
    assert host.run("pyxen", "host", "status").returncode == 3
    down = host.xl("list", check=False)
    assert down.returncode == 1 and "is the host started?" in down.stderr
    host.run("pyxen", "host", "start", check=True)


def test_vcpu_pinning(host: Host) -> None:
    """cpus= pins at create; xl vcpu-pin re-pins the vCPU's thread; xl vcpu-list shows it."""
    import os
    if (os.cpu_count() or 1) < 2:
        pytest.skip("pinning needs two host CPUs to show a difference")
    cfg = host.write_cfg("pinned", memory=96, vcpus=2, extra_lines='cpus = "1"\n')
    host.xl("create", str(cfg))
    rows = [line.split() for line in host.xl("vcpu-list", "pinned").stdout.splitlines()[1:]]
    assert [(r[2], r[6]) for r in rows] == [("0", "1"), ("1", "1")]  # VCPU, hard affinity
    host.xl("vcpu-pin", "pinned", "0", "0")
    rows = [line.split() for line in host.xl("vcpu-list", "pinned").stdout.splitlines()[1:]]
    assert [(r[2], r[6]) for r in rows] == [("0", "0"), ("1", "1")]
    host.xl("vcpu-pin", "pinned", "all", "all")
    assert all(line.split()[6] == "all" for line in host.xl("vcpu-list", "pinned").stdout.splitlines()[1:])
    # Xen's xl: a vCPU number the domain lacks fails in libxl; a CPU beyond the host's map is
    # dropped by parse_cpurange, leaving an empty map (refused by xl, or with -i by the hypervisor).
    bad = host.xl("vcpu-pin", "pinned", "7", "0", check=False)
    assert bad.returncode == 1 and "Could not set affinity for vcpu `7'." in bad.stderr
    bad = host.xl("vcpu-pin", "pinned", "0", "99", check=False)
    assert bad.returncode == 1 and bad.stderr == "vcpu hard affinity map is empty\n"
    bad = host.xl("vcpu-pin", "-i", "pinned", "0", "99", check=False)
    assert bad.returncode == 1 and "Could not set affinity for vcpu `0'." in bad.stderr
    dom0 = host.xl("vcpu-list", "Domain-0").stdout.splitlines()[1].split()
    assert dom0[:3] == ["Domain-0", "0", "0"] and float(dom0[5]) > 0
    refused = host.xl("create", str(host.write_cfg("nowhere", memory=96, extra_lines='cpus = "64"\n')), check=False)
    assert refused.returncode == 1 and "outside" in refused.stderr
    assert "nowhere" not in host.domains()
