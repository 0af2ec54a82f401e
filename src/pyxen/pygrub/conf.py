"""Boot config files as Xen's pygrub reads them (its GrubConf.py and ExtLinuxConf.py).

Three formats, tried in Xen's order (CONFIG_FILES: the first file that exists wins): GRUB 2's
grub.cfg, extlinux/isolinux, and legacy GRUB's menu.lst. Every parser is pure: text in, a
BootConfig out. Lines are stripped; blank lines and ``#`` comments are skipped; "cmd arg" splits
on ``=`` when it comes before the first blank, else on the blank (Xen's grub_split).

One extension over Xen: GRUB 2's ``set default="${saved_entry}"`` (or ``saved``) is resolved
from the grubenv block next to grub.cfg when the caller passes it (``grubenv=``) and it has a
``saved_entry`` (an index, a title, a menuentry id, or a ``submenu>entry`` path). Without one,
Xen's behaviour and message stand: entry 0, "grub2's saved_entry/next_entry not supported".
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field

#: Xen's class names, which pygrub prints in "Using <class ...> to parse <path>".
GRUB2 = "grub.GrubConf.Grub2ConfigFile"
EXTLINUX = "grub.ExtLinuxConf.ExtLinuxConfigFile"
GRUB = "grub.GrubConf.GrubConfigFile"

#: Where pygrub looks, in order, and the parser for each (pygrub's cfg_list).
CONFIG_FILES: tuple[tuple[str, str], ...] = (
    ("/boot/grub/grub.cfg", GRUB2), ("/grub/grub.cfg", GRUB2),
    ("/boot/grub2/grub.cfg", GRUB2), ("/grub2/grub.cfg", GRUB2),
    ("/boot/isolinux/isolinux.cfg", EXTLINUX), ("/boot/extlinux/extlinux.conf", EXTLINUX),
    ("/boot/extlinux.conf", EXTLINUX), ("/extlinux/extlinux.conf", EXTLINUX),
    ("/extlinux.conf", EXTLINUX),
    ("/boot/grub/menu.lst", GRUB), ("/boot/grub/grub.conf", GRUB),
    ("/grub/menu.lst", GRUB), ("/grub/grub.conf", GRUB),
)

SAVED_UNSUPPORTED = "grub2's saved_entry/next_entry not supported"


class ConfigSyntaxError(ValueError):
    """A config pygrub cannot read (Xen raises RuntimeError with the same words)."""


@dataclass
class BootEntry:
    """One menu entry: paths as the config gives them, with any ``(hd0,msdos1)`` dropped."""

    title: str
    root: str | None = None
    kernel: str | None = None
    args: str | None = None
    initrd: str | None = None
    #: GRUB 2's menuentry id (``$menuentry_id_option 'x'`` or ``--id x``), for saved_entry.
    ident: str | None = None
    #: The submenus' titles (and ids) it sits in, outermost first, for ``submenu>entry``.
    parents: tuple[tuple[str, str | None], ...] = ()


@dataclass
class BootConfig:
    """A parsed config: its entries in menu order (submenus flattened), the default entry's
    index and the menu timeout in seconds (-1: wait for ever)."""

    kind: str
    path: str
    entries: list[BootEntry] = field(default_factory=list)
    default: int = 0
    timeout: int = -1
    #: Messages Xen's pygrub logs as warnings (printed on stderr).
    warnings: list[str] = field(default_factory=list)
    #: Unknown directives, which Xen logs as warnings too (pyxen prints them with --debug).
    unknown: list[str] = field(default_factory=list)


def grub_split(s: str, maxsplit: int = -1) -> list[str]:
    """Xen's grub_split: on ``=`` if it precedes the first blank (space or tab), else on blanks."""
    eq = s.find("=")
    if eq == -1:
        return s.split(None, maxsplit)
    blanks = [i for i in (s.find(" "), s.find("\t")) if i != -1]
    sp = min(blanks) if blanks else -1
    if sp == -1 or eq < sp:
        return s.split("=", maxsplit)
    return s.split(None, maxsplit)


