/*
 * hp_ports.h -- source-port pools of Hyperplane ENIs and NAT gateways.
 *
 * The C twin of hyperplane/reference/ports.py: for the same calls it returns
 * the same ports, always (the ports are part of the rewritten bytes both
 * backends must agree on).  Everything is `static inline` C99 so that
 * ports.pxi can include it with `cdef extern from "hp_ports.h"` and the
 * compiled new-connection loop can call it without the GIL.
 *
 * Semantics (see the reference's docstring): a port is unique per
 * destination (proto, dst address, dst port) among live allocations.  The
 * search starts at offset  port_hash(seed, hint, proto, dst_ip, dst_port) % size
 * and probes upwards, wrapping from the last offset to 0, to the first offset
 * free for that destination.  port_hash is the splitmix64 finaliser chained
 * over seed, then hint, proto, dst_port and dst_ip, each folded 64 bits at a
 * time, low word first, with as many words as the integer needs (at least
 * one).  NB: an IPv6 address whose high 64 bits are zero (::1, ::ffff:a.b.c.d)
 * folds as ONE word, exactly as the reference folds the Python int.
 *
 * Data structures.  A pool is an open-addressing hash table (linear probing,
 * backward-shift deletion, no tombstones) of 32-byte destination records,
 * keyed by (dst 128-bit, dport, proto).  A record holds its live offsets in
 * one of three forms; the form never changes which port is chosen:
 *   INLINE  up to 4 offsets in the record itself (no heap memory);
 *   SET     an open-addressing set of uint16 offsets (load <= 1/2,
 *           0xFFFF = empty, backward-shift deletion);
 *   BITMAP  ceil(size/64) words, bit set = in use; the padding bits past
 *           `size` are set so that a search never returns them.  A search
 *           is a word scan with ctz (<= 1008 words for 64,512 ports).
 * A record goes SET -> BITMAP when the set would cost as much as the bitmap
 * (count > bitmap_bytes / 4: 2,016 ports at the default range) or when a
 * search needed more than HP_PORTS_PROBE_LIMIT membership probes; it goes
 * back to SET/INLINE when its count falls to HP_PORTS_SPARSE_BACK (hysteresis:
 * a conversion costs O(bitmap words) and is paid for by >= 48 releases).
 * A record with count 0 is removed.
 *
 * Memory: 32 bytes per destination record / table load (1/8 .. 3/4; the
 * table doubles above 3/4 and halves below 1/8), plus
 * 2 * set_cap bytes (<= 4 bytes per port) for a SET or size/8 bytes for a
 * BITMAP (8,064 bytes at 64,512 ports: 0.13 byte per port when full).
 *
 * Errors: functions that may allocate return HP_PORTS_ENOMEM (-2) on malloc
 * failure and leave the pool unchanged.
 */
#ifndef HP_PORTS_H
#define HP_PORTS_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define HP_PORTS_FULL    (-1)   /* no free port toward that destination */
#define HP_PORTS_ENOMEM  (-2)
#define HP_PORTS_NOT_HELD (-1)  /* release: not allocated toward that destination */

#define HP_PD_EMPTY  0
#define HP_PD_INLINE 1
#define HP_PD_SET    2
#define HP_PD_BITMAP 3

#define HP_PORTS_INLINE_MAX 4
#define HP_PORTS_PROBE_LIMIT 64
#define HP_PORTS_SPARSE_BACK 16
#define HP_PORTS_SET_EMPTY 0xFFFFu

/* ------------------------------------------------------------------ hash */

static inline uint64_t hp_port_mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

/* Fold a non-negative integer given as `n` little-endian 64-bit words; high
 * zero words are not folded (the integer's width decides), at least one word
 * is. */
static inline uint64_t hp_port_fold_words(uint64_t h, const uint64_t *w, int n)
{
    while (n > 1 && w[n - 1] == 0)
        n--;
    for (int i = 0; i < n; i++)
        h = hp_port_mix64(h ^ w[i]);
    return h;
}

/* Fold a 128-bit integer (hi:lo): one word when hi == 0, two otherwise. */
static inline uint64_t hp_port_fold128(uint64_t h, uint64_t hi, uint64_t lo)
{
    h = hp_port_mix64(h ^ lo);
    if (hi)
        h = hp_port_mix64(h ^ hi);
    return h;
}

