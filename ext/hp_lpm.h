/*
 * hp_lpm.h -- longest-prefix-match tables for route lookups (IPv4 and IPv6).
 *
 * Everything here is `static inline` C99 so that lpm.pxi can include it with
 * `cdef extern from "hp_lpm.h"` and the compiled dataplane loop can call the
 * lookups without the GIL.  No function allocates or frees memory while it
 * looks up; inserts and removals must not run concurrently with lookups.
 *
 * Values are next-hop indices: 1 .. 0x7FFFFFFF.  0 means "no route"; the top
 * bit is reserved by the IPv4 trie to mark a pointer to a child chunk.
 *
 * IPv4: a multibit trie with a wide first level and 8-bit levels below it.
 *   first_stride = 16  ->  16-8-8  (root of 65,536 entries, 256-entry chunks)
 *   first_stride = 24  ->  24-8    (DIR-24-8: root of 16,777,216 entries)
 * A table entry is a uint32: either a value (top bit clear) or, with the top
 * bit set, the index of a 256-entry child chunk.  Every entry holds the value
 * of the longest prefix covering it ("leaf pushing"), so a lookup is one to
 * three dependent loads and never backtracks.  Beside each entry a uint8
 * "depth" (prefix length + 1, 0 = empty) lets inserts and removals update
 * only the entries a prefix owns: an insert overwrites entries whose depth is
 * not longer than its own; a removal hands the entries it owned to the
 * longest prefix that covers it (found in the exact-match prefix table).  A
 * chunk whose entries all come from prefixes no longer than its parent level
 * is folded back into its parent entry and recycled.
 *
 * Choice of default (measured by benchmarks/bench_lpm.py, numbers in
 * benchmarks/README.md).  Memory: 16-8-8 costs what the routes need
 * (320 KiB root + 1.25 KiB per chunk: 2.3 MiB RSS for 1,000 random prefixes,
 * 76 MiB for 100,000); DIR-24-8 costs 80 MiB for any table, even an empty
 * one.  Speed: on 1,000 prefixes 16-8-8 stays in cache and runs 4-5x faster
 * on uniform traffic (DIR-24-8 misses the cache on every lookup); on
 * 100,000 prefixes both take one DRAM miss per lookup and DIR-24-8 is
 * 1.2-1.6x faster (16-8-8 adds a dependent L2 load before it).  VPC route
 * tables are small (at most 1,000 routes) and there is one per route table,
 * so 16-8-8 is the default; first_stride=24 is there for large tables.
 *
 * Prefixes given with host bits set are rejected by the Python layer
 * (ValueError); the C layer masks them.
 *
 * IPv6: correctness first.  The prefixes live in one open-addressing hash
 * table keyed by (masked address, length); a lookup probes the lengths that
 * are present, longest first, and stops at the first hit.  The cost is one
 * probe per distinct prefix length present (route tables use few).
 *
 * The same hash table (hp_pfxtab) is the exact-match record of the IPv4
 * prefixes: it answers __len__, re-insertion, and "which prefix covers this
 * one" when a prefix is removed.
 */
#ifndef HP_LPM_H
#define HP_LPM_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hp_mem.h"

#define HP_LPM_EXT 0x80000000u       /* entry is a pointer to a child chunk */
#define HP_LPM_IDX 0x7FFFFFFFu       /* chunk index bits of a pointer entry */
#define HP_LPM_MAX_VALUE 0x7FFFFFFFu
#define HP_LPM_CHUNK 256u
#define HP_LPM_NO_CHUNK 0xFFFFFFFFu

/* ------------------------------------------------------------------------ */
/* hp_pfxtab: exact-match table of prefixes (hi, lo, len) -> value.
 * Linear probing, load factor <= 1/2, deletion by backward shift.          */

typedef struct {
    uint64_t hi, lo;
    uint32_t value;      /* 0 = free slot (stored values are never 0) */
    uint32_t len;
} hp_pfx_slot;

