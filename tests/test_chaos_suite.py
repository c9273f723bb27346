"""The chaos suite on a small purpose-made group: a fault is caught and repaired; a check blinded to the fault
makes the suite fail naming the missed fault; dry runs and audits touch nothing."""

from __future__ import annotations

import shutil
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
    with open(pytester.path / "groups" / "tiny" / "group.toml", "a") as f:
        f.write(CHAOS)
    shutil.copy(ROOT / "suites" / "test_chaos.py", pytester.path / "test_chaos.py")
    monkeypatch.setenv("IMMUTABLE_INFRA_HOME", str(tmp_path / "home"))
    return pytester


def run(pytester, server, *args):
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--groups-dir", "groups", "--aws-endpoint", server.url,
                                         "--reports-dir", "reports", "--group", "tiny", *args)


def test_fault_caught_repaired_and_matrix_written(project, moto_server):
    result = run(project, moto_server)
    result.assert_outcomes(passed=2, skipped=17)
    matrix = (project.path / "reports" / "chaos" / "tiny" / "chaos-matrix.md").read_text()
    assert "sg_opened_to_world" in matrix and "100%" in matrix


def test_a_check_blinded_to_a_fault_fails_the_suite_naming_the_fault(project, moto_server):
    project.makeconftest(BLIND_DRIFT)
    result = run(project, moto_server)
    result.assert_outcomes(passed=1, failed=1, skipped=17)
    result.stdout.fnmatch_lines(["*sg_opened_to_world missed by drift*"])


def test_dry_run_lists_the_calls_and_touches_nothing(project, moto_server):
    result = run(project, moto_server, "--chaos-dry-run", "-s")
    result.assert_outcomes(passed=1, skipped=18)
    result.stdout.fnmatch_lines(["*authorize*ingress*0.0.0.0/0*"])
    assert not (project.path / "reports" / "chaos").exists()
