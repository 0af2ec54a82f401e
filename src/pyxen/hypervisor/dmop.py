"""Device-model operations (Xen's dm_op, and libxl's QMP calls to qemu-dm): the toolstack asks
for a device by what it is; the domain's device model (qemu.py, the one module that speaks QMP)
turns that into QEMU commands.

The toolstack uses these while the domain is still paused, after the backend daemon listens on
the device's vhost-user socket (QEMU's vhost-user realize waits for it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .core import Hypervisor, hypercall, int_arg
from .domain import ShutdownReason
from .errors import InvalidArgument, NoSuchDomain, NotImplementedByXen
from .qemu import EMULATED_NIC_MODELS, QDISK_DRIVERS, UNPLUG_TIMEOUT


def _str_arg(args: dict[str, Any], key: str, op: str) -> str:
    v = args.get(key)
    if not isinstance(v, str) or not v or "\0" in v:
        raise InvalidArgument(f"argument '{key}' must be a non-empty string", op)
    return v


def _path_arg(args: dict[str, Any], key: str, op: str) -> Path:
    v = _str_arg(args, key, op)
    if not v.startswith("/"):
        raise InvalidArgument(f"argument '{key}' must be an absolute path", op)
    return Path(v)


@hypercall("dm_op.add_vhost_user_disk")
async def _add_vhost_user_disk(hv: Hypervisor, args: dict[str, Any]) -> None:
    op = "dm_op.add_vhost_user_disk"
    await hv.model(args, op).add_vhost_user_disk(int_arg(args, "devid", op), _path_arg(args, "socket", op))


@hypercall("dm_op.add_qdisk")
async def _add_qdisk(hv: Hypervisor, args: dict[str, Any]) -> None:
    op = "dm_op.add_qdisk"
    fmt = _str_arg(args, "format", op)
    if fmt not in QDISK_DRIVERS:
        raise InvalidArgument(f"unknown disk format '{fmt}'", op)
    await hv.model(args, op).add_qdisk(int_arg(args, "devid", op), _str_arg(args, "vdev", op),
                                       str(_path_arg(args, "target", op)), fmt, bool(args.get("readonly")))


@hypercall("dm_op.remove_disk")
async def _remove_disk(hv: Hypervisor, args: dict[str, Any]) -> bool:
    """Unplug a disk from a running guest (xl block-detach); False if the guest did not release
    it within ``wait`` seconds (at most qemu.UNPLUG_TIMEOUT)."""
    op = "dm_op.remove_disk"
    timeout = min(float(args.get("wait", UNPLUG_TIMEOUT)), UNPLUG_TIMEOUT)
    return await hv.model(args, op).remove_disk(int_arg(args, "devid", op), max(timeout, 0.0))


@hypercall("dm_op.cdrom_change")
async def _cdrom_change(hv: Hypervisor, args: dict[str, Any]) -> None:
    """Change the medium of an HVM guest's emulated CD-ROM drive (``medium`` "" ejects)."""
    op = "dm_op.cdrom_change"
    dom = hv.domu(args, op)
    index = int_arg(args, "index", op)
    if index not in {i for i, _ in dom.build.get("cdroms", ())}:
        raise InvalidArgument(f"domain {dom.domid} has no emulated cdrom drive at IDE index {index}", op)
    medium = args.get("medium", "")
    if not isinstance(medium, str) or (medium and not medium.startswith("/")):
        raise InvalidArgument("argument 'medium' must be an absolute path or empty", op)
    await hv.model(args, op).cdrom_change(index, medium)


@hypercall("dm_op.add_vhost_user_nic")
async def _add_vhost_user_nic(hv: Hypervisor, args: dict[str, Any]) -> None:
    op = "dm_op.add_vhost_user_nic"
    mtu = args.get("mtu")
    if mtu is not None and (not isinstance(mtu, int) or isinstance(mtu, bool) or not 68 <= mtu <= 65535):
        raise InvalidArgument("argument 'mtu' must be an integer from 68 to 65535", op)
    await hv.model(args, op).add_vhost_user_nic(int_arg(args, "devid", op), _path_arg(args, "socket", op),
                                                _str_arg(args, "mac", op), hv.accel.accel, mtu)


