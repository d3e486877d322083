/* Flow-log records in C: the core backend's store of VPC Flow Log records (the compiled twin of
 * the record dict of hyperplane/flowlogs.py FlowLogAggregator).
 *
 * A record is one (interface, source, destination, source port, destination port, protocol,
 * action, window) with its counters. Interface, addresses and extra fields are small integer ids
 * the Python side interns (flowlog.pxi); the window is the window's start in seconds.
 *
 * Records live in one array (`recs`); a record's index is its id, stable for its life (the core's
 * connection entries hold the ids of the records they count into). Flushed records leave free
 * slots, reused by later records (a free list through `next_free`). `index` is an open-addressing
 * hash table (linear probing, at most half full) of id + 1 (0: empty) beside the high half of the
 * record's hash (a probe reads only the records whose hash matches), rebuilt after a flush removed
 * records and when it grows. `seq` numbers records in creation order: a flush returns
 * its records by window, then by creation, as the Python aggregator does.
 */
#ifndef HP_FLOWLOG_H
#define HP_FLOWLOG_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hp_mem.h"

typedef struct {
    int64_t window;    /* window start, Unix seconds */
    int64_t start;     /* seconds of the first and last packet */
    int64_t end;
    uint64_t packets;
    uint64_t bytes;
    uint64_t seq;      /* creation order */
    uint32_t iface;    /* interned ids */
    uint32_t src;
    uint32_t dst;
    uint32_t extra;    /* 0: no extra fields */
    uint16_t sport;
    uint16_t dport;
    uint8_t proto;
    uint8_t action;    /* 0 ACCEPT, 1 REJECT */
    uint8_t flags;     /* tcp-flags (AWS's bits) */
    uint8_t live;      /* bit 0: live; bit 1: int addresses written as IPv6 (the first packet's "type") */
    uint32_t next_free;
} hp_rec;

typedef struct {
    hp_rec *recs;
    uint32_t top;       /* slots ever used */
    uint32_t cap;       /* slots allocated */
    uint32_t live;      /* live records */
    uint32_t free_head; /* first free slot + 1, 0: none */
    uint64_t *index;    /* (hash >> 32) << 32 | id + 1: a probe compares the hash's high half
                           before it reads a record */
    uint32_t icap;      /* power of two */
    uint64_t seq;
} hp_fl;

