"""xapi: the XenAPI server, a Dom0 service (``python -m pyxen.xapi``).

aiohttp serves XML-RPC on ``/`` and ``/RPC2`` and JSON-RPC on ``/jsonrpc`` over HTTP, HTTPS
(a self-signed certificate is made on first start) and the Unix socket
``$PYXEN_ROOT/run/xapi.sock`` (XenAPI.xapi_local()'s /var/lib/xcp/xapi; calls over it log in
without a password, as xapi's do). The addresses it got are written to
``$PYXEN_ROOT/xapi/address`` for ``pyxen host status``.

Everything a client sees goes through one path: codec -> Dispatcher.call -> handler, with
ApiError turned into the wire's failure at this one place.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Coroutine

from aiohttp import web

from ..daemon import arguments, daemon_pid, daemon_process
from ..hypervisor.hostcfg import HostConfig, XapiConfig
from ..paths import Paths
from . import wire
from .db import Database
from .dispatch import Dispatcher
from .errors import ApiError
from .state import database_file, read_addresses, state_dir, write_addresses
from .tasks import Tasks

log = logging.getLogger("xapi")

#: xapi's http_limit_max_rpc_size.
MAX_RPC_SIZE = 300 * 1024
CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Headers": "content-type",
        "Access-Control-Allow-Methods": "POST, OPTIONS"}


class Xapi:
    """The server's state: database, dispatcher, tasks, event waiters, background jobs."""

    def __init__(self, paths: Paths, db: Database | None = None) -> None:
        self.paths = paths
        state_dir(paths).mkdir(parents=True, exist_ok=True)
        self.db = db or Database(database_file(paths))
        self.executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="xapi")
        self.dispatcher = Dispatcher(self)
        self.tasks = Tasks(self)
        self.registrations: dict[str, dict[str, Any]] = {}
        self.host_ref = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self.background: list[Callable[["Xapi"], Coroutine[Any, Any, None]]] = []
        self.db.listeners.append(self._changed)

    # -- change notification (db writes come from worker threads too) ------------------------

    def _changed(self, gen: int) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._wake)
        except RuntimeError:
            pass

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    async def wait_change(self, gen: int, timeout: float) -> None:
        """Return when the database moves past ``gen`` or ``timeout`` passes."""
        if self.db.committed > gen:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            pass

    def end_session(self, session: str) -> None:
        self.registrations.pop(session, None)
        if self.db.exists("session", session):
            self.db.destroy("session", session)

    # -- one call --------------------------------------------------------------------------

    async def handle(self, call: wire.Call, local: bool) -> tuple[bool, Any]:
        """(True, value) or (False, error description)."""
        try:
            value = await self.dispatcher.call(call.method, call.params, {"local": local})
            return True, value
        except ApiError as err:
            return False, err.description
        except Exception as err:  # a bug in a handler: xapi's INTERNAL_ERROR, logged
            log.exception("%s failed", call.method)
            return False, ["INTERNAL_ERROR", f"{type(err).__name__}: {err}"]

    def app(self, local: bool = False) -> web.Application:
        app = web.Application(client_max_size=MAX_RPC_SIZE)

        async def xmlrpc(request: web.Request) -> web.Response:
            try:
                call = wire.decode_xmlrpc(await request.read())
            except wire.WireError as err:
                return web.Response(status=500, text=f"<html><body>{err}</body></html>",
                                    content_type="text/html", headers=CORS)
            ok, value = await self.handle(call, local)
            body = wire.xmlrpc_success(value) if ok else wire.xmlrpc_failure(value)
            return web.Response(body=body, content_type="text/xml", headers=CORS)

        async def jsonrpc(request: web.Request) -> web.Response:
            try:
                call = wire.decode_jsonrpc(await request.read())
            except wire.WireError as err:
                return web.Response(status=500, text=str(err), headers=CORS)
            ok, value = await self.handle(call, local)
            body = wire.jsonrpc_success(call, value) if ok else wire.jsonrpc_failure(call, value)
            return web.Response(body=body, content_type="application/json", headers=CORS)

        async def options(request: web.Request) -> web.Response:
            return web.Response(status=200, headers=CORS)

        for path in ("/", "/RPC2"):
            app.router.add_post(path, xmlrpc)
            app.router.add_route("OPTIONS", path, options)
        app.router.add_post("/jsonrpc", jsonrpc)
        app.router.add_route("OPTIONS", "/jsonrpc", options)
        return app

    # -- running ---------------------------------------------------------------------------

    def start_state(self, memory_total: int, cpus: int) -> None:
        from .seed import seed
        self.host_ref = seed(self.db, self.paths.root, memory_total, cpus)
        self.tasks.fail_orphans()
        self.clear_orphan_operations()

    def clear_orphan_operations(self) -> None:
        """Operations a previous xapi was running when it died are over: their threads are
        gone. The reconcile poll then sets each VM's power state from its domain."""
        from .vm import refresh
        for cls in ("VM", "VBD", "VIF", "VDI", "SR", "host", "pool", "network", "task"):
            for ref, rec in self.db.records(cls).items():
                if rec.get("current_operations"):
                    self.db.set(cls, ref, current_operations={})
        for ref in self.db.refs("VM"):
            refresh(self.db, ref)

    async def serve(self, cfg: XapiConfig, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        runners = []
        addresses = []
        for local, kind in ((False, "tcp"), (True, "unix")):
            runner = web.AppRunner(self.app(local), access_log=None, handle_signals=False)
            await runner.setup()
            runners.append(runner)
            if kind == "unix":
                sock_path = self.paths.xapi_socket
                sock_path.unlink(missing_ok=True)
                site: web.BaseSite = web.UnixSite(runner, str(sock_path))
                await site.start()
                os.chmod(sock_path, 0o600)
                continue
            previous = {u.split("://")[0]: int(u.rstrip("/").rsplit(":", 1)[1])
                        for u in read_addresses(self.paths) if u.rstrip("/").rsplit(":", 1)[-1].isdigit()}
            for kind, port in (("http", cfg.port), ("https", cfg.https_port)):
                if port < 0:
                    continue
                ssl_ctx = None
                if kind == "https":
                    ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                    ssl_ctx.load_cert_chain(certificate(self.paths, cfg))
                # Port 0 takes a free port, but the one a previous xapi of this host had is
                # tried first, so clients of a restarted xapi find it where it was.
                for attempt in ([previous[kind], 0] if port == 0 and previous.get(kind) else [port]):
                    tcp = web.TCPSite(runner, cfg.bind, attempt, ssl_context=ssl_ctx, reuse_address=True)
                    try:
                        await tcp.start()
                        break
                    except OSError:
                        if attempt == 0 or port != 0:
                            raise
                addresses.append((kind, _bound(tcp)))
        write_addresses(self.paths, addresses)
        jobs = [asyncio.create_task(job(self)) for job in self.background]
        log.info("xapi listening on %s", ", ".join(f"{k}://{a}/" for k, a in addresses))
        try:
            await stop.wait()
        finally:
            for j in jobs:
                j.cancel()
            for r in runners:
                await r.cleanup()
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.db.close()


def _bound(site: web.TCPSite) -> str:
    server: Any = site._server  # aiohttp keeps the asyncio server here; its sockets know the port
    sock = server.sockets[0] if server is not None and server.sockets else None
    host, port = sock.getsockname()[:2] if sock else ("?", 0)
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"{host}:{port}"


def certificate(paths: Paths, cfg: XapiConfig) -> Path:
    """The TLS certificate+key PEM; a self-signed one is made on first use (openssl, as
    xapi's first boot runs generate_ssl_cert)."""
    pem = cfg.certificate if cfg.certificate.is_absolute() else paths.root / cfg.certificate
    if not pem.exists():
        pem.parent.mkdir(parents=True, exist_ok=True)
        tmp = pem.with_suffix(".tmp")
        name = socket.gethostname()
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
                        "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name},IP:127.0.0.1",
                        "-keyout", str(tmp), "-out", str(tmp.with_suffix(".crt"))],
                       check=True, capture_output=True, timeout=60)
        with open(tmp, "a") as f:
            f.write(tmp.with_suffix(".crt").read_text())
        tmp.with_suffix(".crt").unlink()
        os.chmod(tmp, 0o600)
        os.replace(tmp, pem)
    return pem


