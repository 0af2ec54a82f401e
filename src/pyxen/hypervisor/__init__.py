"""pyxen's hypervisor: domains, the host memory pool, scheduling, event channels, grant tables.

It is a daemon reached over a Unix control socket (Xen's /dev/xen/privcmd); it does no guest
I/O itself. Each DomU's vCPUs and memory are one QEMU process that it starts and controls.
"""
