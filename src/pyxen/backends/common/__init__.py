"""Pieces every pyxen backend shares: the vhost-user codec and transport, guest memory, the
split virtqueue, and the xenbus state machine."""
