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
import os
import sys
from typing import Callable

from ...hypervisor.errors import HypercallError
from ...toolstack import domain as libxl
from ...toolstack.config import ConfigError
from ...xenstore.errors import XenstoreError
from ...paths import Paths
from . import block, cmdtable, domains, flask, hardware, misc, network, saverestore, sched, xlconf
from .common import DRYRUN_AWARE, GLOBALS, GlobalOptions, Usage, XenstoreUnavailable, one_line

#: Every command pyxen's xl has, from the command modules.
_IMPLEMENTED = {**domains.COMMANDS, **saverestore.COMMANDS, **hardware.COMMANDS, **flask.COMMANDS,
               **sched.COMMANDS, **misc.COMMANDS, **block.COMMANDS,
               **network.COMMANDS}
#: The commands of Xen's table that pyxen runs, in the table's order.
COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    spec.name: _IMPLEMENTED[spec.name] for spec in cmdtable.TABLE if spec.name in _IMPLEMENTED}
#: Xen's commands no module implements yet: listed and found like the others, refused when run.
NOT_IMPLEMENTED = frozenset(spec.name for spec in cmdtable.TABLE) - _IMPLEMENTED.keys()
#: xl.c main's getopt string "+vftTN": the global options, up to the subcommand.
_GLOBAL_OPTS = "vftTN"


def not_implemented(name: str) -> Callable[[list[str]], int]:
    """A command of Xen's table pyxen does not have yet: ``-h`` prints xl's help; otherwise one
    line naming the command, exit 1, nothing done."""
    return hardware.refusal(name, "pyxen does not implement this command yet")


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
        xlconf.load_global(Paths.from_env())
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
    fn = COMMANDS[spec.name][0] if spec.name in COMMANDS else not_implemented(spec.name)
    if GLOBALS.dryrun and spec.name in COMMANDS and fn not in DRYRUN_AWARE:
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
    except (XenstoreError, libxl.DomainBuildError, ConfigError) as err:
        print(f"xl: {one_line(str(err))}", file=sys.stderr)
        return 1
    except OSError as err:  # a daemon went away or stopped answering mid-command
        text = str(err) if err.strerror is None else err.strerror
        print(f"xl: {one_line(text)}" + (f": {err.filename}" if err.filename else ""), file=sys.stderr)
        return 1
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
