"""``pyxen xenstore ...`` (cli/xenstore.py) against a real daemon, compared with
Debian's xenstore-utils where they overlap."""

from __future__ import annotations

import subprocess
import threading

import pytest

from pyxen.cli.xenstore import escape, main, unescape
from pyxen.xenstore.testing import DaemonProcess

pytestmark = pytest.mark.integration


def cli(d: DaemonProcess, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["--socket", str(d.socket), *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_read_write_rm_exists_list(daemon: DaemonProcess,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(daemon, capsys, "write", "/c/a", "1", "/c/b", "tab\\there")[0] == 0
    assert cli(daemon, capsys, "read", "/c/a")[1] == "1\n"
    assert cli(daemon, capsys, "read", "/c/b")[1] == "tab\\there\n"
    assert cli(daemon, capsys, "read", "-p", "/c/a", "/c/b")[1] == "/c/a: 1\n/c/b: tab\\there\n"
    rc, out, err = cli(daemon, capsys, "read", "/c/none")
    assert (rc, err) == (1, "xenstore-read: couldn't read path /c/none\n")
    assert cli(daemon, capsys, "exists", "/c/a")[0] == 0
    assert cli(daemon, capsys, "exists", "/c/none")[0] == 1
    assert set(cli(daemon, capsys, "list", "/c")[1].split()) == {"a", "b"}
    assert cli(daemon, capsys, "write", "/c/odd")[0] == 2
    assert cli(daemon, capsys, "rm", "/c/a")[0] == 0
    assert cli(daemon, capsys, "rm", "/nothere/x")[0] == 1
    # the same store through xenstore-read agrees
    r = subprocess.run(["xenstore-read", "/c/b"], env=daemon.env, capture_output=True, text=True)
    assert r.stdout == "tab\\there\n"


def test_ls_and_chmod_match_xenstore_utils(daemon: DaemonProcess,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    cli(daemon, capsys, "write", "/l/x", "1", "/l/y/z", "2")
    assert cli(daemon, capsys, "chmod", "-r", "/l", "b0", "r3")[0] == 0
    r = subprocess.run(["xenstore-ls", "-f", "/l"], env=daemon.env, capture_output=True,
                       text=True)
    assert cli(daemon, capsys, "ls", "-f", "/l")[1] == r.stdout
    r = subprocess.run(["xenstore-ls", "/l"], env=daemon.env, capture_output=True, text=True)
    assert cli(daemon, capsys, "ls", "/l")[1] == r.stdout
    out = cli(daemon, capsys, "ls", "-p", "/l")[1]
    assert out.count("(b0,r3)") == 3  # x, y, y/z (ls shows what is below /l)
    assert cli(daemon, capsys, "chmod", "/l", "q1")[0] == 2


def test_watch_counts_events(daemon: DaemonProcess, capsys: pytest.CaptureFixture[str]) -> None:
    def poke() -> None:
        for i in range(2):
            subprocess.run(["xenstore-write", f"/wt/{i}", "v"], env=daemon.env, check=True)
    cli(daemon, capsys, "write", "/wt", "")
    t = threading.Timer(0.3, poke)
    t.start()
    rc, out, _ = cli(daemon, capsys, "watch", "-n", "3", "/wt")
    t.join()
    assert (rc, out.split()) == (0, ["/wt", "/wt/0", "/wt/1"])


def test_escape_roundtrip() -> None:
    for value in [b"plain", b"a\tb\nc\\d", bytes(range(0, 256, 7))]:
        assert unescape(escape(value)) == value


def test_no_daemon(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--socket", "/nonexistent/socket", "read", "/a"]) == 1
    assert "xs_open" in capsys.readouterr().err
