/* hp_flow.h: the flow table and the batch fast path of the core backend (hyperplane/core.py).
 *
 * Header-only C99, no global state; hp_flow_run() runs without the GIL.
 *
 * What it holds. One entry (hp_conn, 80 bytes) per connection the slow path (the reference
 * dataplane) tracks and taught us, plus an index of 8-byte slots (open addressing, linear
 * probing, backward-shift deletion, no tombstones) from an IPv4 5-tuple to (entry, key kind).
 * A slot keeps only a 32-bit tag of the 64-bit hash and the entry reference; a tag match is
 * confirmed against the key the entry implies for that kind, so slots stay small. Key kinds:
 *
 *   HP_KIND_OUT    sandbox -> remote    (ORIGINAL; the packet as the sandbox sent it)
 *   HP_KIND_REPLY  remote  -> sandbox   (REPLY, in the sandbox's view)
 *   HP_KIND_VPC    remote  -> ENI       (REPLY, in its customer-VPC form)
 *
 * Endpoints of an entry: 0 sandbox, 1 remote, 2 Hyperplane ENI (V2N address and port),
 * 3 NAT gateway public address and port (when the path crosses a NAT gateway).
 *
 * Learning. A kind is usable only once the slow path handled a packet of that kind and the
 * Python side checked that this table reproduces its result byte for byte (HP_K_LEARNED). The
 * learned facts are valid for one configuration generation (`gen`) and one flow-log window
 * (`window`); any other packet punts. A kind can also be learned ahead of its first packet
 * (HP_K_FIRST: the reply of a connection the slow path just opened, whose outcome the slow path
 * decided when it opened it); the fast path forwards that first packet and reports it in
 * `events`, from which the caller makes the flow-log records before it reads anything else.
 *
 * The fast path (hp_flow_run) forwards a packet only when everything it would do is known:
 * IPv4 TCP/UDP, parsed cleanly, not a fragment, time not going backwards, a learned kind of an
 * entry of the current generation and window, connection alive (ts < expires), NAT mapping not
 * idle, the TCP transition neither a reopen nor invalid under strict, counters not overflowing.
 * Else it stops and returns the packet's index: the caller runs the slow path for it and resumes
 * after it. The slow path's timers (other
 * connections' expiry, NAT idle) need no stop: they fire in time order whenever the slow path
 * next moves its clock, with the same results (a packet of a connection whose own timer ran out
 * stops here: the expiry and NAT idle checks above).
 *
 * Timed entries (HP_C_TIMED). For a connection the core opened from a plan without its slow path,
 * the table also keeps the timer (the earlier of its expiry and its NAT idle deadline) in a heap
 * (hp_flow_next_due); the caller releases such a connection when it is due, or hands it to its
 * slow path. For the other entries the caller keeps the timers, and `earlier` counts the packets
 * that moved an expiry earlier than the caller may know until it folds.
 *
 * Opens in the loop. A miss may be handed to the table's open_hook (hp_open.h: templates of planned
 * opens): when it opens the packet's connection, the entry is in the table and the packet goes on
 * as a hit; else the loop stops at it (HP_STOP_MISS).
 *
 * Memory. Entries grow by doubling (indices stay valid: the array is resized, not rebuilt); the
 * index is rehashed into twice its size when it would pass 3/4 full (a stop-the-world rehash,
 * amortised O(1) per key; size it up front with `expected` connections to avoid it). Arrays of
 * 2 MiB and more are in transparent huge pages (hp_mem.h).
 */
#ifndef HP_FLOW_H
#define HP_FLOW_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hp_csum.h"
#include "hp_mem.h"
#include "hp_parse.h"

#define HP_KIND_OUT 0
#define HP_KIND_REPLY 1
#define HP_KIND_VPC 2
#define HP_NKINDS 3

/* hp_conn.kind[k] bits */
#define HP_K_KEY 0x01      /* the kind's key is in the index */
#define HP_K_LEARNED 0x02  /* the kind's outcome is known for (gen, window) */
#define HP_K_ENI 0x04      /* emit on the eni tap */
#define HP_K_INET 0x08     /* emit on the internet tap */
#define HP_K_NATRW 0x10    /* the internet form crosses the NAT gateway translation */
#define HP_K_FIRST 0x20    /* learned ahead of its first packet: the fast path reports that packet
                              in `events` (its flow-log records are made from it) */

/* hp_conn.bits */
#define HP_C_LASTREPLY 0x01 /* UDP: the last packet went REPLY (Conn._last_dir) */
#define HP_C_NAT 0x02       /* the path holds a NAT gateway mapping (idle timeout applies) */
#define HP_C_DIRTY 0x04     /* changed by the fast path since the caller last folded it */
#define HP_C_OWNER_SHIFT 3  /* 2 bits: the reply kind whose packets the REPLY counters hold */
#define HP_C_TIMED 0x20     /* the table keeps the entry's timer (hp_flow_due): no one else tracks it */

#define HP_TAP_LAMBDA 0
#define HP_TAP_ENI 1
#define HP_TAP_INET 2
#define HP_NTAPS 3

#define HP_TCP_IV 0xFE
#define HP_TCP_IG 0xFF
#define HP_TCP_SYN_SENT 1
#define HP_TCP_TIME_WAIT 7
#define HP_TCP_CLOSE 8
#define HP_NSTATES 10
#define HP_UDP_STREAM 2

/* hp_flow_run's software pipeline (as VPP's): for packet i + HP_PIPE it parses the headers and
 * hashes the 5-tuple, prefetching the index slot; for packet i + HP_PIPE / 2 it reads that slot
 * and prefetches the entry; then it processes packet i. Only that last stage changes anything;
 * the first two read the input buffer and the index (which hp_flow_run never changes) and
 * prefetch, so a stop at packet i leaves every later packet untouched. Headers are prefetched
 * HP_PIPE packets before stage 1 reads them. */
#ifndef HP_PIPE
#define HP_PIPE 6
#endif
#define HP_RING 32 /* > HP_PIPE, a power of two */
#if HP_PIPE < 2 || HP_PIPE >= HP_RING
#error "HP_PIPE must be in [2, HP_RING)"
#endif

/* why hp_flow_run stopped */
enum {
    HP_STOP_END = 0, HP_STOP_PARSE, HP_STOP_MISS, HP_STOP_GEN, HP_STOP_UNLEARNED,
    HP_STOP_TIME, HP_STOP_EXPIRED, HP_STOP_WINDOW, HP_STOP_NAT_IDLE, HP_STOP_TCP, HP_STOP_OVERFLOW,
    HP_STOP_SPACE, HP_STOP_BOUNDS, HP_STOP_COUNT
};

