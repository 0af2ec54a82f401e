"""The ``pygrub`` command: Xen's options, outputs and messages (tools/pygrub/src/pygrub).

Run by the toolstack for ``bootloader = "pygrub"`` as libxl runs it (``--output=<file>
--output-format=simple0 --output-directory=<dir> ... <disk>``) and by hand. Interactive unless
``-q``, ``--entry`` or ``-l``, or when stdin is not a terminal (the toolstack runs it without
one); the menu is a plain text list with Xen's countdown, not curses.
"""

from __future__ import annotations

import getopt
import os
import select
import sys
from typing import TextIO

from . import conf
from .boot import PygrubError, Choice, choose, extract, select as select_entry
from .disk import Disk, DiskError
from .ext4 import Ext4, FsError

PYGRUB_VER = "0.7"
DEFAULT_OUTPUT_DIRECTORY = "/var/run/xen/pygrub/"
FORMATS = ("sxp", "simple", "simple0")
LONG_OPTS = ["quiet", "interactive", "list-entries", "not-really", "help", "output=",
             "output-format=", "output-directory=", "offset=", "runas=", "entry=", "kernel=",
             "ramdisk=", "args=", "isconfig", "debug"]


def usage(prog: str) -> None:
    print(f"Usage: {prog} [-q|--quiet] [-i|--interactive] [-l|--list-entries] [-n|--not-really] "
          "[--output=] [--kernel=] [--ramdisk=] [--args=] [--entry=] [--output-directory=] "
          "[--output-format=sxp|simple|simple0] [--runas=] [--offset=] <image>", file=sys.stderr)


def format_sxp(kernel: str, ramdisk: str | None, args: str | None) -> str:
    s = f"linux (kernel {kernel!r})"
    if ramdisk:
        s += f"(ramdisk {ramdisk!r})"
    if args:
        s += f"(args {args!r})"
    return s


def format_simple(kernel: str, ramdisk: str | None, args: str | None, sep: str) -> str:
    s = f"kernel {kernel}{sep}"
    if ramdisk:
        s += f"ramdisk {ramdisk}{sep}"
    if args:
        s += f"args {args}{sep}"
    return s + sep


def render(fmt: str, kernel: str, ramdisk: str | None, args: str | None) -> str:
    if fmt == "sxp":
        return format_sxp(kernel, ramdisk, args)
    return format_simple(kernel, ramdisk, args, "\n" if fmt == "simple" else "\0")


def list_entries(cfg: conf.BootConfig, out: TextIO) -> None:
    """``-l``: every entry as Xen prints it."""
    for e in cfg.entries:
        print(f"title: {e.title}", file=out)
        print(f"  root: {e.root}", file=out)
        print(f"  kernel: {e.kernel}", file=out)
        print(f"  args: {e.args}", file=out)
        print(f"  initrd: {e.initrd}", file=out)


