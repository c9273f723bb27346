"""Acceptance (issue 12): audit a "production" that a team applied with PLAIN Terraform into an S3 backend.

ops-sg and prd-sg-slave are copied into a tmp folder, given a backend.tf naming only bucket, key, region and
use_lockfile, and applied the way a team's wrapper would: engine.Terraform driven directly (not `immutable-infra
up`, not the harness), the wrapper's own provider override pointing at the test's sandbox, its own -backend-config
for the emulator, prd-sg-slave's inputs passed as a tfvars file from ops-sg's outputs. Then
`pytest suites/ --group prd-sg-slave --audit --aws-endpoint URL` (no --run-id) runs twice: on the healthy
deployment (zero findings, zero mutating calls, state objects byte-for-byte unchanged) and after out-of-band
changes made with boto3 (each named by its AWS id). Everything is destroyed with plain Terraform at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import boto3
import pytest

from immutable_infra.engine import Terraform
from immutable_infra.images import load_catalog, register_images
from immutable_infra.sandbox import PROVIDER_ENDPOINT_SERVICES, Sandbox

from moto_recorder import recorder, writes

ROOT = Path(__file__).parent.parent
FIXTURES = ROOT / "fixtures"
REGION = "ap-southeast-1"
BUCKET = "team-tfstate"
GROUPS = ("ops-sg", "prd-sg-slave")
KEYS = {g: f"sg/{g}.tfstate" for g in GROUPS}
WRAPPER_OVERRIDE = "wrapper_override.tf"


def client(server, service):
    return boto3.client(service, region_name=REGION, endpoint_url=server.url,
                        aws_access_key_id="t", aws_secret_access_key="t")


class Wrapper:
    """What a team's deploy script does: plain Terraform, its own sandbox settings, inputs as tfvars."""

    def __init__(self, server, groups_dir: Path, work: Path) -> None:
        self.server = server
        self.groups_dir = groups_dir
        self.work = work
        self.env = Sandbox.remote(server.url).terraform_env()  # mirror + sandbox credentials only
        self.backend_file = work / "sandbox.s3.tfbackend"
        self.backend_file.write_text(
            f'endpoints = {{ s3 = "{server.url}" }}\nuse_path_style = true\nskip_credentials_validation = true\n'
            "skip_region_validation = true\nskip_requesting_account_id = true\nskip_metadata_api_check = true\n"
            "skip_s3_checksum = true\n")

    def terraform(self, name: str) -> Terraform:
        path = self.groups_dir / name
        endpoints = "\n".join(f'    {svc} = "{self.server.url}"' for svc in PROVIDER_ENDPOINT_SERVICES)
        (path / WRAPPER_OVERRIDE).write_text(
            'provider "aws" {\n  skip_credentials_validation = true\n  skip_metadata_api_check = true\n'
            '  skip_requesting_account_id = true\n  s3_force_path_style = true\n'
            f"  endpoints {{\n{endpoints}\n  }}\n}}\n")
        tf = Terraform(path, self.env, parallelism=30)
        tf.init_args = [f"-backend-config={self.backend_file}"]
        return tf

    def done(self, name: str) -> None:
        (self.groups_dir / name / WRAPPER_OVERRIDE).unlink(missing_ok=True)  # the group folder as the team keeps it

    def vars_file(self, name: str) -> list[str]:
        if name != "prd-sg-slave":
            return []
        ops = self.terraform("ops-sg").output()
        self.done("ops-sg")
        path = self.work / f"{name}.tfvars.json"
        path.write_text(json.dumps({"ops_vpc_id": ops["vpc_id"], "ops_vpc_cidr": ops["vpc_cidr"],
                                    "ops_route_table_ids": ops["route_table_ids"], "run_id": "prod"}))
        return [f"-var-file={path}"]

    def apply(self, name: str) -> None:
        tf = self.terraform(name)
        try:
            tf.init()
            tf.run(["apply", "-auto-approve", "-input=false", "-no-color", "-parallelism=30", *self.vars_file(name)])
        finally:
            self.done(name)

    def destroy(self, name: str) -> None:
        tf = self.terraform(name)
        try:
            tf.init()
            tf.run(["apply", "-destroy", "-auto-approve", "-input=false", "-no-color", "-parallelism=30",
                    *self.vars_file(name)])
        finally:
            self.done(name)


