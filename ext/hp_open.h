/* hp_open.h: planned opens inside the fast loop (the core backend's hyperplane/core_open.py, in C).
 *
 * Header-only C99, no global state; everything here runs without the GIL.
 *
 * When its slow path opens a sandbox's connection to a destination, or its Python planned open
 * (core_open.Opener) meets one, the caller (CoreEngine) *arms* a template for that (sandbox range,
 * subnet, protocol, destination, port): the next first packets (flow-table misses) it matches are
 * opened here, inside hp_flow_run (the table's open_hook; hp_open_try), with the same ENI slot,
 * source port, NAT gateway port, flow-log records, entry, state and timer that core_open would
 * give them; the loop then forwards them.
 * A template holds what does not change until the caller's facts change: the ENI (a slot of
 * `enis`), the earlier ENIs of its group (each must be full for the reference to pick this one),
 * the pools, the NAT gateway's addresses, the interned flow-log points of both legs, and the
 * opening state by TCP flags (HP_OPEN_NONE: a packet that opens nothing, or whose transition would
 * change that state; core_open declines those too).
 *
 * hp_open_try declines (0, nothing changed but the releases below; counted by reason in
 * `declined`, the last in `last_decline`) whenever anything else could happen, and the packet stays
 * a miss for the caller:
 *   - no template matches, its generation is old, it is disarmed;
 *   - the packet is at or after `until` (the caller's next timer: its connection expiry, NAT
 *     idle and fragment timers, and the control plane's) or before `since` (the control plane's
 *     clock), or a packet moved a caller-timed expiry to or before it (`earlier_min`);
 *   - an earlier ENI of the group has room, the template's ENI has none, no port is left;
 *   - a first-packet event of a caller-made entry is pending (its records come first), or a timed
 *     entry the caller must handle is due (one it opened, or a NAT mapping gone idle);
 *   - the conntrack table has a limit (`enabled` is 0), or the dirty list would grow past its bound.
 * Before it opens, it makes the first-reply records of the entries it opened whose first reply
 * the loop forwarded (in packet order) and releases the entries it opened whose timer ran out
 * (their last counts into their records, their ports and ENI slot freed), as core.py's
 * _expire_timed does.
 *
 * The entries it opened are *C-opened* (`side[idx].tmpl` != 0) until the caller adopts them: the
 * side record holds their flow-log record ids (both legs), totals of the packets already counted
 * into those records, and the open order (`seq`). The caller's ENI slot counts, conntrack peak and
 * clocks are copied in before each run and read back after it (`enis`, `base`, `peak`, template
 * `last` and `opened`).
 */
#ifndef HP_OPEN_H
#define HP_OPEN_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hp_flow.h"
#include "hp_flowlog.h"
#include "hp_ports.h"

#define HP_OPEN_RECS 4   /* flow-log points per leg a template may have */
#define HP_OPEN_ENIS 4   /* earlier ENIs of the group a template may check */
#define HP_OPEN_NONE 0xFF

typedef struct hp_open_eni {
    int64_t conns; /* connections holding a slot (the control plane's count, copied in and out) */
    int64_t peak;
    int64_t cap;   /* eni_capacity */
} hp_open_eni;

typedef struct hp_tmpl {
    uint32_t next;      /* the next template of the bucket + 1; 0: none */
    uint32_t gen;
    uint32_t dst, src_lo, src_hi, nsub, rem; /* sandbox address range; subnet: src % nsub == rem (nsub 0: any) */
    uint16_t dport;
    uint8_t proto;
    uint8_t live;
    uint8_t kflags;     /* tap flags of both kinds (HP_K_ENI | HP_K_INET | HP_K_NATRW) */
    uint8_t nat;        /* the path holds a NAT mapping (its idle timeout applies) */
    uint8_t nat_alloc;  /* a NAT gateway port is allocated (nat_pool, nat_ips, nat_*) */
    uint8_t nat_proto;
    uint32_t eni;       /* slot in enis */
    uint32_t earlier[HP_OPEN_ENIS];
    uint32_t nearlier;
    uint32_t eni_ip;
    uint32_t nat_dst;
    uint16_t nat_dport;
    hp_ports *pool;
    hp_nat_ports *nat_pool;
    const uint32_t *nat_ips;
    const hp_rec *keys[2]; /* interned points of the request and the reply leg */
    const uint8_t *modes[2];
    uint32_t npoints[2];
    uint8_t initial[256];  /* opening state by TCP flags (UDP: [0]); HP_OPEN_NONE: decline */
    double last;           /* time of the last open */
    uint64_t opened;       /* opens since the caller last read it */
    uint32_t group;        /* the caller's number for what it accounts the opens to (its function) */
} hp_tmpl;

