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


def drift_with_a_stray_finding(h, name):
    result = real_drift(h, name)
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


def test_dry_run_lists_the_calls_and_touches_nothing(project, moto_server):
    result = run(project, moto_server, "--chaos-dry-run", "-s")
    result.assert_outcomes(passed=1, skipped=19)
    result.stdout.fnmatch_lines(["*authorize*ingress*0.0.0.0/0*"])
    assert not (project.path / "reports" / "chaos").exists()
