"""chaos.py: every fault of the catalog selects, plans and really injects against a moto server; safety rules hold."""

from __future__ import annotations

import itertools
import json
import random

import pytest

from immutable_infra import chaos
from immutable_infra.chaos import CATALOG, CHECKS, Chaos, FaultRefused, detection_matrix, disjoint, missed, write_matrix
from immutable_infra.live import describe_group
from immutable_infra.sandbox import SANDBOX_CREDENTIALS, MotoServer

REGION = "ap-southeast-1"
GROUP = "prd-sg-slave"
OPS_CIDR = "10.10.0.0/16"
OWN_CIDR = "10.21.0.0/16"
RUN = "r-unit"  # for the tests that touch no AWS


@pytest.fixture(scope="module")
def server():
    # our own server: moto's mock_aws would reset the global state other tests' servers use
    srv = MotoServer().start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def clients(server):
    import boto3

    # no reset: moto's state is process-wide (a reset would wipe other tests' servers); each test
    # builds its own group under its own run id instead, and every fault selects by that run id
    cache: dict[tuple[str, str], object] = {}

    def client(service: str, region: str):
        key = (service, region)
        if key not in cache:
            cache[key] = boto3.client(
                service, region_name=region, endpoint_url=server.url,
                aws_access_key_id=SANDBOX_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=SANDBOX_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
        return cache[key]

    return client


def tags(run: str | None, **more: str) -> list[dict[str, str]]:
    base = {"Group": GROUP, **more}
    if run:
        base["Run"] = run
    return [{"Key": k, "Value": v} for k, v in base.items()]


def spec(kind: str, run: str | None, **more: str) -> list[dict]:
    return [{"ResourceType": kind, "Tags": tags(run, **more)}]


def build_group(clients, run: str) -> dict:
    """A small prd-sg-slave: what the seed group declares, made with boto3 and tagged as a run would tag it."""
    ec2 = clients("ec2", REGION)
    ops_vpc = ec2.create_vpc(CidrBlock=OPS_CIDR)["Vpc"]["VpcId"]
    vpc = ec2.create_vpc(CidrBlock=OWN_CIDR, TagSpecifications=spec("vpc", run))["Vpc"]["VpcId"]
    public = ec2.create_subnet(VpcId=vpc, CidrBlock="10.21.0.0/24", AvailabilityZone=f"{REGION}a",
                               TagSpecifications=spec("subnet", run, Tier="public"))["Subnet"]["SubnetId"]
    private = ec2.create_subnet(VpcId=vpc, CidrBlock="10.21.10.0/24", AvailabilityZone=f"{REGION}a",
                                TagSpecifications=spec("subnet", run, Tier="private"))["Subnet"]["SubnetId"]
    igw = ec2.create_internet_gateway(TagSpecifications=spec("internet-gateway", run))["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    eip = ec2.allocate_address(Domain="vpc")["AllocationId"]
    nat = ec2.create_nat_gateway(SubnetId=public, AllocationId=eip,
                                 TagSpecifications=spec("natgateway", run))["NatGateway"]["NatGatewayId"]
    pcx = ec2.create_vpc_peering_connection(VpcId=vpc, PeerVpcId=ops_vpc,
                                           TagSpecifications=spec("vpc-peering-connection", run, Side="requester"))[
        "VpcPeeringConnection"]["VpcPeeringConnectionId"]
    ec2.accept_vpc_peering_connection(VpcPeeringConnectionId=pcx)
    tables = {}
    for tier, default in (("public", {"GatewayId": igw}), ("private", {"NatGatewayId": nat})):
        rtb = ec2.create_route_table(VpcId=vpc, TagSpecifications=spec("route-table", run, Tier=tier))["RouteTable"][
            "RouteTableId"]
        ec2.create_route(RouteTableId=rtb, DestinationCidrBlock="0.0.0.0/0", **default)
        ec2.create_route(RouteTableId=rtb, DestinationCidrBlock=OPS_CIDR, VpcPeeringConnectionId=pcx)
        ec2.associate_route_table(RouteTableId=rtb, SubnetId=public if tier == "public" else private)
        tables[tier] = rtb
    acl = ec2.create_network_acl(VpcId=vpc, TagSpecifications=spec("network-acl", run))["NetworkAcl"]["NetworkAclId"]
    for egress in (False, True):
        ec2.create_network_acl_entry(NetworkAclId=acl, RuleNumber=100, Protocol="-1", RuleAction="allow",
                                     Egress=egress, CidrBlock="0.0.0.0/0")
    current = ec2.describe_network_acls(Filters=[{"Name": "vpc-id", "Values": [vpc]},
                                                 {"Name": "default", "Values": ["true"]}])["NetworkAcls"][0]
    for assoc in current["Associations"]:
        ec2.replace_network_acl_association(AssociationId=assoc["NetworkAclAssociationId"], NetworkAclId=acl)
    sgs = {}
    for purpose, (port, cidr) in {
        "ssh-from-ops": (22, OPS_CIDR), "reverse-proxy": (80, "0.0.0.0/0"),
        "microservice": (8080, OWN_CIDR), "marathon-node": (5051, OPS_CIDR),
    }.items():
        sg = ec2.create_security_group(GroupName=f"{GROUP}-{purpose}", Description=purpose, VpcId=vpc,
                                       TagSpecifications=spec("security-group", run, Purpose=purpose))["GroupId"]
        ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[{
            "IpProtocol": "tcp", "FromPort": port, "ToPort": port, "IpRanges": [{"CidrIp": cidr}]}])
        sgs[purpose] = sg
    images = {}
    for run_uuid in ("run-old", "run-new"):  # per run: other tests' AMIs stay out of select
        image = ec2.register_image(Name=f"debian11-base-{run_uuid}", RootDeviceName="/dev/xvda",
                                   Architecture="x86_64", VirtualizationType="hvm")["ImageId"]
        ec2.create_tags(Resources=[image], Tags=[{"Key": "Template", "Value": f"debian11-base-{run}"},
                                                 {"Key": "PackerRunUUID", "Value": run_uuid}])
        images[run_uuid] = image
    instances = {}
    for role, subnet in (("reverse-proxy", public), ("microservice", private), ("marathon-node", private)):
        instances[role] = ec2.run_instances(
            ImageId=images["run-new"], InstanceType="t3.micro", MinCount=1, MaxCount=1, SubnetId=subnet,
            SecurityGroupIds=[sgs[role], sgs["ssh-from-ops"]],
            TagSpecifications=spec("instance", run, Role=role, Name=f"{GROUP}-{role}-1"))["Instances"][0]["InstanceId"]
    r53 = clients("route53", REGION)
    zone = r53.create_hosted_zone(Name=f"{GROUP}.{run}.internal", CallerReference=f"zone-{run}",
                                  VPC={"VPCRegion": REGION, "VPCId": vpc},
                                  HostedZoneConfig={"Comment": "private", "PrivateZone": True})["HostedZone"]["Id"]
    zone = zone.split("/")[-1]
    r53.change_tags_for_resource(ResourceType="hostedzone", ResourceId=zone,
                                 AddTags=[{"Key": "Run", "Value": run}, {"Key": "Group", "Value": GROUP}])
    ips = {}
    for role, iid in instances.items():
        ip = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["PrivateIpAddress"]
        ips[role] = ip
        r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [{
            "Action": "CREATE", "ResourceRecordSet": {
                "Name": f"{role}.{GROUP}.{run}.internal", "Type": "A", "TTL": 60,
                "ResourceRecords": [{"Value": ip}]}}]})
    s3 = clients("s3", REGION)
    bucket = f"ii-{GROUP}-artifacts-{run}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": "Run", "Value": run}]})
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({  # as the group's aws_s3_bucket_policy would
        "Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:*",
                                                "Resource": f"arn:aws:s3:::{bucket}/*",
                                                "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}))
    # not of this run: an SG and an instance someone else owns, in the same VPC
    outsider_sg = ec2.create_security_group(GroupName="someone-else", Description="not ours", VpcId=vpc,
                                            TagSpecifications=spec("security-group", None))["GroupId"]
    outsider = ec2.run_instances(ImageId=images["run-new"], MinCount=1, MaxCount=1, SubnetId=private,
                                 TagSpecifications=spec("instance", "r-other", Role="microservice"))[
        "Instances"][0]["InstanceId"]
    return {"run": run, "vpc": vpc, "ops_vpc": ops_vpc, "public": public, "private": private, "igw": igw, "nat": nat,
            "pcx": pcx, "tables": tables, "acl": acl, "sgs": sgs, "images": images, "instances": instances,
            "zone": zone, "ips": ips, "bucket": bucket, "outsider_sg": outsider_sg, "outsider": outsider}


_runs = itertools.count(1)


@pytest.fixture
def group(clients):
    """A fresh group for a test that injects."""
    return build_group(clients, f"r-chaos{next(_runs)}")


@pytest.fixture(scope="module")
def pristine(clients):
    """One group shared by the tests that must not change anything (they check that they did not)."""
    return build_group(clients, "r-pristine")


def snapshot(clients, group) -> dict:
    snap = describe_group(clients("ec2", REGION), [group["vpc"]], GROUP)
    snap.update(chaos.describe_extras(clients, REGION, [group["vpc"]]))
    return snap


def instance(clients, iid: str) -> dict:
    return clients("ec2", REGION).describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]


def itags(clients, iid: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance(clients, iid).get("Tags", [])}


def live_instances(clients, **filters) -> list[dict]:
    flt = [{"Name": k.replace("_", "-"), "Values": [v]} for k, v in filters.items()]
    res = clients("ec2", REGION).describe_instances(Filters=flt)["Reservations"]
    return [i for r in res for i in r["Instances"] if i["State"]["Name"] not in ("terminated", "shutting-down")]


def routes(clients, rtb: str) -> dict[str, dict]:
    table = clients("ec2", REGION).describe_route_tables(RouteTableIds=[rtb])["RouteTables"][0]
    return {r.get("DestinationCidrBlock"): r for r in table["Routes"]}


def sg(clients, sg_id: str) -> dict:
    return clients("ec2", REGION).describe_security_groups(GroupIds=[sg_id])["SecurityGroups"][0]


def records(clients, zone: str) -> dict[str, list[str]]:
    got = clients("route53", REGION).list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
    return {r["Name"]: [v["Value"] for v in r.get("ResourceRecords", [])] for r in got if r["Type"] == "A"}


# -- verification of each fault, by describing what it changed

def check_instance_type_changed(clients, group, fault):
    got = instance(clients, fault.target)
    assert got["InstanceType"] == fault.instance_type != "t3.micro"
    assert got["State"]["Name"] in ("running", "pending")


def check_extra_sg_attached(clients, group, fault):
    ids = {g["GroupId"] for g in instance(clients, fault.target)["SecurityGroups"]}
    assert fault.security_group in ids and len(ids) == 3


def check_source_dest_check_disabled(clients, group, fault):
    got = clients("ec2", REGION).describe_instance_attribute(InstanceId=fault.target, Attribute="sourceDestCheck")
    assert got["SourceDestCheck"]["Value"] is False


def check_role_tag_flipped(clients, group, fault):
    before = {v: k for k, v in group["instances"].items()}[fault.target]
    assert itags(clients, fault.target)["Role"] == fault.value != before


def check_group_tag_flipped(clients, group, fault):
    assert itags(clients, fault.target)["Group"] == fault.value != GROUP


def check_sg_opened_to_world(clients, group, fault):
    perms = sg(clients, fault.target)["IpPermissions"]
    assert any(p.get("FromPort") == 22 and {"CidrIp": "0.0.0.0/0"} in [{"CidrIp": r["CidrIp"]} for r in p["IpRanges"]]
               for p in perms)


def check_flow_rule_revoked(clients, group, fault):
    assert fault.cidr == OPS_CIDR  # another group's CIDR comes first
    perms = sg(clients, fault.target)["IpPermissions"]
    assert not any(r.get("CidrIp") == fault.cidr for p in perms for r in p.get("IpRanges", []))


def check_route_deleted(clients, group, fault):
    # this snapshot says nothing of declared flows (no flow_routes): the route carries none, drift alone must see it
    assert fault.via == "peering" and not fault.carries_flow and fault.expected() == ("drift",)
    assert fault.destination not in routes(clients, fault.target)


def check_route_hijacked(clients, group, fault):
    route = routes(clients, fault.target)[fault.destination]
    assert route.get("GatewayId") == group["igw"] and not route.get("VpcPeeringConnectionId")


def check_peering_deleted(clients, group, fault):
    got = clients("ec2", REGION).describe_vpc_peering_connections(VpcPeeringConnectionIds=[fault.target])
    assert got["VpcPeeringConnections"][0]["Status"]["Code"] == "deleted"


def check_acl_deny_added(clients, group, fault):
    acl = clients("ec2", REGION).describe_network_acls(NetworkAclIds=[fault.target])["NetworkAcls"][0]
    rule = next(e for e in acl["Entries"] if e["RuleNumber"] == 1 and not e["Egress"])
    assert rule["RuleAction"] == "deny" and rule["PortRange"] == {"From": 22, "To": 22}


def check_nat_deleted(clients, group, fault):
    nat = clients("ec2", REGION).describe_nat_gateways(NatGatewayIds=[fault.target])["NatGateways"][0]
    assert nat["State"] in ("deleting", "deleted")


def check_instance_terminated(clients, group, fault):
    assert instance(clients, fault.target)["State"]["Name"] in ("shutting-down", "terminated")


def check_rogue_instance(clients, group, fault):
    rogue = fault.added(clients)
    assert len(rogue) == 1
    assert set(itags(clients, rogue[0])) == {"Run"}  # no Role, no Group, no Name
    fault.undo(clients)
    assert fault.added(clients) == []


def check_route53_record_changed(clients, group, fault):
    assert records(clients, group["zone"])[fault.record] == [fault.value]
    assert fault.value not in group["ips"].values()


def check_s3_made_public(clients, group, fault):
    policy = json.loads(clients("s3", REGION).get_bucket_policy(Bucket=fault.target)["Policy"])
    assert policy["Statement"][0]["Principal"] == "*"
    assert fault.expected() == ("drift",)  # only a bucket whose policy Terraform manages is a target: drift sees it


def check_stale_ami_replacement(clients, group, fault):
    assert fault.image == group["images"]["run-old"]
    assert instance(clients, fault.target)["State"]["Name"] in ("shutting-down", "terminated")
    role = {v: k for k, v in group["instances"].items()}[fault.target]
    (twin,) = live_instances(clients, image_id=fault.image)
    twin_tags = {t["Key"]: t["Value"] for t in twin["Tags"]}
    assert twin_tags["Role"] == role and twin_tags["Run"] == group["run"] and twin_tags["Group"] == GROUP
    fault.undo(clients)
    assert live_instances(clients, image_id=fault.image) == []


VERIFY = {name[len("check_"):]: f for name, f in globals().items() if name.startswith("check_")}


def test_catalog_is_complete_and_named_once():
    assert len(CATALOG) >= 14
    assert set(VERIFY) == set(CATALOG)
    for name, cls in CATALOG.items():
        assert cls.name == name and name.isidentifier() and name == name.lower()
        assert set(cls.expected_checks) <= set(CHECKS) and set(cls.conditional_checks) <= set(CHECKS)
        assert cls.repair == "by apply" and cls.summary
    assert CATALOG["stale_ami_replacement"].expected_checks == ("parity", "unmanaged", "drift")
    assert {n for n, c in CATALOG.items() if c.adds_unmanaged} == {
        "rogue_instance", "stale_ami_replacement", "sg_opened_to_world", "acl_deny_added"}


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_fault_selects_plans_and_injects(name, clients, group):
    snap = snapshot(clients, group)
    fault = CATALOG[name].select(snap, group["run"], GROUP, 0)
    assert fault is not None, f"{name} found no target"
    assert fault.region == REGION and fault.run_id == group["run"]
    assert group["outsider"] not in fault.resources and group["outsider_sg"] not in fault.resources
    assert eval(repr(fault), vars(chaos)) == fault
    assert fault.plan() and all(isinstance(c, str) for c in fault.plan())
    assert set(fault.expected()) <= set(CHECKS)
    fault.inject(clients)
    VERIFY[name](clients, group, fault)


def test_repr_evals_back_with_random_targets(clients, pristine):
    snap = snapshot(clients, pristine)
    rng = random.Random(7)
    for name, cls in CATALOG.items():
        for _ in range(3):
            fault = cls.select(snap, pristine["run"], GROUP, rng)
            assert eval(repr(fault), vars(chaos)) == fault, name
            assert repr(fault).startswith(f"{cls.__name__}(target=")


def test_target_without_the_run_tag_is_refused(clients, group):
    before = sg(clients, group["outsider_sg"])
    fault = chaos.SgOpenedToWorld(group["outsider_sg"], REGION, group["run"])
    with pytest.raises(FaultRefused, match=rf"{group['outsider_sg']}.*lacks the tag Run={group['run']}") as info:
        fault.inject(clients)
    assert "no Run tag" in str(info.value) and info.value.code == "not-in-run"
    assert sg(clients, group["outsider_sg"]) == before
    other = chaos.InstanceTerminated(group["outsider"], REGION, group["run"])
    with pytest.raises(FaultRefused, match=rf"{group['outsider']}.*found Run='r-other'"):
        Chaos(clients, group["run"]).inject(other)
    assert instance(clients, group["outsider"])["State"]["Name"] == "running"


def test_every_resource_a_fault_writes_to_is_verified(clients, group):
    fault = chaos.ExtraSgAttached(group["instances"]["microservice"], REGION, group["run"], group["outsider_sg"])
    with pytest.raises(FaultRefused, match=group["outsider_sg"]):
        fault.inject(clients)
    assert group["outsider_sg"] not in {g["GroupId"] for g in instance(clients, fault.target)["SecurityGroups"]}


def test_zone_and_bucket_are_verified_by_their_own_tags(clients, group):
    clients("s3", REGION).delete_bucket_tagging(Bucket=group["bucket"])
    with pytest.raises(FaultRefused, match=rf"bucket {group['bucket']}.*Run={group['run']}"):
        chaos.S3MadePublic(group["bucket"], REGION, group["run"]).inject(clients)
    with pytest.raises(FaultRefused, match=rf"hosted zone {group['zone']}.*Run=r-other.*found Run='{group['run']}'"):
        chaos.Route53RecordChanged(group["zone"], REGION, "r-other", "x.internal.", "192.0.2.9").inject(clients)


def test_faults_select_only_targets_of_the_run(clients, pristine):
    snap = snapshot(clients, pristine)
    for fault in chaos.selectable(snap, "r-nobody", GROUP):
        pytest.fail(f"{fault!r} selected a target of no run")
    assert {f.name for f in chaos.selectable(snap, pristine["run"], GROUP)} == set(CATALOG)


def test_audit_mode_refuses_everything_and_writes_nothing(clients, pristine):
    snap = snapshot(clients, pristine)
    before = describe_group(clients("ec2", REGION), [pristine["vpc"]], GROUP)
    before_records = records(clients, pristine["zone"])
    audit = Chaos(clients, pristine["run"], audit=True)
    for fault in chaos.selectable(snap, pristine["run"], GROUP):
        with pytest.raises(FaultRefused, match=r"chaos is refused in --audit mode") as info:
            audit.inject(fault)
        assert info.value.code == "audit" and fault.target in str(info.value)
        with pytest.raises(FaultRefused, match=r"--audit"):
            audit.undo(fault)
    assert audit.history == []
    assert describe_group(clients("ec2", REGION), [pristine["vpc"]], GROUP) == before
    assert records(clients, pristine["zone"]) == before_records


def test_dry_run_returns_the_plan_and_changes_nothing(clients, pristine):
    snap = snapshot(clients, pristine)
    before = describe_group(clients("ec2", REGION), [pristine["vpc"]], GROUP)
    dry = Chaos(clients, pristine["run"], dry_run=True)
    faults = chaos.selectable(snap, pristine["run"], GROUP)
    for fault in faults:
        calls = dry.inject(fault)
        assert calls == fault.plan() and calls
        dry.undo(fault)
    assert [i.fault for i in dry.history] == faults and dry.injected == []
    assert describe_group(clients("ec2", REGION), [pristine["vpc"]], GROUP) == before
    plan = CATALOG["instance_type_changed"].select(snap, pristine["run"], GROUP).plan()
    assert [c.split("(")[0] for c in plan] == [
        "ec2.stop_instances", "ec2.modify_instance_attribute", "ec2.start_instances"]


def test_chaos_refuses_a_fault_of_another_run(clients, pristine):
    fault = chaos.InstanceTerminated(pristine["instances"]["microservice"], REGION, "r-other")
    with pytest.raises(FaultRefused, match="r-other") as info:
        Chaos(clients, pristine["run"]).inject(fault)
    assert info.value.code == "other-run"
    assert instance(clients, fault.target)["State"]["Name"] == "running"


def test_a_target_that_is_gone_is_refused(clients, pristine):
    with pytest.raises(FaultRefused, match="sg-0000000000000dead does not exist") as info:
        chaos.SgOpenedToWorld("sg-0000000000000dead", REGION, pristine["run"]).inject(clients)
    assert info.value.code == "gone"


def test_chaos_injects_a_disjoint_batch(clients, group):
    snap = snapshot(clients, group)
    batch = [CATALOG["sg_opened_to_world"].select(snap, group["run"], GROUP, 0),
             CATALOG["acl_deny_added"].select(snap, group["run"], GROUP, 0)]
    runner = Chaos(clients, group["run"])
    runner.inject_all(batch)
    assert runner.injected == batch
    clash = [CATALOG["sg_opened_to_world"].select(snap, group["run"], GROUP, 0)] * 2
    with pytest.raises(FaultRefused, match="disjoint"):
        runner.inject_all(clash)


def test_disjoint():
    a = chaos.InstanceTerminated("i-1", REGION, RUN)
    b = chaos.RoleTagFlipped("i-2", REGION, RUN, "microservice")
    c = chaos.ExtraSgAttached("i-3", REGION, RUN, "sg-9")
    d = chaos.SgOpenedToWorld("sg-9", REGION, RUN)
    assert disjoint([a, b, c]) and disjoint([a, d]) and disjoint([])
    assert not disjoint([c, d])
    assert not disjoint([a, chaos.InstanceTypeChanged("i-1", REGION, RUN, "t3.small")])
    r1 = chaos.Route53RecordChanged("Z1", REGION, RUN, "a.zone.", "192.0.2.1")
    r2 = chaos.Route53RecordChanged("Z1", REGION, RUN, "b.zone.", "192.0.2.1")
    assert disjoint([r1, r2]) and not disjoint([r1, r1])


def test_repr_is_valid_python():
    fault = chaos.SgOpenedToWorld(target="sg-123", region=REGION, run_id=RUN)
    assert repr(fault) == f"SgOpenedToWorld(target='sg-123', region='{REGION}', run_id='{RUN}')"
    assert eval(repr(fault), vars(chaos)) == fault


def test_conditional_expectations():
    assert chaos.RouteDeleted("rtb-1", REGION, RUN, "10.0.0.0/16", "nat").expected() == ("drift",)
    assert chaos.RouteDeleted("rtb-1", REGION, RUN, "10.0.0.0/16", "peering").expected() == ("drift",)
    assert chaos.RouteDeleted("rtb-1", REGION, RUN, "10.0.0.0/16", "peering", True).expected() == ("drift", "reachability")
    assert chaos.RouteHijacked("rtb-1", REGION, RUN, "10.0.0.0/16", "peering", "igw-1").expected() == ("drift",)
    assert chaos.RouteHijacked("rtb-1", REGION, RUN, "10.0.0.0/16", "peering", "igw-1", True).expected() == (
        "drift", "reachability")
    assert chaos.S3MadePublic("b", REGION, RUN).expected() == ()
    assert chaos.S3MadePublic("b", REGION, RUN, "policy", True).expected() == ("drift",)
    assert chaos.S3MadePublic("b", REGION, RUN, "acl", True).expected() == ()


def test_matrix_marks_missed_checks_and_computes_the_ratio(tmp_path):
    matrix = detection_matrix([
        ("instance_type_changed", ("mutation", "drift"), ("mutation", "drift")),
        ("peering_deleted", ("drift", "reachability"), ("drift",)),
        ("sg_opened_to_world", ("drift",), ("drift", "reachability")),
    ])
    assert matrix["expected"] == 5 and matrix["detected"] == 4 and matrix["ratio"] == pytest.approx(0.8)
    cells = {row["fault"]: row["cells"] for row in matrix["rows"]}
    assert cells["peering_deleted"]["reachability"] == "missed"
    assert cells["peering_deleted"]["drift"] == "detected"
    assert cells["peering_deleted"]["roles"] == "not-expected"
    assert cells["sg_opened_to_world"]["reachability"] == "unexpected"
    assert missed(matrix) == [("peering_deleted", "reachability")]
    paths = write_matrix(matrix, tmp_path / "reports")
    assert [p.name for p in paths] == ["chaos-matrix.json", "chaos-matrix.md"]
    data = json.loads(paths[0].read_text())
    assert data["missed"] == [["peering_deleted", "reachability"]] and data["ratio"] == pytest.approx(0.8)
    md = paths[1].read_text()
    assert "| peering_deleted | 1 |" in md and "**MISSED**" in md and "4/5" in md


def test_matrix_counts_repeated_runs_and_rejects_unknown_checks():
    matrix = detection_matrix([
        ("nat_deleted", ("drift",), ("drift",)),
        ("nat_deleted", ("drift",), ()),
    ])
    assert missed(matrix) == [("nat_deleted", "drift")] and matrix["ratio"] == 0.5
    assert detection_matrix([])["ratio"] == 1.0
    with pytest.raises(ValueError, match="uptime"):
        detection_matrix([("nat_deleted", ("uptime",), ())])


def test_fault_strategy_draws_replayable_faults(clients, pristine):
    from hypothesis import HealthCheck, given, settings

    snap = snapshot(clients, pristine)

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(chaos.fault_strategy(snap, pristine["run"], GROUP))
    def draws(fault):
        assert fault.name in CATALOG and eval(repr(fault), vars(chaos)) == fault

    draws()


def test_flow_rule_revoked_revokes_a_rule_sourced_by_a_security_group_however_it_was_written(clients):
    """Terraform writes a source-group rule with its own owner id and description; the revoke goes by rule id."""
    ec2 = clients("ec2", REGION)
    run = "r-sgsrc"
    vpc = ec2.create_vpc(CidrBlock="10.77.0.0/16", TagSpecifications=spec("vpc", run))["Vpc"]["VpcId"]
    app, db = (ec2.create_security_group(GroupName=f"sgsrc-{n}", Description=n, VpcId=vpc,
                                         TagSpecifications=spec("security-group", run))["GroupId"] for n in ("app", "db"))
    ec2.authorize_security_group_ingress(GroupId=db, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432,
        "UserIdGroupPairs": [{"GroupId": app, "UserId": "000000000000", "Description": "from app"}]}])
    snap = describe_group(ec2, [vpc], GROUP)
    snap["region"] = REGION
    fault = CATALOG["flow_rule_revoked"].select(snap, run, GROUP, 0)
    assert (fault.target, fault.source_group, fault.from_port, fault.expected()) == (db, app, 5432, ("drift",))
    Chaos(clients, run).inject(fault)
    assert sg(clients, db)["IpPermissions"] == []


