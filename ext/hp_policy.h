/*
 * hp_policy.h -- compiled security-group, network-ACL and route decisions for a new connection.
 *
 * Everything is `static inline` C99 so that policy.pxi includes it with `cdef extern` and a
 * compiled dataplane loop calls the decisions without the GIL.  Nothing here allocates while it
 * decides; the tables are built once from hyperplane.vpc.compiled (policy.pxi) and must not be
 * changed (a new group set registered) while a nogil loop reads them.
 *
 * The semantics are those of hyperplane/reference/policy.py, decision for decision:
 *
 * Security groups (sg_match): allow-only, the union of the rules of a *group set* (an
 *   interface's groups, in order).  A set's rules are copied, in group order then rule order,
 *   into six lists per direction: (IPv4, IPv6) x (TCP, UDP, other protocols).  The TCP list holds
 *   the rows whose protocol is TCP or all, and so on, so a lookup scans only the rows that can
 *   match and the first matching row is the reference's first matching rule.  A row is one peer
 *   prefix of a rule (a prefix list is one row per CIDR, a referenced group one host row per
 *   member).  Port ranges apply to TCP and UDP only; any other protocol matches all ports (the
 *   reference ignores ICMP type and code).  The answer is the global rule index (Policy.rule_ids
 *   maps it back to SgRule.id), or -1.
 *
 * Network ACLs (nacl_eval): rows in rule-number order, split the same way per (ACL, direction,
 *   version, protocol class); the first match decides.  The `*` denies are ordinary rows
 *   (32767 IPv4, 32768 IPv6); when nothing matches the answer is deny by `*` too.
 *
 * Routes (route_lookup): one Lpm4 and one Lpm6 per route table (hp_lpm.h), holding for each
 *   prefix the compiled row (+1) of the route AWS prefers for that exact prefix (static CIDR,
 *   then prefix list by lowest id, then propagated, then table order: the compiled rows are in
 *   that order and the first row of a prefix is kept).  The longest prefix then decides.
 *
 * Exempt addresses (exempt): Amazon DNS, metadata, Time Sync, subnet routers (an exact-match
 *   hash of host addresses) and UDP 67/68 (DHCP) are never filtered by SGs or NACLs.
 */
#ifndef HP_POLICY_H
#define HP_POLICY_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "hp_lpm.h"

#define HP_POL_CLASSES 3          /* TCP, UDP, other */
#define HP_POL_SEGS_PER_OWNER 12  /* 2 directions x 2 versions x 3 classes */
#define HP_NACL_STAR_V4 32767
#define HP_NACL_STAR_V6 32768

/* One rule row: a peer prefix (IPv4 in lo/mlo, hi = mhi = 0) and what the rule covers. */
typedef struct {
    uint64_t hi, lo, mhi, mlo;
    int32_t port_lo, port_hi;  /* inclusive, TCP/UDP only */
    int32_t id;                /* SG: global rule index; NACL: rule number */
    int16_t proto;             /* -1 all */
    uint8_t allow;             /* NACL: 1 allow, 0 deny */
    uint8_t pad;
} hp_pol_rule;

typedef struct {
    uint32_t start, end;
} hp_pol_seg;

/* Port index of one TCP or UDP segment of a group set (hp_sg_index_build).  The port line is cut
 * at every rule's port_lo and port_hi + 1 into `nbrk` + 1 intervals; interval j holds, in
 * position order, the rows of the segment whose port range covers it (u32[off + j] ..
 * u32[off + j + 1] - 1 index u32[]: positions relative to the segment's start).  Rows of protocol
 * "all" are listed once (u32[all .. all + n_all - 1]).  indexed == 0: scan the segment. */
typedef struct {
    uint32_t indexed;
    uint32_t nbrk;   /* breakpoints: brk[brk_at .. brk_at + nbrk - 1], ascending */
    uint32_t brk_at;
    uint32_t off;    /* nbrk + 2 absolute offsets into u32 */
    uint32_t all, n_all;
} hp_sg_ix;

