"""The compiled tables answer exactly what the model's own objects and queries answer."""
from __future__ import annotations

import ipaddress
import os
import warnings

import numpy as np
import pytest

from hyperplane.vpc import example_vpc_path
from hyperplane.vpc.compiled import ROUTE_BLACKHOLE, TARGET_KIND_CODES, compile_model
from hyperplane.vpc.errors import ConfigWarning
from hyperplane.vpc.loader import load_vpc

AWS_CLI = os.path.join(os.path.dirname(__file__), "..", "fixtures", "aws-cli")


@pytest.fixture(scope="module", params=["example", "dualstack"])
def model(request):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        return load_vpc(example_vpc_path() if request.param == "example" else AWS_CLI)


def oracle_route(model, table, ip):
    """Longest prefix match over the model's routes; CIDR beats prefix list on a tie."""
    best = None
    for position, route in enumerate(table.routes):
        nets = [route.destination] if route.destination else model.prefix_list_cidrs(route.prefix_list_id)
        for net in nets:
            if net.version == ip.version and ip in net:
                key = (net.prefixlen, route.destination is not None, -position)
                if best is None or key > best[0]:
                    best = (key, route)
    return best[1] if best else None


PROBES = ["10.0.0.7", "10.0.3.10", "52.216.1.2", "8.8.8.8", "172.16.5.5", "10.20.2.10", "100.64.0.9",
          "192.0.2.77", "172.31.0.1", "10.99.1.1", "10.97.1.1", "2600:1f18:4a2:6c02::10", "2001:db8::1"]


def test_routes_match_longest_prefix_over_the_model(model):
    compiled = compile_model(model)
    pl_cidrs = [c for pl in model.prefix_lists.values() for c in pl.cidrs]
    probes = [ipaddress.ip_address(p) for p in PROBES] + [c.network_address + 1 for c in pl_cidrs[:20]]
    for table in model.route_tables.values():
        for ip in probes:
            expected = oracle_route(model, table, ip)
            row = compiled.routes.lookup(table.id, ip)
            if expected is None:
                assert row == -1
                continue
            got = table.routes[compiled.routes.route[row]]
            assert got == expected, (table.id, ip)
            assert compiled.routes.targets[compiled.routes.target[row]] == expected.target_id
            assert compiled.routes.kind[row] == TARGET_KIND_CODES[expected.target_kind]
            assert (compiled.routes.state[row] == ROUTE_BLACKHOLE) == (expected.state == "blackhole")


def oracle_nacl(acl, egress, proto, ip, port, icmp_type, icmp_code):
    for entry in acl.rules(egress):
        if ip.version != entry.network.version or ip not in entry.network:
            continue
        if entry.protocol not in (-1, proto):
            continue
        if entry.protocol in (6, 17) and not entry.port_from <= port <= entry.port_to:
            continue
        if entry.protocol in (1, 58) and entry.icmp_type not in (-1, icmp_type):
            continue
        if entry.protocol in (1, 58) and entry.icmp_code not in (-1, icmp_code):
            continue
        return entry
    return None


@pytest.mark.parametrize("proto,port,icmp", [(6, 5432, None), (6, 22, None), (17, 53, None), (1, 0, (8, 0)),
                                             (58, 0, (128, 0)), (6, 40000, None)])
def test_nacls_first_match_equals_model_evaluation_order(model, proto, port, icmp):
    compiled = compile_model(model)
    icmp_type, icmp_code = icmp or (-1, -1)
    for acl in model.network_acls.values():
        assert list(compiled.nacls.rule[compiled.nacls.rows(2 * compiled.nacls.index[acl.id])]) == [
            e.rule_number for e in acl.rules(False)]
        for egress in (False, True):
            for probe in PROBES:
                ip = ipaddress.ip_address(probe)
                expected = oracle_nacl(acl, egress, proto, ip, port, icmp_type, icmp_code)
                row = compiled.nacls.evaluate(acl.id, egress, proto, ip, port, icmp_type, icmp_code)
                if expected is None:
                    assert row == -1
                else:
                    assert (int(compiled.nacls.rule[row]), bool(compiled.nacls.allow[row])) == (
                        expected.rule_number, expected.allow)