typedef struct hp_conn {
    double expires;       /* Conn.expires (authoritative while installed) */
    double last_seen;     /* Conn.last_seen = Conn.nat_last_seen */
    uint32_t ip[4];       /* endpoints: sandbox, remote, eni, nat (host order) */
    uint16_t port[4];
    uint32_t pkts[2];     /* per direction, since the caller last folded the entry */
    uint32_t bytes[2];
    uint32_t window;      /* flow-log window index the learned kinds are valid in */
    uint32_t gen;         /* configuration generation they are valid for */
    uint16_t end_off[2];  /* per direction: second of the last packet - window start */
    uint8_t raw_flags[2]; /* per direction: OR of TCP flags */
    uint8_t aws_flags[2]; /* per direction: OR of the flow-log tcp-flags contributions */
    uint8_t kind[HP_NKINDS];
    uint8_t state;        /* TCP state (tcpstate.TcpState) or UDP state (UdpState) */
    uint8_t proto;        /* 6 or 17; 0 = a free entry */
    uint8_t bits;         /* HP_C_* */
    uint16_t exchanges;   /* UDP exchanges completed by the fast path since the last fold */
} hp_conn;

/* The first packet of a kind learned ahead (HP_K_FIRST): entry, kind and time. */
typedef struct hp_flow_event {
    double ts;
    uint32_t idx;
    uint32_t kind;
} hp_flow_event;

/* A queued timer of a timed entry (HP_C_TIMED): its due time when queued. Packed: 12 bytes. */
typedef struct __attribute__((packed)) hp_timer {
    double when;
    uint32_t idx;
} hp_timer;

typedef struct hp_slot {
    uint32_t tag; /* high 32 bits of the hash */
    uint32_t ref; /* (entry index + 1) << 2 | kind; 0 = empty */
} hp_slot;

typedef struct hp_flow_table {
    hp_conn *conns;
    uint32_t nconns, cap_conns; /* live entries, allocated entries */
    uint32_t free_head;         /* free list through ip[0], index + 1; 0 = empty */
    uint32_t top;               /* entries ever handed out (high-water mark) */
    hp_slot *slots;
    uint64_t mask;              /* slots - 1 */
    uint64_t used;              /* occupied slots */
    uint32_t *dirty;            /* entries with HP_C_DIRTY, in the order they became dirty */
    uint32_t ndirty, cap_dirty;
    hp_flow_event *events;      /* first packets of kinds learned ahead, in packet order */
    uint32_t nevents, cap_events;
    hp_timer *timers;           /* 4-ary min-heap of the timed entries' timers (stale ones too) */
    uint32_t ntimers, cap_timers;
    double *queued;             /* by entry: the time of its one live item in the heap (timed entries) */
    uint32_t cap_queued;
    uint64_t rehashes;
    /* configuration */
    uint32_t gen;
    uint32_t interval;          /* flow-log interval, seconds */
    int strict;
    double nat_idle;
    double now;                 /* the slow path's clock: packets before it punt */
    uint8_t tcp[2][6][HP_NSTATES];
    uint8_t fclass[256];
    uint8_t awsmap[256];
    double tcp_timeout[HP_NSTATES];
    double udp_timeout[3];
    uint32_t earlier;           /* packets that moved the expiry of an entry not timed here earlier,
                                   since the caller last folded every entry (hp_flow_run) */
    double earlier_min;         /* the earliest expiry they moved to (INFINITY when none) */
    /* a connection's first packet (a miss): open_hook(open_ctx, t, parsed packet, ts) may open it
     * (1: its entry is in the table now, the packet goes on; 0: the stop stays a miss) */
    int (*open_hook)(void *ctx, struct hp_flow_table *t, const hp_pkt *p, double ts);
    void *open_ctx;
    /* statistics since the caller last read them */
    uint64_t fast_packets;
    uint64_t stops[HP_STOP_COUNT];
} hp_flow_table;

/* --- hashing --------------------------------------------------------------------------------- */

static inline uint64_t hp_flow_mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 31;
    return x;
}

static inline uint64_t hp_flow_hash(uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport, uint8_t proto)
{
    uint64_t a = ((uint64_t)src << 32) | dst;
    uint64_t b = ((uint64_t)sport << 24) | ((uint64_t)dport << 8) | proto;
    return hp_flow_mix(a ^ hp_flow_mix(b + 0x9E3779B97F4A7C15ull));
}

/* The key an entry is reachable under for kind k. */
static inline void hp_conn_key(const hp_conn *c, int k, uint32_t *src, uint32_t *dst, uint16_t *sport, uint16_t *dport)
{
    if (k == HP_KIND_OUT) {
        *src = c->ip[0]; *sport = c->port[0]; *dst = c->ip[1]; *dport = c->port[1];
    } else if (k == HP_KIND_REPLY) {
        *src = c->ip[1]; *sport = c->port[1]; *dst = c->ip[0]; *dport = c->port[0];
    } else {
        *src = c->ip[1]; *sport = c->port[1]; *dst = c->ip[2]; *dport = c->port[2];
    }
}

static inline uint64_t hp_conn_hash(const hp_conn *c, int k)
{
    uint32_t s, d;
    uint16_t sp, dp;
    hp_conn_key(c, k, &s, &d, &sp, &dp);
    return hp_flow_hash(s, d, sp, dp, c->proto);
}

/* --- life cycle ------------------------------------------------------------------------------ */

static inline uint64_t hp_pow2_at_least(uint64_t n)
{
    uint64_t p = 16;
    while (p < n)
        p <<= 1;
    return p;
}

