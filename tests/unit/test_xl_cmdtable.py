"""xl's command table, lookup, help, global options and messages against Xen's own source.

Each row of the tables below quotes the C format string Xen 4.17 prints for the case (tools/xl/
xl.c, xl_utils.c, xl_info.c, xl_block.c, xl_nic.c, xl_flask.c) with its arguments; the expected
text is that format applied with Python's ``%`` (the conversions used, %s %d %u %-19s, mean the
same in both), and pyxen's output must equal it on the stream xl writes it to, with xl's exit
status. Rows marked ``host`` run against a FakeHost (a real hypervisor and xenstored, no QEMU).
"""

from __future__ import annotations

import io
import os
import shutil
import time
from pathlib import Path
from typing import Iterator

import pytest

from pyxen.cli import render
from pyxen.cli import xl
from pyxen.cli.xl import cmdtable, hardware, xlconf
from pyxen.cli.xl.domains import strtol_domid
from pyxen.paths import Paths
from pyxen.testing.fakes import FakeHost

LIST = cmdtable.lookup("list")
assert LIST is not None

#: xl.c help(NULL)
FULL_HELP = ("Usage xl [-vfNtT] <subcommand> [args]\n\n" + "xl full list of subcommands:\n\n" + "".join(
    " %-19s " % s.name + ("\n %-19s " % "" if len(s.name) > 19 else "") + "%s\n" % s.desc
    for s in cmdtable.TABLE))
#: xl.c help("list"): "Usage: xl [-vtT%s%s] %s %s\n\n%s.\n\n" then "Options:\n\n%s\n"
LIST_HELP = ("Usage: xl [-vtT%s%s] %s %s\n\n%s.\n\n" % ("", "", "list", "[options] [Domain]\n",
                                                      "List information about all/some domains")
             + "Options:\n\n%s\n" % LIST.options)


def block(name: str) -> str:
    spec = cmdtable.lookup(name)
    assert spec is not None
    return cmdtable.command_help(spec)


#: argv, exit status, stdout, stderr: cases that need no daemon (xl refuses before asking one).
NO_HOST = [
    pytest.param(["help"], 0, FULL_HELP, "", id="help"),
    pytest.param(["help", "help"], 0, FULL_HELP, "", id="help-help"),
    pytest.param([], 1, FULL_HELP, "", id="no-args: help(NULL); exit(EXIT_FAILURE)"),
    pytest.param(["-h"], 1, "", "%s: invalid option -- '%c'\n" % ("xl", "h") + "unknown global option\n",
                 id="-h: getopt's line, then 'unknown global option'"),
    pytest.param(["-vx", "list"], 1, "", "%s: invalid option -- '%c'\n" % ("xl", "x") + "unknown global option\n",
                 id="bundled bad global option"),
    pytest.param(["help", "nosuch"], 0, 'command "%s" not implemented\n' % "nosuch", "", id="help nosuch"),
    pytest.param(["help", "li"], 0, LIST_HELP, "", id="help li (a prefix)"),
    pytest.param(["help", "r"], 0, 'command "%s" not implemented\n' % "r", "", id="help r (ambiguous)"),
    pytest.param(["list", "-h"], 0, LIST_HELP, "", id="list -h"),
    pytest.param(["li", "--help"], 0, LIST_HELP, "", id="li --help"),
    pytest.param(["r"], 1, "", "command not implemented\n", id="r is ambiguous"),
    pytest.param(["hel"], 1, "", "command not implemented\n", id="help is no table entry: no prefix"),
    pytest.param(["frobnicate"], 1, "", "command not implemented\n", id="unknown"),
    pytest.param(["suspend", "d"], 1, "", "command not implemented\n", id="suspend: not in x86 4.17"),
    pytest.param(["-N", "destroy", "1"], 1, "", "command does not implement -N (dryrun) option\n",
                 id="-N destroy"),
    pytest.param(["-N", "pci-attach", "d", "0:1.0"], 1, "", "command does not implement -N (dryrun) option\n",
                 id="-N pci-attach"),
    pytest.param(["pause"], 2, block("pause"), "'xl %s' requires at least %d argument%s.\n\n" % ("pause", 1, ""),
                 id="pause: reqargs 1"),
    pytest.param(["mem-set", "d"], 2, block("mem-set"),
                 "'xl %s' requires at least %d argument%s.\n\n" % ("mem-set", 2, "s"), id="mem-set: reqargs 2"),
    pytest.param(["vcpu-pin", "d", "0"], 2, block("vcpu-pin"),
                 "'xl %s' requires at least %d argument%s.\n\n" % ("vcpu-pin", 3, "s"), id="vcpu-pin: reqargs 3"),
    pytest.param(["pci-attach", "d"], 2, block("pci-attach"),
                 "'xl %s' requires at least %d argument%s.\n\n" % ("pci-attach", 2, "s"), id="pci-attach: reqargs 2"),
    pytest.param(["list", "-z"], 2, "", "option `%c' not supported.\n" % "z", id="def_getopt: unknown option"),
    pytest.param(["sched-credit", "-d"], 2, "", "option `%c' not supported.\n" % "d",
                 id="def_getopt: an option without its argument"),
    pytest.param(["domname", "abc"], 1, "", "Invalid domain id.\n\n", id="domname: no digits"),
    pytest.param(["domname", ""], 1, "", "Invalid domain id.\n\n", id="domname: empty"),
    pytest.param(["setenforce"], 2, block("setenforce"), "", id="setenforce: no argument: help; return 2"),
    pytest.param(["setenforce", "-h"], 2, block("setenforce"), "", id="setenforce parses no options"),
    pytest.param(["loadpolicy"], 2, block("loadpolicy"), "", id="loadpolicy: no argument"),
]