@hypercall("dm_op.remove_vhost_user_nic")
async def _remove_vhost_user_nic(hv: Hypervisor, args: dict[str, Any]) -> None:
    """network-detach: the guest ejects the NIC, then QEMU lets go of its back-end socket."""
    op = "dm_op.remove_vhost_user_nic"
    await hv.model(args, op).remove_vhost_user_nic(int_arg(args, "devid", op))


@hypercall("dm_op.add_emulated_nic")
async def _add_emulated_nic(hv: Hypervisor, args: dict[str, Any]) -> None:
    """type=ioemu: an emulated NIC on the TAP passed with the request (SCM_RIGHTS)."""
    op = "dm_op.add_emulated_nic"
    model = _str_arg(args, "model", op)
    if model not in EMULATED_NIC_MODELS:
        raise InvalidArgument(f"unknown NIC model '{model}' ({', '.join(EMULATED_NIC_MODELS)})", op)
    dom = hv.domu(args, op)
    if dom.type != "hvm":
        raise InvalidArgument("an emulated NIC needs an HVM guest", op)
    await hv.model(args, op).add_emulated_nic(int_arg(args, "devid", op), model,
                                              _str_arg(args, "mac", op), _fd_arg(args, op))


@hypercall("dm_op.remove_emulated_nic")
async def _remove_emulated_nic(hv: Hypervisor, args: dict[str, Any]) -> None:
    op = "dm_op.remove_emulated_nic"
    await hv.model(args, op).remove_emulated_nic(int_arg(args, "devid", op))


@hypercall("dm_op.add_xenstore_port")
async def _add_xenstore_port(hv: Hypervisor, args: dict[str, Any]) -> None:
    op = "dm_op.add_xenstore_port"
    await hv.model(args, op).add_xenstore_port(_path_arg(args, "socket", op))


#: xl trigger's names (libxl_trigger) that pyxen's device model carries out, and how each is
#: answered otherwise. Xen 4.17 on x86 (arch/x86/domctl.c, XEN_DOMCTL_sendtrigger): nmi for any
#: guest, power and sleep for HVM guests (EINVAL otherwise), init and reset ENOSYS; libxl does
#: s3resume with QMP system_wakeup for HVM guests (ERROR_INVAL otherwise). pyxen does reset too
#: (the domain resets as a PC does: shut down, reason reboot; libxl's reboot -F fallback relies
#: on it), and has no sleep button.
TRIGGERS = ("power", "sleep", "nmi", "init", "reset", "s3resume")


@hypercall("dm_op.trigger")
async def _trigger(hv: Hypervisor, args: dict[str, Any]) -> None:
    """xl trigger, xl button-press, and xl shutdown/reboot -F for HVM guests without PV drivers."""
    op = "dm_op.trigger"
    dom = hv.domu(args, op)
    model = hv.model(args, op)
    trigger = args.get("trigger")
    vcpu = args.get("vcpu", 0)
    if trigger not in TRIGGERS:
        raise InvalidArgument(f"unknown trigger '{trigger}' ({', '.join(TRIGGERS)})", op)
    if not isinstance(vcpu, int) or isinstance(vcpu, bool) or not 0 <= vcpu < dom.max_vcpus:
        raise NoSuchDomain(f"domain {dom.domid} has no vCPU {vcpu}", op)
    hvm = dom.type == "hvm"
    if trigger == "nmi":
        await model.inject_nmi()
    elif trigger == "power" and hvm:
        await model.powerdown()
    elif trigger == "reset":
        # A PC's reset ends its SeaBIOS in a reset of its own, which is the guest resetting the
        # machine: in Xen terms the domain shuts down with reason reboot and the toolstack
        # applies on_reboot. Done so at once, as SCHEDOP_remote_shutdown(reboot).
        await model.pause()
        hv._shutdown(dom, ShutdownReason.REBOOT)
    elif trigger == "s3resume" and hvm:
        await model.wakeup()
    elif trigger in ("power", "sleep", "s3resume"):
        raise InvalidArgument(f"trigger '{trigger}' needs an HVM guest", op)
    else:  # init, and sleep on HVM: no handler
        raise NotImplementedByXen(f"trigger '{trigger}' is not implemented", op)


