"""Xen's own answers for pyxen's libxlu tests (tests/unit/test_libxlu_exact.py).

Every expected value here was produced by running Xen's code, not by reading it: the files of
tools/libs/util/ at xen-project/xen c447b7308b13 (libxlu_cfg.c with the flex/bison output
libxlu_cfg_l.c and libxlu_cfg_y.c that Xen ships, libxlu_disk.c with libxlu_disk_l.c,
libxlu_vif.c) compiled with gcc against a stub libxl.h and driven by a small main that prints
the report lines and the result (settings; libxl_device_disk's fields; the rate pair). Config
source names are "f.cfg". The vif cases ran tools/xl/xl_parse.c's parse_nic_config, cut out of
the file with the helpers it calls (match_option_size, replace_string, parse_ulong,
parse_vif_rate) and parse_config_data's strtok loop around it. tests/xen_oracle/build.sh builds
both programs from a Xen checkout, to add cases or to check them against another Xen.

The pod examples are copied from docs/man/xl-disk-configuration.5.pod.in (lines 21-36) and
docs/man/xl-network-configuration.5.pod.in (lines 21-27, 242-244) at the same commit.
"""

from __future__ import annotations

# (config text, report lines, {key: (value, line, op)} or None when the parse fails)
CFG_CASES: list[tuple[str, list[str], dict[str, tuple[object, int, str]] | None]] = [
    ('x = \n', ["f.cfg:0: config parsing error near <newline>: syntax error, unexpected NEWLINE, expecting STRING or NUMBER or '['"], None),
    ('x = 1\r\ny = 2\n', ["f.cfg:1: config parsing error near `\r': lexical error"], None),
    ('# c\r\nx = 1\n', [], {'x': ('1', 2, '=')}),
    ('a = 1\n# foo', ["f.cfg:2: config parsing error near `#': lexical error"], None),
    ('a = 1\n#foo', ["f.cfg:2: config parsing error near `#foo': lexical error"], None),
    ('a = 1\n#', [], {'a': ('1', 1, '=')}),
    ('s = "a\\x41b"\n', ['f.cfg:1: config parsing error near `"a\\x41b"\': invalid digit after backslash hexnumerical character escape in quoted string'], None),
    ('s = "a\\101b\\0123c"\n', [], {'s': ('abc', 1, '=')}),
    ('s = "\\1"\n', ['f.cfg:1: config parsing error near `"\\1"\': invalid digit after backslash octalnumerical character escape in quoted string'], None),
    ('s = "a\\qb"\n', ['f.cfg:1: config parsing error near `"a\\qb"\': invalid character after backlash in quoted string'], None),
    ('a = 1 2\nb = 3\n', ["f.cfg:1: config parsing error near `2': syntax error, unexpected NUMBER, expecting $end"], None),
    ('a = (1)\n', ["f.cfg:1: config parsing error near `(1)': lexical error", 'warning: Config file looks like it contains Python code.', 'warning:  Arbitrary Python is no longer supported.', 'warning:  See https://wiki.xen.org/wiki/PythonInXlConfig'], None),
    ('a = 1\nb', ["f.cfg:2: config parsing error near `': syntax error, unexpected $end, expecting += or '='"], None),
    ('a = [1,\n 2,]\nb=[]\n', [], {'b': ([], 3, '='), 'a': (['1', '2'], 1, '=')}),
    ('memory = 1\nmemory += 2\n', [], {'memory': ('12', 2, '+=')}),
    ('a = "x"\na += [1]\n', ['f.cfg:2: config parsing error near `]\': can\'t add [list] to "string" or vice versa'], None),
    ('l = [1]\nl += ["2"]\ns = "a"\ns += "b"\n', [], {'s': ('ab', 4, '+='), 'l': (['1', '2'], 2, '+=')}),
    ('Name = 1\n', ["f.cfg:1: config parsing error near `Name': lexical error"], None),
    ('a = 1; b = 2', [], {'b': ('2', 1, '='), 'a': ('1', 1, '=')}),
    ('a == 1\n', ["f.cfg:1: config parsing error near `=': syntax error, unexpected '=', expecting STRING or NUMBER or '['"], None),
    ("s = 'it''s'\n", ["f.cfg:1: config parsing error near `'s'': syntax error, unexpected STRING, expecting $end"], None),
    ('a = [[1,2],[3]]\n', [], {'a': ([['1', '2'], ['3']], 1, '=')}),
    ('x = 1\ny = ]\nz = 3\n', ["f.cfg:2: config parsing error near `]': syntax error, unexpected ']', expecting STRING or NUMBER or '['"], None),
    ('a = 0x1F\n', ["f.cfg:1: config parsing error near `F': lexical error"], None),
    ('a.b_c = "v"\n', [], {'a.b_c': ('v', 1, '=')}),
    ('a = -1\n', ["f.cfg:1: config parsing error near `-1': lexical error", 'warning: Config file looks like it contains Python code.', 'warning:  Arbitrary Python is no longer supported.', 'warning:  See https://wiki.xen.org/wiki/PythonInXlConfig'], None),
    ('a = 1\nb = \nc = [\nd = 4\n', ["f.cfg:1: config parsing error near <newline>: syntax error, unexpected NEWLINE, expecting STRING or NUMBER or '['", "f.cfg:4: config parsing error near `d': syntax error, unexpected IDENT, expecting ']'"], None),
    ("s = 'tab\\there'\t# comment\n", [], {'s': ('tab\there', 1, '=')}),
    ('a = [1\n,2]\n', [], {'a': (['1', '2'], 1, '=')}),
    ('a = []\n', [], {'a': ([], 1, '=')}),
    ('a = [,]\n', ["f.cfg:1: config parsing error near `,': syntax error, unexpected ',', expecting ']'"], None),
    ('= 1\n', ["f.cfg:1: config parsing error near `=': syntax error, unexpected '=', expecting $end or IDENT or NEWLINE or ';'"], None),
    ('x = "unterminated\n', ['f.cfg:1: config parsing error near `"unterminated\': lexical error'], None),
    ('"s" = 1\n', ['f.cfg:1: config parsing error near `"s"\': syntax error, unexpected STRING, expecting $end or IDENT or NEWLINE or \';\''], None),
    ('a = 1 # trailing\n\n\nb = 2 ; ; c = 3\n', [], {'c': ('3', 4, '='), 'b': ('2', 4, '='), 'a': ('1', 1, '=')}),
]

