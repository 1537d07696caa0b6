/*
 * consume.c: follow a ramxchg channel with nothing but libc (Linux).
 *
 * Implements the consumer side of docs/protocol.md, version 1.1:
 *   - items are the non-hidden files "<name>.npy" with a valid name (section 1); a
 *     published item appears in one step (a hard link), after its sidecar
 *     ".ramxchg/meta/<name>.json" that holds its "seq" and, since 1.1, the inode and
 *     size of its file: a sidecar that records another file is an orphan, and the file
 *     is a legacy one, written in place by another program (section 3);
 *   - catch up on the items already there in publish order: by arrival time (the
 *     sidecar's "published_ns"; for a legacy file its ctime), then seq (legacy files
 *     last), then name; then follow inotify: IN_CREATE/IN_MOVED_TO of a file with a
 *     sidecar is a complete item, a legacy file is complete at IN_CLOSE_WRITE (this
 *     example skips the /proc writer check of section 9);
 *   - a jump in seq, an inotify overflow, and every second: rescan (section 8);
 *   - each item is mapped through a descriptor holding flock(LOCK_SH), kept open while
 *     it is mapped, so that no producer recycles the file under us (section 11, rule 2);
 *   - with --group G, a member of the durable group G (registered with its backlog if
 *     new): each item is claimed before it is read (the claim is written complete,
 *     locked with flock(LOCK_EX), then linked into place: "lock": true) and acked after
 *     (section 6, section 11 rule 4). Claims of members that died are taken back: a
 *     locked claim when flock(LOCK_EX|LOCK_NB) succeeds on it, an unlocked (1.0) one by
 *     its pid, start time and host. Deleting acked items is left to `ramxchg gc`.
 *
 * For each item it prints "<name> <seq> <sum of its values>" (seq "-" for a legacy
 * file, the sum %.17g) and flushes. Supported dtypes: <f8 <f4 <i8 <i4 <i2 <u2 |i1 |u1
 * <u4 <u8 |b1. JSON is read with a minimal scan that suits ramxchg's flat records; a
 * real consumer uses a JSON parser.
 *
 *   cc -O2 -o consume consume.c
 *   ./consume /dev/shm/ramxchg-1000/camera                  # every item, no acks
 *   ./consume --group archive /dev/shm/ramxchg-1000/camera  # a member of "archive"
 *   ./consume --hold DIR      # keep each item mapped (and claimed) until Enter
 *   RAMXCHG_MAX_ITEMS=10 ./consume DIR                      # exit after 10 items
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_NAME 256
#define RESCAN_MS 1000            /* rescan this often: events can be lost, members die */
#define CLAIM_GRACE_SECONDS 5     /* an unreadable 1.0 claim younger than this is being written */
#define CLAIM_TAKEN (-2)          /* claim(): another member has the item */
#define FOLDER_MAX 1280           /* the group's folders; a path in them fits PATH_MAX */

static const char *channel, *group;
static char group_dir[FOLDER_MAX], claims_dir[FOLDER_MAX + 8], acks_dir[FOLDER_MAX + 8];
static int hold;
static long max_items = -1, delivered = 0;
static long long high_seq = 0, start_seq = 0;

static void die(const char *what) {
    perror(what);
    exit(1);
}

/* Items already delivered or done with, as "<name> <seq>" (a name may be published
 * again once its item is deleted): a small open-addressing set, fine for an example. */
static char **seen;
static size_t seen_cap = 0, seen_len = 0;