def test_undo_removes_what_an_apply_would_leave_behind(clients):
    """A rule or ACL entry made by hand next to separately managed rules: the fault's undo removes it."""
    ec2 = clients("ec2", REGION)
    run = "r-undo"
    vpc = ec2.create_vpc(CidrBlock="10.78.0.0/16", TagSpecifications=spec("vpc", run))["Vpc"]["VpcId"]
    group_id = ec2.create_security_group(GroupName="undo", Description="undo", VpcId=vpc,
                                         TagSpecifications=spec("security-group", run))["GroupId"]
    acl = ec2.create_network_acl(VpcId=vpc, TagSpecifications=spec("network-acl", run))["NetworkAcl"]["NetworkAclId"]
    opened = chaos.SgOpenedToWorld(group_id, REGION, run)
    denied = chaos.AclDenyAdded(acl, REGION, run)
    for fault in (opened, denied):
        Chaos(clients, run).inject(fault)
    assert any(r.get("CidrIp") == "0.0.0.0/0" for p in sg(clients, group_id)["IpPermissions"] for r in p["IpRanges"])
    for fault in (opened, denied):
        Chaos(clients, run).undo(fault)
        Chaos(clients, run).undo(fault)  # twice: what is gone already is fine
    assert sg(clients, group_id)["IpPermissions"] == []
    entries = ec2.describe_network_acls(NetworkAclIds=[acl])["NetworkAcls"][0]["Entries"]
    assert not any(e["RuleNumber"] == 1 for e in entries)
