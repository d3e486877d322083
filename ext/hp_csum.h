/* hp_csum.h: internet checksums (RFC 1071), incremental updates (RFC 1624) and the in-place
 * address/port rewrite with checksum fix-up. Header-only, no allocation, no global state; every
 * function may be called without the GIL. The pure-Python twin is hyperplane/checksum.py.
 *
 * RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m') in one's complement arithmetic, for each 16-bit word m
 * of a changed field (an IPv4 address is 2 words, an IPv6 address 8).
 */
#ifndef HP_CSUM_H
#define HP_CSUM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Fold a 64-bit accumulator of 16-bit words to a 16-bit one's complement sum. */
static inline uint16_t hp_fold(uint64_t s)
{
    while (s >> 16)
        s = (s & 0xFFFFu) + (s >> 16);
    return (uint16_t)s;
}

/* One's complement sum of the big-endian 16-bit words of p[0..n) (an odd last byte is padded with
 * a zero byte), plus the partial sum `start`; folded, not complemented. */
static inline uint16_t hp_ones_sum(const uint8_t *p, size_t n, uint64_t start)
{
    uint64_t s = 0;
    size_t i = 0;
    /* 4 bytes at a time: the sum of big-endian 32-bit words folds to the same 16-bit sum. */
    for (; i + 4 <= n; i += 4)
        s += ((uint64_t)p[i] << 24) | ((uint64_t)p[i + 1] << 16) | ((uint64_t)p[i + 2] << 8) | p[i + 3];
    for (; i + 2 <= n; i += 2)
        s += ((uint64_t)p[i] << 8) | p[i + 1];
    if (i < n)
        s += (uint64_t)p[i] << 8;
    s = (s & 0xFFFFFFFFu) + (s >> 32);
    s = (s & 0xFFFFFFFFu) + (s >> 32);
    return hp_fold(hp_fold(s) + (uint64_t)hp_fold(start));
}

/* RFC 1071 checksum: the complement of the one's complement sum. */
static inline uint16_t hp_checksum(const uint8_t *p, size_t n, uint64_t start)
{
    return (uint16_t)~hp_ones_sum(p, n, start);
}

/* RFC 1624 eqn. 3 for one 16-bit word changing from old_ to new_. */
static inline uint16_t hp_csum_update16(uint16_t hc, uint16_t old_, uint16_t new_)
{
    uint64_t s = (uint64_t)(uint16_t)~hc + (uint16_t)~old_ + new_;
    return (uint16_t)~hp_fold(s);
}

/* RFC 1624 for a 32-bit field (an IPv4 address). */
static inline uint16_t hp_csum_update32(uint16_t hc, uint32_t old_, uint32_t new_)
{
    uint64_t s = (uint64_t)(uint16_t)~hc;
    s += (uint16_t)~(old_ >> 16);
    s += (uint16_t)~old_;
    s += (new_ >> 16) & 0xFFFFu;
    s += new_ & 0xFFFFu;
    return (uint16_t)~hp_fold(s);
}

/* RFC 1624 for a 128-bit field (an IPv6 address) given as high and low 64-bit halves. */
static inline uint16_t hp_csum_update128(uint16_t hc, uint64_t old_hi, uint64_t old_lo,
                                         uint64_t new_hi, uint64_t new_lo)
{
    uint64_t s = (uint64_t)(uint16_t)~hc;
    int shift;
    for (shift = 0; shift < 64; shift += 16) {
        s += (uint16_t)~(old_hi >> shift);
        s += (uint16_t)~(old_lo >> shift);
        s += (new_hi >> shift) & 0xFFFFu;
        s += (new_lo >> shift) & 0xFFFFu;
    }
    return (uint16_t)~hp_fold(s);
}

static inline uint16_t hp_get16(const uint8_t *p) { return (uint16_t)(((unsigned)p[0] << 8) | p[1]); }

