"""What every ``xl`` command shares: xl's usage errors and option parser, the global options,
the xl context (``ctrl``), and the one-line rendering of a daemon's message.

Command modules (domains, saverestore, and one per area of xl's command table) import from
here; ``pyxen.cli.xl`` (``__init__``) assembles their ``COMMANDS`` tables in xl's order.
"""

from __future__ import annotations

import _socket
import os

from ...hypervisor.client import XenCtrl
from ...libxlu.domid import parse_uint
from ...paths import HYPERVISOR_SOCKET, XENSTORED_SOCKET, root_from_env
from ...records import TYPE_CHECKING
from ...toolstack import one_line  # (re-exported: the commands print daemons' messages with it)

if TYPE_CHECKING:
    import argparse
    from typing import Callable, TypeVar

    from .parser import XlParser


class Usage(Exception):
    """Bad command-line usage: message for stderr, and xl's exit code for it."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def required_message(command: str, reqargs: int) -> str:
    """def_getopt's ``"'xl %s' requires at least %d argument%s.\\n\\n"`` (stderr)."""
    return f"'xl {command}' requires at least {reqargs} argument{'s' if reqargs > 1 else ''}.\n\n"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class interrupts_on_termination:  # noqa: N801 (a context manager used as a call, as contextlib's are)
    """SIGTERM and SIGHUP act as Ctrl-C while the block runs, so an ``xl create`` told to stop
    unwinds (destroying what it built) instead of dying half-way. (SIGKILL cannot be caught;
    then the hypervisor destroys the unfinished domain when xl's connection closes.) A class,
    not a contextlib generator: ``xl list`` imports this module and not contextlib, or signal."""

    def __enter__(self) -> None:
        import signal
        self._old = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}

    def __exit__(self, *exc: object) -> None:
        import signal
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


class GlobalOptions:
    """xl's options before the subcommand (``xl -v -t migrate ...``): xl migrate passes them on
    to the receiver's xl. (A plain class, as the other records xl list imports are NamedTuples:
    dataclasses, with inspect, ast and dis, was a tenth of its time.)"""

    def __init__(self) -> None:
        self.verbose = 0
        #: -t: progress with carriage returns (xl passes it on when stderr is a terminal too).
        self.tty = False
        #: -T: timestamps on messages.
        self.timestamps = False
        #: -N (xl.c dryrun_only): only commands whose table entry has can_dryrun run with it
        #: (main refuses the others); ``create`` reads it as its own ``-n``: parse, print,
        #: build nothing.
        self.dryrun = False
        #: -f (xl.c force_execution).
        self.force = False

    def __repr__(self) -> str:
        return f"GlobalOptions({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


GLOBALS = GlobalOptions()

if TYPE_CHECKING:
    _Command = TypeVar("_Command", bound=Callable[[list[str]], int])
#: The command functions that honour the global -N (read GLOBALS.dryrun and then change
#: nothing). main refuses -N for a command Xen's table marks can_dryrun whose pyxen function is
#: not here, so -N never acts by accident.
DRYRUN_AWARE: set[Callable[[list[str]], int]] = set()


def honours_dryrun(fn: _Command) -> _Command:
    """Mark a command function as honouring ``xl -N`` (GLOBALS.dryrun): it must print what it
    would do, as Xen's does, and change nothing."""
    DRYRUN_AWARE.add(fn)
    return fn


#: Seconds ctrl() waits for xenstored to accept (XenstoreClient's default timeout).
XENSTORE_CONNECT_TIMEOUT = 10.0


class XenstoreUnavailable(OSError):
    """xenstored does not answer on its socket: no xl context (libxl_ctx_alloc's xs_open)."""


def new_parser(cmd: str, desc: str) -> XlParser:
    """A command's parser (XlParser, in parser.py: argparse is imported when a command parses
    options, not by ``xl list`` without any)."""
    from .parser import XlParser
    return XlParser(prog=f"xl {cmd}", description=desc, add_help=True)


def integer(text: str) -> int:
    """An option's number as xl's strtol reads it: ASCII digits with an optional '-' only
    (argparse's ``int`` would also take other scripts' digits, spaces and underscores)."""
    value = parse_uint(text[1:] if text.startswith("-") else text)
    if value is None:
        import argparse
        raise argparse.ArgumentTypeError(f"invalid integer value: '{text}'")
    return -value if text.startswith("-") else value


def ctrl() -> XenCtrl:
    """The xl context (libxl_ctx_alloc): a handle on the hypervisor, once xenstored is known to
    listen too. libxl opens both before any command runs, so with either daemon down every
    command stops here, with one line and before it has applied anything (mem-set does not move
    a reservation whose memory/target it then could not write).

    :raise HypervisorUnavailable: the hypervisor's socket does not answer.
    :raise XenstoreUnavailable: xenstored's socket does not answer.
    """
    root = root_from_env()  # (Paths's sockets, joined without pathlib: paths.XL_CONF says why)
    xc = XenCtrl(os.path.join(root, HYPERVISOR_SOCKET))
    xenstored_socket = os.path.join(root, XENSTORED_SOCKET)
    try:  # a bare connect, as XenstoreClient.connect does: the client (and asyncio) stay unimported
        probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)  # (XenCtrl says why not socket.py's)
        try:
            probe.settimeout(XENSTORE_CONNECT_TIMEOUT)
            probe.connect(xenstored_socket)
        finally:
            probe.close()
    except OSError as err:
        xc.close()
        raise XenstoreUnavailable(
            err.errno or 0, f"cannot connect to xenstore at {xenstored_socket} "
            f"({os.strerror(err.errno) if err.errno else err}); is the host started? "
            "(pyxen host start)") from err
    return xc




def positionals(p: XlParser, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``; positional arguments beyond the parser's print the command's help and
    exit 1, as xl's commands that count their arguments after def_getopt do."""
    ns, extra = p.parse_known_args(argv)
    for word in extra:
        if word.startswith("-") and word != "-":
            raise Usage(f"option `{word.lstrip('-')}' not supported.")
    if extra:
        raise Usage(p.format_help(), 1)
    return ns