static size_t hash(const char *s) {
    size_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int seen_has(const char *key) {
    if (!seen_cap) return 0;
    for (size_t i = hash(key) % seen_cap; seen[i]; i = (i + 1) % seen_cap)
        if (!strcmp(seen[i], key)) return 1;
    return 0;
}

static void seen_add(const char *key) {
    if (2 * (seen_len + 1) > seen_cap) {
        size_t old_cap = seen_cap;
        char **old = seen;
        seen_cap = seen_cap ? 2 * seen_cap : 1024;
        seen = calloc(seen_cap, sizeof *seen);
        if (!seen) die("calloc");
        seen_len = 0;
        for (size_t i = 0; i < old_cap; i++)
            if (old[i]) seen_add(old[i]);
        free(old);
    }
    size_t i = hash(key) % seen_cap;
    while (seen[i]) i = (i + 1) % seen_cap;
    seen[i] = strdup(key);
    seen_len++;
}

/* ---- small files and JSON ------------------------------------------------------- */

/* Read a small file whole, NUL-terminated, never following a symlink nor blocking on a
 * FIFO (a channel may hold an outsider's files); its length, or -1. */
static ssize_t read_small(const char *path, char *buf, size_t cap) {
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t len = 0;
    ssize_t n;
    while (len < cap - 1 && (n = read(fd, buf + len, cap - 1 - len)) > 0) len += n;
    close(fd);
    buf[len] = 0;
    return len;
}

/* Where the value of the top-level key `key` starts in the JSON object `text`, or NULL.
 * ramxchg writes "attrs", the only nested value, last: keys are looked for before it. */
static const char *json_value(const char *text, const char *key) {
    char quoted[64];
    snprintf(quoted, sizeof quoted, "\"%s\"", key);
    const char *attrs = strstr(text, "\"attrs\"");
    for (const char *p = strstr(text, quoted); p && (!attrs || p < attrs);
         p = strstr(p + 1, quoted)) {
        const char *v = p + strlen(quoted);
        while (isspace((unsigned char)*v)) v++;
        if (*v != ':') continue;
        for (v++; isspace((unsigned char)*v); v++) {}
        return v;
    }
    return NULL;
}

/* 1 if the JSON value at `v` is an integer (then stored in *out). */
static int json_int(const char *v, long long *out) {
    char *end;
    if (!v || !(*v == '-' || isdigit((unsigned char)*v))) return 0;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || (*end && !strchr(",} \t\r\n", *end))) return 0; /* 1.0, "1": not ints */
    *out = x;
    return 1;
}

static int json_is(const char *v, const char *literal) {
    return v && !strncmp(v, literal, strlen(literal));
}

/* A JSON object with at least one key (what a claim written complete is). */
static int json_object(const char *text) {
    while (isspace((unsigned char)*text)) text++;
    const char *end = text + strlen(text);
    while (end > text && isspace((unsigned char)end[-1])) end--;
    return *text == '{' && end > text && end[-1] == '}' && strchr(text, ':');
}

/* ---- items ------------------------------------------------------------------------- */

/* Section 1: 1 to 200 of A-Z a-z 0-9 _ . -, no leading or trailing dot, and not a
 * Windows device name (the part before the first dot, any case). */
static int valid_name(const char *name, size_t n) {
    static const char *devices[] = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"};
    if (n < 1 || n > 200 || name[0] == '.' || name[n - 1] == '.') return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)name[i]) && !strchr("_.-", name[i])) return 0;
    char stem[8] = {0};
    size_t len = strcspn(name, ".");
    if (len >= sizeof stem) return 1;
    for (size_t i = 0; i < len; i++) stem[i] = toupper((unsigned char)name[i]);
    for (size_t i = 0; i < sizeof devices / sizeof *devices; i++)
        if (!strcmp(stem, devices[i])) return 0;
    return !(len == 4 && (!strncmp(stem, "COM", 3) || !strncmp(stem, "LPT", 3)) &&
             isdigit((unsigned char)stem[3]));
}

/* "<name>.npy" -> "<name>" in out; 0 if not a visible .npy file with a valid name. */
static int item_name(const char *file, char *out) {
    size_t n = strlen(file);
    if (file[0] == '.' || n <= 4 || strcmp(file + n - 4, ".npy") || !valid_name(file, n - 4))
        return 0;
    memcpy(out, file, n - 4);
    out[n - 4] = 0;
    return 1;
}

struct item {
    char name[MAX_NAME];
    struct stat st;         /* lstat of <name>.npy when listed: its inode is its identity */
    long long seq;          /* 0: a legacy file */
    long long published;    /* ns: the sidecar's published_ns, or a legacy file's ctime */
};

static long long ctime_ns(const struct stat *st) {
    return (long long)st->st_ctim.tv_sec * 1000000000LL + st->st_ctim.tv_nsec;
}

/* The item's seq and publish time from its sidecar, if that belongs to its file
 * (section 3); else it is a legacy file: seq 0, published at its arrival (ctime). */