# (config text, warnings, errno (0, EINVAL 22, ERANGE 34), value) for xlu_cfg_get_long("memory")
GET_LONG_CASES: list[tuple[str, list[str], int, int | None]] = [
    ('memory = "x"\n', ["f.cfg:1: warning: parameter `memory' is not a valid number"], 22, None),
    ('memory = [1]\n', ["f.cfg:1: warning: parameter `memory' is a list but should be a single value"], 22, None),
    ('memory = 1\nmemory += 2\n', ["f.cfg:2: warning: can't use += with numbers for parameter `memory'"], 22, None),
    ('memory = 99999999999999999999\n', ["f.cfg:1: warning: parameter `memory' could not be parsed as a number: Numerical result out of range"], 34, None),
    ('memory = " 7"\n', [], 0, 7),
    ('memory = "+3"\n', [], 0, 3),
    ('memory = 0x\n', ["f.cfg:1: warning: parameter `memory' is not a valid number"], 22, None),
    ('memory = 08\n', ["f.cfg:1: warning: parameter `memory' is not a valid number"], 22, None),
    ('memory = 010\n', [], 0, 8),
    ('memory = 0x20\n', [], 0, 32),
    ('memory = "-0x8"\n', [], 0, -8),
    ('memory = ""\n', ["f.cfg:1: warning: parameter `memory' is not a valid number"], 22, None),
    ('memory = "12 "\n', ["f.cfg:1: warning: parameter `memory' is not a valid number"], 22, None),
    ('memory = []\n', ["f.cfg:1: warning: parameter `memory' is a list but should be a single value"], 22, None),
]

