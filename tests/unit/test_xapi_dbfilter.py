"""xapi's filter language (db_filter_parse.mly) for get_all_records_where / get_all_where."""

from __future__ import annotations

import pytest

from pyxen.xapi.dbfilter import FilterError, parse

REC = {"power_state": "Running", "is_a_template": False, "domid": 3, "name_label": "a b"}


@pytest.mark.parametrize("expr, want", [
    ('field "power_state" = "Running"', True),
    ('field "power_state" = "Halted"', False),
    ('"Running" = field "power_state"', True),
    ('field "is_a_template" = "false"', True),
    ('field "domid" = "3"', True),
    ('field "name_label" = "a b"', True),
    ('true', True),
    ('false', False),
    ('not field "is_a_template" = "true"', True),
    ('field "domid" = "3" and field "is_a_template" = "true"', False),
    ('field "domid" = "4" or field "is_a_template" = "false"', True),
    ('false and true or true', True),          # left-associative: (false and true) or true
    ('true or true and false', False),         # (true or true) and false
    ('not (true and false)', True),
    ('field "no_such_field" = ""', True),
])
def test_filter(expr: str, want: bool) -> None:
    assert parse(expr)(REC) is want


@pytest.mark.parametrize("expr", ['field power_state = "x"', 'field "a" =', '("x" = "x"', 'and', '"x" "y"',
                                  'field "a" = "b" )'])
def test_bad_filter(expr: str) -> None:
    with pytest.raises(FilterError):
        parse(expr)
