"""Reachability analyzer on recorded describe data (tests/data/reachability/, made by moto).

Each test loads the recording, breaks one thing the way an operator or a
chaos fault would, and checks the verdict names the right component.
Resources are found by tag (ids change at every re-recording).
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pytest

from immutable_infra.checks.reachability import (
    CODES,
    SnapshotIndex,
    analyze,
    analyze_all,
    find_flow_violations,
    find_peering_problems,
    reachability_matrix,
)
from immutable_infra.flows import Flow
from immutable_infra.snapshot import empty_snapshot, merge_snapshots

DATA = Path(__file__).parent / "data" / "reachability"
_SNAPSHOT = json.loads((DATA / "peered_vpcs.json").read_text())
ADDRESSES = json.loads((DATA / "peered_vpcs.addresses.json").read_text())

SSH = Flow("ci@ops-sg", "microservice@prd-sg-slave", "tcp", 22)
APP = Flow("reverse-proxy@prd-sg-slave", "microservice@prd-sg-slave", "tcp", 8080)
METRICS = Flow("ci@ops-sg", "microservice@prd-sg-slave", "tcp", 9100)


@pytest.fixture
def snap():
    return copy.deepcopy(_SNAPSHOT)


def tag(item, key):
    return {t["Key"]: t["Value"] for t in item.get("Tags") or []}.get(key)


def vpc_of(snap, group):
    return next(v for v in snap["vpcs"] if tag(v, "Group") == group)


def route_table(snap, group):
    return next(r for r in snap["route_tables"] if tag(r, "Group") == group)


def sg(snap, group, role):
    return next(s for s in snap["security_groups"] if tag(s, "Group") == group and tag(s, "Role") == role)


def peering(snap, a, b):
    va, vb = vpc_of(snap, a)["VpcId"], vpc_of(snap, b)["VpcId"]
    return next(p for p in snap["peering_connections"]
                if {p["RequesterVpcInfo"]["VpcId"], p["AccepterVpcInfo"]["VpcId"]} == {va, vb})


def custom_acl(snap):
    return next(a for a in snap["network_acls"] if tag(a, "Group") == "prd-sg-slave")


def instances(snap, group, role):
    return [i for i in snap["instances"] if tag(i, "Group") == group and tag(i, "Role") == role]


def drop_route(table, cidr):
    table["Routes"] = [r for r in table["Routes"] if r.get("DestinationCidrBlock") != cidr]


def blocked(verdict, code, aws_id, type_):
    assert not verdict.reachable, verdict
    assert verdict.code == code, verdict
    assert verdict.component is not None and verdict.component.aws_id == aws_id, verdict
    assert verdict.component.type == type_
    assert verdict.component.address == ADDRESSES.get(aws_id, ""), verdict
    assert code in CODES


# ---------------------------------------------------------------- healthy


@pytest.mark.parametrize("flow", [SSH, APP, METRICS,
                                  Flow("ci@ops-sg", "*@prd-sg-master", "tcp", 22),
                                  Flow("reverse-proxy@prd-sg-slave", "vpn@ops-sg", "udp", 1194)],
                         ids=lambda f: f.name)
def test_healthy_flow_is_reachable(snap, flow):
    v = analyze(flow, snap, ADDRESSES)
    assert v.reachable, v
    assert v.ok and v.code == "" and v.component is None


def test_undeclared_port_is_blocked_by_the_destination_sg(snap):
    v = analyze(Flow("ci@ops-sg", "microservice@prd-sg-slave", "tcp", 5432), snap, ADDRESSES)
    blocked(v, "ENI_SG_RULES_MISMATCH", sg(snap, "prd-sg-slave", "microservice")["GroupId"], "security-group")
    assert v.detail["direction"] == "inbound"


def test_wildcard_role_covers_every_instance_of_the_group(snap):
    # the reverse proxy (default ACL) may reach the VPN; the microservices' custom ACL lets out only tcp
    v = analyze(Flow("*@prd-sg-slave", "vpn@ops-sg", "udp", 1194), snap, ADDRESSES)
    blocked(v, "SUBNET_ACL_RESTRICTION", custom_acl(snap)["NetworkAclId"], "network-acl")
    assert v.detail == {"direction": "outbound", "rule_number": "*"}
    assert v.source_instance in {i["InstanceId"] for i in instances(snap, "prd-sg-slave", "microservice")}


def test_sg_reference_matches_by_membership(snap):
    # reverse-proxy of the *master* group is not a member of the slave's reverse-proxy SG
    v = analyze(Flow("reverse-proxy@prd-sg-master", "microservice@prd-sg-slave", "tcp", 8080), snap, ADDRESSES)
    blocked(v, "ENI_SG_RULES_MISMATCH", sg(snap, "prd-sg-slave", "microservice")["GroupId"], "security-group")


# ---------------------------------------------------------------- ends


def test_missing_role_and_terminated_instances(snap):
    v = analyze(Flow("jenkins@ops-sg", "microservice@prd-sg-slave", "tcp", 22), snap)
    assert (v.reachable, v.code, v.component) == (False, "NO_SOURCE_INSTANCE", None)
    for inst in instances(snap, "prd-sg-slave", "microservice"):
        inst["State"] = {"Code": 48, "Name": "terminated"}
    assert analyze(SSH, snap).code == "NO_DESTINATION_INSTANCE"


def test_an_instance_without_a_group_tag_belongs_to_its_vpc_s_group(snap):
    """A team's deployed groups need not tag Group: the snapshot's vpc_groups (from each group's state) place them."""
    for inst in snap["instances"]:
        inst["Tags"] = [t for t in inst.get("Tags") or [] if t["Key"] != "Group"]
    assert analyze(SSH, snap, ADDRESSES).code == "NO_SOURCE_INSTANCE"
    snap["vpc_groups"] = {v["VpcId"]: tag(v, "Group") for v in snap["vpcs"]}
    assert analyze(SSH, snap, ADDRESSES).reachable
    blocked(analyze(Flow("ci@ops-sg", "microservice@prd-sg-slave", "tcp", 5432), snap, ADDRESSES),
            "ENI_SG_RULES_MISMATCH", sg(snap, "prd-sg-slave", "microservice")["GroupId"], "security-group")


def test_stopped_instance_is_a_bad_state(snap):
    inst = instances(snap, "prd-sg-slave", "microservice")[1]
    inst["State"] = {"Code": 80, "Name": "stopped"}
    v = analyze(SSH, snap, ADDRESSES)
    blocked(v, "BAD_STATE", inst["InstanceId"], "instance")


def test_every_destination_instance_must_be_reached(snap):
    # only the second microservice loses its SG: the verdict names that pair
    second = instances(snap, "prd-sg-slave", "microservice")[1]
    bare = {"GroupId": "sg-bare", "IpPermissions": [], "IpPermissionsEgress": []}
    snap["security_groups"].append(bare)
    second["SecurityGroups"] = [{"GroupId": "sg-bare"}]
    second["NetworkInterfaces"][0]["Groups"] = [{"GroupId": "sg-bare"}]
    v = analyze(SSH, snap, ADDRESSES)
    blocked(v, "SG_HAS_NO_RULES", "sg-bare", "security-group")
    assert v.destination_instance == second["InstanceId"]


# ---------------------------------------------------------------- routing


def test_route_removed(snap):
    table = route_table(snap, "ops-sg")
    drop_route(table, "10.30.0.0/16")
    drop_route(table, "0.0.0.0/0")
    blocked(analyze(SSH, snap, ADDRESSES), "NO_ROUTE_TO_DESTINATION", table["RouteTableId"], "route-table")


def test_route_removed_falls_back_to_the_internet_gateway(snap):
    table = route_table(snap, "ops-sg")
    drop_route(table, "10.30.0.0/16")
    v = analyze(SSH, snap, ADDRESSES)
    blocked(v, "NO_ROUTE_TO_DESTINATION", table["RouteTableId"], "route-table")
    assert "igw-" in v.explanation and v.detail["route"] == "0.0.0.0/0"


def test_main_route_table_used_without_explicit_association(snap):
    table = route_table(snap, "ops-sg")
    table["Associations"] = []
    main = next(r for r in snap["route_tables"]
                if r["VpcId"] == table["VpcId"] and any(a.get("Main") for a in r["Associations"]))
    blocked(analyze(SSH, snap, ADDRESSES), "NO_ROUTE_TO_DESTINATION", main["RouteTableId"], "route-table")


def test_blackhole_route(snap):
    table = route_table(snap, "ops-sg")
    route = next(r for r in table["Routes"] if r.get("DestinationCidrBlock") == "10.30.0.0/16")
    route["State"] = "blackhole"
    v = analyze(SSH, snap, ADDRESSES)
    blocked(v, "BAD_STATE_ROUTE", table["RouteTableId"], "route-table")


def test_more_specific_route_wins(snap):
    table = route_table(snap, "ops-sg")
    table["Routes"].append({"DestinationCidrBlock": "10.30.2.0/24", "NatGatewayId": "nat-1", "State": "active"})
    v = analyze(SSH, snap, ADDRESSES)
    blocked(v, "NO_ROUTE_TO_DESTINATION", table["RouteTableId"], "route-table")
    assert "nat-1" in v.explanation


def test_peering_deleted(snap):
    pcx = peering(snap, "ops-sg", "prd-sg-slave")
    snap["peering_connections"].remove(pcx)
    v = analyze(SSH, snap, ADDRESSES)
    blocked(v, "BAD_STATE", pcx["VpcPeeringConnectionId"], "vpc-peering-connection")
    assert "does not exist" in v.explanation


@pytest.mark.parametrize("status", ["pending-acceptance", "deleted", "rejected", "failed"])
def test_peering_not_active(snap, status):
    pcx = peering(snap, "ops-sg", "prd-sg-slave")
    pcx["Status"] = {"Code": status, "Message": status}
    v = analyze(SSH, snap, ADDRESSES)
    blocked(v, "BAD_STATE", pcx["VpcPeeringConnectionId"], "vpc-peering-connection")
    assert status in v.explanation


def test_route_through_the_wrong_peering(snap):
    table = route_table(snap, "ops-sg")
    wrong = peering(snap, "ops-sg", "prd-sg-master")["VpcPeeringConnectionId"]
    next(r for r in table["Routes"] if r.get("DestinationCidrBlock") == "10.30.0.0/16")[
        "VpcPeeringConnectionId"] = wrong
    blocked(analyze(SSH, snap, ADDRESSES), "PCX_REQUIRES_ADDRESS_IN_VPC_CIDR", wrong, "vpc-peering-connection")


def test_return_route_removed(snap):
    table = route_table(snap, "prd-sg-slave")
    drop_route(table, "10.10.0.0/16")
    v = analyze(SSH, snap, ADDRESSES)
    blocked(v, "NO_RETURN_ROUTE", table["RouteTableId"], "route-table")
    assert "igw-" in v.explanation  # the reply would leave through the default route


def test_overlapping_cidrs(snap):
    vpc = vpc_of(snap, "prd-sg-slave")
    vpc["CidrBlockAssociationSet"].append(
        {"CidrBlock": "10.10.128.0/17", "CidrBlockState": {"State": "associated"}})
    pcx = peering(snap, "ops-sg", "prd-sg-slave")["VpcPeeringConnectionId"]
    v = analyze(SSH, snap, ADDRESSES)
    blocked(v, "PCX_OVERLAPPING_CIDRS", pcx, "vpc-peering-connection")
    assert "10.10.128.0/17" in v.explanation


def test_destination_inside_source_cidr_is_kept_local(snap):
    vpc_of(snap, "ops-sg")["CidrBlockAssociationSet"].append(
        {"CidrBlock": "10.30.2.0/24", "CidrBlockState": {"State": "associated"}})
    table = route_table(snap, "ops-sg")
    table["Routes"].append({"DestinationCidrBlock": "10.30.2.0/24", "GatewayId": "local", "State": "active"})
    blocked(analyze(SSH, snap, ADDRESSES), "NO_ROUTE_TO_DESTINATION", table["RouteTableId"], "route-table")


# ---------------------------------------------------------------- security groups


def test_sg_ingress_revoked(snap):
    group = sg(snap, "prd-sg-slave", "microservice")
    group["IpPermissions"] = [p for p in group["IpPermissions"] if p.get("FromPort") != 22]
    v = analyze(SSH, snap, ADDRESSES)
    blocked(v, "ENI_SG_RULES_MISMATCH", group["GroupId"], "security-group")
    assert v.detail["direction"] == "inbound"
    assert analyze(METRICS, snap).reachable  # the other rules still stand


def test_sg_egress_removed(snap):
    group = sg(snap, "ops-sg", "ci")
    group["IpPermissionsEgress"] = []
    v = analyze(SSH, snap, ADDRESSES)
    blocked(v, "SG_HAS_NO_RULES", group["GroupId"], "security-group")
    assert v.detail["direction"] == "outbound"


def test_sg_egress_narrowed(snap):
    group = sg(snap, "ops-sg", "ci")
    group["IpPermissionsEgress"] = [{"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443,
                                     "IpRanges": [{"CidrIp": "0.0.0.0/0"}], "UserIdGroupPairs": []}]
    blocked(analyze(SSH, snap, ADDRESSES), "ENI_SG_RULES_MISMATCH", group["GroupId"], "security-group")


def test_any_sg_of_the_instance_suffices(snap):
    group = sg(snap, "prd-sg-slave", "microservice")
    group["IpPermissions"] = [p for p in group["IpPermissions"] if p.get("FromPort") != 22]
    extra = {"GroupId": "sg-extra", "IpPermissionsEgress": [],
             "IpPermissions": [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "10.10.2.10/32"}]}]}
    snap["security_groups"].append(extra)
    for inst in instances(snap, "prd-sg-slave", "microservice"):
        inst["NetworkInterfaces"][0]["Groups"].append({"GroupId": "sg-extra"})  # ENI-only membership counts
    assert analyze(SSH, snap).reachable