static inline uint64_t hp_fl_mix(uint64_t x) {
    x ^= x >> 30; x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27; x *= 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static inline uint64_t hp_fl_hash(const hp_rec *r) {
    uint64_t h = hp_fl_mix(((uint64_t)r->iface << 32) ^ r->src);
    h = hp_fl_mix(h ^ (((uint64_t)r->dst << 32) | ((uint64_t)r->sport << 16) | r->dport));
    h = hp_fl_mix(h ^ ((uint64_t)r->window * 4 + r->action) ^ ((uint64_t)r->proto << 56));
    return h;
}

static inline int hp_fl_same(const hp_rec *a, const hp_rec *b) {
    return a->iface == b->iface && a->src == b->src && a->dst == b->dst && a->sport == b->sport &&
           a->dport == b->dport && a->proto == b->proto && a->action == b->action && a->window == b->window;
}

static int hp_fl_init(hp_fl *t) {
    memset(t, 0, sizeof *t);
    t->icap = 1024;
    t->index = (uint64_t *)hp_big_alloc((size_t)t->icap * sizeof(uint64_t));
    return t->index ? 0 : -1;
}

static void hp_fl_free(hp_fl *t) {
    hp_big_free(t->recs, (size_t)t->cap * sizeof(hp_rec));
    hp_big_free(t->index, (size_t)t->icap * sizeof(uint64_t));
    memset(t, 0, sizeof *t);
}

static void hp_fl_place_h(hp_fl *t, uint32_t id, uint64_t h) {
    uint32_t mask = t->icap - 1, s = (uint32_t)h & mask;
    while (t->index[s]) s = (s + 1) & mask;
    t->index[s] = (h & 0xFFFFFFFF00000000ull) | (id + 1);
}

static void hp_fl_place(hp_fl *t, uint32_t id) {
    hp_fl_place_h(t, id, hp_fl_hash(&t->recs[id]));
}

/* Rebuild the index at capacity `icap` (a power of two above twice the live records). */
static int hp_fl_reindex(hp_fl *t, uint32_t icap) {
    uint64_t *index = (uint64_t *)hp_big_alloc((size_t)icap * sizeof(uint64_t));
    uint32_t i;
    if (!index) return -1;
    hp_big_free(t->index, (size_t)t->icap * sizeof(uint64_t));
    t->index = index;
    t->icap = icap;
    /* in blocks: the slots of a block's records are prefetched before any is written (an index
     * larger than the cache costs a miss per record; this way the misses overlap) */
    for (i = 0; i < t->top; i += 16) {
        uint64_t h[16];
        uint32_t j, n = t->top - i < 16 ? t->top - i : 16;
        for (j = 0; j < n; j++) {
            if (!t->recs[i + j].live) continue;
            h[j] = hp_fl_hash(&t->recs[i + j]);
#if defined(__GNUC__)
            __builtin_prefetch(&index[(uint32_t)h[j] & (icap - 1)], 1);
#endif
        }
        for (j = 0; j < n; j++)
            if (t->recs[i + j].live) hp_fl_place_h(t, i + j, h[j]);
    }
    return 0;
}

/* The id of the record with `key`'s key fields, or -1. */
static int64_t hp_fl_find(const hp_fl *t, const hp_rec *key) {
    uint64_t h = hp_fl_hash(key), tag = h & 0xFFFFFFFF00000000ull, slot;
    uint32_t mask = t->icap - 1, s = (uint32_t)h & mask, ref;
    while ((slot = t->index[s]) != 0) {
        ref = (uint32_t)slot;
        if ((slot & 0xFFFFFFFF00000000ull) == tag && hp_fl_same(&t->recs[ref - 1], key)) return (int64_t)ref - 1;
        s = (s + 1) & mask;
    }
    return -1;
}

/* Prefetch the index slot a lookup of `key` starts at (a caller about to look up several keys
 * overlaps their cache misses). */
static inline void hp_fl_prefetch(const hp_fl *t, const hp_rec *key) {
#if defined(__GNUC__)
    __builtin_prefetch(&t->index[(uint32_t)hp_fl_hash(key) & (t->icap - 1)]);
#else
    (void)t; (void)key;
#endif
}

/* The record a packet at `second` goes into: found (its time span stretched to `second`) or
 * made (`key`'s key fields and extra, no packets yet). Returns its id, -1 when out of memory. */
static int64_t hp_fl_get(hp_fl *t, const hp_rec *key, int64_t second) {
    int64_t found = hp_fl_find(t, key);
    uint32_t id;
    hp_rec *r;
    if (found >= 0) {
        r = &t->recs[found];
        if (second > r->end) r->end = second;
        else if (second < r->start) r->start = second;
        return found;
    }
    if ((uint64_t)(t->live + 1) * 2 > t->icap) {
        if (t->icap > 0x40000000u || hp_fl_reindex(t, t->icap * 2) != 0) return -1;
    }
    if (t->free_head) {
        id = t->free_head - 1;
        t->free_head = t->recs[id].next_free;
    } else {
        if (t->top == t->cap) {
            uint32_t cap = t->cap ? t->cap * 2 : 1024;
            hp_rec *recs;
            if (t->cap >= 0x80000000u) return -1;
            recs = (hp_rec *)hp_big_resize(t->recs, (size_t)t->cap * sizeof(hp_rec), (size_t)cap * sizeof(hp_rec));
            if (!recs) return -1;
            t->recs = recs;
            t->cap = cap;
        }
        id = t->top++;
    }
    r = &t->recs[id];
    *r = *key;
    r->start = r->end = second;
    r->packets = r->bytes = 0;
    r->flags = 0;
    r->seq = t->seq++;
    r->live = 1 | (key->live & 2);
    r->next_free = 0;
    t->live++;
    hp_fl_place(t, id);
    return id;
}

/* The start of the window (`interval` seconds) second floor(ts) is in; that second in *second. */
static inline int64_t hp_fl_window(double ts, int64_t interval, int64_t *second) {
    int64_t sec = (int64_t)floor(ts), rem = sec % interval;
    if (rem < 0) rem += interval;
    *second = sec;
    return sec - rem;
}

/* The records of a packet at `ts` at `n` interned log points (`keys`, each with its `modes`: 1 /
 * 2 the source port is the connection's ENI / NAT gateway port, 4 / 8 the same for the
 * destination port), for a connection of `proto` with these ports: found or made (hp_fl_get),
 * their ids in `out`. The keys of up to 8 points are made first and their index slots prefetched,
 * so that their cache misses overlap. Returns 0, or -1 when out of memory. */
static inline int hp_fl_points(hp_fl *t, const hp_rec *keys, const uint8_t *modes, uint32_t n, uint8_t proto,
                               uint16_t eni_port, uint16_t nat_port, int64_t interval, double ts, uint32_t *out) {
    int64_t second, window = hp_fl_window(ts, interval, &second), got;
    hp_rec block[8];
    uint32_t i, j, m;
    for (i = 0; i < n; i += m) {
        m = n - i < 8 ? n - i : 8;
        for (j = 0; j < m; j++) {
            hp_rec *key = &block[j];
            uint8_t mode = modes[i + j];
            *key = keys[i + j];
            key->window = window;
            key->proto = proto;
            if (mode & 1) key->sport = eni_port;
            else if (mode & 2) key->sport = nat_port;
            if (mode & 4) key->dport = eni_port;
            else if (mode & 8) key->dport = nat_port;
            hp_fl_prefetch(t, key);
        }
        for (j = 0; j < m; j++) {
            got = hp_fl_get(t, &block[j], second);
            if (got < 0) return -1;
            out[i + j] = (uint32_t)got;
        }
    }
    return 0;
}

/* Count `packets` packets of `bytes` bytes, the last at second `end`, with tcp-flags bits
 * `flags`, into record `id`. */
static inline void hp_fl_count(hp_fl *t, uint32_t id, uint64_t packets, uint64_t bytes, int64_t end,
                               uint8_t flags) {
    hp_rec *r = &t->recs[id];
    r->packets += packets;
    r->bytes += bytes;
    if (end > r->end) r->end = end;
    r->flags |= flags;
}

static int hp_fl_cmp(const void *a, const void *b) {
    const hp_rec *x = (const hp_rec *)a, *y = (const hp_rec *)b;
    if (x->window != y->window) return x->window < y->window ? -1 : 1;
    return x->seq < y->seq ? -1 : (x->seq > y->seq);
}

/* Sort by window, then creation: nothing to do when they are in that order already (records made
 * in one window into slots never reused: a replay's flush at its end). */
static void hp_fl_sort(hp_rec *recs, uint32_t n) {
    uint32_t i;
    for (i = 1; i < n; i++)
        if (hp_fl_cmp(&recs[i - 1], &recs[i]) > 0) break;
    if (i < n) qsort(recs, n, sizeof(hp_rec), hp_fl_cmp);
}

/* Remove the records whose window ended at or before `before` (all of them when `all`) and
 * return them, by window then creation, in an array of `*n` records, a block of `*bytes` bytes
 * (hp_big_free(*out, *bytes) frees it); NULL when none or out of memory: `*n` is then 0 and -1 is
 * returned for the latter. */
static int hp_fl_flush(hp_fl *t, double before, int all, int64_t interval, hp_rec **out, uint32_t *n,
                       size_t *bytes) {
    uint32_t i, k = 0, count = 0;
    size_t size;
    hp_rec *got;
    *out = NULL;
    *n = 0;
    *bytes = 0;
    for (i = 0; i < t->top; i++)
        if (t->recs[i].live && (all || (double)(t->recs[i].window + interval) <= before)) count++;
    if (!count) return 0;
    if (count == t->top) {  /* every slot, all live: the array itself is the result (no copy) */
        got = t->recs;
        size = (size_t)t->cap * sizeof(hp_rec);
        /* a new array of the same size: the next windows' records, about as many, fill it without
         * growing it again (when that fails, the table starts over empty) */
        t->recs = (hp_rec *)hp_big_alloc(size);
        t->cap = t->recs ? t->cap : 0;
        t->top = t->live = t->free_head = 0;
        hp_fl_sort(got, count);
        if (hp_fl_reindex(t, t->icap) != 0) {
            hp_big_free(got, size);
            return -1;
        }
        *out = got;
        *n = count;
        *bytes = size;
        return 0;
    }
    size = (size_t)count * sizeof(hp_rec);
    got = (hp_rec *)hp_big_alloc(size);
    if (!got) return -1;
    for (i = 0; i < t->top; i++) {
        hp_rec *r = &t->recs[i];
        if (r->live && (all || (double)(r->window + interval) <= before)) {
            got[k++] = *r;
            r->live = 0;
            r->next_free = t->free_head;
            t->free_head = i + 1;
        }
    }
    t->live -= count;
    hp_fl_sort(got, count);
    if (t->live == 0) {  /* start the slots over */
        t->top = 0;
        t->free_head = 0;
    }
    if (hp_fl_reindex(t, t->icap) != 0) {
        hp_big_free(got, size);
        return -1;
    }
    *out = got;
    *n = count;
    *bytes = size;
    return 0;
}

/* "00" .. "99": two digits a step */
static const char hp_fl_pairs[201] =
    "0001020304050607080910111213141516171819"
    "2021222324252627282930313233343536373839"
    "4041424344454647484950515253545556575859"
    "6061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* 10^k for k = 0 .. 19 */
static const uint64_t hp_fl_pow10[20] = {
    1ull, 10ull, 100ull, 1000ull, 10000ull, 100000ull, 1000000ull, 10000000ull, 100000000ull,
    1000000000ull, 10000000000ull, 100000000000ull, 1000000000000ull, 10000000000000ull,
    100000000000000ull, 1000000000000000ull, 10000000000000000ull, 100000000000000000ull,
    1000000000000000000ull, 10000000000000000000ull};

/* Decimal digits of v at p, written from the last one back; returns the end. */
static inline char *hp_fl_u64(char *p, uint64_t v) {
    unsigned bits, n;
    char *q;
    if (v < 10) {
        *p = (char)('0' + v);
        return p + 1;
    }
    bits = 64u - (unsigned)__builtin_clzll(v);
    n = (bits * 1233u) >> 12;      /* floor(log10(v)) or one more */
    n += (v >= hp_fl_pow10[n]);    /* the number of digits (n <= 19, v >= 10^n: n + 1 digits) */
    q = p + n;
    while (v >= 100) {
        unsigned r = (unsigned)(v % 100);
        v /= 100;
        q -= 2;
        memcpy(q, &hp_fl_pairs[2 * r], 2);
    }
    if (v >= 10) {
        q -= 2;
        memcpy(q, &hp_fl_pairs[2 * v], 2);
    } else {
        *--q = (char)('0' + v);
    }
    return p + n;
}

static inline char *hp_fl_i64(char *p, int64_t v) {
    if (v < 0) { *p++ = '-'; return hp_fl_u64(p, (uint64_t)0 - (uint64_t)v); }
    return hp_fl_u64(p, (uint64_t)v);
}

/* Record r in the default (version 2) format into buf: `prefix` ("2 account interface "), the
 * address texts, then the numbers, action and "OK"; no newline. buf needs plen + slen + dlen +
 * 120 bytes. Returns the length. */
static size_t hp_fl_line_v2(char *buf, const char *prefix, size_t plen, const char *src, size_t slen,
                            const char *dst, size_t dlen, const hp_rec *r) {
    char *p = buf;
    memcpy(p, prefix, plen); p += plen;
    memcpy(p, src, slen); p += slen;
    *p++ = ' ';
    memcpy(p, dst, dlen); p += dlen;
    *p++ = ' '; p = hp_fl_u64(p, r->sport);
    *p++ = ' '; p = hp_fl_u64(p, r->dport);
    *p++ = ' '; p = hp_fl_u64(p, r->proto);
    *p++ = ' '; p = hp_fl_u64(p, r->packets);
    *p++ = ' '; p = hp_fl_u64(p, r->bytes);
    *p++ = ' '; p = hp_fl_i64(p, r->start);
    *p++ = ' '; p = hp_fl_i64(p, r->end);
    memcpy(p, r->action ? " REJECT OK" : " ACCEPT OK", 10); p += 10;
    return (size_t)(p - buf);
}

#endif