@pytest.fixture
def no_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PYXEN_ROOT with no daemons: any command that asked one would fail."""
    monkeypatch.setenv("PYXEN_ROOT", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("argv, code, out, err", NO_HOST)
def test_xl_as_xens_format_strings(argv: list[str], code: int, out: str, err: str, no_host: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert xl.main(argv) == code
    got = capsys.readouterr()
    assert (got.out, got.err) == (out, err)


# ---- rows that need a host --------------------------------------------------------------------
@pytest.fixture(scope="module")
def fake() -> Iterator[FakeHost]:
    root = Path(os.path.realpath("/tmp")) / f"pyxen-fakecmd-{os.getpid()}-{time.monotonic_ns()}"
    with FakeHost(root) as host:
        yield host
    shutil.rmtree(root, ignore_errors=True)


BLOCK_HEADER = "%-5s %-3s %-6s %-5s %-6s %-8s %-30s\n" % (
    "Vdev", "BE", "handle", "state", "evt-ch", "ring-ref", "BE-path")
NET_HEADER = "%-3s %-2s %-17s %-6s %-5s %-6s %5s/%-5s %-30s\n" % (
    "Idx", "BE", "Mac Addr.", "handle", "state", "evt-ch", "tx-", "rx-ring-ref", "BE-path")

#: argv, exit status, stdout, stderr (None: not compared; pyxen's libxl log line differs).
WITH_HOST = [
    pytest.param(["domname", "0"], 0, "%s\n" % "Domain-0", "", id="domname 0"),
    pytest.param(["domname", "0x"], 0, "%s\n" % "Domain-0", "", id="domname 0x: strtol reads 0"),
    pytest.param(["domname", " +0"], 0, "%s\n" % "Domain-0", "", id="domname: space and sign"),
    pytest.param(["domname", "12x"], 1, "",
                 "Can't get domain name of domain id '%u', maybe this domain does not exist.\n" % 12,
                 id="domname 12x is 12"),
    pytest.param(["domname", "-1"], 1, "",
                 "Can't get domain name of domain id '%u', maybe this domain does not exist.\n" % 4294967295,
                 id="domname -1 wraps to uint32"),
    pytest.param(["block-list", "nosuch", "0"], 0, BLOCK_HEADER, "%s is an invalid domain identifier\n" % "nosuch",
                 id="block-list skips a bad name, exit 0"),
    pytest.param(["network-list", "nosuch"], 1, NET_HEADER,
                 "%s is an invalid domain identifier (rc=%d)\n" % ("nosuch", -6),
                 id="network-list: header, then find_domain exits"),
    pytest.param(["pause", "42"], 0, "", None, id="pause of a missing domid: exit 0"),
    pytest.param(["unpause", "42"], 0, "", None, id="unpause of a missing domid: exit 0"),
    pytest.param(["getenforce"], 255, "Flask XSM Disabled\n", "", id="getenforce"),
    pytest.param(["getenforce", "-h"], 255, "Flask XSM Disabled\n", "", id="getenforce parses no options"),
    pytest.param(["setenforce", "Enforcing"], 255, "", "Flask XSM disabled\n", id="setenforce"),
    pytest.param(["loadpolicy", "/no/such/policy"], 255, "",
                 "Error occurred opening policy file '%s': %s\n" % ("/no/such/policy", os.strerror(2)),
                 id="loadpolicy of a missing file"),
    pytest.param(["loadpolicy", "/dev/null"], 255, "", "Flask XSM disabled\n", id="loadpolicy"),
]


@pytest.mark.parametrize("argv, code, out, err", WITH_HOST)
def test_xl_on_a_host_as_xens_format_strings(argv: list[str], code: int, out: str, err: str | None,
                                             fake: FakeHost, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PYXEN_ROOT", str(fake.paths.root))
    assert xl.main(argv) == code
    got = capsys.readouterr()
    assert got.out == out
    if err is not None:
        assert got.err == err


def test_network_list_row_runs_the_mac_into_the_handle() -> None:
    """xl_nic.c: ``"%-3d %-2d "``, LIBXL_MAC_FMT, then ``"%6d %5d %6d %5d/%-11d %-30s\\n"``."""
    rec = {"devid": "1", "backend-id": "0", "mac": "00:16:3e:01:02:03", "handle": "1", "state": "4",
           "event-channel": "9", "tx-ring-ref": "8", "rx-ring-ref": "10",
           "backend": "/local/domain/0/backend/vif/3/1"}
    row = render.xl_network_list([rec]).split("\n")[1] + "\n"
    assert row == ("%-3d %-2d " % (1, 0) + "00:16:3e:01:02:03"
                   + "%6d %5d %6d %5d/%-11d %-30s\n" % (1, 4, 9, 8, 10, rec["backend"]))


# ---- the table and the lookup -----------------------------------------------------------------
def test_the_table_is_xen_4_17_x86s() -> None:
    names = [s.name for s in cmdtable.TABLE]
    assert len(names) == 92 == len(set(names))
    assert names[:6] == ["create", "config-update", "list", "destroy", "shutdown", "reboot"]
    assert names[-1] == "qemu-monitor-command"
    assert {s.name for s in cmdtable.TABLE if s.can_dryrun} == {
        "create", "config-update", "cd-insert", "cd-eject", "vcpu-pin", "network-attach", "block-attach",
        "vtpm-attach", "vkb-attach", "vdispl-attach", "vsnd-attach", "cpupool-create"}
    assert not {"suspend", "resume", "dt-overlay", "xenstore-quota-get"} & set(names)


@pytest.mark.parametrize("word, found", [
    ("li", "list"), ("list", "list"), ("r", None), ("re", None), ("ren", "rename"), ("sh", None),
    ("sched-credit", "sched-credit"), ("sched-credit2", "sched-credit2"), ("sched-c", None),
    ("cd", None), ("cd-i", "cd-insert"), ("us", None), ("usb-", "usb-list"), ("", None), ("help", None),
    ("q", "qemu-monitor-command"), ("getenforce", "getenforce"),
])
def test_lookup_is_cmdtable_lookup(word: str, found: str | None) -> None:
    """Exact match first (even when it prefixes another), else an unambiguous prefix among all."""
    spec = cmdtable.lookup(word)
    assert (spec.name if spec else None) == found


def test_every_command_module_entry_is_in_xens_table_and_the_rest_are_listed_as_missing() -> None:
    table = {s.name for s in cmdtable.TABLE}
    # a module's command outside Xen's table would never be found by xl's lookup: none may exist
    assert set(xl._IMPLEMENTED) <= table, set(xl._IMPLEMENTED) - table
    assert xl.NOT_IMPLEMENTED == table - set(xl.COMMANDS)
    assert list(xl.COMMANDS) == [s.name for s in cmdtable.TABLE if s.name in xl.COMMANDS]
    assert set(hardware.REASONS) <= set(xl.COMMANDS) and "getenforce" in xl.COMMANDS


def test_the_module_index_names_each_commands_module() -> None:
    """xl.MODULES, which main uses to import only the command's module, says where every
    command's function is, and no command is in two modules."""
    import importlib
    for module, names in xl.MODULES.items():
        assert tuple(importlib.import_module(f"pyxen.cli.xl.{module}").COMMANDS) == names, module
    every = [n for names in xl.MODULES.values() for n in names]
    assert len(every) == len(set(every)) == len(xl.COMMANDS)