typedef struct hp_opened {
    double created;
    uint64_t pkts[2], bytes[2]; /* counted into the records so far */
    uint32_t tmpl;              /* template + 1 while C-opened and not adopted; 0 otherwise */
    uint32_t exchanges;
    uint64_t seq;               /* open order (the caller's planned opens take numbers too) */
    uint32_t rec[2][HP_OPEN_RECS];
    uint8_t nrec[2];
    uint8_t flags[2];           /* OR of TCP flags */
    uint8_t back;               /* the reply leg's records exist */
    uint8_t last_reply;
} hp_opened;

/* why hp_open_try declined (hp_opener.declined) */
enum {
    HP_DECLINE_NONE = 0,  /* no armed template of this generation matches */
    HP_DECLINE_TIME,      /* outside [since, until), or a caller-timed expiry moved before it */
    HP_DECLINE_STATE,     /* the packet opens nothing, or its transition would change the state */
    HP_DECLINE_EVENT,     /* a first-reply event of the caller's is pending */
    HP_DECLINE_DUE,       /* a timed entry the caller handles is due */
    HP_DECLINE_ENI,       /* an earlier ENI of the group has room, or the template's is full */
    HP_DECLINE_PORTS,     /* no source port or NAT gateway port left */
    HP_DECLINE_OTHER,     /* off, the dirty list at its bound, or out of memory */
    HP_DECLINE_COUNT
};

typedef struct hp_opener {
    hp_tmpl *tmpls;
    uint32_t ntmpls, cap_tmpls;
    uint32_t *buckets;         /* template + 1 by hash of (proto, dst, dport); nbuckets a power of two */
    uint32_t nbuckets;
    hp_open_eni *enis;
    uint32_t nenis, cap_enis;
    hp_opened *side;           /* by entry index */
    uint32_t cap_side;
    hp_fl *fl;
    int64_t interval;          /* flow-log interval, seconds */
    double until, since;       /* open only at since <= ts < until */
    uint64_t seq;
    int64_t base;              /* connections the caller's conntrack table counts (adopted + its own timed) */
    int64_t live;              /* C-opened, not adopted */
    int64_t peak;              /* the conntrack table's peak */
    uint64_t opened, released; /* since the caller last read them */
    uint64_t declined[HP_DECLINE_COUNT]; /* by HP_DECLINE_* reason, since the caller last read them */
    int last_decline;          /* the reason of the last decline (the packet a miss stop is at) */
    int enabled;
    int error;                 /* out of memory inside the loop: the caller raises */
} hp_opener;

static inline void hp_open_init(hp_opener *op)
{
    memset(op, 0, sizeof(*op));
    op->until = -INFINITY;
    op->since = INFINITY;
}

static inline void hp_open_free(hp_opener *op)
{
    free(op->tmpls);
    free(op->buckets);
    free(op->enis);
    hp_big_free(op->side, (size_t)op->cap_side * sizeof(hp_opened));
    memset(op, 0, sizeof(*op));
}

static inline uint32_t hp_open_hash(uint8_t proto, uint32_t dst, uint16_t dport)
{
    return (uint32_t)(hp_flow_mix(((uint64_t)dst << 24) ^ ((uint64_t)dport << 8) ^ proto) >> 20);
}

/* Is entry idx C-opened (and not adopted)? */
static inline int hp_open_is_c(const hp_opener *op, uint32_t idx)
{
    return idx < op->cap_side && op->side[idx].tmpl != 0;
}

/* Room for a side record of every entry the table has allocated (and one more). 0, or -1. */
static inline int hp_open_side_room(hp_opener *op, const hp_flow_table *t)
{
    void *side = op->side;
    int r = hp_grow_zeroed(&side, &op->cap_side, t->cap_conns + 1, 64, sizeof(hp_opened));
    op->side = (hp_opened *)side;
    return r;
}

/* The records of a packet at `ts` at the points of leg `leg` of template tm, for a connection
 * with these ENI and NAT ports (FlowLogTable.record_points). Returns how many, or -1. */
