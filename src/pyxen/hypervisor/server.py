"""The control socket: Xen's /dev/xen/privcmd for pyxen, and the daemon's main loop.

Only Dom0 may make hypercalls. Xen enforces it by who can open privcmd; pyxen by the peer's
credentials (SO_PEERCRED): a peer that is not root gets one EPERM reply and is disconnected.
The socket itself is world-connectable on purpose, so the refusal is the hypervisor's, with a
clear error, and not a bare "permission denied" from the file system.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import struct
import sys
from typing import Any, Callable

from ..daemon import arguments, daemon_process
from ..paths import Paths
from . import accel as accelmod
from . import cpupool_op, dmop, evtchn, gnttab, memop, params, sched_credit, sched_rtds, topology, vcpu  # noqa: F401  (they register their hypercalls)
from .core import CALLER, HYPERCALLS, ConRing, Hypervisor
from .errors import HypercallError, InvalidArgument, PermissionDenied
from .hostcfg import HostConfig, HostConfigError
from .wire import MAX_FDS, MAX_LINE, SCM_RIGHTS_ARG, VIRQ_DOM_EXC_LINE, WireError, decode_request, encode

log = logging.getLogger(__name__)

#: How long a client that announced descriptors may take to send them.
FD_TIMEOUT = 10.0


def peer_uid(writer: asyncio.StreamWriter) -> int:
    sock: socket.socket = writer.get_extra_info("socket")
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


async def dispatch(hv: Hypervisor, op: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run one hypercall; errors become their wire form here and nowhere else."""
    handler = HYPERCALLS.get(op)
    try:
        if handler is None:
            raise HypercallError(f"unknown hypercall '{op}'", op)
        return {"result": await handler(hv, args)}
    except HypercallError as err:
        if not err.op:
            err.op = op
        return {"error": err.to_wire()}
    except asyncio.CancelledError:
        raise
    except Exception as err:  # a bug: answer EIO, keep serving, keep the traceback
        log.exception("hypercall %s failed", op)
        return {"error": HypercallError(f"internal error in {op}: {err}", op).to_wire()}


