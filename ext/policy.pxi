# policy.pxi: compiled SG / NACL / route decisions (ext/hp_policy.h) for the new-connection path.
#
# Policy(compiled) copies the flat tables of hyperplane.vpc.compiled.compile_model into C arrays
# once.  A compiled loop holding a Policy `pol` calls, without the GIL:
#   hp_sg_match(&pol._p, set, egress, proto, version, hi, lo, dport)      -> rule index or -1
#   hp_nacl_eval(&pol._p, acl, egress, proto, version, hi, lo, dport, &allow) -> rule number
#   hp_route_lookup(&pol._p, table, version, hi, lo)                     -> route row or -1
#   hp_policy_exempt(&pol._p, version, hi, lo, proto, dport)             -> 1 when not filtered
# (addresses as two uint64 halves; IPv4 in lo, hi = 0).  `set` comes from pol.group_set(ids)
# (register every interface's set before the loop: registering reallocates the rows), `acl` and
# `table` from compiled.subnets.nacl / .route_table.  The semantics are the reference
# dataplane's (hyperplane/reference/policy.py); tests/unit/test_core_policy.py proves it.

from libc.stdint cimport uint8_t, int16_t, uint32_t, int32_t, uint64_t
from libc.stdlib cimport malloc, calloc, free

import ipaddress as _pol_ipaddress
import numpy as _pol_np

cdef extern from "hp_policy.h" nogil:
    ctypedef struct hp_pol_rule:
        uint64_t hi
        uint64_t lo
        uint64_t mhi
        uint64_t mlo
        int32_t port_lo
        int32_t port_hi
        int32_t id
        int16_t proto
        uint8_t allow
        uint8_t pad

    ctypedef struct hp_pol_seg:
        uint32_t start
        uint32_t end

    ctypedef struct hp_sg_ix:
        uint32_t indexed
        uint32_t nbrk

    ctypedef struct hp_policy:
        hp_pol_rule *sg_rows
        hp_sg_ix *sg_ix
        size_t sg_n
        hp_pol_seg *sg_segs
        uint32_t n_sets
        hp_pol_rule *nacl_rows
        hp_pol_seg *nacl_segs
        uint32_t n_nacls
        const hp_lpm4 **lpm4
        const hp_lpm6 **lpm6
        uint32_t n_tables
        uint8_t *route_kind
        uint8_t *route_state
        int32_t *route_target
        uint32_t n_routes

    int HP_POL_SEGS_PER_OWNER
    uint32_t hp_pol_seg_index(int egress, int version, int proto)
    int32_t hp_sg_match(const hp_policy *p, uint32_t set, int egress, int proto, int version,
                        uint64_t hi, uint64_t lo, int port)
    int32_t hp_nacl_eval(const hp_policy *p, int32_t acl, int egress, int proto, int version,
                         uint64_t hi, uint64_t lo, int port, int *allow)
    int32_t hp_route_lookup(const hp_policy *p, int32_t table, int version, uint64_t hi, uint64_t lo)
    int hp_policy_exempt(const hp_policy *p, int version, uint64_t hi, uint64_t lo, int proto, int dport)
    int hp_policy_init(hp_policy *p)
    void hp_policy_free(hp_policy *p)
    int32_t hp_policy_add_sg_set(hp_policy *p, const hp_pol_rule *rows, size_t n, const hp_pol_seg *segs)
    int hp_policy_add_exempt(hp_policy *p, int version, uint64_t hi, uint64_t lo)
    void hp_sg_match_batch(const hp_policy *p, const int32_t *set, const uint8_t *egress, const int16_t *proto,
                           const uint8_t *version, const uint64_t *hi, const uint64_t *lo, const int32_t *port,
                           int32_t *out, size_t n)
    void hp_nacl_eval_batch(const hp_policy *p, const int32_t *acl, const uint8_t *egress, const int16_t *proto,
                            const uint8_t *version, const uint64_t *hi, const uint64_t *lo, const int32_t *port,
                            uint8_t *allow, int32_t *rule, size_t n)
    void hp_route_lookup_batch(const hp_policy *p, const int32_t *table, const uint8_t *version,
                               const uint64_t *hi, const uint64_t *lo, int32_t *out, size_t n)

_POL_U64 = (1 << 64) - 1
_POL_ALL_CLASSES = (0, 1, 2)
_POL_V4_END = 1 << 32
_POL_V6_END = 1 << 128


