"""xl's disk spec strings exactly as Xen's libxlu reads them (tools/libs/util/libxlu_disk_l.l,
libxlu_disk.c; the grammar is docs/man/xl-disk-configuration.5.pod).

Pure: text in, a frozen ``DiskSpec`` (libxl_device_disk's field names) out. What pyxen does
with a disk (backend choice, xenstore nodes, QEMU) is toolstack/devices.py's.

The spec is scanned as flex scans it: at each position every rule is tried, the longest match
wins and the first rule wins a tie; rules with trailing context (``phy:/.*``) count the context
in their length but consume only the part before the slash. So ``target=`` eats the rest of the
spec, a deprecated prefix (``raw:``, ``phy:``) beats a positional parameter, an unknown
``foo:/...`` prefix is refused while ``hdc:cdrom`` is a positional, and an unknown ``key=value``
is refused near its first character of value (the rule reads one character: ``foo=b``).
Errors are libxlu's report lines; several may be reported for one spec, as in Xen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Sequence

from .cfg import atoi

#: libxl_disk_format / libxl_disk_backend / libxl_disk_specification names (None: UNKNOWN).
FORMATS = {"": "raw", "raw": "raw", "qcow": "qcow", "qcow2": "qcow2", "vhd": "vhd",
           "empty": "empty", "qed": "qed"}
BACKENDS = ("phy", "tap", "qdisk", "standalone")
SPECIFICATIONS = ("xen", "virtio")


class DiskSyntaxError(ValueError):
    """A disk spec libxlu refuses: ``messages`` are its report lines (str(): the first).
    xl exits with EXIT_FAILURE (1) after printing them (parse_disk_config_multistring)."""

    def __init__(self, messages: Sequence[str]) -> None:
        self.messages = tuple(messages)
        super().__init__(self.messages[0])


@dataclass(frozen=True)
class DiskSpec:
    """libxl_device_disk as xlu_disk_parse leaves it. Enums are their libxl names or None
    (UNKNOWN: libxl picks later); defbools are True/False or None (default)."""

    pdev_path: str | None = None
    vdev: str | None = None
    backend: str | None = None
    format: str = "raw"
    script: str | None = None
    removable: bool = False
    readwrite: bool = True
    is_cdrom: bool = False
    direct_io_safe: bool = False
    discard_enable: bool | None = None
    colo_enable: bool | None = None
    colo_host: str | None = None
    colo_port: int = 0
    colo_export: str | None = None
    active_disk: str | None = None
    hidden_disk: str | None = None
    trusted: bool | None = None
    specification: str | None = None
    grant_usage: bool | None = None
    backend_domname: str | None = None


# ---- the scanner rules, in libxlu_disk_l.l's order ---------------------------------------------
# (name, pattern, trailing context or None). Patterns are anchored at the scan position; `.`
# in flex is any character but newline, written [^\n] here.
_REST = r"[^\n]*"
_RULES: list[tuple[str, str, str | None]] = [
    ("ws", r"[ \t\n]+", r"(?:[^ \t\n]" + _REST + r")?"),
    ("format", r"format=[^,]*,?", None),
    ("cdrom", r"cdrom,?", None),
    ("devtype_cdrom", r"devtype=cdrom,?", None),
    ("devtype_disk", r"devtype=disk,?", None),
    ("devtype_bad", r"devtype=[^,]*,?", None),
    ("access", r"access=[^,]*,?", None),
    ("backend", r"backend=[^,]*,?", None),
    ("backendtype", r"backendtype=[^,]*,?", None),
    ("specification", r"specification=[^,]*,?", None),
    ("vdev", r"vdev=[^,]*,?", None),
    ("script", r"script=[^,]*,?", None),
    ("direct_io_safe", r"direct-io-safe,?", None),
    ("discard", r"discard,?", None),
    ("no_discard", r"no-discard,?", None),
    ("colo", r"colo,?", None),
    ("no_colo", r"no-colo,?", None),
    ("colo_host", r"colo-host=[^,]*,?", None),
    ("colo_port", r"colo-port=[^,]*,?", None),
    ("colo_export", r"colo-export=[^,]*,?", None),
    ("active_disk", r"active-disk=[^,]*,?", None),
    ("hidden_disk", r"hidden-disk=[^,]*,?", None),
    ("trusted", r"trusted,?", None),
    ("untrusted", r"untrusted,?", None),
    ("grant_usage_1", r"grant_usage=1,?", None),
    ("grant_usage_0", r"grant_usage=0,?", None),
    ("target", r"target=" + _REST, None),
    ("unknown_param", r"[a-z][-a-z0-9]*=[^,],?", None),
    ("format_prefix", r"(?:raw|qcow2?|vhd):", _REST),
    ("script_prefix", r"(?:iscsi|e?nbd|drbd):", _REST),
    ("ignored_prefix", r"tapdisk:", _REST),
    ("ignored_prefix", r"tap2?:", _REST),
    ("ignored_prefix", r"aio:", _REST),
    ("ignored_prefix", r"ioemu:", _REST),
    ("ignored_prefix", r"file:", _REST),
    ("ignored_prefix", r"phy:", _REST),
    ("unknown_prefix", r"[a-z][a-z0-9]*:", r"(?:[^a-z0-9]" + _REST + r")?"),
    ("positional", r"[^=,]*,|[^=,]+,?", None),
    ("lexerr", r"[^\n]", None),
]


@cache
def _compiled() -> list[tuple[str, re.Pattern[str], re.Pattern[str] | None]]:
    """_RULES compiled, on the first disk spec scanned, not at import: ~2 ms that every
    ``xl create`` paid, with or without a disk."""
    return [(name, re.compile(pat), re.compile(ctx) if ctx is not None else None)
            for name, pat, ctx in _RULES]


def _scan(spec: str, pos: int) -> tuple[str, str]:
    """The rule flex picks at ``pos`` and the text it consumes (yytext)."""
    best: tuple[int, int, str, str] | None = None  # (total length, -order, name, yytext)
    for order, (name, pat, ctx) in enumerate(_compiled()):
        m = pat.match(spec, pos)
        if not m:
            continue
        text = m.group(0)
        total = len(text)
        if ctx is not None:
            c = ctx.match(spec, m.end())
            total += len(c.group(0)) if c else 0
        if best is None or total > best[0]:
            best = (total, -order, name, text)
    assert best is not None  # `lexerr` matches any character but newline; `ws` a newline
    return best[2], best[3]


# ---- the rules' actions --------------------------------------------------------------------------
class _Context:
    """DiskParseContext: the disk being filled in, the error state, the report lines."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.spec = ""
        self.fields: dict[str, object] = {"readwrite": True}
        self.err = False
        self.access_set = False
        self.had_depr_prefix = False
        self.report: list[str] = []
        #: Where the target (pdev_path) was read from: (start, end) in the last spec.
        self.target_span: tuple[int, int] | None = None

    def error(self, erroneous: str | None, message: str) -> None:
        """xlu__disk_err."""
        near = f": near `{erroneous}'" if erroneous is not None else ""
        self.report.append(f"{self.source}: config parsing error in disk specification: "
                           f"{message}{near} in `{self.spec}'")
        self.err = True

    def savestring(self, what: str, key: str, value: str) -> bool:
        """savestring: a second non-empty value is an error (an empty one may be replaced)."""
        old = self.fields.get(key)
        if old:
            self.error(value, f"{what} respecified")
            return False
        self.fields[key] = value
        return True

    def dset(self, key: str, value: str, text: str) -> None:
        """DSET: an enum may be set again only to the same value."""
        old = self.fields.get(key)
        if old is not None and old != value:
            self.error(text, f"{key} respecified")
        else:
            self.fields[key] = value

    def setformat(self, text: str) -> None:
        if text in FORMATS:
            self.dset("format", FORMATS[text], text)
        else:
            self.error(text, "unknown value for format")

    def setaccess(self, text: str) -> None:
        if text in ("r", "ro"):
            self.fields["readwrite"] = False
        elif text in ("rw", "w", ""):
            self.fields["readwrite"] = True
        else:
            self.error(text, "unknown value for access")

    def vdev_and_devtype(self, text: str) -> bool:
        """``<vdev>:<devtype>`` (deprecated): True when the text had a colon."""
        vdev, colon, devtype = text.rpartition(":")
        if not colon:
            return False
        self.savestring("vdev", "vdev", vdev)
        if devtype == "cdrom":
            self.fields["is_cdrom"] = True
        elif devtype == "disk":
            self.fields["is_cdrom"] = False
        else:
            self.error(devtype, "unknown deprecated type")
        return True


