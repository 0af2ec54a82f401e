"""The xl.cfg file syntax exactly as Xen's libxlu reads it (tools/libs/util/libxlu_cfg_l.l,
libxlu_cfg_y.y, libxlu_cfg.c), shared by domain configs and host.cfg.

``KEY = VALUE`` statements end at a newline or ``;``; ``KEY += VALUE`` appends. A value is a
quoted string, a number token kept as text, or a ``[...]`` list that may nest, span lines and end
with a comma. ``#`` starts a comment that runs to the newline. Later assignments win. This module
turns text into settings and reads them back with libxlu's typed getters (``Config``); what the
keys mean is the caller's (toolstack/config.py for a domain, hypervisor/hostcfg.py for the host).

Why it is written as it is: xl's behaviour on odd input is part of its interface (a CRLF file, a
final comment without a newline, a ``\\x41`` escape, an error's line number). So the lexer follows
the flex rules one by one (longest match, first rule on a tie, the ``lexerr`` state), the parser
runs the LALR tables bison 3.3.2 generated from libxlu_cfg_y.y (Xen ships them as
libxlu_cfg_y.c) with bison's own error recovery and verbose messages, and ``_dequote`` is
xlu__cfgl_dequote with its quirks kept (docs/xl-cfg.md lists them). Every report line is built
from libxlu's format strings.

A file is UTF-8 text: ``decode`` refuses binary files (a NUL byte) and other encodings with one
line naming the file, so no caller meets a UnicodeDecodeError (Xen reads bytes; this is pyxen's).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterator, Union

Value = Union[str, "list[Value]"]

#: XLU_OP_ASSIGNMENT / XLU_OP_ADDITION, as stored with each setting.
ASSIGN, ADD = "=", "+="
#: strerror(EINVAL), what xl prints after "Failed to parse config: ".
EINVAL_TEXT = "Invalid argument"
#: The exit status of ``xl create`` on a config that does not parse (xl_parse.c: exit(1)).
PARSE_FAILURE_EXIT = 1

PYTHON_WARNING = (
    "warning: Config file looks like it contains Python code.",
    "warning:  Arbitrary Python is no longer supported.",
    "warning:  See https://wiki.xen.org/wiki/PythonInXlConfig",
)


class ConfigSyntaxError(ValueError):
    """A config file that does not parse.

    ``messages`` are libxlu's report lines, in order, exactly as Xen prints them (xl prints them
    on stderr, then ``Failed to parse config: Invalid argument``). str() is the first of them
    with control characters escaped, so it stays one printable line."""

    def __init__(self, source: str, line: int, reason: str,
                 messages: tuple[str, ...] = ()) -> None:
        self.source, self.line, self.reason = source, line, reason
        first = f"{source}:{line}: config parsing error near {reason}"
        self.messages = messages or (first,)
        super().__init__(_printable(self.messages[0]))

    def xl_report(self) -> str:
        """What ``xl create`` prints on stderr before exiting with PARSE_FAILURE_EXIT: every
        report line (control characters escaped) and xl_parse.c's closing line."""
        return "\n".join([*(_printable(m) for m in self.messages),
                          f"Failed to parse config: {EINVAL_TEXT}"])


class ConfigEncodingError(ConfigSyntaxError):
    """A config file that is not UTF-8 text (binary data, or another encoding)."""

    def __init__(self, source: str, line: int, reason: str) -> None:
        self.source, self.line, self.reason = source, line, reason
        self.messages = (f"{source}:{line}: {reason}",)
        ValueError.__init__(self, self.messages[0])

    def xl_report(self) -> str:
        """pyxen's own refusal: one line (Xen would hand the bytes to its lexer)."""
        return self.messages[0]


