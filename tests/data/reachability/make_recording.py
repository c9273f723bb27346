"""Regenerate the recorded describe data for the reachability tests.

    /work/venv/bin/python tests/data/reachability/make_recording.py

Builds three peered VPCs in moto (in-process, ``mock_aws``; nothing leaves
the machine) the way the seed groups ops-sg, prd-sg-master and prd-sg-slave
look, takes a snapshot with ``immutable_infra.snapshot.take_snapshot`` and
writes ``peered_vpcs.json`` (the snapshot) and ``peered_vpcs.addresses.json``
(AWS id -> the Terraform address a group would give it). Ids are random per
run; tests find resources by tag, never by a literal id.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2] / "plugins"))

import boto3  # noqa: E402
from moto import mock_aws  # noqa: E402

from immutable_infra.snapshot import take_snapshot  # noqa: E402

REGION = "ap-southeast-1"
GROUPS = {  # group -> (VPC CIDR, [(subnet name, CIDR)])
    "ops-sg": ("10.10.0.0/16", [("public", "10.10.1.0/24"), ("private", "10.10.2.0/24")]),
    "prd-sg-master": ("10.20.0.0/16", [("public", "10.20.1.0/24"), ("private", "10.20.2.0/24")]),
    "prd-sg-slave": ("10.30.0.0/16", [("public", "10.30.1.0/24"), ("private", "10.30.2.0/24")]),
}
PEERS = [("ops-sg", "prd-sg-master"), ("ops-sg", "prd-sg-slave"), ("prd-sg-master", "prd-sg-slave")]
INSTANCES = [  # group, role, subnet, private IP, security group names
    ("ops-sg", "ci", "private", "10.10.2.10", ["ci"]),
    ("ops-sg", "vpn", "public", "10.10.1.10", ["vpn"]),
    ("prd-sg-master", "microservice", "private", "10.20.2.10", ["microservice"]),
    ("prd-sg-master", "reverse-proxy", "public", "10.20.1.10", ["reverse-proxy"]),
    ("prd-sg-slave", "microservice", "private", "10.30.2.10", ["microservice"]),
    ("prd-sg-slave", "microservice", "private", "10.30.2.11", ["microservice"]),
    ("prd-sg-slave", "reverse-proxy", "public", "10.30.1.10", ["reverse-proxy"]),
]


def tags(group: str, name: str, **extra: str) -> list[dict[str, str]]:
    return [{"Key": "Group", "Value": group}, {"Key": "Name", "Value": name}] + [
        {"Key": k, "Value": v} for k, v in extra.items()]


def spec(kind: str, group: str, name: str, **extra: str) -> list[dict]:
    return [{"ResourceType": kind, "Tags": tags(group, name, **extra)}]


def build(ec2) -> dict[str, str]:
    """Create the topology; return AWS id -> Terraform address."""
    addresses: dict[str, str] = {}
    vpc, subnet, rt, sgs = {}, {}, {}, {}
    for group, (cidr, subnets) in GROUPS.items():
        v = ec2.create_vpc(CidrBlock=cidr, TagSpecifications=spec("vpc", group, group))["Vpc"]["VpcId"]
        vpc[group] = v
        addresses[v] = f"module.{group}.aws_vpc.this"
        igw = ec2.create_internet_gateway(
            TagSpecifications=spec("internet-gateway", group, group))["InternetGateway"]["InternetGatewayId"]
        ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=v)
        addresses[igw] = f"module.{group}.aws_internet_gateway.this"
        table = ec2.create_route_table(VpcId=v, TagSpecifications=spec("route-table", group, f"{group}-private")
                                       )["RouteTable"]["RouteTableId"]
        rt[group] = table
        addresses[table] = f"module.{group}.aws_route_table.private"
        ec2.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
        for name, sub_cidr in subnets:
            s = ec2.create_subnet(VpcId=v, CidrBlock=sub_cidr, AvailabilityZone=f"{REGION}a",
                                  TagSpecifications=spec("subnet", group, f"{group}-{name}"))["Subnet"]["SubnetId"]
            subnet[(group, name)] = s
            addresses[s] = f"module.{group}.aws_subnet.{name}"
            ec2.associate_route_table(RouteTableId=table, SubnetId=s)
        for acl in ec2.describe_network_acls(Filters=[{"Name": "vpc-id", "Values": [v]}])["NetworkAcls"]:
            addresses[acl["NetworkAclId"]] = f"module.{group}.aws_default_network_acl.this"
        for role in ("ci", "vpn", "microservice", "reverse-proxy"):
            sg = ec2.create_security_group(GroupName=f"{group}-{role}", Description=f"{role} in {group}", VpcId=v,
                                           TagSpecifications=spec("security-group", group, f"{group}-{role}",
                                                                  Role=role))["GroupId"]
            sgs[(group, role)] = sg
            addresses[sg] = f"module.{group}.aws_security_group.{role.replace('-', '_')}"

    for a, b in PEERS:
        pcx = ec2.create_vpc_peering_connection(
            VpcId=vpc[a], PeerVpcId=vpc[b], TagSpecifications=spec("vpc-peering-connection", a, f"{a}-to-{b}")
        )["VpcPeeringConnection"]["VpcPeeringConnectionId"]
        ec2.accept_vpc_peering_connection(VpcPeeringConnectionId=pcx)
        addresses[pcx] = f"module.{a}.aws_vpc_peering_connection.{b.replace('-', '_')}"
        ec2.create_route(RouteTableId=rt[a], DestinationCidrBlock=GROUPS[b][0], VpcPeeringConnectionId=pcx)
        ec2.create_route(RouteTableId=rt[b], DestinationCidrBlock=GROUPS[a][0], VpcPeeringConnectionId=pcx)

    ops = GROUPS["ops-sg"][0]
    for group in ("prd-sg-master", "prd-sg-slave"):
        # ssh from the ops VPC by CIDR; the app port from the reverse proxies by SG reference
        ec2.authorize_security_group_ingress(GroupId=sgs[(group, "microservice")], IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": ops}]},
            {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080,
             "UserIdGroupPairs": [{"GroupId": sgs[(group, "reverse-proxy")]}]},
            # cross-VPC SG reference (allowed over a same-region peering): ci may scrape metrics
            {"IpProtocol": "tcp", "FromPort": 9100, "ToPort": 9100,
             "UserIdGroupPairs": [{"GroupId": sgs[("ops-sg", "ci")]}]},
        ])
        ec2.authorize_security_group_ingress(GroupId=sgs[(group, "reverse-proxy")], IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": ops}]},
        ])
    ec2.authorize_security_group_ingress(GroupId=sgs[("ops-sg", "vpn")], IpPermissions=[
        {"IpProtocol": "udp", "FromPort": 1194, "ToPort": 1194, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])

    # a custom ACL on the slave's private subnet: what the microservices need, nothing else
    acl = ec2.create_network_acl(VpcId=vpc["prd-sg-slave"], TagSpecifications=spec(
        "network-acl", "prd-sg-slave", "prd-sg-slave-private"))["NetworkAcl"]["NetworkAclId"]
    addresses[acl] = "module.prd-sg-slave.aws_network_acl.private"
    entries = [
        (100, False, "6", (22, 22), ops), (110, False, "6", (8080, 8080), "10.30.0.0/16"),
        (120, False, "6", (9100, 9100), ops), (200, False, "6", (1024, 65535), "0.0.0.0/0"),
        (100, True, "6", (1024, 65535), "0.0.0.0/0"), (110, True, "6", (443, 443), "0.0.0.0/0"),
    ]
    for number, egress, proto, (lo, hi), cidr in entries:
        ec2.create_network_acl_entry(NetworkAclId=acl, RuleNumber=number, Protocol=proto, RuleAction="allow",
                                     Egress=egress, CidrBlock=cidr, PortRange={"From": lo, "To": hi})
    current = ec2.describe_network_acls(Filters=[{"Name": "association.subnet-id",
                                                  "Values": [subnet[("prd-sg-slave", "private")]]}])
    assoc = next(a["NetworkAclAssociationId"] for a in current["NetworkAcls"][0]["Associations"]
                 if a["SubnetId"] == subnet[("prd-sg-slave", "private")])
    ec2.replace_network_acl_association(AssociationId=assoc, NetworkAclId=acl)

    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    counts: dict[tuple[str, str], int] = {}
    for group, role, sub, ip, roles in INSTANCES:
        n = counts[(group, role)] = counts.get((group, role), 0) + 1
        inst = ec2.run_instances(
            ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro", SubnetId=subnet[(group, sub)],
            PrivateIpAddress=ip, SecurityGroupIds=[sgs[(group, r)] for r in roles],
            TagSpecifications=spec("instance", group, f"{role}-{n}", Role=role))["Instances"][0]["InstanceId"]
        addresses[inst] = f"module.{group}.aws_instance.{role.replace('-', '_')}[{n - 1}]"
    return addresses


def main() -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ[key] = "testing"
    os.environ.pop("AWS_PROFILE", None)
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        addresses = build(ec2)
        snapshot = take_snapshot(ec2)
    (HERE / "peered_vpcs.json").write_text(json.dumps(snapshot, indent=1, sort_keys=True) + "\n")
    (HERE / "peered_vpcs.addresses.json").write_text(json.dumps(addresses, indent=1, sort_keys=True) + "\n")
    print(f"wrote {HERE / 'peered_vpcs.json'}: "
          + ", ".join(f"{len(v)} {k}" for k, v in snapshot.items() if isinstance(v, list)))


if __name__ == "__main__":
    main()