def test_sg_reference_revoked(snap):
    group = sg(snap, "prd-sg-slave", "microservice")
    group["IpPermissions"] = [p for p in group["IpPermissions"] if not p.get("UserIdGroupPairs")]
    blocked(analyze(APP, snap, ADDRESSES), "ENI_SG_RULES_MISMATCH", group["GroupId"], "security-group")
    blocked(analyze(METRICS, snap, ADDRESSES), "ENI_SG_RULES_MISMATCH", group["GroupId"], "security-group")


# ---------------------------------------------------------------- network ACLs


def add_entry(acl, number, egress, action, proto="6", ports=(22, 22), cidr="0.0.0.0/0"):
    acl["Entries"].append({"RuleNumber": number, "Egress": egress, "RuleAction": action, "Protocol": proto,
                           "CidrBlock": cidr, "PortRange": {"From": ports[0], "To": ports[1]}})


def test_acl_inbound_deny(snap):
    acl = custom_acl(snap)
    add_entry(acl, 50, False, "deny")
    v = analyze(SSH, snap, ADDRESSES)
    blocked(v, "SUBNET_ACL_RESTRICTION", acl["NetworkAclId"], "network-acl")
    assert v.detail == {"direction": "inbound", "rule_number": 50}


def test_acl_rule_order_first_match_wins(snap):
    acl = custom_acl(snap)
    add_entry(acl, 150, False, "deny")  # after the allow at 100: no effect
    assert analyze(SSH, snap).reachable


