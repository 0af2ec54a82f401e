"""Starting and stopping a pyxen host: Dom0's services, in Xen's boot order."""
