/*
 * consume.c: follow a ramxchg channel with nothing but libc (Linux).
 *
 * Implements the consumer side of docs/protocol.md (version 1):
 *   - items are the non-hidden files "<name>.npy" in the channel folder;
 *   - a published item appears in one step (a hard link), after its sidecar
 *     ".ramxchg/meta/<name>.json" that holds its "seq";
 *   - catch up on the items already there in publish order: by arrival time (the
 *     sidecar's "published_ns"; for a file without sidecar, written by another
 *     program, its ctime), then seq (files without sidecar last), then name; follow
 *     inotify: IN_CREATE/IN_MOVED_TO of a file with a sidecar is a complete item;
 *     a file without one is complete at IN_CLOSE_WRITE (a legacy writer);
 *   - a jump in seq or an inotify overflow means events were lost: rescan.
 *
 * For each item it prints "<name> <sum of its values>" (%.17g) and flushes.
 * Supported dtypes: <f8 <f4 <i8 <i4 <i2 <u2 |i1 |u1 <u4 <u8 |b1.
 * This is an anonymous consumer: it acks nothing (see protocol.md, "Acking").
 *
 *   cc -O2 -o consume consume.c && ./consume /dev/shm/ramxchg-1000/camera
 *   RAMXCHG_MAX_ITEMS=10 ./consume DIR    # exit after 10 items
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_NAME 256

static const char *channel;
static long max_items = -1;
static long delivered = 0;
static long long high_seq = 0;

/* Names already delivered (a small open-addressing set; fine for an example). */
static char **seen;
static size_t seen_cap = 0, seen_len = 0;

static size_t hash(const char *s) {
    size_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int seen_has(const char *name) {
    if (!seen_cap) return 0;
    for (size_t i = hash(name) % seen_cap; seen[i]; i = (i + 1) % seen_cap)
        if (!strcmp(seen[i], name)) return 1;
    return 0;
}

static void seen_add(const char *name) {
    if (2 * (seen_len + 1) > seen_cap) {
        size_t old_cap = seen_cap;
        char **old = seen;
        seen_cap = seen_cap ? 2 * seen_cap : 1024;
        seen = calloc(seen_cap, sizeof *seen);
        if (!seen) { perror("calloc"); exit(1); }
        seen_len = 0;
        for (size_t i = 0; i < old_cap; i++)
            if (old[i]) seen_add(old[i]);
        free(old);
    }
    size_t i = hash(name) % seen_cap;
    while (seen[i]) i = (i + 1) % seen_cap;
    seen[i] = strdup(name);
    seen_len++;
}

/* "<name>.npy" -> "<name>" in out; 0 if not a visible .npy item file. */
static int item_name(const char *file, char *out) {
    size_t n = strlen(file);
    if (file[0] == '.' || n <= 4 || n - 4 >= MAX_NAME || strcmp(file + n - 4, ".npy")) return 0;
    memcpy(out, file, n - 4);
    out[n - 4] = 0;
    return 1;
}

/* The item's seq from its sidecar, and its "published_ns" into *published when not
 * NULL; 0 when it has none (a legacy file: *published is left alone). */
static long long sidecar_seq(const char *name, long long *published) {
    char path[PATH_MAX], buf[4096];
    snprintf(path, sizeof path, "%s/.ramxchg/meta/%s.json", channel, name);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    char *at = strstr(buf, "\"seq\":");
    char *when = strstr(buf, "\"published_ns\":");
    if (!at || !when) return 0;
    if (published) *published = strtoll(when + 15, NULL, 10);
    return strtoll(at + 6, NULL, 10);
}

/* Sum the values of a .npy file; returns 0 and sets *sum on success. */
static int npy_sum(const char *path, double *sum) {
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) return -1;
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_size < 12) { close(fd); return -1; }
    unsigned char *map = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return -1;
    int rc = -1;
    size_t size = st.st_size, hlen, start;
    if (memcmp(map, "\x93NUMPY", 6)) goto out;
    if (map[6] == 1) { hlen = map[8] | map[9] << 8; start = 10; }
    else { hlen = map[8] | map[9] << 8 | (size_t)map[10] << 16 | (size_t)map[11] << 24; start = 12; }
    if (start + hlen > size || hlen > 65536) goto out;
    char header[65537];
    memcpy(header, map + start, hlen);
    header[hlen] = 0;
    char descr[16] = {0};
    char *d = strstr(header, "'descr':"), *s = strstr(header, "'shape':");
    if (!d || !s || sscanf(d + 8, " '%15[^']'", descr) != 1) goto out;
    size_t count = 1;
    char *p = strchr(s, '(');
    if (!p) goto out;
    for (p++; *p && *p != ')';) {
        char *end;
        unsigned long long dim = strtoull(p, &end, 10);
        if (end == p) { p++; continue; }
        count *= dim;
        p = end;
    }
    struct { const char *descr; size_t size; } kinds[] = {
        {"<f8", 8}, {"<f4", 4}, {"<i8", 8}, {"<i4", 4}, {"<i2", 2}, {"<u2", 2},
        {"|i1", 1}, {"|u1", 1}, {"<u4", 4}, {"<u8", 8}, {"|b1", 1},
    };
    size_t item = 0;
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++)
        if (!strcmp(descr, kinds[k].descr)) item = kinds[k].size;
    if (!item) { fprintf(stderr, "%s: unsupported dtype %s\n", path, descr); goto out; }
    const unsigned char *data = map + start + hlen;
    if (start + hlen + count * item > size) goto out; /* header promises more: incomplete */
    double total = 0;
    for (size_t i = 0; i < count; i++) {
        const unsigned char *v = data + i * item;
        if (!strcmp(descr, "<f8")) { double x; memcpy(&x, v, 8); total += x; }
        else if (!strcmp(descr, "<f4")) { float x; memcpy(&x, v, 4); total += x; }
        else if (!strcmp(descr, "<i8")) { int64_t x; memcpy(&x, v, 8); total += (double)x; }
        else if (!strcmp(descr, "<i4")) { int32_t x; memcpy(&x, v, 4); total += x; }
        else if (!strcmp(descr, "<i2")) { int16_t x; memcpy(&x, v, 2); total += x; }
        else if (!strcmp(descr, "<u2")) { uint16_t x; memcpy(&x, v, 2); total += x; }
        else if (!strcmp(descr, "<u4")) { uint32_t x; memcpy(&x, v, 4); total += x; }
        else if (!strcmp(descr, "<u8")) { uint64_t x; memcpy(&x, v, 8); total += (double)x; }
        else if (!strcmp(descr, "|i1")) total += (int8_t)*v;
        else total += *v; /* |u1, |b1 */
    }
    *sum = total;
    rc = 0;
