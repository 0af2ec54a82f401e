"""xl.cfg syntax and keys (libxlu grammar, xl_parse.c defaults)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyxen.toolstack.config import ConfigError, from_settings
from pyxen.libxlu.cfg import ConfigSyntaxError, parse, parse_number, quote


def values(text: str) -> dict[str, object]:
    return {k: s.value for k, s in parse(text).items()}


def test_statements_lists_comments_and_overrides() -> None:
    text = ('name = "a" # comment\nmemory = 0x100; vcpus=2\n'
            "disk = [ 'file:/x,xvda,w',\n  \"phy:/dev/y,xvdb,r\", ]\nmemory = 512\n")
    assert values(text) == {"name": "a", "memory": "512", "vcpus": "2",
                            "disk": ["file:/x,xvda,w", "phy:/dev/y,xvdb,r"]}


def test_escapes_and_append() -> None:
    # Xen's dequote: \101 is checked and skipped, never stored (test_libxlu_exact.py has more)
    assert values('s = "a\\tb\\101\\"q"\ns += "!"\nl = [1]\nl += [2]\n') == {
        "s": 'a\tb"q!', "l": ["1", "2"]}


@pytest.mark.parametrize("text, line", [
    ("memory = 2.5\n", 1), ("a = 1\nb = (1)\n", 2), ("name 'x'\n", 1), ("x = [1 2]\n", 1),
    ("Name = 1\n", 1), ("x = \n", 0),  # Xen names line 0 for a newline on line 1
])
def test_syntax_errors_name_the_line(text: str, line: int) -> None:
    with pytest.raises(ConfigSyntaxError) as exc:
        parse(text, "f.cfg")
    assert exc.value.line == line and str(exc.value).startswith(f"f.cfg:{line}: ")


def test_numbers_as_strtol() -> None:
    assert [parse_number(t) for t in ("10", "0x10", "010", "0")] == [10, 16, 8, 0]
    with pytest.raises(ValueError):
        parse_number("08")


@settings(deadline=None)  # parsing is fast, but CI machines are loaded
@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True),
                       st.one_of(st.integers(0, 10**6).map(str),
                                 st.text(st.characters(codec="ascii", exclude_characters="\n\r\x00"), max_size=20),
                                 st.lists(st.text("abc,:/=", max_size=5), max_size=4)),
                       max_size=6))
def test_rendered_settings_parse_back(data: dict[str, object]) -> None:
    def render(v: object) -> str:
        if isinstance(v, list):
            return "[" + ", ".join(render(x) for x in v) + "]"
        if isinstance(v, str) and v.isdigit():
            return v
        return quote(str(v))
    text = "".join(f"{k} = {render(v)}\n" for k, v in data.items())
    assert values(text) == data


def cfg(text: str):  # noqa: ANN201
    return from_settings(parse(text, "t.cfg"), "t.cfg")


def test_defaults_follow_libxl() -> None:
    c = cfg('name = "d"\nkernel = "/k"\n')
    assert (c.type, c.memory, c.maxmem, c.vcpus, c.maxvcpus) == ("pv", 32, 32, 1, 1)
    assert (c.on_poweroff, c.on_reboot, c.on_crash, c.cpu_weight, c.cap) == ("destroy", "restart", "destroy", 256, 0)
    c = cfg('name = "d"\nkernel = "/k"\nmaxmem = 64\nroot = "/dev/xvda1"\nextra = "quiet"\n')
    assert (c.memory, c.cmdline) == (64, "root=/dev/xvda1 quiet")


@pytest.mark.parametrize("text, message", [
    ('kernel = "/k"\n', "Domain name must be specified."),
    ('name = "d"\nkernel = "/k"\nmemory = 64\nmaxmem = 32\n', "maxmem (32) is less than memory (64)"),
    ('name = "d"\nkernel = "/k"\ntype = "q"\n', "Invalid domain type q."),
    ('name = "d"\nkernel = "/k"\nvcpus = 2\nmaxvcpus = 1\n', "maxvcpus < vcpus"),
    ('name = "d"\nkernel = "/k"\non_crash = "explode"\n', "invalid action 'explode'"),
    ('name = "d"\nkernel = "/k"\ncap = 300\n', "cap 300 is out of range 0..100"),
    ('name = "d"\n', "Neither kernel nor bootloader specified"),
    ('name = "a b"\nkernel = "/k"\n', "is not a valid domain name"),
])
def test_bad_values_are_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        cfg(text)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_values_of_the_wrong_shape_warn_and_take_the_default() -> None:
    # xl_parse.c: `if (!xlu_cfg_get_long(config, "memory", &l, 0))` -- a failed get keeps
    # libxl's default; libxlu_cfg.c prints the warning.
    c = cfg('name = "d"\nkernel = "/k"\nmemory = "x"\nvcpus = [2]\nmaxmem = 64\nmaxmem += 1\n')
    assert (c.memory, c.vcpus, c.maxmem) == (32, 1, 32)
    assert c.warnings == (
        "t.cfg:3: warning: parameter `memory' is not a valid number",
        "t.cfg:6: warning: can't use += with numbers for parameter `maxmem'",
        "t.cfg:4: warning: parameter `vcpus' is a list but should be a single value",
    )
    c = cfg('name = "d"\nkernel = "/k"\ndisk = "/x,xvda,w"\n')
    assert c.disks == () and c.warnings == (
        "t.cfg:3: warning: parameter `disk' is a single value but should be a list",)


@pytest.mark.parametrize("value, dtype", [("p", "pv"), ("", "hvm"), ("h", "hvm"), ("pvh", "pvh"),
                                          ("pv", "pv")])
def test_type_is_the_first_name_it_begins(value: str, dtype: str) -> None:
    assert cfg(f'name = "d"\nkernel = "/k"\ntype = "{value}"\n').type == dtype


def test_builder_must_agree_with_type() -> None:
    assert cfg('name = "d"\nkernel = "/k"\nbuilder = "g"\n').type == "pv"
    with pytest.raises(ConfigError, match='^Contradicting "builder" and "type" options specified.$'):
        cfg('name = "d"\nkernel = "/k"\nbuilder = "hvm"\ntype = "pv"\n')


def test_type_prefix_and_unknown_keys_warn() -> None:
    c = cfg('name = "h"\ntype = "h"\nfrobnicate = 1\n')
    assert c.type == "hvm"
    assert c.warnings == ("t.cfg:3: warning: ignoring unknown key 'frobnicate'",)