static inline int hp_open_records(hp_opener *op, const hp_tmpl *tm, int leg, uint8_t proto, uint16_t eni_port,
                                  uint16_t nat_port, double ts, uint32_t *out)
{
    uint32_t n = tm->npoints[leg];
    if (hp_fl_points(op->fl, tm->keys[leg], tm->modes[leg], n, proto, eni_port, nat_port, op->interval, ts, out) != 0)
        return -1;
    return (int)n;
}

/* Count the packets entry idx (C-opened) holds into its records and its totals; reset its
 * counters (CoreEngine._sync's fold for an entry the caller has no connection object for). */
static inline void hp_open_count(hp_opener *op, hp_flow_table *t, uint32_t idx)
{
    hp_conn *c = &t->conns[idx];
    hp_opened *s = &op->side[idx];
    int64_t base = (int64_t)c->window * t->interval;
    int d;
    uint32_t j;
    if (!(c->bits & HP_C_DIRTY))
        return;
    for (d = 0; d < 2; d++) {
        if (!c->pkts[d])
            continue;
        for (j = 0; j < s->nrec[d]; j++)
            hp_fl_count(op->fl, s->rec[d][j], c->pkts[d], c->bytes[d], base + c->end_off[d], c->aws_flags[d]);
        s->pkts[d] += c->pkts[d];
        s->bytes[d] += c->bytes[d];
        s->flags[d] |= c->raw_flags[d];
    }
    if (c->proto == 17) {
        s->exchanges += c->exchanges;
        s->last_reply = (c->bits & HP_C_LASTREPLY) ? 1 : 0;
    }
    c->pkts[0] = c->pkts[1] = 0;
    c->bytes[0] = c->bytes[1] = 0;
    c->raw_flags[0] = c->raw_flags[1] = 0;
    c->aws_flags[0] = c->aws_flags[1] = 0;
    c->end_off[0] = c->end_off[1] = 0;
    c->exchanges = 0;
    c->bits &= (uint8_t)~HP_C_DIRTY;
}

/* The reply leg's records of C-opened entry idx, whose first reply came at ts. 0, or -1. */
static inline int hp_open_first(hp_opener *op, hp_flow_table *t, uint32_t idx, double ts)
{
    hp_conn *c = &t->conns[idx];
    hp_opened *s = &op->side[idx];
    int n = hp_open_records(op, &op->tmpls[s->tmpl - 1], 1, c->proto, c->port[2], c->port[3], ts, s->rec[1]);
    if (n < 0)
        return -1;
    s->nrec[1] = (uint8_t)n;
    s->back = 1;
    return 0;
}

/* The first-packet events at the head of the list that are C-opened entries' first replies: their
 * records, in packet order; the rest stay. 0 when none is left, 1 when one of the caller's is
 * next, -1 when out of memory. */
static inline int hp_open_events(hp_opener *op, hp_flow_table *t)
{
    uint32_t j = 0;
    int r = 0;
    while (j < t->nevents) {
        hp_flow_event *e = &t->events[j];
        if (!hp_open_is_c(op, e->idx) || e->kind != HP_KIND_REPLY) {
            r = 1;
            break;
        }
        if (hp_open_first(op, t, e->idx, e->ts) != 0) {
            r = -1;
            break;
        }
        j++;
    }
    if (j) {
        memmove(t->events, t->events + j, (size_t)(t->nevents - j) * sizeof(hp_flow_event));
        t->nevents -= j;
    }
    return r;
}

/* Release C-opened entry idx, whose connection expired: its last counts into its records, its
 * source port and NAT gateway port freed, its ENI slot too when `slot` (inside a run: the
 * caller's count is copied back after it), and the entry leaves the table. Returns its template
 * index. */
static inline uint32_t hp_open_release(hp_opener *op, hp_flow_table *t, uint32_t idx, int slot)
{
    hp_conn *c = &t->conns[idx];
    hp_opened *s = &op->side[idx];
    uint32_t k = s->tmpl - 1, a;
    hp_tmpl *tm = &op->tmpls[k];
    hp_open_count(op, t, idx);
    hp_ports_release(tm->pool, c->proto, c->port[2], c->port[1], 0, c->ip[1]);
    if (tm->nat_alloc)
        for (a = 0; a < tm->nat_pool->n; a++)
            if (tm->nat_ips[a] == c->ip[3]) {
                hp_nat_release(tm->nat_pool, a, c->proto, c->port[3], c->port[1], 0, c->ip[1]);
                break;
            }
    if (slot)
        op->enis[tm->eni].conns--;
    s->tmpl = 0;
    op->live--;
    op->released++;
    hp_flow_release(t, idx);
    return k;
}

