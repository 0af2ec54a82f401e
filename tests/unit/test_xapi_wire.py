"""pyxen.xapi.wire against xapi's wire format (ocaml-rpc's xmlrpc.ml, the digest's §1.2-1.3):
XML-RPC values as xapi writes them, read back by the standard library's client parser (what
XenAPI.py uses), and the JSON-RPC 1.0 and 2.0 envelopes."""

from __future__ import annotations

import datetime
import json
import xmlrpc.client
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyxen.xapi.wire import (Call, DateTime, Int32, WireError, decode_jsonrpc, decode_xmlrpc,
                             encode_xmlrpc_value, jsonrpc_failure, jsonrpc_success, xmlrpc_failure,
                             xmlrpc_success)


def client_reads(body: bytes) -> Any:
    """What XenAPI.py's ServerProxy gets: the response struct, parsed by the stdlib."""
    (value,), _ = xmlrpc.client.loads(body)
    return value


def request(*params: Any, method: str = "VM.get_record") -> bytes:
    """A request as the stdlib client writes it (its own encoder, <string> tags and all)."""
    return xmlrpc.client.dumps(params, method, allow_none=True).encode()


# -- XML-RPC responses ------------------------------------------------------------------------

def test_strings_are_bare_and_escaped() -> None:
    assert encode_xmlrpc_value("abc") == "<value>abc</value>"
    assert encode_xmlrpc_value("a<b>&c") == "<value>a&lt;b&gt;&amp;c</value>"
    assert encode_xmlrpc_value("") == "<value></value>"
    assert client_reads(xmlrpc_success("<provision><disk/></provision> & more")) == \
        {"Status": "Success", "Value": "<provision><disk/></provision> & more"}


def test_ints_go_as_strings_and_int32_as_i4() -> None:
    assert encode_xmlrpc_value(8589934592) == "<value>8589934592</value>"
    assert encode_xmlrpc_value(-1) == "<value>-1</value>"
    assert encode_xmlrpc_value(Int32(7)) == "<value><i4>7</i4></value>"
    got = client_reads(xmlrpc_success({"memory": 2**40, "count": Int32(3)}))["Value"]
    assert got == {"memory": str(2**40), "count": 3}


def test_bools_floats_datetimes() -> None:
    assert encode_xmlrpc_value(True) == "<value><boolean>1</boolean></value>"
    assert encode_xmlrpc_value(False) == "<value><boolean>0</boolean></value>"
    assert client_reads(xmlrpc_success(0.25))["Value"] == 0.25
    assert encode_xmlrpc_value(DateTime("20240101T13:20:11Z")) == \
        "<value><dateTime.iso8601>20240101T13:20:11Z</dateTime.iso8601></value>"
    got = client_reads(xmlrpc_success(DateTime("20240101T13:20:11Z")))["Value"]
    assert isinstance(got, xmlrpc.client.DateTime) and got.value == "20240101T13:20:11Z"


def test_nested_structs_and_arrays() -> None:
    value = {"OpaqueRef:a": {"VBDs": ["OpaqueRef:b", "OpaqueRef:c"], "other_config": {}, "tags": [],
                             "VCPUs_CPU": {"0": 1}, "flag": True}}
    assert client_reads(xmlrpc_success(value))["Value"] == \
        {"OpaqueRef:a": {"VBDs": ["OpaqueRef:b", "OpaqueRef:c"], "other_config": {}, "tags": [],
                         "VCPUs_CPU": {"0": "1"}, "flag": True}}


def test_void_is_the_empty_string_and_failures() -> None:
    assert client_reads(xmlrpc_success(None)) == {"Status": "Success", "Value": ""}
    assert client_reads(xmlrpc_failure(["HANDLE_INVALID", "VM", "OpaqueRef:x"])) == \
        {"Status": "Failure", "ErrorDescription": ["HANDLE_INVALID", "VM", "OpaqueRef:x"]}