def _strip(text: str, delim: str = ",") -> str:
    """STRIP(delim): one trailing delimiter off."""
    return text[:-1] if text.endswith(delim) else text


def _from_equals(text: str) -> str:
    """FROMEQUALS: what follows the first '='."""
    return text.split("=", 1)[1]


_ENUM_KEYS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "backendtype": ("backend", BACKENDS, "unknown value for backendtype"),
    "specification": ("specification", SPECIFICATIONS, "unknown value for specification"),
}
_STRING_KEYS = {"backend": ("backend", "backend_domname"), "vdev": ("vdev", "vdev"),
                "script": ("script", "script"), "colo_host": ("colo-host", "colo_host"),
                "colo_export": ("colo-export", "colo_export"),
                "active_disk": ("active-disk", "active_disk"),
                "hidden_disk": ("hidden-disk", "hidden_disk")}
_FLAGS: dict[str, tuple[str, bool]] = {
    "cdrom": ("is_cdrom", True), "devtype_cdrom": ("is_cdrom", True),
    "devtype_disk": ("is_cdrom", False), "direct_io_safe": ("direct_io_safe", True),
    "discard": ("discard_enable", True), "no_discard": ("discard_enable", False),
    "colo": ("colo_enable", True), "no_colo": ("colo_enable", False),
    "trusted": ("trusted", True), "untrusted": ("trusted", False),
    "grant_usage_1": ("grant_usage", True), "grant_usage_0": ("grant_usage", False),
}


