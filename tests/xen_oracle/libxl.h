#include <stdint.h>
#include <stdbool.h>
typedef struct { int val; } libxl_defbool;
static inline void libxl_defbool_set(libxl_defbool *b, bool v) { b->val = v ? 1 : -1; }
typedef char **libxl_string_list;
typedef enum { LIBXL_DISK_FORMAT_UNKNOWN=0, LIBXL_DISK_FORMAT_QCOW, LIBXL_DISK_FORMAT_QCOW2, LIBXL_DISK_FORMAT_VHD, LIBXL_DISK_FORMAT_RAW, LIBXL_DISK_FORMAT_EMPTY, LIBXL_DISK_FORMAT_QED } libxl_disk_format;
typedef enum { LIBXL_DISK_BACKEND_UNKNOWN=0, LIBXL_DISK_BACKEND_PHY, LIBXL_DISK_BACKEND_TAP, LIBXL_DISK_BACKEND_QDISK, LIBXL_DISK_BACKEND_STANDALONE } libxl_disk_backend;
typedef enum { LIBXL_DISK_SPECIFICATION_UNKNOWN=0, LIBXL_DISK_SPECIFICATION_XEN, LIBXL_DISK_SPECIFICATION_VIRTIO } libxl_disk_specification;
typedef struct {
  char *backend_domname; char *pdev_path; char *vdev; libxl_disk_backend backend; libxl_disk_format format;
  char *script; int removable; int readwrite; int is_cdrom; bool direct_io_safe; libxl_defbool discard_enable;
  libxl_defbool colo_enable; libxl_defbool colo_restore_enable; char *colo_host; int colo_port; char *colo_export;
  char *active_disk; char *hidden_disk; libxl_defbool trusted; libxl_disk_specification specification; libxl_defbool grant_usage;
} libxl_device_disk;
typedef struct { uint64_t rate_bytes_per_interval; uint32_t rate_interval_usecs; } libxl_device_nic;
typedef struct { int x; } libxl_device_pci;
typedef struct { int x; } libxl_rdm_reserve;