async def serve_client(hv: Hypervisor, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    token = object()  # this connection, as the builder of the domains it creates
    CALLER.set(token)
    notify: Callable[[], None] | None = None
    try:
        uid = peer_uid(writer)
        if uid != 0:
            # Answer the first request (so the refusal matches its id and the peer is not cut
            # off mid-send), then hang up.
            line = await asyncio.wait_for(reader.readline(), 5.0)
            try:
                req_id = decode_request(line).id
            except WireError:
                req_id = 0
            err = PermissionDenied(f"hypercalls are for Dom0 (root) only; peer uid {uid} refused", "privcmd")
            writer.write(encode({"id": req_id, "error": err.to_wire()}))
            await writer.drain()
            return
        while line := await reader.readline():
            try:
                req = decode_request(line)
            except WireError as err:
                writer.write(encode({"id": 0, "error": {"errno": "EINVAL", "message": str(err), "op": ""}}))
                await writer.drain()
                continue
            if req.op == "event_channel_op.bind_virq":
                reply = bind_virq(hv, req.args, writer)
                if "result" in reply and notify is None:
                    notify = reply.pop("notify")
            else:
                # Descriptors only ever come through SCM_RIGHTS: an "fds" on the wire is dropped.
                req.args.pop("fds", None)
                wanted = req.args.pop(SCM_RIGHTS_ARG, 0)
                if wanted:
                    try:
                        req.args["fds"] = await receive_fds(writer, req.id, wanted)
                    except HypercallError as err:
                        writer.write(encode({"id": req.id, "error": err.to_wire()}))
                        return  # the byte stream may be out of step: hang up
                try:
                    reply = await dispatch(hv, req.op, req.args)
                finally:
                    for fd in req.args.get("fds", ()):
                        os.close(fd)
            reply["id"] = req.id
            writer.write(encode(reply))
            await writer.drain()
    except (ConnectionError, ValueError, asyncio.TimeoutError):  # ValueError: a line over the limit
        pass
    finally:
        if notify is not None:
            hv.dom_exc_subscribers.discard(notify)
        hv.builder_gone(token)
        writer.close()


async def receive_fds(writer: asyncio.StreamWriter, req_id: int, wanted: object) -> list[int]:
    """The descriptors a request announced (``scm_rights``: how many): ask for them with a
    ``send_fds`` line, then read one byte with its SCM_RIGHTS straight from the socket.

    The stream reader is paused first, so it cannot swallow that byte (and, with it, close the
    descriptors unseen); the client sends nothing after its request until it reads the
    ``send_fds`` line, so nothing else is in between.

    :raise HypercallError: a bad count, or no descriptors within FD_TIMEOUT.
    """
    op = "privcmd"
    if not isinstance(wanted, int) or isinstance(wanted, bool) or not 0 < wanted <= MAX_FDS:
        raise InvalidArgument(f"'{SCM_RIGHTS_ARG}' must be 1 to {MAX_FDS}", op)
    transport = writer.transport
    assert isinstance(transport, asyncio.ReadTransport)
    transport.pause_reading()
    loop = asyncio.get_running_loop()
    raw = socket.socket(fileno=os.dup(writer.get_extra_info("socket").fileno()))
    got: asyncio.Future[list[int]] = loop.create_future()

    def readable() -> None:
        try:
            data, fds, _flags, _addr = socket.recv_fds(raw, 1, wanted)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:
            if not got.done():
                got.set_exception(err)
            return
        if not got.done() and data:
            got.set_result(fds)
        elif not got.done():
            got.set_exception(ConnectionError("the client closed the connection"))
        else:
            for fd in fds:
                os.close(fd)

    try:
        writer.write(encode({"id": req_id, "send_fds": wanted}))
        await writer.drain()
        loop.add_reader(raw.fileno(), readable)
        try:
            fds = await asyncio.wait_for(got, FD_TIMEOUT)
        except (asyncio.TimeoutError, OSError) as err:
            raise HypercallError(f"the descriptors announced were not received: {err or 'timeout'}",
                                 op) from None
        finally:
            loop.remove_reader(raw.fileno())
        if len(fds) != wanted:
            for fd in fds:
                os.close(fd)
            raise InvalidArgument(f"{wanted} descriptor(s) announced, {len(fds)} received", op)
        return fds
    finally:
        raw.close()
        transport.resume_reading()


def bind_virq(hv: Hypervisor, args: dict[str, Any], writer: asyncio.StreamWriter) -> dict[str, Any]:
    """EVTCHNOP_bind_virq for VIRQ_DOM_EXC: from now on the connection also carries one line
    ``{"virq": "dom_exc"}`` each time a domain shuts down or dies (xenstored binds it and turns
    it into @releaseDomain). Lines without an ``id`` are these notifications."""
    if args.get("virq") != "dom_exc":
        return {"error": InvalidArgument(f"unknown virq {args.get('virq')!r} (dom_exc)",
                                         "event_channel_op.bind_virq").to_wire()}

    def notify() -> None:
        if not writer.is_closing():
            writer.write(VIRQ_DOM_EXC_LINE)

    hv.dom_exc_subscribers.add(notify)
    return {"result": {"virq": "dom_exc"}, "notify": notify}


async def run(paths: Paths) -> int:
    paths.ensure()
    conring = ConRing()
    logging.getLogger("pyxen").addHandler(conring)
    try:
        cfg = HostConfig.load(paths.host_cfg)
    except HostConfigError as err:
        log.error("%s", err)
        print(f"hypervisor: {err}", file=sys.stderr)
        return 1
    log.info("pyxen hypervisor starting; command line: %s", cfg.bootline.text)
    choice = accelmod.choose(cfg.accel, cfg.qemu)
    log.info("CPU virtualization: %s (%s)", choice.accel, choice.reason)
    hv = Hypervisor(paths, cfg, choice, conring)
    log.info("Memory: %d MiB total, Dom0 %d MiB, %d vCPU(s)", hv.pool.total_kb >> 10,
             hv.dom0.memory_kb >> 10, hv.dom0.max_vcpus)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(hv, stop)
    return 0


async def serve(hv: Hypervisor, stop: asyncio.Event) -> None:
    """Re-adopt running domains, then answer hypercalls on the control socket until ``stop``.
    On the way out every guest is left running for the next start to re-adopt."""
    await hv.adopt_domains()
    sock = hv.paths.hypervisor_socket
    sock.unlink(missing_ok=True)
    server = await asyncio.start_unix_server(lambda r, w: serve_client(hv, r, w), path=str(sock),
                                             limit=MAX_LINE)
    os.chmod(sock, 0o666)
    log.info("listening on %s", sock)
    async with server:
        await stop.wait()
    log.info("stopping; %d guest(s) left running for the next start to re-adopt", len(hv.models))
    await hv.shutdown_all_models()
    if not hv.models:
        hv.cpu.remove_base()
        hv.cpuset.remove_base()
    sock.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    ns = arguments("pyxen-hypervisor", "pyxen hypervisor daemon").parse_args(argv)
    paths = Paths.from_env(ns.root)
    with daemon_process(paths, "hypervisor"):
        return asyncio.run(run(paths))