def _modules_loaded_by(code: str, root: Path) -> set[str]:
    """sys.modules after ``code`` runs in a fresh interpreter (PYXEN_ROOT ``root``)."""
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", f"import sys; {code}; print(' '.join(sorted(sys.modules)))"],
                          check=True, capture_output=True, text=True, env=dict(os.environ, PYXEN_ROOT=str(root)))
    return set(done.stdout.splitlines()[-1].split())  # (after what the code printed)


def test_xl_list_imports_no_domain_builder_backend_asyncio_or_logging(tmp_path: Path) -> None:
    """xl list (what scripts poll; bench/scale.py times it with 50 guests) loads only its own
    module: the domain builder, the backends and asyncio cost several times the listing; logging
    (pyxen's NullHandler waits for it) and shutil (argparse's terminal width, which XlParser's
    fixed-width formatter does without) were a third of its imports; the config parser is for
    an xl.conf, which a host need not have; dataclasses (with inspect, ast, dis) a tenth: the
    records it uses (Paths, XlConf, CmdSpec, ListColumns, DomainRow, wire.Request) are NamedTuples. ``list -h`` builds the
    parser, as a listing does, without needing a host."""
    loaded = _modules_loaded_by("from pyxen.cli import xl; xl.main(['list', '-h'])", tmp_path)
    assert "pyxen.cli.xl.listing" in loaded
    heavy = {"asyncio", "pyxen.toolstack.domain", "pyxen.toolstack.config", "pyxen.backends",
             "pyxen.xenstore.client", "pyxen.cli.xl.domains", "pyxen.toolstack.libxl_json",
             "logging", "shutil", "ssl", "ctypes", "pyxen.libxlu.cfg", "dataclasses"}
    assert not heavy & loaded, heavy & loaded


