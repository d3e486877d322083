/* hp_parse.h: the packet parser over a C struct (link layers, IPv4/IPv6 + extension headers,
 * TCP/UDP). Header-only, no allocation, no global state, callable without the GIL.
 *
 * It implements exactly the rules of the pure-Python parser hyperplane/packet.py (read its module
 * docstring); tests/property/test_parser_fuzz.py checks that the two agree on arbitrary bytes.
 * Every read is bounds-checked against the captured length: whatever the bytes say, nothing at or
 * beyond data[caplen] is touched.
 */
#ifndef HP_PARSE_H
#define HP_PARSE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* link types (pcap LINKTYPE_*) */
#define HP_LINKTYPE_NULL 0
#define HP_LINKTYPE_ETHERNET 1
#define HP_LINKTYPE_RAW_BSD 12
#define HP_LINKTYPE_RAW_OPENBSD 14
#define HP_LINKTYPE_RAW 101
#define HP_LINKTYPE_LOOP 108
#define HP_LINKTYPE_LINUX_SLL 113
#define HP_LINKTYPE_IPV4 228
#define HP_LINKTYPE_IPV6 229
#define HP_LINKTYPE_LINUX_SLL2 276

#define HP_MAX_VLAN_TAGS 8
#define HP_MAX_IPV6_EXT_HEADERS 10

/* error codes; the strings (hp_error_str) are hyperplane.packet.ERRORS, in this order */
enum {
    HP_E_OK = 0,
    HP_E_LINK,
    HP_E_NOT_IP,
    HP_E_LINKTYPE,
    HP_E_VLAN,
    HP_E_IP,
    HP_E_VERSION,
    HP_E_IPV4,
    HP_E_IHL,
    HP_E_IPV4_OPTS,
    HP_E_TOTLEN,
    HP_E_IPV6,
    HP_E_IPV6_EXT,
    HP_E_IPV6_EXT_COUNT,
    HP_E_TCP,
    HP_E_TCP_DOFF,
    HP_E_TCP_OPTS,
    HP_E_UDP,
    HP_E_UDP_LEN,
    HP_E_COUNT
};

static const char *const hp_error_strings[HP_E_COUNT] = {
    "",
    "truncated link header",
    "not ip",
    "unsupported linktype",
    "too many vlan tags",
    "truncated ip header",
    "bad ip version",
    "truncated ipv4 header",
    "bad ihl",
    "truncated ipv4 options",
    "bad ipv4 total length",
    "truncated ipv6 header",
    "truncated ipv6 extension header",
    "too many ipv6 extension headers",
    "truncated tcp header",
    "bad tcp data offset",
    "truncated tcp options",
    "truncated udp header",
    "bad udp length",
};

static inline const char *hp_error_str(int code)
{
    return (code >= 0 && code < HP_E_COUNT) ? hp_error_strings[code] : "?";
}

/* The parse result: the fields of hyperplane.packet.Parsed. Addresses are 128-bit big-endian
 * numbers split in two halves (an IPv4 address is src_lo / dst_lo with the _hi half 0). Offsets
 * are from the start of the frame; l3 = l4 = -1 when absent. */
typedef struct hp_pkt {
    uint64_t src_hi, src_lo, dst_hi, dst_lo;
    int32_t l3;       /* IP header offset */
    int32_t ip_len;   /* IP total length clipped to the captured bytes */
    int32_t l4;       /* L4 header offset, -1 when absent (non-first fragment) */
    uint16_t sport, dport;
    uint8_t ok;       /* 1 = parsed cleanly */
    uint8_t error;    /* HP_E_* */
    uint8_t not_ip;   /* the frame is not IP (ARP, ...) */
    uint8_t version;  /* 4 or 6 */
    uint8_t proto;    /* upper-layer protocol after IPv6 extension headers */
    uint8_t tcp_flags;
    uint8_t fragment; /* MF set, offset > 0, or an IPv6 fragment header */
} hp_pkt;

static inline uint16_t hp_rd16(const uint8_t *p) { return (uint16_t)(((unsigned)p[0] << 8) | p[1]); }

