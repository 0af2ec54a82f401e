"""The guest agent's xenstore client (images/xs-agent.sh), under busybox sh and dash, against a
scripted xenstored on a socketpair: a request whose reply never comes (lost in a live migration's
final stop) is made again under a new req_id after XS_REPLY_WAIT (5 s; 1 s here), a late reply
to the first is skipped, and an XS_ERROR reply is a failure, not a payload."""

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


@pytest.fixture(autouse=True)
def _agent_tmpdir(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The agent reads each message's header through a file in $TMPDIR: the test's own."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))


def agent(shell: list[str], snippet: str) -> tuple[subprocess.Popen[bytes], socket.socket]:
    """``snippet`` run by ``shell`` with the agent's functions and fd 3 on a socket; the other
    end is returned, as xenstored's side of the guest's port. A reply is awaited 1 s before its
    request is made again (the agent's 5 s, shortened)."""
    ours, theirs = socket.socketpair()
    # (the socket comes in as stdin: dash names no fd above 9)
    proc = subprocess.Popen([*shell, "-c", f'exec 3<&0 </dev/null; . "$0"; XS_REPLY_WAIT=1; {snippet}', AGENT, "--functions"],
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


@pytest.mark.parametrize("shell", SHELLS)
def test_a_batch_goes_out_together_and_keeps_the_events_between_its_replies(shell: list[str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    """xs_writes sends every write before reading any reply; a watch event arriving between the
    replies lands in the events file, and nothing is asked again."""
    events = tmp_path / "events"
    proc, sock = agent(shell, f'xs_events="{events}"; : > "$xs_events"; xs_writes data/a 1 data/b "two words" data/c ""; echo "rc=$?"')
    reader = PacketReader()
    writes = requests(sock, reader, 3)  # all three before any reply
    assert [p.payload for p in writes] == [b"data/a\x001", b"data/b\x00two words", b"data/c\x00"]
    sock.sendall(encode(Op.WRITE, writes[0].req_id, 0, b"OK\0")
                 + encode(Op.WATCH_EVENT, 0, 0, b"control/shutdown\0pyxen:control\0")
                 + b"".join(encode(Op.WRITE, w.req_id, 0, b"OK\0") for w in writes[1:]))
    out, _ = proc.communicate(timeout=20)
    assert out.decode() == "rc=0\n"
    assert events.read_text() == "control/shutdown\npyxen:control\n"


@pytest.mark.parametrize("shell", SHELLS)
def test_a_batch_write_refused_or_unanswered_is_made_again_on_its_own(shell: list[str]) -> None:
    """An XS_ERROR for one write of a batch, and no reply at all for another: after XS_REPLY_WAIT both are
    made again, each alone (xs_call), and the writes that were answered "OK" are not."""
    proc, sock = agent(shell, 'xs_writes data/a 1 data/b 2 data/c 3; echo "rc=$?"')
    reader = PacketReader()
    a, b, c = requests(sock, reader, 3)
    sock.sendall(encode(Op.WRITE, a.req_id, 0, b"OK\0") + encode_error(b.req_id, 0, "EACCES"))
    again = requests(sock, reader, 1)[0]  # c's reply never came: b, alone
    assert again.op == Op.WRITE and again.payload == b"data/b\x002" and again.req_id not in (a.req_id, b.req_id, c.req_id)
    sock.sendall(encode(Op.WRITE, again.req_id, 0, b"OK\0"))
    last = requests(sock, reader, 1)[0]
    assert last.payload == b"data/c\x003"
    sock.sendall(encode(Op.WRITE, c.req_id, 0, b"OK\0") + encode(Op.WRITE, last.req_id, 0, b"OK\0"))  # c's late reply first
    out, _ = proc.communicate(timeout=20)
    assert out.decode() == "rc=0\n"


@pytest.mark.parametrize("shell", SHELLS)
def test_a_batch_of_reads_gives_each_value_and_nothing_for_a_missing_node(shell: list[str]) -> None:
    """xs_reads: the values in xs_val_1.. (any byte but NUL and newline, '%' and '\\' too), ""
    for an XS_ERROR (a node that is not there), and a read left unanswered is made alone."""
    proc, sock = agent(shell, 'xs_reads a b c d; printf "[%s]" "$xs_val_1" "$xs_val_2" "$xs_val_3" "$xs_val_4"')
    reader = PacketReader()
    a, b, c, d = requests(sock, reader, 4)
    assert [p.op for p in (a, b, c, d)] == [Op.READ] * 4 and d.payload == b"d\0"
    sock.sendall(encode(Op.READ, a.req_id, 0, b"poweroff") + encode_error(b.req_id, 0, "ENOENT")
                 + encode(Op.READ, c.req_id, 0, "50% \\n é".encode()))
    (again,) = requests(sock, reader, 1)  # d: no reply within XS_REPLY_WAIT
    assert again.op == Op.READ and again.payload == b"d\0"
    sock.sendall(encode(Op.READ, again.req_id, 0, b"1"))
    out, _ = proc.communicate(timeout=20)
    assert out.decode() == "[poweroff][][50% \\n é][1]"


class ScriptedStore:
    """Just enough of xenstored for the agent's main loop: nodes, WATCH (OK, then the initial
    event) and WATCH_EVENT when a node under a watched path is written."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = PacketReader()
        self.nodes: dict[str, bytes] = {"control/shutdown": b"", "control/sysrq": b""}
        self.watches: list[tuple[str, bytes]] = []
        self.log: list[Packet] = []

    def serve(self, until: float) -> None:
        """Answer requests until ``until`` (time.monotonic()) or the agent closes its port."""
        import time
        while (left := until - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                return
            if not data:
                return
            for p in self.reader.feed(data):
                self.log.append(p)
                self.sock.sendall(self.answer(p))

    def answer(self, p: Packet) -> bytes:
        args = p.payload.split(b"\0")
        if p.op == Op.WATCH:
            self.watches.append((args[0].decode(), args[1]))
            return encode(p.op, p.req_id, 0, b"OK\0") + encode(Op.WATCH_EVENT, 0, 0, args[0] + b"\0" + args[1] + b"\0")
        if p.op == Op.READ:
            value = self.nodes.get(args[0].decode())
            return encode(p.op, p.req_id, 0, value) if value is not None else encode_error(p.req_id, 0, "ENOENT")
        if p.op == Op.DIRECTORY:
            return encode(p.op, p.req_id, 0, b"")
        if p.op == Op.WRITE:
            path, value = p.payload.split(b"\0", 1)
            return self.events_for(path.decode()) + encode(p.op, p.req_id, 0, b"OK\0") if self.set(path.decode(), value) else b""
        return encode(p.op, p.req_id, 0, b"OK\0")

    def set(self, path: str, value: bytes) -> bool:
        self.nodes[path] = value
        return True

    def events_for(self, path: str) -> bytes:
        return b"".join(encode(Op.WATCH_EVENT, 0, 0, path.encode() + b"\0" + token + b"\0")
                        for watched, token in self.watches if path == watched or path.startswith(watched + "/"))

    def toolstack_write(self, path: str, value: bytes) -> None:
        """Dom0 writes a node: the guest's watches on it fire."""
        self.set(path, value)
        self.sock.sendall(self.events_for(path))


@pytest.mark.parametrize("shell", SHELLS)
def test_the_agent_waits_on_its_watches_and_acts_on_shutdown(shell: list[str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The main loop watches control/shutdown, control/sysrq, cpu and device/vif, reports, then
    asks nothing while nothing fires (an idle guest's agent costs nothing; the 1 s address passes
    that follow when the guest has a NIC are off: the host running the test has NICs); a write to
    control/shutdown wakes it: acknowledged with "", then the poweroff command runs."""
    import os
    import time
    ours, theirs = socket.socketpair()
    env = dict(os.environ, TMPDIR=str(tmp_path), PYXEN_AGENT_POWEROFF="echo poweroff-ran")
    proc = subprocess.Popen([*shell, "-c", 'exec 3<&0 </dev/null; . "$0"; xs_events="$TMPDIR/events"; XS_FAST_PASSES=0; xs_agent',
                             AGENT, "--functions"], stdin=theirs, stdout=subprocess.PIPE, env=env)
    theirs.close()
    store = ScriptedStore(ours)
    try:
        deadline = time.monotonic() + 8  # the first pass: until it reported and then asked nothing for 2 s
        while time.monotonic() < deadline:
            before = len(store.log)
            store.serve(time.monotonic() + 2)
            if store.nodes.get("data/updated") and len(store.log) == before:
                break
        assert sorted(w for w, _ in store.watches) == ["control/shutdown", "control/sysrq", "cpu", "device/vif"]
        assert store.nodes.get("data/updated") and store.nodes["control/feature-poweroff"] == b"1"
        settled = len(store.log)
        store.serve(time.monotonic() + 3)
        assert len(store.log) == settled, [p.payload for p in store.log[settled:]]  # nothing asked
        store.toolstack_write("control/shutdown", b"poweroff")
        deadline = time.monotonic() + 20
        while store.nodes["control/shutdown"] != b"" and time.monotonic() < deadline:
            store.serve(time.monotonic() + 0.5)
        assert store.nodes["control/shutdown"] == b""  # acknowledged, as Linux's xenbus does
        store.serve(time.monotonic() + 1)
    finally:
        proc.kill()
    out, _ = proc.communicate(timeout=10)
    assert b"poweroff-ran" in out
