"""``NamedTuple`` for the modules ``xl list`` imports, without importing ``typing``.

``typing`` (with its ``_typing``, ``warnings`` and the generic aliases it builds at import) was a
twentieth of an ``xl list``, the command scripts and monitors run most (bench/scale.py). The
modules on that path declare their records with this ``NamedTuple`` and take ``TYPE_CHECKING``
from here: to mypy both are typing's own, so the records keep their typed fields; at run time
``NamedTuple`` makes the same class typing's does (``collections.namedtuple`` with the class's
annotated fields, their defaults, and its methods and docstring copied on), except that the
annotations stay the strings ``from __future__ import annotations`` leaves them (typing would
check them; nothing in pyxen reads them at run time).

Modules that import ``typing`` anyway use ``typing.NamedTuple``; this one is only worth its
place where it keeps ``typing`` out of a short-lived process.
"""

from __future__ import annotations

import collections

#: True to mypy (it treats any name TYPE_CHECKING so), False when running.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import NamedTuple as NamedTuple
else:
    #: Attributes a record's class body must not define (typing._prohibited).
    _PROHIBITED = frozenset({"__new__", "__init__", "__slots__", "__getnewargs__", "_fields",
                             "_field_defaults", "_make", "_replace", "_asdict", "_source"})
    #: Names of the class body that are not copied onto the record (typing._special).
    _SPECIAL = frozenset({"__module__", "__name__", "__annotations__"})

    class _RecordMeta(type):
        """Builds the namedtuple a ``class X(NamedTuple)`` body describes (typing.NamedTupleMeta
        without Generic)."""

        def __new__(mcs, typename: str, bases: tuple[type, ...], ns: dict[str, object]) -> type:
            if bases != (_Record,):
                raise TypeError("a NamedTuple record can only inherit from NamedTuple")
            annotations = dict(ns.get("__annotations__", {}))
            fields = list(annotations)
            defaults = [name for name in fields if name in ns]
            if defaults != fields[len(fields) - len(defaults):]:
                raise TypeError(f"{typename}: a field without a default follows one with a default")
            record = collections.namedtuple(typename, fields, defaults=[ns[n] for n in defaults],
                                            module=str(ns["__module__"]))
            record.__annotations__ = annotations
            for key, value in ns.items():
                if key in _PROHIBITED:
                    raise AttributeError(f"Cannot overwrite NamedTuple attribute {key}")
                if key not in _SPECIAL and key not in fields:
                    setattr(record, key, value)
            return record

    _Record = type.__new__(_RecordMeta, "NamedTuple", (), {})

    def NamedTuple(typename: str, fields: object = None) -> type:  # noqa: N802 (typing's name)
        """Only the class form (``class X(NamedTuple): ...``) is supported."""
        raise TypeError("use the class form: class X(NamedTuple): ...")

    NamedTuple.__mro_entries__ = lambda bases: (_Record,)