@pytest.fixture(scope="module")
def production(moto_server, tmp_path_factory):
    """ops-sg and prd-sg-slave applied with plain Terraform into an S3 backend in the sandbox; destroyed after."""
    root = tmp_path_factory.mktemp("team")
    for item in ("roles.toml", "playbooks", "images", "modules", "groups"):
        src = FIXTURES / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / item)
    for name in GROUPS:
        # the team's own Terraform: its provider block as it is (no Group tag: that is a run's convention)
        (root / "groups" / name / "backend.tf").write_text(
            f'terraform {{\n  backend "s3" {{\n    bucket       = "{BUCKET}"\n    key          = "{KEYS[name]}"\n'
            f'    region       = "{REGION}"\n    use_lockfile = true\n  }}\n}}\n')
    # the wrapper passes run_id; the audit is told the same in group.toml
    slave_toml = root / "groups" / "prd-sg-slave" / "group.toml"
    slave_toml.write_text(slave_toml.read_text() + '\n[deployed]\nvariables = { run_id = "prod" }\n')
    register_images(lambda region: client(moto_server, "ec2") if region == REGION else
                    boto3.client("ec2", region_name=region, endpoint_url=moto_server.url,
                                 aws_access_key_id="t", aws_secret_access_key="t"),
                    load_catalog(root / "images"))
    client(moto_server, "s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    wrapper = Wrapper(moto_server, root / "groups", tmp_path_factory.mktemp("wrapper"))
    applied = []
    try:
        for name in GROUPS:
            applied.append(name)
            wrapper.apply(name)
        yield root
    finally:
        for name in reversed(applied):
            wrapper.destroy(name)


def state_objects(server) -> dict[str, bytes]:
    s3 = client(server, "s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    return {k: s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys}


def audit(server, root: Path, out: Path):
    """One pytest session: the deployed prd-sg-slave (and ops-sg, its input) audited from their backends.

    Every session writes to one reports folder beside ``out`` (as a nightly job does), so history accumulates.
    """
    junit = out / "junit.xml"
    env = {**os.environ, "IMMUTABLE_INFRA_HOME": str(out / "home")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "suites/", "-p", "no:cacheprovider", "--groups-dir", str(root / "groups"),
         "--group", "prd-sg-slave", "--audit", "--aws-endpoint", server.url, "--reports-dir", str(out.parent / "reports"),
         f"--junitxml={junit}"],
        env=env, capture_output=True, text=True, cwd=ROOT)
    outcomes = {}
    for case in ET.parse(junit).iter("testcase"):
        found = [case.find(tag) for tag in ("failure", "error", "skipped")]
        state = next((tag for tag, el in zip(("failed", "error", "skipped"), found) if el is not None), "passed")
        el = next((el for el in found if el is not None), None)
        outcomes[case.get("name")] = (state, (el.get("message", "") + (el.text or "")) if el is not None else "")
    assert not (out / "home").exists(), "an audit of deployed groups must not create a run store"
    return result, outcomes


def test_deployed_production_audit(production, moto_server, tmp_path):
    before = state_objects(moto_server)
    assert set(before) == set(KEYS.values()), before.keys()

    # -- healthy: zero findings, zero mutating calls, the state objects unchanged -----------------------------
    recorder(moto_server, "reset-recording")
    recorder(moto_server, "start-recording")
    try:
        result, outcomes = audit(moto_server, production, tmp_path / "healthy")
    finally:
        recorder(moto_server, "stop-recording")
    bad = {k: v for k, v in outcomes.items() if v[0] in ("failed", "error")}
    assert not bad, "\n".join(f"{k}: {v[1][:2500]}" for k, v in bad.items()) + "\n" + result.stdout[-1500:]
    passed = {k for k, v in outcomes.items() if v[0] == "passed"}
    for test in ("test_no_drift[prd-sg-slave]", "test_no_unmanaged_resources[prd-sg-slave]",
                 "test_instances_match_the_roles_catalog[prd-sg-slave]", "test_declared_flows_are_reachable[prd-sg-slave]",
                 "test_every_instance_has_role_and_group_tags[prd-sg-slave]",
                 "test_instances_run_the_current_packer_run[prd-sg-slave]",
                 "test_plan_after_apply_proposes_no_changes[prd-sg-slave]"):
        assert test in passed, f"{test}: {outcomes.get(test)}"
    assert outcomes["test_live_instances_match_their_fingerprint[prd-sg-slave]"][0] == "skipped"
    assert "read as deployed from its s3 bucket team-tfstate, key sg/prd-sg-slave.tfstate" in result.stdout
    summary = json.loads((tmp_path / "reports" / "summary.json").read_text())
    findings = sum(len(c.get("findings", [])) for g in summary["groups"].values() for c in g["checks"].values())
    assert findings == 0, json.dumps(summary["groups"], indent=1)[:3000]
    recording = recorder(moto_server, "download-recording")
    assert recording.strip(), "the recorder saw no request: the audit did not read AWS"
    assert writes(recording) == [], "an audit must never write to AWS"
    assert state_objects(moto_server) == before, "the state objects (and no lock object) are byte-for-byte unchanged"

    # -- out-of-band changes, each named by its AWS id --------------------------------------------------------
    ec2 = client(moto_server, "ec2")
    state = json.loads(before[KEYS["prd-sg-slave"]])
    ids = {(r["type"], r.get("module", "") + "." + r["name"] + str(i.get("index_key", ""))): i["attributes"]
           for r in state["resources"] if r["mode"] == "managed" for i in r["instances"]}
    vpc = next(a["id"] for (t, _), a in ids.items() if t == "aws_vpc")
    instance = next(a for (t, _), a in ids.items() if t == "aws_instance")
    sg = next(a["id"] for (t, _), a in ids.items() if t == "aws_security_group")
    ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 3306, "ToPort": 3306, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    ec2.stop_instances(InstanceIds=[instance["id"]])
    ec2.modify_instance_attribute(InstanceId=instance["id"], InstanceType={"Value": "t3.large"})
    ec2.start_instances(InstanceIds=[instance["id"]])
    rogue = ec2.create_security_group(GroupName="hand-made", Description="made by hand", VpcId=vpc)["GroupId"]
    igw = ec2.describe_internet_gateways(Filters=[{"Name": "attachment.vpc-id", "Values": [vpc]}])[
        "InternetGateways"][0]["InternetGatewayId"]
    table, cidr = next((t["RouteTableId"], r["DestinationCidrBlock"])
                       for t in ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"]
                       for r in t["Routes"] if r.get("VpcPeeringConnectionId"))
    ec2.replace_route(RouteTableId=table, DestinationCidrBlock=cidr, GatewayId=igw)
    try:
        result, outcomes = audit(moto_server, production, tmp_path / "faulty")
    finally:
        ec2.delete_security_group(GroupId=rogue)  # not Terraform's: the destroy would not remove it
    out = result.stdout

    def text(test):
        state, message = outcomes[test]
        assert state == "failed", f"{test} should fail, got {state}: {message[:500]}\n{out[-3000:]}"
        return message

    drift = text("test_no_drift[prd-sg-slave]")
    unmanaged = text("test_no_unmanaged_resources[prd-sg-slave]")
    assert instance["id"] in drift and "instance_type" in drift, drift[:3000]
    assert table in drift, drift[:3000]
    assert sg in drift + unmanaged, (drift + unmanaged)[:3000]
    assert rogue in unmanaged, unmanaged[:3000]
    imports = tmp_path / "reports" / "imports" / "prd-sg-slave"
    assert str(imports) in unmanaged or "reports/imports/prd-sg-slave" in unmanaged, unmanaged[:3000]
    blocks = (imports / "imports.tf").read_text()
    assert f'id = "{rogue}"' in blocks and "aws_security_group." in blocks, blocks[:2000]
    history = [json.loads(line) for line in (tmp_path / "reports" / "history.jsonl").read_text().splitlines()]
    audits = [h for h in history if h.get("kind") == "audit"]
    assert len(audits) == 2 and all(a.get("target") == "deployed" for a in audits), history
    assert (tmp_path / "reports" / "drift-trend.png").stat().st_size > 0
    assert "prd-sg-slave since the audit of" in out, out[-3000:]
    assert state_objects(moto_server) == before, "the state objects are unchanged after the faulted audit too"
