"""``pyxen xenstore read|write|ls|rm|watch|chmod|exists|list``: xenstore-utils' commands.

Behaviour, messages and exit codes follow Debian's xenstore-utils (Xen tools/xenstore/
xenstore_client.c): errors print "xenstore-<cmd>: couldn't read path P" style messages on
stderr and exit 1; usage errors exit 2; multi-path read/write/rm run in one transaction that
is redone on EAGAIN.  Values are printed with non-printable bytes escaped (``-R`` for raw),
as xenstore-read does.  The socket is ``--socket``, else $XENSTORED_PATH, else the pyxen
host's Dom0 socket under $PYXEN_ROOT.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from ..libxlu.domid import is_domid
from ..xenstore.client import ClientTransaction, XenstoreClient, default_socket_path
from ..xenstore.errors import NoEntry, XenstoreError

COMMANDS = ("read", "write", "ls", "rm", "watch", "chmod", "exists", "list")


def escape(value: bytes) -> str:
    """xenstore_client.c's sanitise_value: printable ASCII kept, backslash doubled, the rest
    as \\ooo octal... Xen uses \\t \\n \\r escapes and \\x%02x otherwise."""
    out = []
    for b in value:
        ch = chr(b)
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif 0x20 <= b < 0x7F:
            out.append(ch)
        else:
            out.append(f"\\x{b:02x}")
    return "".join(out)


def unescape(text: str) -> bytes:
    """xenstore-write's expand of \\t \\n \\r \\\\ \\xNN in values."""
    out = bytearray()
    i = 0
    raw = text.encode()
    while i < len(raw):
        c = raw[i]
        if c == 0x5C and i + 1 < len(raw):
            n = chr(raw[i + 1])
            if n == "x" and i + 3 < len(raw) + 1:
                try:
                    out.append(int(raw[i + 2:i + 4], 16))
                    i += 4
                    continue
                except ValueError:
                    pass
            mapping = {"t": 9, "n": 10, "r": 13, "\\": 92}
            if n in mapping:
                out.append(mapping[n])
                i += 2
                continue
        out.append(c)
        i += 1
    return bytes(out)


class _Failed(Exception):
    """A command body reported failure: abort its transaction and exit with ``rc``."""

    def __init__(self, rc: int) -> None:
        super().__init__(rc)
        self.rc = rc


def _retrying(xs: XenstoreClient, body: Callable[[ClientTransaction], int]) -> int:
    """Run ``body`` in a transaction (``xs.transact``: redone on EAGAIN); abort when it
    reports failure."""
    def run(t: ClientTransaction) -> int:
        rc = body(t)
        if rc != 0:
            raise _Failed(rc)
        return 0

    try:
        return xs.transact(run)
    except _Failed as failed:
        return failed.rc


def cmd_read(xs: XenstoreClient, ns: argparse.Namespace) -> int:
    def body(t: ClientTransaction) -> int:
        lines = []
        for path in ns.paths:
            try:
                value = t.read(path)
            except XenstoreError:
                print(f"xenstore-read: couldn't read path {path}", file=sys.stderr)
                return 1
            text = value.decode("latin-1") if ns.raw else escape(value)
            lines.append(f"{path}: {text}" if ns.prefix else text)
        print("\n".join(lines))
        return 0
    if len(ns.paths) == 1:
        try:
            value = xs.read(ns.paths[0])
        except XenstoreError:
            print(f"xenstore-read: couldn't read path {ns.paths[0]}", file=sys.stderr)
            return 1
        text = value.decode("latin-1") if ns.raw else escape(value)
        print(f"{ns.paths[0]}: {text}" if ns.prefix else text)
        return 0
    return _retrying(xs, body)


