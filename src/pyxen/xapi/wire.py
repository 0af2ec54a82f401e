"""XenAPI's two wire encodings, pure (no I/O): XML-RPC on ``/`` and ``/RPC2``, JSON-RPC 1.0 and
2.0 on ``/jsonrpc``.

Decoding uses the standard library's XML-RPC parser. Encoding is written here because xapi's
XML-RPC differs from what ``xmlrpc.client.dumps`` produces: strings go bare
(``<value>text</value>``), 64-bit ints go as decimal strings, ``None`` is never sent. The
value conventions: :class:`DateTime` marks a datetime (xapi's ``%Y%m%dT%H:%M:%SZ`` text),
:class:`Int32` the one field xapi sends as ``<i4>`` (event.from's ``valid_ref_counts``).
"""

from __future__ import annotations

import json
import re
import xmlrpc.client
from dataclasses import dataclass
from typing import Any
from xml.parsers.expat import ExpatError


class DateTime(str):
    """A datetime value: ``<dateTime.iso8601>`` in XML-RPC, a plain string in JSON."""


class Int32(int):
    """An int xapi sends as ``<i4>`` rather than as a string."""


class WireError(ValueError):
    """The request body is not a well-formed call (xapi answers these with HTTP 500)."""


@dataclass(frozen=True)
class Call:
    method: str
    params: tuple[Any, ...]
    #: JSON-RPC only: the request's id and version ("1.0" or "2.0").
    id: Any = None
    version: str | None = None


def decode_xmlrpc(body: bytes) -> Call:
    try:
        params, method = xmlrpc.client.loads(body)
    except (ExpatError, xmlrpc.client.ResponseError, ValueError, TypeError) as err:
        raise WireError(f"bad XML-RPC request: {err}") from err
    if method is None:
        raise WireError("bad XML-RPC request: no methodName")
    return Call(method, tuple(_from_xml(p) for p in params))


def _from_xml(v: Any) -> Any:
    if isinstance(v, xmlrpc.client.DateTime):
        # xapi's own form ends in Z, which the standard library's datetime parser rejects
        return DateTime(v.value + "Z" if len(v.value) == 17 else v.value)
    if isinstance(v, xmlrpc.client.Binary):
        v = v.data
    if hasattr(v, "strftime"):  # datetime.datetime from use_builtin_types
        return DateTime(v.strftime("%Y%m%dT%H:%M:%SZ"))
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("utf-8", "replace")
    if isinstance(v, list):
        return [_from_xml(x) for x in v]
    if isinstance(v, dict):
        return {k: _from_xml(x) for k, x in v.items()}
    return v


#: What XML cannot carry (control characters, lone surrogates): dropped, as ocaml-rpc does, so
#: one such character a guest reports cannot make a whole response unparseable.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _escape(s: str) -> str:
    if not s.isprintable():
        s = _NOT_XML.sub("", s)
    if "&" in s:
        s = s.replace("&", "&amp;")
    if "<" in s:
        s = s.replace("<", "&lt;")
    if ">" in s:
        s = s.replace(">", "&gt;")
    return s


def _xml_value(v: Any, out: list[str]) -> None:
    """Append ``<value>...</value>``; the common types are tested by exact type first (this is
    the hot loop of get_all_records)."""
    t = type(v)
    if t is str:
        out.append(f"<value>{_escape(v)}</value>")
    elif t is dict:
        out.append("<value><struct>")
        for k, x in v.items():
            out.append(f"<member><name>{_escape(str(k))}</name>")
            _xml_value(x, out)
            out.append("</member>")
        out.append("</struct></value>")
    elif t is bool:
        out.append("<value><boolean>1</boolean></value>" if v else "<value><boolean>0</boolean></value>")
    elif t is int:
        out.append(f"<value>{v}</value>")
    elif t is list or t is tuple:
        out.append("<value><array><data>")
        for x in v:
            _xml_value(x, out)
        out.append("</data></array></value>")
    elif t is float:
        out.append(f"<value><double>{v!r}</double></value>")
    elif t is DateTime:
        out.append(f"<value><dateTime.iso8601>{v}</dateTime.iso8601></value>")
    elif t is Int32:
        out.append(f"<value><i4>{int(v)}</i4></value>")
    elif v is None:
        out.append("<value></value>")
    elif isinstance(v, str):
        out.append(f"<value>{_escape(str(v))}</value>")
    elif isinstance(v, int):
        out.append(f"<value>{int(v)}</value>")
    else:
        raise TypeError(f"cannot encode {type(v).__name__} for XML-RPC")


def encode_xmlrpc_value(v: Any) -> str:
    """One ``<value>``: also what xapi stores as a task's ``result``."""
    out: list[str] = []
    _xml_value(v, out)
    return "".join(out)


def encode_xmlrpc_response(struct: dict[str, Any]) -> bytes:
    out = ["<?xml version='1.0'?>\n<methodResponse><params><param>"]
    _xml_value(struct, out)
    out.append("</param></params></methodResponse>\n")
    return "".join(out).encode()


def xmlrpc_success(value: Any) -> bytes:
    return encode_xmlrpc_response({"Status": "Success", "Value": "" if value is None else value})


def xmlrpc_failure(description: list[str]) -> bytes:
    return encode_xmlrpc_response({"Status": "Failure", "ErrorDescription": description})


def decode_jsonrpc(body: bytes) -> Call:
    try:
        req = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise WireError(f"bad JSON-RPC request: {err}") from err
    if not isinstance(req, dict) or not isinstance(req.get("method"), str) or "id" not in req:
        raise WireError("bad JSON-RPC request: it needs a method and an id")
    version = "2.0" if req.get("jsonrpc") == "2.0" else "1.0"
    params = req.get("params")
    if params is None:
        params = []
    elif isinstance(params, dict):
        params = [params]
    elif not isinstance(params, list):
        raise WireError("bad JSON-RPC request: params must be a list")
    if version == "1.0" and req["id"] is None:
        raise WireError("bad JSON-RPC request: a 1.0 request needs a non-null id")
    return Call(req["method"], tuple(params), req["id"], version)


def jsonrpc_success(call: Call, value: Any) -> bytes:
    value = "" if value is None else value
    if call.version == "2.0":
        return json.dumps({"jsonrpc": "2.0", "result": value, "id": call.id}).encode()
    return json.dumps({"result": value, "error": None, "id": call.id}).encode()


def jsonrpc_failure(call: Call, description: list[str]) -> bytes:
    if call.version == "2.0":
        return json.dumps({"jsonrpc": "2.0", "error": {"code": 1, "message": description[0],
                                                       "data": description[1:]}, "id": call.id}).encode()
    return json.dumps({"result": None, "error": description, "id": call.id}).encode()
