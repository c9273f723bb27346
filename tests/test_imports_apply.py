"""Unmanaged -> imports, end to end: an audit writes import blocks and generated configuration for resources made
by hand, reading only (no AWS write, the group's state and folder untouched); applied in the group's workspace, they
make the unmanaged findings go away and the next plan is clean.

Uses the purpose-made group tests/groups/import-lab (a VPC, a subnet, a security group with one rule resource:
applies in about 10 s), brought up with `immutable-infra up` and destroyed at the end with what was imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import boto3
import pytest
from moto_recorder import recorder, writes

from immutable_infra.checks.unmanaged import find_unmanaged
from immutable_infra.engine import Terraform
from immutable_infra.live import describe_group, group_vpc_ids
from immutable_infra.plan import state_resources
from immutable_infra.sandbox import Sandbox

ROOT = Path(__file__).parent.parent
RUN = "imp1"
GROUP = "import-lab"
REGION = "ap-southeast-1"


def cli(server, home, *args):
    env = {**os.environ, "IMMUTABLE_INFRA_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "immutable_infra.cli", *args, "--aws-endpoint", server.url],
                          env=env, capture_output=True, text=True, cwd=ROOT)


@pytest.fixture(scope="module")
def deployed(moto_server, tmp_path_factory):
    home = tmp_path_factory.mktemp("imports-home")
    up = cli(moto_server, home, "up", GROUP, "--run-id", RUN, "--groups-dir", "tests/groups")
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        yield home
    finally:
        down = cli(moto_server, home, "down", "--run-id", RUN)
        assert down.returncode == 0, down.stderr[-3000:]


def unmanaged_now(tf: Terraform, ec2) -> list:
    state = tf.state()
    return find_unmanaged(GROUP, state_resources(state), describe_group(ec2, group_vpc_ids({}, state), GROUP))


def test_audit_writes_imports_that_bring_hand_made_resources_under_terraform(deployed, moto_server, tmp_path):
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=moto_server.url,
                       aws_access_key_id="t", aws_secret_access_key="t")
    ws = deployed / "runs" / RUN / "groups" / GROUP
    tf = Terraform(ws, Sandbox.remote(moto_server.url, offline=True).terraform_env())
    state = tf.state()
    [vpc] = group_vpc_ids({}, state)
    [app] = [r.aws_id for r in state_resources(state) if r.address == "aws_security_group.app"]

    # By hand, as the seed's team did with a separate tool: a security group with a rule, a rule on the managed
    # group (whose rules are rule resources), a subnet.
    sg = ec2.create_security_group(GroupName="hand-made", Description="made by hand", VpcId=vpc, TagSpecifications=[
        {"ResourceType": "security-group", "Tags": [{"Key": "Name", "Value": "hand made"}]}])["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}])
    ec2.authorize_security_group_ingress(GroupId=app, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.91.9.0/24", AvailabilityZone=f"{REGION}b")["Subnet"]["SubnetId"]
    try:
        check_audit_and_apply(deployed, moto_server, tmp_path, ec2, tf, ws, app, sg, subnet)
    except BaseException:
        # Not imported: the hand-made resources (untagged, unknown to the state) would block the VPC's destroy.
        managed = {r.type for r in state_resources(tf.state()) if r.aws_id in (sg, subnet) or r.address.endswith("_22")}
        if "aws_security_group_rule" not in managed:
            ec2.revoke_security_group_ingress(GroupId=app, IpPermissions=[
                {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
        if "aws_security_group" not in managed:
            ec2.delete_security_group(GroupId=sg)
        if "aws_subnet" not in managed:
            ec2.delete_subnet(SubnetId=subnet)
        raise


def check_audit_and_apply(deployed, moto_server, tmp_path, ec2, tf, ws, app, sg, subnet):
    before = {(f.detail["type"], f.aws_id) for f in unmanaged_now(tf, ec2)}
    assert before == {("security_groups", sg), ("security_group_rules", app), ("subnets", subnet)}

    # The audit: the unmanaged test fails naming the folder; the imports are written, nothing else is.
    state_bytes = (ws / "terraform.tfstate").read_bytes()
    files_before = sorted(p.name for p in ws.iterdir())
    reports = tmp_path / "reports"
    junit = tmp_path / "audit.xml"
    recorder(moto_server, "reset-recording")
    recorder(moto_server, "start-recording")
    try:
        audit = subprocess.run(
            [sys.executable, "-m", "pytest", "suites/test_drift.py", "-p", "no:cacheprovider", "-k", "unmanaged",
             "--groups-dir", "tests/groups", "--group", GROUP, "--run-id", RUN, "--aws-endpoint", moto_server.url,
             "--audit", "--reports-dir", str(reports), f"--junitxml={junit}"],
            env={**os.environ, "IMMUTABLE_INFRA_HOME": str(deployed)}, capture_output=True, text=True, cwd=ROOT)
    finally:
        recorder(moto_server, "stop-recording")
    assert writes(recorder(moto_server, "download-recording")) == [], "an audit must never write to AWS"
    [case] = [c for c in ET.parse(junit).iter("testcase") if c.get("name") == f"test_no_unmanaged_resources[{GROUP}]"]
    failure = case.find("failure")
    assert failure is not None, audit.stdout[-3000:]
    folder = reports / "imports" / GROUP
    assert f"import blocks for them (review {folder}/README.md, then apply): {folder}/" in (failure.text or "")
    assert (ws / "terraform.tfstate").read_bytes() == state_bytes
    assert sorted(p.name for p in ws.iterdir()) == files_before
    summary = json.loads((reports / "summary.json").read_text())
    assert summary["groups"][GROUP]["checks"]["unmanaged"]["facts"]["imports"] == str(folder)

    imports = (folder / "imports.tf").read_text()
    assert f'to = aws_security_group.hand_made\n  id = "{sg}"' in imports
    assert f'id = "{app}_ingress_tcp_22_22_0.0.0.0/0"' in imports
    assert f'to = aws_subnet.{subnet}\n  id = "{subnet}"' in imports
    assert "It plans as it is" in (folder / "README.md").read_text()
    generated = (folder / "generated.tf").read_text()
    assert 'resource "aws_security_group" "hand_made"' in generated and "availability_zone_id" not in generated

    # Review done: the files go into the group's workspace and are applied; the findings are gone.
    for name in ("imports.tf", "generated.tf"):
        (ws / name).write_text((folder / name).read_text())
    tf.apply()
    assert unmanaged_now(tf, ec2) == []
    plan = tf.plan(out="after-import.tfplan")
    changes = [(c["address"], c["change"]["actions"]) for c in plan.get("resource_changes", [])
               if c["change"]["actions"] != ["no-op"]]
    assert changes == [], "the generated configuration must match what was imported"


def test_an_import_terraform_cannot_make_keeps_its_block_and_the_readme_says_why(deployed, moto_server, tmp_path):
    from immutable_infra.findings import Finding
    from immutable_infra.imports import write_imports

    ws = deployed / "runs" / RUN / "groups" / GROUP
    tf = Terraform(ws, Sandbox.remote(moto_server.url, offline=True).terraform_env())
    gone = Finding("unmanaged", GROUP, "", "subnet-0000000000000dead", "", "unmanaged subnet subnet-0000000000000dead",
                   {"type": "subnets", "id": "subnet-0000000000000dead", "name": "gone"})
    files_before = sorted(p.name for p in ws.iterdir())
    out = write_imports(GROUP, [gone], tmp_path / "imports", ws, [], tf)
    assert 'to = aws_subnet.gone\n  id = "subnet-0000000000000dead"' in (out / "imports.tf").read_text()
    assert not (out / "generated.tf").exists()
    text = (out / "README.md").read_text()
    assert "Terraform could not generate it" in text
    assert "- `aws_subnet.gone`: Cannot import non-existent remote object" in text
    assert sorted(p.name for p in ws.iterdir()) == files_before