/* The reference's port_hash with the hint as words. */
static inline uint64_t hp_port_hash(uint64_t seed, const uint64_t *hint, int nhint, uint64_t proto,
                                    uint64_t dport, uint64_t dst_hi, uint64_t dst_lo)
{
    uint64_t h = hp_port_mix64(seed);
    h = hp_port_fold_words(h, hint, nhint);
    h = hp_port_mix64(h ^ proto);
    h = hp_port_mix64(h ^ dport);
    return hp_port_fold128(h, dst_hi, dst_lo);
}

/* The dataplane's hint for an IPv4 sandbox: (src << 16) | sport, one word. */
static inline uint64_t hp_port_hash_v4(uint64_t seed, uint32_t src, uint16_t sport, uint8_t proto,
                                       uint16_t dport, uint32_t dst)
{
    uint64_t hint = ((uint64_t)src << 16) | sport;
    uint64_t h = hp_port_mix64(hp_port_mix64(seed) ^ hint);
    h = hp_port_mix64(h ^ proto);
    h = hp_port_mix64(h ^ dport);
    return hp_port_mix64(h ^ dst);
}

/* The dataplane's hint for an IPv6 sandbox, (src << 16) | sport as up to 3
 * words; returns the word count to pass to hp_port_hash. */
static inline int hp_port_hint_v6(uint64_t src_hi, uint64_t src_lo, uint16_t sport, uint64_t out[3])
{
    out[0] = (src_lo << 16) | sport;
    out[1] = (src_hi << 16) | (src_lo >> 48);
    out[2] = src_hi >> 48;
    return 3;  /* hp_port_fold_words drops the high zero words */
}

/* ----------------------------------------------------------- structures */

typedef struct {
    uint64_t dst_lo, dst_hi;
    uint16_t dport;
    uint8_t proto;
    uint8_t kind;        /* HP_PD_* ; HP_PD_EMPTY marks a free table slot */
    uint16_t count;      /* live offsets (<= size <= 65535) */
    uint16_t set_log;    /* SET: log2 of the set capacity */
    union {
        uint16_t inl[HP_PORTS_INLINE_MAX];
        uint16_t *set;
        uint64_t *bits;
    } u;
} hp_pdest;

typedef struct {
    uint32_t lo, hi, size;
    uint32_t bm_words;       /* ceil(size / 64) */
    uint32_t set_max;        /* a SET holds at most this many offsets */
    uint64_t seed;           /* the 64-bit seed (reference: seed & (2**64-1)) */
    uint64_t count;          /* live allocations over all destinations */
    hp_pdest *tab;
    uint64_t cap;            /* power of two */
    uint64_t mask;
    uint64_t ndest;
    uint64_t heap_bytes;     /* bytes of sets and bitmaps */
    uint64_t n_bitmaps;      /* destinations held as a bitmap now */
} hp_ports;

static inline uint64_t hp_pdest_hash(uint8_t proto, uint16_t dport, uint64_t dst_hi, uint64_t dst_lo)
{
    uint64_t h = hp_port_mix64(dst_lo ^ ((uint64_t)proto << 56) ^ ((uint64_t)dport << 40));
    return hp_port_mix64(h ^ dst_hi);
}

static inline int hp_ports_init(hp_ports *p, uint32_t lo, uint32_t hi, uint64_t seed)
{
    memset(p, 0, sizeof *p);
    if (lo < 1 || hi > 65535 || lo > hi)
        return -1;
    p->lo = lo;
    p->hi = hi;
    p->size = hi - lo + 1;
    p->bm_words = (p->size + 63) / 64;
    p->set_max = p->bm_words * 2;  /* a set of 2*n cap costs 4n bytes = the bitmap */
    if (p->set_max < HP_PORTS_INLINE_MAX)
        p->set_max = HP_PORTS_INLINE_MAX;
    p->seed = seed;
    p->cap = 16;
    p->mask = 15;
    p->tab = (hp_pdest *)calloc(p->cap, sizeof(hp_pdest));
    return p->tab ? 0 : HP_PORTS_ENOMEM;
}

