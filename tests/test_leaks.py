"""Leak-proof runs: stop signals tear down, the tag inventory is the proof, `down` and `reap` leave nothing.

Two halves. The first builds resources with boto3 on the tests' moto server
(every type the reaper knows, other runs' and untagged ones beside them) and
drives the inventory, the reaper and the `down`/`reap`/`runs` commands: fast.
The second runs real sessions on the purpose-made group ``leaky`` (three
instances) in subprocesses and kills them at several points (early apply,
late apply, a chaos batch, a rebuild, the destroy) with SIGTERM or SIGKILL,
then checks that nothing tagged with the run is left. The sessions run side by
side (one moto server, one run id each) to keep the module's time down.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import boto3
import pytest
from moto_recorder import recorder

from immutable_infra import inventory, reaper
from immutable_infra.ephemeral import Run, parse_ttl, provider_override
from immutable_infra.catalog import Catalog

ROOT = Path(__file__).parent.parent
TEST_GROUPS = Path(__file__).parent / "groups"
REGION = "ap-southeast-1"
PAST = "2020-01-01T00:00:00+00:00"
FUTURE = "2999-01-01T00:00:00+00:00"
CLI = [sys.executable, "-m", "immutable_infra.cli"]


# -- helpers ----------------------------------------------------------------------------


def client(server, service: str, region: str = REGION):
    return boto3.client(service, endpoint_url=server.url, region_name=region,
                        aws_access_key_id="t", aws_secret_access_key="t")


def factory(server):
    return lambda service, region: client(server, service, region)


def left(server, run_id: str) -> list[str]:
    """The run's inventory, as lines; a listing that failed fails the test (an empty list must be proof)."""
    inv = inventory.take(factory(server), [REGION], run_id)
    assert inv.errors == []
    return inv.lines()


def tags(run_id: str | None, expires: str | None = FUTURE, group: str = "leaky", created: str | None = None) -> list[dict]:
    found = {"Group": group}
    if run_id:
        found["Run"] = run_id
    if expires:
        found["ExpiresAt"] = expires
    if created:
        found["CreatedAt"] = created
    return [{"Key": k, "Value": v} for k, v in found.items()]


def spec(kind: str, tag_list: list[dict]) -> list[dict]:
    return [{"ResourceType": kind, "Tags": tag_list}] if tag_list else []


def network(server, run_id: str, cidr: str = "10.60", **tag_kw) -> dict[str, str]:
    """A VPC, a subnet, a security group and an instance, tagged for the run."""
    ec2 = client(server, "ec2")
    t = tags(run_id, **tag_kw)
    vpc = ec2.create_vpc(CidrBlock=f"{cidr}.0.0/16", TagSpecifications=spec("vpc", t))["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=f"{cidr}.1.0/24", TagSpecifications=spec("subnet", t))["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName=f"{run_id}-sg", Description="x", VpcId=vpc,
                                   TagSpecifications=spec("security-group", t))["GroupId"]
    inst = ec2.run_instances(ImageId="ami-1e749f67", MinCount=1, MaxCount=1, SubnetId=subnet, SecurityGroupIds=[sg],
                             TagSpecifications=spec("instance", t))["Instances"][0]["InstanceId"]
    return {"vpc": vpc, "subnet": subnet, "sg": sg, "instance": inst}