def host_facts(paths: Paths) -> tuple[int, int]:
    """(memory bytes, CPUs) of the host, from the hypervisor when it answers. ``pyxen host
    start`` launches the daemons together, so a hypervisor whose pid file names a live process
    but whose socket does not answer yet is starting: it is waited for (up to
    HYPERVISOR_START_WAIT) rather than passed over."""
    from ..hypervisor.client import HypervisorUnavailable, XenCtrl
    deadline = time.monotonic() + HYPERVISOR_START_WAIT
    while True:
        try:
            with XenCtrl(paths.hypervisor_socket, timeout=5.0) as ctrl:
                info = ctrl.call("sysctl.physinfo")
            return int(info["total_pages"]) * 4096, int(info["nr_cpus"])
        except HypervisorUnavailable:  # no socket yet, or nothing accepting on it
            if daemon_pid(paths, "hypervisor") is not None and time.monotonic() < deadline:
                time.sleep(0.02)
                continue
        except Exception:
            pass
        # no hypervisor (unit tests): Linux's own view
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return int(pages), os.cpu_count() or 1


#: How long xapi waits at start for a hypervisor that is starting (services.READY_TIMEOUT).
HYPERVISOR_START_WAIT = 60.0


def main(argv: list[str] | None = None) -> int:
    ap = arguments("xapi", "pyxen's XenAPI server")
    ns = ap.parse_args(argv)
    paths = Paths.from_env(ns.root)
    paths.ensure()
    with daemon_process(paths, "xapi"):
        cfg = HostConfig.load(paths.host_cfg).xapi
        from . import handlers  # noqa: F401  (registers every behaviour module)
        server = Xapi(paths)
        handlers.install(server)
        server.start_state(*host_facts(paths))

        async def run() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            await server.serve(cfg, stop)

        asyncio.run(run())
    return 0