static inline void hp_pdest_free_storage(hp_ports *p, hp_pdest *d)
{
    if (d->kind == HP_PD_SET) {
        free(d->u.set);
        p->heap_bytes -= (uint64_t)2 << d->set_log;
    } else if (d->kind == HP_PD_BITMAP) {
        free(d->u.bits);
        p->heap_bytes -= (uint64_t)8 * p->bm_words;
        p->n_bitmaps--;
    }
}

static inline void hp_ports_free(hp_ports *p)
{
    if (p->tab) {
        for (uint64_t i = 0; i < p->cap; i++)
            if (p->tab[i].kind != HP_PD_EMPTY)
                hp_pdest_free_storage(p, &p->tab[i]);
        free(p->tab);
    }
    p->tab = NULL;
    p->cap = p->mask = p->ndest = p->count = 0;
}

/* A deep copy of `src` into `dst` (not initialised; free it with hp_ports_free).
 * On HP_PORTS_ENOMEM `dst` is left empty (tab NULL). */
static inline int hp_ports_copy(hp_ports *dst, const hp_ports *src)
{
    *dst = *src;
    dst->tab = (hp_pdest *)malloc(src->cap * sizeof(hp_pdest));
    if (!dst->tab) {
        memset(dst, 0, sizeof *dst);
        return HP_PORTS_ENOMEM;
    }
    memcpy(dst->tab, src->tab, src->cap * sizeof(hp_pdest));
    for (uint64_t i = 0; i < src->cap; i++) {
        hp_pdest *d = &dst->tab[i];
        size_t bytes;
        if (d->kind == HP_PD_SET)
            bytes = (size_t)2 << d->set_log;
        else if (d->kind == HP_PD_BITMAP)
            bytes = (size_t)8 * src->bm_words;
        else
            continue;
        void *m = malloc(bytes);
        if (!m) {
            for (uint64_t j = i; j < src->cap; j++)  /* still the source's storage: not ours to free */
                dst->tab[j].kind = HP_PD_EMPTY;
            hp_ports_free(dst);
            memset(dst, 0, sizeof *dst);
            return HP_PORTS_ENOMEM;
        }
        memcpy(m, d->kind == HP_PD_SET ? (const void *)d->u.set : (const void *)d->u.bits, bytes);
        if (d->kind == HP_PD_SET)
            d->u.set = (uint16_t *)m;
        else
            d->u.bits = (uint64_t *)m;
    }
    return 0;
}

/* Bytes the pool holds: the destination table plus sets and bitmaps. */
static inline uint64_t hp_ports_memory(const hp_ports *p)
{
    return sizeof(hp_ports) + p->cap * sizeof(hp_pdest) + p->heap_bytes;
}

/* ------------------------------------------------------ destination map */

static inline hp_pdest *hp_ports_find(const hp_ports *p, uint8_t proto, uint16_t dport, uint64_t dst_hi,
                                      uint64_t dst_lo)
{
    uint64_t i = hp_pdest_hash(proto, dport, dst_hi, dst_lo) & p->mask;
    for (;;) {
        hp_pdest *d = &p->tab[i];
        if (d->kind == HP_PD_EMPTY)
            return NULL;
        if (d->dst_lo == dst_lo && d->dst_hi == dst_hi && d->dport == dport && d->proto == proto)
            return d;
        i = (i + 1) & p->mask;
    }
}

static inline int hp_ports_resize(hp_ports *p, uint64_t ncap)
{
    uint64_t nmask = ncap - 1;
    hp_pdest *nt = (hp_pdest *)calloc(ncap, sizeof(hp_pdest));
    if (!nt)
        return HP_PORTS_ENOMEM;
    for (uint64_t j = 0; j < p->cap; j++) {
        hp_pdest *d = &p->tab[j];
        if (d->kind == HP_PD_EMPTY)
            continue;
        uint64_t i = hp_pdest_hash(d->proto, d->dport, d->dst_hi, d->dst_lo) & nmask;
        while (nt[i].kind != HP_PD_EMPTY)
            i = (i + 1) & nmask;
        nt[i] = *d;
    }
    free(p->tab);
    p->tab = nt;
    p->cap = ncap;
    p->mask = nmask;
    return 0;
}