/* Sized for `expected` connections of up to 3 keys. Returns 0, or -1 when out of memory. */
static inline int hp_flow_init(hp_flow_table *t, uint32_t expected)
{
    uint64_t nslots;
    memset(t, 0, sizeof(*t));
    if (expected < 16)
        expected = 16;
    nslots = hp_pow2_at_least(((uint64_t)expected * 3 * 4 + 2) / 3);
    t->conns = (hp_conn *)hp_big_alloc((size_t)expected * sizeof(hp_conn));
    t->slots = (hp_slot *)hp_big_alloc((size_t)nslots * sizeof(hp_slot));
    t->dirty = (uint32_t *)hp_big_alloc(sizeof(uint32_t) * 64);
    if (!t->conns || !t->slots || !t->dirty) {
        hp_big_free(t->conns, (size_t)expected * sizeof(hp_conn));
        hp_big_free(t->slots, (size_t)nslots * sizeof(hp_slot));
        hp_big_free(t->dirty, sizeof(uint32_t) * 64);
        memset(t, 0, sizeof(*t));
        return -1;
    }
    t->cap_conns = expected;
    t->mask = nslots - 1;
    t->cap_dirty = 64;
    t->interval = 600;
    t->now = -INFINITY;
    t->earlier_min = INFINITY;
    return 0;
}

static inline void hp_flow_free(hp_flow_table *t)
{
    hp_big_free(t->conns, (size_t)t->cap_conns * sizeof(hp_conn));
    hp_big_free(t->slots, (size_t)(t->mask + 1) * sizeof(hp_slot));
    hp_big_free(t->dirty, (size_t)t->cap_dirty * sizeof(uint32_t));
    hp_big_free(t->events, (size_t)t->cap_events * sizeof(hp_flow_event));
    hp_big_free(t->timers, (size_t)t->cap_timers * sizeof(hp_timer));
    hp_big_free(t->queued, (size_t)t->cap_queued * sizeof(double));
    memset(t, 0, sizeof(*t));
}

static inline size_t hp_flow_memory(const hp_flow_table *t)
{
    return (size_t)t->cap_conns * sizeof(hp_conn) + (size_t)(t->mask + 1) * sizeof(hp_slot)
           + (size_t)t->cap_dirty * sizeof(uint32_t) + (size_t)t->cap_events * sizeof(hp_flow_event)
           + (size_t)t->cap_timers * sizeof(hp_timer) + (size_t)t->cap_queued * sizeof(double);
}

/* --- the index ------------------------------------------------------------------------------- */

static inline void hp_slot_put(hp_slot *slots, uint64_t mask, uint64_t h, uint32_t ref)
{
    uint64_t i = h & mask;
    while (slots[i].ref)
        i = (i + 1) & mask;
    slots[i].tag = (uint32_t)(h >> 32);
    slots[i].ref = ref;
}

static inline int hp_flow_rehash(hp_flow_table *t, uint64_t nslots)
{
    hp_slot *fresh = (hp_slot *)hp_big_alloc((size_t)nslots * sizeof(hp_slot));
    uint64_t i, mask = nslots - 1;
    if (!fresh)
        return -1;
    for (i = 0; i <= t->mask; i++) {
        uint32_t ref = t->slots[i].ref;
        if (ref) {
            const hp_conn *c = &t->conns[(ref >> 2) - 1];
            hp_slot_put(fresh, mask, hp_conn_hash(c, ref & 3), ref);
        }
    }
    hp_big_free(t->slots, (size_t)(t->mask + 1) * sizeof(hp_slot));
    t->slots = fresh;
    t->mask = mask;
    t->rehashes++;
    return 0;
}

/* The slot holding this 5-tuple, whose hp_flow_hash() is h, or -1. */
static inline int64_t hp_flow_find_h(const hp_flow_table *t, uint64_t h, uint32_t src, uint32_t dst,
                                     uint16_t sport, uint16_t dport, uint8_t proto)
{
    uint64_t i = h & t->mask;
    uint32_t tag = (uint32_t)(h >> 32);
    const hp_slot *slots = t->slots;
    for (;;) {
        uint32_t ref = slots[i].ref;
        if (!ref)
            return -1;
        if (slots[i].tag == tag) {
            const hp_conn *c = &t->conns[(ref >> 2) - 1];
            uint32_t s, d;
            uint16_t sp, dp;
            hp_conn_key(c, ref & 3, &s, &d, &sp, &dp);
            if (s == src && d == dst && sp == sport && dp == dport && c->proto == proto)
                return (int64_t)i;
        }
        i = (i + 1) & t->mask;
    }
}

/* The slot holding this 5-tuple, or -1. */
static inline int64_t hp_flow_find(const hp_flow_table *t, uint32_t src, uint32_t dst, uint16_t sport,
                                   uint16_t dport, uint8_t proto)
{
    return hp_flow_find_h(t, hp_flow_hash(src, dst, sport, dport, proto), src, dst, sport, dport, proto);
}

/* Empty slot i and close the gap (backward-shift deletion). */
static inline void hp_slot_delete(hp_flow_table *t, uint64_t i)
{
    uint64_t mask = t->mask, j = i;
    hp_slot *slots = t->slots;
    for (;;) {
        uint64_t home;
        uint32_t ref;
        j = (j + 1) & mask;
        ref = slots[j].ref;
        if (!ref)
            break;
        home = hp_conn_hash(&t->conns[(ref >> 2) - 1], ref & 3) & mask;
        /* slot j may move to i when its home is not cyclically in (i, j] */
        if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
            slots[i] = slots[j];
            i = j;
        }
    }
    slots[i].ref = 0;
    slots[i].tag = 0;
    t->used--;
}

/* Remove kind k's key of entry idx from the index (no-op when it is not there). */
static inline void hp_flow_unkey(hp_flow_table *t, uint32_t idx, int k)
{
    hp_conn *c = &t->conns[idx];
    uint32_t s, d;
    uint16_t sp, dp;
    int64_t i;
    if (!(c->kind[k] & HP_K_KEY))
        return;
    hp_conn_key(c, k, &s, &d, &sp, &dp);
    i = hp_flow_find(t, s, d, sp, dp, c->proto);
    if (i >= 0 && t->slots[i].ref == (((idx + 1) << 2) | (uint32_t)k))
        hp_slot_delete(t, (uint64_t)i);
    c->kind[k] = 0;
}

/* Put kind k's key of entry idx in the index. A slot holding the same 5-tuple for another
 * (entry, kind) is taken over: the slow path resolved that tuple to this entry last, and the
 * other kind goes back to punting. Returns 0, or -1 when out of memory. */
