"""pygrub for pyxen: boot a PV guest on the kernel named by its own boot config.

Xen's pygrub (tools/pygrub) reads a guest's disk without mounting it, finds its grub.cfg,
extlinux.conf or menu.lst, and copies the chosen kernel and initrd out for the domain builder.
This package does the same in user space: ``disk`` (the image and its partitions), ``ext4``
(a read-only ext2/3/4 reader), ``conf`` (the three config formats), ``boot`` (choosing and
copying out) and ``__main__`` (Xen's command line, run by the toolstack for
``bootloader = "pygrub"``).
"""

from .boot import Choice, Extracted, PygrubError, boot, boot_config, choose, extract
from .disk import Disk, DiskError, partition_offsets
from .ext4 import Ext4, FsError

__all__ = ["Choice", "Disk", "DiskError", "Ext4", "Extracted", "FsError", "PygrubError", "boot",
           "boot_config", "choose", "extract", "partition_offsets"]