/* Remove a (count 0) record: free its storage and shift the cluster back. */
static inline void hp_ports_remove_dest(hp_ports *p, hp_pdest *d)
{
    hp_pdest_free_storage(p, d);
    uint64_t i = (uint64_t)(d - p->tab), j = i;
    for (;;) {
        j = (j + 1) & p->mask;
        hp_pdest *e = &p->tab[j];
        if (e->kind == HP_PD_EMPTY)
            break;
        uint64_t home = hp_pdest_hash(e->proto, e->dport, e->dst_hi, e->dst_lo) & p->mask;
        /* e may move to i when its home is not cyclically in (i, j] */
        if (((j - home) & p->mask) >= ((j - i) & p->mask)) {
            p->tab[i] = *e;
            i = j;
        }
    }
    memset(&p->tab[i], 0, sizeof(hp_pdest));
    p->ndest--;
}

/* ------------------------------------------------------------ the sets */

static inline uint64_t hp_pset_slot(uint16_t off, int log)
{
    return (uint64_t)((uint32_t)off * 0x9E3779B1u) >> (32 - log);
}

static inline int hp_pset_has(const uint16_t *s, int log, uint16_t off)
{
    uint64_t m = ((uint64_t)1 << log) - 1, i = hp_pset_slot(off, log);
    for (;;) {
        if (s[i] == off)
            return 1;
        if (s[i] == HP_PORTS_SET_EMPTY)
            return 0;
        i = (i + 1) & m;
    }
}

static inline void hp_pset_put(uint16_t *s, int log, uint16_t off)
{
    uint64_t m = ((uint64_t)1 << log) - 1, i = hp_pset_slot(off, log);
    while (s[i] != HP_PORTS_SET_EMPTY)
        i = (i + 1) & m;
    s[i] = off;
}

static inline int hp_pset_del(uint16_t *s, int log, uint16_t off)
{
    uint64_t m = ((uint64_t)1 << log) - 1, i = hp_pset_slot(off, log);
    for (;;) {
        if (s[i] == off)
            break;
        if (s[i] == HP_PORTS_SET_EMPTY)
            return 0;
        i = (i + 1) & m;
    }
    uint64_t j = i;
    for (;;) {
        j = (j + 1) & m;
        if (s[j] == HP_PORTS_SET_EMPTY)
            break;
        uint64_t home = hp_pset_slot(s[j], log);
        if (((j - home) & m) >= ((j - i) & m)) {
            s[i] = s[j];
            i = j;
        }
    }
    s[i] = HP_PORTS_SET_EMPTY;
    return 1;
}

/* Write the live offsets of d into out[] (d->count of them, any order). */
static inline void hp_pdest_collect(const hp_ports *p, const hp_pdest *d, uint16_t *out)
{
    uint32_t n = 0;
    if (d->kind == HP_PD_INLINE) {
        for (uint32_t k = 0; k < d->count; k++)
            out[n++] = d->u.inl[k];
    } else if (d->kind == HP_PD_SET) {
        uint64_t c = (uint64_t)1 << d->set_log;
        for (uint64_t k = 0; k < c; k++)
            if (d->u.set[k] != HP_PORTS_SET_EMPTY)
                out[n++] = d->u.set[k];
    } else if (d->kind == HP_PD_BITMAP) {
        for (uint32_t w = 0; w < p->bm_words; w++) {
            uint64_t x = d->u.bits[w];
            if (w == p->bm_words - 1 && (p->size & 63))
                x &= (((uint64_t)1 << (p->size & 63)) - 1);
            while (x) {
                out[n++] = (uint16_t)(w * 64 + __builtin_ctzll(x));
                x &= x - 1;
            }
        }
    }
}

/* Re-store d's `count` offsets (given in buf) as `kind` (set_log for SET).
 * Returns 0 or ENOMEM (d unchanged then). */
