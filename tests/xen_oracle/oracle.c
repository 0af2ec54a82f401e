#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "libxlutil.h"
#include "libxlu_internal.h"
static void dumpv(XLU_ConfigValue *v) {
  if (v->type == XLU_STRING) { putchar('"'); for (char *p=v->u.string; *p; p++) { if (*p=='"'||*p=='\\') putchar('\\'); if ((unsigned char)*p<32) printf("\\u%04x",*p); else putchar(*p);} putchar('"'); }
  else { putchar('['); for (int i=0;i<v->u.list.nvalues;i++){ if(i) putchar(','); dumpv(v->u.list.values[i]);} putchar(']'); }
}
static char *s(char *x){ return x ? x : "(null)"; }
int main(int argc, char **argv) {
  XLU_Config *cfg = xlu_cfg_init(stdout, argv[2]);
  if (!strcmp(argv[1], "cfg")) {
    FILE *f = fopen(argv[3], "rb"); static char buf[1<<20]; size_t n = fread(buf,1,sizeof buf,f);
    int e = xlu_cfg_readdata(cfg, buf, n);
    printf("RC %d\n", e);
    /* settings newest first */
    for (XLU_ConfigSetting *st = cfg->settings; st; st = st->next) { printf("SET %s %d %d ", st->name, st->lineno, st->op); dumpv(st->value); putchar('\n'); }
    for (int i = 4; i < argc; i++) { long l; const char *str; int r;
      r = xlu_cfg_get_long(cfg, argv[i], &l, 0); printf("LONG %s %d %ld\n", argv[i], r, r?0:l);
      r = xlu_cfg_get_string(cfg, argv[i], &str, 0); printf("STR %s %d %s\n", argv[i], r, r?"":str);
      r = xlu_cfg_get_list(cfg, argv[i], NULL, NULL, 0); printf("LIST %s %d\n", argv[i], r); }
  } else if (!strcmp(argv[1], "disk")) {
    libxl_device_disk d; memset(&d, 0, sizeof d);
    int e = xlu_disk_parse(cfg, argc-3, (const char *const *)argv+3, &d);
    printf("RC %d\n", e);
    printf("pdev_path=%s vdev=%s backend=%d format=%d script=%s removable=%d readwrite=%d is_cdrom=%d direct_io_safe=%d discard=%d colo=%d colo_host=%s colo_port=%d colo_export=%s active=%s hidden=%s trusted=%d spec=%d grant=%d backend_domname=%s\n",
      s(d.pdev_path), s(d.vdev), d.backend, d.format, s(d.script), d.removable, d.readwrite, d.is_cdrom, d.direct_io_safe, d.discard_enable.val, d.colo_enable.val, s(d.colo_host), d.colo_port, s(d.colo_export), s(d.active_disk), s(d.hidden_disk), d.trusted.val, d.specification, d.grant_usage.val, s(d.backend_domname));
  } else if (!strcmp(argv[1], "rate")) {
    libxl_device_nic n; memset(&n, 0, sizeof n);
    int e = xlu_vif_parse_rate(cfg, argv[3], &n);
    printf("RC %d bytes=%llu usecs=%u\n", e, (unsigned long long)n.rate_bytes_per_interval, n.rate_interval_usecs);
  }
  return 0;
}
