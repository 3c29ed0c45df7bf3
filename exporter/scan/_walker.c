/*
 * exporter.scan._walker: the per-path loop of exporter.scan.walk.walk_tree, in C.
 *
 * Same contract as the Python loop in walk.py (_walk_python, which stays as the fallback; the tests
 * check both against an independent find/du oracle and against each other): never follow symlinks,
 * stay on one filesystem unless told otherwise, record errors and go on. The whole walk runs without
 * the GIL, so the process's other threads (HTTP server, inotify reader) go on meanwhile; scans run in
 * parallel on processes (run_tasks in exporter/scan/workers.py). Per path it does one fstatat(), which
 * is what GNU du does, instead of building a Python DirEntry and stat_result (plus one more per
 * single-link file a package installed, to look for it in the package's cache entry).
 *
 * Like du (fts), it walks relative to open directories: every entry is fstatat()ed from its directory's
 * fd and every subdirectory opened with openat(parent fd, name, O_NOFOLLOW), then checked to be the
 * (device, inode) its listing showed. So an env owner who swaps a directory for a symlink during a scan
 * cannot lead the walk out of the tree (a path is only ever resolved from an fd the walk holds, one
 * component at a time), and paths longer than PATH_MAX are counted as du counts them.
 *
 * walk(top: bytes, dev: int, ino: int, exclude: iterable[str], cross: bool,
 *      files: sequence[sequence[str]] | None, relocated: sequence[iterable[str]],
 *      cache_entries: sequence[str | None], map_extents: bool, map_hardlinked: bool) -> WalkResult
 * walks the entries below `top` (the caller has counted `top` itself, and lstat()ed it as (dev, ino):
 * the directory opened must be that one) and returns a WalkResult, a
 * struct sequence (like os.stat_result) read by field name; walk_result_fields below documents each
 * field, and the counters are named as exporter.scan.walk.TreeWalk's. ino/nlink/blocks are
 * native-endian uint64 bytes, errors a list of (errno, path: str) (errno REPLACED, 0: a directory
 * swapped for another between its listing and its opening), package_blocks,
 * cached_single_blocks and uncached_single_blocks lists of st_blocks per package index (empty with
 * files None). The package arguments are exporter.scan.walk.Ownership's fields; with files None the
 * walk does no per-path string work.
 *
 * With map_extents (a filesystem that can reflink: exporter.scan.reflink), each single-link regular
 * file of the walk's device is mapped with one FS_IOC_FIEMAP ioctl, on an fd opened from its directory's
 * fd, and the extents flagged shared become rows of ext_start/ext_length/ext_ino (physical byte offset,
 * length, and the inode if hardlinked, else 0); with map_hardlinked too, so are hardlinked files, once per
 * inode (a package cache's walk: conda hardlinks its files into envs, where they are not mapped again).
 * A mapped file's blocks, everywhere but in package_blocks and untracked_blocks, are then its st_blocks
 * less those extents. Extents of unknown place (delayed allocation), inline or encoded (compressed) are
 * left in the blocks, as du counts them.
 *
 * With budget_fd >= 0 (the scan budget, exporter.scan.budget: a file of the layout of budget_block, shared by
 * every worker process of a scan), the walk takes `batch` paths at a time from the bucket before reading
 * them, ns_per_path nanoseconds each, under flock, and sleeps until their time comes: all without the GIL
 * and without calling into Python. What the last batch did not use is given back when the walk ends.
 * Without it the per-path loop pays one test of a pointer.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <linux/fiemap.h>
#include <linux/openat2.h>
#include <linux/fs.h>

#define METADATA_DIR "conda-meta"

/* `data` (an array of `*cap` elements of `size` bytes) reallocated to twice as many, or to `first` when
 * empty; NULL when out of memory, the array and *cap then unchanged. */
static void *grown(void *data, size_t *cap, size_t size, size_t first) {
    size_t more = *cap ? *cap * 2 : first;
    void *bigger = realloc(data, more * size);
    if (bigger) *cap = more;
    return bigger;
}

typedef struct {
    uint64_t *data;
    size_t len, cap;
} u64vec;

static int u64vec_push(u64vec *v, uint64_t x) {
    if (v->len == v->cap) {
        uint64_t *data = grown(v->data, &v->cap, sizeof *data, 1024);
        if (!data) return -1;
        v->data = data;
    }
    v->data[v->len++] = x;
    return 0;
}

/* An error the GIL-free walk leaves for the conversion to Python. */
typedef struct {
    char *path;
    uint64_t number; /* errno */
} item;

typedef struct {
    item *data;
    size_t len, cap;
} itemvec;

static int itemvec_push(itemvec *v, const char *path, size_t len, uint64_t number) {
    if (v->len == v->cap) {
        item *data = grown(v->data, &v->cap, sizeof *data, 64);
        if (!data) return -1;
        v->data = data;
    }
    char *copy = malloc(len + 1);
    if (!copy) return -1;
    memcpy(copy, path, len);
    copy[len] = '\0';
    v->data[v->len].path = copy;
    v->data[v->len].number = number;
    v->len++;
    return 0;
}

static void itemvec_free(itemvec *v) {
    for (size_t i = 0; i < v->len; i++) free(v->data[i].path);
    free(v->data);
}

/* The key of hash_bytes, random per process (set in PyInit__walker): the paths hashed come from
 * conda-meta records that env owners write, who must not be able to pick paths that all collide. */
static uint64_t hash_key[2] = {0x9e3779b97f4a7c15ULL, 0xd1b54a32d192ed03ULL};

static inline uint64_t mix(uint64_t a, uint64_t b) { /* the 128-bit product's halves, folded */
    __uint128_t p = (__uint128_t)a * b;
    return (uint64_t)p ^ (uint64_t)(p >> 64);
}

/* A keyed hash of n bytes, 8 at a time (FNV-1a's byte at a time was a tenth of a scan's CPU). */
static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = hash_key[0] ^ n, word;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(&word, s + i, 8);
        h = mix(h ^ word, hash_key[1]);
    }
    if (i < n) {
        word = 0;
        memcpy(&word, s + i, n - i);
        h = mix(h ^ word, hash_key[1] ^ (n - i));
    }
    return mix(h, hash_key[0] ^ hash_key[1]);
}