def every_type(server, run_id: str) -> dict[str, str]:
    """One resource of every type the reaper knows, wired the way groups wire them, tagged for the run."""
    t = tags(run_id)
    ids = network(server, run_id, "10.61")
    ec2 = client(server, "ec2")
    vpc, subnet, sg, inst = ids["vpc"], ids["subnet"], ids["sg"], ids["instance"]
    peer_vpc = ec2.create_vpc(CidrBlock="10.62.0.0/16", TagSpecifications=spec("vpc", t))["Vpc"]["VpcId"]
    subnet_b = ec2.create_subnet(VpcId=vpc, CidrBlock="10.61.2.0/24", AvailabilityZone=f"{REGION}b",
                                 TagSpecifications=spec("subnet", t))["Subnet"]["SubnetId"]
    other_sg = ec2.create_security_group(GroupName=f"{run_id}-lb", Description="x", VpcId=vpc,
                                         TagSpecifications=spec("security-group", t))["GroupId"]
    # Groups that reference each other: neither can go before the rules are revoked.
    ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "UserIdGroupPairs": [{"GroupId": other_sg}]}])
    ec2.authorize_security_group_ingress(GroupId=other_sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "UserIdGroupPairs": [{"GroupId": sg}]}])
    rt = ec2.create_route_table(VpcId=vpc, TagSpecifications=spec("route-table", t))["RouteTable"]["RouteTableId"]
    ec2.associate_route_table(RouteTableId=rt, SubnetId=subnet)
    igw = ec2.create_internet_gateway(TagSpecifications=spec("internet-gateway", t))["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    nat_eip = ec2.allocate_address(Domain="vpc", TagSpecifications=spec("elastic-ip", t))["AllocationId"]
    eip = ec2.allocate_address(Domain="vpc", TagSpecifications=spec("elastic-ip", t))["AllocationId"]
    ec2.associate_address(AllocationId=eip, InstanceId=inst)
    nat = ec2.create_nat_gateway(SubnetId=subnet, AllocationId=nat_eip, TagSpecifications=spec("natgateway", t))["NatGateway"]["NatGatewayId"]
    eni = ec2.create_network_interface(SubnetId=subnet, Groups=[sg], TagSpecifications=spec("network-interface", t))["NetworkInterface"]["NetworkInterfaceId"]
    pcx = ec2.create_vpc_peering_connection(VpcId=vpc, PeerVpcId=peer_vpc, TagSpecifications=spec("vpc-peering-connection", t))["VpcPeeringConnection"]["VpcPeeringConnectionId"]
    acl = ec2.create_network_acl(VpcId=vpc, TagSpecifications=spec("network-acl", t))["NetworkAcl"]["NetworkAclId"]
    r53 = client(server, "route53")
    zone = r53.create_hosted_zone(Name=f"{run_id}.internal", CallerReference=run_id, HostedZoneConfig={"PrivateZone": True},
                                  VPC={"VPCRegion": REGION, "VPCId": vpc})["HostedZone"]["Id"].split("/")[-1]
    r53.change_tags_for_resource(ResourceType="hostedzone", ResourceId=zone, AddTags=t)
    r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [{"Action": "CREATE", "ResourceRecordSet": {
        "Name": f"app.{run_id}.internal", "Type": "A", "TTL": 60, "ResourceRecords": [{"Value": "10.61.1.5"}]}}]})
    client(server, "elb").create_load_balancer(
        LoadBalancerName=f"{run_id}-elb", Listeners=[{"Protocol": "tcp", "LoadBalancerPort": 80, "InstancePort": 80}],
        Subnets=[subnet], SecurityGroups=[other_sg], Tags=t)
    elbv2 = client(server, "elbv2")
    alb = elbv2.create_load_balancer(Name=f"{run_id}-alb", Subnets=[subnet, subnet_b], SecurityGroups=[other_sg],
                                     Tags=t)["LoadBalancers"][0]["LoadBalancerArn"]
    tg = elbv2.create_target_group(Name=f"{run_id}-tg", Protocol="HTTP", Port=80, VpcId=vpc, Tags=t)["TargetGroups"][0]["TargetGroupArn"]
    elbv2.create_listener(LoadBalancerArn=alb, Protocol="HTTP", Port=80, DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}])
    s3 = client(server, "s3")
    s3.create_bucket(Bucket=f"{run_id}-bucket", CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_bucket_tagging(Bucket=f"{run_id}-bucket", Tagging={"TagSet": t})
    s3.put_object(Bucket=f"{run_id}-bucket", Key="state", Body=b"x")
    return {**ids, "peer_vpc": peer_vpc, "rt": rt, "igw": igw, "nat": nat, "eip": eip, "eni": eni, "pcx": pcx,
            "acl": acl, "zone": zone, "alb": alb, "tg": tg}


def cli(*args: str, home: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "IMMUTABLE_INFRA_HOME": str(home)}
    return subprocess.run(CLI + list(args), env=env, capture_output=True, text=True, cwd=home.parent, timeout=timeout)


def store_run(home: Path, run_id: str, endpoint: str, status: str = "applied") -> Run:
    """A kept run in the store, as `up` would have left it, for a group applied by hand here."""
    run = Run.create(home, run_id, TEST_GROUPS, endpoint)
    rec = run.record("leaky")
    rec.region, rec.status = REGION, status
    run.keep = True
    run.save()
    return run


READS = ("Describe", "List", "Get")


def mutating_calls(recording: str) -> list[str]:
    """Every recorded request that is not a read: query actions, JSON targets, REST methods."""
    found = []
    for line in recording.splitlines():
        entry = json.loads(line)
        body = entry.get("body") or ""
        if entry.get("body_encoded"):
            body = base64.b64decode(body).decode("utf-8", "replace")
        headers = {k.lower(): v for k, v in (entry.get("headers") or {}).items()}
        action = urllib.parse.parse_qs(body).get("Action", [""])[0] if "Action=" in body else ""
        target = headers.get("x-amz-target", "").rsplit(".", 1)[-1]
        name = action or target
        if name:
            if not name.startswith(READS):
                found.append(name)
        elif entry["method"] not in ("GET", "HEAD"):
            found.append(f"{entry['method']} {entry['url']}")
    return found


# -- the inventory and the reaper, on resources made with boto3 ---------------------------------


def test_inventory_finds_every_type_and_the_reaper_deletes_them_in_dependency_order(moto_server):
    ids = every_type(moto_server, "every1")
    found = inventory.take(factory(moto_server), [REGION], "every1")
    assert found.errors == []
    kinds = {r.kind for r in found.resources}
    assert kinds == {"instance", "nat_gateway", "elastic_ip", "network_interface", "security_group", "subnet", "route_table",
                     "internet_gateway", "network_acl", "vpc_peering", "vpc", "route53_zone", "elb", "lb", "target_group",
                     "s3_bucket"}, kinds
    assert {ids["instance"], ids["nat"], ids["zone"], ids["alb"], ids["pcx"], "every1-bucket"} <= {r.id for r in found.resources}

    out = reaper.Reaper(factory(moto_server), [REGION], retry_delays=(0.2, 0.5)).reap(found)
    assert out.problems() == []
    order = [r.kind for r in out.deleted]
    assert order.index("instance") < order.index("network_interface") < order.index("security_group") < order.index("subnet") \
        < order.index("vpc"), order
    assert order.index("lb") < order.index("target_group") and order.index("nat_gateway") < order.index("elastic_ip"), order
    assert left(moto_server, "every1") == []


def test_down_never_touches_other_runs_or_untagged_resources_and_names_what_it_cannot_delete(moto_server, tmp_path):
    home = tmp_path / "home"
    mine = network(moto_server, "mine1", "10.63")
    ec2 = client(moto_server, "ec2")
    # In the same VPC: another run's subnet, an untagged instance, and a group tagged Run=mine1 without ExpiresAt.
    foreign = ec2.create_subnet(VpcId=mine["vpc"], CidrBlock="10.63.9.0/24",
                                TagSpecifications=spec("subnet", tags("other1")))["Subnet"]["SubnetId"]
    untagged = ec2.run_instances(ImageId="ami-1e749f67", MinCount=1, MaxCount=1, SubnetId=foreign)["Instances"][0]["InstanceId"]
    half = ec2.create_security_group(GroupName="half", Description="x", VpcId=mine["vpc"],
                                     TagSpecifications=spec("security-group", tags("mine1", expires=None)))["GroupId"]
    store_run(home, "mine1", moto_server.url)

    down = cli("down", "--run-id", "mine1", home=home)
    assert down.returncode == 1, down.stderr
    assert f"vpc {mine['vpc']}" in down.stderr and "DependencyViolation" in down.stderr, down.stderr
    assert "NOT destroyed" in down.stderr
    assert "mine1" in cli("runs", home=home).stdout, "a run with resources left must stay in the run store"
    # What was the run's is gone; what was not is untouched.
    assert left(moto_server, "mine1") == [f"vpc {mine['vpc']} ({REGION})"]
    assert ec2.describe_subnets(SubnetIds=[foreign])["Subnets"]
    assert ec2.describe_instances(InstanceIds=[untagged])["Reservations"][0]["Instances"][0]["State"]["Name"] == "running"
    assert ec2.describe_security_groups(GroupIds=[half])["SecurityGroups"]
    assert left(moto_server, "other1") == [f"subnet {foreign} ({REGION} in {mine['vpc']})"]

    # The dependency removed by its owner, `down` finishes, proves it and drops the run.
    ec2.terminate_instances(InstanceIds=[untagged])
    ec2.delete_subnet(SubnetId=foreign)
    ec2.delete_security_group(GroupId=half)
    down = cli("down", "--run-id", "mine1", home=home)
    assert down.returncode == 0, down.stderr
    assert "nothing tagged Run=mine1 remains" in down.stderr
    assert left(moto_server, "mine1") == []
    assert "mine1" not in cli("runs", home=home).stdout


def test_tags_are_read_again_right_before_each_delete(moto_server):
    ids = network(moto_server, "recheck1", "10.64")
    found = inventory.take(factory(moto_server), [REGION], "recheck1")
    assert {r.id for r in found.resources} == {ids["vpc"], ids["subnet"], ids["sg"], ids["instance"]}
    # Between the inventory and the deletes, the subnet stops being the tool's (ExpiresAt removed).
    ec2 = client(moto_server, "ec2")
    ec2.delete_tags(Resources=[ids["subnet"]], Tags=[{"Key": "ExpiresAt"}])
    out = reaper.Reaper(factory(moto_server), [REGION], retry_delays=(0.1,)).reap(found)
    assert [r.id for r in out.refused] == [ids["subnet"]]
    assert "ExpiresAt" in out.refused[next(iter(out.refused))]
    assert ec2.describe_subnets(SubnetIds=[ids["subnet"]])["Subnets"], "a refused resource must be left alone"
    assert {r.id for r in out.deleted} == {ids["instance"], ids["sg"]}
    assert [r.id for r in out.left] == [ids["vpc"]]  # held by the subnet it was refused to delete
    ec2.delete_subnet(SubnetId=ids["subnet"])
    ec2.delete_vpc(VpcId=ids["vpc"])


def test_reap_dry_run_lists_and_makes_no_mutating_call(moto_server, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    every_type(moto_server, "dry1")
    before = left(moto_server, "dry1")
    recorder(moto_server, "reset-recording")
    recorder(moto_server, "start-recording")
    try:
        dry = cli("reap", "--run-id", "dry1", "--dry-run", "--aws-endpoint", moto_server.url, "--region", REGION, home=home)
    finally:
        recorder(moto_server, "stop-recording")
    assert dry.returncode == 0, dry.stderr
    recording = recorder(moto_server, "download-recording")
    assert recording.strip(), "the recorder saw nothing: the dry run did not read AWS"
    assert mutating_calls(recording) == []
    assert len([line for line in dry.stdout.splitlines() if line.startswith("would delete ")]) == len(before)
    assert left(moto_server, "dry1") == before

    # The same recorder sees the deletes of a real reap (so the check above can fail).
    recorder(moto_server, "reset-recording")
    recorder(moto_server, "start-recording")
    try:
        wet = cli("reap", "--run-id", "dry1", "--aws-endpoint", moto_server.url, "--region", REGION, home=home)
    finally:
        recorder(moto_server, "stop-recording")
    assert wet.returncode == 0, wet.stderr
    calls = mutating_calls(recorder(moto_server, "download-recording"))
    assert "TerminateInstances" in calls and "DeleteVpc" in calls
    assert left(moto_server, "dry1") == []


def test_reap_finds_expired_runs_from_the_tags_alone(moto_server, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    hour_ago = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=3)).isoformat()
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    network(moto_server, "old1", "10.65", expires=PAST, created=hour_ago)
    network(moto_server, "new1", "10.66", expires=FUTURE, created=now)
    endpoint = ["--aws-endpoint", moto_server.url, "--groups-dir", str(TEST_GROUPS)]

    young = cli("reap", "--older-than", "4h", *endpoint, home=home)
    assert young.returncode == 0 and "nothing to reap" in young.stderr, young.stderr
    assert left(moto_server, "old1") and left(moto_server, "new1")

    reap = cli("reap", *endpoint, home=home)
    assert reap.returncode == 0, reap.stderr
    assert "run old1 (expired at 2020-01-01" in reap.stderr and "new1" not in reap.stderr + reap.stdout
    assert left(moto_server, "old1") == []
    assert len(left(moto_server, "new1")) == 4, "a run that has not expired is never reaped"

    older = cli("reap", "--older-than", "1h", *endpoint, home=home)
    assert older.returncode == 0 and "nothing to reap" in older.stderr
    assert cli("reap", "--run-id", "new1", *endpoint, home=home).returncode == 0
    assert left(moto_server, "new1") == []


def test_a_session_with_reap_expired_cleans_its_endpoint_first(moto_server, pytester):
    network(moto_server, "crash1", "10.67", expires=PAST)
    network(moto_server, "alive1", "10.68", expires=FUTURE)
    pytester.makepyfile("def test_x(infra):\n    pass\n")
    args = ["--group", "tiny", "--groups-dir", str(TEST_GROUPS), "--aws-endpoint", moto_server.url, "-p", "no:cacheprovider"]
    assert pytester.runpytest(*args).ret == 0
    assert left(moto_server, "crash1"), "without --reap-expired nothing is reaped"
    result = pytester.runpytest(*args, "--reap-expired", "-s")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*reaped run crash1 (expired at 2020-01-01*"])
    assert left(moto_server, "crash1") == []
    assert len(left(moto_server, "alive1")) == 4
    reaper.reap_runs(factory(moto_server), [REGION], "alive1", retry_delays=(0.1,))


def test_runs_shows_an_unreachable_endpoint_and_down_forget_drops_it(tmp_path):
    from immutable_infra.sandbox import free_port

    home = tmp_path / "home"
    store_run(home, "gone1", f"http://127.0.0.1:{free_port()}")
    runs = cli("runs", home=home)
    assert "gone1" in runs.stdout and "UNREACHABLE" in runs.stdout, runs.stdout
    down = cli("down", "--run-id", "gone1", home=home)
    assert down.returncode == 2 and len(down.stderr.strip().splitlines()) == 1, down.stderr
    assert "--forget" in down.stderr and "Traceback" not in down.stderr
    forget = cli("down", "--run-id", "gone1", "--forget", home=home)
    assert forget.returncode == 0, forget.stderr
    assert "group leaky" in forget.stderr and "immutable-infra reap --run-id gone1" in forget.stderr
    assert "gone1" not in cli("runs", home=home).stdout


def test_ttl_sets_expires_at(tmp_path):
    assert parse_ttl("90m") == 1.5 and parse_ttl("2h") == 2 and parse_ttl("1d") == 24 and parse_ttl("3") == 3
    for bad in ("soon", "-2h", "0", "2w"):
        with pytest.raises(ValueError, match="--ttl"):
            parse_ttl(bad)
    run = Run.create(tmp_path, "ttl1", TEST_GROUPS, None, ttl_hours=parse_ttl("90m"))
    created, expires = (dt.datetime.fromisoformat(v) for v in (run.created, run.expires_at))
    assert expires - created == dt.timedelta(minutes=90)
    override = provider_override(Catalog(TEST_GROUPS).get("leaky"), run.id, run.expires_at, {}, [None], created=run.created)
    assert f'ExpiresAt = "{run.expires_at}"' in override and f'CreatedAt = "{run.created}"' in override


def test_a_bad_ttl_is_one_line_naming_the_setting(pytester):
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest("--ttl", "tomorrow")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*--ttl 'tomorrow'*90m, 2h or 1d*"])


WORKER = """
import subprocess, sys, threading
from immutable_infra.tfworker import die_with_parent
assert die_with_parent()
provider = subprocess.Popen(["sleep", "1000"])  # stands for the provider plugins a worker starts
print(provider.pid, flush=True)
threading.Event().wait()
"""

SESSION = """
import json, os, subprocess, sys, threading
out = open(sys.argv[1], "w")
env = {**os.environ, "IMMUTABLE_INFRA_PARENT_PID": str(os.getpid())}
worker = subprocess.Popen(json.loads(sys.argv[2]), stdout=out, env=env, start_new_session=True)
print(worker.pid, flush=True)
threading.Event().wait()
"""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # a zombie nobody reaped is dead


#: The embedded worker, and an external binary under ``tfworker --exec`` (a shell that starts a "provider").
WORKERS = {
    "embedded": [sys.executable, "-c", WORKER],
    "external": [sys.executable, "-m", "immutable_infra.tfworker", "--exec", "/bin/sh", "-c", "sleep 1000 & echo $!; wait"],
}


@pytest.mark.parametrize("driver", list(WORKERS))
def test_the_worker_and_its_providers_die_with_a_killed_parent(tmp_path, driver):
    """No pipe to break here: only the parent-death signal can end the worker (without it, this test hangs and fails)."""
    pids = tmp_path / "provider.pid"
    session = subprocess.Popen([sys.executable, "-c", SESSION, str(pids), json.dumps(WORKERS[driver])],
                               stdout=subprocess.PIPE, text=True)
    worker = int(session.stdout.readline())
    deadline = time.monotonic() + 60
    while not pids.read_text().strip():
        assert time.monotonic() < deadline, "the worker never started its provider"
        time.sleep(0.1)
    provider = int(pids.read_text())
    assert _alive(worker) and _alive(provider)
    session.kill()
    session.wait()
    deadline = time.monotonic() + 60
    try:
        while _alive(worker) or _alive(provider):
            assert time.monotonic() < deadline, f"worker {worker} or provider {provider} outlived the killed session"
            time.sleep(0.2)
    finally:
        for pid in (provider, worker):  # a failed run leaves nothing behind either
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


# -- real sessions, killed at several points ---------------------------------------------------------

SESSION_TEST = '''
import os, sys


def test_leaky(applied_group, infra):
    assert len(applied_group.resources) >= 6
    point = os.environ["LEAKS_POINT"]
    if point == "chaos":  # one chaos batch: a fault injected through the chaos catalog, then the repair apply
        from immutable_infra.chaos import CATALOG, Chaos
        fault = CATALOG["instance_terminated"](applied_group.outputs["instance_ids"][0], applied_group.region, infra.run.id)
        print("LEAKS chaos", flush=True)
        Chaos(infra.sandbox.client, infra.run.id).inject(fault)
        infra.repair("leaky")
    elif point == "rebuild":
        print("LEAKS rebuild", flush=True)
        infra.rebuild("leaky")
'''


def terraform_processes(home: Path) -> list[int]:
    """Terraform workers and providers whose working directory is inside the run home."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(home) in os.readlink(entry / "cwd"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@dataclass
class Kill:
    """One session killed at one point, and what was left after it and after the follow-up command."""

    name: str
    point: str  # what the session does after the apply (LEAKS_POINT)
    when: Callable[[list[str], object, str], bool]  # (output lines, server, run id) -> kill now
    signals: list[int]
    followup: str = ""  # "", "down" or "reap"
    output: str = ""
    returncode: int | None = None
    at_kill: list[str] = field(default_factory=list)
    after_exit: list[str] = field(default_factory=list)
    workers: list[int] = field(default_factory=list)
    followup_result: subprocess.CompletedProcess | None = None
    at_end: list[str] = field(default_factory=list)
    error: str = ""
    dropped: int = 0  # instances the killed apply's state held, dropped from it before the follow-up

    @property
    def run_id(self) -> str:
        return self.name


def _instances(server, run_id: str, state: str) -> int:
    ec2 = client(server, "ec2")
    flt = [{"Name": "tag:Run", "Values": [run_id]}, {"Name": "instance-state-name", "Values": [state]}]
    return sum(len(r["Instances"]) for r in ec2.describe_instances(Filters=flt)["Reservations"])


def _after(lines: list[str], marker: str, text: str) -> bool:
    seen = False
    for line in lines:
        seen = seen or marker in line
        if seen and text in line and marker not in line:
            return True
    return False


def early_apply(lines, server, run_id):
    return any("[leaky] apply:" in line for line in lines) and bool(left(server, run_id))


def late_apply(lines, server, run_id):
    return _instances(server, run_id, "running") >= 3 and not any("[leaky] applied" in line for line in lines)


def test_sigterm_during_a_chaos_batch_tears_down(kills):
    k = kills["term-chaos"]
    assert "LEAKS chaos" in k.output and "SIGTERM: stopping Terraform gracefully" in k.output
    assert "[leaky] destroyed" in k.output and "Error" not in k.output.split("LEAKS chaos")[1].split("SIGTERM")[0]


def chaos_batch(lines, server, run_id):
    return _after(lines, "LEAKS chaos", "[leaky] apply") and _instances(server, run_id, "terminated") >= 1


def rebuild(lines, server, run_id):
    return _after(lines, "LEAKS rebuild", "[leaky] applying") and bool(left(server, run_id))


def destroy(lines, server, run_id):
    return any("[leaky] destroying" in line for line in lines)


def run_session(server, base: Path, kill: Kill) -> Kill:
    home = base / kill.name / "home"
    home.mkdir(parents=True)
    suite = base / kill.name / "test_session.py"
    suite.write_text(SESSION_TEST)
    env = {**os.environ, "IMMUTABLE_INFRA_HOME": str(home), "LEAKS_POINT": kill.point}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", str(suite), "-s", "-p", "no:cacheprovider", "--rootdir", str(ROOT),
         "-c", str(ROOT / "pytest.ini"), "--groups-dir", str(TEST_GROUPS), "--group", "leaky", "--run-id", kill.run_id,
         "--aws-endpoint", server.url, "--reports-dir", str(base / kill.name / "reports")],
        cwd=base / kill.name, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        deadline = time.monotonic() + 300
        while not kill.when(list(lines), server, kill.run_id):
            if proc.poll() is not None or time.monotonic() > deadline:
                kill.error = "the kill point never came"
                break
            time.sleep(0.3)
        kill.at_kill = left(server, kill.run_id)
        for i, sig in enumerate(kill.signals):
            if i:
                time.sleep(1.0)
            if proc.poll() is None:
                proc.send_signal(sig)
        kill.returncode = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)
        kill.output = "".join(lines)
    deadline = time.monotonic() + 15  # the kernel delivers the parent-death signal at once; the exit takes a moment
    while terraform_processes(home) and time.monotonic() < deadline:
        time.sleep(0.5)
    kill.workers = terraform_processes(home)
    kill.after_exit = left(server, kill.run_id)
    if kill.followup == "down":
        if kill.name == "kill-late-down":
            kill.dropped = drop_instances_from_state(home / "runs" / kill.run_id / "groups" / "leaky")
        kill.followup_result = cli("down", "--run-id", kill.run_id, home=home)
    elif kill.followup == "reap":
        shutil.rmtree(home / "runs" / kill.run_id)  # another machine's crashed job: no local state at all
        kill.followup_result = cli("reap", "--run-id", kill.run_id, "--aws-endpoint", server.url,
                                   "--groups-dir", str(TEST_GROUPS), home=home)
    kill.at_end = left(server, kill.run_id)
    return kill


def drop_instances_from_state(workspace: Path) -> int:
    """Drop the aws_instance resources from the state a killed apply left; returns how many the state held.

    Whether a SIGKILL lands before Terraform has recorded the instances it is
    creating depends on timing (on a loaded machine the provider's wait may
    end first); this makes it certain, so the test always sees instances that
    only their tags know, as a kill a moment earlier leaves them.
    """
    path = workspace / "terraform.tfstate"
    if not path.exists():
        return 0
    state = json.loads(path.read_text())
    held = sum(len(r.get("instances", [])) for r in state.get("resources", []) if r.get("type") == "aws_instance")
    state["resources"] = [r for r in state.get("resources", []) if r.get("type") != "aws_instance"]
    state["serial"] = state.get("serial", 0) + 1
    path.write_text(json.dumps(state))
    return held


KILLS = [
    Kill("term-early", "", early_apply, [signal.SIGTERM]),
    Kill("kill-late-down", "", late_apply, [signal.SIGKILL], "down"),
    Kill("kill-late-reap", "", late_apply, [signal.SIGKILL], "reap"),
    Kill("term-chaos", "chaos", chaos_batch, [signal.SIGTERM]),
    Kill("kill-rebuild", "rebuild", rebuild, [signal.SIGKILL], "down"),
    Kill("hup-destroy", "", destroy, [signal.SIGHUP]),
    Kill("term2-destroy", "", destroy, [signal.SIGTERM, signal.SIGTERM], "down"),
]


@pytest.fixture(scope="module")
def kills(moto_server, tmp_path_factory) -> dict[str, Kill]:
    """Every kill of KILLS, three sessions at a time against the one moto server."""
    base = tmp_path_factory.mktemp("leaks")
    with ThreadPoolExecutor(max_workers=3) as pool:
        done = list(pool.map(lambda k: run_session(moto_server, base, k), KILLS))
    return {k.name: k for k in done}


@pytest.mark.parametrize("name", [k.name for k in KILLS])
def test_nothing_is_left_after_a_kill(kills, name):
    k = kills[name]
    assert not k.error, k.output
    assert k.at_kill, f"the session had created nothing when it was killed:\n{k.output}"
    assert k.workers == [], f"Terraform processes outlived the session: {k.workers}"
    if k.followup:
        assert k.followup_result is not None
        assert k.followup_result.returncode == 0, k.followup_result.stderr
    else:
        assert k.after_exit == [], k.output
    assert k.at_end == [], (k.output, k.followup_result.stderr if k.followup_result else "")


def test_sigterm_during_the_apply_stops_terraform_then_destroys(kills):
    k = kills["term-early"]
    assert "SIGTERM: stopping Terraform gracefully, then destroying" in k.output
    assert k.returncode == 2  # pytest's "interrupted", after the teardown and the reports
    assert "[leaky] destroyed" in k.output and "nothing tagged with it remains" in k.output


def test_a_killed_apply_leaves_instances_only_the_tags_know_and_down_deletes_them(kills):
    k = kills["kill-late-down"]
    assert k.returncode == -signal.SIGKILL
    assert sum(line.startswith("instance ") for line in k.after_exit) == 3, k.after_exit
    down = k.followup_result.stderr
    # the state holds none of the 3 (the kill left them out, or drop_instances_from_state did): only tags know them
    assert "deleted outside Terraform" in down or "its state did not hold" in down, f"state held {k.dropped}:\n{down}"
    assert "nothing tagged Run=kill-late-down remains" in down


def test_reap_needs_no_local_state(kills):
    k = kills["kill-late-reap"]
    assert k.after_exit, "SIGKILL leaves resources behind for the reaper"
    assert "run kill-late-reap (named with --run-id)" in k.followup_result.stderr
    assert "reaped 1 run(s)" in k.followup_result.stderr


def test_a_first_signal_during_the_teardown_lets_it_finish_and_a_second_stops_at_once(kills):
    once, twice = kills["hup-destroy"], kills["term2-destroy"]
    assert "SIGHUP: the teardown is already running and will finish" in once.output
    assert once.after_exit == []
    assert "SIGTERM again: stopped at once" in twice.output
    assert twice.returncode == 128 + signal.SIGTERM
    assert "immutable-infra down --run-id term2-destroy" in twice.output


def test_a_session_whose_console_went_away_still_tears_down_on_sigterm(moto_server, tmp_path):
    """The reader of the session's output is gone (a killed wrapper, a lost Jenkins agent): SIGTERM still destroys.

    Every progress line of the teardown then fails to write (a closed pipe); before, the first one ended the
    teardown half-way, the run recorded as ``destroying`` and its instances left on the endpoint.
    """
    run_id = "rpipe" + os.urandom(3).hex()
    home = tmp_path / "home"
    env = {**os.environ, "IMMUTABLE_INFRA_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "suites/test_drift.py", "-q", "-p", "no:cacheprovider", "--groups-dir",
         str(TEST_GROUPS), "--group", "leaky", "--run-id", run_id, "--aws-endpoint", moto_server.url,
         "--reports-dir", str(tmp_path / "reports")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        seen = b""
        deadline = time.monotonic() + 300
        while not (b"[leaky] apply:" in seen and left(moto_server, run_id)):
            assert proc.poll() is None and time.monotonic() < deadline, seen.decode()[-2000:]
            seen += proc.stdout.read1(4096)  # type: ignore[union-attr]
        proc.stdout.close()  # type: ignore[union-attr]
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert left(moto_server, run_id) == []
    state = json.loads((home / "runs" / run_id / "run.json").read_text())
    assert {name: g["status"] for name, g in state["groups"].items()} == {"leaky": "destroyed"}