def test_characters_xml_cannot_carry_are_dropped() -> None:
    """A name with a control character (a guest can report one) must not make the whole
    response unparseable; xapi's encoder drops such characters."""
    body = xmlrpc_success({"name\x01": "Deb\x00ian\x1f 12\ud800", "ok": "tab\there\nnewline"})
    assert client_reads(body)["Value"] == {"name": "Debian 12", "ok": "tab\there\nnewline"}


# -- XML-RPC requests -------------------------------------------------------------------------

def test_decode_request_from_the_stdlib_client() -> None:
    call = decode_xmlrpc(request("OpaqueRef:s", "OpaqueRef:vm", False, True, method="VM.start"))
    assert call == Call("VM.start", ("OpaqueRef:s", "OpaqueRef:vm", False, True))
    call = decode_xmlrpc(request("s", {"virtual_size": "8589934592", "n": 5, "x": 0.5, "l": ["a"]}))
    assert call.params[1] == {"virtual_size": "8589934592", "n": 5, "x": 0.5, "l": ["a"]}


def test_decode_bare_values_and_every_int_tag() -> None:
    """Including a datetime in xapi's own form (with the Z the stdlib's datetime parser
    refuses: such a request was an HTTP 500)."""
    body = ("<?xml version='1.0'?><methodCall><methodName>m</methodName><params>"
            "<param><value>bare</value></param><param><value><i4>1</i4></value></param>"
            "<param><value><int>2</int></value></param><param><value><i8>8589934592</i8></value></param>"
            "<param><value><dateTime.iso8601>20240101T13:20:11Z</dateTime.iso8601></value></param>"
            "</params></methodCall>").encode()
    call = decode_xmlrpc(body)
    assert call.params[:4] == ("bare", 1, 2, 8589934592)
    assert isinstance(call.params[4], DateTime) and call.params[4] == "20240101T13:20:11Z"


def test_decode_datetime_from_the_stdlib_client() -> None:
    call = decode_xmlrpc(request(datetime.datetime(2024, 1, 1, 13, 20, 11)))
    assert call.params == (DateTime("20240101T13:20:11Z"),)


@pytest.mark.parametrize("body", [b"", b"not xml", b"<methodCall><params></params></methodCall>",
                                  b"<?xml version='1.0'?><methodCall><methodName>m</methodName><params>"])
def test_decode_garbage_is_a_wire_error(body: bytes) -> None:
    with pytest.raises(WireError):
        decode_xmlrpc(body)


# -- JSON-RPC ----------------------------------------------------------------------------------

def test_jsonrpc_v1_envelopes() -> None:
    call = decode_jsonrpc(b'{"method": "VM.get_all", "params": ["s"], "id": 7}')
    assert call == Call("VM.get_all", ("s",), 7, "1.0")
    assert json.loads(jsonrpc_success(call, ["OpaqueRef:a"])) == {"result": ["OpaqueRef:a"], "error": None, "id": 7}
    assert json.loads(jsonrpc_success(call, None)) == {"result": "", "error": None, "id": 7}
    assert json.loads(jsonrpc_failure(call, ["SESSION_INVALID", "s"])) == \
        {"result": None, "error": ["SESSION_INVALID", "s"], "id": 7}


def test_jsonrpc_v2_envelopes() -> None:
    call = decode_jsonrpc(b'{"jsonrpc": "2.0", "method": "VM.get_all", "params": ["s"], "id": "x1"}')
    assert call == Call("VM.get_all", ("s",), "x1", "2.0")
    assert json.loads(jsonrpc_success(call, {"a": 1})) == {"jsonrpc": "2.0", "result": {"a": 1}, "id": "x1"}
    assert json.loads(jsonrpc_failure(call, ["HANDLE_INVALID", "VM", "r"])) == \
        {"jsonrpc": "2.0", "error": {"code": 1, "message": "HANDLE_INVALID", "data": ["VM", "r"]}, "id": "x1"}
    assert json.loads(jsonrpc_failure(call, ["SESSION_NOT_REGISTERED"]))["error"]["data"] == []


