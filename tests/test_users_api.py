"""The plugin as users' API, and the suites' verdicts on groups that lack what a check needs.

One session (module-scoped, in a subprocess, embedded sandbox) applies two
small groups and runs the product's suites plus a test file written as a user
would write it:

- ``tiny``: a VPC, a subnet, a security group; no instance, no [roles], no peering;
- ``bucket-only``: an S3 bucket and no VPC, whose group.toml claims one ``web``
  instance in [roles] that its Terraform never creates.

Checks that have nothing to look at are skipped with the reason, never passed;
checks that the group's config claims but its Terraform lacks are errors.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
ROOT = TESTS.parent

BUCKET_ONLY_TOML = '''kind = "application"
region = "ap-southeast-1"
vpc_cidr = "10.91.0.0/16"
description = "an S3 bucket and no VPC; [roles] claims an instance the Terraform never creates"

[roles]
web = 1

[[flows]]                         # a flow it has no network for
from = "web@bucket-only"
to = "web@bucket-only"
protocol = "tcp"
port = 80
'''

BUCKET_ONLY_TF = '''terraform {
  required_providers {
    aws = { source = "hashicorp/aws", version = "3.39.0" }
  }
}

variable "run_id" {
  type    = string
  default = "local"
}

variable "region" {
  type    = string
  default = "ap-southeast-1"
}

provider "aws" {
  region = var.region
}

resource "aws_s3_bucket" "logs" {
  bucket = "bucket-only-${var.run_id}"
}
'''

#: What a user writes against a group: documented fixtures and find_* from immutable_infra.checks.
USER_TEST = '''
import pytest

from immutable_infra.checks import find_unmanaged, format_findings
from immutable_infra.plan import state_resources


def test_user_sees_the_group(infra_group, infra_outputs, infra_state, infra_ec2, infra_clients):
    if infra_group.name != "tiny":
        pytest.skip("this user test is about tiny")
    vpc_id = infra_outputs["vpc_id"]
    assert [r.address for r in state_resources(infra_state) if r.type == "aws_vpc"] == ["aws_vpc.this"]
    assert infra_ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"][0]["CidrBlock"] == "10.90.0.0/16"
    assert infra_clients("s3").meta.region_name == "ap-southeast-1"
    print(f"USER-API-OK {infra_group.name} {vpc_id}")


def test_user_finds_a_hand_made_security_group(infra_group, infra_outputs, infra_state, infra_ec2, infra_verify):
    if infra_group.name != "tiny":
        pytest.skip("this user test is about tiny")
    vpc_id = infra_outputs["vpc_id"]
    assert not infra_verify("unmanaged").findings
    sg = infra_ec2.create_security_group(GroupName="by-hand", Description="by hand", VpcId=vpc_id)["GroupId"]
    try:
        # the plain function, over plain data
        snapshot = {"security_groups": infra_ec2.describe_security_groups(
            Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["SecurityGroups"]}
        findings = find_unmanaged(infra_group.name, state_resources(infra_state), snapshot)
        assert [f.aws_id for f in findings] == [sg], format_findings(findings)
        # the same check run live by the plugin
        assert sg in [f.aws_id for f in infra_verify("unmanaged").findings]
        print(f"USER-FOUND {sg}")
    finally:
        infra_ec2.delete_security_group(GroupId=sg)
'''


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """Run the suites and the user's test file against tiny and bucket-only, once; JUnit outcomes by test id."""
    project = tmp_path_factory.mktemp("users-api")
    groups = project / "groups"
    shutil.copytree(TESTS / "groups" / "tiny", groups / "tiny")
    (groups / "bucket-only").mkdir()
    (groups / "bucket-only" / "group.toml").write_text(BUCKET_ONLY_TOML)
    (groups / "bucket-only" / "main.tf").write_text(BUCKET_ONLY_TF)
    for extra in ("roles.toml", "playbooks"):
        src = TESTS / extra
        if src.is_dir():
            shutil.copytree(src, project / extra)
        elif src.exists():
            shutil.copy(src, project / extra)
    shutil.copytree(ROOT / "suites", project / "suites")
    (project / "test_mine.py").write_text(USER_TEST)
    env = {**os.environ, "IMMUTABLE_INFRA_HOME": str(project / "home")}
    junit = project / "junit.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "-s", "--groups-dir", "groups",
         "--group", "tiny", "--group", "bucket-only", "--reports-dir", str(project / "reports"),
         f"--junitxml={junit}", "suites/test_lifecycle.py", "suites/test_mutation.py", "suites/test_drift.py",
         "suites/test_roles.py", "suites/test_peering.py", "suites/test_image_parity.py", "test_mine.py"],
        cwd=project, env=env, capture_output=True, text=True, timeout=900,
    )
    outcomes = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname').rsplit('.', 1)[-1]}::{case.get('name')}"
        kind, message = "passed", ""
        for child in case:
            if child.tag in ("skipped", "failure", "error"):
                # the message attribute, and for errors the whole text shown to the user (one line)
                kind, message = child.tag, (child.text or "").strip() if child.tag == "error" else child.get("message") or ""
        outcomes[name] = (kind, message)
    print(proc.stdout[-4000:])
    return proc, outcomes