static inline int hp_flow_key(hp_flow_table *t, uint32_t idx, int k)
{
    hp_conn *c = &t->conns[idx];
    uint32_t s, d, ref = ((idx + 1) << 2) | (uint32_t)k;
    uint16_t sp, dp;
    int64_t i;
    if (c->kind[k] & HP_K_KEY)
        return 0;
    hp_conn_key(c, k, &s, &d, &sp, &dp);
    i = hp_flow_find(t, s, d, sp, dp, c->proto);
    if (i >= 0) {
        uint32_t old = t->slots[i].ref;
        t->conns[(old >> 2) - 1].kind[old & 3] = 0;
        t->slots[i].ref = ref;
        c->kind[k] |= HP_K_KEY;
        return 0;
    }
    if ((t->used + 1) * 4 > (t->mask + 1) * 3 && hp_flow_rehash(t, (t->mask + 1) * 2) != 0)
        return -1;
    hp_slot_put(t->slots, t->mask, hp_flow_hash(s, d, sp, dp, c->proto), ref);
    t->used++;
    c->kind[k] |= HP_K_KEY;
    return 0;
}

/* Grow the array *items of *cap items, `item` bytes each, to at least `want` items (doubling, from
 * `first` when empty; below 2^30), the new ones zeroed. 0, or -1 when out of memory (the array
 * is left as it was). */
static inline int hp_grow_zeroed(void **items, uint32_t *cap, uint32_t want, uint32_t first, size_t item)
{
    uint64_t n = *cap ? *cap : first;
    void *grown;
    if (want <= *cap)
        return 0;
    while (n < want)
        n *= 2;
    if (n > 0x3FFFFFFFu)
        return -1;
    grown = hp_big_resize(*items, (size_t)*cap * item, (size_t)n * item);
    if (!grown)
        return -1;
    *items = grown;
    *cap = (uint32_t)n;
    return 0;
}

/* Room for one more entry: 0, or -1 when out of memory. */
static inline int hp_flow_entry_room(hp_flow_table *t)
{
    void *conns = t->conns;
    int r;
    if (t->free_head)
        return 0;
    r = hp_grow_zeroed(&conns, &t->cap_conns, t->top + 1, 16, sizeof(hp_conn));
    t->conns = (hp_conn *)conns;
    return r;
}

/* A new entry (zeroed, proto set); its index, or -1 when out of memory. */
static inline int64_t hp_flow_alloc(hp_flow_table *t, uint8_t proto)
{
    uint32_t idx;
    if (hp_flow_entry_room(t) != 0)
        return -1;
    if (t->free_head) {
        idx = t->free_head - 1;
        t->free_head = t->conns[idx].ip[0];
    } else {
        idx = t->top++;
    }
    memset(&t->conns[idx], 0, sizeof(hp_conn));
    t->conns[idx].proto = proto;
    t->conns[idx].window = 0xFFFFFFFFu;
    t->nconns++;
    return idx;
}

/* Drop entry idx and its keys. */
static inline void hp_flow_release(hp_flow_table *t, uint32_t idx)
{
    hp_conn *c = &t->conns[idx];
    int k;
    if (!c->proto)
        return;
    for (k = 0; k < HP_NKINDS; k++)
        hp_flow_unkey(t, idx, k);
    memset(c, 0, sizeof(*c));
    c->ip[0] = t->free_head;
    t->free_head = idx + 1;
    t->nconns--;
}

static inline int hp_flow_mark_dirty(hp_flow_table *t, uint32_t idx)
{
    hp_conn *c = &t->conns[idx];
    if (c->bits & HP_C_DIRTY)
        return 0;
    if (t->ndirty == t->cap_dirty) {
        uint32_t *grown = (uint32_t *)hp_big_resize(t->dirty, sizeof(uint32_t) * (size_t)t->cap_dirty,
                                                    sizeof(uint32_t) * (size_t)t->cap_dirty * 2);
        if (!grown)
            return -1;
        t->dirty = grown;
        t->cap_dirty *= 2;
    }
    t->dirty[t->ndirty++] = idx;
    c->bits |= HP_C_DIRTY;
    return 0;
}

/* The growable array `items` of `used` items (*cap allocated) with room for one more: grown when
 * full (64 items at first, then doubling); NULL when out of memory (the array is left as it was). */
static inline void *hp_flow_room(void *items, uint32_t used, uint32_t *cap, size_t item)
{
    void *grown;
    uint32_t n;
    if (used < *cap)
        return items;
    n = *cap ? *cap * 2 : 64;
    grown = hp_big_resize(items, item * (size_t)*cap, item * (size_t)n);
    if (grown)
        *cap = n;
    return grown;
}

/* --- timers of timed entries -------------------------------------------------------------------
 * A timed entry's timer is due at min(expires, last_seen + nat_idle when it holds a NAT mapping).
 * Each timed entry has one live item in the heap, at `queued[idx]`, at or before that time: it is
 * pushed when the entry is timed, and again whenever a packet moves its expiry before it (a NAT
 * deadline only moves later); the item popped at queued[idx] before the entry is due is queued
 * again at the due time (the timer was refreshed). Other items of an entry (their time is not
 * queued[idx]) and items of entries no longer timed are stale: dropped when they reach the top.
 * So a connection whose timer moves later and earlier again costs one heap item per move before
 * its earliest item, not one per move. */

static inline double hp_flow_timer_due(const hp_flow_table *t, const hp_conn *c)
{
    double nat = (c->bits & HP_C_NAT) ? c->last_seen + t->nat_idle : INFINITY;
    return c->expires < nat ? c->expires : nat;
}

/* Room for one more timer; 0, or -1 when out of memory. */
static inline int hp_flow_timer_room(hp_flow_table *t)
{
    hp_timer *room = (hp_timer *)hp_flow_room(t->timers, t->ntimers, &t->cap_timers, sizeof(hp_timer));
    if (!room)
        return -1;
    t->timers = room;
    return 0;
}

/* The heap is 4-ary (children of i: 4i + 1 .. 4i + 4, 48 bytes, mostly one cache line): half the
 * levels of a binary heap, fewer cache misses per pop on a heap larger than the cache. */

/* Push an item of entry idx at `when` (room checked by the caller). */
static inline void hp_flow_timer_push(hp_flow_table *t, uint32_t idx, double when)
{
    uint32_t i = t->ntimers++, parent;
    while (i > 0) {
        parent = (i - 1) / 4;
        if (t->timers[parent].when <= when)
            break;
        t->timers[i] = t->timers[parent];
        i = parent;
    }
    t->timers[i].when = when;
    t->timers[i].idx = idx;
}

