"""xl migrate's wire bits (toolstack/migration.py): Xen's fixed messages, the rune, exact reads
with xl's messages; and the migration pipe passed to the hypervisor with SCM_RIGHTS (a real
hypervisor daemon on its socket, the declared FakeDeviceModel writing or reading the stream)."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
import uuid as uuidlib
from pathlib import Path
from typing import Iterator

import pytest

from pyxen.hypervisor.client import XenCtrl
from pyxen.hypervisor.domctl import CreateDomain
from pyxen.hypervisor.errors import InvalidArgument
from pyxen.testing.fakes import FakeDeviceModel, FakeHost
from pyxen.toolstack import migration, savefile
from pyxen.toolstack.migration import StreamError, read_exactly, read_fixed, rune


def test_fixed_messages_are_xens() -> None:
    assert migration.BANNER == b"xl migration receiver ready, send binary domain data.\n"
    assert len(migration.BANNER) == 54 and b"\0" not in migration.BANNER
    for msg, size in ((migration.READY, 34), (migration.GO, 44), (migration.REPORT, 39)):
        assert len(msg) == size and msg.endswith(b"\0") and msg.count(b"\0") == 1
    assert migration.READY == b"domain received, ready to unpause\0"
    assert migration.GO == b"domain is yours, you are cleared to unpause\0"
    assert migration.REPORT == b"my copy unpause results are as follows\0"


@pytest.mark.parametrize("kw, expected", [
    ({}, "exec ssh hostB xl migrate-receive"),
    ({"tty": True}, "exec ssh hostB xl -t migrate-receive"),
    ({"tty": True, "timestamps": True, "verbose": 2}, "exec ssh hostB xl -t -T -vv migrate-receive"),
    ({"verbose": 9}, "exec ssh hostB xl -vvvv migrate-receive"),
    ({"no_monitor": True, "debug": True, "paused": True}, "exec ssh hostB xl migrate-receive -e -d -p"),
])
def test_rune(kw: dict[str, object], expected: str) -> None:
    assert rune("ssh", "hostB", **kw) == expected  # type: ignore[arg-type]


def test_rune_with_an_empty_ssh_command_is_the_host_verbatim() -> None:
    assert rune("", "nc -q0 10.0.0.2 7000 'x'", tty=True, paused=True) == "nc -q0 10.0.0.2 7000 'x'"
    assert rune("ssh -p 2222", "h", debug=True) == "exec ssh -p 2222 h xl migrate-receive -d"


def pipe_with(data: bytes, close: bool = True) -> tuple[int, int]:
    r, w = os.pipe()
    os.write(w, data)
    if close:
        os.close(w)
    return r, w


def test_read_fixed_messages_and_failures() -> None:
    r, _ = pipe_with(migration.BANNER + b"rest")
    read_fixed(r, migration.BANNER, "banner", migration.RECEIVER_STREAM, "exec ssh h xl migrate-receive")
    assert os.read(r, 10) == b"rest"  # nothing past the message was taken
    r, _ = pipe_with(b"x" * 60)
    with pytest.raises(StreamError) as err:
        read_fixed(r, migration.BANNER, "banner", migration.RECEIVER_STREAM, "echo x")
    assert str(err.value).splitlines() == [
        "migration receiver stream contained unexpected data instead of banner",
        "(command run was: echo x )"]
    r, _ = pipe_with(b"short")
    with pytest.raises(StreamError, match="^file/stream truncated reading banner from "
                                          "migration receiver stream$"):
        read_fixed(r, migration.BANNER, "banner", migration.RECEIVER_STREAM, "x")
    r, w = pipe_with(b"dom", close=False)
    t0 = time.monotonic()
    with pytest.raises(StreamError, match="timed out after 0.3 s reading GO message from migration stream"):
        read_fixed(r, migration.GO, "GO message", migration.SENDER_STREAM, timeout=0.3)
    assert time.monotonic() - t0 < 2
    os.close(w)


def test_status_byte_is_minus_rc_as_a_char() -> None:
    assert migration.status_byte(0) == b"\0"
    assert migration.status_byte(-3) == b"\x03" and migration.status_byte(1) == b"\xff"
    assert migration.status_code(3) == 3 and migration.status_code(0xFF) == -1


def test_header_read_leaves_the_stream_in_the_pipe() -> None:
    """migrate-receive reads xl's header from stdin and leaves every byte after it to QEMU."""
    header = savefile.encode({"c_info": {"name": "g"}})
    r, _ = pipe_with(header + b"QEVM-stream")
    got = savefile.decode(migration.TimedReader(r, migration.SENDER_STREAM), "<incoming migration stream>")
    assert got.config == {"c_info": {"name": "g"}} and got.info() == savefile.info_of(header)
    assert os.read(r, 100) == b"QEVM-stream"
    r, _ = pipe_with(header[:20])
    with pytest.raises(savefile.SaveFileError, match="truncated reading header from <incoming"):
        savefile.decode(migration.TimedReader(r, migration.SENDER_STREAM), "<incoming migration stream>")


@pytest.fixture
def fake() -> Iterator[FakeHost]:
    root = Path(os.path.realpath("/tmp")) / f"pyxen-fakemig-{os.getpid()}-{time.monotonic_ns()}"
    with FakeHost(root) as host:
        yield host
    import shutil
    shutil.rmtree(root, ignore_errors=True)


