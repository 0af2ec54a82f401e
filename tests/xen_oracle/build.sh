#!/bin/sh
# Build Xen's own libxlu (and xl's parse_nic_config) as two small programs, to produce the
# expected values in tests/unit/libxlu_xen_cases.py. Not run by the tests.
#   ./build.sh <xen checkout> <build dir>
#   <build dir>/oracle cfg f.cfg FILE [KEY...]     report lines, RC, settings, getters of KEYs
#   <build dir>/oracle disk f.cfg SPEC...          report lines, RC, libxl_device_disk fields
#   <build dir>/oracle rate f.cfg RATE             report lines, RC, bytes/usecs
#   <build dir>/nicoracle SPEC                     xl's lines and the nic (EXIT: xl exits 1)
set -e
xen=$1; out=$2; here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out/xen-tools"
cp "$xen"/tools/libs/util/*.c "$xen"/tools/libs/util/*.h "$xen"/tools/include/libxlutil.h "$out/"
cp "$here/oracle.c" "$here/libxl.h" "$out/"
cp "$here/xen-tools/common-macros.h" "$out/xen-tools/"
python3 "$here/make_nicoracle.py" "$xen/tools/xl/xl_parse.c" > "$out/nicoracle.c"
cd "$out"
LIBS="libxlu_cfg.c libxlu_cfg_l.c libxlu_cfg_y.c libxlu_disk.c libxlu_disk_l.c libxlu_vif.c"
gcc -w -I. -o oracle oracle.c $LIBS
gcc -w -I. -o nicoracle nicoracle.c $LIBS