static void read_sidecar(struct item *it) {
    char path[PATH_MAX], buf[65536];
    long long seq, published, ino, size;
    const char *v;
    it->seq = 0;
    it->published = ctime_ns(&it->st);
    snprintf(path, sizeof path, "%s/.ramxchg/meta/%s.json", channel, it->name);
    if (read_small(path, buf, sizeof buf) < 0) return;
    if (!json_int(json_value(buf, "seq"), &seq) || seq < 1 ||
        !json_int(json_value(buf, "published_ns"), &published))
        return; /* not valid: the file is legacy */
    /* 1.1 sidecars record their file; one that records another is an orphan */
    if ((v = json_value(buf, "ino")) && (!json_int(v, &ino) || ino != (long long)it->st.st_ino))
        return;
    if ((v = json_value(buf, "size")) && (!json_int(v, &size) || size != it->st.st_size))
        return;
    it->seq = seq;
    it->published = published;
}

/* Look at the file `file` of the channel folder: 1 if it is an item, described in *it.
 * Not items (section 9): invalid names, anything but a regular file, and a legacy
 * file with more than one hard link (its data may belong to a file elsewhere). */
static int look(const char *file, struct item *it) {
    char path[PATH_MAX];
    if (!item_name(file, it->name)) return 0;
    snprintf(path, sizeof path, "%s/%s", channel, file);
    if (lstat(path, &it->st) || !S_ISREG(it->st.st_mode)) return 0;
    read_sidecar(it);
    return it->seq || it->st.st_nlink == 1;
}

/* Is `it` still the item it was listed as: the same file, with the same seq? */
static int is_current(const struct item *it) {
    struct item now;
    char file[MAX_NAME + 8];
    snprintf(file, sizeof file, "%s.npy", it->name);
    return look(file, &now) && now.st.st_ino == it->st.st_ino && now.seq == it->seq;
}

/* ---- reading an item under its lock --------------------------------------------- */

struct mapped {
    int fd;                 /* holds flock(LOCK_SH): kept open while mapped */
    unsigned char *map;
    size_t size;
};

/* flock(LOCK_SH) before mapping (section 11, rule 2). A producer holds LOCK_EX on the
 * file only until just after its link: retry for up to 1 s, then read without the lock
 * (a foreign process holds LOCK_EX) and say so. */
static void lock_shared(int fd, const char *path) {
    for (int i = 0; i < 1000; i++) {
        if (!flock(fd, LOCK_SH | LOCK_NB)) return;
        if (errno != EWOULDBLOCK && errno != EINTR) break;
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    fprintf(stderr, "%s: mapped without the reader lock\n", path);
}

/* Map the item `it`; -1 if it is gone or its name now holds another file. */
static int map_item(const struct item *it, struct mapped *m) {
    char path[PATH_MAX];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s.npy", channel, it->name);
    m->fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (m->fd < 0) return -1;
    if (fstat(m->fd, &st) || st.st_ino != it->st.st_ino || st.st_size < 12) {
        close(m->fd);
        return -1;
    }
    lock_shared(m->fd, path);
    /* Locked: is the name still this file? Deleted and recycled (or replaced) between
     * the open and the lock, its inode now carries another item's bytes. */
    struct stat now;
    if (lstat(path, &now) || now.st_ino != st.st_ino) {
        close(m->fd);
        return -1;
    }
    m->size = st.st_size;
    m->map = mmap(NULL, m->size, PROT_READ, MAP_SHARED, m->fd, 0);
    if (m->map == MAP_FAILED) {
        close(m->fd);
        return -1;
    }
    return 0;
}

static void unmap_item(struct mapped *m) {
    munmap(m->map, m->size);
    close(m->fd); /* drops the reader lock: the file may be recycled now */
}

/* Sum the values of a mapped .npy file; 0 and *sum on success, -1 if it is not
 * complete (yet) or not supported. */
static int npy_sum(const struct mapped *m, const char *name, double *sum) {
    const unsigned char *map = m->map;
    size_t size = m->size, hlen, start;
    if (memcmp(map, "\x93NUMPY", 6)) return -1;
    if (map[6] == 1) { hlen = map[8] | map[9] << 8; start = 10; }
    else { hlen = map[8] | map[9] << 8 | (size_t)map[10] << 16 | (size_t)map[11] << 24; start = 12; }
    if (start + hlen > size || hlen > 65536) return -1;
    char header[65537];
    memcpy(header, map + start, hlen);
    header[hlen] = 0;
    char descr[16] = {0};
    char *d = strstr(header, "'descr':"), *s = strstr(header, "'shape':");
    if (!d || !s || sscanf(d + 8, " '%15[^']'", descr) != 1) return -1;
    size_t count = 1;
    char *p = strchr(s, '(');
    if (!p) return -1;
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
    if (!item) { fprintf(stderr, "%s: unsupported dtype %s\n", name, descr); return -1; }
    const unsigned char *data = map + start + hlen;
    if (start + hlen + count * item > size) return -1; /* header promises more: incomplete */
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
    return 0;
}

/* ---- durable groups (section 6) ------------------------------------------------- */

/* The publish lock: flock(LOCK_EX) on .ramxchg/seq (section 4); close() releases it. */
static int publish_lock(void) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/.ramxchg/seq", channel);
    int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0666);
    if (fd < 0 || flock(fd, LOCK_EX)) die(path);
    return fd;
}

