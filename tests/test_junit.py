"""JUnit for Jenkins: with the project's pytest.ini, test case properties are written without pytest's junit_family
warning, and every suite test case has a name of its own per check and group, with its group and checks as properties.

No AWS here: the suite-shaped tests below ask only for ``group_name``, so nothing is applied (the rebuild suite's
real properties are checked end to end by tests/test_jenkinsfile.py and tests/test_rebuild_suite.py).
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
TEST_GROUPS = Path(__file__).parent / "groups"

SUITE = '''
import pytest

@pytest.mark.infra_check("rebuild")
def test_rebuild_within_budget(group_name, record_property):
    record_property("rebuild_seconds", 12.5)
    record_property("budget_seconds", 300)

@pytest.mark.infra_check("drift")
def test_no_drift(group_name):
    assert group_name != "tiny-app", "tiny-app drifted"
'''


@pytest.fixture
def project(pytester):
    shutil.copytree(TEST_GROUPS, pytester.path / "groups")
    shutil.copy(TEST_GROUPS.parent / "roles.toml", pytester.path / "roles.toml")
    pytester.makepyfile(test_suite=SUITE)
    return pytester


def cases(xml_path: Path) -> dict[str, ET.Element]:
    root = ET.parse(xml_path).getroot()
    found = {}
    for case in root.iter("testcase"):
        key = f"{case.get('classname')}::{case.get('name')}"
        assert key not in found, f"two test cases named {key}"
        found[key] = case
    return found


def props(case: ET.Element) -> dict[str, str]:
    return {p.get("name"): p.get("value") for p in case.iter("property")}


def run(project, *args):
    return project.runpytest_subprocess("-p", "no:cacheprovider", "--groups-dir", "groups", "--group", "tiny",
                                        "--group", "tiny-app", "--junitxml=junit.xml", "-W", "error::pytest.PytestWarning",
                                        "test_suite.py", *args)


def test_the_projects_ini_writes_properties_without_the_junit_family_warning(project):
    shutil.copy(ROOT / "pytest.ini", project.path / "pytest.ini")  # what `pytest suites/` runs with
    result = run(project)
    result.assert_outcomes(passed=3, failed=1)  # -W error: a PytestWarning (the junit_family one) would error
    assert "incompatible with junit_family" not in result.stdout.str()
    found = cases(project.path / "junit.xml")
    assert set(found) == {
        "test_suite::test_rebuild_within_budget[tiny]", "test_suite::test_rebuild_within_budget[tiny-app]",
        "test_suite::test_no_drift[tiny]", "test_suite::test_no_drift[tiny-app]",
    }
    assert props(found["test_suite::test_rebuild_within_budget[tiny-app]"]) == {
        "group": "tiny-app", "checks": "rebuild", "rebuild_seconds": "12.5", "budget_seconds": "300"}
    drift = found["test_suite::test_no_drift[tiny-app]"]
    assert props(drift) == {"group": "tiny-app", "checks": "drift"}
    assert drift.find("failure") is not None and "tiny-app drifted" in drift.find("failure").get("message")


def test_without_the_ini_pytest_warns_and_the_plugin_adds_nothing_invalid(project):
    """The warning the ini removes is real: under pytest's default xunit2 record_property warns, and the plugin
    does not add test case properties the xunit2 schema forbids."""
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "--groups-dir", "groups", "--group", "tiny",
                                          "--junitxml=junit.xml", "test_suite.py")
    result.stdout.fnmatch_lines(["*record_property is incompatible with junit_family 'xunit2'*"])
    found = cases(project.path / "junit.xml")
    assert "group" not in props(found["test_suite::test_no_drift[tiny]"])
