"""checks/unmanaged.py: resources in the group's VPC that the state does not know."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from immutable_infra.checks.unmanaged import find_unmanaged
from immutable_infra.plan import state_resources

DATA = Path(__file__).parent / "data" / "plans"


def load(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


STATE = state_resources(load("state"))
VPC = next(r.aws_id for r in STATE if r.type == "aws_vpc")
TABLE = next(r.aws_id for r in STATE if r.type == "aws_route_table")


def test_clean_apply_has_nothing_unmanaged():
    # the main route table, default SG and the instance's primary ENI are AWS-made
    assert find_unmanaged("rec-group", STATE, load("describe_after_apply")) == []


def test_out_of_band_instance_and_route_are_found():
    findings = find_unmanaged("rec-group", STATE, load("describe_out_of_band"))
    kinds = {f.detail["type"]: f for f in findings}
    assert set(kinds) == {"instances", "routes", "security_group_rules"}
    assert all(f.check == "unmanaged" and f.group == "rec-group" for f in findings)
    instance = kinds["instances"]
    assert instance.aws_id.startswith("i-") and VPC in instance.detail["where"]
    assert instance.detail["role"] == "debug"
    route = kinds["routes"]
    assert route.detail["route_table_id"] == TABLE and route.detail["destination"] == "192.168.0.0/16"


def test_declared_route_missing_from_state_is_unmanaged():
    without_route = [r for r in STATE if r.type != "aws_route"]
    findings = find_unmanaged("rec-group", without_route, load("describe_after_apply"))
    assert [(f.detail["type"], f.detail["destination"]) for f in findings] == [("routes", "0.0.0.0/0")]


def test_other_vpcs_are_ignored_and_group_tag_counts():
    described = load("describe_after_apply")
    outside = {"VpcId": "vpc-elsewhere", "SubnetId": "subnet-x", "Tags": []}
    tagged = {"VpcId": "vpc-elsewhere", "SubnetId": "subnet-y", "Tags": [{"Key": "Group", "Value": "rec-group"}]}
    described = dict(described, subnets=described["subnets"] + [outside, tagged])
    findings = find_unmanaged("rec-group", STATE, described)
    assert [(f.aws_id, f.detail["where"]) for f in findings] == [("subnet-y", "tagged Group=rec-group")]


def test_aws_made_interfaces_are_ignored_but_extra_ones_are_not():
    described = copy.deepcopy(load("describe_after_apply"))
    base = {"VpcId": VPC, "SubnetId": "subnet-1", "Attachment": {}}
    described["network_interfaces"] += [
        dict(base, NetworkInterfaceId="eni-nat", InterfaceType="nat_gateway"),
        dict(base, NetworkInterfaceId="eni-elb", RequesterManaged=True, InterfaceType="interface"),
        dict(base, NetworkInterfaceId="eni-loose", InterfaceType="interface"),
    ]
    primary = next(e for e in described["network_interfaces"] if e.get("Attachment", {}).get("DeviceIndex") == 0)
    described["network_interfaces"].append(
        dict(base, NetworkInterfaceId="eni-second",
             Attachment={"InstanceId": primary["Attachment"].get("InstanceId"), "DeviceIndex": 1}))
    ids = {f.aws_id for f in find_unmanaged("rec-group", STATE, described)}
    assert ids == {"eni-loose", "eni-second"}


def test_terminated_instances_and_deleted_nat_are_ignored():
    described = load("describe_out_of_band")
    for i in described["instances"]:
        i["State"] = {"Name": "terminated", "Code": 48}
    described["nat_gateways"] = [{"NatGatewayId": "nat-1", "VpcId": VPC, "State": "deleted"}]
    findings = find_unmanaged("rec-group", STATE, described)
    assert {f.detail["type"] for f in findings} == {"routes", "security_group_rules"}


def test_unmanaged_gateway_peering_and_association():
    described = copy.deepcopy(load("describe_after_apply"))
    described["internet_gateways"].append({"InternetGatewayId": "igw-rogue", "Attachments": [{"VpcId": VPC}]})
    described["vpc_peering_connections"] = [
        {"VpcPeeringConnectionId": "pcx-rogue", "Status": {"Code": "active"},
         "RequesterVpcInfo": {"VpcId": "vpc-other"}, "AccepterVpcInfo": {"VpcId": VPC}}]
    table = next(t for t in described["route_tables"] if t["RouteTableId"] == TABLE)
    table["Associations"].append({"Main": False, "RouteTableAssociationId": "rtbassoc-rogue",
                                  "SubnetId": "subnet-z", "AssociationState": {"State": "associated"}})
    ids = {f.aws_id for f in find_unmanaged("rec-group", STATE, described)}
    assert ids == {"igw-rogue", "pcx-rogue", "rtbassoc-rogue"}


# -- rules of groups managed by aws_security_group_rule resources ---------------

SG = next(r for r in STATE if r.type == "aws_security_group")


def refreshed(state, sg_id: str, ingress: list[dict]) -> list:
    """The state after a refresh-only apply: the group's inline ``ingress`` holds every live rule."""
    out = []
    for r in state:
        if r.type == "aws_security_group" and r.aws_id == sg_id:
            r = type(r)(r.address, r.type, dict(r.values, ingress=ingress), r.mode, r.name, r.module_address)
        out.append(r)
    return out


