"""A domain argument that is a domid (libxl_domain_qualifier_to_domid's test).

xl reads an argument made only of the digits 0-9 as a domid and anything else as a name
(CTYPE(isdigit) in the C locale, then strtoul). Python's ``str.isdigit()`` and ``int()`` also take
other scripts' digits (``'١٢'``, ``'２'``) and ``int()`` takes spaces and underscores; this is the
one place pyxen decides, so ``xl list ١٢`` looks for a domain *named* ``١٢`` as xl would.
"""

from __future__ import annotations

import re

_DOMID = re.compile(r"[0-9]+")


def is_domid(text: str) -> bool:
    """True when ``text`` is all ASCII digits (and not empty): xl reads it as a domid."""
    return _DOMID.fullmatch(text) is not None


def parse_domid(text: str) -> int | None:
    """The domid ``text`` names when it is all ASCII digits, else None (a name, for xl)."""
    return int(text, 10) if is_domid(text) else None