def test_plain_xl_list_builds_no_parser(tmp_path: Path) -> None:
    """``xl list`` without arguments (what monitors run) reads listing.NO_ARGUMENTS instead of
    building a parser: argparse (with gettext and locale) and signal stay unimported, and
    NO_ARGUMENTS is what the parser reads from no arguments."""
    from pyxen.cli.xl import listing
    loaded = _modules_loaded_by("from pyxen.cli import xl; xl.main(['list'])", tmp_path)  # (no host: fails after the imports)
    assert "pyxen.cli.xl.listing" in loaded
    assert not {"argparse", "gettext", "locale", "signal", "pyxen.cli.xl.parser"} & loaded
    assert vars(listing.list_parser().parse_args([])) == vars(listing.NO_ARGUMENTS)


def test_plain_xl_list_imports_no_typing_pathlib_or_socket_module(tmp_path: Path) -> None:
    """The modules ``xl list`` imports take NamedTuple and TYPE_CHECKING from pyxen.records, its
    sockets and xl.conf are joined to root_from_env() as strings, and XenCtrl uses ``_socket``:
    typing, pathlib (with urllib.parse and ipaddress) and socket.py stay unimported."""
    loaded = _modules_loaded_by("from pyxen.cli import xl; xl.main(['list'])", tmp_path)  # (no host: fails after the imports)
    assert {"pyxen.cli.xl.listing", "pyxen.cli.render_misc", "pyxen.hypervisor.client"} <= loaded
    assert not {"typing", "pathlib", "urllib.parse", "ipaddress", "socket", "contextlib"} & loaded