cdef _pol_addr(version, addr):
    """(version, hi, lo) of an address given as an int (of ``version``), text or ipaddress."""
    if not isinstance(addr, int):
        a = _pol_ipaddress.ip_address(addr)
        if version is not None and a.version != version:
            raise ValueError(f"{addr} is not an IPv{version} address")
        version, addr = a.version, int(a)
    if version not in (4, 6):
        raise ValueError(f"version must be 4 or 6, got {version}")
    if not 0 <= addr < (_POL_V4_END if version == 4 else _POL_V6_END):
        raise ValueError(f"{addr} is not an IPv{version} address")
    return version, addr >> 64, addr & _POL_U64


cdef int _pol_fill_rows(hp_pol_rule *dst, list rows, hp_pol_seg *segs) except -1:
    """rows: one list per segment (12) of (hi, lo, mhi, mlo, port_lo, port_hi, id, proto, allow);
    writes them back to back into dst and their offsets into segs."""
    cdef uint32_t k, at = 0
    for k in range(HP_POL_SEGS_PER_OWNER):
        segs[k].start = at
        for hi, lo, mhi, mlo, plo, phi, ident, proto, allow in rows[k]:
            dst[at].hi = hi
            dst[at].lo = lo
            dst[at].mhi = mhi
            dst[at].mlo = mlo
            dst[at].port_lo = plo
            dst[at].port_hi = phi
            dst[at].id = ident
            dst[at].proto = proto
            dst[at].allow = allow
            dst[at].pad = 0
            at += 1
        segs[k].end = at
    return 0


def _pol_split(columns, rows, ident_of, sort_key=None):
    """Distributes the compiled rows ``rows`` (a range, both directions' rows passed separately
    by the caller) into the 6 (version, class) lists of one direction, keeping their order."""
    out = [[] for _ in range(6)]
    order = list(rows)
    if sort_key is not None:
        order.sort(key=sort_key)
    fam, nhi, nlo, mhi, mlo = (columns["family"], columns["net_hi"], columns["net_lo"], columns["mask_hi"],
                               columns["mask_lo"])
    proto_col = columns["proto"]
    plo_col, phi_col = columns["port_lo"], columns["port_hi"]
    allow_col = columns.get("allow")
    for i in order:
        proto = int(proto_col[i])
        vi = 1 if int(fam[i]) == 6 else 0
        rec = (int(nhi[i]), int(nlo[i]), int(mhi[i]), int(mlo[i]), int(plo_col[i]), int(phi_col[i]),
               ident_of(i), proto, int(allow_col[i]) if allow_col is not None else 1)
        if proto < 0:
            classes = _POL_ALL_CLASSES
        elif proto == 6:
            classes = (0,)
        elif proto == 17:
            classes = (1,)
        else:
            classes = (2,)
        for cls in classes:
            out[vi * 3 + cls].append(rec)
    return out


def _pol_arr(x, n, dtype):
    return _pol_np.ascontiguousarray(_pol_np.broadcast_to(_pol_np.asarray(x).astype(dtype, copy=False), (n,)))


