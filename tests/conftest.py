"""Fixtures for the project's own tests."""

from __future__ import annotations

import os
import shutil
import tempfile

# moto's request recorder (used to prove audits never write) reads this when moto is first imported.
os.environ.setdefault("MOTO_RECORDER_FILEPATH", os.path.join(tempfile.mkdtemp(prefix="moto-rec-"), "recording.jsonl"))

from pathlib import Path

import pytest

from immutable_infra.sandbox import MotoServer

TESTS = Path(__file__).parent
ROOT = TESTS.parent
TEST_GROUPS = TESTS / "groups"

pytest_plugins = ["pytester"]


@pytest.fixture(scope="session")
def moto_server():
    """A moto server on 127.0.0.1 started for these tests, as `immutable-infra sandbox` would."""
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture
def groups_copy(tmp_path: Path) -> Path:
    """A writable copy of the test groups (tests/groups), for tests that break one."""
    target = tmp_path / "groups"
    shutil.copytree(TEST_GROUPS, target)
    shutil.copy(TESTS / "roles.toml", tmp_path / "roles.toml")  # the roles catalog beside the groups
    return target