def command(line: str) -> tuple[str, str]:
    """(command, argument) of a line; the argument is "" when there is none."""
    parts = grub_split(line, 1)
    return (parts[0] if parts else "", parts[1].strip() if len(parts) > 1 else "")


def drop_device(path: str) -> str:
    """A GRUB path without its ``(hd0,msdos1)`` device prefix (Xen's get_path)."""
    if path.startswith("("):
        end = path.find(")")
        if end == -1:
            raise ConfigSyntaxError("Unable to find matching ')'")
        return path[end + 1:]
    return path


def _kernel_line(entry: BootEntry, arg: str) -> None:
    """``kernel``/``linux`` PATH ARGS...: the path, then the rest as the args."""
    parts = arg.split(None, 1)
    entry.kernel = drop_device(parts[0]) if parts else ""
    entry.args = parts[1] if len(parts) > 1 else None


def _unquote(arg: str) -> str:
    m = re.fullmatch(r"([\"'])(.*)\1", arg)
    return m.group(2) if m else arg


def _lines(text: str) -> list[str]:
    out = []
    for line in text.split("\n"):
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


# --- GRUB 2 ----------------------------------------------------------------------------------
_MENUENTRY = re.compile(r"^menuentry [\"'](.*?)[\"'] (.*)\{")
_SUBMENU = re.compile(r"^submenu [\"'](.*?)[\"'](.*)")
_ID = re.compile(r"(?:\$menuentry_id_option|--id)[ =]['\"]?([^'\" ]+)")


def parse_grub2(text: str, path: str = "/boot/grub/grub.cfg",
                grubenv: dict[str, str] | None = None) -> BootConfig:
    """GRUB 2's grub.cfg: ``menuentry 'title' ... {`` .. ``}`` entries (nesting one in
    another is an error), ``submenu`` levels flattened into one list, ``function`` blocks
    skipped; in an entry ``linux``/``linux16``, ``initrd``/``initrd16`` and ``set root=``; at
    the top ``set default=`` and ``set timeout=``."""
    cfg = BootConfig(GRUB2, path)
    entry: BootEntry | None = None
    submenus: list[tuple[str, str | None]] = []
    in_function = False
    default_text = "0"
    for line in _lines(text):
        if line.startswith("function"):
            in_function = True
            continue
        if in_function:
            if line.startswith("}"):
                in_function = False
            continue
        m = _MENUENTRY.match(line)
        if m:
            if entry is not None:
                raise ConfigSyntaxError("syntax error: cannot nest menuentry")
            ident = _ID.search(m.group(2))
            entry = BootEntry(m.group(1).strip(), ident=ident.group(1) if ident else None,
                              parents=tuple(submenus))
            continue
        if line.startswith("submenu"):
            sm = _SUBMENU.match(line)
            ident = _ID.search(sm.group(2)) if sm else None
            submenus.append((sm.group(1) if sm else "", ident.group(1) if ident else None))
            continue
        if line.startswith("}"):
            if entry is None:
                if not submenus:
                    raise ConfigSyntaxError("syntax error: closing brace without menuentry")
                submenus.pop()
                continue
            cfg.entries.append(entry)
            entry = None
            continue
        com, arg = command(line)
        if com == "set":
            parts = grub_split(arg, 1)
            com, arg = "set:" + parts[0], _unquote(parts[1].strip()) if len(parts) > 1 else ""
        if entry is not None:
            if com in ("linux", "linux16"):
                _kernel_line(entry, arg)
            elif com in ("initrd", "initrd16"):
                entry.initrd = drop_device(arg.split()[0]) if arg.split() else ""
            elif com == "set:root":
                entry.root = arg
            elif com not in ("echo", "insmod", "search") and not com.startswith("set:"):
                cfg.unknown.append(f"Unknown image directive {com}")
            continue
        if com == "set:default":
            default_text = arg
            if arg == "${next_entry}":  # Xen warns as it reads the line
                cfg.warnings.append(SAVED_UNSUPPORTED)
        elif com == "set:timeout":
            cfg.timeout = _integer(arg, cfg.timeout)
        elif com not in ("set:root", "terminal", "insmod", "load_env", "save_env", "search",
                         "if", "fi") and not com.startswith("set:"):
            cfg.unknown.append(f"Unknown directive {com}")
    if entry is not None:
        raise ConfigSyntaxError("syntax error: end of file with open menuentry")
    cfg.default = _grub2_default(cfg, default_text, grubenv)
    return cfg