/* Open-addressing set of byte strings (the paths a walk leaves out); keys point into Python-owned or
 * copied storage. */
typedef struct {
    const char *key;
    size_t len;
    uint64_t hash;
} slot;

typedef struct {
    slot *slots;
    size_t mask;
} strset;

static int strset_init(strset *m, size_t expected) {
    size_t size = 16;
    while (size < expected * 2) size *= 2;
    m->slots = calloc(size, sizeof(slot));
    m->mask = size - 1;
    return m->slots ? 0 : -1;
}

static void strset_add(strset *m, const char *key, size_t len) {
    uint64_t h = hash_bytes(key, len);
    for (size_t i = h & m->mask;; i = (i + 1) & m->mask) {
        slot *s = &m->slots[i];
        if (!s->key || (s->hash == h && s->len == len && memcmp(s->key, key, len) == 0)) {
            s->key = key;
            s->len = len;
            s->hash = h;
            return;
        }
    }
}

static int strset_has(const strset *m, const char *key, size_t len) {
    uint64_t h = hash_bytes(key, len);
    for (size_t i = h & m->mask;; i = (i + 1) & m->mask) {
        const slot *s = &m->slots[i];
        if (!s->key) return 0;
        if (s->hash == h && s->len == len && memcmp(s->key, key, len) == 0) return 1;
    }
}

#include "_owned.h"

/* Open-addressing set of inode numbers (0 marks an empty slot; inode 0 is tracked apart). */
typedef struct {
    uint64_t *keys;
    size_t mask, count;
    int has_zero;
} u64set;

/* Returns 1 if added, 0 if present, -1 on memory exhaustion. */
static int u64set_add(u64set *s, uint64_t key) {
    if (key == 0) {
        int added = !s->has_zero;
        s->has_zero = 1;
        return added;
    }
    if ((s->count + 1) * 2 > s->mask + 1 || !s->keys) {
        size_t size = s->keys ? (s->mask + 1) * 2 : 1024;
        uint64_t *keys = calloc(size, sizeof(uint64_t));
        if (!keys) return -1;
        for (size_t j = 0; s->keys && j <= s->mask; j++) {
            uint64_t k = s->keys[j];
            if (!k) continue;
            size_t i = (k * 11400714819323198485ULL) & (size - 1);
            while (keys[i]) i = (i + 1) & (size - 1);
            keys[i] = k;
        }
        free(s->keys);
        s->keys = keys;
        s->mask = size - 1;
    }
    for (size_t i = (key * 11400714819323198485ULL) & s->mask;; i = (i + 1) & s->mask) {
        if (s->keys[i] == key) return 0;
        if (!s->keys[i]) {
            s->keys[i] = key;
            s->count++;
            return 1;
        }
    }
}

/* Open-addressing map from inode numbers to int64 (a hardlinked inode's shared 512-byte blocks, found
 * when its first link was mapped). Inode 0 is kept apart. */
typedef struct {
    uint64_t *keys;
    int64_t *values;
    size_t mask, count;
    int has_zero;
    int64_t zero_value;
} u64map;

/* The value of `key`, or -1 when absent. */
static int64_t u64map_get(const u64map *m, uint64_t key) {
    if (key == 0) return m->has_zero ? m->zero_value : -1;
    if (!m->keys) return -1;
    for (size_t i = (key * 11400714819323198485ULL) & m->mask;; i = (i + 1) & m->mask) {
        if (m->keys[i] == key) return m->values[i];
        if (!m->keys[i]) return -1;
    }
}

/* -1 on memory exhaustion. */
static int u64map_put(u64map *m, uint64_t key, int64_t value) {
    if (key == 0) {
        m->has_zero = 1;
        m->zero_value = value;
        return 0;
    }
    if ((m->count + 1) * 2 > m->mask + 1 || !m->keys) {
        size_t size = m->keys ? (m->mask + 1) * 2 : 1024;
        uint64_t *keys = calloc(size, sizeof(uint64_t));
        int64_t *values = calloc(size, sizeof(int64_t));
        if (!keys || !values) { free(keys); free(values); return -1; }
        for (size_t j = 0; m->keys && j <= m->mask; j++) {
            uint64_t k = m->keys[j];
            if (!k) continue;
            size_t i = (k * 11400714819323198485ULL) & (size - 1);
            while (keys[i]) i = (i + 1) & (size - 1);
            keys[i] = k;
            values[i] = m->values[j];
        }
        free(m->keys);
        free(m->values);
        m->keys = keys;
        m->values = values;
        m->mask = size - 1;
    }
    for (size_t i = (key * 11400714819323198485ULL) & m->mask;; i = (i + 1) & m->mask) {
        if (m->keys[i] == key || !m->keys[i]) {
            if (!m->keys[i]) m->count++;
            m->keys[i] = key;
            m->values[i] = value;
            return 0;
        }
    }
}

/* A directory found in a listing and not yet walked: its name in the listed directory, and the device
 * and inode fstatat() saw there, which the directory opened by that name must have. */
typedef struct {
    char *name;
    uint64_t dev, ino;
} subdir;

/* One directory on the walk's stack. The stack is a chain: each frame is a directory of the one below it.
 * A frame keeps its fd while it has subdirectories left to open from it; the fd is closed when it has
 * none left, or early to bound the fds held (then reopened from the nearest open ancestor, by name). */
typedef struct {
    int fd;            /* -1 when closed */
    char *name;        /* its name in the frame below; NULL for top */
    uint64_t dev, ino; /* of the opened directory */
    size_t path_len;   /* its path is w->path[0:path_len], for error messages and the exclude set only */
    subdir *pending;
    size_t npending, pending_cap;
} frame;

/* The bucket file of exporter.scan.budget (struct "=qQQ"): the CLOCK_MONOTONIC time in ns from which the
 * next path may be read, the ns that walks slept waiting, the paths granted. */
struct budget_block {
    int64_t next_free;
    uint64_t waited, granted;
};

/* Directory fds a walk holds open at most. Depth-first, a walk needs one per level that still has
 * subdirectories to open; past this many the shallowest are closed and reopened by name when needed
 * (checked against the device and inode seen first), so a tree of any depth walks within the usual
 * RLIMIT_NOFILE of 1024 alongside the process's other fds. */
#define MAX_OPEN_DIRS 256