@dataclass(frozen=True)
class Setting:
    """One key's final value, the line its value starts on, and how it was set (= or +=)."""

    value: Value
    line: int
    op: str = ASSIGN


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
    """Text for a one-line message: control characters escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


# ---- C library helpers ------------------------------------------------------------------------
_C_SPACE = " \t\n\v\f\r"
LONG_MAX, ULONG_MAX = (1 << 63) - 1, (1 << 64) - 1


def _strto(text: str, base: int) -> tuple[bool, int | None, int]:
    """The scan shared by strtoul and strtol: (negative?, magnitude, characters consumed).

    Leading white space and one sign are accepted; base 16 (and 0) take a ``0x`` prefix and
    base 0 reads a leading 0 as octal. No digits: (False, None, 0)."""
    i = 0
    while i < len(text) and text[i] in _C_SPACE:
        i += 1
    neg = text[i:i + 1] == "-"
    if text[i:i + 1] in ("+", "-"):
        i += 1
    if base in (0, 16) and text[i:i + 2] in ("0x", "0X") \
            and text[i + 2:i + 3] and text[i + 2] in "0123456789abcdefABCDEF":
        i += 2
        base = 16
    elif base == 0:
        base = 8 if text[i:i + 1] == "0" else 10
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"[:base]
    start = i
    while i < len(text) and text[i].lower() in digits:
        i += 1
    if i == start:
        return False, None, 0
    return neg, int(text[start:i], base), i


def strtoul_prefix(text: str, base: int) -> tuple[int | None, int]:
    """C strtoul on a 64-bit unsigned long: (value, characters consumed), (None, 0) without
    digits. Too large gives ULONG_MAX; a negative number wraps as in C."""
    neg, value, used = _strto(text, base)
    if value is None:
        return None, 0
    if value > ULONG_MAX:
        return ULONG_MAX, used
    return ((-value) % (ULONG_MAX + 1) if neg else value), used


def strtol(text: str, base: int = 0) -> tuple[int | None, int, bool]:
    """C strtol on a 64-bit long: (value, characters consumed, ERANGE?); None without digits."""
    neg, value, used = _strto(text, base)
    if value is None:
        return None, 0, False
    value = -value if neg else value
    if value > LONG_MAX:
        return LONG_MAX, used, True
    if value < -LONG_MAX - 1:
        return -LONG_MAX - 1, used, True
    return value, used, False


def atoi(text: str) -> int:
    """C atoi (strtol base 10, no end pointer): the leading number, 0 when there is none."""
    value = strtol(text, 10)[0]
    return value if value is not None else 0


def parse_number(text: str) -> int:
    """A non-negative number token as xl.cfg writes them: decimal, 0x hex, 0-prefixed octal
    (no blanks, no sign). For host.cfg's settings; domain keys go through ``Config.get_long``,
    which is strtol's whole range."""
    if re.fullmatch(r"0[xX][0-9a-fA-F]+", text):
        return int(text, 16)
    if re.fullmatch(r"0[0-7]+", text):
        return int(text, 8)
    if re.fullmatch(r"[1-9][0-9]*|0", text):
        return int(text, 10)
    raise ValueError(text)


# ---- the lexer (libxlu_cfg_l.l) ---------------------------------------------------------------
# Token numbers as bison knows them (libxlu_cfg_y.c's yytranslate, already translated).
T_EOF, T_ERROR, T_IDENT, T_STRING, T_NUMBER, T_NEWLINE, T_ADD = 0, 1, 3, 4, 5, 6, 7
T_EQ, T_SEMI, T_LBR, T_RBR, T_COMMA = 8, 9, 10, 11, 12
_PUNCT = {",": T_COMMA, "[": T_LBR, "]": T_RBR, "=": T_EQ, ";": T_SEMI}