def test_xl_create_imports_no_asyncio_backend_device_or_bootloader(tmp_path: Path) -> None:
    """xl create's module is the blocking toolstack: the asyncio xenstore client (asyncio, ssl)
    lives in client_async, the block and net backends' devices (ctypes, vhost-user) are not
    where it takes XEN_SCRIPT_DIR and DEFAULT_MTU from, and the bootloader runner and the
    storage helpers (lvm2, qcow2) are imported only for a config that needs them."""
    loaded = _modules_loaded_by("from pyxen.cli import xl; xl.command_module('create')", tmp_path)
    assert {"pyxen.cli.xl.domains", "pyxen.toolstack.domain", "pyxen.xenstore.client"} <= loaded
    heavy = {"asyncio", "ssl", "ctypes", "pyxen.xenstore.client_async", "pyxen.backends.block",
             "pyxen.backends.net.device", "pyxen.backends.common.vhost_user", "pyxen.toolstack.bootloader",
             "pyxen.storage.lvm", "pyxen.storage.volumes"}
    assert not heavy & loaded, heavy & loaded


def test_the_asyncio_xenstore_client_is_still_exported_by_client() -> None:
    """client_async's names stay importable from pyxen.xenstore.client, as the daemons import them."""
    from pyxen.xenstore import client, client_async
    assert client.AsyncXenstoreClient is client_async.AsyncXenstoreClient
    assert client.AsyncClientTransaction is client_async.AsyncClientTransaction
    with pytest.raises(AttributeError):
        client.NoSuchName  # noqa: B018


def test_pyxen_loggers_stay_quiet_where_logging_is_not_configured(tmp_path: Path) -> None:
    """pyxen's NullHandler, added when logging is first imported after pyxen: a pyxen warning in
    a program that configured no logging is not printed by logging's last resort."""
    import subprocess
    import sys
    code = ("import pyxen, sys; assert 'logging' not in sys.modules; import logging; "
            "logging.getLogger('pyxen.x').warning('hidden'); logging.getLogger('other').warning('shown')")
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert done.stderr == "shown\n"


