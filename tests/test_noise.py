"""checks/noise.py: each rule hides its noise and never the real change of the same attribute."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from immutable_infra.checks.noise import DEFAULT_NOISE_RULES, Difference, classify
from immutable_infra.plan import Plan, StateResource

DATA = Path(__file__).parent / "data" / "plans"
RULES = {r.name: r for r in DEFAULT_NOISE_RULES}


def load(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


def diff(rtype, path, before, after, res_before=None, res_after=None, state=()):
    return Difference(rtype, f"{rtype}.x", path, before, after, res_before or {}, res_after or {}, state)


def rule_for(d: Difference) -> str | None:
    rule = classify(d, DEFAULT_NOISE_RULES)
    return rule.name if rule else None


def test_every_rule_has_a_reason_and_a_unique_name():
    assert len(RULES) == len(DEFAULT_NOISE_RULES)
    assert all(r.reason and r.path and r.resource_type for r in DEFAULT_NOISE_RULES)
    assert "tags-unset-to-empty" in repr(RULES["tags-unset-to-empty"])


@pytest.mark.parametrize(("rtype", "path", "before", "after", "rule"), [
    # tags null -> {}
    ("aws_vpc", "tags", None, {}, "tags-unset-to-empty"),
    ("aws_instance", "tags_all", None, {}, "tags-unset-to-empty"),
    ("aws_vpc", "tags.Role", "a", "b", None),
    ("aws_vpc", "tags", None, {"Role": "b"}, None),
    ("aws_vpc", "tags", {"Role": "a"}, None, None),
    # ACL protocol "tcp" -> "6"
    ("aws_network_acl_rule", "protocol", "tcp", "6", "acl-protocol-number"),
    ("aws_network_acl_rule", "protocol", "udp", "17", "acl-protocol-number"),
    ("aws_network_acl_rule", "protocol", "tcp", "17", None),
    ("aws_network_acl_rule", "protocol", "tcp", None, None),
    # ACL icmp_* unset -> default
    ("aws_network_acl_rule", "icmp_type", None, 0, "acl-icmp-defaults"),
    ("aws_network_acl_rule", "icmp_code", "", "0", "acl-icmp-defaults"),
    ("aws_network_acl_rule", "icmp_type", 0, 8, None),
    ("aws_network_acl_rule", "icmp_type", None, 8, None),
    # Route53 optional fields null -> ""
    ("aws_route53_record", "health_check_id", None, "", "route53-optional-empty"),
    ("aws_route53_record", "set_identifier", None, "", "route53-optional-empty"),
    ("aws_route53_record", "health_check_id", None, "hc-123", None),
    ("aws_route53_record", "ttl", None, "", None),
    # SG rule optional fields
    ("aws_security_group_rule", "description", None, "", "sg-rule-optional-fields"),
    ("aws_security_group_rule", "ipv6_cidr_blocks", None, [], "sg-rule-optional-fields"),
    ("aws_security_group_rule", "self", None, False, "sg-rule-optional-fields"),
    ("aws_security_group_rule", "cidr_blocks", None, ["0.0.0.0/0"], None),
    ("aws_security_group_rule", "description", "web", "", None),
    # cross-region peering accept_status
    ("aws_vpc_peering_connection", "accept_status", "pending-acceptance", "active", "peering-accept-status"),
    ("aws_vpc_peering_connection_accepter", "accept_status", "pending-acceptance", "active", "peering-accept-status"),
    ("aws_vpc_peering_connection", "accept_status", "active", "deleted", None),
    ("aws_vpc_peering_connection", "accept_status", "pending-acceptance", "rejected", None),
])
def test_scalar_rules(rtype, path, before, after, rule):
    assert rule_for(diff(rtype, path, before, after)) == rule


# -- lists filled by separate resources, on the recordings --------------------

def test_clean_apply_refresh_is_all_noise():
    plan = Plan.from_json(load("plan_clean_refresh_only"))
    state = plan.prior_resources()
    seen = set()
    from immutable_infra.plan import leaf_diff, path_str
    for d in plan.drift:
        for path, before, after in leaf_diff(d.before, d.after):
            name = rule_for(Difference(d.type, d.address, path_str(path), before, after, d.before, d.after, state))
            assert name is not None, (d.address, path, before, after)
            seen.add(name)
    assert seen == {"routes-by-route-resources", "sg-rules-by-rule-resources", "sg-rule-optional-fields"}


def sg_ingress_diff(after_extra: list[dict], state_rules: list[dict]):
    plan = Plan.from_json(load("plan_clean_refresh_only"))
    sg = plan.drift_of("aws_security_group.web")
    state = [r for r in plan.prior_resources() if r.type != "aws_security_group_rule"]
    state += [StateResource(f"aws_security_group_rule.r{i}", "aws_security_group_rule", v) for i, v in enumerate(state_rules)]
    after = sg.after["ingress"] + after_extra
    return Difference("aws_security_group", sg.address, "ingress", [], after, sg.before, sg.after, state)


def managed_rule(sg_id: str, port: int, cidr: str = "0.0.0.0/0", protocol: str = "tcp") -> dict:
    return {"type": "ingress", "security_group_id": sg_id, "from_port": port, "to_port": port,
            "protocol": protocol, "cidr_blocks": [cidr]}


SSH_WORLD = {"cidr_blocks": ["0.0.0.0/0"], "description": "", "from_port": 22, "ipv6_cidr_blocks": [],
             "prefix_list_ids": [], "protocol": "tcp", "security_groups": [], "self": False, "to_port": 22}


def test_sg_list_noise_needs_managed_rules():
    plan = Plan.from_json(load("plan_clean_refresh_only"))
    sg_id = plan.drift_of("aws_security_group.web").after["id"]
    assert rule_for(sg_ingress_diff([], [managed_rule(sg_id, 80)])) == "sg-rules-by-rule-resources"
    # the same list with no managed rule behind it is drift
    assert rule_for(sg_ingress_diff([], [])) is None
    # a rule of another group does not count
    assert rule_for(sg_ingress_diff([], [managed_rule("sg-other", 80)])) is None
    # SSH from the world added out of band is drift, even next to managed entries
    assert rule_for(sg_ingress_diff([SSH_WORLD], [managed_rule(sg_id, 80)])) is None
    # ... unless it is a managed rule; protocol by number counts as the same
    assert rule_for(sg_ingress_diff([SSH_WORLD], [managed_rule(sg_id, 80), managed_rule(sg_id, 22, protocol="6")])) \
        == "sg-rules-by-rule-resources"
    # a managed rule with another CIDR does not cover the world
    assert rule_for(sg_ingress_diff([SSH_WORLD], [managed_rule(sg_id, 80), managed_rule(sg_id, 22, "10.0.0.0/8")])) is None


def test_sg_entry_removed_out_of_band_is_drift():
    plan = Plan.from_json(load("plan_clean_refresh_only"))
    sg = plan.drift_of("aws_security_group.web")
    d = Difference("aws_security_group", sg.address, "ingress", sg.after["ingress"], [], sg.before, sg.after,
                   plan.prior_resources())
    assert rule_for(d) is None


def test_route_list_noise_needs_managed_routes():
    plan = Plan.from_json(load("plan_clean_refresh_only"))
    table = plan.drift_of("aws_route_table.public")
    state = plan.prior_resources()
    d = Difference("aws_route_table", table.address, "route", [], table.after["route"], table.before, table.after, state)
    assert rule_for(d) == "routes-by-route-resources"
    without = [r for r in state if r.type != "aws_route"]
    d = Difference("aws_route_table", table.address, "route", [], table.after["route"], table.before, table.after, without)
    assert rule_for(d) is None
    hijacked = [dict(table.after["route"][0], gateway_id="", instance_id="i-0rogue")]
    d = Difference("aws_route_table", table.address, "route", [], hijacked, table.before, table.after, state)
    assert rule_for(d) is None


ACL_ENTRY = {"action": "allow", "cidr_block": "10.0.0.0/16", "from_port": 443, "icmp_code": None,
             "icmp_type": None, "ipv6_cidr_block": "", "protocol": "tcp", "rule_no": 100, "to_port": 443}
ACL_RULE = {"network_acl_id": "acl-1", "egress": False, "rule_number": 100, "rule_action": "allow",
            "cidr_block": "10.0.0.0/16", "protocol": "tcp", "from_port": 443, "to_port": 443}


def acl_diff(before, after, rules=(ACL_RULE,)):
    state = [StateResource(f"aws_network_acl_rule.r{i}", "aws_network_acl_rule", r) for i, r in enumerate(rules)]
    return Difference("aws_network_acl", "aws_network_acl.x", "ingress", before, after, {"id": "acl-1"}, {"id": "acl-1"}, state)


def test_acl_entries_normalised_and_filled_by_rules():
    read_back = dict(ACL_ENTRY, protocol="6", icmp_code=0, icmp_type=0)
    assert rule_for(acl_diff([ACL_ENTRY], [read_back], rules=())) == "acl-entries-by-rule-resources"
    assert rule_for(acl_diff([], [read_back])) == "acl-entries-by-rule-resources"
    assert rule_for(acl_diff([], [read_back], rules=())) is None
    assert rule_for(acl_diff([ACL_ENTRY], [dict(read_back, protocol="17")], rules=())) is None
    assert rule_for(acl_diff([], [dict(read_back, cidr_block="0.0.0.0/0")])) is None


EIP = {"id": "eipalloc-1", "network_interface": "eni-nat", "association_id": "eipassoc-1", "private_ip": "10.0.0.5"}


def test_eip_association_with_managed_nat_is_noise():
    nat = StateResource("aws_nat_gateway.nat", "aws_nat_gateway", {"id": "nat-1", "network_interface_id": "eni-nat"})
    d = diff("aws_eip", "association_id", "", "eipassoc-1", {"id": "eipalloc-1"}, EIP, [nat])
    assert rule_for(d) == "eip-association"
    assert rule_for(diff("aws_eip", "association_id", "", "eipassoc-1", {"id": "eipalloc-1"}, EIP, [])) is None
    moved = dict(EIP, network_interface="eni-rogue")
    assert rule_for(diff("aws_eip", "network_interface", "", "eni-rogue", {"id": "eipalloc-1"}, moved, [nat])) is None
    assert rule_for(diff("aws_eip", "network_interface", "eni-nat", "eni-rogue", EIP, moved, [nat])) is None