_IDENT = re.compile(r"[a-z][._0-9a-z]*")
_NUMBER = re.compile(r"[0-9][0-9a-fx]*")
_STRING = re.compile(r"""'(?:[^'\\\n]|\\[^\n])*'|"(?:[^"\\\n]|\\[^\n])*\"""")
_COMMENT_NL = re.compile(r"#[^\n]*\n")
_LEXERR_WORD = re.compile(r"[^ \t\n]*")
#: ``[+-.():]`` in flex: the range + to . is + , - . but the comma's own rule comes first.
_PYTHONISH = set("+-.():")


@dataclass
class _Context:
    """CfgParseContext: the error state shared by lexer and parser, and the report lines."""

    source: str
    report: list[str] = field(default_factory=list)
    err: bool = False
    lexerrlineno: int = -1
    likely_python: bool = False
    yytext: str = ""
    yylineno: int = 1
    yylloc: int = 1

    def yyerror(self, lineno: int, msg: str) -> None:
        """xlu__cfg_yyerror: one report line naming the text flex matched last."""
        if lineno <= self.lexerrlineno:
            return
        text, newline = self.yytext, ""
        if text.endswith("\n"):
            text = text[:-1]
            lineno -= 1
            if not text:
                newline = "<newline>"
        text = text.rstrip(" \t")
        shown = text.split("\0", 1)[0]  # printf's %.*s stops at a NUL (flex's yytext at EOF)
        near = f"`{shown}'" if text else ""
        self.report.append(f"{self.source}:{lineno}: config parsing error near {near}{newline}: {msg}")
        self.err = True

    def lexicalerror(self, msg: str) -> None:
        """xlu__cfgl_lexicalerror: reported at the scanner's line; silences that line."""
        self.yyerror(self.yylineno, msg)
        self.lexerrlineno = self.yylineno


def _numeric_escape(ctx: _Context, body: str, p: int, minlen: int, maxlen: int, base: int,
                    basetext: str) -> int | None:
    """dequote's NUMERIC_CHAR: checks and skips digits but stores no character (as in Xen)."""
    _, used = strtoul_prefix(body[p:p + maxlen], base)
    if used <= minlen:
        ctx.lexicalerror(f"invalid digit after backslash {basetext}numerical character escape"
                         " in quoted string")
        return None
    return p + used


_SIMPLE_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "a": "\a", "b": "\b", "f": "\f", "n": "\n",
                   "r": "\r", "t": "\t", "v": "\v"}


def _dequote(ctx: _Context, token: str) -> str:
    """xlu__cfgl_dequote. Its quirks are Xen's: ``\\x`` always fails (it skips one character
    too many and then wants more than two hex digits in two); ``\\N`` with N in 0-7 needs two or
    three more decimal digits after it, and the escape then vanishes (no character is stored);
    any other unknown escape fails. After the file's first error nothing more is dequoted."""
    if ctx.err:
        return ""
    body = token[1:]  # strncpy may read the closing quote; digits never include it
    end = len(token) - 2
    out: list[str] = []
    p = 0
    while p < end:
        c = body[p]
        p += 1
        if c != "\\":
            out.append(c)
            continue
        nc = body[p]
        p += 1
        if nc in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[nc])
        elif nc == "x":
            q = _numeric_escape(ctx, body, p + 1, 2, 2, 16, "hex")
            if q is None:
                break
            p = q
        elif "0" <= nc <= "7":
            q = _numeric_escape(ctx, body, p, 1, 3, 10, "octal")
            if q is None:
                break
            p = q
        else:
            ctx.lexicalerror("invalid character after backlash in quoted string")
            break
    return "".join(out)