def _positional(ctx: _Context, text: str, start: int) -> bool:
    """The positional rule: target, then format, then vdev, then access. False: stop."""
    f = ctx.fields
    if ctx.err:
        return True  # previous errors may just lead to subsequent ones
    if f.get("pdev_path") is None:
        if ctx.savestring("target", "pdev_path", text):
            ctx.target_span = (start, start + len(text))
    elif not ctx.had_depr_prefix and f.get("format") is None:
        if not f["pdev_path"] and ctx.vdev_and_devtype(text):
            f["format"] = "empty"
        else:
            ctx.setformat(text)
    elif f.get("vdev") is None:
        if not ctx.vdev_and_devtype(text):
            ctx.savestring("vdev", "vdev", text)
    elif not ctx.access_set:
        ctx.access_set = True
        ctx.setaccess(text)
    else:
        ctx.error(text, "too many positional parameters")
        return False
    return True


def _lex(ctx: _Context, spec: str) -> None:
    """xlu__disk_yylex over one spec: runs the rules until the end or a rule's ``return 0``."""
    ctx.spec = spec
    pos = 0
    while pos < len(spec):
        name, text = _scan(spec, pos)
        start = pos
        pos += len(text)
        f = ctx.fields
        if name == "ws":
            continue
        if name == "format":
            ctx.setformat(_from_equals(_strip(text)))
        elif name in _FLAGS:
            key, flag = _FLAGS[name]
            f[key] = flag
        elif name == "devtype_bad":
            ctx.error(text, "unknown value for type")
        elif name == "access":
            ctx.setaccess(_from_equals(_strip(text)))
        elif name in _ENUM_KEYS:
            key, names, message = _ENUM_KEYS[name]
            value = _from_equals(_strip(text))
            if value in names:
                ctx.dset(key, value, value)
            else:
                ctx.error(value, message)
        elif name in _STRING_KEYS:
            what, key = _STRING_KEYS[name]
            ctx.savestring(what, key, _from_equals(_strip(text)))
        elif name == "colo_port":
            value = _from_equals(_strip(text))
            port = atoi(value)
            if port:
                f["colo_port"] = port
            else:
                ctx.error(value, "unknown value for colo_port")
        elif name == "target":
            value = _from_equals(_strip(text))
            if ctx.savestring("target", "pdev_path", value):
                ctx.target_span = (start + len("target="), start + len("target=") + len(value))
        elif name == "unknown_param":
            ctx.error(text, "unknown parameter")
        elif name == "format_prefix":
            ctx.had_depr_prefix = True
            ctx.setformat(_strip(text, ":"))
        elif name == "script_prefix":
            ctx.had_depr_prefix = True
            ctx.savestring("script", "script", "block-" + _strip(text, ":"))
        elif name == "ignored_prefix":
            ctx.had_depr_prefix = True
        elif name == "unknown_prefix":
            ctx.error(text, "unknown deprecated disk prefix")
            return
        elif name == "positional":
            if not _positional(ctx, _strip(text), start):
                return
        else:  # lexerr: yymore, then <LEXERR>.* takes the rest of the line
            if pos == len(spec):
                return  # flex meets the end first: the pending character is dropped
            rest = re.compile(_REST).match(spec, pos)
            assert rest is not None
            ctx.error(text + rest.group(0), "bad disk syntax")
            return


def parse_disk(specs: str | Sequence[str], source: str = "command line") -> DiskSpec:
    """xlu_disk_parse: one disk from one spec (or several, as ``xl block-attach`` passes them).

    ``source`` names the config file in messages (xl uses "command line" outside a file).
    :raise DiskSyntaxError: libxlu's report lines."""
    ctx = _Context(source)
    for spec in ([specs] if isinstance(specs, str) else specs):
        _lex(ctx, spec)
        if ctx.err:
            raise DiskSyntaxError(ctx.report)
    f = ctx.fields
    if f.get("format") is None:
        f["format"] = "raw"
    if f.get("is_cdrom"):
        f["removable"] = True
        f["readwrite"] = False
        if not f.get("pdev_path"):
            f["format"] = "empty"
    if f.get("vdev") is None:
        ctx.error(None, "no vdev specified")
    elif f.get("pdev_path") is None and not f.get("removable"):
        ctx.error(None, "no target specified (and device not removable)")
    if ctx.err:
        raise DiskSyntaxError(ctx.report)
    return DiskSpec(**f)  # type: ignore[arg-type]


def target_span(spec: str) -> tuple[int, int] | None:
    """Where in ``spec`` the target (pdev_path) is written, or None (no target, or a spec
    libxlu refuses). Lets a caller rewrite the target without re-implementing the grammar."""
    ctx = _Context("")
    _lex(ctx, spec)
    return None if ctx.err else ctx.target_span

