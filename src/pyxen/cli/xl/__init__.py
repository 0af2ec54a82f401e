"""``xl`` (and ``xm``): Xen's toolstack command line, with xl's names, options, output and exit codes.

One module per area of xl's command table (domains, saverestore, ...), each with a ``COMMANDS``
table; this one assembles them and dispatches. Each command parses its arguments, calls the
toolstack, and renders with render.py (parse -> compute -> render). Subcommands
may be abbreviated to any unambiguous prefix, as in xl. Diagnostics go to stderr as plain
sentences; a bad option exits 2, a failed operation 1.
"""

from __future__ import annotations

import sys
from typing import Callable

from ...hypervisor.errors import HypercallError
from ...toolstack import domain as libxl
from ...toolstack.config import ConfigError
from ...xenstore.errors import XenstoreError
from . import domains, network, saverestore
from .common import GLOBALS, Usage, XenstoreUnavailable, one_line

#: Every command pyxen's xl has, from the command modules, in the order of xl's usage listing.
_IMPLEMENTED = {**domains.COMMANDS, **saverestore.COMMANDS, **network.COMMANDS}
ORDER = """create list destroy pause unpause shutdown reboot console dump-core save restore migrate
migrate-receive vcpu-list mem-set mem-max sched-credit vcpu-pin info domid domname uptime dmesg
debug-keys block-list network-attach network-list network-detach""".split()
COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {name: _IMPLEMENTED[name] for name in ORDER}


def usage() -> str:
    lines = ["Usage xl [-vfNtT] <subcommand> [args]", "", "xl full list of subcommands:", ""]
    lines += [f" {name:<20}{desc}" for name, (_, desc) in COMMANDS.items()]
    return "\n".join(lines) + "\n"


def lookup(word: str) -> Callable[[list[str]], int] | None:
    """Exact name, else the only command the word is a prefix of."""
    if word in COMMANDS:
        return COMMANDS[word][0]
    hits = [c for c in COMMANDS if c.startswith(word)]
    return COMMANDS[hits[0]][0] if len(hits) == 1 else None


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    while args and args[0].startswith("-") and args[0] not in ("-h", "--help"):
        opt = args.pop(0)
        if opt.strip("-vfNtT"):
            print("unknown global option", file=sys.stderr)
            return 1
        GLOBALS.verbose += opt.count("v")
        GLOBALS.tty = GLOBALS.tty or "t" in opt
        GLOBALS.timestamps = GLOBALS.timestamps or "T" in opt
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(usage())
        return 0 if args else 1
    if args[0] == "help":
        if len(args) > 1 and lookup(args[1]) is not None:
            return _help(args[1])
        sys.stdout.write(usage())
        return 0
    fn = lookup(args[0])
    if fn is None:
        print("command not implemented", file=sys.stderr)
        return 1
    try:
        return fn(args[1:])
    except SystemExit as ex:  # argparse's --help
        return int(ex.code or 0)
    except Usage as err:
        print(str(err).rstrip("\n"), file=sys.stderr)
        return err.code
    except HypercallError as err:
        print(one_line(str(err)), file=sys.stderr)
        return 1
    except XenstoreUnavailable as err:
        print(f"xl: {one_line(err.strerror or str(err))}", file=sys.stderr)
        return 1
    except (XenstoreError, libxl.DomainBuildError, ConfigError) as err:
        print(f"xl: {one_line(str(err))}", file=sys.stderr)
        return 1
    except OSError as err:  # a daemon went away or stopped answering mid-command
        text = str(err) if err.strerror is None else err.strerror
        print(f"xl: {one_line(text)}" + (f": {err.filename}" if err.filename else ""), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130



def _help(word: str) -> int:
    fn = lookup(word)
    assert fn is not None
    try:
        fn(["--help"])
    except SystemExit:
        pass
    return 0