def _lex(text: str, ctx: _Context) -> Iterator[tuple[int, str]]:
    """The flex scanner: yields (token, semantic value), keeping ctx.yytext/yylineno/yylloc
    as flex and the GOT macro leave them."""
    pos, n = 0, len(text)
    while pos < n:
        ch = text[pos]
        if ch in " \t":
            pos += 1
            continue
        m = _IDENT.match(text, pos) or _NUMBER.match(text, pos)
        if m:
            ctx.yytext, ctx.yylloc = m.group(0), ctx.yylineno
            pos = m.end()
            yield (T_IDENT if ch >= "a" else T_NUMBER), m.group(0)
            continue
        if ch == "+" and text.startswith("+=", pos):
            ctx.yytext, ctx.yylloc = "+=", ctx.yylineno
            pos += 2
            yield T_ADD, "+="
            continue
        if ch in _PUNCT:
            ctx.yytext, ctx.yylloc = ch, ctx.yylineno
            pos += 1
            yield _PUNCT[ch], ch
            continue
        m = _COMMENT_NL.match(text, pos) if ch == "#" else None
        if ch == "\n" or m:
            ctx.yytext = m.group(0) if m else "\n"
            pos += len(ctx.yytext)
            ctx.yylineno += 1
            ctx.yylloc = ctx.yylineno - 1
            yield T_NEWLINE, ""
            continue
        m = _STRING.match(text, pos) if ch in "'\"" else None
        if m:
            ctx.yytext = m.group(0)
            pos = m.end()
            value = _dequote(ctx, m.group(0))
            ctx.yylloc = ctx.yylineno
            yield T_STRING, value
            continue
        # `.` (or the Python-looking characters): the lexerr state, with yymore
        if ch in _PYTHONISH:
            ctx.likely_python = True
        pos += 1
        if pos >= n:
            # flex meets EOF in the lexerr state: nothing is reported, yytext keeps the char
            ctx.yytext = ch
            return
        nxt = text[pos]
        if nxt == "\n":
            ctx.yytext = ch + "\n"
            pos += 1
            ctx.yylineno += 1
            ctx.lexicalerror("lexical error")
            ctx.yylloc = ctx.yylineno
            yield T_NEWLINE, ""
            continue
        if nxt in " \t":
            ctx.yytext = ch + nxt
            pos += 1
        else:
            m = _LEXERR_WORD.match(text, pos)
            assert m
            ctx.yytext = ch + m.group(0)
            pos = m.end()
        ctx.lexicalerror("lexical error")
    ctx.yytext = "\0"  # flex's yytext at end of input: one NUL character
    return


# ---- the parser (libxlu_cfg_y.c, bison 3.3.2 tables) ------------------------------------------
_YYFINAL, _YYLAST, _YYNTOKENS, _YYPACT_NINF, _YYMAXDEPTH = 3, 27, 13, -18, 10000
_YYTNAME = ("$end", "error", "$undefined", "IDENT", "STRING", "NUMBER", "NEWLINE", '"+="',
            "'='", "';'", "'['", "']'", "','")
_YYPACT = (-18, 5, 1, -18, -3, 14, -18, -18, -18, 3, -18, -18, 10, 10, -18, -18, -18, -18,
           -18, -18, -18, 13, -18, -18, 15, 12, 19, -18, -18, 13, -18, 19)
_YYDEFACT = (4, 0, 0, 1, 0, 0, 11, 12, 5, 3, 7, 8, 0, 0, 6, 15, 16, 22, 10, 13, 9, 17, 23, 22,
             0, 18, 20, 14, 22, 19, 22, 21)
_YYPGOTO = (-18, -18, -18, -18, -18, 18, -13, -18, -18, -18, -17)
_YYDEFGOTO = (-1, 1, 2, 8, 9, 10, 18, 19, 24, 25, 21)
_YYTABLE = (20, -2, 4, 11, 5, 3, 26, 6, 23, 6, 7, 29, 7, 31, 15, 16, 30, 15, 16, 22, 17, 12,
            13, 17, 28, 22, 27, 14)
_YYCHECK = (13, 0, 1, 6, 3, 0, 23, 6, 21, 6, 9, 28, 9, 30, 4, 5, 29, 4, 5, 6, 10, 7, 8, 10,
            12, 6, 11, 9)
