"""Dom0's split-driver backends: blkback and netback, served to the guests' virtio frontends
over vhost-user, driven by the xenstore backend directories (ARCHITECTURE.md)."""