def _domain(xc: XenCtrl, tmp: Path, incoming: bool, name: str = "m") -> int:
    kernel = tmp / "vmlinuz"
    kernel.write_bytes(b"\0" * 16)
    req = CreateDomain(name=name, uuid=str(uuidlib.uuid4()), type="pv", memory_kb=65536,
                       max_memkb=65536, vcpus=1, max_vcpus=1, kernel=str(kernel), ramdisk=None,
                       cmdline="", incoming=incoming)
    return int(xc.call("domctl.createdomain", request=req.to_wire()))


def test_the_pipe_reaches_the_device_model_through_scm_rights(fake: FakeHost, tmp_path: Path) -> None:
    """dm_op.migrate_send: the descriptor xl passes is the one the device model writes the
    stream to; dm_op.migrate_receive: the one it reads it from. xl's copies stay usable."""
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        domid = _domain(xc, tmp_path, incoming=False)
        r, w = os.pipe()
        xc.call("dm_op.migrate_send", domid=domid, fds=[w], timeout=30)
        assert os.read(r, 100) == FakeDeviceModel.STREAM
        os.write(w, b"still mine")
        assert os.read(r, 100) == b"still mine"
        info = xc.call("domctl.getdomaininfo", domid=domid)
        assert info["paused"]
        # The connection still works for ordinary calls after the descriptor handshake.
        assert xc.call("domctl.getdomaininfo", domid=domid)["domid"] == domid

        inc = _domain(xc, tmp_path, incoming=True, name="m--incoming")
        r2, _ = pipe_with(b"QEVM incoming")
        xc.call("dm_op.migrate_receive", domid=inc, fds=[r2], timeout=30)
        model = [m for m in FakeDeviceModel.instances if m.domid == inc][-1]
        assert model.received == b"QEVM incoming"
        # Not built to receive: refused.
        with pytest.raises(InvalidArgument, match="not built to receive"):
            xc.call("dm_op.migrate_receive", domid=domid, fds=[r2], timeout=30)


def test_a_descriptor_named_on_the_wire_is_not_taken(fake: FakeHost, tmp_path: Path) -> None:
    """Only SCM_RIGHTS carries descriptors: "fds" in a request's args (the daemon's own fd
    numbers) is dropped, so the call is refused and the daemon's descriptors are untouched."""
    with XenCtrl(fake.paths.hypervisor_socket) as xc:
        domid = _domain(xc, tmp_path, incoming=False)
        with socket.socket(socket.AF_UNIX) as raw:
            raw.settimeout(10)
            raw.connect(str(fake.paths.hypervisor_socket))
            raw.sendall(json.dumps({"id": 1, "op": "dm_op.migrate_send",
                                    "args": {"domid": domid, "fds": [0]}}).encode() + b"\n")
            reply = json.loads(raw.makefile("rb").readline())
        assert reply["error"]["errno"] == "EINVAL" and "SCM_RIGHTS" in reply["error"]["message"]
        with pytest.raises(InvalidArgument, match="scm_rights"):
            xc.call("dm_op.migrate_send", domid=domid, scm_rights=99)


def test_stream_io_reports_a_gone_peer() -> None:
    r, w = os.pipe()
    os.close(r)
    with pytest.raises(StreamError, match="failed to write GO message to migration stream"):
        migration.write_exactly(w, migration.GO, migration.SENDER_STREAM, "GO message")
    os.close(w)
    assert read_exactly(pipe_with(b"abc")[0], 3, "s", "w") == b"abc"


@pytest.mark.parametrize("argv, code, first, help_out", [
    (["migrate", "d"], 2, "'xl migrate' requires at least 2 arguments.", "Usage: xl [-vtTf] migrate "),
    (["migrate", "-D", "d", "hostB"], 1, "xl migrate: -D (keep the domain id) is not supported by pyxen", ""),
    (["migrate-receive", "-r"], 1, "migration target: Remus (-r) and COLO (--colo) checkpointed "
                                   "streams are not supported by pyxen", ""),
    (["migrate-receive", "--colo"], 1, "migration target: Remus (-r) and COLO (--colo) checkpointed "
                                       "streams are not supported by pyxen", ""),
    (["migrate-receive", "extra"], 1, "", "Usage: xl [-vtTf] migrate-receive "),
])
def test_xl_migrate_bad_usage_changes_nothing(argv: list[str], code: int, first: str, help_out: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Refused before any daemon is asked (no host runs here): Xen's exit codes; xl's help()
    block, where xl prints it, on stdout."""
    from pyxen.cli import xl
    assert xl.main(argv) == code
    out = capsys.readouterr()
    assert out.out.startswith(help_out) and bool(out.out) == bool(help_out), out.out
    assert (out.err.splitlines() or [""])[0].startswith(first) and bool(out.err) == bool(first), out.err


def test_the_stream_pipe_is_widened_and_other_fds_are_left_alone() -> None:
    r, w = os.pipe()
    try:
        migration.widen_pipe(w)
        assert fcntl.fcntl(r, 1032) == migration.PIPE_SIZE  # F_GETPIPE_SZ: one pipe, both ends
    finally:
        os.close(r)
        os.close(w)
    a, b = socket.socketpair()
    with a, b:
        migration.widen_pipe(a.fileno())  # not a pipe: EBADF from fcntl, ignored
