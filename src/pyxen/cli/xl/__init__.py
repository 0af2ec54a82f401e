"""``xl`` (and ``xm``): Xen's toolstack command line, with xl's names, options, output and exit codes.

One module per area of xl's command table (domains, saverestore, hardware, flask, ...), each
with a ``COMMANDS`` table; this one assembles them and dispatches as xl.c's main does. Xen's
command table itself (names, order, help text, flags) is cmdtable.py: lookup is xl's
unambiguous truncation among ALL of Xen's commands, and a command of Xen's table that no module
implements yet answers with one line saying so (exit 1). Each command parses its arguments,
calls the toolstack, and renders with render.py (parse -> compute -> render). Diagnostics go to
stderr as plain sentences; a bad option exits 2, a failed operation 1.
"""

from __future__ import annotations

import errno
import importlib
import os
import sys

from ...hypervisor.errors import HypercallError
from ...paths import XL_CONF, root_from_env
from ...records import TYPE_CHECKING
from . import cmdtable, xlconf
from .common import DRYRUN_AWARE, GLOBALS, GlobalOptions, Usage, XenstoreUnavailable, one_line

if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any, Callable

#: Which module of this package implements each command. A command imports only its own module
#: (and what that imports): ``xl list`` stays clear of the domain builder, the backends and
#: asyncio, whose imports cost several times what listing does (bench/scale.py: xl list with 50
#: guests). tests/unit/test_xl_cmdtable.py checks this index against the modules' COMMANDS.
MODULES: dict[str, tuple[str, ...]] = {
    "listing": ("list",),
    "domains": ("create", "destroy", "pause", "unpause", "shutdown", "reboot", "console",
                "dump-core", "mem-set", "mem-max", "info", "domid", "domname", "uptime", "dmesg",
                "debug-keys", "block-list", "network-list"),
    "saverestore": ("save", "restore", "migrate", "migrate-receive"),
    "hardware": ("pci-attach", "pci-detach", "pci-list", "pci-assignable-add",
                 "pci-assignable-remove", "pci-assignable-list", "usbctrl-attach", "usbctrl-detach",
                 "usbdev-attach", "usbdev-detach", "usb-list", "psr-hwinfo", "psr-cmt-attach",
                 "psr-cmt-detach", "psr-cmt-show", "psr-cat-set", "psr-cat-show", "psr-mba-set",
                 "psr-mba-show", "vtpm-attach", "vtpm-list", "vtpm-detach", "vkb-attach", "vkb-list",
                 "vkb-detach", "vdispl-attach", "vdispl-list", "vdispl-detach", "vsnd-attach",
                 "vsnd-list", "vsnd-detach", "remus", "sharing", "devd"),
    "flask": ("getenforce", "setenforce", "loadpolicy"),
    "sched": ("vcpu-list", "vcpu-pin", "vcpu-set", "sched-credit", "sched-credit2", "sched-rtds",
              "cpupool-create", "cpupool-list", "cpupool-destroy", "cpupool-rename",
              "cpupool-cpu-add", "cpupool-cpu-remove", "cpupool-migrate", "cpupool-numa-split"),
    "misc": ("config-update", "vncviewer", "button-press", "vm-list", "rename", "trigger", "sysrq",
             "set-parameters", "top", "claims", "qemu-monitor-command"),
    "block": ("cd-insert", "cd-eject", "channel-list", "block-attach", "block-detach"),
    "network": ("network-attach", "network-detach"),
}
#: Command name -> the module implementing it.
_MODULE_OF = {name: module for module, names in MODULES.items() for name in names}
#: Errors a command reports as ``xl: <one line>`` (exit 1), by module and class name: looked up
#: only in modules already imported, since an error of a module never imported was never raised.
_ONE_LINE_ERRORS = (("pyxen.xenstore.errors", "XenstoreError"),
                    ("pyxen.toolstack.domain", "DomainBuildError"),
                    ("pyxen.toolstack.config", "ConfigError"))


def _one_line_errors() -> tuple[type[BaseException], ...]:
    return tuple(getattr(sys.modules[module], cls) for module, cls in _ONE_LINE_ERRORS if module in sys.modules)


def command_module(name: str) -> ModuleType:
    """The module of this package that implements command ``name`` (imported now)."""
    return importlib.import_module(f"{__name__}.{_MODULE_OF[name]}")


def _all_commands() -> dict[str, tuple[Callable[[list[str]], int], str]]:
    implemented: dict[str, tuple[Callable[[list[str]], int], str]] = {}
    for module in MODULES:
        implemented.update(importlib.import_module(f"{__name__}.{module}").COMMANDS)
    return implemented