typedef struct {
    hp_pfx_slot *slots;
    size_t cap;          /* power of two */
    size_t count;
    uint32_t len_count[129];
} hp_pfxtab;

static inline uint64_t hp_mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static inline size_t hp_pfx_hash(uint64_t hi, uint64_t lo, uint32_t len)
{
    return (size_t)hp_mix64(hi ^ hp_mix64(lo ^ ((uint64_t)len << 56) ^ len));
}

static inline int hp_pfxtab_init(hp_pfxtab *t)
{
    memset(t, 0, sizeof(*t));
    t->cap = 16;
    t->slots = (hp_pfx_slot *)calloc(t->cap, sizeof(hp_pfx_slot));
    return t->slots ? 0 : -1;
}

static inline void hp_pfxtab_free(hp_pfxtab *t)
{
    free(t->slots);
    t->slots = NULL;
    t->cap = t->count = 0;
}

/* Index of the slot holding (hi, lo, len), or of the free slot ending its
 * probe sequence. */
static inline size_t hp_pfxtab_find(const hp_pfxtab *t, uint64_t hi, uint64_t lo, uint32_t len)
{
    size_t mask = t->cap - 1;
    size_t i = hp_pfx_hash(hi, lo, len) & mask;
    for (;;) {
        const hp_pfx_slot *s = &t->slots[i];
        if (s->value == 0 || (s->lo == lo && s->hi == hi && s->len == len))
            return i;
        i = (i + 1) & mask;
    }
}

static inline uint32_t hp_pfxtab_get(const hp_pfxtab *t, uint64_t hi, uint64_t lo, uint32_t len)
{
    return t->slots[hp_pfxtab_find(t, hi, lo, len)].value;
}

static inline int hp_pfxtab_grow(hp_pfxtab *t)
{
    hp_pfx_slot *old = t->slots;
    size_t old_cap = t->cap, i;
    hp_pfx_slot *fresh = (hp_pfx_slot *)calloc(old_cap * 2, sizeof(hp_pfx_slot));
    if (fresh == NULL)
        return -1;
    t->slots = fresh;
    t->cap = old_cap * 2;
    for (i = 0; i < old_cap; i++) {
        if (old[i].value != 0)
            t->slots[hp_pfxtab_find(t, old[i].hi, old[i].lo, old[i].len)] = old[i];
    }
    free(old);
    return 0;
}

/* Returns 1 when the prefix is new, 0 when its value was replaced, -1 when
 * out of memory.  *previous receives the old value (0 if none). */
static inline int hp_pfxtab_put(hp_pfxtab *t, uint64_t hi, uint64_t lo, uint32_t len,
                                uint32_t value, uint32_t *previous)
{
    size_t i;
    if ((t->count + 1) * 2 > t->cap && hp_pfxtab_grow(t) != 0)
        return -1;
    i = hp_pfxtab_find(t, hi, lo, len);
    *previous = t->slots[i].value;
    if (t->slots[i].value != 0) {
        t->slots[i].value = value;
        return 0;
    }
    t->slots[i].hi = hi;
    t->slots[i].lo = lo;
    t->slots[i].len = len;
    t->slots[i].value = value;
    t->count++;
    t->len_count[len]++;
    return 1;
}

/* Removes the prefix; returns its value, 0 if it was absent. */
static inline uint32_t hp_pfxtab_del(hp_pfxtab *t, uint64_t hi, uint64_t lo, uint32_t len)
{
    size_t mask = t->cap - 1;
    size_t i = hp_pfxtab_find(t, hi, lo, len), j, home;
    uint32_t value = t->slots[i].value;
    if (value == 0)
        return 0;
    t->count--;
    t->len_count[len]--;
    /* Backward-shift deletion: pull later members of the cluster into the
     * hole when the hole lies on their probe path. */
    j = i;
    for (;;) {
        t->slots[i].value = 0;
        for (;;) {
            j = (j + 1) & mask;
            if (t->slots[j].value == 0)
                return value;
            home = hp_pfx_hash(t->slots[j].hi, t->slots[j].lo, t->slots[j].len) & mask;
            /* keep slot j where it is when its home lies cyclically in (i, j] */
            if (i <= j ? (i < home && home <= j) : (i < home || home <= j))
                continue;
            break;
        }
        t->slots[i] = t->slots[j];
        i = j;
    }
}