def test_acl_default_deny(snap):
    acl = custom_acl(snap)
    v = analyze(Flow("ci@ops-sg", "microservice@prd-sg-slave", "udp", 53), snap, ADDRESSES)
    # the SG says no first; open it to see the ACL's default rule
    assert v.code == "ENI_SG_RULES_MISMATCH"
    sg(snap, "prd-sg-slave", "microservice")["IpPermissions"].append(
        {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]})
    v = analyze(Flow("ci@ops-sg", "microservice@prd-sg-slave", "udp", 53), snap, ADDRESSES)
    blocked(v, "SUBNET_ACL_RESTRICTION", acl["NetworkAclId"], "network-acl")
    assert v.detail["rule_number"] == "*"


def test_acl_outbound_deny_at_source(snap):
    acl = next(a for a in snap["network_acls"]
               if any(x.get("SubnetId") == instances(snap, "ops-sg", "ci")[0]["SubnetId"] for x in a["Associations"]))
    add_entry(acl, 50, True, "deny", cidr="10.30.0.0/16")
    v = analyze(SSH, snap, ADDRESSES)
    blocked(v, "SUBNET_ACL_RESTRICTION", acl["NetworkAclId"], "network-acl")
    assert v.detail["direction"] == "outbound"


def test_acl_denies_part_of_the_ephemeral_return_range(snap):
    acl = custom_acl(snap)
    add_entry(acl, 90, True, "deny", ports=(32768, 40000))
    v = analyze(SSH, snap, ADDRESSES)
    blocked(v, "SUBNET_ACL_RESTRICTION", acl["NetworkAclId"], "network-acl")
    assert v.detail == {"direction": "return outbound", "rule_number": 90}
    assert "1024-65535" in v.explanation