def rule_findings(findings):
    return [f for f in findings if f.detail["type"] == "security_group_rules"]


def test_rule_added_by_hand_to_a_rule_managed_group_is_unmanaged():
    [finding] = rule_findings(find_unmanaged("rec-group", STATE, load("describe_out_of_band")))
    assert finding.aws_id == SG.aws_id and finding.address == "aws_security_group.web"
    assert finding.detail["rule"] == "ingress tcp 22 from 0.0.0.0/0"
    assert "0.0.0.0/0" in finding.found and SG.aws_id in finding.found
    # the declared rules (http 80 from anywhere, all egress) are not findings
    assert rule_findings(find_unmanaged("rec-group", STATE, load("describe_after_apply"))) == []


def test_rule_stays_a_finding_after_a_refresh_reads_it_into_the_state():
    # what a refresh-only apply leaves: the extra rule inline in aws_security_group.web
    inline = [{"from_port": p, "to_port": p, "protocol": "tcp", "cidr_blocks": ["0.0.0.0/0"], "self": False,
               "security_groups": [], "ipv6_cidr_blocks": [], "prefix_list_ids": [], "description": ""}
              for p in (80, 22)]
    state = refreshed(STATE, SG.aws_id, inline)
    [finding] = rule_findings(find_unmanaged("rec-group", state, load("describe_out_of_band")))
    assert finding.detail["rule"] == "ingress tcp 22 from 0.0.0.0/0"


def test_group_with_inline_rules_is_left_to_drift():
    # no aws_security_group_rule names the group: its inline rules are compared by the drift check
    state = [r for r in STATE if r.type != "aws_security_group_rule"]
    assert rule_findings(find_unmanaged("rec-group", state, load("describe_out_of_band"))) == []


