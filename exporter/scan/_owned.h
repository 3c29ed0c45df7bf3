/* The paths an env's packages installed, as the walker looks them up: relative path -> package index and
 * "relocated" flag, indexed by directory, then by name within it.
 *
 * One flat hash table of every path missed the CPU cache on nearly every look-up and insertion (a random
 * slot of a table of millions, then the key's bytes): 0.7 us per path of an env, a quarter of a walk. A
 * walk lists one directory at a time, so here a directory is looked up once per listing and each of its
 * files in a small table of that directory's names alone, which stays in the cache while it is listed.
 *
 * Directories are not copied: they point into the keys, which the caller keeps alive until owned_free; names
 * are copied next to each other. Included once, by _walker.c, which defines hash_bytes and grown. */

#ifndef OWNED_H
#define OWNED_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name; /* the path's last component (NULL: an empty slot) */
    uint32_t name_len;
    int32_t value; /* the package's index */
    uint32_t hash; /* of the name (its low half) */
    int relocated; /* the package lists it with a prefix placeholder: its text was rewritten at install */
} owned_slot;

typedef struct {
    const char *dir; /* the directory's relative path, "" for the top; not NUL-terminated */
    uint32_t dir_len;
    uint32_t count; /* its names (while building), then its table's first slot */
    uint32_t mask;  /* its table's size - 1 */
    uint64_t hash;
} owned_dir;

typedef struct {
    const char *key;
    uint32_t len, dir;
    int32_t value;
} owned_pending;

typedef struct {
    owned_dir *dirs;
    size_t ndirs, dirs_cap;
    uint32_t *dir_table; /* open addressing: directory index + 1, 0 empty */
    size_t dir_mask;
    owned_slot *slots;
    char *names; /* the slots' names, copied in the order added: a directory's names lie together */
    owned_pending *pending; /* the keys added, until owned_finish */
    size_t npending, pending_cap;
    uint32_t last_dir; /* the directory of the key added last: a record lists a directory's files together */
} owned_index;

static uint64_t hash_bytes(const char *s, size_t n);
static void *grown(void *data, size_t *cap, size_t size, size_t first);

static size_t owned_split(const char *key, size_t len) { /* length of the directory part: up to the last '/' */
    const char *slash = memrchr(key, '/', len);
    return slash ? (size_t)(slash - key) : 0;
}

static int owned_init(owned_index *o, size_t expected) {
    memset(o, 0, sizeof *o);
    o->dir_mask = 63;
    o->dir_table = calloc(o->dir_mask + 1, sizeof(uint32_t));
    o->pending_cap = expected ? expected : 1;
    o->pending = malloc(o->pending_cap * sizeof(owned_pending));
    o->last_dir = UINT32_MAX;
    return o->dir_table && o->pending ? 0 : -1;
}

/* The index of directory `dir`, or -1 when no key is in it. */
static int64_t owned_find_dir(const owned_index *o, const char *dir, size_t len) {
    uint64_t h = hash_bytes(dir, len);
    for (size_t i = h & o->dir_mask;; i = (i + 1) & o->dir_mask) {
        uint32_t at = o->dir_table[i];
        if (!at) return -1;
        const owned_dir *d = &o->dirs[at - 1];
        if (d->hash == h && d->dir_len == len && memcmp(d->dir, dir, len) == 0) return at - 1;
    }
}

static int owned_grow_dirs(owned_index *o) {
    size_t size = (o->dir_mask + 1) * 2;
    uint32_t *table = calloc(size, sizeof(uint32_t));
    if (!table) return -1;
    for (size_t d = 0; d < o->ndirs; d++) {
        size_t i = o->dirs[d].hash & (size - 1);
        while (table[i]) i = (i + 1) & (size - 1);
        table[i] = (uint32_t)d + 1;
    }
    free(o->dir_table);
    o->dir_table = table;
    o->dir_mask = size - 1;
    return 0;
}

/* The index of directory `dir`, added if new; -1 when out of memory. */
static int64_t owned_add_dir(owned_index *o, const char *dir, size_t len) {
    if (o->last_dir != UINT32_MAX) {
        const owned_dir *last = &o->dirs[o->last_dir];
        if (last->dir_len == len && memcmp(last->dir, dir, len) == 0) return o->last_dir;
    }
    int64_t found = owned_find_dir(o, dir, len);
    if (found < 0) {
        if ((o->ndirs + 1) * 2 > o->dir_mask + 1 && owned_grow_dirs(o) < 0) return -1;
        if (o->ndirs == o->dirs_cap) {
            owned_dir *dirs = grown(o->dirs, &o->dirs_cap, sizeof *dirs, 256);
            if (!dirs) return -1;
            o->dirs = dirs;
        }
        uint64_t h = hash_bytes(dir, len);
        o->dirs[o->ndirs] = (owned_dir){dir, (uint32_t)len, 0, 0, h};
        size_t i = h & o->dir_mask;
        while (o->dir_table[i]) i = (i + 1) & o->dir_mask;
        o->dir_table[i] = (uint32_t)++o->ndirs;
        found = (int64_t)o->ndirs - 1;
    }
    o->last_dir = (uint32_t)found;
    return found;
}