# (spec, report lines, libxl_device_disk fields that differ from DiskSpec()'s defaults, or None)
DISK_CASES: list[tuple[str, list[str], dict[str, object] | None]] = [
    ('format=raw,/img,xvda,w', [], {'pdev_path': '/img', 'vdev': 'xvda'}),
    (',hdc:cdrom,r', [], {'pdev_path': '', 'vdev': 'hdc', 'format': 'empty', 'removable': True, 'readwrite': False, 'is_cdrom': True}),
    ('/img,,xvda:disk', [], {'pdev_path': '/img', 'vdev': 'xvda'}),
    ('/img,,xvda:floppy', ["f.cfg: config parsing error in disk specification: unknown deprecated type: near `floppy' in `/img,,xvda:floppy'"], None),
    ('foo:/x,xvda', ["f.cfg: config parsing error in disk specification: unknown deprecated disk prefix: near `foo:' in `foo:/x,xvda'"], None),
    ('foo=bar,/x,xvda', ["f.cfg: config parsing error in disk specification: unknown parameter: near `foo=b' in `foo=bar,/x,xvda'"], None),
    ('vdev=xvda,vdev=xvda,target=/x', ["f.cfg: config parsing error in disk specification: vdev respecified: near `xvda' in `vdev=xvda,vdev=xvda,target=/x'"], None),
    ('format=raw,format=raw,/img,xvda', [], {'pdev_path': '/img', 'vdev': 'xvda'}),
    ('format=raw,format=qcow2,/img,xvda', ["f.cfg: config parsing error in disk specification: format respecified: near `qcow2' in `format=raw,format=qcow2,/img,xvda'"], None),
    ('vdev=xvda, target=/a,b,c', [], {'pdev_path': '/a,b,c', 'vdev': 'xvda'}),
    ('/img,raw,xvda,w,extra', ["f.cfg: config parsing error in disk specification: too many positional parameters: near `extra' in `/img,raw,xvda,w,extra'"], None),
    ('/img,raw,xvda,rx', ["f.cfg: config parsing error in disk specification: unknown value for access: near `rx' in `/img,raw,xvda,rx'"], None),
    ('/img,vmdk,xvda', ["f.cfg: config parsing error in disk specification: unknown value for format: near `vmdk' in `/img,vmdk,xvda'"], None),
    ('devtype=floppy,/img,xvda', ["f.cfg: config parsing error in disk specification: unknown value for type: near `devtype=floppy,' in `devtype=floppy,/img,xvda'"], None),
    ('backendtype=phy,backendtype=phy,/img,,xvda', [], {'pdev_path': '/img', 'vdev': 'xvda', 'backend': 'phy'}),
    ('backendtype=tapx,/img,xvda', ["f.cfg: config parsing error in disk specification: unknown value for backendtype: near `tapx' in `backendtype=tapx,/img,xvda'"], None),
    ('script=block-drbd,/img,,xvda', [], {'pdev_path': '/img', 'vdev': 'xvda', 'script': 'block-drbd'}),
    ('nbd:host:1234,xvda,w', [], {'pdev_path': 'host:1234', 'vdev': 'xvda', 'script': 'block-nbd'}),
    ('tap:aio:/img,xvda,w', [], {'pdev_path': '/img', 'vdev': 'xvda'}),
    ('tap2:tapdisk:aio:/img,xvda,w', [], {'pdev_path': '/img', 'vdev': 'xvda'}),
    ('qcow2:/img.q,xvda,w', [], {'pdev_path': '/img.q', 'vdev': 'xvda', 'format': 'qcow2'}),
    ('iscsi:iqn,xvda,w,script=x', ["f.cfg: config parsing error in disk specification: script respecified: near `x' in `iscsi:iqn,xvda,w,script=x'"], None),
    ('direct-io-safe,discard,/img,,xvda', [], {'pdev_path': '/img', 'vdev': 'xvda', 'direct_io_safe': True, 'discard_enable': True}),
    ('no-discard,untrusted,/img,,xvda', [], {'pdev_path': '/img', 'vdev': 'xvda', 'discard_enable': False, 'trusted': False}),
    ('trusted,/img,,xvda', [], {'pdev_path': '/img', 'vdev': 'xvda', 'trusted': True}),
    ('colo,colo-host=h,colo-port=9000,colo-export=e,active-disk=/a,hidden-disk=/h,/img,,xvda', [], {'pdev_path': '/img', 'vdev': 'xvda', 'colo_enable': True, 'colo_host': 'h', 'colo_port': 9000, 'colo_export': 'e', 'active_disk': '/a', 'hidden_disk': '/h'}),
    ('colo-port=x,/img,xvda', ["f.cfg: config parsing error in disk specification: unknown value for colo_port: near `x' in `colo-port=x,/img,xvda'"], None),
    ('no-colo,/img,,xvda', [], {'pdev_path': '/img', 'vdev': 'xvda', 'colo_enable': False}),
    ('specification=virtio,/img,,xvda', [], {'pdev_path': '/img', 'vdev': 'xvda', 'specification': 'virtio'}),
    ('specification=scsi,/img,xvda', ["f.cfg: config parsing error in disk specification: unknown value for specification: near `scsi' in `specification=scsi,/img,xvda'"], None),
    ('grant_usage=1,/img,,xvda', [], {'pdev_path': '/img', 'vdev': 'xvda', 'grant_usage': True}),
    ('grant_usage=0,/img,,xvda', [], {'pdev_path': '/img', 'vdev': 'xvda', 'grant_usage': False}),
    ('grant_usage=2,/img,xvda', ["f.cfg: config parsing error in disk specification: bad disk syntax: near `=2,/img,xvda' in `grant_usage=2,/img,xvda'"], None),
    ('backend=dom1,/img,,xvda', [], {'pdev_path': '/img', 'vdev': 'xvda', 'backend_domname': 'dom1'}),
    ('/img', ["f.cfg: config parsing error in disk specification: no vdev specified in `/img'"], None),
    (',,xvda', [], {'pdev_path': '', 'vdev': 'xvda'}),
    ('cdrom,vdev=hdc', [], {'vdev': 'hdc', 'format': 'empty', 'removable': True, 'readwrite': False, 'is_cdrom': True}),
    ('/img,,hdc,cdrom,ro', [], {'pdev_path': '/img', 'vdev': 'hdc', 'removable': True, 'readwrite': False, 'is_cdrom': True}),
    ('access=,/img,,xvda', [], {'pdev_path': '/img', 'vdev': 'xvda'}),
    ('/img,xvda', ["f.cfg: config parsing error in disk specification: unknown value for format: near `xvda' in `/img,xvda'"], None),
    ('/img,,xvda,,', [], {'pdev_path': '/img', 'vdev': 'xvda'}),
    ('phy:,xvda', [], {'pdev_path': '', 'vdev': 'xvda'}),
    ('/img,raw,xvda,w,', [], {'pdev_path': '/img', 'vdev': 'xvda'}),
    ('  /img , raw,xvda', [], {'pdev_path': '/img ', 'vdev': 'xvda'}),
    ('/img,raw,xvda=1', ["f.cfg: config parsing error in disk specification: unknown parameter: near `xvda=1' in `/img,raw,xvda=1'"], None),
    ('/a=b,xvda', ["f.cfg: config parsing error in disk specification: bad disk syntax: near `=b,xvda' in `/a=b,xvda'"], None),
    ('/img,raw,xvda,r,w', ["f.cfg: config parsing error in disk specification: too many positional parameters: near `w' in `/img,raw,xvda,r,w'"], None),
    ('target=', ["f.cfg: config parsing error in disk specification: no vdev specified in `target='"], None),
    ('vdev=hda,target=', [], {'pdev_path': '', 'vdev': 'hda'}),
    (',,hdc:cdrom', [], {'pdev_path': '', 'vdev': 'hdc', 'format': 'empty', 'removable': True, 'readwrite': False, 'is_cdrom': True}),
    ('/img,qcow2,xvda', [], {'pdev_path': '/img', 'vdev': 'xvda', 'format': 'qcow2'}),
    ('devtype=disk,devtype=cdrom,/img,,hdc', [], {'pdev_path': '/img', 'vdev': 'hdc', 'removable': True, 'readwrite': False, 'is_cdrom': True}),
    ('backendtype=qdisk,backendtype=phy,/img,,xvda', ["f.cfg: config parsing error in disk specification: backend respecified: near `phy' in `backendtype=qdisk,backendtype=phy,/img,,xvda'"], None),
    ('/img,,xvda,devtype=cdrom', [], {'pdev_path': '/img', 'vdev': 'xvda', 'removable': True, 'readwrite': False, 'is_cdrom': True}),
    ('raw:/img,raw,xvda', ["f.cfg: config parsing error in disk specification: unknown value for access: near `xvda' in `raw:/img,raw,xvda'"], None),
    ('raw:/img,xvda,w', [], {'pdev_path': '/img', 'vdev': 'xvda'}),
    ('/img,raw,hdc:cdrom', [], {'pdev_path': '/img', 'vdev': 'hdc', 'removable': True, 'readwrite': False, 'is_cdrom': True}),
    ('vdev=xvda', ["f.cfg: config parsing error in disk specification: no target specified (and device not removable) in `vdev=xvda'"], None),
    ('/img,,xvda,w,discard', [], {'pdev_path': '/img', 'vdev': 'xvda', 'discard_enable': True}),
]