/* Fire the timers of timed entries due by ts, as the caller would before opening at ts: the
 * C-opened entries that expired are released. 0 when nothing is left due, 1 when a due one is
 * the caller's (one it opened, or a NAT mapping gone idle). Stale heap items are dropped and
 * refreshed ones queued again at their due time, as hp_flow_next_due does. */
static inline int hp_open_expire(hp_opener *op, hp_flow_table *t, double ts)
{
    int64_t idx;
    while ((idx = hp_flow_due_top(t, ts)) >= 0) {
        hp_conn *c = &t->conns[idx];
        if (!hp_open_is_c(op, (uint32_t)idx) || !hp_flow_timer_expired(t, c))
            return 1;
        hp_flow_timer_pop(t);
        c->bits &= (uint8_t)~HP_C_TIMED;
        hp_open_release(op, t, (uint32_t)idx, 1);
    }
    return 0;
}

/* The template for a sandbox's first packet, or NULL. */
static inline hp_tmpl *hp_open_find(hp_opener *op, const hp_pkt *p)
{
    uint32_t src = (uint32_t)p->src_lo, dst = (uint32_t)p->dst_lo, ref;
    if (!op->nbuckets)
        return NULL;
    ref = op->buckets[hp_open_hash(p->proto, dst, p->dport) & (op->nbuckets - 1)];
    while (ref) {
        hp_tmpl *tm = &op->tmpls[ref - 1];
        if (tm->live && tm->dst == dst && tm->dport == p->dport && tm->proto == p->proto && src >= tm->src_lo
            && src <= tm->src_hi && (tm->nsub == 0 || src % tm->nsub == tm->rem))
            return tm;
        ref = tm->next;
    }
    return NULL;
}

/* The open hook (see the top of this file): 1 when the connection of first packet p at ts is
 * open (its entry in the table, timed, both kinds learned, the reply ahead), else 0. */
#define HP_DECLINE(why) do { op->declined[why]++; op->last_decline = why; return 0; } while (0)

