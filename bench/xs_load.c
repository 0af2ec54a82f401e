/* xs_load: a C load generator for bench/xenstore.py, and the C echo floor.
 *
 *   xs_load read  SOCKET CONNS SECONDS PATH
 *   xs_load write SOCKET CONNS SECONDS PATH VALUE_LEN
 *   xs_load echo  SOCKET VALUE_LEN
 *
 * read/write: CONNS processes, each with its own xs_open() connection (Debian's
 * libxenstore 4.17, which connects to $XENSTORED_PATH: this program sets it to SOCKET),
 * warm up, then loop xs_read() / xs_write() for SECONDS from a common start instant (set
 * once every process is connected and warm) and time every call
 * with CLOCK_MONOTONIC.  write uses PATH<i> for process i (PATH0..PATH7).  Prints one JSON
 * line: {"ops": N, "seconds": S, "ops_per_s": R, "p50_us": .., "p99_us": ..}.  The client
 * is exactly what a C toolstack does: one request in flight per connection, written as
 * header then payload, reply read as header then body.
 *
 * echo: a minimal single-threaded epoll server on a Unix socket at SOCKET that answers
 * each xenstore request with a reply of the size xenstored gives (READ: VALUE_LEN bytes of
 * value; anything else: "OK\0"), keeping type, req_id and tx_id: the transport cost with no
 * store behind it, in C.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <xenstore.h>
#include <xen/io/xs_wire.h>

#define MAX_SAMPLES (1u << 20)

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Shared with the parent: how many clients finished warming up, and the common start
 * instant the parent publishes once all have (0 until then). */
struct sync {
    volatile int ready;
    volatile uint64_t start;
};

/* One client process: its own connection, warm-up, then the timed loop. */
static void client(int idx, int writing, const char *path, unsigned vlen, double seconds,
                   struct sync *sync, uint64_t *count, uint32_t *lat)
{
    char wpath[256];
    char *value = malloc(vlen ? vlen : 1);
    struct xs_handle *h = xs_open(0);
    uint64_t n = 0, t, t2, stop;
    int i, warm = writing ? 20 : 200;  /* writes cost an fsync each */

    if (!h) {
        perror("xs_open");
        _exit(2);
    }
    memset(value, 'v', vlen);
    snprintf(wpath, sizeof(wpath), "%s%d", path, idx);
    for (i = 0; i < warm; i++) {  /* warm-up: connection and daemon paths hot */
        if (writing) {
            if (!xs_write(h, XBT_NULL, wpath, value, vlen)) {
                perror("xs_write");
                _exit(2);
            }
        } else {
            unsigned len;
            void *r = xs_read(h, XBT_NULL, path, &len);
            if (!r) {
                perror("xs_read");
                _exit(2);
            }
            free(r);
        }
    }
    __sync_fetch_and_add(&sync->ready, 1);
    while (!sync->start)
        usleep(100);
    while (now_ns() < sync->start)
        ;
    stop = sync->start + (uint64_t)(seconds * 1e9);
    t = now_ns();
    while (t < stop) {
        if (writing) {
            if (!xs_write(h, XBT_NULL, wpath, value, vlen))
                _exit(3);
        } else {
            unsigned len;
            void *r = xs_read(h, XBT_NULL, path, &len);
            if (!r)
                _exit(3);
            free(r);
        }
        t2 = now_ns();
        if (n < MAX_SAMPLES)
            lat[n] = (uint32_t)(t2 - t > 0xffffffffu ? 0xffffffffu : t2 - t);
        n++;
        t = t2;
    }
    *count = n;
    xs_close(h);
    _exit(0);
}

