"""pyxen: the Xen virtualization platform, hosted on Linux and written in Python.

The hypervisor's job (domains, memory, scheduling, event channels, grant tables) and Domain 0's
job (xenstored, xenconsoled, backends, device models, xl, XenAPI) are done by Python daemons; the
CPU itself is virtualized by QEMU (KVM where the host can run stock guests, TCG otherwise).
"""

import logging

__version__ = "0.1.0"

#: The Xen release whose interfaces pyxen follows (xl info's xen_major/xen_minor/xen_extra).
XEN_MAJOR, XEN_MINOR, XEN_EXTRA = 4, 17, ".0-pyxen"

logging.getLogger(__name__).addHandler(logging.NullHandler())