def cmd_write(xs: XenstoreClient, ns: argparse.Namespace) -> int:
    items = ns.items
    if not items or len(items) % 2:
        print("Usage: pyxen xenstore write [-h] [-s] [-R] key value [...]", file=sys.stderr)
        return 2
    pairs = [(items[i], items[i + 1].encode() if ns.raw else unescape(items[i + 1]))
             for i in range(0, len(items), 2)]

    def body(t: ClientTransaction) -> int:
        for path, value in pairs:
            try:
                t.write(path, value)
            except XenstoreError:
                print(f"xenstore-write: could not write path {path}", file=sys.stderr)
                return 1
        return 0
    if len(pairs) == 1:
        try:
            xs.write(*pairs[0])
            return 0
        except XenstoreError:
            print(f"xenstore-write: could not write path {pairs[0][0]}", file=sys.stderr)
            return 1
    return _retrying(xs, body)


def cmd_rm(xs: XenstoreClient, ns: argparse.Namespace) -> int:
    def body(t: ClientTransaction) -> int:
        for path in ns.paths:
            try:
                t.rm(path)
                if ns.tidy:  # -t: also remove parents left empty
                    parent = path.rsplit("/", 1)[0]
                    while parent and parent != path and not t.directory(parent) \
                            and not t.read(parent):
                        t.rm(parent)
                        parent = parent.rsplit("/", 1)[0]
            except XenstoreError:
                print(f"xenstore-rm: could not remove path {path}", file=sys.stderr)
                return 1
        return 0
    return _retrying(xs, body)


def cmd_exists(xs: XenstoreClient, ns: argparse.Namespace) -> int:
    def body(t: ClientTransaction) -> int:
        for path in ns.paths:
            try:
                t.read(path)
            except XenstoreError:
                return 1
        return 0
    return _retrying(xs, body)


def cmd_list(xs: XenstoreClient, ns: argparse.Namespace) -> int:
    def body(t: ClientTransaction) -> int:
        for path in ns.paths:
            try:
                names = t.directory(path)
            except XenstoreError:
                print(f"xenstore-list: could not list path {path}", file=sys.stderr)
                return 1
            for name in names:
                print(f"{path.rstrip('/')}/{name}" if ns.prefix else name)
        return 0
    return _retrying(xs, body)


def cmd_chmod(xs: XenstoreClient, ns: argparse.Namespace) -> int:
    perms = ns.perms
    for p in perms:
        if len(p) < 2 or p[0] not in "nrwb" or not is_domid(p[1:]):
            print(f"xenstore-chmod: Invalid permission {p}", file=sys.stderr)
            return 2

    def apply(t: ClientTransaction, path: str) -> None:
        t.set_perms(path, perms)
        if ns.recurse:
            for child in t.directory(path):
                apply(t, f"{path.rstrip('/')}/{child}")

    def body(t: ClientTransaction) -> int:
        path = ns.path
        try:
            apply(t, path)
            if ns.upto:  # -u: also every ancestor
                while "/" in path.strip("/"):
                    path = path.rsplit("/", 1)[0]
                    t.set_perms(path, perms)
        except XenstoreError:
            print(f"xenstore-chmod: could not set permissions on {path}", file=sys.stderr)
            return 1
        return 0
    return _retrying(xs, body)


def cmd_ls(xs: XenstoreClient, ns: argparse.Namespace) -> int:
    """xenstore-ls: a tree with one space of indent per level, ``name = "value"``;
    -f full paths, -p permissions."""
    start = ns.path or "/"
    out: list[str] = []

    def walk(path: str, depth: int) -> None:
        try:
            children = xs.directory(path)
        except XenstoreError:
            if depth == 0:
                raise
            return
        for name in children:
            child = f"{path.rstrip('/')}/{name}" if path != "/" else f"/{name}"
            try:
                value = escape(xs.read(child))
            except NoEntry:
                continue
            except XenstoreError:
                value = None  # type: ignore[assignment]
            label = child if ns.full else " " * depth + name
            line = f'{label} = "{value}"' if value is not None else f"{label}:"
            if ns.perms:
                try:
                    perms = ",".join(xs.get_perms(child))
                except XenstoreError:
                    perms = "?"
                pad = max(2, 62 - len(line))
                line = f"{line} {'. ' * (pad // 2)} ({perms})"
            out.append(line)
            walk(child, depth + 1)
    try:
        walk(start, 0)
    except XenstoreError as err:
        print(f"xenstore-ls: xs_directory ({err.wire}): {start}", file=sys.stderr)
        return 1
    if out:
        print("\n".join(out))
    return 0


