"""The pytest surface: bad input gives one clear line, never a traceback; a group applies and tears down."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
TEST_GROUPS = Path(__file__).parent / "groups"

SUITE = '''
def test_applied(applied_group):
    assert applied_group.resources
'''


@pytest.fixture
def project(pytester, tmp_path, monkeypatch):
    """A pytester project with the test groups, its own run home and reports folder."""
    shutil.copytree(TEST_GROUPS, pytester.path / "groups")
    shutil.copy(TEST_GROUPS.parent / "roles.toml", pytester.path / "roles.toml")  # the roles catalog beside the groups
    pytester.makepyfile(test_suite=SUITE)
    monkeypatch.setenv("IMMUTABLE_INFRA_HOME", str(tmp_path / "home"))
    return pytester


def run(pytester, *args):
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--groups-dir", "groups", *args)


def assert_one_clear_error(result, pattern):
    result.stderr.fnmatch_lines([f"ERROR: {pattern}"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_unknown_group(project):
    assert_one_clear_error(run(project, "--group", "nope"), "unknown group 'nope' in *groups; known groups: *slow, tiny, tiny-app")


def test_group_cycle(project):
    (project.path / "groups" / "tiny" / "group.toml").write_text(
        'kind = "ops-center"\nregion = "ap-southeast-1"\nvpc_cidr = "10.90.0.0/16"\n[inputs]\nx = "tiny-app.subnet_id"\n'
    )
    (project.path / "groups" / "tiny" / "x.tf").write_text('variable "x" {\n  type = string\n}\n')  # the input is declared
    assert_one_clear_error(run(project, "--group", "tiny-app"), "group cycle: tiny-app -> tiny -> tiny-app*")


def test_malformed_group_config(project):
    (project.path / "groups" / "tiny" / "group.toml").write_text('kind = "ops-center"\nregion = [\n')
    assert_one_clear_error(run(project, "--group", "tiny"), "group tiny: *group.toml is not valid TOML*fix the syntax")


def test_endpoint_that_does_not_answer(project):
    assert_one_clear_error(
        run(project, "--group", "tiny", "--aws-endpoint", "http://127.0.0.1:9"),
        "the AWS endpoint http://127.0.0.1:9 does not answer*",
    )


def test_keep_needs_an_endpoint_that_outlives_the_session(project):
    assert_one_clear_error(run(project, "--group", "tiny", "--keep"), "--keep needs an endpoint that outlives the session*")


def test_bad_run_id(project):
    assert_one_clear_error(run(project, "--group", "tiny", "--run-id", "Bad_Id"), "--run-id Bad_Id: use 1-16 characters*")


def test_suite_without_group(project):
    assert_one_clear_error(run(project), "test_suite.py::test_applied tests a group: name it, e.g. pytest suites/ --group prd-sg-slave*")


def test_invalid_hcl_is_an_error_naming_file_and_line(project, moto_server):
    (project.path / "groups" / "tiny" / "broken.tf").write_text('resource "aws_vpc" "x" {\n  cidr_block = \n}\n')
    result = run(project, "--group", "tiny", "--aws-endpoint", moto_server.url)
    result.stdout.fnmatch_lines([
        "*cannot apply group tiny (*groups/tiny): terraform init * failed (exit 1)*",
        "*Error: Invalid expression (broken.tf:2)*",
    ])
    assert "Traceback" not in result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_apply_test_and_destroy_with_report(project, moto_server, tmp_path):
    result = run(project, "--group", "tiny-app", "--aws-endpoint", moto_server.url, "--reports-dir", str(tmp_path / "r"))
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*?tiny? applied 3 resources*", "*?tiny-app? destroyed*", "*reports: *summary.json*"])
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert list(summary["groups"]) == ["tiny", "tiny-app"]
    tiny = summary["groups"]["tiny"]
    assert tiny["resource_count"] == 3 and tiny["teardown"] == "destroyed"
    assert set(tiny["timings"]) >= {"init", "apply", "refresh", "destroy"}
    assert set(tiny["resource_seconds"]) == {"aws_vpc.this", "aws_subnet.a", "aws_security_group.ssh"}
    assert (tmp_path / "r" / "runs" / summary["run_id"] / "summary.json").exists()
    assert "| tiny-app | destroyed | 1 |" in (tmp_path / "r" / "summary.md").read_text()