/* ------------------------------------------------------------------------ */
/* IPv4 multibit trie. */

typedef struct {
    uint32_t *root;          /* 1 << first_stride entries */
    uint8_t *root_depth;
    uint32_t *pool;          /* chunk c occupies pool[c*256 .. c*256+255] */
    uint8_t *pool_depth;
    uint32_t chunk_cap;      /* chunks allocated in the pool */
    uint32_t chunk_top;      /* chunks ever handed out (high-water mark) */
    uint32_t chunk_live;     /* chunks in use */
    uint32_t free_head;      /* recycled chunks, linked through pool[c*256] */
    int first_stride;        /* 16 or 24 */
    hp_pfxtab prefixes;
} hp_lpm4;

static inline uint32_t hp_mask4(uint32_t len)
{
    return len == 0 ? 0u : (uint32_t)(0xFFFFFFFFu << (32 - len));
}

static inline void hp_lpm4_free(hp_lpm4 *t)
{
    size_t root_n = (size_t)1 << t->first_stride, pool_n = (size_t)t->chunk_cap * HP_LPM_CHUNK;
    hp_big_free(t->root, root_n * sizeof(uint32_t));
    hp_big_free(t->root_depth, root_n);
    hp_big_free(t->pool, pool_n * sizeof(uint32_t));
    hp_big_free(t->pool_depth, pool_n);
    hp_pfxtab_free(&t->prefixes);
    memset(t, 0, sizeof(*t));
}

static inline int hp_lpm4_init(hp_lpm4 *t, int first_stride)
{
    size_t n;
    memset(t, 0, sizeof(*t));
    if (first_stride != 16 && first_stride != 24)
        return -2;
    t->first_stride = first_stride;
    t->free_head = HP_LPM_NO_CHUNK;
    n = (size_t)1 << first_stride;
    t->root = (uint32_t *)hp_big_alloc(n * sizeof(uint32_t));
    t->root_depth = (uint8_t *)hp_big_alloc(n);
    if (t->root == NULL || t->root_depth == NULL || hp_pfxtab_init(&t->prefixes) != 0) {
        hp_lpm4_free(t);
        return -1;
    }
    return 0;
}

/* Bytes allocated by the table (lookup arrays, depth arrays, prefix record). */
static inline size_t hp_lpm4_memory(const hp_lpm4 *t)
{
    return ((size_t)1 << t->first_stride) * 5 + (size_t)t->chunk_cap * HP_LPM_CHUNK * 5
           + t->prefixes.cap * sizeof(hp_pfx_slot) + sizeof(*t);
}

/* Bytes a lookup can touch: root values and the values of chunks in use. */
static inline size_t hp_lpm4_lookup_memory(const hp_lpm4 *t)
{
    return ((size_t)1 << t->first_stride) * 4 + (size_t)t->chunk_live * HP_LPM_CHUNK * 4;
}

/* Grows the chunk pool by a quarter (at least 64 chunks), so that it never
 * holds more than ~25% unused chunks.  Chunks move in memory here, as a block
 * (indices stay valid).  (realloc would avoid the copy but lands the pool in
 * 4 KiB pages or keeps freed space in the heap.) */
