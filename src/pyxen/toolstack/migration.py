"""xl's migration protocol (tools/xl/xl.h, xl_migrate.c): the fixed messages the sender and
the receiver exchange around the domain stream, the command the sender runs to reach the
receiver (the "rune"), and exact reads and writes on the pipes, each with a timeout.

The wire, in order (S: ``xl migrate``, R: ``xl migrate-receive`` at the other end of the rune):

1. R -> S  BANNER (54 bytes, no NUL)
2. S -> R  xl's save-file header with the domain config (savefile.encode)
3. S -> R  the domain stream (QEMU's migration stream, live)
4. R -> S  READY (34 bytes with its NUL): the domain is built, paused, as ``<name>--incoming``
5. S -> R  GO (44 with NUL): the sender renamed its copy ``<name>--migratedaway``; point of no return
6. R -> S  REPORT (39 with NUL) and one status byte: 0, or minus libxl's error code
7. (status not 0) R -> S  GO again: the receiver destroyed its copy, the sender may resume
"""

from __future__ import annotations

import fcntl
import os
import select
import time
from dataclasses import replace
from typing import Callable

from ..hypervisor.client import XenCtrl
from ..hypervisor.errors import HypercallError
from ..paths import Paths
from . import domain as libxl
from . import one_line
from . import libxl_json, savefile
from .config import ConfigError, DomainConfig
from .devices import DeviceSpecError

BANNER = b"xl migration receiver ready, send binary domain data.\n"
READY = b"domain received, ready to unpause\0"
GO = b"domain is yours, you are cleared to unpause\0"
REPORT = b"my copy unpause results are as follows\0"
assert (len(BANNER), len(READY), len(GO), len(REPORT)) == (54, 34, 44, 39)

#: Stream names in xl's messages: the sender reads the receiver's, the receiver reads the
#: sender's and writes its acks.
RECEIVER_STREAM = "migration receiver stream"
SENDER_STREAM = "migration stream"
ACK_STREAM = "migration ack stream"
#: The source and target names while the domain is in flight (xl_migrate.c).
AWAY_SUFFIX = "--migratedaway"
INCOMING_SUFFIX = "--incoming"
#: libxl's ERROR_FAIL and ERROR_INVAL, as the receiver's status byte and messages carry them.
ERROR_FAIL = -3
ERROR_INVAL = -6
#: How long one side waits for the other's next message (ssh's connect and the far xl's start
#: for the banner; the far side's hypercalls for the acks). The stream itself is bounded by the
#: hypervisor (wire.SAVE_TIMEOUT).
MESSAGE_TIMEOUT = 120.0
#: xl waits this long for its transport child (ssh) after a failure (migration_child_report).
CHILD_WAIT = 2.0


#: fcntl F_SETPIPE_SZ (Linux): a pipe's capacity. The stream's pipe is widened to PIPE_SIZE
#: (Linux's default pipe-max-size for an unprivileged process), so QEMU writes the stream in
#: large pieces instead of waking the reader every 64 KiB.
F_SETPIPE_SZ = 1031
PIPE_SIZE = 1 << 20


def widen_pipe(fd: int) -> None:
    """Give the stream's pipe PIPE_SIZE bytes of room; anything else (a socket, a tty, a
    pipe-max-size set lower) is left as it is: only the copy's pace depends on it."""
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass


class StreamError(Exception):
    """A message could not be read or written; str() is xl's (libxl's) one-line message."""


def rune(ssh_command: str, host: str, *, tty: bool = False, timestamps: bool = False,
         verbose: int = 0, no_monitor: bool = False, debug: bool = False, paused: bool = False) -> str:
    """The shell command ``xl migrate`` runs to reach the receiver (main_migrate): ``exec
    <ssh> <host> xl[ -t][ -T][ -v...] migrate-receive[ -e][ -d][ -p]``; with an empty
    ``ssh_command``, ``host`` is the whole command, verbatim."""
    if not ssh_command:
        return host
    return (f"exec {ssh_command} {host} xl{' -t' if tty else ''}{' -T' if timestamps else ''}"
            f"{' -' + 'v' * min(verbose, 4) if verbose else ''} migrate-receive"
            f"{' -e' if no_monitor else ''}{' -d' if debug else ''}{' -p' if paused else ''}")