cdef class Policy:
    """The compiled SG, NACL and route decisions of one :class:`CompiledModel` (see hp_policy.h).

    Indexes are those of the compiled tables: ``compiled.nacls.ids``, ``compiled.routes.ids``,
    ``compiled.security_groups.ids``; group sets are registered with :meth:`group_set`.
    """

    cdef hp_policy _p
    cdef bint _ready
    cdef readonly object compiled
    cdef list _lpm4s, _lpm6s
    cdef dict _sets
    cdef list _rule_ids
    cdef dict _rule_index

    def __cinit__(self, compiled):
        self._ready = False
        if hp_policy_init(&self._p) != 0:
            raise MemoryError("cannot allocate the policy tables")
        self._ready = True

    def __dealloc__(self):
        if self._ready:
            hp_policy_free(&self._p)
            self._ready = False

    def __init__(self, compiled):
        self.compiled = compiled
        self._sets = {}
        self._rule_ids = []
        self._rule_index = {}
        self._build_nacls(compiled.nacls)
        self._build_routes(compiled.routes)
        self._build_exempt(compiled.exempt)

    # --- building ----------------------------------------------------------------------------
    cdef _build_nacls(self, nacls):
        cdef size_t n_acls = len(nacls.ids), total = 0, a
        cdef int d
        per_acl = []
        rule_col = nacls.columns["rule"]
        for a in range(n_acls):
            lists = []
            for d in range(2):
                lists.extend(_pol_split(nacls.columns, range(*nacls.rows(2 * a + d).indices(len(nacls))),
                                        lambda i: int(rule_col[i]), sort_key=lambda i: int(rule_col[i])))
            per_acl.append(lists)
            total += sum(len(x) for x in lists)
        self._p.nacl_rows = <hp_pol_rule *>malloc(max(total, 1) * sizeof(hp_pol_rule))
        self._p.nacl_segs = <hp_pol_seg *>malloc(max(n_acls, 1) * HP_POL_SEGS_PER_OWNER * sizeof(hp_pol_seg))
        if self._p.nacl_rows == NULL or self._p.nacl_segs == NULL:
            raise MemoryError()
        cdef size_t at = 0
        cdef uint32_t k
        for a in range(n_acls):
            _pol_fill_rows(self._p.nacl_rows + at, per_acl[a], self._p.nacl_segs + a * HP_POL_SEGS_PER_OWNER)
            for k in range(HP_POL_SEGS_PER_OWNER):
                self._p.nacl_segs[a * HP_POL_SEGS_PER_OWNER + k].start += at
                self._p.nacl_segs[a * HP_POL_SEGS_PER_OWNER + k].end += at
            at += sum(len(x) for x in per_acl[a])
        self._p.n_nacls = n_acls

    cdef _build_routes(self, routes):
        cdef size_t n_tables = len(routes.ids), n_rows = len(routes), t, i
        cdef Lpm4 l4
        cdef Lpm6 l6
        self._lpm4s, self._lpm6s = [], []
        self._p.lpm4 = <const hp_lpm4 **>calloc(max(n_tables, 1), sizeof(void *))
        self._p.lpm6 = <const hp_lpm6 **>calloc(max(n_tables, 1), sizeof(void *))
        self._p.route_kind = <uint8_t *>malloc(max(n_rows, 1))
        self._p.route_state = <uint8_t *>malloc(max(n_rows, 1))
        self._p.route_target = <int32_t *>malloc(max(n_rows, 1) * sizeof(int32_t))
        if (self._p.lpm4 == NULL or self._p.lpm6 == NULL or self._p.route_kind == NULL
                or self._p.route_state == NULL or self._p.route_target == NULL):
            raise MemoryError()
        c = routes.columns
        for i in range(n_rows):
            self._p.route_kind[i] = int(c["kind"][i])
            self._p.route_state[i] = int(c["state"][i])
            self._p.route_target[i] = int(c["target"][i])
        self._p.n_routes = n_rows
        for t in range(n_tables):
            l4, l6 = Lpm4(), Lpm6()
            # rows are in decision order: the first row of a prefix is the route AWS uses for it
            for i in range(*routes.rows(t).indices(n_rows)):
                plen = int(c["prefixlen"][i])
                if int(c["family"][i]) == 4:
                    net = int(c["net_lo"][i])
                    if l4.get(net, plen) is None:
                        l4.insert(net, plen, i + 1)
                else:
                    net = (int(c["net_hi"][i]) << 64) | int(c["net_lo"][i])
                    if l6.get(net, plen) is None:
                        l6.insert(net, plen, i + 1)
            self._lpm4s.append(l4)
            self._lpm6s.append(l6)
            self._p.lpm4[t] = &l4._t
            self._p.lpm6[t] = &l6._t
        self._p.n_tables = n_tables

    cdef _build_exempt(self, exempt):
        if exempt is None:
            return
        for fam, hi, lo in zip(exempt["family"], exempt["net_hi"], exempt["net_lo"]):
            if hp_policy_add_exempt(&self._p, int(fam), int(hi), int(lo)) != 0:
                raise MemoryError()

    # --- security groups ---------------------------------------------------------------------
    def group_set(self, group_ids):
        """The index of the group set ``group_ids`` (an interface's groups, in order), registering
        it on first use.  Unknown group ids are ignored (they hold no rule).  Registering moves
        the rows: never while a nogil loop reads this Policy."""
        key = tuple(group_ids)
        index = self._sets.get(key)
        if index is not None:
            return index
        sgs = self.compiled.security_groups
        n_rows = len(sgs)
        rule_col = sgs.columns["rule"]
        lists = [[] for _ in range(HP_POL_SEGS_PER_OWNER)]
        for gid in dict.fromkeys(key):
            g = sgs.index.get(gid)
            if g is None:
                continue
            for d in range(2):
                def ident(i, gid=gid, d=d):
                    return self._rule(gid, d, int(rule_col[i]))
                split = _pol_split(sgs.columns, range(*sgs.rows(2 * g + d).indices(n_rows)), ident)
                for k in range(6):
                    lists[d * 6 + k].extend(split[k])
        cdef size_t total = sum(len(x) for x in lists)
        cdef hp_pol_rule *rows = <hp_pol_rule *>malloc(max(total, 1) * sizeof(hp_pol_rule))
        cdef hp_pol_seg segs[12]
        if rows == NULL:
            raise MemoryError()
        try:
            _pol_fill_rows(rows, lists, segs)
            index = hp_policy_add_sg_set(&self._p, rows, total, segs)
        finally:
            free(rows)
        if index < 0:
            raise MemoryError()
        self._sets[key] = index
        return index

    def _rule(self, gid, int egress, int index):
        key = (gid, egress, index)
        n = self._rule_index.get(key)
        if n is None:
            n = self._rule_index[key] = len(self._rule_ids)
            self._rule_ids.append(f"{gid}:{'egress' if egress else 'ingress'}:{index}")
        return n

    @property
    def rule_ids(self):
        """Global rule index -> ``SgRule.id`` (``sg-…:egress:0``), as drop records name rules."""
        return tuple(self._rule_ids)

    def rule_id(self, index):
        return None if index < 0 else self._rule_ids[index]

    def _set_of(self, group_set):
        if isinstance(group_set, int):
            if not 0 <= group_set < self._p.n_sets:
                raise IndexError(f"no group set {group_set}")
            return group_set
        return self.group_set(group_set)

    def sg_allows(self, group_set, egress, int proto, version, addr, int port=0):
        """The global index of the first rule (group order, then rule order) of ``group_set``
        (an index from :meth:`group_set` or a list of group ids) allowing the packet, or -1.
        ``addr`` is the peer (destination for egress, source for ingress); ``port`` the
        destination port.  ``rule_id(index)`` names the rule."""
        cdef uint32_t s = self._set_of(group_set)
        v, hi, lo = _pol_addr(version, addr)
        return hp_sg_match(&self._p, s, 1 if egress else 0, proto, v, hi, lo, port)

    # --- network ACLs ------------------------------------------------------------------------
    def nacl_evaluate(self, int nacl_index, egress, int proto, version, addr, int port=0):
        """``(allow, rule_number)`` of the first entry of ACL ``nacl_index`` (-1: no ACL,
        allowed) matching the packet; rule numbers >= 32767 are the ``*`` denies."""
        if nacl_index >= <int>self._p.n_nacls:
            raise IndexError(f"no network ACL {nacl_index}")
        v, hi, lo = _pol_addr(version, addr)
        cdef int allow = 0
        cdef int32_t rule = hp_nacl_eval(&self._p, nacl_index, 1 if egress else 0, proto, v, hi, lo, port, &allow)
        return bool(allow), rule

    # --- routes ------------------------------------------------------------------------------
    def route_row(self, int route_table_index, version, addr):
        """The compiled route row (``compiled.routes``) for ``addr``, or -1."""
        if route_table_index >= <int>self._p.n_tables:
            raise IndexError(f"no route table {route_table_index}")
        v, hi, lo = _pol_addr(version, addr)
        return hp_route_lookup(&self._p, route_table_index, v, hi, lo)

    def route_lookup(self, int route_table_index, version, addr):
        """``(row, kind, target, state)`` of the route used for ``addr`` (``kind`` indexes
        ROUTE_TARGET_KINDS, ``target`` ``compiled.routes.targets``, ``state`` 0 active,
        1 blackhole), or None when no route matches."""
        cdef int32_t row = self.route_row(route_table_index, version, addr)
        if row < 0:
            return None
        return row, self._p.route_kind[row], self._p.route_target[row], self._p.route_state[row]

    # --- exempt ------------------------------------------------------------------------------
    def is_exempt(self, version, addr, int proto=6, int dport=0):
        """True when SGs and NACLs do not filter this address/port (Amazon DNS, metadata, Time
        Sync, subnet routers, DHCP)."""
        v, hi, lo = _pol_addr(version, addr)
        return bool(hp_policy_exempt(&self._p, v, hi, lo, proto, dport))

    # --- batches (nogil) ---------------------------------------------------------------------
    def sg_allows_batch(self, sets, egress, proto, version, hi, lo, port):
        """Vectorised :meth:`sg_allows`: every argument a scalar or an array of the common length
        (``hi``/``lo`` the uint64 halves of the address). Returns int32 rule indexes (-1 deny)."""
        cdef size_t n = _pol_np.broadcast(sets, egress, proto, version, hi, lo, port).size
        cdef const int32_t[::1] s = _pol_arr(sets, n, _pol_np.int32)
        cdef const uint8_t[::1] e = _pol_arr(egress, n, _pol_np.uint8)
        cdef const int16_t[::1] pr = _pol_arr(proto, n, _pol_np.int16)
        cdef const uint8_t[::1] ver = _pol_arr(version, n, _pol_np.uint8)
        cdef const uint64_t[::1] h = _pol_arr(hi, n, _pol_np.uint64)
        cdef const uint64_t[::1] l = _pol_arr(lo, n, _pol_np.uint64)
        cdef const int32_t[::1] po = _pol_arr(port, n, _pol_np.int32)
        out = _pol_np.empty(n, dtype=_pol_np.int32)
        cdef int32_t[::1] o = out
        if n:
            with nogil:
                hp_sg_match_batch(&self._p, &s[0], &e[0], &pr[0], &ver[0], &h[0], &l[0], &po[0], &o[0], n)
        return out

    def nacl_evaluate_batch(self, acls, egress, proto, version, hi, lo, port):
        """Vectorised :meth:`nacl_evaluate`: returns (uint8 allow, int32 rule number) arrays."""
        cdef size_t n = _pol_np.broadcast(acls, egress, proto, version, hi, lo, port).size
        cdef const int32_t[::1] a = _pol_arr(acls, n, _pol_np.int32)
        cdef const uint8_t[::1] e = _pol_arr(egress, n, _pol_np.uint8)
        cdef const int16_t[::1] pr = _pol_arr(proto, n, _pol_np.int16)
        cdef const uint8_t[::1] ver = _pol_arr(version, n, _pol_np.uint8)
        cdef const uint64_t[::1] h = _pol_arr(hi, n, _pol_np.uint64)
        cdef const uint64_t[::1] l = _pol_arr(lo, n, _pol_np.uint64)
        cdef const int32_t[::1] po = _pol_arr(port, n, _pol_np.int32)
        allow = _pol_np.empty(n, dtype=_pol_np.uint8)
        rule = _pol_np.empty(n, dtype=_pol_np.int32)
        cdef uint8_t[::1] ao = allow
        cdef int32_t[::1] ro = rule
        if n:
            with nogil:
                hp_nacl_eval_batch(&self._p, &a[0], &e[0], &pr[0], &ver[0], &h[0], &l[0], &po[0], &ao[0], &ro[0], n)
        return allow, rule

    def route_lookup_batch(self, tables, version, hi, lo):
        """Vectorised :meth:`route_row`: int32 compiled route rows (-1 none)."""
        cdef size_t n = _pol_np.broadcast(tables, version, hi, lo).size
        cdef const int32_t[::1] t = _pol_arr(tables, n, _pol_np.int32)
        cdef const uint8_t[::1] ver = _pol_arr(version, n, _pol_np.uint8)
        cdef const uint64_t[::1] h = _pol_arr(hi, n, _pol_np.uint64)
        cdef const uint64_t[::1] l = _pol_arr(lo, n, _pol_np.uint64)
        out = _pol_np.empty(n, dtype=_pol_np.int32)
        cdef int32_t[::1] o = out
        if n:
            with nogil:
                hp_route_lookup_batch(&self._p, &t[0], &ver[0], &h[0], &l[0], &o[0], n)
        return out

    def _port_indexed(self, int group_set, egress, int proto, int version=4):
        """(indexed, breakpoints) of the port index of one list of a group set (tests)."""
        if not 0 <= group_set < <int>self._p.n_sets:
            raise IndexError(f"no group set {group_set}")
        cdef hp_sg_ix *ix = &self._p.sg_ix[group_set * HP_POL_SEGS_PER_OWNER
                                           + hp_pol_seg_index(1 if egress else 0, version, proto)]
        return bool(ix.indexed), ix.nbrk

    @property
    def group_sets(self):
        return self._p.n_sets

    def __repr__(self):
        return (f"<Policy {self._p.n_sets} group sets ({self._p.sg_n} SG rows), {self._p.n_nacls} NACLs, "
                f"{self._p.n_tables} route tables>")