static inline int hp_lpm4_grow_pool(hp_lpm4 *t)
{
    uint32_t step = t->chunk_cap / 4 < 64 ? 64 : t->chunk_cap / 4;
    uint32_t new_cap = t->chunk_cap + step;
    size_t old_n = (size_t)t->chunk_cap * HP_LPM_CHUNK, new_n = (size_t)new_cap * HP_LPM_CHUNK;
    uint32_t *pool;
    uint8_t *depth;
    if (new_cap > HP_LPM_IDX || new_cap < t->chunk_cap)
        return -1;
    pool = (uint32_t *)hp_big_alloc(new_n * sizeof(uint32_t));
    depth = (uint8_t *)hp_big_alloc(new_n);
    if (pool == NULL || depth == NULL) {
        hp_big_free(pool, new_n * sizeof(uint32_t));
        hp_big_free(depth, new_n);
        return -1;
    }
    if (old_n) {
        memcpy(pool, t->pool, old_n * sizeof(uint32_t));
        memcpy(depth, t->pool_depth, old_n);
    }
    hp_big_free(t->pool, old_n * sizeof(uint32_t));
    hp_big_free(t->pool_depth, old_n);
    t->pool = pool;
    t->pool_depth = depth;
    t->chunk_cap = new_cap;
    return 0;
}

/* A fresh chunk whose 256 entries are (value, depth); HP_LPM_NO_CHUNK when
 * out of memory.  May move the pool. */
static inline uint32_t hp_lpm4_new_chunk(hp_lpm4 *t, uint32_t value, uint8_t depth)
{
    uint32_t c, k;
    size_t base;
    if (t->free_head != HP_LPM_NO_CHUNK) {
        c = t->free_head;
        t->free_head = t->pool[(size_t)c * HP_LPM_CHUNK];
    } else {
        if (t->chunk_top == t->chunk_cap && hp_lpm4_grow_pool(t) != 0)
            return HP_LPM_NO_CHUNK;
        c = t->chunk_top++;
    }
    base = (size_t)c * HP_LPM_CHUNK;
    for (k = 0; k < HP_LPM_CHUNK; k++)
        t->pool[base + k] = value;
    memset(t->pool_depth + base, depth, HP_LPM_CHUNK);
    t->chunk_live++;
    return c;
}

static inline void hp_lpm4_free_chunk(hp_lpm4 *t, uint32_t c)
{
    t->pool[(size_t)c * HP_LPM_CHUNK] = t->free_head;
    t->free_head = c;
    t->chunk_live--;
}

/* Sets every entry covered by prefix p/len whose depth d satisfies
 * dlo <= d <= dhi to (nv, nd).  `chunk` is HP_LPM_NO_CHUNK for the root;
 * `off` is the number of address bits consumed above this level.  When
 * `fold` is set, chunks left without a prefix longer than their parent
 * level are folded into the parent.  Returns 0, or -1 when out of memory
 * (the table is then unchanged below the failing level). */