def read_exactly(fd: int, n: int, stream: str, what: str, timeout: float = MESSAGE_TIMEOUT) -> bytes:
    """``n`` bytes from ``fd`` (libxl_read_exactly), within ``timeout`` seconds in all.

    :raise StreamError: end of file, an error, or the time ran out, with libxl's words.
    """
    data = b""
    deadline = time.monotonic() + timeout
    while len(data) < n:
        left = deadline - time.monotonic()
        try:
            ready, _, _ = select.select([fd], [], [], max(left, 0))
            if not ready:
                raise StreamError(f"timed out after {timeout:g} s reading {what} from {stream}")
            chunk = os.read(fd, n - len(data))
        except BlockingIOError:
            continue
        except OSError as err:
            raise StreamError(f"failed to read {what} from {stream}: {err.strerror}") from err
        if not chunk:
            raise StreamError(f"file/stream truncated reading {what} from {stream}")
        data += chunk
    return data


def write_exactly(fd: int, data: bytes, stream: str, what: str, timeout: float = MESSAGE_TIMEOUT) -> None:
    """All of ``data`` to ``fd`` (libxl_write_exactly), within ``timeout`` seconds.

    :raise StreamError: the other end is gone (EPIPE: SIGPIPE is ignored) or never read.
    """
    view = memoryview(data)
    deadline = time.monotonic() + timeout
    while view:
        try:
            _, ready, _ = select.select([], [fd], [], max(deadline - time.monotonic(), 0))
            if not ready:
                raise StreamError(f"timed out after {timeout:g} s writing {what} to {stream}")
            view = view[os.write(fd, view):]
        except BlockingIOError:
            continue
        except OSError as err:
            raise StreamError(f"failed to write {what} to {stream}: {err.strerror}") from err


def read_fixed(fd: int, expected: bytes, what: str, stream: str, rune_text: str | None = None,
               timeout: float = MESSAGE_TIMEOUT) -> None:
    """One of the fixed messages (migrate_read_fixedmessage).

    :raise StreamError: it could not be read, or differs: ``<stream> contained unexpected data
        instead of <what>``, and (sender) ``(command run was: <rune> )`` on a second line.
    """
    got = read_exactly(fd, len(expected), stream, what, timeout)
    if got != expected:
        text = f"{stream} contained unexpected data instead of {what}"
        if rune_text is not None:
            text += f"\n(command run was: {rune_text} )"
        raise StreamError(text)


class TimedReader:
    """A descriptor as savefile.decode reads it (the header at the start of the stream), with
    MESSAGE_TIMEOUT on each read. Unbuffered: it never takes a byte past what is asked, so the
    stream after the header stays in the descriptor for QEMU."""

    def __init__(self, fd: int, stream: str, timeout: float = MESSAGE_TIMEOUT) -> None:
        self.fd, self.stream, self.timeout = fd, stream, timeout

    def read(self, n: int, /) -> bytes:
        """Up to ``n`` bytes; b"" at the end of the stream.
        :raise StreamError: nothing came within the timeout, or a read error."""
        while True:
            try:
                ready, _, _ = select.select([self.fd], [], [], self.timeout)
                if not ready:
                    raise StreamError(f"timed out after {self.timeout:g} s reading header from {self.stream}")
                return os.read(self.fd, n)
            except BlockingIOError:
                continue
            except OSError as err:
                raise StreamError(f"failed to read header from {self.stream}: {err.strerror}") from err


def status_byte(rc: int) -> bytes:
    """The receiver's status byte: ``-rc`` as a C char (0: started)."""
    return bytes([(-rc) & 0xFF])


def status_code(byte: int) -> int:
    """The status byte as the sender prints it (``%d`` of a signed char)."""
    return byte - 256 if byte > 127 else byte


#: Where each side's messages go: one line at a time (xl's stderr, or a caller's list).
Say = Callable[[str], None]