def test_jsonrpc_values_keep_their_json_types() -> None:
    call = decode_jsonrpc(b'{"jsonrpc": "2.0", "method": "m", "id": 1}')
    out = json.loads(jsonrpc_success(call, {"big": 2**40, "n": Int32(3), "t": DateTime("19700101T00:00:00Z")}))
    assert out["result"] == {"big": 2**40, "n": 3, "t": "19700101T00:00:00Z"}


def test_jsonrpc_params_null_missing_or_object() -> None:
    assert decode_jsonrpc(b'{"jsonrpc": "2.0", "method": "m", "params": null, "id": 1}').params == ()
    assert decode_jsonrpc(b'{"jsonrpc": "2.0", "method": "m", "id": 1}').params == ()
    assert decode_jsonrpc(b'{"jsonrpc": "2.0", "method": "m", "params": {"a": 1}, "id": 1}').params == ({"a": 1},)


@pytest.mark.parametrize("body", [
    b'{"params": [], "id": 1}',  # no method
    b'{"method": "m", "params": []}',  # no id
    b'{"method": 5, "params": [], "id": 1}',
    b'{"method": "m", "params": [], "id": null}',  # a 1.0 request needs a real id
    b'{"method": "m", "params": "x", "id": 1}',
    b'[1, 2]', b'not json', b'\xff\xfe',
])
def test_jsonrpc_bad_requests(body: bytes) -> None:
    with pytest.raises(WireError):
        decode_jsonrpc(body)


# -- property tests -----------------------------------------------------------------------------

#: Text XML can carry (what xapi stores); CR is left out: XML parsers read a raw CR as LF.
TEXT = st.text(st.characters(blacklist_categories=("Cs",),
                             blacklist_characters="\r\ufffe\uffff" + "".join(map(chr, range(0x20)))) | st.sampled_from("\t\n"))
SCALARS = TEXT | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                      max_leaves=20)


def as_client_sees(v: Any) -> Any:
    """xapi's XML-RPC: ints travel as decimal strings; everything else as itself."""
    if isinstance(v, bool) or isinstance(v, (str, float)):
        return v
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return [as_client_sees(x) for x in v]
    return {k: as_client_sees(x) for k, x in v.items()}


@settings(max_examples=150, deadline=None)
@given(VALUES)
def test_xmlrpc_response_round_trip(value: Any) -> None:
    assert client_reads(xmlrpc_success(value))["Value"] == as_client_sees(value)


@settings(max_examples=150, deadline=None)
@given(st.lists(VALUES, max_size=4), st.from_regex(r"(Async\.)?[A-Za-z_]{1,12}\.[A-Za-z_]{1,20}", fullmatch=True))
def test_xmlrpc_request_round_trip(params: list[Any], method: str) -> None:
    """What the stdlib client sends (ints up to 32 bits, as it only can) arrives unchanged."""
    def small(v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            return v % 2**31
        if isinstance(v, list):
            return [small(x) for x in v]
        if isinstance(v, dict):
            return {k: small(x) for k, x in v.items()}
        return v
    params = [small(p) for p in params]
    call = decode_xmlrpc(request(*params, method=method))
    assert call.method == method and list(call.params) == params


@settings(max_examples=150, deadline=None)
@given(VALUES, st.sampled_from([None, "2.0"]), st.integers() | TEXT)
def test_jsonrpc_round_trip(value: Any, version: str | None, ident: Any) -> None:
    req: dict[str, Any] = {"method": "VM.get_record", "params": [value], "id": ident}
    if version:
        req["jsonrpc"] = version
    call = decode_jsonrpc(json.dumps(req).encode())
    assert call.params == (value,) and call.id == ident
    reply = json.loads(jsonrpc_success(call, value))
    assert reply["result"] == value and reply["id"] == ident
