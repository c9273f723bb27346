"""Merge gate (--base-ref): the base revision is applied, the working tree planned against it.

An in-place change of an immutable resource fails naming the address and the attribute;
a change that replaces it (a new AMI) passes and reports the replacement with its reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
TEST_GROUPS = Path(__file__).parent / "groups"


@pytest.fixture
def repo(tmp_path):
    """A git repository holding the slow test group, committed as the base."""
    repo = tmp_path / "repo"
    shutil.copytree(TEST_GROUPS / "slow", repo / "groups" / "slow")
    shutil.copy(TEST_GROUPS.parent / "roles.toml", repo / "roles.toml")  # the roles catalog beside the groups
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "base"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, env=env)
    return repo


def gate(repo, server, tmp_path):
    env = {**os.environ, "IMMUTABLE_INFRA_HOME": str(tmp_path / "home")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "suites/test_mutation.py", "-k", "merge_gate", "-p", "no:cacheprovider", "-s",
         "--groups-dir", str(repo / "groups"), "--group", "slow", "--base-ref", "HEAD",
         "--aws-endpoint", server.url, "--reports-dir", str(tmp_path / "reports")],
        env=env, capture_output=True, text=True, cwd=ROOT,
    )


def edit(repo, old, new):
    tf = repo / "groups" / "slow" / "main.tf"
    text = tf.read_text()
    assert old in text
    tf.write_text(text.replace(old, new))


def test_instance_type_changed_in_place_fails_naming_address_and_attribute(repo, moto_server, tmp_path):
    edit(repo, 'instance_type = "t3.micro"', 'instance_type = "t3.large"')
    result = gate(repo, moto_server, tmp_path)
    assert result.returncode == 1, result.stdout[-3000:]
    assert "would modify immutable resources in place" in result.stdout
    assert "aws_instance.worker[0]" in result.stdout and "instance_type" in result.stdout
    assert "[slow] destroyed" in result.stdout


def test_new_ami_replaces_and_passes(repo, moto_server, tmp_path):
    edit(repo, 'default     = "ami-1e749f67"', 'default     = "ami-03cf127a"')
    result = gate(repo, moto_server, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "replacement: aws_instance.worker[0] (replace_because_cannot_update" in result.stdout


def test_unknown_base_ref_is_one_clear_error(repo, moto_server, tmp_path):
    env = {**os.environ, "IMMUTABLE_INFRA_HOME": str(tmp_path / "home")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "suites/test_mutation.py", "-k", "merge_gate", "-p", "no:cacheprovider",
         "--groups-dir", str(repo / "groups"), "--group", "slow", "--base-ref", "no-such-branch", "--aws-endpoint", moto_server.url],
        env=env, capture_output=True, text=True, cwd=ROOT,
    )
    assert "--base-ref no-such-branch: no such revision" in result.stdout
    assert "Traceback" not in result.stdout