/* Add `key` (a relative path, `len` bytes) for package `value`; a later key equal to an earlier one wins.
 * -1 when out of memory. */
static int owned_add(owned_index *o, const char *key, size_t len, int32_t value) {
    if (len > UINT32_MAX) return 0; /* no path is that long: it names nothing a walk meets */
    int64_t dir = owned_add_dir(o, key, owned_split(key, len));
    if (dir < 0) return -1;
    if (o->npending == o->pending_cap) {
        owned_pending *p = grown(o->pending, &o->pending_cap, sizeof *p, 1);
        if (!p) return -1;
        o->pending = p;
    }
    o->pending[o->npending++] = (owned_pending){key, (uint32_t)len, (uint32_t)dir, value};
    o->dirs[dir].count++;
    return 0;
}

/* The slot of `name` in directory `dir`'s table: the one holding it, or the empty one it would take. */
static owned_slot *owned_slot_of(const owned_index *o, const owned_dir *d, const char *name, size_t len, uint32_t h) {
    for (uint32_t i = h & d->mask;; i = (i + 1) & d->mask) {
        owned_slot *s = &o->slots[d->count + i];
        if (!s->name || (s->hash == h && s->name_len == len && memcmp(s->name, name, len) == 0)) return s;
    }
}

/* Build each directory's table of names from the keys added; -1 when out of memory. */
static int owned_finish(owned_index *o) {
    size_t total = 0;
    for (size_t d = 0; d < o->ndirs; d++) {
        owned_dir *dir = &o->dirs[d];
        uint32_t size = 2;
        while (size < 2 * (uint64_t)dir->count) size *= 2;
        dir->mask = size - 1;
        dir->count = (uint32_t)total; /* from now on: the first slot */
        total += size;
        if (total > UINT32_MAX) return -1;
    }
    size_t name_bytes = 0;
    for (size_t k = 0; k < o->npending; k++) name_bytes += o->pending[k].len;
    o->slots = calloc(total ? total : 1, sizeof(owned_slot));
    o->names = malloc(name_bytes ? name_bytes : 1);
    if (!o->slots || !o->names) return -1;
    char *next = o->names;
    for (size_t k = 0; k < o->npending; k++) {
        const owned_pending *p = &o->pending[k];
        size_t skip = o->dirs[p->dir].dir_len ? o->dirs[p->dir].dir_len + 1 : 0;
        const char *name = p->key + skip;
        size_t name_len = p->len - skip;
        uint32_t h = (uint32_t)hash_bytes(name, name_len);
        owned_slot *s = owned_slot_of(o, &o->dirs[p->dir], name, name_len, h);
        if (!s->name) { /* (a name added again keeps its copy and takes the later package) */
            memcpy(next, name, name_len);
            *s = (owned_slot){next, (uint32_t)name_len, p->value, h, 0};
            next += name_len;
        } else {
            s->value = p->value;
        }
    }
    free(o->pending);
    o->pending = NULL;
    o->npending = o->pending_cap = 0;
    return 0;
}

/* The slot of `name` in directory index `dir` (from owned_find_dir), or NULL. */
static owned_slot *owned_get(const owned_index *o, int64_t dir, const char *name, size_t len) {
    if (dir < 0) return NULL;
    owned_slot *s = owned_slot_of(o, &o->dirs[dir], name, len, (uint32_t)hash_bytes(name, len));
    return s->name ? s : NULL;
}

/* The slot of the relative path `key`, or NULL. */
static owned_slot *owned_get_path(const owned_index *o, const char *key, size_t len) {
    size_t dir_len = owned_split(key, len), skip = dir_len ? dir_len + 1 : 0;
    return owned_get(o, owned_find_dir(o, key, dir_len), key + skip, len - skip);
}

static void owned_free(owned_index *o) {
    free(o->dirs);
    free(o->dir_table);
    free(o->slots);
    free(o->names);
    free(o->pending);
}

#endif