typedef struct {
    /* security groups: rows of every registered group set; segs[set * 12 + seg] */
    hp_pol_rule *sg_rows;
    size_t sg_n, sg_cap;
    hp_pol_seg *sg_segs;
    uint32_t n_sets, sets_cap;
    /* port indexes: ix[set * 12 + seg] (TCP and UDP segments), and their pools */
    hp_sg_ix *sg_ix;
    int32_t *sg_ix_brk;
    size_t sg_ix_brk_n, sg_ix_brk_cap;
    uint32_t *sg_ix_u32;
    size_t sg_ix_u32_n, sg_ix_u32_cap;
    /* network ACLs: segs[acl * 12 + seg] */
    hp_pol_rule *nacl_rows;
    hp_pol_seg *nacl_segs;
    uint32_t n_nacls;
    /* route tables: one Lpm4/Lpm6 each (owned by policy.pxi's Lpm4/Lpm6 objects) */
    const hp_lpm4 **lpm4;
    const hp_lpm6 **lpm6;
    uint32_t n_tables;
    /* compiled route rows: what a lookup's row means */
    uint8_t *route_kind;
    uint8_t *route_state;
    int32_t *route_target;
    uint32_t n_routes;
    /* exempt host addresses: (hi, lo, 32 or 128) */
    hp_pfxtab exempt;
} hp_policy;

/* Segment index of (owner, direction, version, protocol) inside an owner's 12 segments. */
static inline uint32_t hp_pol_seg_index(int egress, int version, int proto)
{
    uint32_t cls = proto == 6 ? 0u : (proto == 17 ? 1u : 2u);
    return ((uint32_t)(egress != 0) * 2u + (uint32_t)(version == 6)) * 3u + cls;
}

static inline int hp_pol_addr_in(const hp_pol_rule *r, uint64_t hi, uint64_t lo)
{
    return (lo & r->mlo) == r->lo && (hi & r->mhi) == r->hi;
}

/* Does row r cover protocol `proto`, port `port`?  The row is already in the list of its
 * protocol class: in the TCP and UDP lists a row is either "all" or exactly that protocol. */
static inline int hp_pol_covers(const hp_pol_rule *r, int tcp_udp, int proto, int port)
{
    if (r->proto < 0)
        return 1;
    if (tcp_udp)
        return r->port_lo <= port && port <= r->port_hi;
    return r->proto == proto;
}

static inline int32_t hp_pol_first(const hp_pol_rule *rows, hp_pol_seg seg, int proto,
                                   uint64_t hi, uint64_t lo, int port)
{
    uint32_t i;
    int tcp_udp = proto == 6 || proto == 17;
    for (i = seg.start; i < seg.end; i++) {
        const hp_pol_rule *r = &rows[i];
        if (hp_pol_covers(r, tcp_udp, proto, port) && hp_pol_addr_in(r, hi, lo))
            return (int32_t)i;
    }
    return -1;
}

/* ---- decisions ------------------------------------------------------------------------- */

/* Number of the `m` ascending breakpoints `brk` that are <= v. */
static inline uint32_t hp_pol_upper(const int32_t *brk, uint32_t m, int64_t v)
{
    uint32_t lo = 0, n = m;
    while (n > 0) {
        uint32_t half = n / 2;
        if (brk[lo + half] <= v) {
            lo += half + 1;
            n -= half + 1;
        } else {
            n = half;
        }
    }
    return lo;
}

/* The global index of the first rule of group set `set` that allows the packet, or -1.
 * `hi`/`lo`: the peer (destination for egress, source for ingress); `port`: the destination
 * port.  `set` must be < p->n_sets. */
static inline int32_t hp_sg_match(const hp_policy *p, uint32_t set, int egress, int proto,
                                  int version, uint64_t hi, uint64_t lo, int port)
{
    uint32_t k = set * HP_POL_SEGS_PER_OWNER + hp_pol_seg_index(egress, version, proto);
    hp_pol_seg seg = p->sg_segs[k];
    const hp_sg_ix *ix = &p->sg_ix[k];
    int32_t row;
    if (ix->indexed && (proto == 6 || proto == 17)) {
        /* the lowest position among the rows covering the port and those of protocol "all" */
        const hp_pol_rule *rows = p->sg_rows + seg.start;
        const uint32_t *u = p->sg_ix_u32;
        const uint32_t *e, *ee, *a, *ae;
        /* the port's interval: the number of breakpoints <= port */
        uint32_t lo_i = hp_pol_upper(p->sg_ix_brk + ix->brk_at, ix->nbrk, port), best = UINT32_MAX;
        e = u + u[ix->off + lo_i];
        ee = u + u[ix->off + lo_i + 1];
        for (; e < ee; e++)
            if (hp_pol_addr_in(&rows[*e], hi, lo)) {
                best = *e;
                break;
            }
        a = u + ix->all;
        ae = a + ix->n_all;
        for (; a < ae && *a < best; a++)
            if (hp_pol_addr_in(&rows[*a], hi, lo)) {
                best = *a;
                break;
            }
        return best == UINT32_MAX ? -1 : rows[best].id;
    }
    row = hp_pol_first(p->sg_rows, seg, proto, hi, lo, port);
    return row < 0 ? -1 : p->sg_rows[row].id;
}