static inline uint64_t hp_rd64(const uint8_t *p)
{
    uint64_t v = 0;
    int i;
    for (i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static inline int hp_fail(hp_pkt *p, int error)
{
    p->ok = 0;
    p->error = (uint8_t)error;
    return 0;
}

/* TCP/UDP at d[l4]; `end` = end of the captured IP packet, `wire_end` = the end the IP header
 * declares; `lenient` for a first fragment with more to come. l4 <= end <= caplen. */
static inline int hp_parse_l4(hp_pkt *p, const uint8_t *d, int64_t l4, int64_t end, int64_t wire_end,
                              int proto, int lenient)
{
    int64_t have = end - l4;
    p->l4 = (int32_t)l4;
    if (proto == 6) {
        if (lenient) {
            if (have >= 4) {
                p->sport = hp_rd16(d + l4);
                p->dport = hp_rd16(d + l4 + 2);
            }
            if (have >= 14)
                p->tcp_flags = d[l4 + 13];
        } else {
            int64_t doff;
            if (have < 20)
                return hp_fail(p, HP_E_TCP);
            doff = (int64_t)(d[l4 + 12] >> 4) * 4;
            if (doff < 20)
                return hp_fail(p, HP_E_TCP_DOFF);
            if (doff > have)
                return hp_fail(p, HP_E_TCP_OPTS);
            p->sport = hp_rd16(d + l4);
            p->dport = hp_rd16(d + l4 + 2);
            p->tcp_flags = d[l4 + 13];
        }
    } else if (proto == 17) {
        if (lenient) {
            if (have >= 4) {
                p->sport = hp_rd16(d + l4);
                p->dport = hp_rd16(d + l4 + 2);
            }
        } else {
            int64_t ulen;
            if (have < 8)
                return hp_fail(p, HP_E_UDP);
            ulen = hp_rd16(d + l4 + 4);
            if (ulen < 8 || ulen > wire_end - l4)
                return hp_fail(p, HP_E_UDP_LEN);
            p->sport = hp_rd16(d + l4);
            p->dport = hp_rd16(d + l4 + 2);
        }
    }
    p->ok = 1;
    return 1;
}

static inline int hp_parse_ipv4(hp_pkt *p, const uint8_t *d, int64_t avail, int64_t l3)
{
    int64_t ihl, total;
    unsigned frag;
    int more;
    if (avail < 20)
        return hp_fail(p, HP_E_IPV4);
    ihl = (int64_t)(d[l3] & 0x0F) * 4;
    if (ihl < 20)
        return hp_fail(p, HP_E_IHL);
    if (ihl > avail)
        return hp_fail(p, HP_E_IPV4_OPTS);
    total = hp_rd16(d + l3 + 2);
    if (total < ihl)
        return hp_fail(p, HP_E_TOTLEN);
    p->ip_len = (int32_t)(total < avail ? total : avail);
    p->src_lo = ((uint64_t)hp_rd16(d + l3 + 12) << 16) | hp_rd16(d + l3 + 14);
    p->dst_lo = ((uint64_t)hp_rd16(d + l3 + 16) << 16) | hp_rd16(d + l3 + 18);
    p->proto = d[l3 + 9];
    frag = hp_rd16(d + l3 + 6);
    more = (frag & 0x2000) != 0;
    if (more || (frag & 0x1FFF)) {
        p->fragment = 1;
        if (frag & 0x1FFF) { /* not the first fragment: no L4 header here */
            p->ok = 1;
            return 1;
        }
    }
    return hp_parse_l4(p, d, l3 + ihl, l3 + p->ip_len, l3 + total, p->proto, more);
}

static inline int hp_parse_ipv6(hp_pkt *p, const uint8_t *d, int64_t avail, int64_t l3)
{
    int64_t total, end, off, hlen;
    int nh, count = 0, more = 0;
    if (avail < 40)
        return hp_fail(p, HP_E_IPV6);
    total = 40 + (int64_t)hp_rd16(d + l3 + 4);
    p->ip_len = (int32_t)(total < avail ? total : avail);
    p->src_hi = hp_rd64(d + l3 + 8);
    p->src_lo = hp_rd64(d + l3 + 16);
    p->dst_hi = hp_rd64(d + l3 + 24);
    p->dst_lo = hp_rd64(d + l3 + 32);
    end = l3 + p->ip_len;
    nh = d[l3 + 6];
    off = l3 + 40;
    while (nh == 0 || nh == 43 || nh == 44 || nh == 60 || nh == 51) {
        if (count == HP_MAX_IPV6_EXT_HEADERS)
            return hp_fail(p, HP_E_IPV6_EXT_COUNT);
        count++;
        if (nh == 44) {
            unsigned fo;
            if (off + 8 > end)
                return hp_fail(p, HP_E_IPV6_EXT);
            p->fragment = 1;
            fo = hp_rd16(d + off + 2);
            nh = d[off];
            off += 8;
            if (fo & 0xFFF8) { /* offset > 0: not the first fragment */
                p->proto = (uint8_t)nh;
                p->ok = 1;
                return 1;
            }
            more = (fo & 1) != 0;
            continue;
        }
        if (off + 2 > end)
            return hp_fail(p, HP_E_IPV6_EXT);
        hlen = nh == 51 ? ((int64_t)d[off + 1] + 2) * 4 : ((int64_t)d[off + 1] + 1) * 8;
        if (off + hlen > end)
            return hp_fail(p, HP_E_IPV6_EXT);
        nh = d[off];
        off += hlen;
    }
    p->proto = (uint8_t)nh;
    return hp_parse_l4(p, d, off, end, l3 + total, nh, more);
}

/* The IP header at d[l3]; `expect` = 4 or 6 when the link layer said so, 0 for raw IP. */
static inline int hp_parse_ip(hp_pkt *p, const uint8_t *d, int64_t n, int64_t l3, int expect)
{
    int64_t avail = n - l3;
    int version;
    p->l3 = (int32_t)l3;
    if (avail < 1)
        return hp_fail(p, expect == 4 ? HP_E_IPV4 : expect == 6 ? HP_E_IPV6 : HP_E_IP);
    version = d[l3] >> 4;
    if ((expect && version != expect) || (version != 4 && version != 6))
        return hp_fail(p, HP_E_VERSION);
    p->version = (uint8_t)version;
    if (version == 4)
        return hp_parse_ipv4(p, d, avail, l3);
    return hp_parse_ipv6(p, d, avail, l3);
}

/* Dispatch on an EtherType whose payload starts at d[off], walking VLAN tags. */
static inline int hp_parse_ethertype(hp_pkt *p, const uint8_t *d, int64_t n, unsigned ethertype, int64_t off)
{
    int tags = 0;
    while (ethertype == 0x8100 || ethertype == 0x88A8 || ethertype == 0x9100) {
        if (tags == HP_MAX_VLAN_TAGS)
            return hp_fail(p, HP_E_VLAN);
        if (off + 4 > n)
            return hp_fail(p, HP_E_LINK);
        ethertype = hp_rd16(d + off + 2);
        off += 4;
        tags++;
    }
    if (ethertype == 0x0800)
        return hp_parse_ip(p, d, n, off, 4);
    if (ethertype == 0x86DD)
        return hp_parse_ip(p, d, n, off, 6);
    p->not_ip = 1;
    return hp_fail(p, HP_E_NOT_IP);
}

/* Parse one frame of `caplen` captured bytes. Fills *p completely; returns p->ok. */
static inline int hp_parse(const uint8_t *d, size_t caplen, int linktype, hp_pkt *p)
{
    int64_t n = (int64_t)caplen;
    uint32_t family;
    memset(p, 0, sizeof(*p));
    p->l3 = -1;
    p->l4 = -1;
    if (d == NULL)
        n = 0;
    switch (linktype) {
    case HP_LINKTYPE_ETHERNET:
        if (n < 14)
            return hp_fail(p, HP_E_LINK);
        return hp_parse_ethertype(p, d, n, hp_rd16(d + 12), 14);
    case HP_LINKTYPE_RAW:
    case HP_LINKTYPE_RAW_BSD:
    case HP_LINKTYPE_RAW_OPENBSD:
        return hp_parse_ip(p, d, n, 0, 0);
    case HP_LINKTYPE_IPV4:
        return hp_parse_ip(p, d, n, 0, 4);
    case HP_LINKTYPE_IPV6:
        return hp_parse_ip(p, d, n, 0, 6);
    case HP_LINKTYPE_LINUX_SLL:
        if (n < 16)
            return hp_fail(p, HP_E_LINK);
        return hp_parse_ethertype(p, d, n, hp_rd16(d + 14), 16);
    case HP_LINKTYPE_LINUX_SLL2:
        if (n < 20)
            return hp_fail(p, HP_E_LINK);
        return hp_parse_ethertype(p, d, n, hp_rd16(d), 20);
    case HP_LINKTYPE_NULL:
    case HP_LINKTYPE_LOOP:
        if (n < 4)
            return hp_fail(p, HP_E_LINK);
        family = ((uint32_t)d[0] << 24) | ((uint32_t)d[1] << 16) | ((uint32_t)d[2] << 8) | d[3];
        if (linktype == HP_LINKTYPE_NULL) { /* host order: take the reading with a small value */
            uint32_t le = d[0] | ((uint32_t)d[1] << 8) | ((uint32_t)d[2] << 16) | ((uint32_t)d[3] << 24);
            if (!(le & 0xFFFF0000u))
                family = le;
        }
        if (family == 2)
            return hp_parse_ip(p, d, n, 4, 4);
        if (family == 10 || family == 24 || family == 28 || family == 30)
            return hp_parse_ip(p, d, n, 4, 6);
        p->not_ip = 1;
        return hp_fail(p, HP_E_NOT_IP);
    default:
        return hp_fail(p, HP_E_LINKTYPE);
    }
}

#endif /* HP_PARSE_H */
