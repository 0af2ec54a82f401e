"""xl's FLASK commands (tools/xl/xl_flask.c) answering as a Xen built without FLASK/XSM.

pyxen's hypervisor has no XSM: Xen's dummy ``xsm_do_xsm_op`` returns -ENOSYS, so libxc's
xc_flask_op gives -1 with errno ENOSYS, and xl prints "Flask XSM Disabled" (getenforce, stdout)
or "Flask XSM disabled" (setenforce, loadpolicy, stderr) and returns -1: exit status 255. These
commands parse no options (xl_flask.c calls no getopt): the first word after the command is
their argument, whatever it is.
"""

from __future__ import annotations

import os
import sys
from typing import Callable

from . import cmdtable
from .common import ctrl

#: main_*'s ``return ret`` with ret -1 (xc_flask_op's failure): the process exits 255.
XSM_DISABLED_EXIT = 255


def _help(name: str) -> int:
    """``help("<name>"); return 2;``: the command's block on stdout."""
    spec = cmdtable.lookup(name)
    assert spec is not None
    sys.stdout.write(cmdtable.command_help(spec))
    return 2


def cmd_getenforce(argv: list[str]) -> int:
    with ctrl():
        print("Flask XSM Disabled")
    return XSM_DISABLED_EXIT


def cmd_setenforce(argv: list[str]) -> int:
    if not argv or not (argv[0] in ("0", "1") or argv[0].lower() in ("permissive", "enforcing")):
        return _help("setenforce")
    with ctrl():
        print("Flask XSM disabled", file=sys.stderr)
    return XSM_DISABLED_EXIT


def cmd_loadpolicy(argv: list[str]) -> int:
    if not argv:
        return _help("loadpolicy")
    path = argv[0]
    with ctrl():
        try:
            with open(path, "rb") as policy:
                policy.read()
        except OSError as err:
            print(f"Error occurred opening policy file '{path}': "
                  f"{os.strerror(err.errno) if err.errno else err}", file=sys.stderr)
            return XSM_DISABLED_EXIT
        print("Flask XSM disabled", file=sys.stderr)
    return XSM_DISABLED_EXIT


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "getenforce": (cmd_getenforce, "Returns the current enforcing mode of the Flask Xen security module"),
    "setenforce": (cmd_setenforce, "Sets the current enforcing mode of the Flask Xen security module"),
    "loadpolicy": (cmd_loadpolicy, "Loads a new policy into the Flask Xen security module"),
}