/* The rule number deciding the packet in ACL `acl` (a NaclTables index; -1 = the subnet has no
 * ACL: allowed, like a default ACL, reported as `*`); *allow receives 1 or 0.  Rule numbers
 * >= 32767 are the `*` denies. */
static inline int32_t hp_nacl_eval(const hp_policy *p, int32_t acl, int egress, int proto, int version,
                                   uint64_t hi, uint64_t lo, int port, int *allow)
{
    hp_pol_seg seg;
    int32_t row;
    if (acl < 0 || (uint32_t)acl >= p->n_nacls) {
        *allow = acl < 0;
        return version == 6 ? HP_NACL_STAR_V6 : HP_NACL_STAR_V4;
    }
    seg = p->nacl_segs[(uint32_t)acl * HP_POL_SEGS_PER_OWNER + hp_pol_seg_index(egress, version, proto)];
    row = hp_pol_first(p->nacl_rows, seg, proto, hi, lo, port);
    if (row < 0) {
        *allow = 0;
        return version == 6 ? HP_NACL_STAR_V6 : HP_NACL_STAR_V4;
    }
    *allow = p->nacl_rows[row].allow;
    return p->nacl_rows[row].id;
}

/* The compiled route row (RouteTables index) table `table` uses for the address, or -1 (no
 * route, or table < 0).  p->route_kind/route_target/route_state[row] describe it. */
static inline int32_t hp_route_lookup(const hp_policy *p, int32_t table, int version, uint64_t hi, uint64_t lo)
{
    uint32_t v;
    if (table < 0 || (uint32_t)table >= p->n_tables)
        return -1;
    v = version == 6 ? hp_lpm6_lookup(p->lpm6[table], hi, lo) : hp_lpm4_lookup(p->lpm4[table], (uint32_t)lo);
    return (int32_t)v - 1;
}

/* 1 when SGs and NACLs do not filter traffic to (or from) this address / port. */
static inline int hp_policy_exempt(const hp_policy *p, int version, uint64_t hi, uint64_t lo, int proto, int dport)
{
    if (proto == 17 && (dport == 67 || dport == 68))
        return 1;
    if (p->exempt.count == 0)
        return 0;
    return hp_pfxtab_get(&p->exempt, hi, lo, version == 6 ? 128u : 32u) != 0;
}

/* ---- building (not while a lookup runs) ------------------------------------------------ */

static inline int hp_policy_init(hp_policy *p)
{
    memset(p, 0, sizeof(*p));
    return hp_pfxtab_init(&p->exempt);
}

static inline void hp_policy_free(hp_policy *p)
{
    free(p->sg_rows);
    free(p->sg_segs);
    free(p->sg_ix);
    free(p->sg_ix_brk);
    free(p->sg_ix_u32);
    free(p->nacl_rows);
    free(p->nacl_segs);
    free((void *)p->lpm4);
    free((void *)p->lpm6);
    free(p->route_kind);
    free(p->route_state);
    free(p->route_target);
    hp_pfxtab_free(&p->exempt);
    memset(p, 0, sizeof(*p));
}

static inline int hp_pol_cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static inline int hp_pol_grow(void **buf, size_t *cap, size_t need, size_t item)
{
    size_t c = *cap ? *cap : 256;
    void *grown;
    if (need <= *cap)
        return 0;
    while (c < need)
        c *= 2;
    grown = realloc(*buf, c * item);
    if (grown == NULL)
        return -1;
    *buf = grown;
    *cap = c;
    return 0;
}

/* Builds the port index of the TCP or UDP segment of `n` rows (positions 0..n-1) into *ix.
 * When the interval lists would hold more than 32 entries per row (deeply nested ranges),
 * leaves the segment unindexed (scanned).  0, or -1 when out of memory. */
