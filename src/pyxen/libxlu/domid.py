"""A domain argument that is a domid (libxl_domain_qualifier_to_domid's test).

xl reads an argument made only of the digits 0-9 as a domid and anything else as a name
(CTYPE(isdigit) in the C locale, then strtoul). Python's ``str.isdigit()`` and ``int()`` also take
other scripts' digits (``'١٢'``, ``'２'``) and ``int()`` takes spaces and underscores; this is the
one place pyxen decides, so ``xl list ١٢`` looks for a domain *named* ``١٢`` as xl would.
"""

from __future__ import annotations

import re

_DIGITS = re.compile(r"[0-9]+")


def parse_uint(text: str) -> int | None:
    """``text`` as an unsigned decimal when it is all ASCII digits (and not empty), else None.

    Also the test for any other number xl reads with strtoul (a vCPU, a domid in a permission)."""
    return int(text, 10) if _DIGITS.fullmatch(text) else None


def is_domid(text: str) -> bool:
    """True when xl reads ``text`` as a domid rather than a domain name."""
    return parse_uint(text) is not None