def menu(cfg: conf.BootConfig, stdin: TextIO, out: TextIO) -> int:
    """The interactive menu: the entries, the highlighted one marked; a number and Enter
    picks one, Enter alone boots the highlighted one, ``u``/``d`` move; the default boots
    when ``timeout`` seconds pass without a key (-1: wait for ever). Returns the index."""
    sel = cfg.default if 0 <= cfg.default < len(cfg.entries) else 0
    timeout, waited = cfg.timeout, 0

    def draw() -> None:
        print(f"\n    pyGRUB  version {PYGRUB_VER}\n", file=out)
        for i, e in enumerate(cfg.entries):
            print(f" {'*' if i == sel else ' '} {i}: {e.title}", file=out)
        print("\nType a number and Enter to select an entry, 'u'/'d' to move, Enter to boot "
              "the selected OS.", file=out)
        out.flush()

    fd, pending = stdin.fileno(), b""

    def next_line(wait: float | None) -> str | None:
        """The next line typed, "" at end of input, None when ``wait`` seconds pass first
        (read from the descriptor itself: a buffered reader would hide typed-ahead lines
        from select)."""
        nonlocal pending
        while b"\n" not in pending:
            ready, _, _ = select.select([fd], [], [], wait)
            if not ready:
                return None
            chunk = os.read(fd, 1024)
            if not chunk:
                line, pending = pending, b""
                return line.decode(errors="replace")
            pending += chunk
        line, pending = pending.split(b"\n", 1)
        return line.decode(errors="replace") + "\n"

    draw()
    while True:
        if timeout != -1:
            if waited >= timeout:
                return sel
            print(f"Will boot selected entry in {timeout - waited:2d} seconds", file=out)
            out.flush()
        line = next_line(1.0 if timeout != -1 else None)
        if line is None:
            waited += 1
            continue
        if not line:
            return sel  # end of input: boot what is selected
        timeout = -1  # a key stops the countdown, as in Xen
        word = line.strip().lower()
        if not word:
            return sel
        if word.isdigit() and int(word) < len(cfg.entries):
            return int(word)
        if word in ("u", "k"):
            sel = max(sel - 1, 0)
        elif word in ("d", "j"):
            sel = min(sel + 1, len(cfg.entries) - 1)
        draw()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    prog = os.path.basename(argv[0]) if argv else "pygrub"
    if prog in ("__main__.py", "-m", "-c", ""):
        prog = "pygrub"  # run as python -m pyxen.pygrub
    try:
        opts, args = getopt.gnu_getopt(argv[1:], "qilnh::", LONG_OPTS)
    except getopt.GetoptError:
        usage(prog)
        return 1
    if any(o in ("-h", "--help") for o, _ in opts):
        usage(prog)
        return 0
    if len(args) < 1:
        usage(prog)
        return 1
    image = args[0]
    output = entry = kernel = ramdisk = runas = None
    in_args, offset = "", None
    interactive, listing, isconfig, debug, not_really = True, False, False, False, False
    output_format, output_directory = "sxp", DEFAULT_OUTPUT_DIRECTORY
    for o, a in opts:
        if o in ("-q", "--quiet"):
            interactive = False
        elif o in ("-i", "--interactive"):
            interactive = True
        elif o in ("-l", "--list-entries"):
            listing = True
        elif o in ("-n", "--not-really"):
            not_really = True
        elif o == "--output":
            output = a
        elif o == "--kernel":
            kernel = a
        elif o == "--ramdisk":
            ramdisk = a
        elif o == "--args":
            in_args = a
        elif o == "--entry":
            entry, interactive = a, False  # naming the entry implies non-interactive
        elif o == "--isconfig":
            isconfig = True
        elif o == "--debug":
            debug = True
        elif o == "--runas":
            runas = a
        elif o == "--offset":
            try:
                offset = int(a)
                if offset < 0:
                    raise ValueError
            except ValueError:
                print(f"{prog}: --offset={a} is not a byte offset", file=sys.stderr)
                return 1
        elif o == "--output-format":
            if a not in FORMATS:
                print(f"unknown output format {a}", file=sys.stderr)
                usage(prog)
                return 1
            output_format = a
        elif o == "--output-directory":
            output_directory = a
    if runas is not None:
        if entry is None and interactive:
            print("In order to use --runas, you must also set --entry or -q", file=sys.stderr)
            return 1
        print(f"{prog}: --runas is not supported: pyxen's pygrub has no privilege-dropping "
              "sandbox (run it without --runas)", file=sys.stderr)
        return 1
    if not sys.stdin.isatty():
        interactive = False  # nobody to answer a menu (the toolstack's case)

    if isconfig:
        return _isconfig(image, entry, in_args)

    writes_files = not (listing or not_really)
    if writes_files and not os.path.isdir(output_directory):
        print(f"{output_directory} is not an existing directory", file=sys.stderr)
        return 1
    if output is None or output == "-":
        fd = sys.stdout.fileno()
    else:
        try:
            fd = os.open(output, os.O_WRONLY)  # the caller made it (libxl truncates it first)
        except OSError as err:
            print(f"{prog}: cannot open --output={output}: {err.strerror}", file=sys.stderr)
            return 1

    def pick(cfg: conf.BootConfig) -> int | None:
        if listing:
            list_entries(cfg, sys.stdout)
            sys.stdout.flush()
            return None
        if interactive:
            return menu(cfg, sys.stdin, sys.stderr)
        return None

    try:
        with Disk(image) as disk:
            try:
                fs, choice = choose(disk, entry=entry, kernel=kernel, ramdisk=ramdisk,
                                    args=in_args, offset=offset, pick=pick, log=sys.stderr,
                                    debug=debug)
            except PygrubError as err:
                if listing:
                    return 0
                if str(err) == "No kernel image selected!":
                    print(err)
                    return 1
                for reason in err.reasons:
                    print(f"{prog}: {reason}", file=sys.stderr)
                print(f"RuntimeError: {err}", file=sys.stderr)
                return 1
            if listing:
                return 0
            if not_really:
                return _not_really(fs, choice, fd, output_format)
            try:
                got = extract(fs, choice, output_directory)
            except PygrubError as err:
                print(err, file=sys.stderr)
                return 1
    except DiskError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 1
    sys.stdout.flush()
    os.write(fd, render(output_format, got.kernel, got.ramdisk, got.args or None).encode())
    return 0


def _not_really(fs: Ext4, choice: Choice, fd: int, output_format: str) -> int:
    """``-n``: check the files exist and print ``<kind:path>`` in their place."""
    names: dict[str, str | None] = {"kernel": choice.kernel, "ramdisk": choice.ramdisk}
    shown: dict[str, str | None] = {}
    for kind, path in names.items():
        if path is None:
            shown[kind] = None
            continue
        try:
            fs.open_file(path)
        except FsError:
            print(f"The requested {kind} file does not exist", file=sys.stderr)
            return 1
        shown[kind] = f"<{kind}:{path}>"
    sys.stdout.flush()
    os.write(fd, render(output_format, shown["kernel"] or "", shown["ramdisk"],
                        choice.args or None).encode())
    return 0


def _isconfig(path: str, entry: str | None, in_args: str) -> int:
    """``--isconfig``: the image is a boot config file on the host; print the choice."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read(1024 * 1024)
        cfg = conf.parse(conf.kind_for(path), text, path)
        choice = select_entry(cfg, entry, None, in_args, 0)
    except OSError as err:
        print(f"Unable to access {path}: {err.strerror}", file=sys.stderr)
        return 1
    except (PygrubError, conf.ConfigSyntaxError) as err:
        print(err, file=sys.stderr)
        return 1
    print(f"  kernel: {choice.kernel}")
    if choice.ramdisk:
        print(f"  initrd: {choice.ramdisk}")
    print(f"  args: {choice.args}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
