"""Guest storage in Dom0: LVM volume groups and image files, as xen-tools and Xen hosts use them."""
