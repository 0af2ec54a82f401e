"""xapi's database filter language (ocaml/database/db_filter_lex.mll, db_filter_parse.mly),
pure: the expression of the hidden messages ``<class>.get_all_records_where`` and
``get_all_where``, e.g. ``field "power_state" = "Running" and not field "is_a_template" = "true"``.

Grammar as the yacc file has it: ``value = value``, ``expr and expr``, ``expr or expr``
(``and`` and ``or`` left-associative at one precedence), ``not expr`` (tighter), ``true``,
``false``, parentheses; a value is a ``"literal"`` or ``field "name"``. Fields compare as the
strings xapi's database holds (``true``/``false`` for bools, decimal ints).
"""

from __future__ import annotations

import re
from typing import Any, Callable

Predicate = Callable[[dict[str, Any]], bool]

_TOKEN = re.compile(r'\s*(?:(=)|(\()|(\))|"([^"]*)"|(true|false|field|and|or|not))')


class FilterError(ValueError):
    """The expression does not parse (xapi: Db_filter.Expression_error)."""


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m:
            raise FilterError(f"cannot read the filter at {text[pos:]!r}")
        pos = m.end()
        eq, lp, rp, lit, word = m.groups()
        out.append(("=", "") if eq else ("(", "") if lp else (")", "") if rp
                   else ("lit", lit) if lit is not None else (word, ""))
    return out


def as_db_string(v: Any) -> str:
    """A field value as xapi's database stores it."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, dict)):
        return repr(v)
    return str(v)


def parse(text: str) -> Predicate:
    toks = _tokens(text)
    pos = 0

    def peek() -> str:
        return toks[pos][0] if pos < len(toks) else "eof"

    def take(kind: str) -> str:
        nonlocal pos
        if peek() != kind:
            raise FilterError(f"expected {kind}, found {peek()} in {text!r}")
        pos += 1
        return toks[pos - 1][1]

    def value() -> Callable[[dict[str, Any]], str]:
        if peek() == "field":
            take("field")
            name = take("lit")
            return lambda rec: as_db_string(rec.get(name, ""))
        lit = take("lit")
        return lambda rec: lit

    def unary() -> Predicate:
        k = peek()
        if k == "not":
            take("not")
            inner = unary()
            return lambda rec: not inner(rec)
        if k in ("true", "false"):
            take(k)
            return (lambda rec: True) if k == "true" else (lambda rec: False)
        if k == "(":
            take("(")
            inner = expr()
            take(")")
            return inner
        left, _, right = value(), take("="), value()
        return lambda rec: left(rec) == right(rec)

    def expr() -> Predicate:
        left = unary()
        while peek() in ("and", "or"):
            op = peek()
            take(op)
            right = unary()
            left = (lambda a, b: lambda rec: a(rec) and b(rec))(left, right) if op == "and" \
                else (lambda a, b: lambda rec: a(rec) or b(rec))(left, right)
        return left

    result = expr()
    if pos != len(toks):
        raise FilterError(f"unexpected {peek()} in {text!r}")
    return result
