"""An asyncio vhost-user back-end ("slave"): one listening socket per device, one session per
front-end connection, the vring state machine, and kick/call eventfds on the event loop.

Spec: QEMU docs/interop/vhost-user.rst ("Ring states", "Front-end message types"), with QEMU 7.2's
observed order (docs/vhost.md section 0). Rings start stopped; a ring starts when it has memory,
addresses and a kick fd, and stops on GET_VRING_BASE. With VHOST_USER_F_PROTOCOL_FEATURES a ring
starts disabled until SET_VRING_ENABLE(1). Requests are processed synchronously in the kick
callback, so a stopped ring never has requests in flight and GET_VRING_BASE can answer at once.

The session is a state machine and refuses what comes out of its order (REPLY_ACK non-zero, or
the connection dropped for a request that needs a reply), changing nothing: ring and memory
requests before SET_OWNER, a second SET_OWNER, feature bits that were not offered, a ring's size
or base changed while it runs, ring addresses before the memory table or outside it, a kick for
a ring with no size or addresses.

Where a ring resumes: at start the device holds no chain, so the next chain to take is the one
after the last used, i.e. the used index in guest memory. SET_VRING_BASE says the same after a
clean stop (it is what GET_VRING_BASE answered); when they differ (QEMU re-sends a stale copy
after the back-end died, ``virtio_queue_restore_last_avail_idx``), the used index wins, as in
libvhost-user. Taking chains again from an older index would hand the driver heads it already
got back ("id N is not a head!").

The device (block/device.py, net/device.py) plugs in through the ``VirtioDevice`` protocol; the
xenbus side (state keys) hears about sessions through ``SessionListener``. This module is the
only one that touches the socket; vhost_user.py is the codec.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import socket
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, Protocol

from .memory import DirtyLog, GuestMemory, GuestMemoryError
from .vhost_user import (MAX_FDS, REPLY_REQUESTS, VHOST_VRING_F_LOG, ConfigRequest, Feature, LogArea,
                         Message, MessageReader, ProtocolFeature, Request, VhostUserError, VringAddr,
                         VringState, encode_reply, encode_u64_reply, unpack_mem_table, vring_file)
from .virtqueue import MAX_QUEUE_SIZE, Virtqueue, VirtqueueError

log = logging.getLogger(__name__)

#: Bytes read per recvmsg; the largest control message is well under this.
RECV_SIZE = 65536
#: Requests a front-end may send before SET_OWNER (QEMU's vhost_user_backend_init probes).
BEFORE_OWNER = frozenset({Request.GET_FEATURES, Request.GET_PROTOCOL_FEATURES, Request.SET_PROTOCOL_FEATURES,
                          Request.GET_QUEUE_NUM, Request.GET_MAX_MEM_SLOTS, Request.SET_OWNER,
                          Request.RESET_OWNER})


class VirtioDevice(Protocol):
    """What a device type offers a session (Firecracker's VirtioDevice, back-end half)."""

    name: str
    #: Device feature bits plus the transport bits this device offers (GET_FEATURES).
    features: int
    protocol_features: int
    num_queues: int
    #: Serve each ring from its own thread (RingWorker) instead of the event loop: a device
    #: that says True has a ``process`` safe to run off the loop.
    ring_thread: bool

    def get_config(self, offset: int, size: int) -> bytes: ...

    def set_config(self, offset: int, data: bytes) -> None: ...

    def process(self, session: "VhostUserSession", index: int, vq: Virtqueue) -> int:
        """Serve ring ``index`` after a kick; return how many chains were used."""
        ...

    def ring_started(self, session: "VhostUserSession", index: int) -> None: ...

    def ring_stopped(self, session: "VhostUserSession", index: int) -> None: ...


class SessionListener(Protocol):
    """The xenbus side of a device: hears when the guest driver goes live or away."""

    def connected(self) -> None: ...

    def disconnected(self) -> None: ...


@dataclass
class Vring:
    """Per-ring state the front-end configures (num, base, addr, fds), and its started queue."""

    index: int
    num: int = 0
    base: int = 0
    addr: VringAddr | None = None
    kick: int | None = None
    call: int | None = None
    err: int | None = None
    enabled: bool = False
    vq: Virtqueue | None = None
    #: The ring's thread when the device serves rings off the loop (BlockDevice).
    worker: "RingWorker | None" = None
    #: Held by the worker while it serves the ring, and by the loop while it changes what the
    #: worker uses (the call fd, the enabled flag, the dirty log), so neither sees half a change.
    lock: threading.Lock = field(default_factory=threading.Lock)


def _close(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


class RingWorker:
    """Serves one started ring from a thread of its own: waits on the kick eventfd, takes and
    serves the chains, raises the call eventfd, and waits again.

    Why: a guest waiting on one request at a time (queue depth 1) sees the back-end's whole
    wake-to-interrupt time as latency, and on the event loop that time includes the selector
    and callback machinery as well as every other device's callbacks. The thread keeps only
    the ring's own work between the kick and the interrupt, and the I/O system calls (which
    release the GIL) do not hold up the loop.

    The loop keeps the session: stopping the ring (GET_VRING_BASE, a new memory table, the
    front-end gone) stops the thread and waits for it, so a stopped ring still has no chain in
    flight and no view into the memory about to be unmapped. The kick eventfd is QEMU's
    non-blocking one (QEMU may read it itself while it stops the device): the thread polls it
    with a second eventfd of its own that wakes it to stop or to look at the ring again."""

    def __init__(self, session: "VhostUserSession", ring: Vring, vq: Virtqueue) -> None:
        assert ring.kick is not None
        self.session = session
        self.ring = ring
        self.vq = vq
        self.kick = ring.kick
        self.wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name=f"{session.device.name}-vq{ring.index}",
                                       daemon=True)

    def start(self) -> None:
        self.thread.start()

    def poke(self) -> None:
        """Look at the ring again (it was enabled, or chains may be queued already)."""
        os.eventfd_write(self.wake, 1)

    def stop(self) -> None:
        """Stop the thread and wait until it has let go of the ring."""
        self.stopping = True
        os.eventfd_write(self.wake, 1)
        if self.thread is not threading.current_thread():
            self.thread.join()
        _close(self.wake)

    def _run(self) -> None:
        ring, vq, session = self.ring, self.vq, self.session
        process, index = session.device.process, ring.index
        ep = select.epoll()
        try:
            ep.register(self.kick, select.EPOLLIN)
            ep.register(self.wake, select.EPOLLIN)
            wait, read, kick, wake = ep.poll, os.read, self.kick, self.wake
            while True:
                for fd, _ in wait():
                    try:
                        read(fd, 8)  # drained before the ring is read: a later kick wakes us again
                    except BlockingIOError:
                        pass
                if self.stopping:
                    return
                with ring.lock:
                    if self.stopping:
                        return
                    if not ring.enabled:
                        continue
                    try:
                        if process(session, index, vq) and vq.needs_interrupt():
                            session.signal(index)
                    except (VirtqueueError, GuestMemoryError) as err:
                        session.loop.call_soon_threadsafe(session.worker_failed, ring, vq, err)
                        return
                    except Exception as err:  # a bug: stop the ring rather than leave it stalled
                        session.log.exception("vq %d: ring thread failed", index)
                        session.loop.call_soon_threadsafe(session.worker_failed, ring, vq, err)
                        return
        except OSError as err:  # the kick fd went away under us: the loop is stopping the ring
            if not self.stopping:
                session.log.error("vq %d: ring thread: %s", ring.index, err)
        finally:
            ep.close()


class VhostUserSession:
    """One front-end connection: message dispatch and ring life cycle."""

    def __init__(self, sock: socket.socket, device: VirtioDevice, listener: SessionListener | None,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.sock = sock
        self.device = device
        self.listener = listener
        self.loop = loop
        self.reader = MessageReader()
        self.rings = [Vring(i) for i in range(device.num_queues)]
        self.mem: GuestMemory | None = None
        #: SET_LOG_BASE's dirty bitmap (kept until replaced or the session ends; it is used
        #: only while LOG_ALL is acked) and SET_LOG_FD's fd (kept, never used: QEMU's
        #: vhost-user does not send it).
        self.dirty_log: DirtyLog | None = None
        self.log_fd: int | None = None
        self.acked_features = 0
        self.acked_protocol = 0
        self.owned = False
        self.closed = asyncio.Event()
        self.live = False
        self.log = log.getChild(device.name)
        self._handlers: dict[int, Callable[[Message], bytes | None]] = {
            Request.GET_FEATURES: self._get_features,
            Request.SET_FEATURES: self._set_features,
            Request.GET_PROTOCOL_FEATURES: self._get_protocol_features,
            Request.SET_PROTOCOL_FEATURES: self._set_protocol_features,
            Request.SET_OWNER: self._set_owner,
            Request.RESET_OWNER: self._reset_owner,
            Request.GET_QUEUE_NUM: lambda m: encode_u64_reply(m.request, self.device.num_queues),
            Request.SET_MEM_TABLE: self._set_mem_table,
            Request.SET_VRING_NUM: self._set_vring_num,
            Request.SET_VRING_ADDR: self._set_vring_addr,
            Request.SET_VRING_BASE: self._set_vring_base,
            Request.GET_VRING_BASE: self._get_vring_base,
            Request.SET_VRING_KICK: self._set_vring_kick,
            Request.SET_VRING_CALL: self._set_vring_call,
            Request.SET_VRING_ERR: self._set_vring_err,
            Request.SET_VRING_ENABLE: self._set_vring_enable,
            Request.GET_CONFIG: self._get_config,
            Request.SET_CONFIG: self._set_config,
            Request.SET_LOG_BASE: self._set_log_base,
            Request.SET_LOG_FD: self._set_log_fd,
            Request.SEND_RARP: self._send_rarp,
            Request.NET_SET_MTU: lambda m: None,
            Request.GET_MAX_MEM_SLOTS: lambda m: encode_u64_reply(m.request, MAX_FDS),
        }

    # ---- socket side ------------------------------------------------------------------
    def start(self) -> None:
        self.sock.setblocking(False)
        self.loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            data, ancdata, _flags, _addr = self.sock.recvmsg(
                RECV_SIZE, socket.CMSG_SPACE(MAX_FDS * 4), socket.MSG_CMSG_CLOEXEC)
        except BlockingIOError:
            return
        except OSError as err:
            self.log.info("front-end connection error: %s", err)
            self.close()
            return
        fds: list[int] = []
        for level, kind, cdata in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(cdata) - len(cdata) % 4
                fds += list(struct.unpack(f"{usable // 4}i", cdata[:usable]))
        if not data:
            for fd in fds:
                _close(fd)
            self.log.info("front-end disconnected")
            self.close()
            return
        try:
            for msg in self.reader.feed(data, fds):
                self._dispatch(msg)
        except (VhostUserError, VirtqueueError, GuestMemoryError, OSError) as err:
            self.log.error("dropping the front-end: %s", err)
            self.close()

    def _send(self, data: bytes) -> None:
        self.sock.setblocking(True)
        try:
            self.sock.sendall(data)
        finally:
            self.sock.setblocking(False)

    def _dispatch(self, msg: Message) -> None:
        handler = self._handlers.get(msg.request)
        self.log.debug("%s flags=%#x size=%d fds=%d", msg.name, msg.flags, len(msg.payload), len(msg.fds))
        ok = True
        reply: bytes | None = None
        try:
            if handler is None:
                self.log.warning("unsupported request %s", msg.name)
                for fd in msg.fds:
                    _close(fd)
                ok = False
            elif not self.owned and msg.request not in BEFORE_OWNER:
                for fd in msg.fds:
                    _close(fd)
                raise VhostUserError(f"{msg.name} before SET_OWNER")
            else:
                reply = handler(msg)
        except (VhostUserError, VirtqueueError, GuestMemoryError, OSError) as err:
            if msg.request in REPLY_REQUESTS:
                raise
            self.log.error("%s failed: %s", msg.name, err)
            ok = False
        if reply is not None:
            self._send(reply)
        elif msg.need_reply and msg.request not in REPLY_REQUESTS:
            # REPLY_ACK: u64 0 on success, non-zero on failure, after the work is done.
            self._send(encode_u64_reply(msg.request, 0 if ok else 1))

    def close(self) -> None:
        """Forget the front-end: stop every ring, unmap memory, close every fd."""
        if self.closed.is_set():
            return
        for ring in self.rings:
            self._stop_ring(ring)
            for fd in (ring.kick, ring.call, ring.err):
                _close(fd)
            ring.kick = ring.call = ring.err = None
        if self.mem is not None:
            self.mem.close()
            self.mem = None
        if self.dirty_log is not None:
            self.dirty_log.close()
            self.dirty_log = None
        _close(self.log_fd)
        self.log_fd = None
        for fd in self.reader.pending_fds():
            _close(fd)
        try:
            self.loop.remove_reader(self.sock.fileno())
        except (ValueError, OSError):
            pass
        self.sock.close()
        self.closed.set()
        if self.live and self.listener is not None:
            self.listener.disconnected()
        self.live = False

    # ---- rings ------------------------------------------------------------------------
    def _ring(self, index: int) -> Vring:
        if index >= len(self.rings):
            raise VhostUserError(f"vq {index} out of range (device has {len(self.rings)})")
        return self.rings[index]

    def _maybe_start(self, ring: Vring) -> None:
        """Start a ring that has everything: memory, size, addresses, a kick fd (spec)."""
        if ring.vq is not None or ring.kick is None or ring.addr is None or self.mem is None or not ring.num:
            return
        vq = Virtqueue(self.mem, ring.num, ring.addr.desc, ring.addr.avail, ring.addr.used, ring.base,
                       event_idx=bool(self.acked_features & Feature.RING_EVENT_IDX))
        if vq.last_avail != vq.used_idx:
            self.log.warning("vq %d: base %d but the used index is %d: resuming after the last used chain",
                             ring.index, vq.last_avail, vq.used_idx)
            vq.last_avail = vq.used_idx
        ring.vq = vq
        self._apply_log(ring)
        if self.device.ring_thread:
            ring.worker = RingWorker(self, ring, vq)
        else:
            self.loop.add_reader(ring.kick, self._kicked, ring)
        self.device.ring_started(self, ring.index)
        if not self.live:
            self.live = True
            if self.listener is not None:
                self.listener.connected()
        if ring.worker is not None:
            ring.worker.start()  # it looks at the ring once at start: requests may be queued
            ring.worker.poke()
        else:
            self._kicked(ring)  # requests may already be queued (SeaBIOS, reconnect)

    def _stop_ring(self, ring: Vring) -> None:
        """Stop serving a ring; its base becomes the first chain not yet used."""
        vq = ring.vq
        if vq is None:
            return
        if ring.worker is not None:
            ring.worker.stop()
            ring.worker = None
        elif ring.kick is not None:
            self.loop.remove_reader(ring.kick)
        ring.vq = None
        self.device.ring_stopped(self, ring.index)  # the device gives back what it holds
        if vq.in_flight:  # a device bug: a chain taken and never used or given back
            self.log.error("vq %d stopped with %d chain(s) in flight; they will be taken again",
                           ring.index, vq.in_flight)
        ring.base = (vq.last_avail - vq.in_flight) & 0xFFFF
        vq.close()

    @property
    def logging(self) -> bool:
        """Whether guest writes are being logged: LOG_ALL acked and a log given."""
        return bool(self.acked_features & Feature.LOG_ALL) and self.dirty_log is not None

    def _apply_log(self, ring: Vring) -> None:
        """Point a running ring at the dirty log, or at none (the fast path)."""
        vq = ring.vq
        if vq is None:
            return
        with ring.lock:
            if self.logging and ring.addr is not None:
                vq.dirty = self.dirty_log
                vq.log_used = ring.addr.log if ring.addr.flags & VHOST_VRING_F_LOG else None
            else:
                vq.dirty = None
                vq.log_used = None

    def _kicked(self, ring: Vring) -> None:
        if ring.kick is not None:
            try:
                os.read(ring.kick, 8)
            except BlockingIOError:
                pass
        if ring.vq is None or not ring.enabled:
            return
        try:
            vq = ring.vq
            # Interrupt unless the driver asked for none (VRING_AVAIL_F_NO_INTERRUPT, or with
            # EVENT_IDX its used_event; virtio 1.1 2.6.7).
            if self.device.process(self, ring.index, vq) and vq.needs_interrupt():
                self.signal(ring.index)
        except (VirtqueueError, GuestMemoryError) as err:
            self.ring_failed(ring.index, err)

    def ring_failed(self, index: int, err: Exception) -> None:
        """The driver broke ring ``index``'s rules: stop serving it (as Linux's vhost marks a
        queue broken) until the front-end restarts it."""
        self.log.error("vq %d: %s; stopping the ring", index, err)
        self._stop_ring(self.rings[index])

    def worker_failed(self, ring: Vring, vq: Virtqueue, err: Exception) -> None:
        """A ring thread found the driver breaking the rules (called on the loop): as
        ring_failed, unless the ring was restarted meanwhile."""
        if ring.vq is vq:
            self.ring_failed(ring.index, err)

    def signal(self, index: int) -> None:
        """Raise the guest interrupt of ring ``index`` (the event channel's notify)."""
        call = self.rings[index].call
        if call is not None:
            try:
                os.eventfd_write(call, 1)
            except BlockingIOError:  # counter saturated: the interrupt is pending anyway
                pass

    def ring_ready(self, index: int) -> Virtqueue | None:
        ring = self.rings[index]
        return ring.vq if ring.enabled else None

    # ---- message handlers (names follow the requests) ------------------------------------
    def _get_features(self, m: Message) -> bytes:
        return encode_u64_reply(m.request, self.device.features)

    def _set_owner(self, m: Message) -> None:
        if self.owned:
            raise VhostUserError("SET_OWNER on a session that already has an owner")
        self.owned = True

    def _set_features(self, m: Message) -> None:
        # Must not stop or disable rings: it is re-sent to toggle LOG_ALL (rust-vmm PR 210).
        value = m.u64()
        if value & ~self.device.features:
            raise VhostUserError(f"SET_FEATURES {value:#x} acks bits {value & ~self.device.features:#x} not offered")
        was = self.logging
        self.acked_features = value
        if self.logging != was:
            self.log.info("dirty-page logging %s", "on" if self.logging else "off")
        for ring in self.rings:
            self._apply_log(ring)

    def _get_protocol_features(self, m: Message) -> bytes:
        return encode_u64_reply(m.request, self.device.protocol_features)

    def _set_protocol_features(self, m: Message) -> None:
        value = m.u64()
        if value & ~self.device.protocol_features:
            raise VhostUserError(f"SET_PROTOCOL_FEATURES {value:#x} sets bits not offered")
        self.acked_protocol = value

    def _reset_owner(self, m: Message) -> None:
        for ring in self.rings:
            self._stop_ring(ring)
        self.owned = False

    def _set_mem_table(self, m: Message) -> None:
        regions = unpack_mem_table(m.payload)
        if len(m.fds) != len(regions):
            for fd in m.fds:
                _close(fd)
            raise VhostUserError(f"{len(regions)} regions but {len(m.fds)} fds")
        new = GuestMemory(regions, m.fds)
        # Running rings hold offsets into the old mapping: restart them on the new one.
        running = [r for r in self.rings if r.vq is not None]
        for ring in running:
            self._stop_ring(ring)
        if self.mem is not None:
            self.mem.close()
        self.mem = new
        self.log.info("guest memory: %d region(s), %d MiB", len(regions), new.size >> 20)
        for ring in running:
            self._maybe_start(ring)

    def _set_vring_num(self, m: Message) -> None:
        st = VringState.unpack(m.payload)
        ring = self._ring(st.index)
        if st.num == 0 or st.num & (st.num - 1) or st.num > MAX_QUEUE_SIZE:
            raise VhostUserError(f"vq {st.index}: size {st.num} is not a power of two <= {MAX_QUEUE_SIZE}")
        if ring.vq is not None:
            raise VhostUserError(f"vq {st.index}: size changed while the ring runs")
        ring.num = st.num

    def _set_vring_addr(self, m: Message) -> None:
        addr = VringAddr.unpack(m.payload)
        ring = self._ring(addr.index)
        if self.mem is None:
            raise VhostUserError(f"vq {addr.index}: ring addresses before SET_MEM_TABLE")
        if addr.desc % 16 or addr.avail % 2 or addr.used % 4:
            raise VhostUserError(f"vq {addr.index}: misaligned ring addresses")
        for qva in (addr.desc, addr.avail, addr.used):
            self.mem.qva(qva)  # GuestMemoryError: refused before anything changes
        old, ring.addr = ring.addr, addr
        if ring.vq is not None and old is not None and \
                (old.desc, old.avail, old.used) == (addr.desc, addr.avail, addr.used):
            # Only the logging flag or address changed (QEMU's vhost_dev_set_log at migration
            # start and end): the running ring goes on, logging or not.
            self._apply_log(ring)
            return
        if ring.vq is not None:  # moved under a running ring
            self._stop_ring(ring)
        self._maybe_start(ring)

    def _set_vring_base(self, m: Message) -> None:
        st = VringState.unpack(m.payload)
        ring = self._ring(st.index)
        if st.num > 0xFFFF:
            raise VhostUserError(f"vq {st.index}: base {st.num} is not a 16-bit index")
        if ring.vq is not None:
            raise VhostUserError(f"vq {st.index}: base changed while the ring runs")
        ring.base = st.num

    def _get_vring_base(self, m: Message) -> bytes:
        st = VringState.unpack(m.payload)
        ring = self._ring(st.index)
        self._stop_ring(ring)
        if ring.kick is not None:
            _close(ring.kick)
            ring.kick = None
        if not any(r.vq for r in self.rings) and self.live:
            self.live = False
            if self.listener is not None:
                self.listener.disconnected()
        return encode_reply(m.request, VringState(st.index, ring.base).pack())

    def _set_vring_kick(self, m: Message) -> None:
        index, fd = vring_file(m)
        ring = self._ring(index)
        if fd is None:
            raise VhostUserError(f"vq {index}: a kick without an fd (polling) is not supported")
        if ring.addr is None or not ring.num:
            _close(fd)
            raise VhostUserError(f"vq {index}: kick before the ring's size and addresses")
        if ring.vq is not None:
            self._stop_ring(ring)
        _close(ring.kick)
        ring.kick = fd
        if not self.acked_features & Feature.PROTOCOL_FEATURES:
            ring.enabled = True  # without bit 30 rings start enabled (spec "Ring states")
        self._maybe_start(ring)

    def _set_vring_call(self, m: Message) -> None:
        index, fd = vring_file(m)
        ring = self._ring(index)
        with ring.lock:  # swapped at any time (masked/unmasked notifier); not under a worker's write
            old, ring.call = ring.call, fd
            _close(old)

    def _set_vring_err(self, m: Message) -> None:
        index, fd = vring_file(m)
        ring = self._ring(index)
        _close(ring.err)
        ring.err = fd

    def _set_vring_enable(self, m: Message) -> None:
        st = VringState.unpack(m.payload)
        ring = self._ring(st.index)
        with ring.lock:
            ring.enabled = bool(st.num)
        if ring.enabled and ring.vq is not None:
            if ring.worker is not None:
                ring.worker.poke()
            else:
                self._kicked(ring)

    def _get_config(self, m: Message) -> bytes:
        req = ConfigRequest.unpack(m.payload)
        data = self.device.get_config(req.offset, req.size)
        return encode_reply(m.request, ConfigRequest(req.offset, len(data), req.flags, data).pack())

    def _set_config(self, m: Message) -> None:
        req = ConfigRequest.unpack(m.payload)
        self.device.set_config(req.offset, req.data)

    def _set_log_base(self, m: Message) -> bytes:
        """The dirty bitmap QEMU syncs while it migrates (LOG_SHMFD): map it and log into it
        from now on while LOG_ALL is acked. A new one (QEMU resizes the log when memory
        changes) replaces the old. Reply u64 0 once mapped (vhost-user.rst; QEMU waits for it)."""
        for fd in m.fds[1:]:
            _close(fd)
        if not self.acked_protocol & ProtocolFeature.LOG_SHMFD:
            for fd in m.fds[:1]:
                _close(fd)
            raise VhostUserError("SET_LOG_BASE without LOG_SHMFD negotiated")
        if not m.fds:
            raise VhostUserError("SET_LOG_BASE without a log fd")
        area = LogArea.unpack(m.payload)
        new = DirtyLog(m.fds[0], area.size, area.offset)
        old, self.dirty_log = self.dirty_log, new
        self.log.info("dirty log: %d bytes (%d MiB of guest memory)", area.size, area.size * 8 * 4096 >> 20)
        for ring in self.rings:
            self._apply_log(ring)
        if old is not None:  # no ring (nor ring thread) points at it any more
            old.close()
        return encode_u64_reply(m.request, 0)

    def _send_rarp(self, m: Message) -> None:
        """After a migration (RARP protocol feature): the guest's MAC in the payload's first
        6 bytes; a device that can announce it (netback) does."""
        if len(m.payload) < 6:
            raise VhostUserError("short SEND_RARP")
        send = getattr(self.device, "send_rarp", None)
        if send is not None:
            send(bytes(m.payload[:6]))

    def _set_log_fd(self, m: Message) -> None:
        """The log eventfd of vhost-user.rst (never sent by QEMU 7.2's vhost-user): kept."""
        for fd in m.fds[1:]:
            _close(fd)
        old, self.log_fd = self.log_fd, (m.fds[0] if m.fds else None)
        _close(old)


Authorizer = Callable[[int], Awaitable[bool]]


class VhostUserServer:
    """A device's listening socket. QEMU connects (``reconnect=1``); one live session at a time:
    a new connection replaces the old one, as after a QEMU-side reconnect."""

    def __init__(self, path: Path, device: VirtioDevice, listener: SessionListener | None = None,
                 authorize: Authorizer | None = None) -> None:
        self.path = path
        self.device = device
        self.listener = listener
        self.authorize = authorize
        self.session: VhostUserSession | None = None
        self._sock: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.bind(str(self.path))
        sock.listen(4)
        sock.setblocking(False)
        self._sock = sock
        self._task = asyncio.get_running_loop().create_task(self._accept_loop())

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._sock is not None
        while True:
            conn, _ = await loop.sock_accept(self._sock)
            pid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                      struct.calcsize("3i")))[0]
            if self.authorize is not None and not await self.authorize(pid):
                log.warning("%s: refusing front-end pid %d: not the domain's device model",
                            self.device.name, pid)
                conn.close()
                continue
            if self.session is not None:
                self.session.close()
            log.info("%s: front-end connected (pid %d)", self.device.name, pid)
            self.session = VhostUserSession(conn, self.device, self.listener, loop)
            self.session.start()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        if self.session is not None:
            self.session.close()
            self.session = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self.path.unlink(missing_ok=True)