def test_a_command_pyxen_lacks_says_so_in_one_line(no_host: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every command of Xen's table is implemented now (NOT_IMPLEMENTED is empty); the refusal a
    table command without a module would get is checked on one standing in for it."""
    name = "sched-rtds"
    refuse = xl.not_implemented(name)
    args = ["x"] * max(cmdtable.REQARGS.get(name, 0), 1)
    assert refuse(args) == 1
    got = capsys.readouterr()
    assert (got.out, got.err) == ("", f"xl {name}: pyxen does not implement this command yet\n")
    assert refuse(["-h"]) == 0
    assert capsys.readouterr().out == block(name)
    assert xl.NOT_IMPLEMENTED == frozenset()


@pytest.mark.parametrize("name", sorted(hardware.REASONS))
def test_hardware_commands_refuse_naming_why(name: str, no_host: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["x"] * max(cmdtable.REQARGS.get(name, 0), 1)
    assert xl.main([name, *args]) == 1
    got = capsys.readouterr()
    assert got.out == "" and got.err == f"xl {name}: {hardware.REASONS[name]}\n"
    assert "pyxen" in got.err and got.err.count("\n") == 1
    spec = cmdtable.lookup(name)
    assert spec is not None
    assert xl.main(["-N", name, *args]) == 1
    assert capsys.readouterr().err == ("command does not implement -N (dryrun) option\n" if not spec.can_dryrun
                                       else f"xl {name}: {hardware.REASONS[name]}\n")


def test_dryrun_is_refused_by_a_command_that_does_not_honour_it_yet(no_host: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """cd-insert is can_dryrun in Xen's table, but xl_cdrom.c ignores dryrun_only and inserts
    anyway; pyxen's does not read GLOBALS.dryrun: refused, not run."""
    assert xl.main(["-N", "cd-insert", "d", "hdc", "/x.iso"]) == 1
    assert capsys.readouterr().err == "xl cd-insert: pyxen does not implement -N (dryrun) for this command yet\n"


def test_dryrun_create_parses_and_builds_nothing(no_host: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No daemon runs at this root: a create that tried to build would fail."""
    cfg = no_host / "g.cfg"
    cfg.write_text(f'name = "g"\nkernel = "{__file__}"\nmemory = 64\nvif = ["mac=00:16:3e:00:00:01"]\n')
    assert xl.main(["-N", "create", str(cfg)]) == 0
    got = capsys.readouterr()
    assert '"name": "g"' in got.out and got.err == f"Parsing config from {cfg}\n"
    assert xl.main(["-N", "create", str(no_host / "missing.cfg")]) == 1


def test_global_options_reach_globals_and_reset_per_run(no_host: Path) -> None:
    from pyxen.cli.xl.common import GLOBALS
    xl.main(["-vvfNtT", "help"])
    assert (GLOBALS.verbose, GLOBALS.force, GLOBALS.dryrun, GLOBALS.tty, GLOBALS.timestamps) == (2, True, True, True, True)
    xl.main(["--", "help"])
    assert (GLOBALS.verbose, GLOBALS.dryrun) == (0, False)


# ---- strtol ---------------------------------------------------------------------------------
@pytest.mark.parametrize("text, domid", [
    ("12", 12), ("12x", 12), (" 7", 7), ("+3", 3), ("-1", 0xFFFFFFFF), ("0x10", 0), ("abc", None),
    ("", None), ("x1", None), ("99999999999999999999", 0xFFFFFFFF),
])
def test_domname_reads_its_argument_as_strtol(text: str, domid: int | None) -> None:
    assert strtol_domid(text) == domid


# ---- xl.conf ----------------------------------------------------------------------------------
def conf(text: str) -> tuple[xlconf.XlConf, str]:
    warn = io.StringIO()
    return xlconf.parse_text(text, "/etc/xen/xl.conf", warn), warn.getvalue()


def test_xl_conf_defaults_are_xls() -> None:
    c, warnings = conf("")
    assert c == xlconf.XlConf() and warnings == ""
    assert (c.autoballoon, c.output_format, c.claim_mode, c.run_hotplug_scripts) == ("auto", "json", 1, 1)
    assert c.vif_defaults("mac=00:16:3e:00:00:01") == "mac=00:16:3e:00:00:01"


def test_xl_conf_values() -> None:
    c, warnings = conf('autoballoon="off"\nvif.default.bridge="br9"\nvif.default.script="vif-custom"\n'
                       'output_format="sxp"\nlockfile="/run/xl.lock"\nblkdev_start="xvdb"\nclaim_mode=0\n'
                       'run_hotplug_scripts=0x0\n')
    assert warnings == ""
    assert c == xlconf.XlConf(autoballoon="off", vif_default_bridge="br9", vif_default_script="vif-custom",
                              output_format="sxp", lockfile="/run/xl.lock", blkdev_start="xvdb",
                              claim_mode=0, run_hotplug_scripts=0)
    assert c.vif_defaults("mac=00:16:3e:00:00:01") == "mac=00:16:3e:00:00:01,bridge=br9,script=vif-custom"
    assert c.vif_defaults("bridge=br1, script=s") == "bridge=br1, script=s"
    assert c.vif_defaults("") == "bridge=br9,script=vif-custom"


@pytest.mark.parametrize("text, warning", [
    ('autoballoon="maybe"', "invalid autoballoon option\n"),
    ('output_format="xml"', 'invalid default output format "%s"\n' % "xml"),
    ('claim_mode="yes"', "%s:%d: warning: parameter `%s' is not a valid number\n" % ("/etc/xen/xl.conf", 1, "claim_mode")),
    ('lockfile=["a"]', "%s:%d: warning: parameter `%s' is a list but should be a single value\n"
     % ("/etc/xen/xl.conf", 1, "lockfile")),
    ('defaultbridge="br1"', "the global config option defaultbridge is deprecated, please switch to vif.default.bridge\n"),
    ('vifscript="s"', "the global config option vifscript is deprecated, please switch to vif.default.script\n"),
])
def test_xl_conf_warnings_keep_the_default(text: str, warning: str) -> None:
    c, warnings = conf(text)
    assert warnings == warning
    assert c.autoballoon == "auto" and c.output_format == "json" and c.claim_mode == 1 and c.lockfile is None


def test_deprecated_keys_still_apply_and_new_ones_win() -> None:
    assert conf('defaultbridge="br1"')[0].vif_default_bridge == "br1"
    assert conf('defaultbridge="br1"\nvif.default.bridge="br2"')[0].vif_default_bridge == "br2"


def test_the_create_lock_is_xl_confs_else_the_hosts(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    assert xlconf.XlConf().lock_path(paths) == str(tmp_path / "run" / "xl.lock") == str(paths.xl_lock)
    assert conf('lockfile = "/var/lock/xl"')[0].lock_path(paths) == "/var/lock/xl"
    assert paths.xl_conf == tmp_path / "xl.conf"


@pytest.mark.parametrize("autoballoon, cmdline, on", [
    ("auto", "console=com1", True), ("auto", "dom0_mem=512M", False), ("auto", "x dom0_mem=max:1G,min:256M", False),
    ("auto", "dom0_mem=10%", False), ("auto", "nodom0_mem=1G", True), ("on", "dom0_mem=512M", True),
    ("off", "", False),
])
def test_autoballoon_auto_follows_dom0_mem(autoballoon: str, cmdline: str, on: bool) -> None:
    assert xlconf.XlConf(autoballoon=autoballoon).autoballoon_enabled(cmdline) is on


def test_a_bad_xl_conf_stops_every_command(no_host: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (no_host / "xl.conf").write_text("autoballoon = = 1\n")
    assert xl.main(["list"]) == 1
    got = capsys.readouterr()
    lines = got.err.splitlines()
    assert lines[0].startswith(f"{no_host}/xl.conf:1: config parsing error near")
    assert lines[1:] == ["Failed to parse config file: %s" % os.strerror(22)] and got.out == ""


def test_xl_conf_is_read_once_per_run_and_warns(no_host: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (no_host / "xl.conf").write_text('output_format = "sxp"\nautoballoon = "x"\n')
    assert xl.main(["help", "li"]) == 0
    assert capsys.readouterr().err == "invalid autoballoon option\n"
    assert xlconf.current().output_format == "sxp"
    cfg = no_host / "g.cfg"
    cfg.write_text(f'name = "g"\nkernel = "{__file__}"\n')
    assert xl.main(["create", "-n", "-q", str(cfg)]) == 1
    assert 'output_format "sxp"' in capsys.readouterr().err


def test_create_waits_for_another_xl_holding_the_lock(tmp_path: Path) -> None:
    """xl create's acquire_lock: an fcntl lock, so a second xl (another process) waits."""
    import subprocess
    import sys
    from pyxen.toolstack.domain import create_lock as _create_lock
    lock = tmp_path / "run" / "xl.lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"os.makedirs({str(lock.parent)!r}, exist_ok=True)\n"
        f"f = open({str(lock)!r}, 'a'); fcntl.lockf(f, fcntl.LOCK_EX)\n"
        "print('held', flush=True); time.sleep(1.0)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        start = time.monotonic()
        with _create_lock(str(lock)):
            waited = time.monotonic() - start
        assert waited > 0.5
    finally:
        holder.wait(10)