out:
    munmap(map, size);
    return rc;
}

static void deliver(const char *name, long long seq) {
    char path[PATH_MAX];
    double sum;
    if (seen_has(name)) return;
    snprintf(path, sizeof path, "%s/%s.npy", channel, name);
    if (npy_sum(path, &sum)) return; /* gone, or not complete yet */
    seen_add(name);
    if (seq > high_seq) high_seq = seq;
    printf("%s %.17g\n", name, sum);
    fflush(stdout);
    if (max_items > 0 && ++delivered >= max_items) exit(0);
}

struct found { char name[MAX_NAME]; long long seq; long long arrival; };

static int by_publish_order(const void *a, const void *b) {
    const struct found *x = a, *y = b;
    if (x->arrival != y->arrival) return x->arrival < y->arrival ? -1 : 1;
    if ((x->seq == 0) != (y->seq == 0)) return x->seq == 0 ? 1 : -1; /* legacy after */
    if (x->seq != y->seq) return x->seq < y->seq ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* List the folder; deliver what is new in publish order. Legacy files are taken only
 * when their header promises no more than they hold (a rescan has no close event). */
static void rescan(void) {
    DIR *dir = opendir(channel);
    if (!dir) { perror(channel); exit(1); }
    struct found *list = NULL;
    size_t len = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(dir))) {
        char name[MAX_NAME], path[PATH_MAX];
        struct stat st;
        if (!item_name(e->d_name, name) || seen_has(name)) continue;
        snprintf(path, sizeof path, "%s/%s", channel, e->d_name);
        if (lstat(path, &st) || !S_ISREG(st.st_mode)) continue;
        if (len == cap) list = realloc(list, (cap = cap ? 2 * cap : 64) * sizeof *list);
        strcpy(list[len].name, name);
        /* a legacy file arrived when it was created or moved in: its ctime, not mtime */
        list[len].arrival = (long long)st.st_ctim.tv_sec * 1000000000LL + st.st_ctim.tv_nsec;
        list[len].seq = sidecar_seq(name, &list[len].arrival);
        len++;
    }
    closedir(dir);
    qsort(list, len, sizeof *list, by_publish_order);
    for (size_t i = 0; i < len; i++) deliver(list[i].name, list[i].seq);
    free(list);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s CHANNEL_FOLDER\n", argv[0]);
        return 2;
    }
    channel = argv[1];
    const char *max = getenv("RAMXCHG_MAX_ITEMS");
    if (max) max_items = strtol(max, NULL, 10);
    /* Watch first, then list: whatever lands in between is seen by both (deduplicated). */
    int in = inotify_init1(IN_CLOEXEC);
    if (in < 0 || inotify_add_watch(in, channel, IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE) < 0) {
        perror("inotify");
        return 1;
    }
    rescan();
    char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t n = read(in, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("read");
            return 1;
        }
        int lost = 0;
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *ev = (struct inotify_event *)p;
            p += sizeof *ev + ev->len;
            char name[MAX_NAME];
            if (ev->mask & IN_Q_OVERFLOW) { lost = 1; continue; }
            if (!ev->len || !item_name(ev->name, name)) continue;
            long long seq = sidecar_seq(name, NULL);
            if (seq == 0 && !(ev->mask & IN_CLOSE_WRITE)) continue; /* legacy: wait for close */
            if (seq > high_seq + 1) rescan(); /* a gap: events were missed; in order */
            else deliver(name, seq);
        }
        if (lost) rescan();
    }
}