static int load(int writing, const char *sock, int conns, double seconds, const char *path,
                unsigned vlen)
{
    size_t per = MAX_SAMPLES * sizeof(uint32_t);
    uint64_t *counts = mmap(NULL, conns * sizeof(uint64_t), PROT_READ | PROT_WRITE,
                            MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    uint32_t *lat = mmap(NULL, conns * per, PROT_READ | PROT_WRITE,
                         MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    struct sync *sync = mmap(NULL, sizeof(*sync), PROT_READ | PROT_WRITE,
                             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    uint64_t total = 0, kept = 0, i, j;
    uint32_t *all;
    int c, status, failed = 0;

    if (counts == MAP_FAILED || lat == MAP_FAILED || sync == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    setenv("XENSTORED_PATH", sock, 1);
    for (c = 0; c < conns; c++) {
        pid_t pid = fork();
        if (pid == 0)
            client(c, writing, path, vlen, seconds, sync, &counts[c],
                   lat + (size_t)c * MAX_SAMPLES);
        if (pid < 0) {
            perror("fork");
            return 1;
        }
    }
    while (sync->ready < conns) {  /* all connected and warm: start together */
        if (waitpid(-1, &status, WNOHANG) > 0) {
            fprintf(stderr, "xs_load: a client failed while warming up\n");
            return 1;
        }
        usleep(1000);
    }
    sync->start = now_ns() + 5000000u;
    for (c = 0; c < conns; c++) {
        if (wait(&status) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed = 1;
    }
    if (failed) {
        fprintf(stderr, "xs_load: a client failed\n");
        return 1;
    }
    for (c = 0; c < conns; c++) {
        total += counts[c];
        kept += counts[c] < MAX_SAMPLES ? counts[c] : MAX_SAMPLES;
    }
    all = malloc((kept ? kept : 1) * sizeof(uint32_t));
    for (c = 0, j = 0; c < conns; c++) {
        uint64_t n = counts[c] < MAX_SAMPLES ? counts[c] : MAX_SAMPLES;
        for (i = 0; i < n; i++)
            all[j++] = lat[(size_t)c * MAX_SAMPLES + i];
    }
    qsort(all, kept, sizeof(uint32_t), cmp_u32);
    printf("{\"ops\": %llu, \"seconds\": %.3f, \"ops_per_s\": %.1f, \"p50_us\": %.2f, "
           "\"p99_us\": %.2f}\n", (unsigned long long)total, seconds, total / seconds,
           kept ? all[kept / 2] / 1e3 : 0.0, kept ? all[(size_t)(kept * 0.99)] / 1e3 : 0.0);
    return 0;
}

/* --- the C echo floor ---------------------------------------------------------------------- */
struct peer {
    int fd;
    size_t have;
    char buf[65536];
};

static int echo(const char *sock, unsigned vlen)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    struct epoll_event ev, evs[64];
    static char out[65536 + 8192];
    char value[XENSTORE_PAYLOAD_MAX];
    int lfd, ep, n, i;

    if (vlen > sizeof(value))
        vlen = sizeof(value);
    memset(value, 'v', vlen);
    signal(SIGPIPE, SIG_IGN);
    lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", sock);
    unlink(sock);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) || listen(lfd, 1024)) {
        perror("echo: bind");
        return 1;
    }
    ep = epoll_create1(0);
    ev.events = EPOLLIN;
    ev.data.ptr = NULL;
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    for (;;) {
        n = epoll_wait(ep, evs, 64, -1);
        for (i = 0; i < n; i++) {
            struct peer *p = evs[i].data.ptr;
            size_t pos = 0, olen = 0;
            ssize_t got;

            if (!p) {
                int fd = accept(lfd, NULL, NULL);
                if (fd < 0)
                    continue;
                p = calloc(1, sizeof(*p));
                p->fd = fd;
                ev.events = EPOLLIN;
                ev.data.ptr = p;
                epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                continue;
            }
            got = read(p->fd, p->buf + p->have, sizeof(p->buf) - p->have);
            if (got <= 0) {
                close(p->fd);
                free(p);
                continue;
            }
            p->have += got;
            while (p->have - pos >= sizeof(struct xsd_sockmsg)) {
                struct xsd_sockmsg hdr;
                memcpy(&hdr, p->buf + pos, sizeof(hdr));
                if (p->have - pos < sizeof(hdr) + hdr.len)
                    break;
                pos += sizeof(hdr) + hdr.len;
                if (hdr.type == XS_READ) {
                    hdr.len = vlen;
                    memcpy(out + olen, &hdr, sizeof(hdr));
                    memcpy(out + olen + sizeof(hdr), value, vlen);
                } else {
                    hdr.len = 3;
                    memcpy(out + olen, &hdr, sizeof(hdr));
                    memcpy(out + olen + sizeof(hdr), "OK", 3);
                }
                olen += sizeof(hdr) + hdr.len;
            }
            memmove(p->buf, p->buf + pos, p->have - pos);
            p->have -= pos;
            if (olen && write(p->fd, out, olen) < 0) {
                close(p->fd);
                free(p);
            }
        }
    }
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "echo"))
        return echo(argv[2], (unsigned)atoi(argv[3]));
    if (argc >= 6 && (!strcmp(argv[1], "read") || !strcmp(argv[1], "write")))
        return load(argv[1][0] == 'w', argv[2], atoi(argv[3]), atof(argv[4]), argv[5],
                    argc > 6 ? (unsigned)atoi(argv[6]) : 32);
    fprintf(stderr, "usage: xs_load read|write SOCKET CONNS SECONDS PATH [VALUE_LEN]\n"
                    "       xs_load echo SOCKET VALUE_LEN\n");
    return 2;
}