static inline int hp_sg_index_build(hp_policy *p, hp_sg_ix *ix, const hp_pol_rule *rows, uint32_t n)
{
    int32_t *brk;  /* every rule's port_lo and port_hi + 1 (both fit: port_hi + 1 only below INT32_MAX) */
    int64_t *cnt;
    uint32_t *fill;
    uint32_t i, m = 0, j, n_all = 0;
    size_t total = 0;
    int rc = -1;
    memset(ix, 0, sizeof(*ix));
    if (n < 8)
        return 0;  /* a short scan is as fast */
    brk = (int32_t *)malloc((size_t)2 * n * sizeof(int32_t));
    if (brk == NULL)
        return -1;
    for (i = 0; i < n; i++) {
        if (rows[i].proto < 0) {
            n_all++;
            continue;
        }
        if (rows[i].port_lo > rows[i].port_hi)
            continue;  /* covers no port */
        brk[m++] = rows[i].port_lo;
        if (rows[i].port_hi < INT32_MAX)
            brk[m++] = rows[i].port_hi + 1;
    }
    qsort(brk, m, sizeof(int32_t), hp_pol_cmp_i32);
    for (i = 0, j = 0; i < m; i++)
        if (j == 0 || brk[i] != brk[j - 1])
            brk[j++] = brk[i];
    m = j;
    /* intervals 0..m: interval j = [brk[j-1], brk[j]) */
    cnt = (int64_t *)calloc((size_t)m + 2, sizeof(int64_t));
    fill = (uint32_t *)malloc(((size_t)m + 1) * sizeof(uint32_t));
    if (cnt == NULL || fill == NULL)
        goto out;
    for (i = 0; i < n; i++) {
        uint32_t a, b;
        if (rows[i].proto < 0 || rows[i].port_lo > rows[i].port_hi)
            continue;
        a = hp_pol_upper(brk, m, rows[i].port_lo);
        b = rows[i].port_hi < INT32_MAX ? hp_pol_upper(brk, m, (int64_t)rows[i].port_hi + 1) : m + 1;
        cnt[a]++;
        cnt[b]--;
        total += b - a;
    }
    if (total > (size_t)32 * n + 4096) {
        rc = 0;  /* unindexed */
        goto out;
    }
    if (hp_pol_grow((void **)&p->sg_ix_brk, &p->sg_ix_brk_cap, p->sg_ix_brk_n + m, sizeof(int32_t)) != 0
        || hp_pol_grow((void **)&p->sg_ix_u32, &p->sg_ix_u32_cap, p->sg_ix_u32_n + (m + 2) + total + n_all,
                       sizeof(uint32_t)) != 0
        || p->sg_ix_u32_n + (m + 2) + total + n_all > UINT32_MAX)
        goto out;
    ix->nbrk = m;
    ix->brk_at = (uint32_t)p->sg_ix_brk_n;
    memcpy(p->sg_ix_brk + p->sg_ix_brk_n, brk, (size_t)m * sizeof(int32_t));
    p->sg_ix_brk_n += m;
    ix->off = (uint32_t)p->sg_ix_u32_n;
    {
        uint32_t *u = p->sg_ix_u32;
        uint32_t at = ix->off + m + 2;  /* entries follow the offsets */
        int64_t run = 0;
        for (j = 0; j <= m; j++) {
            run += cnt[j];
            u[ix->off + j] = at;
            fill[j] = at;
            at += (uint32_t)run;
        }
        u[ix->off + m + 1] = at;
        for (i = 0; i < n; i++) {  /* in position order: every list ascending */
            uint32_t a, b;
            if (rows[i].proto < 0 || rows[i].port_lo > rows[i].port_hi)
                continue;
            a = hp_pol_upper(brk, m, rows[i].port_lo);
            b = rows[i].port_hi < INT32_MAX ? hp_pol_upper(brk, m, (int64_t)rows[i].port_hi + 1) : m + 1;
            for (j = a; j < b; j++)
                u[fill[j]++] = i;
        }
        ix->all = at;
        ix->n_all = n_all;
        for (i = 0; i < n; i++)
            if (rows[i].proto < 0)
                u[at++] = i;
        p->sg_ix_u32_n = at;
    }
    ix->indexed = 1;
    rc = 0;
out:
    free(brk);
    free(cnt);
    free(fill);
    return rc;
}

/* Appends a group set: `n` rows and its 12 segments (offsets into `rows`), and indexes its TCP
 * and UDP segments by port.  Returns the set's index, or -1 when out of memory. */