def send(xc: XenCtrl, paths: Paths, ref: libxl.DomainRef, cfg: DomainConfig, send_fd: int, recv_fd: int,
         say: Say, transport_done: Callable[[], None], rune_text: str | None = None) -> int:
    """xl_migrate.c:migrate_domain: the sender's side of the protocol on ``send_fd`` (to the
    receiver) and ``recv_fd`` (from it), with xl's messages, and who resumes or destroys the
    domain on each path. ``cfg`` is the config sent in the header (the receiver builds from
    it). ``transport_done`` closes the sender's end and waits for the transport, on the paths
    where xl does (migration_child_report); ``rune_text`` is named in a protocol error.
    Returns xl's exit status: 0 when the domain runs at the receiver and is gone here."""

    def failed_resume() -> int:
        transport_done()
        say("Migration failed, resuming at sender.")
        try:
            xc.call("domctl.unpausedomain", domid=ref.domid)
        except HypercallError as err:
            say(f"libxl: error: {one_line(str(err))}")
        return 1

    def failed_badly() -> int:
        say("** Migration failed during final handshake **\n"
            "Domain state is now undefined !\n"
            "Please CHECK AT BOTH ENDS for running instances, before renaming and\n"
            " resuming at most one instance.  Two simultaneous instances of the domain\n"
            " would probably result in SEVERE DATA LOSS and it is now your\n"
            " responsibility to avoid that.  Sorry.")
        transport_done()
        return 1

    try:
        read_fixed(recv_fd, BANNER, "banner", RECEIVER_STREAM, rune_text)
        header = savefile.encode(cfg.to_json())
        write_exactly(send_fd, header, SENDER_STREAM, "header")
    except StreamError as err:
        say(str(err))
        transport_done()
        return 1
    say(f"Saving to migration stream new xl format (info {savefile.info_of(header)})")
    try:
        xc.call("dm_op.migrate_send", domid=ref.domid, live=True, fds=[send_fd])
    except HypercallError as err:
        say(f"libxl: error: {one_line(str(err))}")
        say(f"migration sender: libxl_domain_suspend failed (rc={ERROR_FAIL})")
        return failed_resume()
    try:
        read_fixed(recv_fd, READY, "ready message", RECEIVER_STREAM, rune_text)
    except StreamError as err:
        say(str(err))
        return failed_resume()
    say("migration sender: Target has acknowledged transfer.")
    away = ref.name + AWAY_SUFFIX
    try:
        libxl.rename(xc, paths, ref.domid, ref.name, away)
    except libxl.DomainBuildError as err:
        say(f"libxl: error: {err}")
        return failed_resume()
    # The point of no return: once GO may have reached the receiver, two copies could run.
    say("migration sender: Giving target permission to start.")
    try:
        write_exactly(send_fd, GO, SENDER_STREAM, "GO message")
        read_fixed(recv_fd, REPORT, "success/failure report message", RECEIVER_STREAM, rune_text)
        status = read_exactly(recv_fd, 1, ACK_STREAM, "success/failure status")[0]
    except StreamError as err:
        say(str(err))
        return failed_badly()
    if status:
        say(f"migration sender: Target reports startup failure (status code {status_code(status)}).")
        try:
            read_fixed(recv_fd, GO, "permission for sender to resume", RECEIVER_STREAM, rune_text)
        except StreamError as err:
            say(str(err))
            return failed_badly()
        say("migration sender: Trying to resume at our end.")
        try:
            libxl.rename(xc, paths, ref.domid, away, ref.name)
        except libxl.DomainBuildError as err:
            say(f"libxl: error: {err}")
        try:
            xc.call("domctl.unpausedomain", domid=ref.domid)
            say("migration sender: Resumed OK.")
        except HypercallError as err:
            say(f"libxl: error: {one_line(str(err))}")
        say("Migration failed due to problems at target.")
        return 1
    say("migration sender: Target reports successful startup.")
    libxl.destroy(xc, paths, ref.domid)
    say("Migration successful.")
    return 0