static inline int hp_lpm4_assign(hp_lpm4 *t, uint32_t chunk, uint32_t off, uint32_t p, uint32_t len,
                                 uint8_t dlo, uint8_t dhi, uint32_t nv, uint8_t nd, int fold)
{
    uint32_t stride = chunk == HP_LPM_NO_CHUNK ? (uint32_t)t->first_stride : 8u;
    uint32_t end = off + stride;
    size_t base = chunk == HP_LPM_NO_CHUNK ? 0 : (size_t)chunk * HP_LPM_CHUNK;
    uint32_t *tbl = chunk == HP_LPM_NO_CHUNK ? t->root : t->pool + base;
    uint8_t *dep = chunk == HP_LPM_NO_CHUNK ? t->root_depth : t->pool_depth + base;
    size_t i, first, n;
    uint32_t e, c, k;

    if (len <= end) {
        /* The prefix ends at this level: it covers a run of entries here
         * (all of them when it ends above this level). */
        if (len <= off) {
            first = 0;
            n = (size_t)1 << stride;
        } else {
            first = (p >> (32 - end)) & (((uint32_t)1 << stride) - 1);
            n = (size_t)1 << (end - len);
        }
        for (i = first; i < first + n; i++) {
            e = tbl[i];
            if (e & HP_LPM_EXT) {
                /* covers the whole child: no allocation below, pointers stay valid */
                hp_lpm4_assign(t, e & HP_LPM_IDX, end, p, len, dlo, dhi, nv, nd, 0);
            } else if (dep[i] >= dlo && dep[i] <= dhi) {
                tbl[i] = nv;
                dep[i] = nd;
            }
        }
        return 0;
    }

    /* The prefix continues below this level: descend through one entry. */
    i = (p >> (32 - end)) & (((uint32_t)1 << stride) - 1);
    e = tbl[i];
    if (!(e & HP_LPM_EXT)) {
        c = hp_lpm4_new_chunk(t, e, dep[i]);
        if (c == HP_LPM_NO_CHUNK)
            return -1;
        if (chunk != HP_LPM_NO_CHUNK) {   /* the pool may have moved */
            tbl = t->pool + base;
            dep = t->pool_depth + base;
        }
        tbl[i] = HP_LPM_EXT | c;
        dep[i] = 0;
    }
    c = tbl[i] & HP_LPM_IDX;
    if (hp_lpm4_assign(t, c, end, p, len, dlo, dhi, nv, nd, fold) != 0)
        return -1;
    if (fold) {
        size_t cb = (size_t)c * HP_LPM_CHUNK;
        if (chunk != HP_LPM_NO_CHUNK) {
            tbl = t->pool + base;
            dep = t->pool_depth + base;
        }
        for (k = 0; k < HP_LPM_CHUNK; k++) {
            if ((t->pool[cb + k] & HP_LPM_EXT) || t->pool_depth[cb + k] > end + 1)
                return 0;
        }
        tbl[i] = t->pool[cb];
        dep[i] = t->pool_depth[cb];
        hp_lpm4_free_chunk(t, c);
    }
    return 0;
}

/* Inserts or replaces p/len -> value (1 <= value <= HP_LPM_MAX_VALUE).
 * Returns 1 if new, 0 if replaced, -1 when out of memory. */
static inline int hp_lpm4_insert(hp_lpm4 *t, uint32_t p, uint32_t len, uint32_t value)
{
    uint32_t previous;
    int added;
    p &= hp_mask4(len);
    added = hp_pfxtab_put(&t->prefixes, 0, p, len, value, &previous);
    if (added < 0)
        return -1;
    if (hp_lpm4_assign(t, HP_LPM_NO_CHUNK, 0, p, len, 0, (uint8_t)(len + 1), value,
                       (uint8_t)(len + 1), 0) != 0) {
        /* roll the prefix record back so the table and record agree */
        if (added)
            hp_pfxtab_del(&t->prefixes, 0, p, len);
        else
            hp_pfxtab_put(&t->prefixes, 0, p, len, previous, &previous);
        return -1;
    }
    return added;
}

/* The value and length of the longest prefix strictly shorter than `len`
 * covering p; returns 0 with *cover_len untouched if none. */
static inline uint32_t hp_lpm4_cover(const hp_lpm4 *t, uint32_t p, uint32_t len, uint32_t *cover_len)
{
    uint32_t m, v;
    for (m = len; m-- > 0;) {
        if (t->prefixes.len_count[m] == 0)
            continue;
        v = hp_pfxtab_get(&t->prefixes, 0, p & hp_mask4(m), m);
        if (v) {
            *cover_len = m;
            return v;
        }
    }
    return 0;
}