def __getattr__(attr: str) -> Any:
    """COMMANDS (every command pyxen's xl has, in the table's order), _IMPLEMENTED and
    NOT_IMPLEMENTED (Xen's commands no module implements yet), computed on first use: they
    import every command module, which running one command does not."""
    if attr not in ("COMMANDS", "_IMPLEMENTED", "NOT_IMPLEMENTED"):
        raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
    implemented = _all_commands()
    commands = {spec.name: implemented[spec.name] for spec in cmdtable.TABLE if spec.name in implemented}
    globals().update(_IMPLEMENTED=implemented, COMMANDS=commands,
                     NOT_IMPLEMENTED=frozenset(spec.name for spec in cmdtable.TABLE) - implemented.keys())
    return globals()[attr]


#: xl.c main's getopt string "+vftTN": the global options, up to the subcommand.
_GLOBAL_OPTS = "vftTN"


def not_implemented(name: str) -> Callable[[list[str]], int]:
    """A command of Xen's table pyxen does not have yet: ``-h`` prints xl's help; otherwise one
    line naming the command, exit 1, nothing done."""
    from .hardware import refusal
    return refusal(name, "pyxen does not implement this command yet")


def _global_options(args: list[str]) -> int | None:
    """Consume xl's global options from ``args`` as glibc getopt("+vftTN") does (bundled
    letters, ``--`` ends them, the first non-option is the subcommand); set GLOBALS.

    :return: None, or xl's exit status after getopt's and xl's messages for a bad option.
    """
    vars(GLOBALS).update(vars(GlobalOptions()))  # one xl run per process, but main() per test
    while args and args[0].startswith("-") and args[0] != "-":
        word = args.pop(0)
        if word == "--":
            break
        for letter in word[1:]:
            if letter not in _GLOBAL_OPTS:
                print(f"xl: invalid option -- '{letter}'", file=sys.stderr)
                print("unknown global option", file=sys.stderr)
                return 1
            GLOBALS.verbose += letter == "v"
            GLOBALS.dryrun = GLOBALS.dryrun or letter == "N"
            GLOBALS.force = GLOBALS.force or letter == "f"
            GLOBALS.tty = GLOBALS.tty or letter == "t"
            GLOBALS.timestamps = GLOBALS.timestamps or letter == "T"
    return None


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    failed = _global_options(args)
    if failed is not None:
        return failed
    if not args:  # xl.c: help(NULL); exit(EXIT_FAILURE)
        sys.stdout.write(cmdtable.full_help())
        return 1
    try:
        xlconf.load_global(os.path.join(root_from_env(), XL_CONF))
    except xlconf.XlConfError as err:  # parse_global_config: the parser's line, then exit(1)
        print(err, file=sys.stderr)
        print(f"Failed to parse config file: {os.strerror(errno.EINVAL)}", file=sys.stderr)
        return 1
    spec = cmdtable.lookup(args[0])
    if spec is None:
        if args[0] == "help":  # not in the table: a prefix of it is no command
            sys.stdout.write(cmdtable.help_text(args[1] if len(args) > 1 else None))
            return 0
        print("command not implemented", file=sys.stderr)
        return 1
    if GLOBALS.dryrun and not spec.can_dryrun:
        print("command does not implement -N (dryrun) option", file=sys.stderr)
        return 1
    implemented = spec.name in _MODULE_OF
    fn = command_module(spec.name).COMMANDS[spec.name][0] if implemented else not_implemented(spec.name)
    if GLOBALS.dryrun and implemented and fn not in DRYRUN_AWARE:
        print(f"xl {spec.name}: pyxen does not implement -N (dryrun) for this command yet",
              file=sys.stderr)
        return 1
    try:
        return fn(args[1:])
    except SystemExit as ex:  # argparse's -h
        return int(ex.code or 0)
    except Usage as err:
        _usage_error(spec, str(err))
        return err.code
    except HypercallError as err:
        print(one_line(str(err)), file=sys.stderr)
        return 1
    except XenstoreUnavailable as err:
        print(f"xl: {one_line(err.strerror or str(err))}", file=sys.stderr)
        return 1
    except Exception as err:
        if isinstance(err, _one_line_errors()):
            print(f"xl: {one_line(str(err))}", file=sys.stderr)
            return 1
        if isinstance(err, OSError):  # a daemon went away or stopped answering mid-command
            text = str(err) if err.strerror is None else err.strerror
            print(f"xl: {one_line(text)}" + (f": {err.filename}" if err.filename else ""), file=sys.stderr)
            return 1
        raise
    except KeyboardInterrupt:
        return 130


def _usage_error(spec: cmdtable.CmdSpec, message: str) -> None:
    """A Usage message on xl's streams: the command's help block, where the message carries it
    (XlParser.format_help), on stdout as xl's help() prints it; the rest on stderr as it is
    ("'xl X' requires at least N argument.\\n\\n" keeps its blank line), a newline added
    when it has none."""
    block = cmdtable.command_help(spec)
    text, has_help, rest = message.partition(block)
    text += rest
    if text:
        sys.stderr.write(text if text.endswith("\n") else text + "\n")
    if has_help:
        sys.stdout.write(block)