/* Write `text` complete to a new hidden file "<folder>/.<name>.<pid>.<random>" (its
 * path into tmp); return its descriptor, still open, or -1 (no room, or no folder). */
static int write_hidden(const char *folder, const char *name, const char *text, char *tmp) {
    unsigned long long random = 0;
    if (getrandom(&random, sizeof random, 0) != sizeof random) random = (unsigned long long)time(NULL);
    snprintf(tmp, PATH_MAX, "%s/.%s.%d.%012llx", folder, name, (int)getpid(),
             random & 0xffffffffffffULL);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
    if (fd < 0) return -1;
    for (size_t done = 0, len = strlen(text); done < len;) {
        ssize_t n = write(fd, text + done, len - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) { close(fd); unlink(tmp); return -1; }
        done += n;
    }
    return fd;
}

/* Register the group if it is new (with its backlog: start_seq 0) and read start_seq:
 * its folders first, then group.json, linked into place under the publish lock. */
static void register_group(void) {
    char path[PATH_MAX], tmp[PATH_MAX], buf[65536], text[512], seq[24] = {0};
    snprintf(path, sizeof path, "%s/group.json", group_dir);
    if (read_small(path, buf, sizeof buf) < 0) {
        const char *folders[] = {group_dir, claims_dir, acks_dir};
        for (int i = 0; i < 3; i++)
            if (mkdir(folders[i], 0700) && errno != EEXIST) die(folders[i]);
        int lock = publish_lock();
        long long counter = pread(lock, seq, 21, 0) > 0 ? strtoll(seq, NULL, 10) : 0;
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        snprintf(text, sizeof text,
                 "{\"version\": 1, \"name\": \"%s\", \"start_seq\": 0, \"created_seq\": %lld, "
                 "\"created_ns\": %lld}",
                 group, counter, (long long)now.tv_sec * 1000000000LL + now.tv_nsec);
        int fd = write_hidden(group_dir, "group.json", text, tmp);
        if (fd < 0) die(tmp);
        if (link(tmp, path) && errno != EEXIST) die(path); /* EEXIST: another was first */
        unlink(tmp);
        close(fd);
        close(lock);
        if (read_small(path, buf, sizeof buf) < 0) die(path);
    }
    if (!json_int(json_value(buf, "start_seq"), &start_seq)) {
        fprintf(stderr, "%s: no start_seq\n", path);
        exit(1);
    }
}

/* The start time of process `pid` as psutil computes it (section 6), in seconds since
 * the epoch: btime (from /proc/stat) + starttime (field 22 of /proc/<pid>/stat) /
 * CLK_TCK. -1 if there is no such process, -2 if it cannot be read. */
static double process_started(long long pid) {
    char path[64], line[4096], *end, *text = NULL;
    unsigned long long ticks;
    long long btime = -1;
    size_t cap = 0;
    snprintf(path, sizeof path, "/proc/%lld/stat", pid);
    if (read_small(path, line, sizeof line) < 0) return errno == ENOENT ? -1 : -2;
    /* the command name (field 2) is in parentheses and may hold anything: count the
     * fields from the last ')' (the state after it is field 3) */
    if (!(end = strrchr(line, ')')) ||
        sscanf(end + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d "
                        "%*d %*d %llu", &ticks) != 1)
        return -2;
    FILE *proc = fopen("/proc/stat", "r");
    while (proc && getline(&text, &cap, proc) > 0)
        if (sscanf(text, "btime %lld", &btime) == 1) break;
    free(text);
    if (proc) fclose(proc);
    return btime < 0 ? -2 : btime + ticks / (double)sysconf(_SC_CLK_TCK);
}