/* Removes p/len.  Returns 1 if it was present, 0 if not. */
static inline int hp_lpm4_remove(hp_lpm4 *t, uint32_t p, uint32_t len)
{
    uint32_t cover_len = 0, cover;
    p &= hp_mask4(len);
    if (hp_pfxtab_del(&t->prefixes, 0, p, len) == 0)
        return 0;
    cover = hp_lpm4_cover(t, p, len, &cover_len);
    /* Removal never needs a new chunk (the prefix's chunks exist), so this
     * cannot fail. */
    hp_lpm4_assign(t, HP_LPM_NO_CHUNK, 0, p, len, (uint8_t)(len + 1), (uint8_t)(len + 1), cover,
                   cover ? (uint8_t)(cover_len + 1) : 0, 1);
    return 1;
}

static inline uint32_t hp_lpm4_lookup16(const hp_lpm4 *t, uint32_t a)
{
    uint32_t e = t->root[a >> 16];
    if (e & HP_LPM_EXT) {
        e = t->pool[((size_t)(e & HP_LPM_IDX) << 8) | ((a >> 8) & 0xFF)];
        if (e & HP_LPM_EXT)
            e = t->pool[((size_t)(e & HP_LPM_IDX) << 8) | (a & 0xFF)];
    }
    return e;
}

static inline uint32_t hp_lpm4_lookup24(const hp_lpm4 *t, uint32_t a)
{
    uint32_t e = t->root[a >> 8];
    if (e & HP_LPM_EXT)
        e = t->pool[((size_t)(e & HP_LPM_IDX) << 8) | (a & 0xFF)];
    return e;
}

/* The value of the longest prefix matching a (0 = no route). */
static inline uint32_t hp_lpm4_lookup(const hp_lpm4 *t, uint32_t a)
{
    return t->first_stride == 16 ? hp_lpm4_lookup16(t, a) : hp_lpm4_lookup24(t, a);
}

/* How far ahead the batch loop prefetches: enough lookups in flight to hide
 * a DRAM miss (16, 32 and 64 measured alike; 8 is too short). */
#define HP_LPM_PREFETCH 16

/* Tables whose lookup arrays are smaller than this stay in the caches, where
 * the prefetching loop only adds work (measured: 1k prefixes, 16-8-8, runs
 * about 1.5x faster without it); larger tables gain from it. */
#define HP_LPM_PREFETCH_MIN_BYTES ((size_t)8 << 20)

/* out[i] = lookup(addrs[i]) for i < n.  The root entry of a lookup
 * HP_LPM_PREFETCH places ahead is read and the cache line it leads to is
 * prefetched, so the misses of many lookups overlap. */
static inline void hp_lpm4_lookup_batch_prefetch(const hp_lpm4 *t, const uint32_t *addrs, uint32_t *out,
                                                 size_t n)
{
    size_t i;
    uint32_t a, e;
    if (t->first_stride == 16) {
        for (i = 0; i < n; i++) {
            if (i + HP_LPM_PREFETCH < n) {
                a = addrs[i + HP_LPM_PREFETCH];
                e = t->root[a >> 16];
                if (e & HP_LPM_EXT)
                    __builtin_prefetch(&t->pool[((size_t)(e & HP_LPM_IDX) << 8) | ((a >> 8) & 0xFF)]);
            }
            out[i] = hp_lpm4_lookup16(t, addrs[i]);
        }
    } else {
        for (i = 0; i < n; i++) {
            if (i + HP_LPM_PREFETCH < n)
                __builtin_prefetch(&t->root[addrs[i + HP_LPM_PREFETCH] >> 8]);
            out[i] = hp_lpm4_lookup24(t, addrs[i]);
        }
    }
}

/* The same without software prefetch. */
static inline void hp_lpm4_lookup_batch_plain(const hp_lpm4 *t, const uint32_t *addrs, uint32_t *out,
                                              size_t n)
{
    size_t i;
    if (t->first_stride == 16) {
        for (i = 0; i < n; i++)
            out[i] = hp_lpm4_lookup16(t, addrs[i]);
    } else {
        for (i = 0; i < n; i++)
            out[i] = hp_lpm4_lookup24(t, addrs[i]);
    }
}

