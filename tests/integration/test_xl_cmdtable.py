"""xl's command table on a real host: lookup and help as Xen's xl, -N refused without acting,
hardware and FLASK commands answering as a Xen without that hardware or XSM, and xl.conf's
vif.default.bridge putting a real guest's vif on that bridge.

Run the bridge test under ``flock /tmp/pyxen-net.lock`` (its TAP name vif<domid>.0 is host-wide).
"""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from pyxen.cli.xl import cmdtable
from pyxen.testing.bridge import link_local_bridge

from ..conftest import Host

pytestmark = pytest.mark.integration


def snapshot(host: Host) -> tuple[dict[str, dict[str, str]], str]:
    """What a refused command must leave as it was: the domains (name, id, memory, vCPUs,
    state) and the guest's vCPU placement."""
    rows = {name: {k: v for k, v in row.items() if k != "time"} for name, row in host.domains().items()}
    vcpus = "\n".join(line.split()[0] + " " + line.split()[-1] for line in host.xl("vcpu-list").stdout.splitlines())
    return rows, vcpus


def test_lookup_help_and_refusals_change_nothing(host: Host) -> None:
    cfg = host.write_cfg("held", memory=96)
    host.xl("create", "-p", str(cfg))
    before = snapshot(host)

    # lookup: a prefix unambiguous among all of Xen's commands, else "command not implemented"
    names = [line.split()[:2] for line in host.xl("list").stdout.splitlines()]
    assert [line.split()[:2] for line in host.xl("li").stdout.splitlines()] == names
    for word in ("r", "re", "sh", "p", "l", "co", "b", "n", "sc", "hel"):
        done = host.xl(word, "held", check=False)
        assert (done.returncode, done.stdout, done.stderr) == (1, "", "command not implemented\n"), word

    # help: xl's blocks, on stdout
    done = host.xl("help")
    assert (done.returncode, done.stdout, done.stderr) == (0, cmdtable.full_help(), "")
    assert len([ln for ln in done.stdout.splitlines() if ln.startswith(" ") and ln.split()]) >= 92
    done = host.xl(check=False)
    assert (done.returncode, done.stdout) == (1, cmdtable.full_help())
    spec = cmdtable.lookup("vcpu-pin")
    assert spec is not None
    assert host.xl("vcpu-p", "-h").stdout == cmdtable.command_help(spec) == host.xl("help", "vcpu-p").stdout
    assert host.xl("help", "nosuch").stdout == 'command "nosuch" not implemented\n'
    done = host.xl("-h", check=False)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", "xl: invalid option -- 'h'\nunknown global option\n")
    done = host.xl("mem-set", "held", check=False)
    assert (done.returncode, done.stderr) == (2, "'xl mem-set' requires at least 2 arguments.\n\n")
    assert done.stdout.startswith("Usage: xl [-vtTf] mem-set <Domain> <MemMB['b'[bytes]|'k'[KB]|'m'[MB]|'g'[GB]|'t'[TB]]>\n")

    # -N: Xen's refusal for commands without dry run; pyxen's for one it does not honour yet
    for argv in (["destroy", "held"], ["unpause", "held"], ["mem-set", "held", "64"], ["shutdown", "held"],
                 ["pci-attach", "held", "0000:00:02.0"]):
        done = host.xl("-N", *argv, check=False)
        assert (done.returncode, done.stderr) == (1, "command does not implement -N (dryrun) option\n"), argv
    done = host.xl("-N", "cd-insert", "held", "hdc", "/x.iso", check=False)
    assert done.returncode == 1 and "does not implement -N (dryrun) for this command yet" in done.stderr
    done = host.xl("-N", "vcpu-pin", "held", "0", "0")
    assert done.stderr == "" and done.stdout in ("cpumap: 0\n", "cpumap: all\n")  # all: a 1-CPU host
    other = host.write_cfg("dry", memory=64)
    done = host.xl("-N", "create", str(other))
    assert '"name": "dry"' in done.stdout

    # hardware and features pyxen does not have: one line naming why, exit 1
    for argv, why in ((["pci-attach", "held", "0000:00:02.0"], "PCI"), (["pci-assignable-list"], "PCI"),
                      (["usbctrl-attach", "held"], "USB"), (["usb-list", "held"], "USB"),
                      (["psr-hwinfo"], "Platform Shared Resource"), (["vtpm-attach", "held"], "TPM"),
                      (["remus", "held", "hostB"], "Remus")):
        done = host.xl(*argv, check=False)
        assert done.returncode == 1 and done.stdout == "" and why in done.stderr, argv
        assert done.stderr.startswith(f"xl {argv[0]}: ") and done.stderr.count("\n") == 1, done.stderr
    # sched-rtds (the last of the table to be implemented): no RTDS pool, nothing listed
    done = host.xl("sched-rtds", check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")

    # FLASK, as a Xen built without XSM
    done = host.xl("getenforce", check=False)
    assert (done.returncode, done.stdout, done.stderr) == (255, "Flask XSM Disabled\n", "")
    done = host.xl("setenforce", "permissive", check=False)
    assert (done.returncode, done.stdout, done.stderr) == (255, "", "Flask XSM disabled\n")
    done = host.xl("loadpolicy", "/dev/null", check=False)
    assert (done.returncode, done.stderr) == (255, "Flask XSM disabled\n")

    # the exit codes of the commands that exist
    done = host.xl("pause", "77", check=False)
    assert done.returncode == 0 and done.stdout == ""
    assert host.xl("domname", "0x").stdout == "Domain-0\n"
    done = host.xl("block-list", "nosuch", "held", check=False)
    assert done.returncode == 0 and done.stderr == "nosuch is an invalid domain identifier\n"
    assert done.stdout.startswith("Vdev  BE  handle state evt-ch ring-ref BE-path")

    assert snapshot(host) == before
    assert "dry" not in host.domains()
    host.xl("destroy", "held")


@pytest.fixture
def bridge() -> Iterator[str]:
    with link_local_bridge(tag=f"c{os.getpid() % 10000}") as (br, _):
        yield br


def test_xl_conf_default_bridge_takes_a_vif_with_no_bridge(host: Host, bridge: str) -> None:
    """vif.default.bridge in $PYXEN_ROOT/xl.conf: the guest's TAP is enslaved to that bridge."""
    host.paths.xl_conf.write_text(f'vif.default.bridge = "{bridge}"\noutput_format = "json"\n')
    host.create("brd", memory=96, extra_lines="vif = ['mac=00:16:3e:00:78:01']\n")
    domid = int(host.xl("domid", "brd").stdout)
    tap = f"/sys/class/net/vif{domid}.0"
    assert os.path.exists(tap)
    assert os.path.basename(os.readlink(f"{tap}/master")) == bridge
    listed = host.xl("network-list", "brd").stdout.splitlines()
    assert listed[1].split()[2].startswith("00:16:3e:00:78:01"), listed  # the MAC runs into the handle
    host.xl("destroy", "brd")
    host.paths.xl_conf.write_text('output_format = "sxp"\n')
    done = host.xl("list", "-l", check=False)
    assert done.returncode == 1 and 'output_format "sxp"' in done.stderr