static inline int hp_pdest_rebuild(hp_ports *p, hp_pdest *d, int kind, int set_log, const uint16_t *buf)
{
    uint16_t *ns = NULL;
    uint64_t *nb = NULL;
    if (kind == HP_PD_SET) {
        ns = (uint16_t *)malloc((size_t)2 << set_log);
        if (!ns)
            return HP_PORTS_ENOMEM;
        memset(ns, 0xFF, (size_t)2 << set_log);
        for (uint32_t k = 0; k < d->count; k++)
            hp_pset_put(ns, set_log, buf[k]);
    } else if (kind == HP_PD_BITMAP) {
        nb = (uint64_t *)calloc(p->bm_words, 8);
        if (!nb)
            return HP_PORTS_ENOMEM;
        if (p->size & 63)
            nb[p->bm_words - 1] = ~(((uint64_t)1 << (p->size & 63)) - 1);
        for (uint32_t k = 0; k < d->count; k++)
            nb[buf[k] >> 6] |= (uint64_t)1 << (buf[k] & 63);
    }
    hp_pdest_free_storage(p, d);
    d->kind = (uint8_t)kind;
    if (kind == HP_PD_INLINE) {
        for (uint32_t k = 0; k < d->count; k++)
            d->u.inl[k] = buf[k];
    } else if (kind == HP_PD_SET) {
        d->u.set = ns;
        d->set_log = (uint16_t)set_log;
        p->heap_bytes += (uint64_t)2 << set_log;
    } else {
        d->u.bits = nb;
        p->heap_bytes += (uint64_t)8 * p->bm_words;
        p->n_bitmaps++;
    }
    return 0;
}

/* The smallest set capacity (log2) holding n at load <= 1/2. */
static inline int hp_pset_log_for(uint32_t n)
{
    int log = 4;
    while (((uint64_t)1 << log) < (uint64_t)2 * n)
        log++;
    return log;
}

/* Convert d to the right sparse/dense form for `want` offsets (count + 1
 * before an insert).  `force_bitmap`: a search ran too long.  The offsets
 * go through a temporary buffer. */
static inline int hp_pdest_reshape(hp_ports *p, hp_pdest *d, uint32_t want, int force_bitmap)
{
    int kind, log = 0;
    if (force_bitmap || want > p->set_max)
        kind = HP_PD_BITMAP;
    else if (want <= HP_PORTS_INLINE_MAX && d->kind != HP_PD_SET)
        kind = HP_PD_INLINE;
    else {
        kind = HP_PD_SET;
        log = hp_pset_log_for(want);
    }
    if (kind == d->kind && (kind != HP_PD_SET || log == d->set_log))
        return 0;
    uint16_t stackbuf[256];
    uint16_t *buf = d->count <= 256 ? stackbuf : (uint16_t *)malloc((size_t)2 * d->count);
    if (!buf)
        return HP_PORTS_ENOMEM;
    hp_pdest_collect(p, d, buf);
    int r = hp_pdest_rebuild(p, d, kind, log, buf);
    if (buf != stackbuf)
        free(buf);
    return r;
}

/* ------------------------------------------------------------ searching */

/* First zero bit at or after `start`, wrapping; the caller knows one exists. */
static inline uint32_t hp_bitmap_find_free(const uint64_t *b, uint32_t nwords, uint32_t start)
{
    uint32_t w = start >> 6;
    uint64_t x = ~b[w] & (~(uint64_t)0 << (start & 63));
    if (x)
        return w * 64 + (uint32_t)__builtin_ctzll(x);
    for (uint32_t k = w + 1; k < nwords; k++)
        if (~b[k])
            return k * 64 + (uint32_t)__builtin_ctzll(~b[k]);
    for (uint32_t k = 0; k <= w; k++)
        if (~b[k])
            return k * 64 + (uint32_t)__builtin_ctzll(~b[k]);
    return 0; /* unreachable when count < size */
}

static inline int hp_pdest_holds(const hp_ports *p, const hp_pdest *d, uint32_t off)
{
    switch (d->kind) {
    case HP_PD_INLINE:
        for (uint32_t k = 0; k < d->count; k++)
            if (d->u.inl[k] == off)
                return 1;
        return 0;
    case HP_PD_SET:
        return hp_pset_has(d->u.set, d->set_log, (uint16_t)off);
    case HP_PD_BITMAP:
        return off < p->size && (d->u.bits[off >> 6] >> (off & 63)) & 1;
    }
    return 0;
}