static inline void hp_put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline uint64_t hp_get64(const uint8_t *p)
{
    uint64_t v = 0;
    int i;
    for (i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static inline void hp_put64(uint8_t *p, uint64_t v)
{
    int i;
    for (i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

/* Does the IPv6 packet at buf[l3] carry a routing header with segments left before its L4 header
 * at buf[l4]? Then its upper-layer checksum is computed with the final destination from the
 * routing header (RFC 8200 8.1), not with the header's destination address. */
static inline int hp_ipv6_routed(const uint8_t *buf, int64_t len, int64_t l3, int64_t l4)
{
    int64_t off = l3 + 40;
    int nh, count = 0;
    if (l3 + 40 > len || l4 > len)
        return 0;
    nh = buf[l3 + 6];
    while (off + 8 <= l4 && count++ < 16 && (nh == 0 || nh == 43 || nh == 44 || nh == 60 || nh == 51)) {
        if (nh == 43 && buf[off + 3] != 0)
            return 1;
        if (nh == 44) {
            nh = buf[off];
            off += 8;
        } else {
            int64_t hlen = nh == 51 ? ((int64_t)buf[off + 1] + 2) * 4 : ((int64_t)buf[off + 1] + 1) * 8;
            nh = buf[off];
            off += hlen;
        }
    }
    return 0;
}

/* hp_rewrite results */
#define HP_RW_OK 0
#define HP_RW_NOT_IP (-1)   /* version is not 4 or 6, or l3 < 0 */
#define HP_RW_RANGE (-2)    /* address or port out of range */
#define HP_RW_SHORT (-3)    /* the address field is not inside the buffer */

/* Rewrite the source (dst == 0) or destination (dst != 0) address, and the port unless port < 0,
 * of the IP packet whose header is at buf[l3] (L4 header at buf[l4], or l4 < 0 for a non-first
 * fragment), fixing checksums incrementally: the IPv4 header checksum; the TCP checksum; the UDP
 * checksum (0 over IPv4 = "no checksum" stays 0; a result of 0 is written as 0xFFFF); the ICMPv6
 * checksum (addresses only). An IPv6 destination change leaves the L4 checksum's address part
 * alone when a routing header with segments left is present (the pseudo-header holds the final
 * destination). Checksum fields and ports outside buf[0..n) are left alone. Nothing
 * is written unless the arguments are valid. An IPv4 address is addr_lo (addr_hi must be 0). */
static inline int hp_rewrite(uint8_t *buf, size_t n, int64_t l3, int64_t l4, int version, int proto,
                             int dst, uint64_t addr_hi, uint64_t addr_lo, int32_t port)
{
    uint64_t old_hi = 0, old_lo = 0;
    int64_t at, len = (int64_t)n;
    uint16_t hc;

    if ((version != 4 && version != 6) || l3 < 0)
        return HP_RW_NOT_IP;
    if (port > 0xFFFF || (version == 4 && (addr_hi != 0 || addr_lo > 0xFFFFFFFFu)))
        return HP_RW_RANGE;
    if (l3 >= len)
        return HP_RW_SHORT;
    if (l4 > len)
        l4 = len; /* nothing of the L4 header is in the buffer */
    if (version == 4) {
        at = l3 + (dst ? 16 : 12);
        if (at + 4 > len)
            return HP_RW_SHORT;
        old_lo = ((uint64_t)hp_get16(buf + at) << 16) | hp_get16(buf + at + 2);
        hp_put16(buf + at, (uint16_t)(addr_lo >> 16));
        hp_put16(buf + at + 2, (uint16_t)addr_lo);
        hp_put16(buf + l3 + 10, hp_csum_update32(hp_get16(buf + l3 + 10), (uint32_t)old_lo, (uint32_t)addr_lo));
    } else {
        at = l3 + (dst ? 24 : 8);
        if (at + 16 > len)
            return HP_RW_SHORT;
        old_hi = hp_get64(buf + at);
        old_lo = hp_get64(buf + at + 8);
        hp_put64(buf + at, addr_hi);
        hp_put64(buf + at + 8, addr_lo);
    }
    if (l4 < 0)
        return HP_RW_OK;
    if (proto == 6 || proto == 17) {
        int64_t csum_at = l4 + (proto == 6 ? 16 : 6);
        int64_t port_at = l4 + (dst ? 2 : 0);
        int has_port = port >= 0 && port_at + 2 <= len;
        uint16_t old_port = 0;
        if (has_port) {
            old_port = hp_get16(buf + port_at);
            hp_put16(buf + port_at, (uint16_t)port);
        }
        if (csum_at + 2 > len)
            return HP_RW_OK;
        hc = hp_get16(buf + csum_at);
        if (proto == 17 && hc == 0 && version == 4)
            return HP_RW_OK; /* UDP over IPv4 without a checksum */
        if (version == 4)
            hc = hp_csum_update32(hc, (uint32_t)old_lo, (uint32_t)addr_lo);
        else if (!(dst && hp_ipv6_routed(buf, len, l3, l4)))
            hc = hp_csum_update128(hc, old_hi, old_lo, addr_hi, addr_lo);
        if (has_port)
            hc = hp_csum_update16(hc, old_port, (uint16_t)port);
        if (proto == 17 && hc == 0)
            hc = 0xFFFF;
        hp_put16(buf + csum_at, hc);
    } else if (proto == 58 && version == 6 && l4 + 4 <= len && !(dst && hp_ipv6_routed(buf, len, l3, l4))) {
        hp_put16(buf + l4 + 2, hp_csum_update128(hp_get16(buf + l4 + 2), old_hi, old_lo, addr_hi, addr_lo));
    }
    return HP_RW_OK;
}

#endif /* HP_CSUM_H */