/* Is the claim or ack `text` for the item `it`, not for an older or newer item of its
 * name? Its "seq" and "ino", where it has them, must be the item's ("ino": null: not
 * known); a record that is not a JSON object counts for any. */
static int record_is_for(const char *text, const struct item *it) {
    long long x;
    const char *v;
    if (!json_object(text)) return 1;
    v = json_value(text, "seq");
    if (v && (json_is(v, "null") ? it->seq != 0 : !json_int(v, &x) || x != it->seq)) return 0;
    v = json_value(text, "ino");
    if (v && !json_is(v, "null") && (!json_int(v, &x) || x != (long long)it->st.st_ino)) return 0;
    return 1;
}

static int acked(const struct item *it) {
    char path[PATH_MAX], buf[65536];
    snprintf(path, sizeof path, "%s/%s", acks_dir, it->name);
    return read_small(path, buf, sizeof buf) >= 0 && record_is_for(buf, it);
}

/* Is claims/<name> still the claim whose locked descriptor we hold? */
static int still_ours(int claim_fd, const char *path) {
    struct stat mine, now;
    return !fstat(claim_fd, &mine) && !lstat(path, &now) && mine.st_ino == now.st_ino;
}

/* Give our claim back without acking: under the publish lock, and only while it is
 * ours (once the item is deleted, the name may hold another member's newer claim). */
static void release(int claim_fd, const struct item *it) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", claims_dir, it->name);
    int lock = publish_lock();
    if (still_ours(claim_fd, path)) unlink(path);
    close(lock);
    close(claim_fd); /* drops the claim's lock */
}

/* Claim the item `it`: the claim's locked descriptor, CLAIM_TAKEN when another member
 * has it, -1 when it is not to be delivered (done, or no longer the item listed). */
static int claim(const struct item *it) {
    char path[PATH_MAX], tmp[PATH_MAX], text[512], host[256] = {0}, seq[24] = "null";
    if (acked(it)) return -1;
    snprintf(path, sizeof path, "%s/%s", claims_dir, it->name);
    if (it->seq) snprintf(seq, sizeof seq, "%lld", it->seq);
    gethostname(host, sizeof host - 1); /* host names need no JSON escapes */
    double started = process_started(getpid()); /* 1.0 members judge our claim by it */
    if (started < 0) die("/proc/self/stat");
    snprintf(text, sizeof text,
             "{\"pid\": %d, \"started\": %.6f, \"host\": \"%s\", \"seq\": %s, \"ino\": %llu, "
             "\"lock\": true}",
             (int)getpid(), started, host, seq, (unsigned long long)it->st.st_ino);
    for (int attempt = 0; attempt < 2; attempt++) {
        int fd = write_hidden(claims_dir, it->name, text, tmp);
        if (fd < 0) {
            if (errno == ENOENT) break; /* no claims/ folder: the group was dropped */
            return CLAIM_TAKEN;         /* no room: try again at the next rescan */
        }
        if (flock(fd, LOCK_EX)) die(tmp); /* locked before it is visible: never unlocked */
        int failed = link(tmp, path) ? errno : 0;
        unlink(tmp);
        if (!failed) {
            /* Won. Still the item we listed, and not done meanwhile? (section 6, step 3) */
            if (!acked(it) && is_current(it)) return fd;
            release(fd, it);
            return -1;
        }
        close(fd);
        if (failed != ENOENT) return CLAIM_TAKEN; /* EEXIST: another member's; or no room */
        /* ENOENT: gc removed our hidden file half-way, or the group was dropped */
    }
    snprintf(path, sizeof path, "%s/group.json", group_dir);
    if (access(path, F_OK)) {
        fprintf(stderr, "group %s was dropped\n", group);
        exit(1);
    }
    return CLAIM_TAKEN;
}

/* Ack the item: under the publish lock, while it is still the item delivered, our
 * claim becomes the ack (or, if it is no longer ours, an ack record is written); then
 * the claim's lock is dropped. Deleting the item is left to the next `ramxchg gc`. */