_YYR1 = (0, 13, 14, 14, 15, 15, 16, 16, 16, 17, 17, 18, 18, 19, 19, 20, 20, 21, 21, 21, 22, 22,
         23, 23)
_YYR2 = (0, 2, 1, 2, 0, 2, 2, 1, 2, 3, 3, 1, 1, 1, 4, 1, 1, 0, 1, 3, 2, 5, 0, 2)


def _tname(sym: int) -> str:
    """yytnamerr: a double-quoted name loses its quotes."""
    name = _YYTNAME[sym]
    return name[1:-1] if name.startswith('"') else name


def _syntax_error(state: int, token: int) -> str:
    """yysyntax_error: bison's verbose message, at most four expected tokens."""
    args = [_tname(token)]
    yyn = _YYPACT[state]
    if yyn != _YYPACT_NINF:
        for x in range(-yyn if yyn < 0 else 0, min(_YYLAST - yyn + 1, _YYNTOKENS)):
            if _YYCHECK[x + yyn] == x and x != T_ERROR:
                if len(args) == 5:
                    args = args[:1]
                    break
                args.append(_tname(x))
    if len(args) == 1:
        return f"syntax error, unexpected {args[0]}"
    return f"syntax error, unexpected {args[0]}, expecting " + " or ".join(args[1:])


class _Store:
    """The settings: Xen keeps every one, newest first, and reads the newest; this keeps that one."""

    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx
        self.settings: dict[str, Setting] = {}

    def set(self, name: str, op: str, value: Value | None, line: int) -> None:
        """xlu__cfg_set_store, with xlu__cfg_concat_vals for ``+=``."""
        if self.ctx.err or value is None:
            return
        prev = self.settings.get(name)
        if op == ADD and prev is not None:
            if isinstance(prev.value, list) != isinstance(value, list):
                self.ctx.lexicalerror("can't add [list] to \"string\" or vice versa")
                return
            value = prev.value + value  # type: ignore[operator]
        self.settings[name] = Setting(value, line, op)


def _parse(text: str, ctx: _Context) -> dict[str, Setting]:
    """yyparse over the tables, with the grammar's actions and bison's error recovery."""
    tokens = _lex(text, ctx)
    store = _Store(ctx)
    states: list[int] = [0]
    values: list[object] = [None]
    lines: list[int] = [1]
    yychar, yylval = -2, ""  # -2: YYEMPTY
    errstatus = 0

    def exhausted() -> dict[str, Setting]:
        ctx.yyerror(ctx.yylloc, "memory exhausted")
        return store.settings

    while True:
        state = states[-1]
        if len(states) >= _YYMAXDEPTH:
            return exhausted()
        if state == _YYFINAL:
            return store.settings
        yyn = _YYPACT[state]
        action: int | None = None  # >0: shift to that state; <=0: reduce by rule -action
        if yyn != _YYPACT_NINF:
            if yychar == -2:
                yychar, yylval = next(tokens, (T_EOF, ""))
            idx = yyn + yychar
            if 0 <= idx <= _YYLAST and _YYCHECK[idx] == yychar:
                action = _YYTABLE[idx]
        if action is None:
            rule = _YYDEFACT[state]
            if rule == 0:
                # yyerrlab
                if not errstatus:
                    ctx.yyerror(ctx.yylloc, _syntax_error(state, yychar) if yychar != -2
                                else "syntax error")
                if errstatus == 3:
                    if yychar == T_EOF:
                        return store.settings  # YYABORT
                    yychar = -2
                errstatus = 3
                while True:  # yyerrlab1: pop to a state that shifts `error'
                    yyn = _YYPACT[states[-1]]
                    if yyn != _YYPACT_NINF:
                        idx = yyn + T_ERROR
                        if 0 <= idx <= _YYLAST and _YYCHECK[idx] == T_ERROR and _YYTABLE[idx] > 0:
                            break
                    if len(states) == 1:
                        return store.settings  # YYABORT
                    states.pop(), values.pop(), lines.pop()
                states.append(_YYTABLE[idx])
                values.append(None)
                lines.append(ctx.yylloc)
                continue
            action = -rule
        if action > 0:
            if errstatus:
                errstatus -= 1
            states.append(action)
            values.append(yylval)
            lines.append(ctx.yylloc)
            yychar = -2
            continue
        rule = -action
        n = _YYR2[rule]
        rhs, rhs_lines = values[len(values) - n:], lines[len(lines) - n:]
        first_line = rhs_lines[0] if n else lines[-1]
        result = _reduce(rule, rhs, rhs_lines, store)
        del states[len(states) - n:], values[len(values) - n:], lines[len(lines) - n:]
        lhs = _YYR1[rule] - _YYNTOKENS
        goto = _YYPGOTO[lhs] + states[-1]
        states.append(_YYTABLE[goto] if 0 <= goto <= _YYLAST and _YYCHECK[goto] == states[-1]
                      else _YYDEFGOTO[lhs])
        values.append(result)
        lines.append(first_line)


