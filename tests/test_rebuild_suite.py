"""The rebuild suite on a small purpose-made group: it rebuilds, compares, keeps a budget and a regression gate,
and appends history and draws the trend."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
TEST_GROUPS = Path(__file__).parent / "groups"


@pytest.fixture
def project(pytester, tmp_path, monkeypatch):
    shutil.copytree(TEST_GROUPS, pytester.path / "groups")
    shutil.copy(TEST_GROUPS.parent / "roles.toml", pytester.path / "roles.toml")  # the roles catalog beside the groups
    shutil.copy(ROOT / "suites" / "test_rebuild.py", pytester.path / "test_rebuild.py")
    monkeypatch.setenv("IMMUTABLE_INFRA_HOME", str(tmp_path / "home"))
    return pytester


def run(pytester, server, *args):
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--groups-dir", "groups", "--aws-endpoint", server.url,
                                         "--reports-dir", "reports", *args)


def test_rebuild_passes_and_writes_history_summary_and_trend(project, moto_server):
    (project.path / "groups" / "tiny" / "group.toml").write_text(
        'kind = "ops-center"\nregion = "ap-southeast-1"\nvpc_cidr = "10.90.0.0/16"\nrebuild_budget_seconds = 600\n')
    for attempt in (1, 2):
        result = run(project, moto_server, "--group", "tiny", "--junitxml=reports/junit.xml")
        result.assert_outcomes(passed=2, skipped=1)
        history = (project.path / "reports" / "history.jsonl").read_text().splitlines()
        assert len(history) == attempt
    entry = json.loads(history[-1])
    assert entry["groups"]["tiny"]["rebuild_seconds"] > 0
    assert entry["groups"]["tiny"]["verdicts"]["rebuild"] == "pass"
    assert (project.path / "reports" / "rebuild-trend.png").stat().st_size > 10_000
    summary = json.loads((project.path / "reports" / "summary.json").read_text())
    facts = summary["groups"]["tiny"]["checks"]["rebuild"]["facts"]
    assert facts["total_seconds"] == pytest.approx(facts["destroy_seconds"] + facts["apply_seconds"], abs=0.05)
    assert "Rebuild: destroy" in (project.path / "reports" / "summary.md").read_text()
    junit = (project.path / "reports" / "junit.xml").read_text()
    assert 'name="rebuild_seconds"' in junit and 'name="budget_seconds" value="600.0"' in junit
    assert 'name="slowest_resource" value="aws_' in junit
    result.stdout.fnmatch_lines(["*group*rebuild s*findings*", "tiny *destroyed*"])
    # the terminal summary says what was checked, and what was not and why
    result.stdout.fnmatch_lines(["tiny checks: rebuild pass",
                                 "  not checked: test_rebuild_time_does_not_regress*: *--rebuild-regression*"])


def test_budget_below_the_measured_time_fails_naming_the_slowest_resources(project, moto_server):
    (project.path / "groups" / "tiny" / "group.toml").write_text(
        'kind = "ops-center"\nregion = "ap-southeast-1"\nvpc_cidr = "10.90.0.0/16"\nrebuild_budget_seconds = 0.01\n')
    result = run(project, moto_server, "--group", "tiny")
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*rebuild over budget*", "*rebuild * s > budget 0 s; slowest: aws_*"])


def test_regression_gate_fails_on_a_history_far_below(project, moto_server):
    reports = project.path / "reports"
    reports.mkdir()
    lines = [json.dumps({"time": f"2026-11-0{d}T00:00:00+00:00", "run_id": f"old{d}", "commit": None,
                         "groups": {"tiny": {"rebuild_seconds": 0.05, "drift_count": 0, "verdicts": {}, "budget_seconds": None}}})
             for d in range(1, 6)]
    (reports / "history.jsonl").write_text("\n".join(lines) + "\n")
    result = run(project, moto_server, "--group", "tiny", "--rebuild-regression", "20")
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*median*"])


def test_a_rebuilt_group_that_differs_fails_naming_address_and_attribute(project, moto_server):
    project.makeconftest('''
import pytest

@pytest.fixture(scope="session", autouse=True)
def change_the_group_before_rebuild(request):
    """The second apply differs: the label variable (the Label tag) changes once the original is applied."""
    request.getfixturevalue("applied_group")
    tf = request.config.rootpath / "groups" / "tiny-app" / "main.tf"
    tf.write_text(tf.read_text().replace('default = "app"', 'default = "changed"'))
''')
    result = run(project, moto_server, "--group", "tiny-app", "-k", "equals_the_original")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*the rebuilt group differs from the original*", "*aws_subnet.app*Label*"])


def test_a_group_not_clean_before_the_rebuild_is_not_compared(project, moto_server):
    """The comparison's "before" must be proven clean: drift left by an earlier test is named once, never shown as
    a rebuilt-vs-original difference."""
    project.makeconftest('''
import pytest
from immutable_infra.plan import state_resources

@pytest.fixture(scope="session", autouse=True)
def a_tag_changed_by_hand_before_rebuild(request):
    group = request.getfixturevalue("applied_group")
    [subnet] = [r.aws_id for r in state_resources(group.state()) if r.type == "aws_subnet"]
    group.client("ec2").create_tags(Resources=[subnet], Tags=[{"Key": "Tier", "Value": "changed-by-hand"}])
''')
    result = run(project, moto_server, "--group", "tiny", "-k", "equals_the_original")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*not compared: the group was not clean before the rebuild*", "*aws_subnet.a*"])
    assert "differs from the original" not in result.stdout.str()