/* The errno-less error: a directory opened by name is not the one its listing showed (it was swapped
 * for another between the two); exporter.scan.walk reports it as kind "vanished". */
#define REPLACED 0

/* The directory being listed, looked up in the cache entry of package `index`: an O_PATH fd, or -1. */
typedef struct {
    Py_ssize_t index;
    int fd;
} cache_dir;

/* Packages whose cache directory one listing keeps open: a directory's files come from a few packages. */
#define CACHE_DIRS 8

typedef struct {
    /* inputs */
    const char *top;
    size_t top_len;
    uint64_t dev, ino;
    int cross;
    strset exclude;
    owned_index owned;
    int has_owned;
    int64_t listing_dir; /* the directory being listed, in `owned` (-1: none of its files is owned) */
    Py_ssize_t packages;
    const char **entries; /* cache entry per package, or NULL */
    int64_t *package_blocks, *cached_single, *uncached_single;
    int map_extents, map_hardlinked;
    /* counters */
    long long dirs, files, hardlinked, apparent, private_blocks, skipped_mounts;
    long long untracked_files, untracked_blocks;
    u64vec ino_col, nlink, blocks;
    u64set untracked_inodes;
    itemvec errors;
    /* shared extents: rows, the hardlinked inodes mapped so far, the ioctl's buffer */
    u64vec ext_start, ext_length, ext_ino;
    u64map mapped_inodes;
    struct fiemap *fiemap;
    /* the stack */
    frame *frames;
    size_t depth, frames_cap, open_fds;
    char *path; /* the path of the deepest frame (or of the entry being looked at) */
    size_t path_cap;
    int entry_fd; /* the cache entry of package entry_index, open (or -1) */
    Py_ssize_t entry_index;
    /* for the directory being listed: the same directory in the cache entries of the packages looked up
     * so far (fd -1: not there), so that each file is one fstatat, and none when its directory is absent */
    cache_dir cache_dirs[CACHE_DIRS];
    size_t ncache_dirs;
    size_t listing_len; /* length of w->path's directory being listed (0: none) */
    int out_of_memory;
    /* the scan budget: the shared bucket (NULL: unbudgeted), its fd, the cost of a path, the batch and
     * what is left of the batch taken last */
    struct budget_block *budget;
    int budget_fd;
    int64_t ns_per_path, batch, budget_left;
} walk_state;

static int64_t monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Take a batch of paths from the shared bucket and sleep until they may be read (the GIL is not held). */
static void budget_take(walk_state *w) {
    volatile struct budget_block *b = w->budget;
    flock(w->budget_fd, LOCK_EX);
    int64_t now = monotonic_ns(), start = b->next_free > now ? b->next_free : now;
    b->next_free = start + w->batch * w->ns_per_path;
    b->waited += (uint64_t)(start - now);
    b->granted += (uint64_t)w->batch;
    flock(w->budget_fd, LOCK_UN);
    w->budget_left = w->batch;
    if (start > now) {
        struct timespec until = {.tv_sec = start / 1000000000, .tv_nsec = start % 1000000000};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR) {
        }
    }
}

/* Give back the paths of the last batch that the walk did not read. */
static void budget_refund(walk_state *w) {
    if (!w->budget_left) return;
    volatile struct budget_block *b = w->budget;
    flock(w->budget_fd, LOCK_EX);
    b->next_free -= w->budget_left * w->ns_per_path;
    b->granted -= (uint64_t)w->budget_left;
    flock(w->budget_fd, LOCK_UN);
    w->budget_left = 0;
}

/* Count one look-up against the scan budget (a path's fstatat, or a look-up in a package cache): every
 * request to the filesystem a walk makes waits for its share of the rate. */
static inline void budget_spend(walk_state *w) {
    if (!w->budget) return;
    if (!w->budget_left) budget_take(w);
    w->budget_left--;
}

static int is_metadata_dir(const char *rel, size_t len) {
    size_t n = sizeof(METADATA_DIR) - 1;
    return len >= n && memcmp(rel, METADATA_DIR, n) == 0 && (len == n || rel[n] == '/');
}

/* Forget the cache directories looked up for the directory listed last. */
static void forget_cache_dirs(walk_state *w) {
    for (size_t i = 0; i < w->ncache_dirs; i++)
        if (w->cache_dirs[i].fd >= 0) close(w->cache_dirs[i].fd);
    w->ncache_dirs = 0;
}

/* The directory being listed (w->path[top_len + 1 : listing_len]), in the cache entry of package `index`:
 * an O_PATH fd, or -1 when it is not there. `entry` is a package dir of a known package cache
 * (exporter.account.contents accepts no other), opened without following a symlink; the directory is
 * resolved beneath it following no symlink at all (openat2 RESOLVE_NO_SYMLINKS; before Linux 5.6, only
 * the last component is not followed), so no symlink planted in a cache leads the look-up out of it. */
