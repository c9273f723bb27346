"""checks/drift.py: findings and the drift table from recorded refresh-only plans."""

from __future__ import annotations

import json
from pathlib import Path

from immutable_infra.checks.drift import drift_table, find_drift
from immutable_infra.plan import Plan

DATA = Path(__file__).parent / "data" / "plans"


def plan(name: str) -> Plan:
    return Plan.from_json(json.loads((DATA / f"{name}.json").read_text()))


def test_clean_apply_has_noise_only():
    findings, table = find_drift(plan("plan_clean_refresh_only"), "rec-group")
    assert findings == []
    assert table and all(row["classification"].startswith("noise:") for row in table)
    assert all(row["reason"] for row in table)
    assert {row["address"] for row in table} == {
        "aws_route_table.public", "aws_security_group.web",
        "aws_security_group_rule.egress", "aws_security_group_rule.http",
    }


def test_out_of_band_changes_are_drift():
    findings, table = find_drift(plan("plan_refresh_only_out_of_band"), "rec-group")
    got = {(f.address, f.detail["attribute"], f.detail["classification"]) for f in findings}
    assert got == {
        ("aws_instance.proxy", "instance_type", "drift"),
        ("aws_instance.proxy", "tags.Role", "drift"),
        ("aws_instance.proxy", "tags_all.Role", "drift"),
        ("aws_route.default", "", "missing"),
        ("aws_route_table.public", "route", "drift"),
        ("aws_security_group.web", "ingress", "drift"),
    }
    assert all(f.check == "drift" and f.group == "rec-group" for f in findings)
    itype = next(f for f in findings if f.detail["attribute"] == "instance_type")
    assert (itype.detail["state"], itype.detail["live"]) == ("t2.micro", "m5.large")
    assert itype.aws_id.startswith("i-") and "m5.large" in itype.found and "t2.micro" in itype.expected
    ssh = next(f for f in findings if f.address == "aws_security_group.web")
    assert any(e["from_port"] == 22 and e["cidr_blocks"] == ["0.0.0.0/0"] for e in ssh.detail["live"])
    assert len(table) == len(findings)


def test_terminated_instance_is_missing():
    findings, table = find_drift(plan("plan_refresh_only_terminated"), "rec-group")
    missing = {f.address: f for f in findings if f.detail["classification"] == "missing"}
    assert set(missing) == {"aws_instance.proxy", "aws_route.default"}
    instance = missing["aws_instance.proxy"]
    assert instance.aws_id.startswith("i-") and "missing" in instance.found
    assert instance.detail["live"] is None
    # the route added out of band to the managed table shows as drift of its list
    table_rows = [r for r in table if r["address"] == "aws_route_table.public"]
    assert table_rows[0]["classification"] == "drift"
    assert table_rows[0]["live"][0]["cidr_block"] == "192.168.0.0/16"


def test_table_rows_have_the_report_columns():
    table = drift_table(plan("plan_refresh_only_out_of_band"))
    assert all(set(row) == {"address", "aws_id", "attribute", "state", "live", "classification", "reason"}
               for row in table)
    assert all(row["aws_id"] for row in table)


def test_no_rules_means_everything_is_drift():
    findings, table = find_drift(plan("plan_clean_refresh_only"), "g", rules=())
    assert len(findings) == len(table) > 0


def test_state_is_what_the_list_rules_look_into():
    p = plan("plan_clean_refresh_only")
    without_rules = [r for r in p.prior_resources() if r.type != "aws_security_group_rule"]
    findings, _ = find_drift(p, "g", state=without_rules)
    assert {(f.address, f.detail["attribute"]) for f in findings} == {
        ("aws_security_group.web", "ingress"), ("aws_security_group.web", "egress")}


def test_plan_without_drift():
    findings, table = find_drift(plan("plan_noop"), "g")
    assert findings == [] and table == []


def test_default_network_acl_retagging_stays_a_finding():
    """A default network ACL whose tags change under Terraform (the community VPC module's upstream
    re-tagging) is real drift: no noise rule and no sandbox fix may hide it, unlike the DHCP options
    tags moto dropped (fixed in the sandbox, compat.dhcp_options_tags_at_creation)."""
    tags = {"Name": "realworld-default", "Project": "realworld"}
    entry = {
        "address": "module.vpc.aws_default_network_acl.this[0]", "module_address": "module.vpc",
        "mode": "managed", "type": "aws_default_network_acl", "name": "this", "index": 0,
        "change": {"actions": ["update"],
                   "before": {"id": "acl-0123456789abcdef0", "tags": tags, "tags_all": tags},
                   "after": {"id": "acl-0123456789abcdef0", "tags": {"Name": "realworld-default"},
                             "tags_all": {"Name": "realworld-default"}}},
    }
    drifted = Plan.from_json({"format_version": "1.2", "resource_drift": [entry]})
    findings, _ = find_drift(drifted, "realworld")
    assert [(f.address, f.detail["attribute"], f.detail["classification"]) for f in findings] == [
        ("module.vpc.aws_default_network_acl.this[0]", "tags.Project", "drift"),
        ("module.vpc.aws_default_network_acl.this[0]", "tags_all.Project", "drift"),
    ]


def test_refresh_only_apply_hides_a_hand_made_rule_from_drift():
    """Recorded on tests/groups/realworld: drift sees a rule added by hand to a group whose rules are
    aws_security_group_rule resources only until a refresh-only apply reads it into the state. The
    unmanaged check covers what comes after (tests/test_unmanaged.py, same recording)."""
    here = Path(__file__).parent / "data" / "realworld"
    before = Plan.from_json(json.loads((here / "plan_refresh_only_rule_added.json").read_text()))
    findings, _ = find_drift(before, "realworld")
    assert [(f.address, f.detail["attribute"]) for f in findings] == [('aws_security_group.role["web"]', "ingress")]
    assert "0.0.0.0/0" in str(findings[0].detail["live"]) and "22" in str(findings[0].detail["live"])
    after = Plan.from_json(json.loads((here / "plan_refresh_only_refreshed.json").read_text()))
    assert find_drift(after, "realworld") == ([], [])