static inline hp_timer hp_flow_timer_pop(hp_flow_table *t)
{
    hp_timer top = t->timers[0], last = t->timers[--t->ntimers];
    uint32_t i = 0, child, c, end, n = t->ntimers;
    while ((child = 4 * i + 1) < n) {
        end = child + 4 < n ? child + 4 : n;
        for (c = child + 1; c < end; c++)
            if (t->timers[c].when < t->timers[child].when)
                child = c;
        if (last.when <= t->timers[child].when)
            break;
        t->timers[i] = t->timers[child];
        i = child;
    }
    if (n)
        t->timers[i] = last;
    return top;
}

/* queued[] covering every entry the table has allocated: 0, or -1 when out of memory. */
static inline int hp_flow_queued_room(hp_flow_table *t)
{
    void *queued = t->queued;
    int r = hp_grow_zeroed(&queued, &t->cap_queued, t->cap_conns, 64, sizeof(double));
    t->queued = (double *)queued;
    return r;
}

/* Push entry idx's live item at `when` (room for the item checked by the caller; queued[] covers
 * every timed entry). */
static inline void hp_flow_timer_queue(hp_flow_table *t, uint32_t idx, double when)
{
    hp_flow_timer_push(t, idx, when);
    t->queued[idx] = when;
}

/* Make entry idx timed (its timer queued) or not. 0, or -1 when out of memory. */
static inline int hp_flow_set_timed(hp_flow_table *t, uint32_t idx, int timed)
{
    hp_conn *c = &t->conns[idx];
    if (!timed) {
        c->bits &= (uint8_t)~HP_C_TIMED;
        return 0;
    }
    if (hp_flow_queued_room(t) != 0 || hp_flow_timer_room(t) != 0)
        return -1;
    c->bits |= HP_C_TIMED;
    hp_flow_timer_queue(t, idx, hp_flow_timer_due(t, c));
    return 0;
}

/* The timed entry at the top of the heap when it is due by `now` (left there), or -1: stale
 * items on the way are dropped, and a live one whose entry is not due yet is queued again at
 * its due time (the pop makes room for it). */
static inline int64_t hp_flow_due_top(hp_flow_table *t, double now)
{
    while (t->ntimers && t->timers[0].when <= now) {
        hp_timer top = t->timers[0];
        hp_conn *c = &t->conns[top.idx];
        double due;
        if (!c->proto || !(c->bits & HP_C_TIMED) || top.when != t->queued[top.idx]) {
            hp_flow_timer_pop(t); /* released, no longer timed, or not its live item */
            continue;
        }
        due = hp_flow_timer_due(t, c);
        if (due > now) { /* refreshed since it was queued */
            hp_flow_timer_pop(t);
            hp_flow_timer_queue(t, top.idx, due);
            continue;
        }
        return top.idx;
    }
    return -1;
}

/* Whether timed entry c, due, expired (else its NAT mapping went idle first: the conntrack timer
 * fires first when both are due at the same time). */
static inline int hp_flow_timer_expired(const hp_flow_table *t, const hp_conn *c)
{
    return c->expires <= ((c->bits & HP_C_NAT) ? c->last_seen + t->nat_idle : INFINITY);
}

/* The next timed entry due by `now`, in due-time order: its index, and in *expired whether its
 * connection's timer ran out (hp_flow_timer_expired). It is no longer timed. -1 when none is due. */
static inline int64_t hp_flow_next_due(hp_flow_table *t, double now, int *expired)
{
    int64_t idx = hp_flow_due_top(t, now);
    hp_conn *c;
    if (idx < 0)
        return -1;
    hp_flow_timer_pop(t);
    c = &t->conns[idx];
    *expired = hp_flow_timer_expired(t, c);
    c->bits &= (uint8_t)~HP_C_TIMED;
    return idx;
}

/* Room for one more event; 0, or -1 when out of memory. */
static inline int hp_flow_event_room(hp_flow_table *t)
{
    hp_flow_event *room = (hp_flow_event *)hp_flow_room(t->events, t->nevents, &t->cap_events,
                                                        sizeof(hp_flow_event));
    if (!room)
        return -1;
    t->events = room;
    return 0;
}

/* --- rendering: the three forms of a packet of a V2N connection -------------------------------
 * kind OUT:   lambda = input;  eni = lambda with src := ENI;  internet = eni with src := NAT
 * kind REPLY: lambda = input;  eni = lambda with dst := ENI;  internet = eni with dst := NAT
 * kind VPC:   eni = input;     lambda = eni with dst := sandbox;  internet = eni with dst := NAT
 * (internet = eni when the path has no NAT translation.) A rewrite touches only the IP header
 * and the first bytes of the L4 header (ports, checksum): the first hp_flow_head() bytes. */

/* Forms (bit HP_TAP_*) that are the input packet itself, byte for byte. */
static inline unsigned hp_flow_same(const hp_conn *c, int k)
{
    if (k == HP_KIND_VPC)
        return (1u << HP_TAP_ENI) | ((c->kind[k] & HP_K_NATRW) ? 0u : (1u << HP_TAP_INET));
    return 1u << HP_TAP_LAMBDA;
}

/* Bytes of an IPv4 TCP/UDP packet a rewrite can touch: the IP header and the L4 header up to its
 * checksum (TCP 18, UDP 8 bytes; rounded up to 20 for TCP). */
static inline int64_t hp_flow_head(int64_t l4, uint8_t proto) { return l4 + (proto == 6 ? 20 : 8); }

/* hp_rewrite() for the case the fast path meets: IPv4, TCP or UDP, the whole L4 header up to
 * its checksum inside the buffer (the caller guarantees it). Same arithmetic, same order, hence
 * the same bytes (tests/unit/test_core_flow.py compares them). */
static inline void hp_rw4(uint8_t *buf, int64_t l4, uint8_t proto, int dst, uint32_t addr, uint16_t port)
{
    uint8_t *a = buf + (dst ? 16 : 12);
    uint8_t *pp = buf + l4 + (dst ? 2 : 0);
    uint8_t *cs = buf + l4 + (proto == 6 ? 16 : 6);
    uint32_t old = ((uint32_t)a[0] << 24) | ((uint32_t)a[1] << 16) | ((uint32_t)a[2] << 8) | a[3];
    uint16_t old_port = hp_get16(pp), hc;
    a[0] = (uint8_t)(addr >> 24); a[1] = (uint8_t)(addr >> 16); a[2] = (uint8_t)(addr >> 8); a[3] = (uint8_t)addr;
    hp_put16(buf + 10, hp_csum_update32(hp_get16(buf + 10), old, addr));
    hp_put16(pp, port);
    hc = hp_get16(cs);
    if (proto == 17 && hc == 0)
        return; /* UDP over IPv4 without a checksum */
    hc = hp_csum_update32(hc, old, addr);
    hc = hp_csum_update16(hc, old_port, port);
    if (proto == 17 && hc == 0)
        hc = 0xFFFF;
    hp_put16(cs, hc);
}

