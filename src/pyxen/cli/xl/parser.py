"""xl's option parser: argparse with xl's messages and xl's help from Xen's command table.

A module of its own so that argparse (with gettext and locale) is imported by the commands that
parse options (common.new_parser), not by every xl run: plain ``xl list`` parses none.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any, NoReturn

from . import cmdtable
from .common import Usage, required_message


#: The width XlParser's formatter is made with: argparse's default for an 80-column terminal.
_CHECK_WIDTH = 78


class XlParser(argparse.ArgumentParser):
    """argparse with xl's messages: ``option `-x' not supported.`` and exit 2; ``-h`` and
    ``format_help`` give the command's block of xl's help() from Xen's command table."""

    @property
    def command(self) -> str:
        """The command's name in xl's table (``prog`` is ``xl <name>``)."""
        return self.prog.split()[-1]

    def format_help(self) -> str:
        """xl's help(<command>) block (cmdtable.command_help); main prints it on stdout even
        inside a Usage message, as xl's help() does."""
        spec = cmdtable.lookup(self.command)
        return cmdtable.command_help(spec) if spec is not None else super().format_help()

    def _get_formatter(self) -> argparse.HelpFormatter:
        """A command of xl's table prints xl's help, never argparse's: its formatter only checks
        each argument as add_argument adds it, at a fixed width. argparse's default sizes it to
        the terminal with shutil, whose import (with bz2 and lzma) was a tenth of ``xl list``."""
        if cmdtable.lookup(self.command) is None:
            return super()._get_formatter()
        return self.formatter_class(prog=self.prog, width=_CHECK_WIDTH)  # type: ignore[call-arg]

    def print_help(self, file: Any = None) -> None:
        """``-h``: the help block on stdout (def_getopt: help(); exit(0))."""
        sys.stdout.write(self.format_help())

    def error(self, message: str) -> NoReturn:
        if "unrecognized arguments" in message:
            opt = message.split(":", 1)[1].split()[0]
            raise Usage(f"option `{opt.lstrip('-')}' not supported.")
        missing = re.match(r"argument -(\w)(?:/\S+)?: expected one argument", message)
        if missing:  # getopt's '?' for an option without its argument: optopt is the option
            raise Usage(f"option `{missing.group(1)}' not supported.")
        if "required" in message:
            # xl's def_getopt: the command's reqargs (Xen's number, else the positionals').
            n = cmdtable.REQARGS.get(self.command, sum(
                1 for a in self._actions if not a.option_strings and a.nargs in (None, "+")))
            raise Usage(required_message(self.command, n) + self.format_help())
        raise Usage(message)
