"""One test per moto compatibility fix (plugins/immutable_infra/compat.py).

Each test drives the embedded moto server (127.0.0.1) with boto3, the way the
hashicorp/aws provider calls it, and checks the AWS behaviour. Fast, no
Terraform. (Not ``mock_aws``: it resets moto's process-wide state, which the
other tests' servers share.)
"""

from __future__ import annotations


import boto3
import pytest
from botocore.exceptions import ClientError
from immutable_infra import compat

REGION = "ap-southeast-1"


@pytest.fixture(autouse=True)
def _aws(monkeypatch: pytest.MonkeyPatch, moto_server):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)  # every boto3 client below talks to it
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    compat.apply()
    yield


def test_apply_is_idempotent():
    from moto.ec2.models.instances import Instance

    before = Instance.__init__
    compat.apply()
    compat.fix_instance_security_groups_from_primary_nic()
    assert Instance.__init__ is before


def test_instance_security_groups_on_primary_nic_read_back():
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.99.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.99.1.0/24")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="vpn", Description="vpn", VpcId=vpc)["GroupId"]
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    # The shape provider 3.39.0 sends for an instance in a subnet with vpc_security_group_ids.
    instance = ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro",
        NetworkInterfaces=[{
            "DeviceIndex": 0, "SubnetId": subnet, "AssociatePublicIpAddress": True,
            "Groups": [sg],
        }],
    )["Instances"][0]
    described = ec2.describe_instances(InstanceIds=[instance["InstanceId"]])
    got = described["Reservations"][0]["Instances"][0]
    assert [g["GroupId"] for g in got["SecurityGroups"]] == [sg]
    assert [g["GroupId"] for g in got["NetworkInterfaces"][0]["Groups"]] == [sg]


def test_route53_zone_created_with_vpc_is_private():
    ec2 = boto3.client("ec2", region_name=REGION)
    r53 = boto3.client("route53", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.98.0.0/16")["Vpc"]["VpcId"]
    # No HostedZoneConfig.PrivateZone: exactly what provider 3.x sends.
    zone = r53.create_hosted_zone(
        Name="ops-sg.test.internal", CallerReference="ref-1",
        VPC={"VPCRegion": REGION, "VPCId": vpc},
    )["HostedZone"]
    got = r53.get_hosted_zone(Id=zone["Id"])
    assert got["HostedZone"]["Config"]["PrivateZone"] is True
    assert got["VPCs"] == [{"VPCRegion": REGION, "VPCId": vpc}]
    # A zone without a VPC stays public.
    public = r53.create_hosted_zone(Name="example.test", CallerReference="ref-2")["HostedZone"]
    assert r53.get_hosted_zone(Id=public["Id"])["HostedZone"]["Config"]["PrivateZone"] is False


def test_route53_recreate_deleted_record():
    r53 = boto3.client("route53", region_name=REGION)
    zone = r53.create_hosted_zone(Name="grp.test.internal", CallerReference="ref-3")["HostedZone"]["Id"]

    def change(action: str, name: str, ip: str) -> None:
        r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [{
            "Action": action,
            "ResourceRecordSet": {"Name": name, "Type": "A", "TTL": 60, "ResourceRecords": [{"Value": ip}]},
        }]})

    change("CREATE", "admin.grp.test.internal", "10.0.0.1")
    change("CREATE", "vpn.grp.test.internal", "10.0.0.2")   # sorts after admin
    change("DELETE", "admin.grp.test.internal", "10.0.0.1")
    change("CREATE", "admin.grp.test.internal", "10.0.0.1")  # moto said "already exists"
    records = r53.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
    assert sorted(r["Name"] for r in records if r["Type"] == "A") == [
        "admin.grp.test.internal.", "vpn.grp.test.internal.",
    ]
    # Creating a record that does exist is still refused, as in AWS.
    with pytest.raises(ClientError) as err:
        change("CREATE", "vpn.grp.test.internal", "10.0.0.9")
    assert "already exists" in str(err.value)


def test_deleting_a_nat_gateway_releases_its_address_and_interface():
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.98.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.98.1.0/24")["Subnet"]["SubnetId"]
    allocation = ec2.allocate_address(Domain="vpc")["AllocationId"]
    first = ec2.create_nat_gateway(SubnetId=subnet, AllocationId=allocation)["NatGateway"]["NatGatewayId"]
    ec2.delete_nat_gateway(NatGatewayId=first)
    address = ec2.describe_addresses(AllocationIds=[allocation])["Addresses"][0]
    assert "AssociationId" not in address or not address["AssociationId"]
    assert ec2.describe_network_interfaces(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["NetworkInterfaces"] == []
    # what an apply does to repair it: a new gateway on the same allocation
    second = ec2.create_nat_gateway(SubnetId=subnet, AllocationId=allocation)["NatGateway"]["NatGatewayId"]
    assert second != first


def _instance_in_new_subnet(ec2, cidr: str):
    vpc = ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=cidr.replace("0.0/16", "1.0/24"))["Subnet"]["SubnetId"]
    sgs = [ec2.create_security_group(GroupName=n, Description=n, VpcId=vpc)["GroupId"] for n in ("a", "b", "extra")]
    instance = ec2.run_instances(ImageId="ami-1e749f67", MinCount=1, MaxCount=1, InstanceType="t3.micro",
                                 NetworkInterfaces=[{"DeviceIndex": 0, "SubnetId": subnet, "Groups": sgs[:2]}])["Instances"][0]
    return vpc, sgs, instance


def test_terminating_an_instance_deletes_the_interface_its_launch_created():
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc, _, instance = _instance_in_new_subnet(ec2, "10.97.0.0/16")
    ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
    assert ec2.describe_network_interfaces(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["NetworkInterfaces"] == []


def test_instance_and_primary_interface_groups_are_one_set():
    ec2 = boto3.client("ec2", region_name=REGION)
    _, (a, b, extra), instance = _instance_in_new_subnet(ec2, "10.96.0.0/16")
    iid, eni = instance["InstanceId"], instance["NetworkInterfaces"][0]["NetworkInterfaceId"]
    ec2.modify_instance_attribute(InstanceId=iid, Groups=[a, b, extra])  # attached out of band
    ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[a, b])  # what an apply does to repair it
    got = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert sorted(g["GroupId"] for g in got["SecurityGroups"]) == sorted([a, b])
    assert sorted(g["GroupId"] for g in got["NetworkInterfaces"][0]["Groups"]) == sorted([a, b])
