"""One test per moto compatibility fix (plugins/immutable_infra/compat.py), run both ways.

Each scenario drives a moto server (127.0.0.1) with boto3, the way the
hashicorp/aws provider calls it, and asserts the AWS behaviour. It runs
against the patched server of these tests (it must pass) and against a
*plain* moto server in a subprocess, never patched (it must fail: proof that
each test sees what its fix fixes). Fast, no Terraform. (Not ``mock_aws``: it
resets moto's process-wide state, which the other tests' servers share.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Callable

import boto3
import pytest
from botocore.exceptions import ClientError
from immutable_infra import compat
from immutable_infra.sandbox import free_port

REGION = "ap-southeast-1"

#: fix name -> scenario (filled by @scenario below)
SCENARIOS: dict[str, Callable[[], None]] = {}


def scenario(fix: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    def register(func: Callable[[], None]) -> Callable[[], None]:
        SCENARIOS[fix] = func
        return func

    return register


@pytest.fixture(scope="module")
def plain_moto():
    """moto as a user's `moto_server` runs it: its own process, none of the compatibility fixes."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOTO_RECORDER")}
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/moto-api/", timeout=1).close()
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"plain moto server did not start on {url}") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _point_boto3_at(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)  # every boto3 client of a scenario talks to it
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def test_every_fix_has_a_scenario():
    assert sorted(SCENARIOS) == sorted(compat.FIXES)


@pytest.mark.parametrize("fix", compat.FIXES)
def test_fix_gives_the_aws_behaviour(fix: str, moto_server, monkeypatch: pytest.MonkeyPatch):
    compat.apply()
    _point_boto3_at(monkeypatch, moto_server.url)
    SCENARIOS[fix]()


@pytest.mark.parametrize("fix", compat.FIXES)
def test_plain_moto_fails_the_scenario(fix: str, plain_moto: str, monkeypatch: pytest.MonkeyPatch):
    """Without the fix the scenario fails: the test is not vacuous."""
    _point_boto3_at(monkeypatch, plain_moto)
    with pytest.raises((AssertionError, ClientError)):
        SCENARIOS[fix]()


def test_apply_is_idempotent():
    compat.apply()
    from moto.ec2.models.instances import Instance

    before = Instance.__init__
    compat.apply()
    compat.fix_instance_security_groups_from_primary_nic()
    assert Instance.__init__ is before


@scenario("instance_security_groups_from_primary_nic")
def instance_security_groups_on_primary_nic_read_back() -> None:
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


@scenario("route53_zone_with_vpc_is_private")
def route53_zone_created_with_vpc_is_private() -> None:
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


@scenario("route53_recreate_deleted_record")
def route53_recreate_deleted_record() -> None:
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


@scenario("nat_gateway_delete_releases_address")
def deleting_a_nat_gateway_releases_its_address_and_interface() -> None:
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


@scenario("primary_interface_deleted_with_instance")
def terminating_an_instance_deletes_the_interface_its_launch_created() -> None:
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc, _, instance = _instance_in_new_subnet(ec2, "10.97.0.0/16")
    ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
    assert ec2.describe_network_interfaces(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["NetworkInterfaces"] == []


@scenario("instance_and_primary_interface_share_groups")
def instance_and_primary_interface_groups_are_one_set() -> None:
    ec2 = boto3.client("ec2", region_name=REGION)
    _, (a, b, extra), instance = _instance_in_new_subnet(ec2, "10.96.0.0/16")
    iid, eni = instance["InstanceId"], instance["NetworkInterfaces"][0]["NetworkInterfaceId"]
    ec2.modify_instance_attribute(InstanceId=iid, Groups=[a, b, extra])  # attached out of band
    ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[a, b])  # what an apply does to repair it
    got = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert sorted(g["GroupId"] for g in got["SecurityGroups"]) == sorted([a, b])
    assert sorted(g["GroupId"] for g in got["NetworkInterfaces"][0]["Groups"]) == sorted([a, b])


@scenario("dhcp_options_tags_at_creation")
def dhcp_options_tagged_at_creation_keep_their_tags() -> None:
    ec2 = boto3.client("ec2", region_name=REGION)
    # The shape provider 3.39.0 sends for aws_vpc_dhcp_options with tags.
    created = ec2.create_dhcp_options(
        DhcpConfigurations=[{"Key": "domain-name", "Values": ["realworld.internal"]},
                            {"Key": "domain-name-servers", "Values": ["AmazonProvidedDNS"]}],
        TagSpecifications=[{"ResourceType": "dhcp-options",
                            "Tags": [{"Key": "Name", "Value": "realworld"}, {"Key": "Run", "Value": "r1"}]}],
    )["DhcpOptions"]
    got = ec2.describe_dhcp_options(DhcpOptionsIds=[created["DhcpOptionsId"]])["DhcpOptions"][0]
    assert {t["Key"]: t["Value"] for t in got.get("Tags") or []} == {"Name": "realworld", "Run": "r1"}
    # A set created without tags still has none.
    bare = ec2.create_dhcp_options(DhcpConfigurations=[{"Key": "domain-name", "Values": ["bare.internal"]}])
    got = ec2.describe_dhcp_options(DhcpOptionsIds=[bare["DhcpOptions"]["DhcpOptionsId"]])["DhcpOptions"][0]
    assert not got.get("Tags")


@scenario("vpc_endpoint_route_tables_get_routes")
def gateway_endpoint_route_tables_get_the_endpoint_route() -> None:
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.95.0.0/16")["Vpc"]["VpcId"]
    table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    endpoint = ec2.create_vpc_endpoint(VpcId=vpc, ServiceName=f"com.amazonaws.{REGION}.s3",
                                       VpcEndpointType="Gateway")["VpcEndpoint"]["VpcEndpointId"]

    def endpoint_routes() -> list:
        routes = ec2.describe_route_tables(RouteTableIds=[table])["RouteTables"][0]["Routes"]
        return [(r.get("DestinationPrefixListId", "")[:3], r.get("GatewayId")) for r in routes if r.get("GatewayId") == endpoint]

    # what aws_vpc_endpoint_route_table_association does
    ec2.modify_vpc_endpoint(VpcEndpointId=endpoint, AddRouteTableIds=[table])
    assert endpoint_routes() == [("pl-", endpoint)]
    ec2.modify_vpc_endpoint(VpcEndpointId=endpoint, RemoveRouteTableIds=[table])
    assert endpoint_routes() == []
