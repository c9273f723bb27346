"""What each check needs: a group that lacks it gets a skip with the reason (or an error for a false claim), never a pass.

Milliseconds: a stand-in harness over recorded state JSON, and moto in-process
(``mock_aws``) where the roles check reads AWS.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest
from moto import mock_aws

from immutable_infra import verify
from immutable_infra.catalog import Group

ROOT = Path(__file__).parent.parent
REGION = "ap-southeast-1"


def resource(address: str, rtype: str, rid: str, **values):
    return {"address": address, "mode": "managed", "type": rtype, "name": address.rsplit(".", 1)[-1],
            "values": {"id": rid, **values}}


def state(*resources, modules=()):
    return {"values": {"root_module": {"resources": list(resources), "child_modules": list(modules)}}}


def harness(group: Group, state_json: dict, outputs: dict | None = None, client=None, images_dir: Path | None = None):
    """What verify reads of a Harness: catalog, deployer.terraform(name).state(), run records, sandbox, images."""
    return SimpleNamespace(
        catalog=SimpleNamespace(get=lambda name: group, groups_dir=ROOT / "fixtures" / "groups"),
        deployer=SimpleNamespace(terraform=lambda name: SimpleNamespace(state=lambda: state_json)),
        run=SimpleNamespace(id="r1", order=[group.name],
                            groups={group.name: SimpleNamespace(outputs=outputs or {}, region=group.region, status="applied")}),
        sandbox=SimpleNamespace(client=client),
        images_dir=images_dir or ROOT / "fixtures" / "images",
    )


def group(name="g", roles=None, kind="application"):
    return Group(name=name, path=ROOT / "fixtures" / "groups" / name, kind=kind, region=REGION,
                 vpc_cidr="10.50.0.0/16", roles=dict(roles or {}))


VPC_IN_MODULE = state(modules=[{"address": "module.vpc", "resources": [
    resource("module.vpc.aws_vpc.this[0]", "aws_vpc", "vpc-1")]}])
INSTANCE = resource("aws_instance.web", "aws_instance", "i-1", tags={"Role": "reverse-proxy"})


def test_unmanaged_needs_a_vpc_of_the_group():
    with pytest.raises(verify.NotApplicable, match=r"unmanaged: g has no VPC \(no aws_vpc in its state, no vpc_id"):
        verify.needs(harness(group(), state(resource("aws_s3_bucket.b", "aws_s3_bucket", "b"))), "g", "unmanaged")
    verify.needs(harness(group(), VPC_IN_MODULE), "g", "unmanaged")  # found in a module, no output needed
    verify.needs(harness(group(), state(), outputs={"vpc_id": "vpc-9"}), "g", "unmanaged")


def test_roles_skipped_without_roles_or_instances_and_an_error_when_roles_claim_missing_instances():
    with pytest.raises(verify.NotApplicable, match="roles: g declares no \\[roles\\] in its group.toml and has no aws_instance"):
        verify.needs(harness(group(), VPC_IN_MODULE), "g", "roles")
    with pytest.raises(verify.ClaimNotMet, match=r"roles: .*group.toml \[roles\] declares 2 reverse-proxy but g's state "
                                                 r"has no aws_instance; fix \[roles\] or the group's Terraform"):
        verify.needs(harness(group(roles={"reverse-proxy": 2}), VPC_IN_MODULE), "g", "roles")
    verify.needs(harness(group(roles={"reverse-proxy": 1}), state(INSTANCE)), "g", "roles")
    verify.needs(harness(group(), state(INSTANCE)), "g", "roles")  # undeclared instances: the check names them


@pytest.mark.parametrize("check", ["mutation", "parity"])
def test_instance_checks_need_instances(check):
    with pytest.raises(verify.NotApplicable, match=f"{check}: g has no aws_instance to check"):
        verify.needs(harness(group(), VPC_IN_MODULE), "g", check)
    with pytest.raises(verify.ClaimNotMet, match=f"{check}: .*declares instances but g's state has no aws_instance"):
        verify.needs(harness(group(roles={"web": 1}), VPC_IN_MODULE), "g", check)
    verify.needs(harness(group(), state(INSTANCE)), "g", check)


def test_parity_needs_image_manifests(tmp_path):
    with pytest.raises(verify.NotApplicable, match="parity: no image manifests in"):
        verify.needs(harness(group(), state(INSTANCE), images_dir=tmp_path / "images"), "g", "parity")


def test_applicable_splits_checks_with_reasons():
    ok, not_here = verify.applicable(harness(group(), state(resource("aws_s3_bucket.b", "aws_s3_bucket", "b"))), "g",
                                     ["drift", "unmanaged", "roles", "mutation"])
    assert ok == ["drift"]
    assert sorted(not_here) == ["mutation", "roles", "unmanaged"]


def peering(pcx, requester, accepter, code="active"):
    return {"VpcPeeringConnectionId": pcx, "Status": {"Code": code},
            "RequesterVpcInfo": {"VpcId": requester}, "AccepterVpcInfo": {"VpcId": accepter}}


def test_group_peerings_only_those_touching_the_group_and_not_deleted():
    snapshot = {"peering_connections": [peering("pcx-1", "vpc-a", "vpc-b"), peering("pcx-2", "vpc-c", "vpc-d"),
                                        peering("pcx-3", "vpc-e", "vpc-a", code="deleted")]}
    assert verify.group_peerings(snapshot, ["vpc-a"]) == ["pcx-1"]
    assert verify.group_peerings(snapshot, ["vpc-b"]) == ["pcx-1"]
    assert verify.group_peerings(snapshot, ["vpc-x"]) == []  # the peerings test skips: nothing to check


@mock_aws
def test_roles_check_reads_placement_of_instances_it_cannot_see_through_the_vpc():
    """No VPC discovered for the group (no aws_vpc in state, no output): the instance found by its Group tag is
    still judged on its real subnet and security groups, not reported as `subnet ... not found` / `closed`."""
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.50.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.50.1.0/24",
                               TagSpecifications=[{"ResourceType": "subnet", "Tags": [{"Key": "Tier", "Value": "public"}]}]
                               )["Subnet"]["SubnetId"]
    sgs = []
    for purpose, ports in (("reverse-proxy", (80, 443)), ("ssh-from-ops", (22,))):
        sg = ec2.create_security_group(GroupName=purpose, Description=purpose, VpcId=vpc,
                                       TagSpecifications=[{"ResourceType": "security-group",
                                                           "Tags": [{"Key": "Purpose", "Value": purpose}]}])["GroupId"]
        ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": p, "ToPort": p, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]} for p in ports])
        sgs.append(sg)
    image = ec2.describe_images()["Images"][0]["ImageId"]
    iid = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, SubnetId=subnet, SecurityGroupIds=sgs,
                            TagSpecifications=[{"ResourceType": "instance", "Tags": [
                                {"Key": "Role", "Value": "reverse-proxy"}, {"Key": "Group", "Value": "g"},
                                {"Key": "Run", "Value": "r1"}]}]  # the run's default_tags
                            )["Instances"][0]["InstanceId"]
    h = harness(group(roles={"reverse-proxy": 1}), state(resource("aws_instance.web", "aws_instance", iid)),
                client=lambda service, region: boto3.client(service, region_name=region))
    assert verify.vpc_ids(h, "g") == []
    result = verify.roles(h, "g")
    texts = [f"{f.expected} / {f.found}" for f in result.findings]
    assert not [t for t in texts if "not found" in t or "closed" in t], texts
    assert not result.findings, texts

    # The same instance in a private subnet is still a finding: the lookup is not a blindfold.
    ec2.create_tags(Resources=[subnet], Tags=[{"Key": "Tier", "Value": "private"}])
    assert [f for f in verify.roles(h, "g").findings if "private" in f.found]