static void ack(int claim_fd, const struct item *it) {
    char path[PATH_MAX], done[PATH_MAX], tmp[PATH_MAX], text[128];
    snprintf(path, sizeof path, "%s/%s", claims_dir, it->name);
    snprintf(done, sizeof done, "%s/%s", acks_dir, it->name);
    int lock = publish_lock();
    int mine = still_ours(claim_fd, path);
    if (!is_current(it)) {
        if (mine) unlink(path); /* gone: nothing to ack (its claim went with it) */
    } else if (!mine || rename(path, done)) {
        if (it->seq) snprintf(text, sizeof text, "{\"seq\": %lld, \"ino\": %llu}", it->seq,
                              (unsigned long long)it->st.st_ino);
        else snprintf(text, sizeof text, "{\"seq\": null, \"ino\": %llu}",
                      (unsigned long long)it->st.st_ino);
        int fd = write_hidden(acks_dir, it->name, text, tmp);
        if (fd >= 0 && rename(tmp, done)) unlink(tmp);
        if (fd >= 0) close(fd);
    }
    close(lock);
    close(claim_fd);
}

/* An unlocked (1.0) claim is dead when its process is gone from this host: no process
 * with its pid and a start time within 0.01 s of its "started" (section 6). */
static int unlocked_claim_is_dead(const char *text, const struct stat *st) {
    char me[256] = {0};
    long long pid;
    if (!json_object(text)) /* empty or half-written: dead only once old enough */
        return time(NULL) - st->st_mtime > CLAIM_GRACE_SECONDS;
    const char *host = json_value(text, "host"), *started = json_value(text, "started");
    if (!json_int(json_value(text, "pid"), &pid) || !host || *host != '"') return 0;
    gethostname(me, sizeof me - 1);
    if (strncmp(host + 1, me, strlen(me)) || host[1 + strlen(me)] != '"')
        return 0; /* another host: we cannot tell */
    double now = process_started(pid);
    double then = started ? strtod(started, NULL) : 0; /* none: 0, as ramxchg reads it */
    if (now == -1) return 1; /* no such process */
    return now >= 0 && (now - then >= 0.01 || then - now >= 0.01); /* the pid was reused */
}

/* Take back the claims of members that died before acking: their items are delivered
 * again. A locked claim is dead exactly when flock(LOCK_EX|LOCK_NB) succeeds on it. It
 * is removed under the group lock, if it is still the claim judged dead. */
static void reclaim_dead(void) {
    DIR *dir = opendir(claims_dir);
    struct dirent *e;
    if (!dir) return;
    while ((e = readdir(dir))) {
        char path[PATH_MAX], lock_path[PATH_MAX], buf[4096], again[4096];
        struct stat st, now;
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", claims_dir, e->d_name);
        int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t n = read(fd, buf, sizeof buf - 1);
        buf[n > 0 ? n : 0] = 0;
        int locked = json_is(json_value(buf, "lock"), "true");
        if (!fstat(fd, &st) &&
            (locked ? !flock(fd, LOCK_EX | LOCK_NB) : unlocked_claim_is_dead(buf, &st))) {
            snprintf(lock_path, sizeof lock_path, "%s/lock", group_dir);
            int group_lock = open(lock_path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0666);
            if (group_lock < 0 || flock(group_lock, LOCK_EX)) die(lock_path);
            if (!lstat(path, &now) && now.st_ino == st.st_ino &&
                (locked || (read_small(path, again, sizeof again) == (n > 0 ? n : 0) &&
                            !strcmp(again, buf)))) {
                unlink(path);
                fprintf(stderr, "%s: its consumer died before acking; delivering it again\n",
                        e->d_name);
            }
            close(group_lock);
        }
        close(fd);
    }
    closedir(dir);
}

/* ---- delivering -------------------------------------------------------------------- */