# (rate=, report lines, (rate_bytes_per_interval, rate_interval_usecs) or None)
RATE_CASES: list[tuple[str, list[str], tuple[int, int] | None]] = [
    ('10Mb/s', [], (62500, 50000)),
    ('250KB/s', [], (12500, 50000)),
    ('1MB/s@20ms', [], (20000, 20000)),
    ('10MB/s@20ms', [], (200000, 20000)),
    ('1Gb/s@1s', [], (125000000, 1000000)),
    ('100KB/s@50000us', [], (5000, 50000)),
    ('100KB/s@50000u', [], (5000, 50000)),
    ('1KB/s@2', [], (2000, 2000000)),
    ('@1s', ["f.cfg: config parsing error in vif: no rate specified in `@1s'"], None),
    ('', ["f.cfg: config parsing error in vif: no rate specified in `'"], None),
    ('5b/s', [], (0, 50000)),
    ('0Mb/s', ["f.cfg: config parsing error in vif: rate overflow in `0Mb/s'"], None),
    ('08Mb/s', ["f.cfg: config parsing error in vif: rate overflow in `08Mb/s'"], None),
    ('010B/s', [], (0, 50000)),
    ('1Mb/s@0', ["f.cfg: config parsing error in vif: replenishment interval overflow in `0'"], None),
    ('1Mb/s@5000s', ["f.cfg: config parsing error in vif: replenishment interval overflow in `5000s'"], None),
    ('4294967295GB/s@4294967295us', ["f.cfg: config parsing error in vif: rate overflow in `4294967295GB/s@4294967295us'"], None),
    ('4294967296B/s', ["f.cfg: config parsing error in vif: rate overflow in `4294967296B/s'"], None),
    ('10Mbit/s', ["f.cfg: config parsing error in vif: invalid rate in `10Mbit/s'"], None),
    ('10 Mb/s', ["f.cfg: config parsing error in vif: invalid rate in `10 Mb/s'"], None),
    ('1Mb/s@', ["f.cfg: config parsing error in vif: invalid replenishment interval in `'"], None),
    ('1Mb/s@1h', ["f.cfg: config parsing error in vif: invalid replenishment interval in `1h'"], None),
    ('1Mb/s@4294967296', ["f.cfg: config parsing error in vif: replenishment interval overflow in `4294967296'"], None),
    ('1Mb/s@4295s', ["f.cfg: config parsing error in vif: replenishment interval overflow in `4295s'"], None),
    ('1Mb/s@4294s', [], (536750000, 4294000000)),
    ('9Gb/s@4294967295us', [], (4831838206875, 4294967295)),
    ('1MB/s@20ms@1s', ["f.cfg: config parsing error in vif: invalid replenishment interval in `20ms@1s'"], None),
]

