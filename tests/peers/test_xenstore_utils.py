"""Debian's xenstore-utils (libxenstore 4.17) against our daemon over its Unix socket."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from pyxen.xenstore.client import XenstoreClient
from pyxen.xenstore.testing import DaemonProcess

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("xenstore-read") is None, reason="xenstore-utils missing"),
]


def run(daemon: DaemonProcess, *argv: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), env=daemon.env, capture_output=True, text=True,
                          timeout=timeout)


def test_write_read_list_ls_rm(daemon: DaemonProcess, base: str) -> None:
    assert run(daemon, "xenstore-write", f"{base}/a", "hello", f"{base}/b", "2").returncode == 0
    r = run(daemon, "xenstore-read", f"{base}/a")
    assert (r.returncode, r.stdout) == (0, "hello\n")
    r = run(daemon, "xenstore-read", f"{base}/a", f"{base}/b")
    assert r.stdout == "hello\n2\n"
    assert set(run(daemon, "xenstore-list", base).stdout.split()) == {"a", "b"}
    r = run(daemon, "xenstore-ls", "-f", base)
    assert set(r.stdout.splitlines()) == {f'{base}/a = "hello"', f'{base}/b = "2"'}
    assert run(daemon, "xenstore-exists", f"{base}/a").returncode == 0
    assert run(daemon, "xenstore-rm", f"{base}/a").returncode == 0
    r = run(daemon, "xenstore-exists", f"{base}/a")
    assert r.returncode == 1
    r = run(daemon, "xenstore-read", f"{base}/a")
    assert r.returncode == 1
    assert "couldn't read path" in r.stderr


def test_initial_tree_as_seen_by_xenstore_ls(daemon: DaemonProcess) -> None:
    r = run(daemon, "xenstore-ls", "-p", "/local/domain/0")
    assert 'name = "Domain-0"' in r.stdout and "(n0)" in r.stdout
    assert run(daemon, "xenstore-read", "/tool/xenstored").returncode == 0


def test_relative_paths_land_under_dom0(daemon: DaemonProcess, base: str) -> None:
    name = base.rsplit("/", 1)[1]
    assert run(daemon, "xenstore-write", f"rel/{name}", "1").returncode == 0
    assert run(daemon, "xenstore-read", f"/local/domain/0/rel/{name}").stdout == "1\n"


def test_chmod_and_ls_perms(daemon: DaemonProcess, base: str) -> None:
    run(daemon, "xenstore-write", f"{base}/p", "v")
    assert run(daemon, "xenstore-chmod", f"{base}/p", "b0", "r5").returncode == 0
    r = run(daemon, "xenstore-ls", "-p", base)
    assert "(b0,r5)" in r.stdout
    r = run(daemon, "xenstore-chmod", f"{base}/p", "q7")
    assert r.returncode != 0


def test_watch_fires_initial_then_changes_in_order(daemon: DaemonProcess, base: str) -> None:
    run(daemon, "xenstore-write", base, "")
    proc = subprocess.Popen(["xenstore-watch", "-n", "4", base], env=daemon.env,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == base  # initial event
        for child in ("x", "y", "z"):
            run(daemon, "xenstore-write", f"{base}/{child}", "1")
        lines = [proc.stdout.readline().strip() for _ in range(3)]
        assert lines == [f"{base}/x", f"{base}/y", f"{base}/z"]
        assert proc.wait(10) == 0
    finally:
        proc.kill()


def test_big_directory_uses_directory_part(daemon: DaemonProcess, base: str) -> None:
    with XenstoreClient(daemon.socket) as xs:
        names = {f"node-with-a-long-name-{i:05d}" for i in range(300)}
        xs.transact(lambda t: [t.write(f"{base}/{n}", b"") for n in names])
    r = run(daemon, "xenstore-list", base)
    assert r.returncode == 0, r.stderr
    assert set(r.stdout.split()) == names


def test_error_names_reach_libxenstore(daemon: DaemonProcess, base: str) -> None:
    """Xen's C client turns our ERROR names into errno values."""
    import errno

    from pyxen.testing.libxenstore import LibXenstore, available
    if not available():
        pytest.skip("libxenstore.so.4 missing")
    with LibXenstore(daemon.socket) as lib:
        cases = [
            (lambda: lib.read(f"{base}/missing"), errno.ENOENT),
            (lambda: lib.rm(f"{base}/missing-parent/child"), errno.ENOENT),
            (lambda: lib.write(f"{base}/bad path", b"1"), errno.EINVAL),
            (lambda: lib.rm("/"), errno.EINVAL),
            (lambda: lib.read("x" * 3000), errno.EINVAL),
        ]
        for call, expected in cases:
            with pytest.raises(OSError) as info:
                call()
            assert info.value.errno == expected
        lib.write(f"{base}/v", b"a\0b")
        assert lib.read(f"{base}/v") == b"a\0b"
    r = run(daemon, "xenstore-rm", f"{base}/missing-parent/child")
    assert r.returncode == 1 and "could not remove path" in r.stderr


def test_forced_conflict_through_libxenstore(daemon: DaemonProcess, base: str) -> None:
    """test-xenstore's "ta err": read in tx, outside write, tx write -> EAGAIN at commit."""
    import errno

    from pyxen.testing.libxenstore import LibXenstore, available
    if not available():
        pytest.skip("libxenstore.so.4 missing")
    with LibXenstore(daemon.socket) as a, LibXenstore(daemon.socket) as b:
        a.write(f"{base}/a", b"a")
        tx = a.transaction_start()
        assert a.read(f"{base}/a", tx) == b"a"
        b.write(f"{base}/a", b"b")
        assert a.read(f"{base}/a", tx) == b"a"  # the snapshot
        a.write(f"{base}/a", b"c", tx)
        assert a.read(f"{base}/a", tx) == b"c"
        with pytest.raises(OSError) as info:
            a.transaction_end(tx)
        assert info.value.errno == errno.EAGAIN
        assert b.read(f"{base}/a") == b"b"
        tx = a.transaction_start()  # and a clean retry commits
        a.write(f"{base}/a", a.read(f"{base}/a", tx) + b"!", tx)
        a.transaction_end(tx)
        assert b.read(f"{base}/a") == b"b!"


def test_permission_denial_through_a_domain_socket(daemon: DaemonProcess, base: str) -> None:
    """libxenstore on domain 9's own socket is denied what Dom0 owns."""
    with XenstoreClient(daemon.socket) as xs:
        xs.introduce(9)
        xs.write(f"{base}/secret", b"s")
        xs.write("/local/domain/9/mine", b"m")
        xs.set_perms("/local/domain/9", ["n9", "r0"])
        xs.set_perms("/local/domain/9/mine", ["n9"])
    env = {**daemon.env, "XENSTORED_PATH": str(daemon.domain_socket(9))}
    try:
        r = subprocess.run(["xenstore-read", f"{base}/secret"], env=env, capture_output=True,
                           text=True, timeout=10)
        assert r.returncode == 1 and "couldn't read path" in r.stderr
        from pyxen.testing.libxenstore import LibXenstore
        with LibXenstore(daemon.domain_socket(9)) as lib:
            with pytest.raises(PermissionError):
                lib.read(f"{base}/secret")
            with pytest.raises(PermissionError):
                lib.write("/local/domain/0/name", b"evil")
            assert lib.read("/local/domain/9/mine") == b"m"
        r = subprocess.run(["xenstore-read", "mine"], env=env, capture_output=True, text=True,
                           timeout=10)
        assert (r.returncode, r.stdout) == (0, "m\n")
    finally:
        with XenstoreClient(daemon.socket) as xs:
            xs.release(9)