static void deliver(const struct item *it) {
    char key[MAX_NAME + 24];
    snprintf(key, sizeof key, "%s %lld", it->name, it->seq);
    if (seen_has(key)) return;
    if (it->seq > high_seq) high_seq = it->seq;
    int claimed = -1;
    if (group) {
        if (it->seq && it->seq <= start_seq) { seen_add(key); return; } /* not for the group */
        claimed = claim(it);
        if (claimed == CLAIM_TAKEN) return; /* another member's: again at a rescan */
        if (claimed < 0) { seen_add(key); return; }
    }
    struct mapped m;
    double sum;
    if (map_item(it, &m)) { /* gone, or its name holds another file now */
        if (claimed >= 0) release(claimed, it);
        return;
    }
    if (npy_sum(&m, it->name, &sum)) { /* a legacy file not complete yet: again later */
        unmap_item(&m);
        if (claimed >= 0) release(claimed, it);
        return;
    }
    seen_add(key);
    if (it->seq) printf("%s %lld %.17g\n", it->name, it->seq, sum);
    else printf("%s - %.17g\n", it->name, sum);
    fflush(stdout);
    if (hold) /* mapped, locked (and claimed) until a line comes, or stdin ends */
        for (int c = getchar(); c != EOF && c != '\n'; c = getchar()) {}
    unmap_item(&m);
    if (claimed >= 0) ack(claimed, it);
    if (max_items > 0 && ++delivered >= max_items) exit(0);
}

static int by_publish_order(const void *a, const void *b) {
    const struct item *x = a, *y = b;
    if (x->published != y->published) return x->published < y->published ? -1 : 1;
    if ((x->seq == 0) != (y->seq == 0)) return x->seq == 0 ? 1 : -1; /* legacy after */
    if (x->seq != y->seq) return x->seq < y->seq ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Take back dead members' claims, list the folder, deliver what is new in publish
 * order. Legacy files are taken only when their header promises no more than they hold
 * (a rescan has no close event). */
static void rescan(void) {
    if (group) reclaim_dead();
    DIR *dir = opendir(channel);
    if (!dir) die(channel);
    struct item *list = NULL;
    size_t len = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (len == cap && !(list = realloc(list, (cap = cap ? 2 * cap : 64) * sizeof *list)))
            die("realloc");
        if (look(e->d_name, &list[len])) len++;
    }
    closedir(dir);
    qsort(list, len, sizeof *list, by_publish_order);
    for (size_t i = 0; i < len; i++) deliver(&list[i]);
    free(list);
}

int main(int argc, char **argv) {
    int arg = 1;
    for (; arg < argc && argv[arg][0] == '-'; arg++) {
        if (!strcmp(argv[arg], "--hold")) hold = 1;
        else if (!strcmp(argv[arg], "--group") && arg + 1 < argc &&
                 valid_name(argv[arg + 1], strlen(argv[arg + 1])))
            group = argv[++arg];
        else break;
    }
    if (arg != argc - 1) {
        fprintf(stderr, "usage: %s [--group GROUP] [--hold] CHANNEL_FOLDER\n", argv[0]);
        return 2;
    }
    channel = argv[arg];
    const char *max = getenv("RAMXCHG_MAX_ITEMS");
    if (max) max_items = strtol(max, NULL, 10);
    if (group) {
        if (snprintf(group_dir, sizeof group_dir, "%s/.ramxchg/groups/%s", channel, group) >=
            FOLDER_MAX) {
            fprintf(stderr, "%s: path too long\n", channel);
            return 2;
        }
        snprintf(claims_dir, sizeof claims_dir, "%s/claims", group_dir);
        snprintf(acks_dir, sizeof acks_dir, "%s/acks", group_dir);
        register_group();
    }
    /* Watch first, then list: whatever lands in between is seen by both (deduplicated). */
    int in = inotify_init1(IN_CLOEXEC);
    if (in < 0 || inotify_add_watch(in, channel, IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE) < 0)
        die("inotify");
    rescan();
    char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        struct pollfd ready = {in, POLLIN, 0};
        int n = poll(&ready, 1, RESCAN_MS);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) die("poll");
        if (n == 0) { /* now and then: events can be lost, and members die */
            rescan();
            continue;
        }
        ssize_t got = read(in, buf, sizeof buf);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) die("read");
        int lost = 0;
        for (char *p = buf; p < buf + got;) {
            struct inotify_event *ev = (struct inotify_event *)p;
            struct item it;
            p += sizeof *ev + ev->len;
            if (ev->mask & IN_Q_OVERFLOW) { lost = 1; continue; }
            if (!ev->len || !look(ev->name, &it)) continue;
            if (!it.seq && !(ev->mask & IN_CLOSE_WRITE)) continue; /* legacy: wait for close */
            if (it.seq > high_seq + 1) rescan(); /* a gap: events were missed; in order */
            else deliver(&it);
        }
        if (lost) rescan();
    }
}
