"""The issue's "done" check: a VPC built in moto and exported with boto3 describe-* calls (genuine
AWS response shapes) loads and answers the dataplane's queries; the bundled example is that export."""
from __future__ import annotations

import filecmp
import importlib.util
import ipaddress
import os
import warnings

import pytest

from hyperplane.vpc import example_vpc_path
from hyperplane.vpc.errors import ConfigError, ConfigWarning
from hyperplane.vpc.loader import load_vpc

pytest.importorskip("moto")

_SPEC = importlib.util.spec_from_file_location(
    "moto_export", os.path.join(os.path.dirname(__file__), "..", "fixtures", "moto_export.py"))
moto_export = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(moto_export)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("moto-export")
    ids = moto_export.export(str(out))
    with pytest.warns(ConfigWarning) as record:
        model = load_vpc(str(out))
    return ids, model, record, out


def test_export_covers_the_issue_scenario(exported):
    ids, model, _, _ = exported
    assert len(model.subnets) >= 3
    groups = {ids[f"sg-{n}"] for n in ("lambda", "db", "cache", "bastion")}
    referenced = {r.peer for g in groups for r in model.security_groups[g].ingress + model.security_groups[g].egress
                  if r.peer_kind == "group"}
    assert groups <= referenced  # the four groups reference each other
    assert not model.network_acls[ids["acl-data"]].is_default
    assert len(model.functions) == 2


def test_route_tables_and_blackhole(exported):
    ids, model, record, _ = exported
    private = model.route_tables[ids["rtb-private"]]
    routes = {r.prefix_list_id or str(r.destination): r for r in private.routes}
    assert (routes["0.0.0.0/0"].target_kind, routes["0.0.0.0/0"].target_id) == ("nat", ids["nat"])
    assert (routes[ids["pl-s3"]].target_kind, routes[ids["pl-s3"]].target_id) == ("vpce", ids["vpce-s3"])
    assert (routes["172.16.0.0/12"].target_id, routes["172.16.0.0/12"].state) == (ids["old-nat"], "blackhole")
    assert [str(w.message) for w in record] == [w for w in model.warnings]
    assert any(f"{ids['old-nat']} is deleted" in w for w in model.warnings)
    public = model.route_tables[ids["rtb-public"]]
    assert [(r.target_kind, r.target_id) for r in public.routes] == [("local", "local"), ("igw", ids["igw"])]


def test_queries_on_the_moto_export(exported):
    ids, model, _, _ = exported
    assert model.subnet_of("10.0.3.77").id == ids["data-a"]
    assert model.route_table_of(ids["app-a"]).id == ids["rtb-private"]
    assert model.route_table_of(ids["data-a"]).main  # no explicit association: the main table
    assert model.nacl_of(ids["data-a"]).id == ids["acl-data"]
    assert model.nacl_of(ids["app-b"]).is_default
    assert model.groups_of(ids["eni-db"]) == (ids["sg-db"],)
    assert [str(ip) for ip in model.members_of(ids["sg-db"])] == ["10.0.3.10"]
    assert [str(ip) for ip in model.members_of(ids["sg-cache"])] == ["10.0.2.20"]
    assert len(model.prefix_list_cidrs(ids["pl-s3"])) > 0
    assert str(model.dns_address(ids["vpc"])) == "10.0.0.2"
    assert model.reserved_addresses(ids["app-b"])[-1] == ipaddress.ip_address("10.0.2.255")
    nat_eni = model.interface_at("10.0.0.100")
    assert (nat_eni.interface_type, nat_eni.group_ids, model.interface_owner(nat_eni.id)) == (
        "nat_gateway", (), ids["nat"])
    orders = model.functions["orders-api"]
    assert orders.subnet_ids == (ids["app-a"], ids["app-b"]) and orders.vpc_id == ids["vpc"]
    assert model.functions["report-worker"].security_group_ids == (ids["sg-lambda"],)
    db_rules = model.security_groups[ids["sg-db"]].ingress
    assert [(r.protocol, r.from_port, r.to_port, r.peer) for r in db_rules] == [
        (6, 5432, 5432, ids["sg-lambda"]), (6, 5432, 5432, ids["sg-bastion"]), (1, 8, -1, ids["sg-bastion"])]


def test_raw_moto_output_is_rejected_where_moto_differs_from_aws(tmp_path):
    """Without the quirk fixes moto's NAT gateway address lies outside its subnet: the loader
    names it instead of accepting an impossible VPC."""
    moto_export.export(str(tmp_path), quirks=False)
    with pytest.raises(ConfigError) as info:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConfigWarning)
            load_vpc(str(tmp_path))
    assert "is outside subnet" in str(info.value)


def test_bundled_example_is_the_export_byte_for_byte(exported):
    _, _, _, out = exported
    bundled = example_vpc_path()
    names = sorted(os.listdir(bundled))
    assert names == sorted(os.listdir(out))
    match, mismatch, errors = filecmp.cmpfiles(bundled, str(out), names, shallow=False)
    assert mismatch == [] and errors == []