def test_acl_allows_only_part_of_the_ephemeral_range(snap):
    acl = custom_acl(snap)
    next(e for e in acl["Entries"] if e["Egress"] and e["RuleNumber"] == 100)["PortRange"] = {"From": 32768,
                                                                                               "To": 65535}
    v = analyze(SSH, snap, ADDRESSES)
    blocked(v, "SUBNET_ACL_RESTRICTION", acl["NetworkAclId"], "network-acl")
    assert v.detail == {"direction": "return outbound", "rule_number": "*"}


def test_acl_return_inbound_at_source(snap):
    ci_subnet = instances(snap, "ops-sg", "ci")[0]["SubnetId"]
    acl = next(a for a in snap["network_acls"] if any(x.get("SubnetId") == ci_subnet for x in a["Associations"]))
    add_entry(acl, 10, False, "deny", ports=(1024, 65535), cidr="10.30.2.0/24")
    v = analyze(SSH, snap, ADDRESSES)
    blocked(v, "SUBNET_ACL_RESTRICTION", acl["NetworkAclId"], "network-acl")
    assert v.detail["direction"] == "return inbound"


def test_same_subnet_traffic_crosses_no_acl(snap):
    acl = custom_acl(snap)
    acl["Entries"] = []
    group = sg(snap, "prd-sg-slave", "microservice")
    group["IpPermissions"].append({"IpProtocol": "tcp", "FromPort": 7000, "ToPort": 7000,
                                   "UserIdGroupPairs": [{"GroupId": group["GroupId"]}]})
    gossip = Flow("microservice@prd-sg-slave", "microservice@prd-sg-slave", "tcp", 7000)
    assert analyze(gossip, snap).reachable
    assert not analyze(APP, snap).reachable  # reverse-proxy is in another subnet