def _route(gateway: str = "", nat: str = "") -> dict:
    return {"carrier_gateway_id": "", "cidr_block": "0.0.0.0/0", "destination_prefix_list_id": "",
            "egress_only_gateway_id": "", "gateway_id": gateway, "instance_id": "", "ipv6_cidr_block": "",
            "local_gateway_id": "", "nat_gateway_id": nat, "network_interface_id": "", "transit_gateway_id": "",
            "vpc_endpoint_id": "", "vpc_peering_connection_id": ""}


def _after_repair_plan(table_before: list, table_after: list, eip_before: dict, eip_after: dict,
                       nat_allocation: str = "eipalloc-0000000000000000a", extra_drift: tuple = ()) -> Plan:
    """The shapes left after a repair apply on tests/groups/realworld (seen in its chaos run): the state's
    inline copies of the private table's routes and of the NAT EIP's association are from before the repair."""
    table = "rtb-0000000000000000a"
    prior = {"values": {"root_module": {"resources": [], "child_modules": [{"address": "module.vpc", "resources": [
        {"address": "module.vpc.aws_route.private_nat_gateway[0]", "mode": "managed", "type": "aws_route",
         "name": "private_nat_gateway", "values": {"id": "r-rtb-0000000000000000a1080289494", "route_table_id": table,
                                                   "destination_cidr_block": "0.0.0.0/0", "nat_gateway_id": "nat-0000000000000000b"}},
        {"address": "module.vpc.aws_nat_gateway.this[0]", "mode": "managed", "type": "aws_nat_gateway", "name": "this",
         "values": {"id": "nat-0000000000000000b", "allocation_id": nat_allocation,
                    "network_interface_id": "eni-0000000000000000b"}},
    ]}]}}}
    drift = [
        {"address": "module.vpc.aws_route_table.private[0]", "mode": "managed", "type": "aws_route_table",
         "name": "private", "change": {"actions": ["update"], "before": {"id": table, "route": table_before},
                                        "after": {"id": table, "route": table_after}}},
        {"address": "module.vpc.aws_eip.nat[0]", "mode": "managed", "type": "aws_eip", "name": "nat",
         "change": {"actions": ["update"], "before": dict(eip_before, id="eipalloc-0000000000000000a"),
                    "after": dict(eip_after, id="eipalloc-0000000000000000a")}},
        *extra_drift,
    ]
    return Plan.from_json({"format_version": "1.2", "resource_drift": drift, "prior_state": prior})


OLD_EIP = {"network_interface": "eni-0000000000000000a", "private_ip": "10.93.1.10", "private_dns": "ip-10-93-1-10.internal",
           "association_id": "eipassoc-0000000000000000a"}
NEW_EIP = {"network_interface": "eni-0000000000000000b", "private_ip": "10.93.1.20", "private_dns": "ip-10-93-1-20.internal",
           "association_id": "eipassoc-0000000000000000b"}


def test_stale_state_copies_after_a_repair_are_noise():
    # the table's inline route still says "hijacked to the IGW", the EIP still names the deleted NAT's interface
    plan = _after_repair_plan([_route(gateway="igw-0000000000000000a")], [_route(nat="nat-0000000000000000b")],
                              OLD_EIP, NEW_EIP)
    findings, table = find_drift(plan, "realworld")
    assert findings == []
    assert {r["classification"] for r in table} == {"noise:routes-by-route-resources", "noise:eip-association"}


def test_the_same_attributes_changed_out_of_band_are_still_drift():
    # route hijacked to the IGW while the managed route says NAT; EIP moved to an interface no managed NAT uses
    plan = _after_repair_plan([_route(nat="nat-0000000000000000b")], [_route(gateway="igw-0000000000000000a")],
                              NEW_EIP, dict(NEW_EIP, network_interface="eni-0000000000000000f"))
    got = {(f.address, f.detail["attribute"]) for f in find_drift(plan, "realworld")[0]}
    assert ("module.vpc.aws_route_table.private[0]", "route") in got
    assert ("module.vpc.aws_eip.nat[0]", "network_interface") in got
    # the EIP on a NAT gateway that does not use its allocation is drift too
    plan = _after_repair_plan([_route(nat="nat-0000000000000000b")], [_route(nat="nat-0000000000000000b")],
                              OLD_EIP, NEW_EIP, nat_allocation="eipalloc-0000000000000000f")
    assert {f.detail["attribute"] for f in find_drift(plan, "realworld")[0]} >= {"network_interface", "private_ip"}


def test_a_managed_route_deleted_out_of_band_is_still_found_on_its_own_resource():
    missing = {"address": "module.vpc.aws_route.private_nat_gateway[0]", "mode": "managed", "type": "aws_route",
               "name": "private_nat_gateway", "change": {"actions": ["delete"], "before": {
                   "id": "r-rtb-0000000000000000a1080289494"}, "after": None}}
    plan = _after_repair_plan([_route(nat="nat-0000000000000000b")], [], NEW_EIP, NEW_EIP, extra_drift=(missing,))
    findings, _ = find_drift(plan, "realworld")
    assert [(f.address, f.detail["classification"]) for f in findings] == [
        ("module.vpc.aws_route.private_nat_gateway[0]", "missing")]