static inline int hp_open_try(void *ctx, hp_flow_table *t, const hp_pkt *p, double ts)
{
    hp_opener *op = (hp_opener *)ctx;
    hp_tmpl *tm;
    hp_open_eni *eni;
    hp_conn *c;
    hp_opened *s;
    uint32_t j, src = (uint32_t)p->src_lo, dst = (uint32_t)p->dst_lo, nat_ip = 0, addr = 0, window;
    uint64_t hint;
    int32_t port, nat_port = 0;
    int64_t idx, second;
    int n;
    uint8_t state;
    if (!op->enabled || op->error || (p->proto != 6 && p->proto != 17))
        HP_DECLINE(HP_DECLINE_OTHER);
    if (!(ts < op->until) || ts < op->since || (t->earlier && t->earlier_min <= ts))
        HP_DECLINE(HP_DECLINE_TIME);
    tm = hp_open_find(op, p);
    if (tm == NULL || tm->gen != t->gen)
        HP_DECLINE(HP_DECLINE_NONE);
    state = tm->initial[p->proto == 6 ? p->tcp_flags : 0];
    if (state == HP_OPEN_NONE)
        HP_DECLINE(HP_DECLINE_STATE);
    if (t->ndirty > 2 * t->nconns + 4096)
        HP_DECLINE(HP_DECLINE_OTHER); /* the caller folds (its list of changed entries stays bounded) */
    /* what the caller does first: the first replies' records, the expired connections' releases */
    if (t->nevents && (n = hp_open_events(op, t)) != 0) {
        if (n < 0)
            op->error = 1;
        HP_DECLINE(n < 0 ? HP_DECLINE_OTHER : HP_DECLINE_EVENT);
    }
    if (hp_open_expire(op, t, ts) != 0)
        HP_DECLINE(HP_DECLINE_DUE);
    /* the ENI the control plane would pick, and ports */
    for (j = 0; j < tm->nearlier; j++)
        if (op->enis[tm->earlier[j]].conns < op->enis[tm->earlier[j]].cap)
            HP_DECLINE(HP_DECLINE_ENI);
    eni = &op->enis[tm->eni];
    if (eni->conns >= eni->cap)
        HP_DECLINE(HP_DECLINE_ENI);
    if (!hp_ports_can_allocate(tm->pool, p->proto, p->dport, 0, dst)
        || (tm->nat_alloc && !hp_nat_can_allocate(tm->nat_pool, tm->nat_proto, tm->nat_dport, 0, tm->nat_dst)))
        HP_DECLINE(HP_DECLINE_PORTS);
    /* room first: nothing below may fail but the flow-log table and the pools, out of memory */
    if (hp_flow_entry_room(t) != 0
        || ((t->used + 2) * 4 > (t->mask + 1) * 3 && hp_flow_rehash(t, (t->mask + 1) * 2) != 0)
        || hp_open_side_room(op, t) != 0 || hp_flow_timer_room(t) != 0 || hp_flow_queued_room(t) != 0)
        HP_DECLINE(HP_DECLINE_OTHER);
    /* --- the open (Opener.open) */
    port = hp_ports_allocate_v4(tm->pool, p->proto, src, p->sport, dst, p->dport);
    if (port < 0) {
        op->error = 1;
        return 0;
    }
    if (tm->nat_alloc) {
        hint = ((uint64_t)tm->eni_ip << 16) | (uint32_t)port;
        nat_port = hp_nat_allocate(tm->nat_pool, tm->nat_proto, tm->nat_dport, 0, tm->nat_dst, &hint, 1, &addr);
        if (nat_port < 0) {
            op->error = 1;
            return 0;
        }
        nat_ip = tm->nat_ips[addr];
    }
    eni->conns++;
    if (eni->conns > eni->peak)
        eni->peak = eni->conns;
    tm->last = ts;
    tm->opened++;
    op->opened++;
    idx = hp_flow_alloc(t, p->proto); /* room made above */
    s = &op->side[idx];
    memset(s, 0, sizeof(*s));
    n = hp_open_records(op, tm, 0, p->proto, (uint16_t)port, (uint16_t)nat_port, ts, s->rec[0]);
    if (n < 0)
        op->error = 1;
    s->nrec[0] = (uint8_t)(n < 0 ? 0 : n);
    s->created = ts;
    s->tmpl = (uint32_t)(tm - op->tmpls) + 1;
    s->seq = op->seq++;
    /* the entry (FlowTable.open) */
    c = &t->conns[idx];
    c->state = state;
    c->expires = ts + (p->proto == 6 ? t->tcp_timeout[state] : t->udp_timeout[state]);
    c->last_seen = ts;
    c->ip[0] = src; c->ip[1] = dst; c->ip[2] = tm->eni_ip; c->ip[3] = nat_ip;
    c->port[0] = p->sport; c->port[1] = p->dport; c->port[2] = (uint16_t)port; c->port[3] = (uint16_t)nat_port;
    c->gen = t->gen;
    second = (int64_t)floor(ts);
    window = (uint32_t)(second / t->interval);
    c->window = window;
    c->bits = (uint8_t)((tm->nat ? HP_C_NAT : 0) | (HP_KIND_REPLY << HP_C_OWNER_SHIFT));
    hp_flow_key(t, (uint32_t)idx, HP_KIND_OUT); /* room made above */
    hp_flow_key(t, (uint32_t)idx, HP_KIND_REPLY);
    c = &t->conns[idx];
    c->kind[HP_KIND_OUT] = HP_K_KEY | HP_K_LEARNED | tm->kflags;
    c->kind[HP_KIND_REPLY] = HP_K_KEY | HP_K_LEARNED | tm->kflags | HP_K_FIRST;
    c->bits |= HP_C_TIMED;
    hp_flow_timer_queue(t, (uint32_t)idx, hp_flow_timer_due(t, c));
    op->live++;
    if (op->base + op->live > op->peak)
        op->peak = op->base + op->live;
    return 1;
}

static inline void hp_open_attach(hp_opener *op, hp_flow_table *t)
{
    t->open_hook = hp_open_try;
    t->open_ctx = op;
}

static inline void hp_open_detach(hp_flow_table *t)
{
    t->open_hook = NULL;
    t->open_ctx = NULL;
}

#endif /* HP_OPEN_H */