/* Take the first free offset at or after start (wrapping); count < size. */
static inline int32_t hp_pdest_claim(hp_ports *p, hp_pdest *d, uint32_t start)
{
    int r;
    if (d->kind != HP_PD_BITMAP) {
        /* make room first so the insert cannot fail after the search */
        uint32_t want = (uint32_t)d->count + 1;
        if ((d->kind == HP_PD_INLINE && want > HP_PORTS_INLINE_MAX) ||
            (d->kind == HP_PD_SET && (uint64_t)2 * want > ((uint64_t)1 << d->set_log))) {
            if ((r = hp_pdest_reshape(p, d, want, 0)) != 0)
                return r;
        }
    }
    if (d->kind != HP_PD_BITMAP) {
        uint32_t off = start;
        for (int k = 0; k < HP_PORTS_PROBE_LIMIT; k++) {
            if (!hp_pdest_holds(p, d, off)) {
                if (d->kind == HP_PD_INLINE)
                    d->u.inl[d->count] = (uint16_t)off;
                else
                    hp_pset_put(d->u.set, d->set_log, (uint16_t)off);
                d->count++;
                return (int32_t)off;
            }
            if (++off == p->size)
                off = 0;
        }
        if ((r = hp_pdest_reshape(p, d, (uint32_t)d->count + 1, 1)) != 0)
            return r;
    }
    uint32_t off = hp_bitmap_find_free(d->u.bits, p->bm_words, start);
    d->u.bits[off >> 6] |= (uint64_t)1 << (off & 63);
    d->count++;
    return (int32_t)off;
}

/* ------------------------------------------------------------- the API */

/* Allocate toward (proto, dst, dport) with the search start given by a
 * port_hash value.  Returns the port, HP_PORTS_FULL, or HP_PORTS_ENOMEM. */
static inline int32_t hp_ports_allocate_hashed(hp_ports *p, uint8_t proto, uint16_t dport, uint64_t dst_hi,
                                               uint64_t dst_lo, uint64_t hash)
{
    hp_pdest *d = hp_ports_find(p, proto, dport, dst_hi, dst_lo);
    if (d == NULL) {
        if ((p->ndest + 1) * 4 > p->cap * 3 && hp_ports_resize(p, p->cap * 2) != 0)
            return HP_PORTS_ENOMEM;
        uint64_t i = hp_pdest_hash(proto, dport, dst_hi, dst_lo) & p->mask;
        while (p->tab[i].kind != HP_PD_EMPTY)
            i = (i + 1) & p->mask;
        d = &p->tab[i];
        d->dst_lo = dst_lo;
        d->dst_hi = dst_hi;
        d->dport = dport;
        d->proto = proto;
        d->kind = HP_PD_INLINE;
        d->count = 1;
        d->u.inl[0] = (uint16_t)(hash % p->size);
        p->ndest++;
        p->count++;
        return (int32_t)(p->lo + d->u.inl[0]);
    }
    if (d->count >= p->size)
        return HP_PORTS_FULL;
    int32_t off = hp_pdest_claim(p, d, (uint32_t)(hash % p->size));
    if (off < 0)
        return off;
    p->count++;
    return (int32_t)p->lo + off;
}

/* allocate(proto, dst_ip, dst_port, hint) with the hint as words. */
static inline int32_t hp_ports_allocate(hp_ports *p, uint8_t proto, uint16_t dport, uint64_t dst_hi,
                                        uint64_t dst_lo, const uint64_t *hint, int nhint)
{
    return hp_ports_allocate_hashed(p, proto, dport, dst_hi, dst_lo,
                                    hp_port_hash(p->seed, hint, nhint, proto, dport, dst_hi, dst_lo));
}

/* The IPv4 fast path: hint = (src << 16) | sport, as the dataplane passes. */
static inline int32_t hp_ports_allocate_v4(hp_ports *p, uint8_t proto, uint32_t src, uint16_t sport,
                                           uint32_t dst, uint16_t dport)
{
    return hp_ports_allocate_hashed(p, proto, dport, 0, dst,
                                    hp_port_hash_v4(p->seed, src, sport, proto, dport, dst));
}