/* Does the prefetching loop pay for this table? */
static inline int hp_lpm4_prefetch_pays(const hp_lpm4 *t)
{
    return hp_lpm4_lookup_memory(t) > HP_LPM_PREFETCH_MIN_BYTES;
}

/* out[i] = lookup(addrs[i]) for i < n, prefetching when the table is large. */
static inline void hp_lpm4_lookup_batch(const hp_lpm4 *t, const uint32_t *addrs, uint32_t *out, size_t n)
{
    if (hp_lpm4_prefetch_pays(t))
        hp_lpm4_lookup_batch_prefetch(t, addrs, out, n);
    else
        hp_lpm4_lookup_batch_plain(t, addrs, out, n);
}

/* ------------------------------------------------------------------------ */
/* IPv6: prefix hash probed per present length, longest first. */

typedef struct {
    hp_pfxtab prefixes;
    uint8_t lens[129];       /* present prefix lengths, longest first */
    uint32_t n_lens;
} hp_lpm6;

static inline void hp_mask6(uint64_t *hi, uint64_t *lo, uint32_t len)
{
    if (len == 0) {
        *hi = 0;
        *lo = 0;
    } else if (len <= 64) {
        *hi &= len == 64 ? ~0ULL : ~(~0ULL >> len);
        *lo = 0;
    } else {
        *lo &= len == 128 ? ~0ULL : ~(~0ULL >> (len - 64));
    }
}

static inline int hp_lpm6_init(hp_lpm6 *t)
{
    memset(t, 0, sizeof(*t));
    return hp_pfxtab_init(&t->prefixes);
}

static inline void hp_lpm6_free(hp_lpm6 *t)
{
    hp_pfxtab_free(&t->prefixes);
    t->n_lens = 0;
}

static inline size_t hp_lpm6_memory(const hp_lpm6 *t)
{
    return t->prefixes.cap * sizeof(hp_pfx_slot) + sizeof(*t);
}

static inline void hp_lpm6_relens(hp_lpm6 *t)
{
    uint32_t m = 129;
    t->n_lens = 0;
    while (m-- > 0) {
        if (t->prefixes.len_count[m])
            t->lens[t->n_lens++] = (uint8_t)m;
    }
}

/* Returns 1 if new, 0 if replaced, -1 when out of memory. */
static inline int hp_lpm6_insert(hp_lpm6 *t, uint64_t hi, uint64_t lo, uint32_t len, uint32_t value)
{
    uint32_t previous;
    int added;
    hp_mask6(&hi, &lo, len);
    added = hp_pfxtab_put(&t->prefixes, hi, lo, len, value, &previous);
    if (added == 1 && t->prefixes.len_count[len] == 1)
        hp_lpm6_relens(t);
    return added;
}

static inline int hp_lpm6_remove(hp_lpm6 *t, uint64_t hi, uint64_t lo, uint32_t len)
{
    hp_mask6(&hi, &lo, len);
    if (hp_pfxtab_del(&t->prefixes, hi, lo, len) == 0)
        return 0;
    if (t->prefixes.len_count[len] == 0)
        hp_lpm6_relens(t);
    return 1;
}

static inline uint32_t hp_lpm6_lookup(const hp_lpm6 *t, uint64_t hi, uint64_t lo)
{
    uint32_t k, v;
    uint64_t h, l;
    for (k = 0; k < t->n_lens; k++) {
        h = hi;
        l = lo;
        hp_mask6(&h, &l, t->lens[k]);
        v = hp_pfxtab_get(&t->prefixes, h, l, t->lens[k]);
        if (v)
            return v;
    }
    return 0;
}

static inline void hp_lpm6_lookup_batch(const hp_lpm6 *t, const uint64_t *hi, const uint64_t *lo,
                                        uint32_t *out, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        out[i] = hp_lpm6_lookup(t, hi[i], lo[i]);
}

#endif /* HP_LPM_H */