/* Render the first n bytes (n >= hp_flow_head(l4), or the whole packet) of the forms that differ
 * from the input into out[HP_TAP_*] (NULL: not wanted). A form in hp_flow_same() is copied
 * when `copy_same` (else left alone: the caller points at the input instead). `ip` is the IP
 * packet (IPv4 TCP/UDP, L4 header at `l4`, the checksum inside the first n bytes). */
static inline void hp_flow_render(const hp_conn *c, int k, const uint8_t *ip, int64_t n, int64_t l4,
                                  uint8_t *out[HP_NTAPS], int copy_same)
{
    uint8_t flags = c->kind[k], proto = c->proto;
    uint8_t *lam = out[HP_TAP_LAMBDA], *eni = out[HP_TAP_ENI], *inet = out[HP_TAP_INET];
    if (k == HP_KIND_VPC) {
        if (lam) {
            memcpy(lam, ip, (size_t)n);
            hp_rw4(lam, l4, proto, 1, c->ip[0], c->port[0]);
        }
        if (eni && copy_same)
            memcpy(eni, ip, (size_t)n);
        if (inet && ((flags & HP_K_NATRW) || copy_same)) {
            memcpy(inet, ip, (size_t)n);
            if (flags & HP_K_NATRW)
                hp_rw4(inet, l4, proto, 1, c->ip[3], c->port[3]);
        }
    } else {
        int dst = k != HP_KIND_OUT;
        uint8_t *e = eni ? eni : inet;
        if (lam && copy_same)
            memcpy(lam, ip, (size_t)n);
        if (e) {
            memcpy(e, ip, (size_t)n);
            hp_rw4(e, l4, proto, dst, c->ip[2], c->port[2]);
        }
        if (inet) {
            if (inet != e)
                memcpy(inet, e, (size_t)n);
            if (flags & HP_K_NATRW)
                hp_rw4(inet, l4, proto, dst, c->ip[3], c->port[3]);
        }
    }
}

/* The subset of hp_parse() the fast path accepts, without its generality: an IPv4 TCP/UDP
 * packet, not a fragment, cleanly parsed, as raw IP or in an untagged Ethernet frame. Returns
 * 1 with the fields hp_parse() would give (only those the fast path reads: src_lo, dst_lo,
 * ip_len, l3, l4, proto, sport, dport, tcp_flags), or 0 for anything else: the caller then runs
 * hp_parse() itself. Accepting exactly what hp_parse() accepts is checked by
 * tests/unit/test_core_flow.py on mutated packets. */
static inline int hp_flow_parse4(const uint8_t *d, int64_t n, int32_t lt, hp_pkt *p)
{
    int64_t l3, avail, ihl, total, ip_len, l4, have;
    const uint8_t *h;
    if (lt == HP_LINKTYPE_RAW || lt == HP_LINKTYPE_IPV4 || lt == HP_LINKTYPE_RAW_BSD || lt == HP_LINKTYPE_RAW_OPENBSD)
        l3 = 0;
    else if (lt == HP_LINKTYPE_ETHERNET && n >= 14 && d[12] == 0x08 && d[13] == 0x00)
        l3 = 14;
    else
        return 0;
    avail = n - l3;
    if (avail < 20)
        return 0;
    h = d + l3;
    if ((h[0] >> 4) != 4)
        return 0;
    ihl = (int64_t)(h[0] & 0x0F) * 4;
    if (ihl < 20 || ihl > avail)
        return 0;
    total = hp_rd16(h + 2);
    if (total < ihl)
        return 0;
    if ((h[6] & 0x3F) | h[7]) /* MF or a fragment offset */
        return 0;
    ip_len = total < avail ? total : avail;
    l4 = ihl;
    have = ip_len - ihl;
    p->proto = h[9];
    if (p->proto == 6) {
        int64_t doff;
        if (have < 20)
            return 0;
        doff = (int64_t)(h[l4 + 12] >> 4) * 4;
        if (doff < 20 || doff > have)
            return 0;
        p->tcp_flags = h[l4 + 13];
    } else if (p->proto == 17) {
        int64_t ulen;
        if (have < 8)
            return 0;
        ulen = hp_rd16(h + l4 + 4);
        if (ulen < 8 || ulen > total - ihl)
            return 0;
        p->tcp_flags = 0;
    } else {
        return 0;
    }
    p->sport = hp_rd16(h + l4);
    p->dport = hp_rd16(h + l4 + 2);
    p->src_lo = ((uint32_t)h[12] << 24) | ((uint32_t)h[13] << 16) | ((uint32_t)h[14] << 8) | h[15];
    p->dst_lo = ((uint32_t)h[16] << 24) | ((uint32_t)h[17] << 16) | ((uint32_t)h[18] << 8) | h[19];
    p->l3 = (int32_t)l3;
    p->l4 = (int32_t)(l3 + l4);
    p->ip_len = (int32_t)ip_len;
    return 1;
}

/* --- the batch loop -------------------------------------------------------------------------- */

/* Outputs, per tap, one row per packet on it: the packet is `len` bytes; its first `head`
 * bytes are at tap_buf + off (rewritten), the rest is the input at buf[src + head ..]; a
 * packet equal to the input has head 0 (nothing is copied), one the slow path made has head =
 * len (all of it in tap_buf). */
typedef struct hp_batch {
    const uint8_t *buf;
    int64_t size;
    const int64_t *offs, *lens;
    const double *ts;
    const int32_t *lts; /* NULL: every frame has link type `lt` */
    int32_t lt;
    uint8_t *verdict, *reason;
    uint8_t *tap_buf[HP_NTAPS];
    int64_t tap_cap[HP_NTAPS], tap_used[HP_NTAPS], tap_n[HP_NTAPS];
    int64_t *tap_idx[HP_NTAPS], *tap_off[HP_NTAPS], *tap_src[HP_NTAPS];
    int32_t *tap_head[HP_NTAPS], *tap_len[HP_NTAPS];
} hp_batch;