# ---------------------------------------------------------------- checks


def test_find_flow_violations(snap):
    drop_route(route_table(snap, "prd-sg-slave"), "10.10.0.0/16")
    isolation = [Flow("microservice@prd-sg-slave", "microservice@prd-sg-master", "tcp", 8080, "isolation"),
                 Flow("ci@ops-sg", "microservice@prd-sg-master", "tcp", 22, "isolation")]
    findings = find_flow_violations([SSH, APP], isolation, snap, ADDRESSES, "prd-sg-slave")
    assert len(findings) == 2
    flow_finding, iso_finding = findings
    table = route_table(snap, "prd-sg-slave")
    assert flow_finding.check == "reachability" and flow_finding.group == "prd-sg-slave"
    assert flow_finding.aws_id == table["RouteTableId"]
    assert flow_finding.address == "module.prd-sg-slave.aws_route_table.private"
    assert flow_finding.expected == "reachable"
    assert flow_finding.found.startswith("NO_RETURN_ROUTE: ")
    assert flow_finding.found.endswith(f"at module.prd-sg-slave.aws_route_table.private ({table['RouteTableId']})")
    assert flow_finding.detail["flow"] == SSH.name
    master = instances(snap, "prd-sg-master", "microservice")[0]
    assert iso_finding.aws_id == master["InstanceId"]
    assert iso_finding.found.startswith("reachable: ")
    assert iso_finding.detail["flow"] == isolation[1].name
    assert "ci@ops-sg" in str(iso_finding) or isolation[1].name in iso_finding.expected


def test_isolation_holds_when_blocked(snap):
    iso = Flow("reverse-proxy@prd-sg-master", "microservice@prd-sg-slave", "tcp", 8080, "isolation")
    v = analyze(iso, snap)
    assert not v.reachable and v.ok and v.code == "ENI_SG_RULES_MISMATCH"
    assert find_flow_violations([], [iso], snap, ADDRESSES, "prd-sg-slave") == []


