"""The guest agent's xenstore client (images/xs-agent.sh), under busybox sh and dash, against a
scripted xenstored on a socketpair: a request whose reply never comes (lost in a live migration's
final stop) is made again under a new req_id after 5 s, a late reply to the first is skipped, and
an XS_ERROR reply is a failure, not a payload."""

from __future__ import annotations

import shutil
import socket
import subprocess
from importlib import resources

import pytest

from pyxen.xenstore.wire import Op, Packet, PacketReader, encode, encode_error

#: The demo guest runs the agent under busybox sh, a Debian guest under dash.
SHELLS = [pytest.param([path, "sh"] if name == "busybox" else [path], id=name)
          for name in ("busybox", "dash") if (path := shutil.which(name))]
AGENT = str(resources.files("pyxen.images").joinpath("xs-agent.sh"))


def agent(shell: list[str], snippet: str) -> tuple[subprocess.Popen[bytes], socket.socket]:
    """``snippet`` run by ``shell`` with the agent's functions and fd 3 on a socket; the other
    end is returned, as xenstored's side of the guest's port."""
    ours, theirs = socket.socketpair()
    # (the socket comes in as stdin: dash names no fd above 9)
    proc = subprocess.Popen([*shell, "-c", f'exec 3<&0 </dev/null; . "$0"; {snippet}', AGENT, "--functions"],
                            stdin=theirs, stdout=subprocess.PIPE)
    theirs.close()
    ours.settimeout(20)
    return proc, ours


def requests(sock: socket.socket, reader: PacketReader, n: int) -> list[Packet]:
    """The next ``n`` requests the agent sends."""
    got: list[Packet] = []
    while len(got) < n:
        data = sock.recv(4096)
        assert data, "the agent closed its port"
        got += reader.feed(data)
    return got


@pytest.mark.parametrize("shell", SHELLS)
def test_a_lost_reply_is_asked_again_and_the_late_one_skipped(shell: list[str]) -> None:
    proc, sock = agent(shell, 'v="$(xs_read data/x)"; echo "rc=$? v=$v"')
    reader = PacketReader()
    (first,) = requests(sock, reader, 1)
    assert first.op == Op.READ and first.payload == b"data/x\0"
    (again,) = requests(sock, reader, 1)  # nothing answered: the same request, a new req_id
    assert again.op == Op.READ and again.payload == b"data/x\0" and again.req_id != first.req_id
    sock.sendall(encode(Op.READ, first.req_id, 0, b"stale") + encode(Op.READ, again.req_id, 0, b"fresh"))
    out, _ = proc.communicate(timeout=20)
    assert out.decode() == "rc=0 v=fresh\n"


@pytest.mark.parametrize("shell", SHELLS)
def test_an_error_reply_fails_the_call_and_prints_nothing(shell: list[str]) -> None:
    proc, sock = agent(shell, 'v="$(xs_read data/x)"; echo "rc=$? v=$v"; xs_write data/y 1; echo "rc=$?"')
    reader = PacketReader()
    (read,) = requests(sock, reader, 1)
    sock.sendall(encode_error(read.req_id, 0, "ENOENT"))
    (write,) = requests(sock, reader, 1)
    assert write.op == Op.WRITE and write.payload == b"data/y\x001"
    sock.sendall(encode(Op.WRITE, write.req_id, 0, b"OK\0"))
    out, _ = proc.communicate(timeout=20)
    assert out.decode() == "rc=1 v=\nrc=0\n"