# xl-disk-configuration.5.pod.in: "the same disk" spelt four ways, then "the same cdrom" five ways.
POD_DISK_SAME = [
    "/dev/vg/guest-volume,,hda",
    "/dev/vg/guest-volume,raw,hda,rw",
    "format=raw, vdev=hda, access=rw, target=/dev/vg/guest-volume",
    "raw:/dev/vg/guest-volume,hda,w",
]
POD_CDROM_SAME = [
    "/root/image.iso,,hdc,cdrom",
    "/root/image.iso,,hdc,,cdrom",
    "/root/image.iso,raw,hdc,devtype=cdrom",
    "format=raw, vdev=hdc, access=ro, devtype=cdrom, target=/root/image.iso",
    "raw:/root/image.iso,hdc:cdrom,ro",
]
POD_DISK_CFG = "disk = [ '/dev/vg/guest-volume,,hda', '/root/image.iso,,hdc,cdrom' ]\n"

# xl-network-configuration.5.pod.in: vifspec examples, and the rate examples with the meaning
# the page gives them ("20,000 bytes in every 20 millisecond period" for 1MB/s@20ms).
POD_VIFS = [
    "mac=00:16:3E:74:3d:76,model=rtl8139,bridge=xenbr0",
    "mac=00:16:3E:74:34:32",
    "",
]
POD_VIF_CFG = "vif = [ 'mac=00:16:3E:74:34:32', 'mac=00:16:3e:5f:48:e4,bridge=xenbr1' ]\n"
POD_RATES = {"10Mb/s": 10_000_000 // 8, "250KB/s": 250_000, "1MB/s@20ms": 1_000_000}

# (vif spec, lines xl prints, libxl_device_nic fields set (devid 0 and empty ones left out), or None when xl exits)
VIF_CASES: list[tuple[str, list[str], dict[str, object] | None]] = [
    ('colour=blue,bridge=br1', ["unrecognized argument `colour=blue'"], {'bridge': 'br1'}),
    ('trusted', [], {'trusted': True}),
    ('untrusted,trusted=1', ["unrecognized argument `trusted=1'"], {'trusted': False}),
    ('type=ioemu', [], {'nictype': 'vif_ioemu'}),
    ('type=vif2', ["Invalid parameter `type'."], {}),
    ('mac=00-16-3e-01-02-03', [], {'mac': '00:16:3e:01:02:03'}),
    ('mac=0:1:2:3:4:5junk', [], {'mac': '00:01:02:03:04:05'}),
    ('mac=00:16:zz', ["Invalid parameter `mac'."], {'mac': '00:16:00:00:00:00'}),
    ('mac=001122334455', ["Invalid parameter `mac'."], {}),
    ('mac=00:16:3e,bridge=eb', ["Invalid parameter `mac'."], {'mac': '00:16:3e:0b:00:00', 'bridge': 'eb'}),
    ('mac=-1:0:0:0:0:0', ["Invalid parameter `mac'."], {}),
    ('mac=0x10:1:2:3:4:5', [], {'mac': '10:01:02:03:04:05'}),
    ('netdev=eth1', ['the netdev parameter is deprecated, please use gatewaydev instead'], {'gatewaydev': 'eth1'}),
    ('accel=x', ['the accel parameter for vifs is currently not supported'], {}),
    ('vifname=v1,ip=10.0.0.2 10.0.0.3,script=vif-route,model=e1000,backend=d1,gatewaydev=eth0,forwarddev=eth2,vlan=10p/20', [], {'backend_domname': 'd1', 'coloft_forwarddev': 'eth2', 'gatewaydev': 'eth0', 'ifname': 'v1', 'ip': '10.0.0.2 10.0.0.3', 'model': 'e1000', 'script': 'vif-route', 'vlan': '10p/20'}),
    ('devid=7,mtu=9000x', [], {'devid': 7, 'mtu': 9000}),
    ('devid=4294967295', [], {'devid': -1}),
    ('mtu=4294967297', [], {'mtu': 1}),
    ('  bridge=a,,, bridge=b', [], {'bridge': 'b'}),
    ('colo_sock_mirror_id=1,colo_checkpoint_port=9', [], {'colo': (('colo_sock_mirror_id', '1'), ('colo_checkpoint_port', '9'))}),
    ('rate=10Mb/s@20ms', [], {'rate_bytes_per_interval': 25000, 'rate_interval_usecs': 20000}),
    ('mtu=', ['xl: failed to convert "" to number'], None),
    ('devid=-1', ['xl: failed to convert "-1" to number'], None),
    ('colour=x,rate=fast', ["unrecognized argument `colour=x'", "f.cfg: config parsing error in vif: invalid rate in `fast'"], None),
    ('bridge', ["unrecognized argument `bridge'"], {}),
    ('=x', ["unrecognized argument `=x'"], {}),
    ('MAC=00:16:3e:00:00:01', ["unrecognized argument `MAC=00:16:3e:00:00:01'"], {}),
    ('mac =00:16:3e:00:00:01', ["unrecognized argument `mac =00:16:3e:00:00:01'"], {}),
]

# xl-disk-configuration.5.pod.in lines 540-615: the deprecated prefixes and the empty cdrom.
POD_FORMAT_PREFIXES = ["raw", "qcow2", "vhd"]
POD_SCRIPT_PREFIXES = ["iscsi", "nbd", "enbd", "drbd"]
POD_IGNORED_PREFIXES = ["tapdisk", "tap2", "aio", "ioemu", "file", "phy"]
POD_SEVERAL_PREFIXES = "tap:aio:/some/path"
POD_EMPTY_CDROM = ",hdc:cdrom,r"
# xl-network-configuration.5.pod.in lines 296-298 (xl passes vlan= through to libxl).
POD_VLANS = ["10", "10p/20", "10p/100+10x4"]