def _grub2_default(cfg: BootConfig, text: str, grubenv: dict[str, str] | None) -> int:
    """The index ``set default=`` names: ``saved`` and ``${saved_entry}`` through grubenv when
    it has one, else 0 as Xen; ``${next_entry}`` is 0 (GRUB clears it after one boot, which a
    read-only loader cannot do); an integer is that index; anything else is Xen's "Invalid
    value" and 0."""
    if text in ("saved", "${saved_entry}"):
        saved = (grubenv or {}).get("saved_entry", "")
        index = find_entry(cfg.entries, saved) if saved else None
        if index is not None:
            return index
        if text != "saved":
            cfg.warnings.append(SAVED_UNSUPPORTED)
        return 0
    if text == "${next_entry}":
        return 0  # (warned when the line was read)
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        cfg.warnings.append(f"Invalid value {text}, setting default to 0")
        return 0
    return value


def find_entry(entries: list[BootEntry], name: str) -> int | None:
    """The index GRUB would boot for a saved_entry ``name``: a number, or a ``>``-separated
    path whose parts are submenu and entry titles or ids."""
    if name.isdigit():
        return int(name) if int(name) < len(entries) else None
    wanted = name.split(">")
    for i, e in enumerate(entries):
        chain = [*e.parents, (e.title, e.ident)]
        if len(chain) == len(wanted) and all(w in (t, d) for w, (t, d) in zip(wanted, chain)):
            return i
    return None


def parse_grubenv(text: str) -> dict[str, str]:
    """GRUB's environment block (``# GRUB Environment Block``, ``key=value`` lines, ``#``
    padding)."""
    env = {}
    for line in text.split("\n"):
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            env[key] = value
    return env


# --- extlinux --------------------------------------------------------------------------------
def parse_extlinux(text: str, path: str = "/boot/extlinux/extlinux.conf") -> BootConfig:
    """extlinux/isolinux (keywords case-insensitive): ``label`` starts an entry and is its
    title, ``kernel`` (or ``linux``) its kernel, ``append`` its args, from which an ``initrd=``
    word is moved to the initrd (``initrd`` as a keyword too); with kernel ``mboot.c32``,
    ``append`` is Xen --- kernel --- initrd. ``default`` names an entry by label.

    A relative kernel or initrd path is taken in the config file's directory, as syslinux
    does (Xen's pygrub passes it on as it is)."""
    cfg = BootConfig(EXTLINUX, path)
    default_label: str | None = None
    here = posixpath.dirname(path)
    entry: BootEntry | None = None
    for line in _lines(text):
        com, arg = command(line)
        com = com.lower()
        if com == "label":
            entry = BootEntry(arg, root="")
            cfg.entries.append(entry)
            continue
        if entry is None:
            if com == "default":
                default_label = arg
            elif com == "timeout":
                cfg.timeout = _integer(arg, cfg.timeout)
            elif com not in ("serial", "prompt", "display", "f1", "f2"):
                cfg.unknown.append(f"Unknown directive {com}")
            continue
        if com == "append" and entry.kernel is not None and entry.kernel.endswith("mboot.c32"):
            modules = arg.split("---")
            kernel = initrd = None
            if len(modules) == 3:
                _, kernel, initrd = modules
            elif len(modules) == 2:
                kernel, initrd = modules
            if kernel and kernel.strip():
                _kernel_line(entry, kernel.strip())
            if initrd and initrd.strip():
                entry.initrd = initrd.strip()
            continue
        if com == "append":
            words = []
            for word in arg.split(" "):
                if word.lower().startswith("initrd="):
                    entry.initrd = word[len("initrd="):]
                else:
                    words.append(word)
            entry.args = _unquote_args(" ".join(words).strip())
        elif com in ("kernel", "linux"):
            _kernel_line(entry, _unquote_args(arg))
        elif com == "initrd":
            entry.initrd = arg
        elif com not in ("ipappend", "localboot", "menu", "text", "say"):
            cfg.unknown.append(f"Unknown image directive {com}")
    for e in cfg.entries:
        if e.kernel and not e.kernel.startswith("/"):
            e.kernel = posixpath.join(here, e.kernel)
        if e.initrd and not e.initrd.startswith("/"):
            e.initrd = posixpath.join(here, e.initrd)
    cfg.default = next((i for i, e in enumerate(cfg.entries) if e.title == default_label), 0)
    return cfg