def test_security_group_sourced_self_and_all_traffic_rules_match_their_resources():
    from immutable_infra.plan import StateResource

    sg, web = "sg-0000000000000000a", "sg-0000000000000000b"
    state = [
        StateResource("aws_vpc.v", "aws_vpc", {"id": "vpc-1"}),
        StateResource("aws_security_group.app", "aws_security_group", {"id": sg, "vpc_id": "vpc-1"}),
        StateResource("aws_security_group_rule.from_web", "aws_security_group_rule", {
            "type": "ingress", "security_group_id": sg, "protocol": "tcp", "from_port": 8080, "to_port": 8080,
            "source_security_group_id": web, "self": False, "cidr_blocks": None}),
        StateResource("aws_security_group_rule.self", "aws_security_group_rule", {
            "type": "ingress", "security_group_id": sg, "protocol": "-1", "from_port": 0, "to_port": 0,
            "self": True}),
        StateResource("aws_security_group_rule.out", "aws_security_group_rule", {
            "type": "egress", "security_group_id": sg, "protocol": "-1", "from_port": 0, "to_port": 0,
            "cidr_blocks": ["0.0.0.0/0"]}),
    ]
    live = {"GroupId": sg, "GroupName": "app", "VpcId": "vpc-1",
            "IpPermissions": [
                {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080, "UserIdGroupPairs": [{"GroupId": web}]},
                {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": sg}]},
            ],
            "IpPermissionsEgress": [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]}
    assert find_unmanaged("g", state, {"security_groups": [live]}) == []
    # the same port from another group, and a wider port range, are not declared
    live["IpPermissions"] += [
        {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080, "UserIdGroupPairs": [{"GroupId": "sg-0000000000000000c"}]},
        {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8090, "UserIdGroupPairs": [{"GroupId": web}]},
    ]
    found = sorted(f.detail["rule"] for f in find_unmanaged("g", state, {"security_groups": [live]}))
    assert found == [f"ingress tcp 8080 from sg-0000000000000000c", f"ingress tcp 8080-8090 from {web}"]


# -- recorded on tests/groups/realworld (tests/data/realworld/make_recording.py) -----------------

REALWORLD = Path(__file__).parent / "data" / "realworld"


def realworld(name: str) -> dict:
    return json.loads((REALWORLD / f"{name}.json").read_text())


def test_realworld_clean_apply_has_nothing_unmanaged():
    # module VPC, NAT, S3 endpoint, flow log, managed defaults, SG-sourced and all-traffic rule resources
    assert find_unmanaged("realworld", state_resources(realworld("state")), realworld("describe_clean")) == []


def test_realworld_hand_made_rule_is_found_before_and_after_the_refresh_that_launders_drift():
    for state in ("state", "state_refreshed"):
        [finding] = find_unmanaged("realworld", state_resources(realworld(state)), realworld("describe_rule_added"))
        assert finding.address == 'aws_security_group.role["web"]', state
        assert finding.detail["rule"] == "ingress tcp 22 from 0.0.0.0/0"


def test_a_managed_gateway_endpoint_route_is_the_endpoints_but_an_unknown_one_is_not():
    described = copy.deepcopy(realworld("describe_clean"))
    state = state_resources(realworld("state"))
    endpoint = next(r.aws_id for r in state if r.type == "aws_vpc_endpoint")
    table = next(r.aws_id for r in state if r.address == "module.vpc.aws_route_table.private[0]")
    [rt] = [t for t in described["route_tables"] if t["RouteTableId"] == table]
    # what AWS (and the sandbox, compat.vpc_endpoint_route_tables_get_routes) adds for the association
    rt["Routes"].append({"DestinationPrefixListId": "pl-6fa54006", "GatewayId": endpoint, "Origin": "CreateRoute",
                         "State": "active"})
    assert find_unmanaged("realworld", state, described) == []
    rt["Routes"].append({"DestinationPrefixListId": "pl-6da54004", "GatewayId": "vpce-0123456789abcdef0",
                         "Origin": "CreateRoute", "State": "active"})
    [finding] = find_unmanaged("realworld", state, described)
    assert finding.detail["destination"] == "pl-6da54004" and finding.detail["target"] == "vpce-0123456789abcdef0"


def test_realworld_endpoint_and_flow_log_are_managed_but_hand_made_ones_are_not():
    described = copy.deepcopy(realworld("describe_clean"))
    state = state_resources(realworld("state"))
    assert [e["VpcEndpointId"] for e in described["vpc_endpoints"]] == [
        r.aws_id for r in state if r.type == "aws_vpc_endpoint"]
    assert [f["FlowLogId"] for f in described["flow_logs"]] == [r.aws_id for r in state if r.type == "aws_flow_log"]
    assert find_unmanaged("realworld", state, described) == []
    # the same again, made by hand in the group's VPC; and a deleted endpoint, which is gone
    endpoint = dict(described["vpc_endpoints"][0], VpcEndpointId="vpce-0000000000000000a")
    gone = dict(described["vpc_endpoints"][0], VpcEndpointId="vpce-0000000000000000b", State="deleted")
    log = dict(described["flow_logs"][0], FlowLogId="fl-0000000000000000a")
    described["vpc_endpoints"] += [endpoint, gone]
    described["flow_logs"].append(log)
    found = sorted((f.detail["type"], f.aws_id) for f in find_unmanaged("realworld", state, described))
    assert found == [("flow_logs", "fl-0000000000000000a"), ("vpc_endpoints", "vpce-0000000000000000a")]