/* Stage 1 for packet j: the fast parser's fields and the 5-tuple's hash (pre->ok = 0: the frame
 * is out of bounds or not for hp_flow_parse4; stage 3 then does what it always did). */
static inline void hp_flow_stage1(const hp_flow_table *t, const hp_batch *b, int64_t j, int64_t count, hp_pkt *p,
                                  uint64_t *h, int *ok)
{
    int64_t off = b->offs[j], flen = b->lens[j];
#if defined(__GNUC__)
    if (j + HP_PIPE < count) { /* the headers of a packet further ahead: a stride the hardware misses */
        int64_t ahead = b->offs[j + HP_PIPE];
        if (ahead >= 0 && ahead < b->size) {
            __builtin_prefetch(b->buf + ahead);
            if (ahead + 63 < b->size)
                __builtin_prefetch(b->buf + ahead + 63);
        }
    }
#endif
    *ok = 0;
    if (off < 0 || flen < 0 || off > b->size || flen > b->size - off)
        return;
    if (!hp_flow_parse4(b->buf + off, flen, b->lts ? b->lts[j] : b->lt, p))
        return;
    *h = hp_flow_hash((uint32_t)p->src_lo, (uint32_t)p->dst_lo, p->sport, p->dport, p->proto);
    *ok = 1;
#if defined(__GNUC__)
    __builtin_prefetch(&t->slots[*h & t->mask]);
#endif
}

/* Stage 2: the first slot of the probe with the hash's tag; prefetch its entry. */
static inline void hp_flow_stage2(const hp_flow_table *t, uint64_t h)
{
#if defined(__GNUC__)
    uint64_t i = h & t->mask;
    uint32_t tag = (uint32_t)(h >> 32);
    int n;
    for (n = 0; n < 4; n++) {
        uint32_t ref = t->slots[i].ref;
        if (!ref)
            return;
        if (t->slots[i].tag == tag) {
            const char *c = (const char *)&t->conns[(ref >> 2) - 1];
            __builtin_prefetch(c);
            __builtin_prefetch(c + sizeof(hp_conn) - 1);
            return;
        }
        i = (i + 1) & t->mask;
    }
#else
    (void)t; (void)h;
#endif
}

/* Process packets start.. of the batch on the fast path; returns the index of the first packet
 * it cannot handle (count when it handled them all) and its stop code in *why. Frames must lie
 * inside the buffer (the caller checks). */