def _unquote_args(arg: str) -> str:
    m = re.fullmatch(r'"(.+)"', arg)
    return m.group(1) if m else arg


# --- legacy GRUB -----------------------------------------------------------------------------
def parse_grub(text: str, path: str = "/boot/grub/menu.lst") -> BootConfig:
    """Legacy GRUB's menu.lst: ``title`` (the text after its 6 characters) starts an entry;
    ``root``/``rootnoverify``, ``kernel`` (path and args) and ``initrd`` in it; ``default``
    (``saved`` is 0), ``timeout`` and ``password`` at the top."""
    cfg = BootConfig(GRUB, path)
    entry: BootEntry | None = None
    default_text = "0"
    for line in _lines(text):
        if line.startswith("title"):
            entry = BootEntry(line[6:].strip())
            cfg.entries.append(entry)
            continue
        com, arg = command(line)
        if entry is not None:
            if com in ("root", "rootnoverify"):
                entry.root = arg
            elif com == "kernel":
                _kernel_line(entry, arg)
            elif com == "initrd":
                entry.initrd = drop_device(arg)
            elif com not in ("chainloader", "module"):
                cfg.unknown.append(f"Unknown image directive {com}")
            continue
        if com == "default":
            default_text = arg
        elif com == "timeout":
            cfg.timeout = _integer(arg, cfg.timeout)
        elif com not in ("fallback", "hiddenmenu", "splashimage", "password", "bootp", "color",
                         "device", "dhcp", "hide", "ifconfig", "pager", "partnew", "parttype",
                         "rarp", "serial", "setkey", "terminal", "terminfo", "tftpserver",
                         "unhide"):
            cfg.unknown.append(f"Unknown directive {com}")
    if default_text == "saved":
        cfg.default = 0
    else:
        try:
            cfg.default = max(int(default_text), 0)
        except ValueError:
            cfg.warnings.append(f"Invalid value {default_text}, setting default to 0")
            cfg.default = 0
    return cfg


PARSERS = {GRUB2: parse_grub2, EXTLINUX: parse_extlinux, GRUB: parse_grub}


def parse(kind: str, text: str, path: str, grubenv: dict[str, str] | None = None) -> BootConfig:
    """Parse ``text`` (the file at ``path`` in the guest) with the parser ``kind`` names."""
    if kind == GRUB2:
        return parse_grub2(text, path, grubenv)
    return PARSERS[kind](text, path)


def kind_for(path: str) -> str:
    """The parser a config file's name calls for (for --isconfig); GRUB 2 when none fits,
    which is what Xen's pygrub always uses there."""
    name = posixpath.basename(path).lower()
    if name in ("extlinux.conf", "isolinux.cfg", "syslinux.cfg"):
        return EXTLINUX
    if name in ("menu.lst", "grub.conf"):
        return GRUB
    return GRUB2


def _integer(text: str, default: int) -> int:
    try:
        return int(text)
    except ValueError:
        return default