static inline uint32_t hp_ports_count_for(const hp_ports *p, uint8_t proto, uint16_t dport, uint64_t dst_hi,
                                          uint64_t dst_lo)
{
    const hp_pdest *d = hp_ports_find(p, proto, dport, dst_hi, dst_lo);
    return d ? d->count : 0;
}

static inline int hp_ports_can_allocate(const hp_ports *p, uint8_t proto, uint16_t dport, uint64_t dst_hi,
                                        uint64_t dst_lo)
{
    return hp_ports_count_for(p, proto, dport, dst_hi, dst_lo) < p->size;
}

static inline int hp_ports_in_use(const hp_ports *p, uint8_t proto, uint32_t port, uint16_t dport,
                                  uint64_t dst_hi, uint64_t dst_lo)
{
    if (port < p->lo || port > p->hi)
        return 0;
    const hp_pdest *d = hp_ports_find(p, proto, dport, dst_hi, dst_lo);
    return d != NULL && hp_pdest_holds(p, d, port - p->lo);
}

/* Give a port back: 0, or HP_PORTS_NOT_HELD (pool unchanged).  Never fails
 * for lack of memory: a shrink that cannot allocate keeps the larger form. */
static inline int hp_ports_release(hp_ports *p, uint8_t proto, uint32_t port, uint16_t dport, uint64_t dst_hi,
                                   uint64_t dst_lo)
{
    if (port < p->lo || port > p->hi)
        return HP_PORTS_NOT_HELD;
    hp_pdest *d = hp_ports_find(p, proto, dport, dst_hi, dst_lo);
    if (d == NULL)
        return HP_PORTS_NOT_HELD;
    uint32_t off = port - p->lo;
    switch (d->kind) {
    case HP_PD_INLINE: {
        uint32_t k = 0;
        while (k < d->count && d->u.inl[k] != off)
            k++;
        if (k == d->count)
            return HP_PORTS_NOT_HELD;
        d->u.inl[k] = d->u.inl[d->count - 1];
        break;
    }
    case HP_PD_SET:
        if (!hp_pset_del(d->u.set, d->set_log, (uint16_t)off))
            return HP_PORTS_NOT_HELD;
        break;
    case HP_PD_BITMAP:
        if (!((d->u.bits[off >> 6] >> (off & 63)) & 1))
            return HP_PORTS_NOT_HELD;
        d->u.bits[off >> 6] &= ~((uint64_t)1 << (off & 63));
        break;
    }
    d->count--;
    p->count--;
    if (d->count == 0) {
        hp_ports_remove_dest(p, d);
        /* shrink the table at load < 1/8 (to load < 1/4); a failed shrink changes nothing */
        if (p->cap > 16 && p->ndest * 8 < p->cap)
            (void)hp_ports_resize(p, p->cap / 2);
        return 0;
    }
    /* shrink: BITMAP -> sparse at HP_PORTS_SPARSE_BACK; SET halves at 1/8 load */
    if (d->kind == HP_PD_BITMAP) {
        if (d->count <= HP_PORTS_SPARSE_BACK)
            (void)hp_pdest_reshape(p, d, d->count, 0);
    } else if (d->kind == HP_PD_SET) {
        if (d->count <= 2) {  /* back to INLINE (hysteresis: SET starts at 5) */
            uint16_t buf[HP_PORTS_INLINE_MAX];
            hp_pdest_collect(p, d, buf);
            (void)hp_pdest_rebuild(p, d, HP_PD_INLINE, 0, buf);
        } else if (d->set_log > 4 && (uint64_t)8 * d->count < ((uint64_t)1 << d->set_log)) {
            (void)hp_pdest_reshape(p, d, d->count, 0);
        }
    }
    return 0;
}

/* ------------------------------------------------------------ NAT pool */

/* A NAT gateway: one hp_ports per public address (seeds given by the
 * caller: the reference derives them from the gateway seed and the address),
 * at most per_destination live connections per destination per address. */
typedef struct {
    hp_ports *pools;
    uint32_t n;
    uint32_t per_destination;
    uint64_t error_port_allocation;
    uint64_t peak_connections;
    uint64_t count;
} hp_nat_ports;

