"""Write nicoracle.c: xl_parse.c's parse_nic_config cut out of Xen's tree, with the helpers it
calls and parse_config_data's strtok loop, printing what xl prints and the nic it fills in.

Usage: python3 make_nicoracle.py <xen>/tools/xl/xl_parse.c > nicoracle.c
"""

import re
import sys

src = open(sys.argv[1]).read()
fn = src[src.index("int parse_nic_config(libxl_device_nic *nic, XLU_Config **config, char *token)"):
         src.index("static void parse_vnuma_config")]
fields = sorted(set(re.findall(r"nic->(\w+)", fn)))
strfields = [f for f in fields if f not in ("nictype", "mac", "devid", "mtu", "trusted",
                                            "rate_bytes_per_interval", "rate_interval_usecs")]
print("#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n#include <stdint.h>\n"
      "#include <limits.h>\n#include <errno.h>\n#include \"libxlutil.h\"")
print("typedef struct { int nictype; unsigned char mac[6]; int devid; uint32_t mtu; "
      "libxl_defbool trusted; uint64_t rate_bytes_per_interval; uint32_t rate_interval_usecs; "
      + " ".join(f"char *{f};" for f in strfields) + " } mynic;")
print(r'''
#define LIBXL_NIC_TYPE_VIF 1
#define LIBXL_NIC_TYPE_VIF_IOEMU 2
int match_option_size(const char *prefix, size_t len, char *arg, char **argopt)
{ int rc = strncmp(prefix, arg, len); if (!rc) *argopt = arg+len; return !rc; }
#define MATCH_OPTION(prefix, arg, oparg) match_option_size((prefix "="), sizeof((prefix)), (arg), &(oparg))
void replace_string(char **str, const char *val) { free(*str); *str = strdup(val); }
static unsigned long parse_ulong(const char *str) { char *endptr; unsigned long val;
  val = strtoul(str, &endptr, 10);
  if (endptr == str || val == ULONG_MAX) {
    fprintf(stdout, "xl: failed to convert \"%s\" to number\n", str); printf("EXIT\n"); exit(EXIT_FAILURE); }
  return val; }
static void parse_vif_rate(XLU_Config **config, const char *rate, mynic *nic) { int e;
  libxl_device_nic n; memset(&n, 0, sizeof n);
  e = xlu_vif_parse_rate(*config, rate, &n);
  nic->rate_bytes_per_interval = n.rate_bytes_per_interval; nic->rate_interval_usecs = n.rate_interval_usecs;
  if (e == EINVAL || e == EOVERFLOW) { printf("EXIT\n"); exit(EXIT_FAILURE); } }
''')
print(fn.replace("libxl_device_nic *nic", "mynic *nic").replace("stderr", "stdout"))
print(r'''int main(int argc, char **argv) {
  XLU_Config *config = xlu_cfg_init(stdout, "f.cfg");
  mynic nic; memset(&nic, 0, sizeof nic);
  char *buf2 = strdup(argv[1]); char *p = strtok(buf2, ",");
  if (p) do { while (*p == ' ') p++; parse_nic_config(&nic, &config, p); } while ((p = strtok(NULL, ",")) != NULL);
  printf("RESULT nictype=%d mac=%02x:%02x:%02x:%02x:%02x:%02x devid=%d mtu=%u trusted=%d rate=%llu,%u\n",
         nic.nictype, nic.mac[0], nic.mac[1], nic.mac[2], nic.mac[3], nic.mac[4], nic.mac[5], nic.devid,
         nic.mtu, nic.trusted.val, (unsigned long long)nic.rate_bytes_per_interval, nic.rate_interval_usecs);''')
for f in strfields:
    print(f'  if (nic.{f}) printf("F {f}=%s\\n", nic.{f});')
print("  return 0; }")
