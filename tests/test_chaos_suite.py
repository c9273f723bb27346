"""The chaos suite on a small purpose-made group: a fault is caught and repaired; a check blinded to the fault
makes the suite fail naming the missed fault, and summary.json, summary.md, history.jsonl and JUnit all say so;
a finding no fault explains fails it as a false alarm; dry runs touch nothing."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
TEST_GROUPS = Path(__file__).parent / "groups"

CHAOS = '\n[chaos]\nfaults = ["sg_opened_to_world"]\nchecks = ["drift"]\n'

BLIND_DRIFT = '''
from immutable_infra.checks import noise

# A noise rule that hides every change of a security group's ingress: drift can no longer see an opened group.
noise.DEFAULT_NOISE_RULES = noise.DEFAULT_NOISE_RULES + (
    noise.NoiseRule("hide-all-ingress", "aws_security_group", "ingress", lambda diff: True, "blinds drift (test)"),
)
'''


@pytest.fixture
def project(pytester, tmp_path, monkeypatch):
    shutil.copytree(TEST_GROUPS, pytester.path / "groups")
    if (TEST_GROUPS.parent / "roles.toml").exists():  # the roles catalog beside the groups folder
        shutil.copy(TEST_GROUPS.parent / "roles.toml", pytester.path / "roles.toml")
    with open(pytester.path / "groups" / "tiny" / "group.toml", "a") as f:
        f.write(CHAOS)
    shutil.copy(ROOT / "suites" / "test_chaos.py", pytester.path / "test_chaos.py")
    monkeypatch.setenv("IMMUTABLE_INFRA_HOME", str(tmp_path / "home"))
    return pytester


# A drift check that, once the fault is in (its second run: baseline, after injection, proof), also reports a
# change of the subnet, which the fault (a security group opened to the world) did not touch.
FALSE_ALARM = '''
from immutable_infra import verify
from immutable_infra.findings import Finding

real_drift, calls = verify.CHECKS["drift"], []


def drift_with_a_stray_finding(h, name, reading=None):
    result = real_drift(h, name, reading)
    calls.append(name)
    if len(calls) == 2:
        result.findings.append(Finding("drift", name, "aws_subnet.a", "subnet-stray", "as declared",
                                       "tags changed (made up by the test)"))
    return result


verify.CHECKS["drift"] = drift_with_a_stray_finding
'''


def run(pytester, server, *args):
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--groups-dir", "groups", "--aws-endpoint", server.url,
                                         "--reports-dir", "reports", "--group", "tiny", "--junitxml", "junit.xml", *args)


def reports(project):
    """The chaos verdict as summary.json, summary.md, history.jsonl and JUnit give it, and the chaos findings."""
    root = project.path / "reports"
    summary = json.loads((root / "summary.json").read_text())["groups"]["tiny"]["checks"]["chaos"]
    md = (root / "summary.md").read_text()
    md_verdict = next(line.split("|")[2].strip() for line in md.splitlines() if line.startswith("| chaos |"))
    history = json.loads((root / "history.jsonl").read_text().splitlines()[-1])["groups"]["tiny"]["verdicts"]["chaos"]
    cases = ET.parse(project.path / "junit.xml").getroot().iter("testcase")
    failed = sorted(c.get("name") for c in cases if c.find("failure") is not None or c.find("error") is not None)
    return {"json": summary["verdict"], "md": md_verdict, "history": history, "junit_failed": failed,
            "findings": summary["findings"], "markdown": md}


def test_fault_caught_repaired_and_matrix_written(project, moto_server):
    result = run(project, moto_server)
    result.assert_outcomes(passed=3, skipped=17)
    matrix = (project.path / "reports" / "chaos" / "tiny" / "chaos-matrix.md").read_text()
    assert "sg_opened_to_world" in matrix and "100%" in matrix
    got = reports(project)
    assert (got["json"], got["md"], got["history"], got["junit_failed"]) == ("pass", "pass", "pass", [])
    assert got["findings"] == []
    # Each phase of the batch says what it does and how long it has taken; the repair says its own. tiny's repair
    # (the security group's inline rules put back) leaves no drift at all, so there is nothing to settle.
    result.stdout.fnmatch_lines([
        "*[[]tiny] chaos: 1 fault(s) in 1 batch(es) (0 without a target), planned in * s",
        "*[[]tiny] chaos batch 1: faults sg_opened_to_world; checks drift",
        "*[[]tiny] chaos batch 1: baseline taken (0 finding(s)), * s",
        "*[[]tiny] chaos batch 1: injected 1 fault(s); checks again, * s",
        "*[[]tiny] chaos batch 1: 0 fault(s) missed by an expected check, 0 false alarm(s); undoing and repairing, * s",
        "*[[]tiny] repair apply",
        "*[[]tiny] chaos batch 1: repaired; nothing to settle (no drift at all after the repair), * s",
    ])
    assert "settling:" not in result.stdout.str()
    # apply s is the group's own apply; the chaos repair is recorded beside it.
    timings = json.loads((project.path / "reports" / "summary.json").read_text())["groups"]["tiny"]["timings"]
    assert timings["repairs"] == 1 and timings["repair"] > 0 and "settle" not in timings
    lines = result.stdout.lines
    header = next(line for line in lines if line.startswith("group ") and "apply s" in line)
    row = next(line for line in lines if line.startswith("tiny ") and "destroyed" in line)
    assert row[header.index("apply s"):].split()[0] == f"{timings['apply']:.0f}"


def test_a_check_blinded_to_a_fault_fails_the_suite_naming_the_fault(project, moto_server):
    project.makeconftest(BLIND_DRIFT)
    result = run(project, moto_server)
    result.assert_outcomes(passed=2, failed=1, skipped=17)
    result.stdout.fnmatch_lines(["*sg_opened_to_world missed by drift*"])
    got = reports(project)
    # every report agrees with the test outcome: the miss is recorded, not a pass with 0 findings
    assert (got["json"], got["md"], got["history"]) == ("fail", "**FAIL**", "fail")
    assert got["junit_failed"] == ["test_fault_is_caught_by_its_expected_checks[tiny-sg_opened_to_world]"]
    assert [(f["detail"]["kind"], f["detail"]["check"]) for f in got["findings"]] == [("miss", "drift")]
    assert "missed: no new drift finding" in got["markdown"]


def test_a_finding_no_fault_explains_fails_the_experiment_as_a_false_alarm(project, moto_server):
    project.makeconftest(FALSE_ALARM)
    result = run(project, moto_server)
    result.assert_outcomes(passed=2, failed=1, skipped=17)
    result.stdout.fnmatch_lines(["*no injected fault explains (false alarms)*", "*tiny aws_subnet.a (subnet-stray)*"])
    got = reports(project)
    assert (got["json"], got["md"], got["history"]) == ("fail", "**FAIL**", "fail")
    assert got["junit_failed"] == ["test_no_false_alarm[tiny]"]
    assert [(f["detail"]["kind"], f["aws_id"]) for f in got["findings"]] == [("false-alarm", "subnet-stray")]


# A group whose security-group rules are separate aws_security_group_rule resources (the usual community-module
# pattern): an apply never removes a rule it does not manage, so a hand-made rule goes only by the fault's undo.
RULES_GROUP = {
    "group.toml": '''kind = "application"
region = "ap-southeast-1"
vpc_cidr = "10.95.0.0/16"
description = "two security groups whose rules are aws_security_group_rule resources, one sourced by the other"

[chaos]
faults = ["sg_opened_to_world", "flow_rule_revoked"]
checks = ["drift", "unmanaged"]
''',
    "main.tf": '''terraform {
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

resource "aws_vpc" "this" {
  cidr_block = "10.95.0.0/16"
  tags       = { Name = "rules-${var.run_id}" }
}

resource "aws_security_group" "app" {
  name   = "rules-app"
  vpc_id = aws_vpc.this.id
  tags   = { Purpose = "app" }
}

resource "aws_security_group" "db" {
  name   = "rules-db"
  vpc_id = aws_vpc.this.id
  tags   = { Purpose = "db" }
}

resource "aws_security_group_rule" "app_from_vpc" {
  type              = "ingress"
  security_group_id = aws_security_group.app.id
  from_port         = 8080
  to_port           = 8080
  protocol          = "tcp"
  cidr_blocks       = ["10.95.0.0/16"]
}

resource "aws_security_group_rule" "db_from_app" {
  type                     = "ingress"
  security_group_id        = aws_security_group.db.id
  from_port                = 5432
  to_port                  = 5432
  protocol                 = "tcp"
  source_security_group_id = aws_security_group.app.id
}

output "vpc_id" {
  value = aws_vpc.this.id
}
''',
}

# The fault's undo made a no-op (as if it only relied on the apply), and the revoked rule's injection failing.
NO_UNDO_AND_A_FAILING_FAULT = '''
from immutable_infra import chaos


def refused(self, clients):
    raise RuntimeError("InvalidPermission.NotFound: made up by the test")


chaos.SgOpenedToWorld.undo = lambda self, clients: None
chaos.FlowRuleRevoked._inject = refused
'''


@pytest.fixture
def rules_project(project):
    folder = project.path / "groups" / "rules"
    folder.mkdir()
    for name, text in RULES_GROUP.items():
        (folder / name).write_text(text)
    return project


def run_rules(pytester, server, *args):
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--groups-dir", "groups", "--aws-endpoint", server.url,
                                         "--reports-dir", "reports", "--group", "rules", *args)


def test_separate_rule_resources_a_hand_made_rule_is_undone_and_a_sg_sourced_rule_revoked(rules_project, moto_server):
    result = run_rules(rules_project, moto_server)
    result.assert_outcomes(passed=4, skipped=16)
    facts = json.loads((rules_project.path / "reports" / "summary.json").read_text())["groups"]["rules"]["checks"]["chaos"]
    rows = {r["fault"]: r["cells"]["drift"] for r in facts["tables"]["detection"]}
    assert rows == {"sg_opened_to_world": "detected", "flow_rule_revoked": "detected"}
    assert facts["facts"]["unsettled_batches"] == [] and facts["facts"]["errors"] == {}


def test_an_unrepaired_rule_is_reported_once_never_settled_and_a_failing_fault_is_isolated(rules_project, moto_server):
    rules_project.makeconftest(NO_UNDO_AND_A_FAILING_FAULT)
    result = run_rules(rules_project, moto_server)
    # the failing fault fails its own test only; the other is caught; the rule left behind fails the repair test
    result.assert_outcomes(passed=2, failed=2, skipped=16)
    result.stdout.fnmatch_lines(["*flow_rule_revoked could not be injected*made up by the test*"])
    result.stdout.fnmatch_lines(["*findings left after the repair*", "*aws_security_group.* (sg-*"])
    chaos = json.loads((rules_project.path / "reports" / "summary.json").read_text())["groups"]["rules"]["checks"]["chaos"]
    residue = [f for f in chaos["findings"] if f["detail"]["kind"] == "residue"]
    assert len(residue) == 1 and "0.0.0.0/0" in residue[0]["found"], "the open rule is reported, once"
    # no refresh-only apply ran over it (nor over any later batch)
    assert chaos["facts"]["unsettled_batches"] == [1, 2] or chaos["facts"]["unsettled_batches"] == [1]


# Two roles in one subnet; app admits 8080 only from web's security group (a separate rule resource, the usual
# pattern), and [[flows]] declares web -> app 8080; the other rules carry no declared flow.
FLOW_GROUP = {
    "group.toml": '''kind = "application"
region = "ap-southeast-1"
vpc_cidr = "10.96.0.0/16"
description = "two roles and one flow carried by a security-group-sourced rule"

[roles]
web = 1
app = 1

[[flows]]
from = "web@flowy"
to = "app@flowy"
protocol = "tcp"
port = 8080

[chaos]
faults = ["flow_rule_revoked"]
checks = ["drift", "reachability"]
''',
    "main.tf": '''terraform {
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

variable "ami" {
  type    = string
  default = "ami-1e749f67"
}

provider "aws" {
  region = var.region
}

resource "aws_vpc" "this" {
  cidr_block = "10.96.0.0/16"
  tags       = { Name = "flowy-${var.run_id}" }
}

resource "aws_subnet" "a" {
  vpc_id            = aws_vpc.this.id
  cidr_block        = "10.96.1.0/24"
  availability_zone = "${var.region}a"
  tags              = { Name = "flowy-a", Tier = "private" }
}

resource "aws_security_group" "web" {
  name   = "flowy-web"
  vpc_id = aws_vpc.this.id
  tags   = { Purpose = "web" }
}

resource "aws_security_group" "app" {
  name   = "flowy-app"
  vpc_id = aws_vpc.this.id
  tags   = { Purpose = "app" }
}

resource "aws_security_group_rule" "app_from_web" {
  type                     = "ingress"
  security_group_id        = aws_security_group.app.id
  from_port                = 8080
  to_port                  = 8080
  protocol                 = "tcp"
  source_security_group_id = aws_security_group.web.id
}

resource "aws_security_group_rule" "web_from_vpc" {
  type              = "ingress"
  security_group_id = aws_security_group.web.id
  from_port         = 80
  to_port           = 80
  protocol          = "tcp"
  cidr_blocks       = ["10.96.0.0/16"]
}

resource "aws_security_group_rule" "egress" {
  for_each          = { web = aws_security_group.web.id, app = aws_security_group.app.id }
  type              = "egress"
  security_group_id = each.value
  from_port         = 0
  to_port           = 0
  protocol          = "-1"
  cidr_blocks       = ["0.0.0.0/0"]
}

resource "aws_instance" "web" {
  ami                    = var.ami
  instance_type          = "t3.micro"
  subnet_id              = aws_subnet.a.id
  vpc_security_group_ids = [aws_security_group.web.id]
  tags                   = { Role = "web", Name = "flowy-web" }
}

resource "aws_instance" "app" {
  ami                    = var.ami
  instance_type          = "t3.micro"
  subnet_id              = aws_subnet.a.id
  vpc_security_group_ids = [aws_security_group.app.id]
  tags                   = { Role = "app", Name = "flowy-app" }
}
''',
}


def test_a_rule_carrying_a_declared_flow_is_expected_and_seen_by_reachability(project, moto_server):
    """The analyzer says which rule carries the declared flow, the fault takes it (a security-group-sourced
    rule), and reachability must see it, and does."""
    folder = project.path / "groups" / "flowy"
    folder.mkdir()
    for name, text in FLOW_GROUP.items():
        (folder / name).write_text(text)
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "--groups-dir", "groups", "--aws-endpoint",
                                          moto_server.url, "--reports-dir", "reports", "--group", "flowy")
    result.assert_outcomes(passed=3, skipped=17)
    chaos = json.loads((project.path / "reports" / "summary.json").read_text())["groups"]["flowy"]["checks"]["chaos"]
    (row,) = chaos["tables"]["detection"]
    assert row["expected"] == ["drift", "reachability"] and row["detected"] == ["drift", "reachability"]
    assert chaos["verdict"] == "pass" and chaos["findings"] == []


def test_dry_run_lists_the_calls_and_touches_nothing(project, moto_server):
    result = run(project, moto_server, "--chaos-dry-run", "-s")
    result.assert_outcomes(passed=1, skipped=19)
    result.stdout.fnmatch_lines(["*authorize*ingress*0.0.0.0/0*"])
    assert not (project.path / "reports" / "chaos").exists()
