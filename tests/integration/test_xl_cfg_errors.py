"""``xl create`` with configs Xen's xl refuses (issue 10): libxlu's report lines, xl's closing
line, exit 1, and nothing created; what xl only warns about is printed and the config is used.

The expected lines are Xen's (tests/unit/libxlu_xen_cases.py says how they were obtained);
here they are checked end to end, through the real command against a running host."""

from __future__ import annotations

import json
import subprocess

import pytest

from ..conftest import Host

pytestmark = pytest.mark.integration


def errors(done: subprocess.CompletedProcess[str]) -> list[str]:
    """stderr without xl's progress line."""
    return [line for line in done.stderr.splitlines() if not line.startswith("Parsing config from")]


def state(host: Host) -> tuple[object, str]:
    """What a refused command must leave alone: the domain list and the xenstore tree."""
    doms = {name: {k: v for k, v in row.items() if k != "time"} for name, row in host.domains().items()}
    return doms, host.run("pyxen", "xenstore", "ls", "/", check=True).stdout


def test_refused_configs_print_xens_lines_and_create_nothing(quiet_host: Host) -> None:
    host = quiet_host  # (shared: see quiet_host)
    good = host.write_cfg("cfgerr", memory=128).read_text()
    root = host.paths.root
    cases: list[tuple[str, str, list[str]]] = [
        ("syntax", good + "memory = lots\n", [
            "{f}:7: config parsing error near `lots': syntax error, unexpected IDENT, "
            "expecting STRING or NUMBER or '['"]),
        # one line per CRLF line: a lexical error silences only the rest of its own line
        ("crlf", good.replace("\n", "\r\n"), [
            f"{{f}}:{n}: config parsing error near `\\r': lexical error" for n in range(1, 7)]),
        ("python", good + "memory = (64)\n", [
            "{f}:7: config parsing error near `(64)': lexical error",
            "warning: Config file looks like it contains Python code.",
            "warning:  Arbitrary Python is no longer supported.",
            "warning:  See https://wiki.xen.org/wiki/PythonInXlConfig"]),
        ("hexesc", good + 'extra = "a\\x41"\n', [
            "{f}:7: config parsing error near `\"a\\x41\"': invalid digit after backslash "
            "hexnumerical character escape in quoted string"]),
        ("twoerr", good + "a = \nb = [\nc = 1\n", [
            "{f}:6: config parsing error near <newline>: syntax error, unexpected NEWLINE, "
            "expecting STRING or NUMBER or '['",
            "{f}:9: config parsing error near `c': syntax error, unexpected IDENT, expecting ']'"]),
        ("disk", good + 'disk = [ "foo:/img,xvda,w" ]\n', [
            "{f}: config parsing error in disk specification: unknown deprecated disk prefix: "
            "near `foo:' in `foo:/img,xvda,w'"]),
        ("rate", good + 'vif = [ "bridge=xenbr0,rate=10Mbit/s" ]\n', [
            "{f}: config parsing error in vif: invalid rate in `10Mbit/s'"]),
    ]
    before = state(host)
    for name, text, expected in cases:
        path = root / f"{name}.cfg"
        path.write_bytes(text.encode())
        done = host.xl("create", str(path), check=False)
        want = [line.format(f=path) for line in expected]
        if name not in ("disk", "rate"):  # libxlu's file parse: xl_parse.c adds its own line
            want.append("Failed to parse config: Invalid argument")
        assert (done.returncode, errors(done)) == (1, want), (name, done.stderr)
    assert state(host) == before


def test_values_of_the_wrong_shape_warn_and_fall_back(quiet_host: Host) -> None:
    """xl -n (dry run) shows the config xl would build: each wrong-shape key has its default."""
    host = quiet_host  # (shared: see quiet_host)
    path = host.write_cfg("shapes", memory=128, extra_lines="vcpus = [2]\nmaxmem = 256\nmaxmem += 1\n"
                          'vif = [ "colour=blue,mac=00:16:3e:zz" ]\ntype = "p"\n')
    done = host.xl("create", "-n", str(path), check=False)
    assert done.returncode == 0, done.stderr
    warned = errors(done)
    assert f"{path}:9: warning: can't use += with numbers for parameter `maxmem'" in warned
    assert f"{path}:7: warning: parameter `vcpus' is a list but should be a single value" in warned
    assert "unrecognized argument `colour=blue'" in warned and "Invalid parameter `mac'." in warned
    cfg = json.loads(done.stdout)  # libxl's JSON: vcpus and maxmem left out, as xl leaves them
    b_info = cfg["b_info"]
    assert (cfg["c_info"]["type"], "max_vcpus" in b_info, b_info["max_memkb"], b_info["target_memkb"]) == \
        ("pv", False, 128 * 1024, 128 * 1024)
    assert "shapes" not in host.domains()