def cmd_watch(xs: XenstoreClient, ns: argparse.Namespace) -> int:
    """Print each event's path; with -n N exit after N events (the initial one counts)."""
    try:
        xs.watch(ns.path, ns.path)
    except XenstoreError:
        print(f"xenstore-watch: watch failed on {ns.path}", file=sys.stderr)
        return 1
    seen = 0
    try:
        for path, _token in xs.watch_events():
            print(path, flush=True)
            seen += 1
            if ns.count is not None and seen >= ns.count:
                break
    except KeyboardInterrupt:
        return 130
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyxen xenstore", description=__doc__)
    p.add_argument("--socket", help="xenstored socket (default $XENSTORED_PATH or PYXEN_ROOT's)")
    p.add_argument("--root", help="PYXEN_ROOT whose Dom0 socket to use")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("read")
    r.add_argument("-p", dest="prefix", action="store_true", help="prefix with the path")
    r.add_argument("-R", dest="raw", action="store_true", help="raw value, no escaping")
    r.add_argument("paths", nargs="+")
    w = sub.add_parser("write")
    w.add_argument("-R", "-r", dest="raw", action="store_true", help="no \\ unescaping")
    w.add_argument("-s", action="store_true", help="(accepted for compatibility)")
    w.add_argument("items", nargs="*")
    rm = sub.add_parser("rm")
    rm.add_argument("-t", dest="tidy", action="store_true", help="remove empty parents")
    rm.add_argument("paths", nargs="+")
    ex = sub.add_parser("exists")
    ex.add_argument("paths", nargs="+")
    ls_ = sub.add_parser("list")
    ls_.add_argument("-p", dest="prefix", action="store_true")
    ls_.add_argument("paths", nargs="+")
    ch = sub.add_parser("chmod")
    ch.add_argument("-r", dest="recurse", action="store_true")
    ch.add_argument("-u", dest="upto", action="store_true")
    ch.add_argument("path")
    ch.add_argument("perms", nargs="+")
    ls = sub.add_parser("ls")
    ls.add_argument("-f", dest="full", action="store_true")
    ls.add_argument("-p", dest="perms", action="store_true")
    ls.add_argument("path", nargs="?")
    wa = sub.add_parser("watch")
    wa.add_argument("-n", dest="count", type=int)
    wa.add_argument("path")
    return p


HANDLERS: dict[str, Callable[[XenstoreClient, argparse.Namespace], int]] = {
    "read": cmd_read, "write": cmd_write, "rm": cmd_rm, "exists": cmd_exists,
    "list": cmd_list, "chmod": cmd_chmod, "ls": cmd_ls, "watch": cmd_watch,
}


def main(argv: list[str]) -> int:
    """Entry point for ``pyxen xenstore ...``; returns the exit code."""
    try:
        ns = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if ns.socket:
        path = ns.socket
    elif ns.root:
        from ..paths import Paths
        path = Paths.from_env(ns.root).xenstored_socket
    else:
        path = default_socket_path()
    try:
        xs = XenstoreClient(path).connect()
    except OSError as err:
        print(f"xs_open: {err.strerror}", file=sys.stderr)
        return 1
    try:
        return HANDLERS[ns.command](xs, ns)
    except (OSError, XenstoreError) as err:
        print(f"xenstore-{ns.command}: {err}", file=sys.stderr)
        return 1
    finally:
        xs.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