static int cache_dir_fd(walk_state *w, Py_ssize_t index) {
    for (size_t i = 0; i < w->ncache_dirs; i++)
        if (w->cache_dirs[i].index == index) return w->cache_dirs[i].fd;
    if (w->entry_index != index) {
        if (w->entry_fd >= 0) close(w->entry_fd);
        w->entry_fd = open(w->entries[index], O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        w->entry_index = index;
    }
    int fd = -1;
    if (w->entry_fd >= 0) {
        /* the listed directory relative to top, NUL-terminated in place for the call */
        size_t len = w->listing_len;
        char saved = w->path[len];
        w->path[len] = '\0';
        const char *rel = len > w->top_len ? w->path + w->top_len + 1 : ".";
        struct open_how how = {.flags = O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC,
                               .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS};
        budget_spend(w);
        fd = (int)syscall(SYS_openat2, w->entry_fd, rel, &how, sizeof how);
        if (fd < 0 && errno == ENOSYS) fd = openat(w->entry_fd, rel, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        w->path[len] = saved;
    }
    if (w->ncache_dirs == CACHE_DIRS) { /* a directory of many packages' files: the oldest goes */
        if (w->cache_dirs[0].fd >= 0) close(w->cache_dirs[0].fd);
        memmove(w->cache_dirs, w->cache_dirs + 1, (CACHE_DIRS - 1) * sizeof(cache_dir));
        w->ncache_dirs--;
    }
    w->cache_dirs[w->ncache_dirs++] = (cache_dir){index, fd};
    return fd;
}

/* Is `name`, a file of the directory being listed, a regular file in the cache entry of package `index`?
 * Not followed if a symlink. */
static int in_cache(walk_state *w, Py_ssize_t index, const char *name) {
    int dir_fd = cache_dir_fd(w, index);
    if (dir_fd < 0) return 0;
    budget_spend(w);
    struct stat st;
    return fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
}

/* Make w->path the path `len` bytes long already there, then "/" and `name`; its new length, or 0 when
 * out of memory. */
static size_t path_append(walk_state *w, size_t len, const char *name) {
    size_t name_len = strlen(name), need = len + 1 + name_len + 1;
    if (need > w->path_cap) {
        char *b = realloc(w->path, need * 2);
        if (!b) return 0;
        w->path = b;
        w->path_cap = need * 2;
    }
    w->path[len] = '/';
    memcpy(w->path + len + 1, name, name_len + 1);
    return len + 1 + name_len;
}

static int error_at(walk_state *w, size_t path_len, uint64_t number) {
    return itemvec_push(&w->errors, w->path, path_len, number);
}

#define FIEMAP_EXTENTS 64
/* Extents left in a file's blocks: their place is not known, or not theirs alone to count. */
#define FIEMAP_UNCOUNTED (FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_ENCODED | \
                          FIEMAP_EXTENT_DATA_INLINE | FIEMAP_EXTENT_DATA_TAIL | FIEMAP_EXTENT_NOT_ALIGNED)

/* Map the regular file `name` of the directory `dir_fd` (the inode `st` describes) and add its extents
 * flagged shared as rows, with `row_ino`. Its shared bytes in 512-byte blocks; 0 when it cannot be
 * opened or mapped, or is another inode than `st` by now (it is then counted as a file without shared
 * extents); -1 when out of memory. */
static int64_t map_file(walk_state *w, int dir_fd, const char *name, const struct stat *st, uint64_t row_ino) {
    if (!w->fiemap) {
        w->fiemap = calloc(1, sizeof(struct fiemap) + FIEMAP_EXTENTS * sizeof(struct fiemap_extent));
        if (!w->fiemap) return -1;
    }
    int fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return 0;
    struct stat opened;
    if (fstat(fd, &opened) < 0 || opened.st_ino != st->st_ino || opened.st_dev != st->st_dev) {
        close(fd);
        return 0;
    }
    struct fiemap *fm = w->fiemap;
    uint64_t start = 0, shared = 0;
    for (;;) {
        memset(fm, 0, sizeof(struct fiemap));
        fm->fm_start = start;
        fm->fm_length = FIEMAP_MAX_OFFSET - start;
        fm->fm_extent_count = FIEMAP_EXTENTS;
        if (ioctl(fd, FS_IOC_FIEMAP, fm) < 0 || fm->fm_mapped_extents == 0) break;
        const struct fiemap_extent *last = &fm->fm_extents[fm->fm_mapped_extents - 1];
        for (uint32_t i = 0; i < fm->fm_mapped_extents; i++) {
            const struct fiemap_extent *e = &fm->fm_extents[i];
            if (!(e->fe_flags & FIEMAP_EXTENT_SHARED) || (e->fe_flags & FIEMAP_UNCOUNTED) || !e->fe_length) continue;
            if (u64vec_push(&w->ext_start, e->fe_physical) < 0 || u64vec_push(&w->ext_length, e->fe_length) < 0 ||
                u64vec_push(&w->ext_ino, row_ino) < 0) {
                close(fd);
                return -1;
            }
            shared += e->fe_length;
        }
        if ((last->fe_flags & FIEMAP_EXTENT_LAST) || fm->fm_mapped_extents < FIEMAP_EXTENTS) break;
        if (last->fe_logical + last->fe_length <= start) break; /* no progress: never loop on a bad answer */
        start = last->fe_logical + last->fe_length;
    }
    close(fd);
    return (int64_t)(shared / 512);
}

/* The blocks of the file `name` of `dir_fd` to count: st_blocks, less its shared extents when they are
 * mapped (a hardlinked inode once, and only with map_hardlinked). -1 when out of memory. */
static int64_t counted_blocks(walk_state *w, int dir_fd, const char *name, const struct stat *st) {
    int64_t blocks = (int64_t)st->st_blocks;
    if (!w->map_extents || !S_ISREG(st->st_mode) || blocks == 0 || (uint64_t)st->st_dev != w->dev) return blocks;
    int64_t shared;
    if (st->st_nlink == 1) {
        shared = map_file(w, dir_fd, name, st, 0);
    } else if (!w->map_hardlinked) {
        return blocks;
    } else if ((shared = u64map_get(&w->mapped_inodes, (uint64_t)st->st_ino)) < 0) {
        shared = map_file(w, dir_fd, name, st, (uint64_t)st->st_ino);
        if (shared >= 0 && u64map_put(&w->mapped_inodes, (uint64_t)st->st_ino, shared) < 0) return -1;
    }
    if (shared < 0) return -1;
    return shared > blocks ? 0 : blocks - shared;
}

/* Count one non-directory (of w->path[0:path_len], named `name` in the directory `dir_fd`, which is not
 * under conda-meta/ when check_owner). -1 when out of memory. */
static int count_file(walk_state *w, int dir_fd, const char *name, const struct stat *st, size_t path_len,
                      int check_owner) {
    w->files++;
    w->apparent += st->st_size;
    uint64_t nlink = (uint64_t)st->st_nlink;
    int64_t blocks = counted_blocks(w, dir_fd, name, st);
    if (blocks < 0) return -1;
    if (check_owner) {
        const owned_slot *owner = owned_get(&w->owned, w->listing_dir, name, path_len - w->listing_len - 1);
        Py_ssize_t index = owner ? (Py_ssize_t)owner->value : -1;
        if (!owner || index < 0 || index >= w->packages) {
            w->untracked_files++;
            int added = 1;
            if (nlink > 1) added = u64set_add(&w->untracked_inodes, (uint64_t)st->st_ino);
            if (added < 0) return -1;
            if (added) w->untracked_blocks += st->st_blocks;
        } else {
            w->package_blocks[index] += st->st_blocks;
            /* a single-link file a package installed: a copy if the cache holds it too */
            if (nlink == 1 && S_ISREG(st->st_mode) && !owner->relocated) {
                int cached = w->entries[index] ? in_cache(w, index, name) : 0;
                if (cached) w->cached_single[index] += blocks;
                else w->uncached_single[index] += blocks;
            }
        }
    }
    if (nlink == 1) {
        w->private_blocks += blocks;
        return 0;
    }
    w->hardlinked++;
    if (u64vec_push(&w->ino_col, (uint64_t)st->st_ino) < 0 || u64vec_push(&w->nlink, nlink) < 0 ||
        u64vec_push(&w->blocks, (uint64_t)blocks) < 0)
        return -1;
    return 0;
}

static int push_pending(frame *f, const char *name, const struct stat *st) {
    if (f->npending == f->pending_cap) {
        subdir *p = grown(f->pending, &f->pending_cap, sizeof *p, 8);
        if (!p) return -1;
        f->pending = p;
    }
    char *copy = strdup(name);
    if (!copy) return -1;
    f->pending[f->npending++] = (subdir){copy, (uint64_t)st->st_dev, (uint64_t)st->st_ino};
    return 0;
}

/* List the top frame's directory: count every entry, fstatat()ed from the directory's fd (the one place
 * a path's metadata is read), and keep its subdirectories to walk. -1 when out of memory. */
static int list_dir(walk_state *w) {
    frame *f = &w->frames[w->depth - 1];
    size_t dir_len = f->path_len;
    int copy = dup(f->fd);
    DIR *d = copy < 0 ? NULL : fdopendir(copy);
    if (!d) {
        int err = errno;
        if (copy >= 0) close(copy);
        return error_at(w, dir_len, (uint64_t)err);
    }
    /* reldir: the directory relative to top ("" for top itself) */
    const char *reldir = dir_len > w->top_len ? w->path + w->top_len + 1 : "";
    size_t reldir_len = dir_len > w->top_len ? dir_len - w->top_len - 1 : 0;
    int check_owner = w->has_owned && !is_metadata_dir(reldir, reldir_len);
    w->listing_len = dir_len;
    w->listing_dir = check_owner ? owned_find_dir(&w->owned, reldir, reldir_len) : -1;
    int rc = 0;
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (!e) {
            if (errno) rc = error_at(w, dir_len, (uint64_t)errno);
            break;
        }
        const char *name = e->d_name;
        if (name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'))) continue;
        size_t path_len = path_append(w, dir_len, name);
        if (!path_len) { rc = -1; break; }
        budget_spend(w);
        struct stat st;
        if (fstatat(f->fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            if ((rc = error_at(w, path_len, (uint64_t)errno)) < 0) break;
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            if ((rc = count_file(w, f->fd, name, &st, path_len, check_owner)) < 0) break;
            continue;
        }
        if (strset_has(&w->exclude, w->path, path_len)) continue;
        if ((uint64_t)st.st_dev != w->dev && !w->cross) {
            w->skipped_mounts++;
            continue;
        }
        w->dirs++;
        w->apparent += st.st_size;
        w->private_blocks += st.st_blocks;
        if ((rc = push_pending(f, name, &st)) < 0) break;
    }
    closedir(d);
    forget_cache_dirs(w);
    w->path[dir_len] = '\0';
    return rc;
}

static void close_frame_fd(walk_state *w, frame *f) {
    if (f->fd < 0) return;
    close(f->fd);
    f->fd = -1;
    w->open_fds--;
}

/* Open `name` in the directory `parent_fd` without following a symlink, and check it is the directory
 * (dev, ino) that was seen before. The fd, or -1 with the error recorded at w->path[0:path_len] (-2 when
 * out of memory). */
static int open_dir_at(walk_state *w, int parent_fd, const char *name, uint64_t dev, uint64_t ino, size_t path_len) {
    int fd = parent_fd == AT_FDCWD ? open(w->top, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                                   : openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    uint64_t number;
    if (fd >= 0) {
        struct stat st;
        if (fstat(fd, &st) == 0 && (uint64_t)st.st_dev == dev && (uint64_t)st.st_ino == ino) return fd;
        number = REPLACED;
        close(fd);
    } else {
        number = (uint64_t)errno;
    }
    return error_at(w, path_len, number) < 0 ? -2 : -1;
}

/* The fd of frame i, reopened by name from the nearest open frame below it when it was closed. -1 when
 * it cannot be (the error is recorded), -2 when out of memory. */
static int frame_fd(walk_state *w, size_t i) {
    frame *frames = w->frames;
    if (frames[i].fd >= 0) return frames[i].fd;
    size_t j = i;
    while (j > 0 && frames[j - 1].fd < 0) j--;
    /* frames j..i are closed; j - 1 is open, or j is top (reopened by path) */
    int fd = j > 0 ? frames[j - 1].fd : AT_FDCWD;
    for (size_t k = j; k <= i; k++) {
        int next = open_dir_at(w, fd, frames[k].name, frames[k].dev, frames[k].ino, frames[k].path_len);
        if (k > j) close(fd); /* a stepping stone, not kept */
        if (next < 0) return next;
        fd = next;
    }
    frames[i].fd = fd;
    w->open_fds++;
    return fd;
}

/* Push a frame for the directory just opened as fd, closing the shallowest open fds past MAX_OPEN_DIRS.
 * -1 when out of memory. */
static int push_frame(walk_state *w, int fd, char *name, uint64_t dev, uint64_t ino, size_t path_len) {
    if (w->depth == w->frames_cap) {
        frame *frames = grown(w->frames, &w->frames_cap, sizeof *frames, 64);
        if (!frames) {
            close(fd);
            free(name);
            return -1;
        }
        w->frames = frames;
    }
    w->frames[w->depth++] = (frame){fd, name, dev, ino, path_len, NULL, 0, 0};
    w->open_fds++;
    for (size_t i = 0; w->open_fds > MAX_OPEN_DIRS && i + 1 < w->depth; i++) close_frame_fd(w, &w->frames[i]);
    return 0;
}

static void pop_frame(walk_state *w) {
    frame *f = &w->frames[--w->depth];
    close_frame_fd(w, f);
    for (size_t i = 0; i < f->npending; i++) free(f->pending[i].name);
    free(f->pending);
    free(f->name);
}

/* Walk top depth-first, every directory opened from its parent's fd by name (never by a path an env
 * owner could redirect with a symlink in the middle, nor one longer than PATH_MAX). Runs without the GIL. */
static void walk_all(walk_state *w) {
    w->path = malloc(w->top_len + 1);
    if (!w->path) goto oom;
    memcpy(w->path, w->top, w->top_len + 1);
    w->path_cap = w->top_len + 1;
    int fd = open_dir_at(w, AT_FDCWD, NULL, w->dev, w->ino, w->top_len);
    if (fd == -2 || (fd >= 0 && (push_frame(w, fd, NULL, w->dev, w->ino, w->top_len) < 0 || list_dir(w) < 0))) goto oom;
    while (w->depth) {
        frame *f = &w->frames[w->depth - 1];
        if (!f->npending) {
            pop_frame(w);
            continue;
        }
        int parent = frame_fd(w, w->depth - 1);
        if (parent == -2) goto oom;
        if (parent < 0) { /* the error is recorded; what is below cannot be reached safely */
            pop_frame(w);
            continue;
        }
        subdir sub = f->pending[--f->npending];
        size_t path_len = path_append(w, f->path_len, sub.name);
        if (!path_len) { free(sub.name); goto oom; }
        fd = open_dir_at(w, parent, sub.name, sub.dev, sub.ino, path_len);
        /* after its last subdirectory a frame needs no fd: only a reopen of a frame above would use it */
        if (!f->npending) close_frame_fd(w, f);
        if (fd == -2) { free(sub.name); goto oom; }
        if (fd < 0) { free(sub.name); continue; }
        if (push_frame(w, fd, sub.name, sub.dev, sub.ino, path_len) < 0 || list_dir(w) < 0) goto oom;
    }
    return;
oom:
    w->out_of_memory = 1;
}

/* The bytes of a str key: the filesystem encoding of the str (surrogateescape), as os.fsencode gives them;
 * for ASCII text the str's own storage (the caller keeps the str alive), otherwise an encoded copy that
 * `holder` keeps alive. -1 on error. */
static int key_bytes(PyObject *key, PyObject *holder, const char **data, size_t *len) {
    if (PyUnicode_Check(key) && PyUnicode_IS_ASCII(key)) {
        *data = (const char *)PyUnicode_DATA(key);
        *len = (size_t)PyUnicode_GET_LENGTH(key);
        return 0;
    }
    PyObject *encoded = PyUnicode_EncodeFSDefault(key);
    if (!encoded) return -1;
    int appended = PyList_Append(holder, encoded);
    Py_DECREF(encoded); /* alive in holder if appended */
    if (appended < 0) return -1;
    *data = PyBytes_AS_STRING(encoded);
    *len = (size_t)PyBytes_GET_SIZE(encoded);
    return 0;
}

/* Fill `set` from an iterable of str (the exclude set). */
static int fill_set(strset *set, PyObject *keys, PyObject *holder) {
    Py_ssize_t expected = PyObject_Length(keys);
    if (expected < 0) return -1;
    if (strset_init(set, (size_t)expected) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    PyObject *iter = PyObject_GetIter(keys), *key;
    if (!iter) return -1;
    while ((key = PyIter_Next(iter))) {
        const char *data;
        size_t len;
        int failed = PyList_Append(holder, key) < 0 || key_bytes(key, holder, &data, &len) < 0;
        if (!failed) strset_add(set, data, len);
        Py_DECREF(key);
        if (failed) break;
    }
    Py_DECREF(iter);
    return PyErr_Occurred() ? -1 : 0;
}

/* Load Ownership's fields: owned path -> package index (a later package wins a clash), the relocated
 * flag of paths whose owner lists them as relocated, and the encoded cache entry of each package. */
static int load_ownership(walk_state *w, PyObject *files, PyObject *relocated, PyObject *entries, PyObject *holder) {
    PyObject *files_fast = PySequence_Fast(files, "files must be a sequence");
    if (!files_fast) return -1;
    Py_ssize_t packages = PySequence_Fast_GET_SIZE(files_fast), total = 0;
    int rc = -1;
    PyObject *relocated_fast = PySequence_Fast(relocated, "relocated must be a sequence");
    PyObject *entries_fast = PySequence_Fast(entries, "cache_entries must be a sequence");
    if (!relocated_fast || !entries_fast) goto out;
    if (PySequence_Fast_GET_SIZE(relocated_fast) != packages || PySequence_Fast_GET_SIZE(entries_fast) != packages) {
        PyErr_SetString(PyExc_ValueError, "files, relocated and cache_entries differ in length");
        goto out;
    }
    for (Py_ssize_t i = 0; i < packages; i++) {
        Py_ssize_t n = PyObject_Length(PySequence_Fast_GET_ITEM(files_fast, i));
        if (n < 0) goto out;
        total += n;
    }
    w->packages = packages;
    size_t count = packages ? (size_t)packages : 1;
    w->package_blocks = calloc(count, sizeof(int64_t));
    w->cached_single = calloc(count, sizeof(int64_t));
    w->uncached_single = calloc(count, sizeof(int64_t));
    w->entries = calloc(count, sizeof(char *));
    if (!w->package_blocks || !w->cached_single || !w->uncached_single || !w->entries ||
        owned_init(&w->owned, (size_t)total) < 0) {
        PyErr_NoMemory();
        goto out;
    }
    for (Py_ssize_t i = 0; i < packages; i++) {
        PyObject *paths = PySequence_Fast(PySequence_Fast_GET_ITEM(files_fast, i), "files[i] must be a sequence");
        /* the holder keeps the paths (whose storage keys may point into) alive until the walk ends */
        int held = paths ? PyList_Append(holder, paths) : -1;
        Py_XDECREF(paths);
        if (held < 0) goto out;
        for (Py_ssize_t j = 0; j < PySequence_Fast_GET_SIZE(paths); j++) {
            const char *data;
            size_t len;
            if (key_bytes(PySequence_Fast_GET_ITEM(paths, j), holder, &data, &len) < 0) goto out;
            /* a later package wins a path two list, as in exporter.scan.pywalk */
            if (owned_add(&w->owned, data, len, (int32_t)i) < 0) {
                PyErr_NoMemory();
                goto out;
            }
        }
    }
    if (owned_finish(&w->owned) < 0) {
        PyErr_NoMemory();
        goto out;
    }
    for (Py_ssize_t i = 0; i < packages; i++) {
        PyObject *iter = PyObject_GetIter(PySequence_Fast_GET_ITEM(relocated_fast, i)), *key;
        if (!iter) goto out;
        while ((key = PyIter_Next(iter))) {
            PyObject *encoded = PyUnicode_EncodeFSDefault(key);
            Py_DECREF(key);
            if (!encoded) break;
            owned_slot *s = owned_get_path(&w->owned, PyBytes_AS_STRING(encoded), (size_t)PyBytes_GET_SIZE(encoded));
            if (s && s->value == i) s->relocated = 1;
            Py_DECREF(encoded);
        }
        Py_DECREF(iter);
        if (PyErr_Occurred()) goto out;
        PyObject *entry = PySequence_Fast_GET_ITEM(entries_fast, i);
        if (entry == Py_None) continue;
        PyObject *encoded = PyUnicode_EncodeFSDefault(entry);
        if (!encoded || PyList_Append(holder, encoded) < 0) {
            Py_XDECREF(encoded);
            goto out;
        }
        Py_DECREF(encoded); /* alive in holder */
        w->entries[i] = PyBytes_AS_STRING(encoded);
    }
    rc = 0;
out:
    Py_DECREF(files_fast);
    Py_XDECREF(relocated_fast);
    Py_XDECREF(entries_fast);
    return rc;
}

static PyObject *vec_bytes(const u64vec *v) {
    return PyBytes_FromStringAndSize((const char *)v->data, (Py_ssize_t)(v->len * sizeof(uint64_t)));
}

/* [(errno, path)], paths decoded as os.fsdecode does. */
static PyObject *items_list(const itemvec *v) {
    PyObject *list = PyList_New((Py_ssize_t)v->len);
    for (size_t i = 0; list && i < v->len; i++) {
        unsigned long long number = v->data[i].number;
        PyObject *t = Py_BuildValue("(KO&)", number, PyUnicode_DecodeFSDefault, v->data[i].path);
        if (!t) { Py_CLEAR(list); break; }
        PyList_SET_ITEM(list, (Py_ssize_t)i, t);
    }
    return list;
}

static PyObject *blocks_list(const int64_t *values, Py_ssize_t n) {
    PyObject *list = PyList_New(n);
    for (Py_ssize_t i = 0; list && i < n; i++) {
        PyObject *number = PyLong_FromLongLong(values[i]);
        if (!number) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, number);
    }
    return list;
}

/* The fields of WalkResult, in the order they are set; F_COUNT is their number. */
enum {
    F_DIRS, F_FILES, F_HARDLINKED_FILES, F_APPARENT_BYTES, F_PRIVATE_BLOCKS, F_SKIPPED_MOUNTS,
    F_UNTRACKED_FILES, F_UNTRACKED_BLOCKS, F_INO, F_NLINK, F_BLOCKS, F_ERRORS,
    F_PACKAGE_BLOCKS, F_CACHED_SINGLE_BLOCKS, F_UNCACHED_SINGLE_BLOCKS, F_EXTENT_START, F_EXTENT_LENGTH,
    F_EXTENT_INO, F_COUNT
};

static PyStructSequence_Field walk_result_fields[] = {
    [F_DIRS] = {"dirs", "directories below top, top not included"},
    [F_FILES] = {"files", "non-directories (symlinks included)"},
    [F_HARDLINKED_FILES] = {"hardlinked_files", "non-directories with st_nlink > 1"},
    [F_APPARENT_BYTES] = {"apparent_bytes", "st_size of every path below top"},
    [F_PRIVATE_BLOCKS] = {"private_blocks", "st_blocks of directories and of non-directories with one link"},
    [F_SKIPPED_MOUNTS] = {"skipped_mounts", "directories on another device, not entered"},
    [F_UNTRACKED_FILES] = {"untracked_files", "non-directories no package owns, outside conda-meta/"},
    [F_UNTRACKED_BLOCKS] = {"untracked_blocks", "st_blocks of those, each inode once"},
    [F_INO] = {"ino", "st_ino per hardlinked non-directory, native-endian uint64 bytes"},
    [F_NLINK] = {"nlink", "st_nlink per hardlinked non-directory, native-endian uint64 bytes"},
    [F_BLOCKS] = {"blocks", "st_blocks per hardlinked non-directory, native-endian uint64 bytes"},
    [F_ERRORS] = {"errors", "list of (errno, path) met on the way"},
    [F_PACKAGE_BLOCKS] = {"package_blocks", "st_blocks of each package's paths, by package index"},
    [F_CACHED_SINGLE_BLOCKS] = {"cached_single_blocks",
                                "st_blocks of each package's single-link, not relocated regular files that "
                                "its cache entry holds too, by package index"},
    [F_UNCACHED_SINGLE_BLOCKS] = {"uncached_single_blocks",
                                  "st_blocks of each package's single-link, not relocated regular files that "
                                  "its cache entry does not hold, by package index"},
    [F_EXTENT_START] = {"extent_start", "physical byte offset per extent flagged shared (with map_extents)"},
    [F_EXTENT_LENGTH] = {"extent_length", "byte length per extent flagged shared"},
    [F_EXTENT_INO] = {"extent_ino", "per extent flagged shared, st_ino of its file if hardlinked, else 0"},
    [F_COUNT] = {NULL, NULL},
};

static PyStructSequence_Desc walk_result_desc = {
    "exporter.scan._walker.WalkResult",
    "What walk() found below a directory (see exporter.scan.walk.TreeWalk).",
    walk_result_fields,
    F_COUNT,
};

static PyTypeObject *walk_result_type; /* made once, in PyInit__walker */

/* Store `value` (a new reference, NULL on error) as field `index` of `result`. */
static int set_field(PyObject *result, int index, PyObject *value) {
    if (!value) return -1;
    PyStructSequence_SET_ITEM(result, index, value);
    return 0;
}

/* The WalkResult of a finished walk. */
static PyObject *walk_result(const walk_state *w) {
    PyObject *result = PyStructSequence_New(walk_result_type);
    if (!result) return NULL;
    if (set_field(result, F_DIRS, PyLong_FromLongLong(w->dirs)) < 0 ||
        set_field(result, F_FILES, PyLong_FromLongLong(w->files)) < 0 ||
        set_field(result, F_HARDLINKED_FILES, PyLong_FromLongLong(w->hardlinked)) < 0 ||
        set_field(result, F_APPARENT_BYTES, PyLong_FromLongLong(w->apparent)) < 0 ||
        set_field(result, F_PRIVATE_BLOCKS, PyLong_FromLongLong(w->private_blocks)) < 0 ||
        set_field(result, F_SKIPPED_MOUNTS, PyLong_FromLongLong(w->skipped_mounts)) < 0 ||
        set_field(result, F_UNTRACKED_FILES, PyLong_FromLongLong(w->untracked_files)) < 0 ||
        set_field(result, F_UNTRACKED_BLOCKS, PyLong_FromLongLong(w->untracked_blocks)) < 0 ||
        set_field(result, F_INO, vec_bytes(&w->ino_col)) < 0 ||
        set_field(result, F_NLINK, vec_bytes(&w->nlink)) < 0 ||
        set_field(result, F_BLOCKS, vec_bytes(&w->blocks)) < 0 ||
        set_field(result, F_ERRORS, items_list(&w->errors)) < 0 ||
        set_field(result, F_PACKAGE_BLOCKS, blocks_list(w->package_blocks, w->packages)) < 0 ||
        set_field(result, F_CACHED_SINGLE_BLOCKS, blocks_list(w->cached_single, w->packages)) < 0 ||
        set_field(result, F_UNCACHED_SINGLE_BLOCKS, blocks_list(w->uncached_single, w->packages)) < 0 ||
        set_field(result, F_EXTENT_START, vec_bytes(&w->ext_start)) < 0 ||
        set_field(result, F_EXTENT_LENGTH, vec_bytes(&w->ext_length)) < 0 ||
        set_field(result, F_EXTENT_INO, vec_bytes(&w->ext_ino)) < 0) {
        Py_DECREF(result); /* (unset fields are NULL; the dealloc skips them) */
        return NULL;
    }
    return result;
}

static PyObject *walker_walk(PyObject *Py_UNUSED(self), PyObject *args) {
    const char *top;
    Py_ssize_t top_len;
    unsigned long long dev, ino;
    int cross, map_extents, map_hardlinked, budget_fd;
    long long ns_per_path, batch;
    PyObject *exclude, *files, *relocated, *entries;
    if (!PyArg_ParseTuple(args, "y#KKOpOOOppiLL", &top, &top_len, &dev, &ino, &exclude, &cross, &files, &relocated,
                          &entries, &map_extents, &map_hardlinked, &budget_fd, &ns_per_path, &batch))
        return NULL;
    walk_state w;
    memset(&w, 0, sizeof w);
    w.entry_fd = -1;
    w.entry_index = -1;
    w.top = top;
    w.top_len = (size_t)top_len;
    w.dev = dev;
    w.ino = ino;
    w.cross = cross;
    w.map_extents = map_extents;
    w.map_hardlinked = map_hardlinked;
    w.has_owned = files != Py_None;
    if (budget_fd >= 0 && batch > 0 && ns_per_path > 0) {
        void *block = mmap(NULL, sizeof(struct budget_block), PROT_READ | PROT_WRITE, MAP_SHARED, budget_fd, 0);
        if (block != MAP_FAILED) { /* (else unbudgeted: the file is exporter.scan.budget's, made mappable) */
            w.budget = block;
            w.budget_fd = budget_fd;
            w.ns_per_path = ns_per_path;
            w.batch = batch;
        }
    }
    PyObject *result = NULL, *holder = PyList_New(0);
    if (!holder || fill_set(&w.exclude, exclude, holder) < 0) goto out;
    if (w.has_owned && load_ownership(&w, files, relocated, entries, holder) < 0) goto out;

    Py_BEGIN_ALLOW_THREADS
    walk_all(&w);
    if (w.budget) budget_refund(&w);
    Py_END_ALLOW_THREADS
    if (w.out_of_memory) {
        PyErr_NoMemory();
        goto out;
    }
    result = walk_result(&w);
out:
    Py_XDECREF(holder);
    if (w.budget) munmap(w.budget, sizeof(struct budget_block));
    free(w.exclude.slots);
    owned_free(&w.owned);
    free(w.package_blocks);
    free(w.cached_single);
    free(w.uncached_single);
    free(w.entries);
    forget_cache_dirs(&w);
    if (w.entry_fd >= 0) close(w.entry_fd);
    while (w.depth) pop_frame(&w);
    free(w.frames);
    free(w.path);
    free(w.ino_col.data);
    free(w.nlink.data);
    free(w.blocks.data);
    free(w.untracked_inodes.keys);
    free(w.ext_start.data);
    free(w.ext_length.data);
    free(w.ext_ino.data);
    free(w.mapped_inodes.keys);
    free(w.mapped_inodes.values);
    free(w.fiemap);
    itemvec_free(&w.errors);
    return result;
}

static PyMethodDef walker_methods[] = {
    {"walk", walker_walk, METH_VARARGS,
     "Walk below a directory without the GIL and return a WalkResult (see exporter.scan.walk.walk_tree)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef walker_module = {
    PyModuleDef_HEAD_INIT, "exporter.scan._walker", "Native per-path loop of exporter.scan.walk.", -1, walker_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__walker(void) {
    uint64_t key[2];
    if (getrandom(key, sizeof key, GRND_NONBLOCK) == (ssize_t)sizeof key) { /* else the fixed key: still correct */
        hash_key[0] = key[0];
        hash_key[1] = key[1] | 1; /* odd: a multiplier that loses no bit */
    }
    if (!walk_result_type && !(walk_result_type = PyStructSequence_NewType(&walk_result_desc))) return NULL;
    PyObject *module = PyModule_Create(&walker_module);
    if (module && (PyModule_AddObjectRef(module, "WalkResult", (PyObject *)walk_result_type) < 0 ||
                   PyModule_AddIntConstant(module, "REPLACED", REPLACED) < 0 ||
                   PyModule_AddIntConstant(module, "MAX_OPEN_DIRS", MAX_OPEN_DIRS) < 0))
        Py_CLEAR(module);
    return module;
}