static inline int32_t hp_policy_add_sg_set(hp_policy *p, const hp_pol_rule *rows, size_t n, const hp_pol_seg *segs)
{
    uint32_t k;
    if (p->sg_n + n > p->sg_cap) {
        size_t cap = p->sg_cap ? p->sg_cap : 64;
        hp_pol_rule *grown;
        while (cap < p->sg_n + n)
            cap *= 2;
        grown = (hp_pol_rule *)realloc(p->sg_rows, cap * sizeof(hp_pol_rule));
        if (grown == NULL)
            return -1;
        p->sg_rows = grown;
        p->sg_cap = cap;
    }
    if (p->n_sets == p->sets_cap) {
        uint32_t cap = p->sets_cap ? p->sets_cap * 2 : 8;
        hp_pol_seg *grown = (hp_pol_seg *)realloc(p->sg_segs, (size_t)cap * HP_POL_SEGS_PER_OWNER * sizeof(hp_pol_seg));
        if (grown == NULL)
            return -1;
        p->sg_segs = grown;
        {
            hp_sg_ix *g = (hp_sg_ix *)realloc(p->sg_ix, (size_t)cap * HP_POL_SEGS_PER_OWNER * sizeof(hp_sg_ix));
            if (g == NULL)
                return -1;
            p->sg_ix = g;
        }
        p->sets_cap = cap;
    }
    if (n)
        memcpy(p->sg_rows + p->sg_n, rows, n * sizeof(hp_pol_rule));
    for (k = 0; k < HP_POL_SEGS_PER_OWNER; k++) {
        p->sg_segs[p->n_sets * HP_POL_SEGS_PER_OWNER + k].start = (uint32_t)p->sg_n + segs[k].start;
        p->sg_segs[p->n_sets * HP_POL_SEGS_PER_OWNER + k].end = (uint32_t)p->sg_n + segs[k].end;
    }
    for (k = 0; k < HP_POL_SEGS_PER_OWNER; k++) {
        hp_sg_ix *ix = &p->sg_ix[p->n_sets * HP_POL_SEGS_PER_OWNER + k];
        if (k % HP_POL_CLASSES == 2) {  /* other protocols: scanned */
            memset(ix, 0, sizeof(*ix));
            continue;
        }
        if (hp_sg_index_build(p, ix, p->sg_rows + p->sg_n + segs[k].start, segs[k].end - segs[k].start) != 0)
            return -1;
    }
    p->sg_n += n;
    return (int32_t)p->n_sets++;
}

static inline int hp_policy_add_exempt(hp_policy *p, int version, uint64_t hi, uint64_t lo)
{
    uint32_t previous;
    return hp_pfxtab_put(&p->exempt, hi, lo, version == 6 ? 128u : 32u, 1u, &previous) < 0 ? -1 : 0;
}

/* ---- batch forms (benchmarks, and a model for a compiled loop) --------------------------- */

static inline void hp_sg_match_batch(const hp_policy *p, const int32_t *set, const uint8_t *egress,
                                     const int16_t *proto, const uint8_t *version, const uint64_t *hi,
                                     const uint64_t *lo, const int32_t *port, int32_t *out, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        out[i] = (set[i] < 0 || (uint32_t)set[i] >= p->n_sets) ? -1
                 : hp_sg_match(p, (uint32_t)set[i], egress[i], proto[i], version[i], hi[i], lo[i], port[i]);
}

static inline void hp_nacl_eval_batch(const hp_policy *p, const int32_t *acl, const uint8_t *egress,
                                      const int16_t *proto, const uint8_t *version, const uint64_t *hi,
                                      const uint64_t *lo, const int32_t *port, uint8_t *allow, int32_t *rule,
                                      size_t n)
{
    size_t i;
    int a;
    for (i = 0; i < n; i++) {
        rule[i] = hp_nacl_eval(p, acl[i], egress[i], proto[i], version[i], hi[i], lo[i], port[i], &a);
        allow[i] = (uint8_t)a;
    }
}

static inline void hp_route_lookup_batch(const hp_policy *p, const int32_t *table, const uint8_t *version,
                                         const uint64_t *hi, const uint64_t *lo, int32_t *out, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        out[i] = hp_route_lookup(p, table[i], version[i], hi[i], lo[i]);
}

#endif /* HP_POLICY_H */