#: Bound on one qemu-monitor-command (an HMP command such as "info mtree" may print a lot).
HMP_TIMEOUT = 30.0


@hypercall("dm_op.qemu_monitor_command")
async def _qemu_monitor_command(hv: Hypervisor, args: dict[str, Any]) -> str:
    """An HMP command line for the domain's device model (libxl_qemu_monitor_command, which
    sends QMP human-monitor-command); its output text."""
    op = "dm_op.qemu_monitor_command"
    command = args.get("command")
    if not isinstance(command, str) or "\0" in command:
        raise InvalidArgument("argument 'command' must be a string", op)
    return await hv.model(args, op).human_monitor_command(command, HMP_TIMEOUT)


@hypercall("dm_op.dump_core")
async def _dump_core(hv: Hypervisor, args: dict[str, Any]) -> None:
    """The guest's memory as an ELF core file (xl dump-core; on_crash = "coredump-*")."""
    op = "dm_op.dump_core"
    await hv.model(args, op).dump_core(_path_arg(args, "path", op))


@hypercall("dm_op.save")
async def _save(hv: Hypervisor, args: dict[str, Any]) -> None:
    """Append the domain's state to a file (xl save writes its header first); the domain is
    left stopped (paused) for the caller to destroy or resume."""
    op = "dm_op.save"
    dom = hv.domu(args, op)
    await hv.model(args, op).save(_path_arg(args, "path", op))
    dom.paused = True
    dom.save(hv.paths.domains_dir)


@hypercall("dm_op.restore")
async def _restore(hv: Hypervisor, args: dict[str, Any]) -> None:
    """Load a saved state into a domain built with ``incoming`` (still being built)."""
    op = "dm_op.restore"
    _check_incoming(hv, args, op)
    offset = int_arg(args, "offset", op)
    await hv.model(args, op).restore(_path_arg(args, "path", op), offset)


def _check_incoming(hv: Hypervisor, args: dict[str, Any], op: str) -> None:
    """The domain must have been built with ``incoming`` (QEMU waiting for a stream)."""
    dom = hv.domu(args, op)
    if not dom.build.get("incoming"):
        raise InvalidArgument(f"domain {dom.domid} was not built to receive a saved state", op)


def _fd_arg(args: dict[str, Any], op: str) -> int:
    """The one descriptor the caller passed with the request (server.py: SCM_RIGHTS)."""
    fds = args.get("fds")
    if not isinstance(fds, list) or len(fds) != 1 or not isinstance(fds[0], int):
        raise InvalidArgument("the stream's descriptor must be passed with the request (SCM_RIGHTS)", op)
    return fds[0]


@hypercall("dm_op.migrate_send")
async def _migrate_send(hv: Hypervisor, args: dict[str, Any]) -> None:
    """Write the domain's state to the passed descriptor (xl migrate's pipe), live (pre-copy
    while it runs) unless ``live`` is false; returns once the stream is complete, the domain
    then stopped (paused) for the caller to destroy or resume. On failure a live migration
    leaves it running."""
    op = "dm_op.migrate_send"
    dom = hv.domu(args, op)
    await hv.model(args, op).migrate_send(_fd_arg(args, op), live=args.get("live", True) is not False)
    dom.paused = True
    dom.save(hv.paths.domains_dir)


@hypercall("dm_op.migrate_receive")
async def _migrate_receive(hv: Hypervisor, args: dict[str, Any]) -> None:
    """Load a migration stream from the passed descriptor (xl migrate-receive's stdin) into a
    domain built with ``incoming`` (still being built); left paused."""
    op = "dm_op.migrate_receive"
    _check_incoming(hv, args, op)
    await hv.model(args, op).migrate_receive(_fd_arg(args, op))