def receive(xc: XenCtrl, paths: Paths, recv_fd: int, send_fd: int, say: Say, paused: bool = False,
            debug: bool = False, run_scripts: bool = True, on_built: Callable[[int], None] | None = None) -> int:
    """xl_migrate.c:migrate_receive: the receiver's side, reading the sender on ``recv_fd``
    and answering on ``send_fd``, with xl's messages. The domain is built paused as
    ``<name>--incoming``, renamed and (unless ``paused``) unpaused when the sender says go.
    ``debug`` says the config it builds from; ``run_scripts`` is xl.conf's
    run_hotplug_scripts; ``on_built`` is told the new domid once the domain exists.
    Returns xl's exit status (0 also when the start failed and the sender got its domain back,
    as xl's migrate-receive does)."""
    widen_pipe(recv_fd)
    say("migration target: Ready to receive domain.")
    try:
        write_exactly(send_fd, BANNER, ACK_STREAM, "banner")
    except StreamError as err:
        say(str(err))
        return 1
    source = "<incoming migration stream>"
    try:
        header = savefile.decode(TimedReader(recv_fd, SENDER_STREAM), source)
        say(f"Loading new save file {source} (new xl fmt info {header.info()})")
        if header.config is None:
            raise savefile.SaveFileError("Config file not specified and none in save file")
        say(" Savefile contains xl domain config in JSON format")
        say("Parsing config from <saved>")
        cfg = DomainConfig.from_json(header.config)
    except (savefile.SaveFileError, StreamError, ConfigError, TypeError) as err:
        say(str(err))
        say(f"migration target: Domain creation failed (code {ERROR_INVAL}).")
        return 1
    incoming = replace(cfg, name=cfg.name + INCOMING_SUFFIX)
    if debug:  # xl_vmcontrol.c prints the config once it has the --incoming name
        try:
            say(libxl_json.create_dryrun(incoming).rstrip("\n"))
        except DeviceSpecError as err:
            say(str(err))
    try:
        domid = libxl.create(xc, paths, incoming, paused=True, migrate_fd=recv_fd, run_scripts=run_scripts)
    except (libxl.DomainBuildError, HypercallError) as err:
        say(f"libxl: error: {one_line(str(err))}")
        say(f"migration target: Domain creation failed (code {ERROR_FAIL}).")
        return 1
    finally:
        os.set_blocking(recv_fd, True)  # (QEMU set the shared description non-blocking)
    if on_built is not None:
        on_built(domid)
    say("migration target: Transfer complete, requesting permission to start domain.")
    try:
        write_exactly(send_fd, READY, ACK_STREAM, "ready message")
    except StreamError as err:
        say(str(err))
        return 1
    rc = 0
    try:
        read_fixed(recv_fd, GO, "GO message", SENDER_STREAM)
    except StreamError as err:
        say(str(err))
        rc = 1  # (migrate_read_fixedmessage's failure, as xl sends it)
    if rc == 0:
        say("migration target: Got permission, starting domain.")
        try:
            libxl.rename(xc, paths, domid, incoming.name, cfg.name)
            if not paused:
                xc.call("domctl.unpausedomain", domid=domid)
            say("migration target: Domain started successsfully.")
        except (libxl.DomainBuildError, HypercallError) as err:
            say(f"libxl: error: {one_line(str(err))}")
            rc = ERROR_FAIL
    try:
        write_exactly(send_fd, REPORT, ACK_STREAM, "success/failure report")
        write_exactly(send_fd, status_byte(rc), ACK_STREAM, "success/failure code")
    except StreamError as err:
        say(str(err))
        return 1
    if rc:
        say("migration target: Failure, destroying our copy.")
        try:
            libxl.destroy(xc, paths, domid)
        except HypercallError:
            say(f"migration target: Failed to destroy our copy (code {ERROR_FAIL}).")
            return 1
        say("migration target: Cleanup OK, granting sender permission to resume.")
        try:
            write_exactly(send_fd, GO, ACK_STREAM, "permission to sender to have domain back")
        except StreamError as err:
            say(str(err))
            return 1
    return 0