static inline int64_t hp_flow_run(hp_flow_table *t, hp_batch *b, int64_t start, int64_t count, int *why)
{
    int64_t i, staged = start, probed = start;
    /* the flow-log window of the last packet: [win_lo, win_lo + interval) seconds */
    int64_t win_lo = 0, win_hi = -1;
    uint32_t win = 0;
    hp_pkt ring[HP_RING];
    uint64_t hash[HP_RING];
    int ok[HP_RING];
    for (i = start; i < count; i++) {
        hp_pkt *pp;
        const uint8_t *frame;
        double ts = b->ts[i], new_exp;
        int64_t slot, second, l4, len, head, off = b->offs[i], flen = b->lens[i];
        uint64_t h;
        uint32_t ref, idx;
        int k, dir, tcp_refresh = 0, tp, r = (int)(i & (HP_RING - 1));
        uint8_t new_state, kflags;
        unsigned same, emit;
        hp_conn *c;
        const uint8_t *ip;

        for (; staged < count && staged <= i + HP_PIPE; staged++) {
            int q = (int)(staged & (HP_RING - 1));
            hp_flow_stage1(t, b, staged, count, &ring[q], &hash[q], &ok[q]);
        }
        for (; probed < staged && probed <= i + HP_PIPE / 2; probed++) {
            int q = (int)(probed & (HP_RING - 1));
            if (ok[q])
                hp_flow_stage2(t, hash[q]);
        }
        pp = &ring[r];
        if (off < 0 || flen < 0 || off > b->size || flen > b->size - off) {
            *why = HP_STOP_BOUNDS; return i;
        }
        if (ts < t->now || !(ts >= 0)) { *why = HP_STOP_TIME; return i; }
        frame = b->buf + off;
        if (ok[r]) { /* stage 1 ran hp_flow_parse4 on these bytes: the same fields */
            h = hash[r];
        } else {
            if (!hp_flow_parse4(frame, flen, b->lts ? b->lts[i] : b->lt, pp)) {
                hp_parse(flen ? frame : NULL, (size_t)flen, b->lts ? b->lts[i] : b->lt, pp);
                if (!pp->ok || pp->version != 4 || pp->fragment || pp->l4 < 0 || (pp->proto != 6 && pp->proto != 17)) {
                    *why = HP_STOP_PARSE; return i;
                }
            }
            h = hp_flow_hash((uint32_t)pp->src_lo, (uint32_t)pp->dst_lo, pp->sport, pp->dport, pp->proto);
        }
        slot = hp_flow_find_h(t, h, (uint32_t)pp->src_lo, (uint32_t)pp->dst_lo, pp->sport, pp->dport, pp->proto);
        if (slot < 0) {
            if (!t->open_hook || !t->open_hook(t->open_ctx, t, pp, ts)) { *why = HP_STOP_MISS; return i; }
            slot = hp_flow_find_h(t, h, (uint32_t)pp->src_lo, (uint32_t)pp->dst_lo, pp->sport, pp->dport, pp->proto);
            if (slot < 0) { *why = HP_STOP_MISS; return i; }
        }
        ref = t->slots[slot].ref;
        idx = (ref >> 2) - 1;
        k = (int)(ref & 3);
        c = &t->conns[idx];
        kflags = c->kind[k];
        if (c->gen != t->gen) { *why = HP_STOP_GEN; return i; }
        dir = k == HP_KIND_OUT ? 0 : 1;
        if (!(kflags & HP_K_LEARNED) || (dir && ((c->bits >> HP_C_OWNER_SHIFT) & 3) != (unsigned)k)) {
            *why = HP_STOP_UNLEARNED; return i;
        }
        if (ts < c->last_seen) { *why = HP_STOP_TIME; return i; }
        if (c->expires <= ts) { *why = HP_STOP_EXPIRED; return i; }
        second = (int64_t)floor(ts);
        if (second < win_lo || second > win_hi) {
            if (second / t->interval > 0xFFFFFFF0ll) { *why = HP_STOP_WINDOW; return i; }
            win = (uint32_t)(second / t->interval);
            win_lo = (int64_t)win * t->interval;
            win_hi = win_lo + t->interval - 1;
        }
        if (win != c->window) { *why = HP_STOP_WINDOW; return i; }
        if ((c->bits & HP_C_NAT) && (ts - c->last_seen >= t->nat_idle || c->last_seen + t->nat_idle <= ts)) {
            *why = HP_STOP_NAT_IDLE; return i;
        }
        /* the state machine: decide everything before changing anything */
        new_state = c->state;
        new_exp = c->expires;
        if (pp->proto == 6) {
            uint8_t cell = t->tcp[dir][t->fclass[pp->tcp_flags]][c->state];
            if (cell == HP_TCP_IV) {
                if (t->strict) { *why = HP_STOP_TCP; return i; }
            } else if (cell != HP_TCP_IG) {
                if (cell == HP_TCP_SYN_SENT && (c->state == HP_TCP_TIME_WAIT || c->state == HP_TCP_CLOSE)) {
                    *why = HP_STOP_TCP; return i; /* a reopen: the slow path re-evaluates */
                }
                new_state = cell;
                tcp_refresh = 1;
            }
            if (tcp_refresh)
                new_exp = ts + t->tcp_timeout[new_state];
        } else {
            if (dir && !(c->bits & HP_C_LASTREPLY)) {
                if (c->exchanges == 0xFFFF) { *why = HP_STOP_OVERFLOW; return i; }
                if (new_state != HP_UDP_STREAM)
                    new_state++;
            }
            new_exp = ts + t->udp_timeout[new_state];
        }
        len = pp->ip_len;
        if (c->pkts[dir] == 0xFFFFFFFFu || (uint64_t)c->bytes[dir] + (uint64_t)len > 0xFFFFFFFFull) {
            *why = HP_STOP_OVERFLOW; return i;
        }
        l4 = pp->l4 - pp->l3;
        head = hp_flow_head(l4, pp->proto);
        same = hp_flow_same(c, k);
        emit = (1u << HP_TAP_LAMBDA) | ((kflags & HP_K_ENI) ? 1u << HP_TAP_ENI : 0u)
               | ((kflags & HP_K_INET) ? 1u << HP_TAP_INET : 0u);
        for (tp = 0; tp < HP_NTAPS; tp++)
            if ((emit & ~same) & (1u << tp) && b->tap_used[tp] + head > b->tap_cap[tp]) {
                *why = HP_STOP_SPACE; return i;
            }
        if (hp_flow_mark_dirty(t, idx) != 0) { *why = HP_STOP_SPACE; return i; }
        if ((kflags & HP_K_FIRST) && hp_flow_event_room(t) != 0) { *why = HP_STOP_SPACE; return i; }
        if ((c->bits & HP_C_TIMED) && new_exp < t->queued[idx] && hp_flow_timer_room(t) != 0) {
            *why = HP_STOP_SPACE; return i;
        }
        /* commit */
        if (pp->proto == 17) {
            if (dir) {
                if (!(c->bits & HP_C_LASTREPLY))
                    c->exchanges++;
                c->bits |= HP_C_LASTREPLY;
            } else {
                c->bits &= (uint8_t)~HP_C_LASTREPLY;
            }
        }
        c->state = new_state;
        if (new_exp < c->expires) { /* moved earlier (a NAT deadline only moves later) */
            if (c->bits & HP_C_TIMED) {
                if (new_exp < t->queued[idx])
                    hp_flow_timer_queue(t, idx, new_exp);
            } else { /* the caller's timer for it may now be late: fold before it moves its clock past new_exp */
                t->earlier++;
                if (new_exp < t->earlier_min)
                    t->earlier_min = new_exp;
            }
        }
        c->expires = new_exp;
        c->last_seen = ts;
        c->pkts[dir]++;
        c->bytes[dir] += (uint32_t)len;
        c->raw_flags[dir] |= pp->tcp_flags;
        c->aws_flags[dir] |= t->awsmap[pp->tcp_flags];
        c->end_off[dir] = (uint16_t)(second - win_lo);
        if (kflags & HP_K_FIRST) {
            hp_flow_event *e = &t->events[t->nevents++];
            e->ts = ts;
            e->idx = idx;
            e->kind = (uint32_t)k;
            c->kind[k] &= (uint8_t)~HP_K_FIRST;
        }
        t->now = ts;
        t->fast_packets++;
        ip = frame + pp->l3;
        {
            uint8_t *outs[HP_NTAPS];
            for (tp = 0; tp < HP_NTAPS; tp++)
                outs[tp] = ((emit & ~same) >> tp) & 1u ? b->tap_buf[tp] + b->tap_used[tp] : NULL;
            hp_flow_render(c, k, ip, head, l4, outs, 0);
            for (tp = 0; tp < HP_NTAPS; tp++) {
                int64_t r;
                if (!((emit >> tp) & 1u))
                    continue;
                r = b->tap_n[tp]++;
                b->tap_idx[tp][r] = i;
                b->tap_src[tp][r] = off + pp->l3;
                b->tap_len[tp][r] = (int32_t)len;
                if ((same >> tp) & 1u) {
                    b->tap_off[tp][r] = 0;
                    b->tap_head[tp][r] = 0;
                } else {
                    b->tap_off[tp][r] = b->tap_used[tp];
                    b->tap_head[tp][r] = (int32_t)head;
                    b->tap_used[tp] += head;
                }
            }
        }
        b->verdict[i] = 0;
        b->reason[i] = 0;
    }
    *why = HP_STOP_END;
    return count;
}

/* Join the rows of one tap into `dst` (sum of lengths bytes, plus n * width), packet after packet,
 * each after its `width` bytes of `heads` (a capture record's header; width 0: none). */
static inline void hp_flow_gather(const uint8_t *tap, const uint8_t *src, int64_t n, const int64_t *off,
                                  const int64_t *srcoff, const int32_t *head, const int32_t *len, uint8_t *dst,
                                  const uint8_t *heads, int64_t width)
{
    int64_t r;
    for (r = 0; r < n; r++) {
        int64_t h = head[r], l = len[r];
        if (width) {
            memcpy(dst, heads + r * width, (size_t)width);
            dst += width;
        }
        if (h)
            memcpy(dst, tap + off[r], (size_t)h);
        if (l > h)
            memcpy(dst + h, src + srcoff[r] + h, (size_t)(l - h));
        dst += l;
    }
}

#endif /* HP_FLOW_H */
