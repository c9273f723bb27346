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
    assert set(kinds) == {"instances", "routes"}
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
    assert {f.detail["type"] for f in findings} == {"routes"}


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