def _reduce(rule: int, rhs: list[object], rhs_lines: list[int], store: _Store) -> object:
    """The grammar's semantic actions (libxlu_cfg_y.y), by bison's rule number."""
    if rule in (9, 10):  # assignment: IDENT '=' value | IDENT "+=" value
        store.set(str(rhs[0]), ASSIGN if rule == 9 else ADD, rhs[2], rhs_lines[2])  # type: ignore[arg-type]
        return None
    if rule == 13:  # value: atom
        return None if store.ctx.err else rhs[0]
    if rule == 14:  # value: '[' nlok valuelist ']'
        return rhs[2]
    if rule in (15, 16):  # atom: STRING | NUMBER
        return rhs[0]
    if rule == 17:  # valuelist: empty
        return None if store.ctx.err else []
    if rule in (18, 19):  # valuelist: values | values ',' nlok
        return rhs[0]
    if rule == 20:  # values: value nlok
        return None if store.ctx.err or rhs[0] is None else [rhs[0]]
    if rule == 21:  # values: values ',' nlok value nlok
        if isinstance(rhs[0], list) and rhs[3] is not None and not store.ctx.err:
            rhs[0].append(rhs[3])
        return rhs[0]
    return None


def parse(text: str, source: str = "<config>") -> dict[str, Setting]:
    """xlu_cfg_readdata: xl.cfg text into {key: Setting} (the last setting of each key).

    :raise ConfigSyntaxError: with every line libxlu would report (``.messages``), including
        the three "looks like Python" warnings when a Python-only character was seen."""
    ctx = _Context(source)
    settings = _parse(text, ctx)
    if not ctx.err:
        return settings
    report = list(ctx.report)
    if ctx.likely_python:
        report.extend(PYTHON_WARNING)
    first = next((r for r in report if r.startswith(f"{source}:")), report[0] if report else "")
    m = re.match(re.escape(source) + r":(-?\d+): config parsing error near (.*)$", first)
    line, reason = (int(m.group(1)), m.group(2)) if m else (0, first)
    raise ConfigSyntaxError(source, line, reason, tuple(report))


# ---- the typed getters (libxlu_cfg.c xlu_cfg_get_*) -------------------------------------------
ESRCH, EINVAL, ERANGE = "ESRCH", "EINVAL", "ERANGE"