static inline int hp_nat_init(hp_nat_ports *nat, uint32_t n, uint32_t lo, uint32_t hi, uint32_t per_destination,
                              const uint64_t *seeds)
{
    memset(nat, 0, sizeof *nat);
    nat->pools = (hp_ports *)calloc(n ? n : 1, sizeof(hp_ports));
    if (!nat->pools)
        return HP_PORTS_ENOMEM;
    for (uint32_t i = 0; i < n; i++) {
        int r = hp_ports_init(&nat->pools[i], lo, hi, seeds[i]);
        if (r != 0) {
            for (uint32_t j = 0; j <= i; j++)
                hp_ports_free(&nat->pools[j]);
            free(nat->pools);
            nat->pools = NULL;
            return r;
        }
    }
    nat->n = n;
    nat->per_destination = per_destination;
    return 0;
}

static inline void hp_nat_free(hp_nat_ports *nat)
{
    if (nat->pools) {
        for (uint32_t i = 0; i < nat->n; i++)
            hp_ports_free(&nat->pools[i]);
        free(nat->pools);
    }
    nat->pools = NULL;
    nat->n = 0;
}

/* A deep copy of `src` into `dst` (not initialised; free it with hp_nat_free). */
static inline int hp_nat_copy(hp_nat_ports *dst, const hp_nat_ports *src)
{
    *dst = *src;
    dst->pools = (hp_ports *)calloc(src->n ? src->n : 1, sizeof(hp_ports));
    if (!dst->pools) {
        memset(dst, 0, sizeof *dst);
        return HP_PORTS_ENOMEM;
    }
    for (uint32_t i = 0; i < src->n; i++) {
        if (hp_ports_copy(&dst->pools[i], &src->pools[i]) != 0) {
            for (uint32_t j = 0; j < i; j++)
                hp_ports_free(&dst->pools[j]);
            free(dst->pools);
            memset(dst, 0, sizeof *dst);
            return HP_PORTS_ENOMEM;
        }
    }
    return 0;
}

/* Try the addresses in order; *addr gets the index of the address used.
 * Returns the port, HP_PORTS_FULL (error_port_allocation + 1) or ENOMEM. */
static inline int32_t hp_nat_allocate(hp_nat_ports *nat, uint8_t proto, uint16_t dport, uint64_t dst_hi,
                                      uint64_t dst_lo, const uint64_t *hint, int nhint, uint32_t *addr)
{
    for (uint32_t i = 0; i < nat->n; i++) {
        hp_ports *p = &nat->pools[i];
        uint32_t c = hp_ports_count_for(p, proto, dport, dst_hi, dst_lo);
        if (c >= nat->per_destination || c >= p->size)
            continue;
        int32_t port = hp_ports_allocate(p, proto, dport, dst_hi, dst_lo, hint, nhint);
        if (port == HP_PORTS_ENOMEM)
            return port;
        if (port < 0)
            continue;
        nat->count++;
        if (nat->count > nat->peak_connections)
            nat->peak_connections = nat->count;
        *addr = i;
        return port;
    }
    nat->error_port_allocation++;
    return HP_PORTS_FULL;
}

static inline int hp_nat_release(hp_nat_ports *nat, uint32_t addr, uint8_t proto, uint32_t port, uint16_t dport,
                                 uint64_t dst_hi, uint64_t dst_lo)
{
    if (addr >= nat->n)
        return HP_PORTS_NOT_HELD;
    int r = hp_ports_release(&nat->pools[addr], proto, port, dport, dst_hi, dst_lo);
    if (r == 0)
        nat->count--;
    return r;
}

static inline int hp_nat_can_allocate(const hp_nat_ports *nat, uint8_t proto, uint16_t dport, uint64_t dst_hi,
                                      uint64_t dst_lo)
{
    for (uint32_t i = 0; i < nat->n; i++) {
        uint32_t c = hp_ports_count_for(&nat->pools[i], proto, dport, dst_hi, dst_lo);
        if (c < nat->per_destination && c < nat->pools[i].size)
            return 1;
    }
    return 0;
}

#endif /* HP_PORTS_H */