def test_sg_rows_resolve_groups_to_members_and_prefix_lists_to_cidrs(model):
    compiled = compile_model(model)
    sgs = compiled.security_groups
    for group in model.security_groups.values():
        for egress in (False, True):
            rows = sgs.rows(2 * sgs.index[group.id] + int(egress))
            got = sorted((int(sgs.rule[i]), int(sgs.family[i]), int(sgs.net_hi[i]) << 64 | int(sgs.net_lo[i]),
                          int(sgs.prefixlen[i])) for i in range(rows.start, rows.stop))
            expected = []
            for rule in group.rules(egress):
                if rule.peer_kind == "cidr":
                    nets = [rule.network]
                elif rule.peer_kind == "prefix-list":
                    nets = model.prefix_list_cidrs(rule.peer)
                else:
                    nets = [ipaddress.ip_network(ip) for ip in model.members_of(rule.peer)]
                expected += [(rule.index, n.version, int(n.network_address), n.prefixlen) for n in nets]
            assert got == sorted(expected), group.id


def test_extra_members_join_the_group_for_referencing_rules():
    model = load_vpc(AWS_CLI)
    endpoint_group, fn_group = "sg-0d5a11ac0ffee0b02", "sg-0d5a11ac0ffee0b01"
    plain = compile_model(model)
    hyperplane_eni_ip = "10.20.1.77"  # an address the control plane gave a Hyperplane ENI
    assert plain.security_groups.allows([endpoint_group], False, 6, hyperplane_eni_ip, 443) is None
    extended = compile_model(model, extra_members={fn_group: [hyperplane_eni_ip]})
    assert extended.security_groups.allows([endpoint_group], False, 6, hyperplane_eni_ip, 443) == (endpoint_group, 0)
    assert extended.security_groups.allows([endpoint_group], False, 6, hyperplane_eni_ip, 444) is None
    assert extended.security_groups.allows([endpoint_group], False, 17, hyperplane_eni_ip, 443) is None


def test_sg_icmp_and_all_protocol_rules():
    model = load_vpc(AWS_CLI)
    sgs = compile_model(model).security_groups
    fn_group = "sg-0d5a11ac0ffee0b01"
    # icmpv6 all types to the VPC's IPv6 range, HTTPS to ::/0 and to the partner prefix list
    assert sgs.allows([fn_group], True, 58, "2600:1f18:4a2:6c01::5", icmp_type=128, icmp_code=0) == (fn_group, 3)
    assert sgs.allows([fn_group], True, 58, "2001:db8::5", icmp_type=128, icmp_code=0) is None
    assert sgs.allows([fn_group], True, 6, "2001:db8::5", 443) == (fn_group, 0)
    assert sgs.allows([fn_group], True, 6, "198.51.100.9", 443) == (fn_group, 1)
    assert sgs.allows([fn_group], True, 6, "198.51.100.200", 443) is None


def test_subnet_table_points_at_the_model_route_table_and_nacl(model):
    compiled = compile_model(model)
    subnets = compiled.subnets
    for subnet in model.subnets.values():
        row = subnets.lookup(subnet.cidr.network_address + 5)
        assert subnets.ids[row] == subnet.id
        assert compiled.routes.ids[subnets.route_table[row]] == model.route_table_of(subnet.id).id
        assert compiled.nacls.ids[subnets.nacl[row]] == model.nacl_of(subnet.id).id
    assert subnets.lookup("203.0.113.1") == -1


def test_tables_are_flat_numpy_columns(model):
    compiled = compile_model(model)
    assert compiled.routes.net_lo.dtype == np.uint64 and compiled.nacls.proto.dtype == np.int16
    assert compiled.routes.start[-1] == len(compiled.routes.net_lo)
    assert len(compiled.nacls.start) == 2 * len(model.network_acls) + 1
    assert len(compiled.security_groups.start) == 2 * len(model.security_groups) + 1