class Config:
    """Parsed settings read as xl reads them: each getter returns (error, value) like the C
    functions' return code, and appends libxlu's warning to ``warnings`` unless ``dont_warn``.

    xl decides per key what a failed get means (xl_parse.c): usually the default is used, and
    for a few keys xl exits; the caller keeps that decision."""

    def __init__(self, settings: dict[str, Setting], source: str) -> None:
        self.settings, self.source = settings, source
        self.warnings: list[str] = []

    def _warn(self, line: int, text: str, dont_warn: bool) -> None:
        if not dont_warn:
            self.warnings.append(f"{self.source}:{line}: warning: {text}")

    def find_atom(self, name: str, dont_warn: bool = False) -> tuple[str | None, Setting | None]:
        """find_atom: the setting if it is a single value."""
        s = self.settings.get(name)
        if s is None:
            return ESRCH, None
        if isinstance(s.value, list):
            self._warn(s.line, f"parameter `{name}' is a list but should be a single value", dont_warn)
            return EINVAL, None
        return None, s

    def get_string(self, name: str, dont_warn: bool = False) -> tuple[str | None, str | None]:
        """xlu_cfg_get_string."""
        e, s = self.find_atom(name, dont_warn)
        return (e, None) if s is None else (None, str(s.value))

    def get_bounded_long(self, name: str, lo: int, hi: int,
                         dont_warn: bool = False) -> tuple[str | None, int | None]:
        """xlu_cfg_get_bounded_long: strtol base 0 over the whole value; ``+=`` refused."""
        e, s = self.find_atom(name, dont_warn)
        if s is None:
            return e, None
        text = str(s.value)
        if s.op == ADD:
            self._warn(s.line, f"can't use += with numbers for parameter `{name}'", dont_warn)
            return EINVAL, None
        value, used, erange = strtol(text, 0)
        if erange:
            self._warn(s.line, f"parameter `{name}' could not be parsed as a number: "
                       "Numerical result out of range", dont_warn)
            return ERANGE, None
        if value is None or used != len(text):
            self._warn(s.line, f"parameter `{name}' is not a valid number", dont_warn)
            return EINVAL, None
        if value < lo:
            self._warn(s.line, f"value `{value}' is smaller than minimum bound '{lo}'", dont_warn)
            return EINVAL, None
        if value > hi:
            self._warn(s.line, f"value `{value}' is greater than maximum bound '{hi}'", dont_warn)
            return EINVAL, None
        return None, value

    def get_long(self, name: str, dont_warn: bool = False) -> tuple[str | None, int | None]:
        """xlu_cfg_get_long (bounds of a 64-bit long)."""
        return self.get_bounded_long(name, -LONG_MAX - 1, LONG_MAX, dont_warn)

    def get_defbool(self, name: str, dont_warn: bool = False) -> tuple[str | None, bool | None]:
        """xlu_cfg_get_defbool: any non-zero number is true."""
        e, v = self.get_long(name, dont_warn)
        return (e, None) if v is None else (None, v != 0)

    def get_list(self, name: str, dont_warn: bool = False) -> tuple[str | None, list[Value] | None]:
        """xlu_cfg_get_list."""
        s = self.settings.get(name)
        if s is None:
            return ESRCH, None
        if not isinstance(s.value, list):
            self._warn(s.line, f"parameter `{name}' is a single value but should be a list", dont_warn)
            return EINVAL, None
        return None, s.value

    def get_string_items(self, name: str, dont_warn: bool = False) -> tuple[str | None, list[str]]:
        """xl's loop ``while ((buf = xlu_cfg_get_listitem(list, n)) != NULL)``: the list's
        items up to the first one that is not a string (a nested list ends it, silently)."""
        e, items = self.get_list(name, dont_warn)
        out: list[str] = []
        for item in items or ():
            if not isinstance(item, str):
                break
            out.append(item)
        return e, out


_QUOTE_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n"}


def quote(value: str) -> str:
    """``value`` as a double-quoted xl.cfg string that ``parse`` reads back unchanged.

    Only the backslash, the double quote and the newline need an escape (the lexer's string
    rule refuses them bare); NUL cannot be written at all (Xen's strings are C strings)."""
    if "\0" in value:
        raise ValueError("an xl.cfg string cannot hold a NUL character")
    return '"' + "".join(_QUOTE_ESCAPES.get(c, c) for c in value) + '"'
