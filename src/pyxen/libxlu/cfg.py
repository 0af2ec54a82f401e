"""The xl.cfg file syntax (Xen's libxlu_cfg_l.l / libxlu_cfg_y.y), shared by domain configs
and host.cfg.

``KEY = VALUE`` statements end at a newline or ``;``; ``KEY += VALUE`` appends. A value is a
quoted string (with C escapes), a number token kept as text (decimal, 0x hex, 0 octal), or a
``[...]`` list that may nest, span lines and end with a comma. ``#`` starts a comment. Later
assignments win. This module only turns text into a mapping; what the keys mean is the caller's
(toolstack/config.py for a domain, hypervisor/hostcfg.py for the host).

A file is UTF-8 text: ``decode`` refuses binary files (a NUL byte) and other encodings with one
line naming the file, so no caller meets a UnicodeDecodeError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

Value = Union[str, "list[Value]"]

_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
            '"': '"', "'": "'", "\\": "\\"}
_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r]+) | (?P<comment>\#[^\n]*) | (?P<nl>\n) | (?P<semi>;)
  | (?P<plus_eq>\+=) | (?P<eq>=) | (?P<lbr>\[) | (?P<rbr>\]) | (?P<comma>,)
  | (?P<ident>[a-z][._0-9a-z]*) | (?P<number>[0-9][0-9a-fx]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
""", re.VERBOSE)
_PYTHONISH = set("+-.():")

#: How deep ``[`` lists may nest. Xen's bison parser gives up at YYMAXDEPTH (10000 stack
#: entries, "memory exhausted"); real configs nest at most two deep (vnuma, usbdev), and the
#: recursive descent below must stay far below Python's recursion limit (1000 frames).
MAX_NESTING = 64


class ConfigSyntaxError(ValueError):
    """A config file that does not parse; str() is xl's one-line message with file and line."""

    def __init__(self, source: str, line: int, reason: str) -> None:
        self.source, self.line, self.reason = source, line, reason
        super().__init__(f"{source}:{line}: config parsing error near {reason}")


class ConfigEncodingError(ConfigSyntaxError):
    """A config file that is not UTF-8 text (binary data, or another encoding)."""

    def __init__(self, source: str, line: int, reason: str) -> None:
        self.source, self.line, self.reason = source, line, reason
        ValueError.__init__(self, f"{source}:{line}: {reason}")


@dataclass(frozen=True)
class Setting:
    """One key's final value and the line that set it (for error messages)."""

    value: Value
    line: int


def decode(data: bytes, source: str) -> str:
    """A config file's bytes as text; :raise ConfigEncodingError: a NUL byte or bad UTF-8."""
    nul = data.find(b"\0")
    if nul >= 0:
        raise ConfigEncodingError(source, data.count(b"\n", 0, nul) + 1,
                                  "not a config file: binary data (a NUL byte)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigEncodingError(
            source, data.count(b"\n", 0, err.start) + 1,
            f"not UTF-8 text: byte 0x{data[err.start]:02x} at offset {err.start}") from None


def _printable(text: str) -> str:
    """Text for an error line: control characters escaped, so the message stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _unquote(tok: str) -> str:
    body, out, i = tok[1:-1], [], 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt == "x":
            m = re.match(r"[0-9a-fA-F]{1,2}", body[i + 2:])
            out.append(chr(int(m.group(0), 16)) if m else "x")
            i += 2 + (len(m.group(0)) if m else 0)
        elif nxt in "01234567":
            m = re.match(r"[0-7]{1,3}", body[i + 1:])
            assert m
            out.append(chr(int(m.group(0), 8)))
            i += 1 + len(m.group(0))
        else:
            out.append(nxt)
            i += 2
    return "".join(out)


def _tokens(text: str, source: str) -> list[tuple[str, str, int]]:
    toks, pos, line = [], 0, 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            ch = text[pos]
            hint = " (this looks like Python code; arbitrary Python is no longer supported)" \
                if ch in _PYTHONISH else ""
            near = _printable(text[pos:pos + 10].splitlines()[0])
            raise ConfigSyntaxError(source, line, f"'{near}'{hint}")
        kind = m.lastgroup or ""
        if kind == "nl":
            toks.append(("end", "\n", line))
            line += 1
        elif kind == "semi":
            toks.append(("end", ";", line))
        elif kind not in ("ws", "comment"):
            toks.append((kind, m.group(0), line))
        pos = m.end()
    toks.append(("end", "", line))
    return toks


def parse(text: str, source: str = "<config>") -> dict[str, Setting]:
    """Parse xl.cfg text into {key: Setting}; raise ConfigSyntaxError on bad syntax."""
    toks = _tokens(text, source)
    result: dict[str, Setting] = {}
    i = 0

    def value(j: int, depth: int = 0) -> tuple[Value, int]:
        kind, tok, line = toks[j]
        if kind == "string":
            return _unquote(tok), j + 1
        if kind == "number":
            return tok, j + 1
        if kind == "lbr":
            if depth >= MAX_NESTING:
                raise ConfigSyntaxError(source, line, f"'[': lists nested deeper than {MAX_NESTING}")
            items: list[Value] = []
            j += 1
            while True:
                while toks[j][0] == "end" and toks[j][1] == "\n":
                    j += 1
                if toks[j][0] == "rbr":
                    return items, j + 1
                item, j = value(j, depth + 1)
                items.append(item)
                while toks[j][0] == "end" and toks[j][1] == "\n":
                    j += 1
                if toks[j][0] == "comma":
                    j += 1
                elif toks[j][0] != "rbr":
                    raise ConfigSyntaxError(source, toks[j][2], f"'{_printable(toks[j][1])}'")
        raise ConfigSyntaxError(source, line, f"'{_printable(tok)}'" if tok.strip() else "end of line")

    while i < len(toks):
        kind, tok, line = toks[i]
        if kind == "end":
            i += 1
            continue
        if kind != "ident":
            raise ConfigSyntaxError(source, line, f"'{_printable(tok)}'")
        key = tok
        op = toks[i + 1]
        if op[0] not in ("eq", "plus_eq"):
            raise ConfigSyntaxError(source, op[2], f"'{_printable(op[1])}'" if op[1].strip() else "end of line")
        val, i = value(i + 2)
        if toks[i][0] != "end":
            raise ConfigSyntaxError(source, toks[i][2], f"'{_printable(toks[i][1])}'")
        if op[0] == "plus_eq" and key in result:
            old = result[key].value
            if isinstance(old, list) and isinstance(val, list):
                val = old + val
            elif isinstance(old, str) and isinstance(val, str):
                val = old + val
            else:
                raise ConfigSyntaxError(source, line, f"'+=' on {key}: values of different kinds")
        result[key] = Setting(val, line)
    return result


def parse_number(text: str) -> int:
    """A number as strtol(base 0) reads it: decimal, 0x hex, 0-prefixed octal."""
    if re.fullmatch(r"0[xX][0-9a-fA-F]+", text):
        return int(text, 16)
    if re.fullmatch(r"0[0-7]+", text):
        return int(text, 8)
    if re.fullmatch(r"[1-9][0-9]*|0", text):
        return int(text, 10)
    raise ValueError(text)
