"""live.py: a group's VPCs are discovered from its Terraform state, not assumed from an output name."""

from __future__ import annotations

from immutable_infra.live import group_vpc_ids


def _res(address: str, rtype: str, rid: str, mode: str = "managed") -> dict:
    return {"address": address, "mode": mode, "type": rtype, "name": address.split(".")[-1].split("[")[0],
            "values": {"id": rid}}


#: The shape of ``show -json`` for a group whose VPCs sit in modules, under count and for_each.
STATE = {
    "format_version": "1.0",
    "values": {"root_module": {
        "resources": [
            _res("aws_instance.web[0]", "aws_instance", "i-0123456789abcdef0"),
            _res('aws_vpc.extra["blue"]', "aws_vpc", "vpc-0000000000000000b"),
            _res("data.aws_vpc.peer", "aws_vpc", "vpc-0000000000000000f", mode="data"),
        ],
        "child_modules": [{
            "address": "module.vpc",
            "resources": [_res("module.vpc.aws_vpc.this[0]", "aws_vpc", "vpc-0000000000000000a"),
                          _res("module.vpc.aws_subnet.public[0]", "aws_subnet", "subnet-0000000000000000a")],
            "child_modules": [{
                "address": "module.vpc.module.inner",
                "resources": [_res("module.vpc.module.inner.aws_vpc.this", "aws_vpc", "vpc-0000000000000000c")],
            }],
        }],
    }},
}


def test_every_managed_vpc_of_the_state_in_modules_count_and_for_each():
    # a data source names a VPC the group does not own: left out
    assert group_vpc_ids({}, STATE) == ["vpc-0000000000000000a", "vpc-0000000000000000b", "vpc-0000000000000000c"]
    assert group_vpc_ids({"subnet_ids": ["subnet-0000000000000000a"]}, STATE) == group_vpc_ids({}, STATE)


def test_an_output_still_overrides():
    assert group_vpc_ids({"vpc_id": "vpc-0000000000000000d"}, STATE) == ["vpc-0000000000000000d"]
    assert group_vpc_ids({"vpc_ids": ["vpc-2", "vpc-1", "vpc-2"]}, STATE) == ["vpc-1", "vpc-2"]
    assert group_vpc_ids({"vpc_id": "vpc-0000000000000000d"}) == ["vpc-0000000000000000d"]


def test_nothing_to_find():
    assert group_vpc_ids({}, None) == []
    assert group_vpc_ids({"vpc_id": ""}, {"values": {"root_module": {}}}) == []


def test_recorded_realworld_state_names_the_module_vpc():
    """tests/groups/realworld exports no vpc_id: its one VPC is module.vpc.aws_vpc.this[0]."""
    import json
    from pathlib import Path

    from immutable_infra.plan import state_resources

    state = json.loads((Path(__file__).parent / "data" / "rebuild" / "realworld-original.json").read_text())
    [vpc] = [r for r in state_resources(state) if r.type == "aws_vpc"]
    assert vpc.address == "module.vpc.aws_vpc.this[0]"
    assert group_vpc_ids({"public_subnets": ["subnet-x"]}, state) == [vpc.aws_id]


def test_instances_tagged_with_the_group_outside_its_vpcs_count_for_their_own_run_only(moto_server):
    """A deployed group (run_id "") must not count an ephemeral copy's instances as its own; a run only its own."""
    import boto3

    from immutable_infra.live import describe_group

    ec2 = boto3.client("ec2", region_name="eu-west-3", endpoint_url=moto_server.url,
                       aws_access_key_id="t", aws_secret_access_key="t")
    group = "live-filter"
    ours = ec2.create_vpc(CidrBlock="10.61.0.0/16")["Vpc"]["VpcId"]
    other = ec2.create_vpc(CidrBlock="10.62.0.0/16")["Vpc"]["VpcId"]
    inside = ec2.create_subnet(VpcId=ours, CidrBlock="10.61.1.0/24")["Subnet"]["SubnetId"]
    outside = ec2.create_subnet(VpcId=other, CidrBlock="10.62.1.0/24")["Subnet"]["SubnetId"]

    def launch(subnet, **tags):
        tag = [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in {"Group": group, **tags}.items()]}]
        return ec2.run_instances(ImageId="ami-1e749f67", MinCount=1, MaxCount=1, SubnetId=subnet,
                                 TagSpecifications=tag)["Instances"][0]["InstanceId"]

    member = launch(inside)
    run_a, run_b, team = launch(outside, Run="ra"), launch(outside, Run="rb"), launch(outside)
    gone = launch(outside)
    ec2.terminate_instances(InstanceIds=[gone])
    try:
        def ids(run_id):
            return {i["InstanceId"] for i in describe_group(ec2, [ours], group, run_id)["instances"]}

        assert ids(None) == {member, run_a, run_b, team}
        assert ids("ra") == {member, run_a}
        assert ids("") == {member, team}
    finally:
        ec2.terminate_instances(InstanceIds=[member, run_a, run_b, team])


def test_peering_connections_of_other_vpcs_are_not_the_groups(moto_server):
    """moto ignores the requester/accepter filters; a copy's peering tagged with the group is not in its snapshot."""
    import boto3

    from immutable_infra.checks.unmanaged import find_unmanaged
    from immutable_infra.live import describe_group

    ec2 = boto3.client("ec2", region_name="eu-west-3", endpoint_url=moto_server.url,
                       aws_access_key_id="t", aws_secret_access_key="t")
    group = "peer-filter"
    ours, peer, copy_a, copy_b = (ec2.create_vpc(CidrBlock=f"10.{n}.0.0/16")["Vpc"]["VpcId"] for n in (71, 72, 73, 74))
    tags = [{"ResourceType": "vpc-peering-connection", "Tags": [{"Key": "Group", "Value": group}, {"Key": "Run", "Value": "r9"}]}]
    mine = ec2.create_vpc_peering_connection(VpcId=ours, PeerVpcId=peer)["VpcPeeringConnection"]["VpcPeeringConnectionId"]
    copy = ec2.create_vpc_peering_connection(VpcId=copy_a, PeerVpcId=copy_b, TagSpecifications=tags)[
        "VpcPeeringConnection"]["VpcPeeringConnectionId"]
    try:
        snap = describe_group(ec2, [ours], group, "")
        ids = {p["VpcPeeringConnectionId"] for p in snap["vpc_peering_connections"]}
        assert mine in ids and copy not in ids
        assert copy not in {f.aws_id for f in find_unmanaged(group, [], snap)}
    finally:
        for pcx in (mine, copy):
            ec2.delete_vpc_peering_connection(VpcPeeringConnectionId=pcx)
