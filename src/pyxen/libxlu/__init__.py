"""pyxen's libxlutil: pure parsing shared by the toolstack, the hypervisor and the CLIs.

Xen keeps the xl.cfg grammar (tools/libs/util/libxlu_cfg_l.l, libxlu_cfg_y.y), the cpu list
syntax (libxlu_cpumap) and the disk/vif spec lexers in libxlutil, a library that belongs to
neither libxl nor the hypervisor. Modules here take text and return values: they open no socket,
start no process and register no hypercall, so any layer may import them.
"""