def test_find_peering_problems(snap):
    assert find_peering_problems(snap, ADDRESSES, "prd-sg-slave") == []
    pcx = peering(snap, "ops-sg", "prd-sg-slave")
    pcx["Status"] = {"Code": "pending-acceptance", "Message": "Pending Acceptance by 123456789012"}
    vpc_of(snap, "prd-sg-slave")["CidrBlockAssociationSet"].append(
        {"CidrBlock": "10.20.0.0/24", "CidrBlockState": {"State": "associated"}})
    findings = find_peering_problems(snap, ADDRESSES, "prd-sg-slave")
    assert [(f.aws_id, f.found.split(":")[0]) for f in findings] == sorted([
        (pcx["VpcPeeringConnectionId"], "BAD_STATE"),
        (peering(snap, "prd-sg-master", "prd-sg-slave")["VpcPeeringConnectionId"], "PCX_OVERLAPPING_CIDRS"),
    ])
    assert all(f.address == ADDRESSES[f.aws_id] for f in findings)
    assert "Pending Acceptance" in findings[[f.aws_id for f in findings].index(pcx["VpcPeeringConnectionId"])].found
    # scoped to the group's VPCs: ops-sg <-> master is none of prd-sg-slave's business
    peering(snap, "ops-sg", "prd-sg-master")["Status"] = {"Code": "failed"}
    assert len(find_peering_problems(snap, ADDRESSES, "prd-sg-slave")) == 2
    assert len(find_peering_problems(snap, ADDRESSES, "ops-sg")) == 2


def test_reachability_matrix(snap):
    custom_acl(snap)["Entries"].append({"RuleNumber": 1, "Egress": False, "RuleAction": "deny", "Protocol": "-1",
                                        "CidrBlock": "0.0.0.0/0"})
    rows = reachability_matrix(analyze_all([SSH, APP, Flow("ci@ops-sg", "vpn@ops-sg", "icmp")], snap, ADDRESSES))
    assert [(r["flow"], r["verdict"], r["code"]) for r in rows] == [
        (SSH.name, "unreachable", "SUBNET_ACL_RESTRICTION"),
        (APP.name, "unreachable", "SUBNET_ACL_RESTRICTION"),
        ("ci@ops-sg->vpn@ops-sg:icmp", "unreachable", "ENI_SG_RULES_MISMATCH"),
    ]
    acl = custom_acl(snap)
    assert rows[0]["blocking_component"] == f"module.prd-sg-slave.aws_network_acl.private ({acl['NetworkAclId']})"
    assert rows[0]["aws_id"] == acl["NetworkAclId"] and rows[0]["component_type"] == "network-acl"
    assert json.loads(json.dumps(rows)) == rows


def test_snapshot_index_is_reusable_and_fast(snap):
    index = SnapshotIndex(snap, ADDRESSES)
    flows = [SSH, APP, METRICS] * 100
    start = time.perf_counter()
    verdicts = analyze_all(flows, index)
    assert time.perf_counter() - start < 1.0
    assert all(v.reachable for v in verdicts)


def test_all_traffic_flow_needs_all_traffic_rules(snap):
    everything = Flow("microservice@prd-sg-slave", "ci@ops-sg", "-1")
    ci = sg(snap, "ops-sg", "ci")
    v = analyze(everything, snap, ADDRESSES)
    blocked(v, "SG_HAS_NO_RULES", ci["GroupId"], "security-group")  # ci has no ingress at all
    ci["IpPermissions"] = [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "10.30.0.0/16"}]}]
    v = analyze(everything, snap, ADDRESSES)
    # the slave's custom ACL lets out only tcp: not all traffic
    blocked(v, "SUBNET_ACL_RESTRICTION", custom_acl(snap)["NetworkAclId"], "network-acl")


def test_merge_snapshots_dedupes_and_keeps_regions():
    a, b = empty_snapshot("ap-southeast-1"), empty_snapshot("cn-north-1")
    a["vpcs"] = [{"VpcId": "vpc-1"}]
    b["vpcs"] = [{"VpcId": "vpc-2"}]
    a["peering_connections"] = b["peering_connections"] = [{"VpcPeeringConnectionId": "pcx-1"}]
    merged = merge_snapshots([a, b])
    assert [v["VpcId"] for v in merged["vpcs"]] == ["vpc-1", "vpc-2"]
    assert len(merged["peering_connections"]) == 1
    assert merged["regions"] == ["ap-southeast-1", "cn-north-1"] and merged["region"] == ""
    assert merge_snapshots([a])["region"] == "ap-southeast-1"