def outcome(session, test, group):
    return session[1][f"{test}[{group}]"]


def test_a_group_without_a_vpc_is_skipped_with_the_reason_not_passed(session):
    kind, message = outcome(session, "test_drift::test_no_unmanaged_resources", "bucket-only")
    assert kind == "skipped" and "unmanaged: bucket-only has no VPC (no aws_vpc in its state" in message, (kind, message)


@pytest.mark.parametrize("test", ["test_peering::test_declared_flows_are_reachable",
                                  "test_peering::test_peerings_active_and_cidrs_disjoint"])
def test_flows_declared_for_a_group_without_a_vpc_are_an_error(session, test):
    kind, message = outcome(session, test, "bucket-only")
    assert kind == "error", (kind, message)
    assert "reachability: bucket-only has no VPC" in message and "1 [[flows]]/[[isolation]] entries" in message, message


@pytest.mark.parametrize("test, claim", [
    ("test_roles::test_instances_match_the_roles_catalog", "roles: "),
    ("test_mutation::test_live_instances_match_their_fingerprint", "mutation: "),
    ("test_image_parity::test_instances_run_the_current_packer_run", "parity: "),
    ("test_lifecycle::test_every_instance_has_role_and_group_tags", "tags: "),
])
def test_roles_claiming_instances_the_group_lacks_is_an_error(session, test, claim):
    kind, message = outcome(session, test, "bucket-only")
    assert kind == "error", (kind, message)
    assert claim in message and "[roles]" in message and "has no aws_instance" in message, message
    assert len(message.splitlines()) == 1, message  # one line, nothing chained
    assert "not found" not in message and "closed" not in message


@pytest.mark.parametrize("test, reason", [
    ("test_peering::test_peerings_active_and_cidrs_disjoint", "no VPC peering connection touches tiny's VPCs"),
    ("test_roles::test_instances_match_the_roles_catalog", "roles: tiny declares no [roles]"),
    ("test_mutation::test_live_instances_match_their_fingerprint", "mutation: tiny has no aws_instance"),
    ("test_image_parity::test_instances_run_the_current_packer_run", "parity: tiny has no aws_instance"),
    ("test_lifecycle::test_every_instance_has_role_and_group_tags", "tags: tiny has no aws_instance"),
    ("test_lifecycle::test_outputs_consumed_by_dependents_exist", "no group takes inputs from tiny"),
])
def test_checks_with_nothing_to_look_at_are_skipped_with_the_reason(session, test, reason):
    kind, message = outcome(session, test, "tiny")
    assert kind == "skipped" and reason in message, (kind, message)


def test_applicable_checks_still_give_verdicts(session):
    for test in ("test_drift::test_no_drift", "test_drift::test_no_unmanaged_resources",
                 "test_lifecycle::test_plan_after_apply_proposes_no_changes"):
        assert outcome(session, test, "tiny")[0] == "passed", (test, outcome(session, test, "tiny"))
    assert outcome(session, "test_drift::test_no_drift", "bucket-only")[0] == "passed"


def test_users_fixtures_and_find_functions(session):
    proc, outcomes = session
    assert outcome(session, "test_mine::test_user_sees_the_group", "tiny")[0] == "passed", proc.stdout[-3000:]
    assert outcome(session, "test_mine::test_user_finds_a_hand_made_security_group", "tiny")[0] == "passed", proc.stdout[-3000:]
    assert "USER-API-OK tiny vpc-" in proc.stdout and "USER-FOUND sg-" in proc.stdout
    assert "Traceback" not in proc.stdout


def test_suites_and_the_projects_tests_in_one_command():
    """suites/ and tests/ share file names (test_drift.py, test_roles.py, ...): one command must still collect both."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q",
         "tests/test_drift.py", "tests/test_roles.py", "tests/test_rebuild.py", "suites/",
         "--groups-dir", "tests/groups", "--group", "tiny"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "import file mismatch" not in proc.stdout
    assert "suites/test_drift.py::test_no_drift[tiny]" in proc.stdout
    assert "tests/test_drift.py::" in proc.stdout
    # suites keep their order: read-only checks first, chaos, rebuild and drill last
    ids = [line for line in proc.stdout.splitlines() if line.startswith("suites/")]
    first = {name: next(i for i, line in enumerate(ids) if line.startswith(f"suites/{name}.py")) for name in
             ("test_lifecycle", "test_drift", "test_chaos", "test_disaster")}
    assert first["test_lifecycle"] < first["test_drift"] < first["test_chaos"] < first["test_disaster"]
