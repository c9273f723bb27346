"""report.py: a check's verdict comes from its tests' outcomes, never from whether findings were recorded;
summary.md lists what was skipped and why, and its tables survive pipes and newlines in findings."""

from __future__ import annotations

import json

from immutable_infra.findings import Finding
from immutable_infra.history import read_history
from immutable_infra.report import Reporter, render_markdown, verdict_of

G = "tiny"


def finding(check, found="ingress: tcp 22 | 0.0.0.0/0\nand more"):
    return Finding(check, G, "aws_security_group.ssh", "sg-1", "as declared", found)


def reporter(tmp_path):
    r = Reporter(tmp_path / "reports")
    # a chaos test that fails without recording a finding (a miss), its check named by its marker
    r.current_test = "suites/test_chaos.py::test_fault[sg_opened_to_world-tiny]"
    r.fact(G, "chaos", detection_ratio=0.0)
    r.outcome(G, "failed", nodeid=r.current_test, reason="sg_opened_to_world missed by drift", checks=["chaos"])
    # a drift test that records a finding and passes (an accepted finding): the verdict is the outcome's
    r.current_test = "suites/test_drift.py::test_no_drift[tiny]"
    r.findings(G, "drift", [finding("drift")])
    r.outcome(G, "passed", nodeid=r.current_test)
    # a test skipped before recording anything, and a check whose only test errored at setup
    r.current_test = "suites/test_peering.py::test_peerings_active[tiny]"
    r.outcome(G, "skipped", nodeid=r.current_test, reason="tiny has no peering")
    r.current_test = "suites/test_roles.py::test_roles[tiny]"
    r.outcome(G, "error", nodeid=r.current_test, reason="cannot apply group tiny: boom", checks=["roles"])
    r.current_test = "suites/test_image_parity.py::test_parity[tiny]"
    r.outcome(G, "skipped", nodeid=r.current_test, reason="no images", checks=["parity"])
    r.current_test = None
    return r


def test_verdict_of_takes_the_worst_outcome():
    assert verdict_of(["passed", "skipped"]) == "pass"
    assert verdict_of(["passed", "failed"]) == "fail"
    assert verdict_of(["failed", "error"]) == "error"
    assert verdict_of(["skipped"]) == "skip"
    assert verdict_of([]) == "not-run"


def test_verdicts_in_summary_json_come_from_outcomes(tmp_path):
    r = reporter(tmp_path)
    summary = r.summary(None, 1, [])
    checks = summary["groups"][G]["checks"]
    assert checks["chaos"]["verdict"] == "fail" and checks["chaos"]["findings"] == []
    assert checks["drift"]["verdict"] == "pass" and len(checks["drift"]["findings"]) == 1
    assert checks["roles"]["verdict"] == "error"
    assert checks["parity"]["verdict"] == "skip"
    assert checks["parity"]["tests"][0]["reason"] == "no images"
    rows = {t["nodeid"].split("::")[0]: t for t in summary["groups"][G]["test_outcomes"]}
    assert rows["suites/test_peering.py"] == {
        "nodeid": "suites/test_peering.py::test_peerings_active[tiny]", "outcome": "skipped",
        "reason": "tiny has no peering", "checks": []}
    assert rows["suites/test_drift.py"]["checks"] == ["drift"]


def test_a_teardown_error_after_a_pass_counts_once_as_error(tmp_path):
    r = Reporter(tmp_path)
    r.outcome(G, "passed", nodeid="t::a", checks=["drift"])
    r.outcome(G, "error", nodeid="t::a", reason="teardown failed", checks=["drift"])
    assert r.tests[G] == {"passed": 0, "failed": 0, "error": 1, "skipped": 0}
    assert r.summary(None, 1, [])["groups"][G]["checks"]["drift"]["verdict"] == "error"


def test_summary_md_lists_verdicts_and_what_was_not_checked(tmp_path):
    md = render_markdown(reporter(tmp_path).summary(None, 1, []))
    assert "| chaos | **FAIL** | 0 | 1 | 0 | 0 | 0 |" in md
    assert "| roles | **ERROR** | 0 | 0 | 1 | 0 | 0 |" in md
    assert "| parity | skip | 0 | 0 | 0 | 1 | 0 |" in md
    assert "- `suites/test_peering.py::test_peerings_active[tiny]`: tiny has no peering" in md
    assert "- `suites/test_image_parity.py::test_parity[tiny]` (parity): no images" in md


def test_markdown_table_cells_escape_pipes_and_newlines(tmp_path):
    md = render_markdown(reporter(tmp_path).summary(None, 1, []))
    row = next(line for line in md.splitlines() if line.startswith("| drift | `aws_security_group.ssh`"))
    assert row.endswith("| ingress: tcp 22 \\| 0.0.0.0/0<br>and more |")
    # every row of the findings table has the header's number of cells
    assert row.replace("\\|", "").count("|") == "| check | resource | AWS id | expected | found |".count("|")


def test_history_and_summary_json_agree(tmp_path):
    r = reporter(tmp_path)

    class Run:  # the little of ephemeral.Run that summary reads
        id, keep, order, groups = "r1", False, [], {}

    summary = r.summary(Run(), 1, [])
    r.write(summary, audit_trail=True)
    written = json.loads((tmp_path / "reports" / "summary.json").read_text())
    (entry,) = read_history(tmp_path / "reports" / "history.jsonl")
    assert entry["groups"][G]["verdicts"] == {c: v["verdict"] for c, v in written["groups"][G]["checks"].items()}
    assert entry["groups"][G]["verdicts"]["chaos"] == "fail"


SUITE = '''
import pytest
from immutable_infra.findings import Finding


def test_records_a_finding_and_passes(infra, group_name, infra_report):
    infra.run  # the session has a run: the reports get written
    infra_report.findings(group_name, "drift", [Finding("drift", group_name, "aws_vpc.this", "vpc-1", "a", "b | c")])


@pytest.mark.infra_check("roles")
def test_fails_without_a_finding(group_name):
    assert False, "roles missed it"


def test_skipped_with_a_reason(group_name):
    pytest.skip(f"{group_name} has no peering")
'''


def test_the_plugin_feeds_outcomes_node_ids_reasons_and_checks(pytester, moto_server, tmp_path, monkeypatch):
    """Through pytest itself: the marker names a check, recording names one, a skip keeps its reason."""
    import shutil
    from pathlib import Path

    tests = Path(__file__).parent
    shutil.copytree(tests / "groups", pytester.path / "groups")
    if (tests / "roles.toml").exists():
        shutil.copy(tests / "roles.toml", pytester.path / "roles.toml")
    monkeypatch.setenv("IMMUTABLE_INFRA_HOME", str(tmp_path / "home"))
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--groups-dir", "groups", "--aws-endpoint",
                                           moto_server.url, "--reports-dir", "reports", "--group", "tiny")
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    summary = json.loads((pytester.path / "reports" / "summary.json").read_text())["groups"]["tiny"]
    assert {c: v["verdict"] for c, v in summary["checks"].items()} == {"drift": "pass", "roles": "fail"}
    rows = {t["nodeid"].split("::")[1]: t for t in summary["test_outcomes"]}
    assert rows["test_fails_without_a_finding[tiny]"]["checks"] == ["roles"]
    assert "roles missed it" in rows["test_fails_without_a_finding[tiny]"]["reason"]
    assert rows["test_skipped_with_a_reason[tiny]"]["reason"] == "tiny has no peering"
    assert rows["test_records_a_finding_and_passes[tiny]"]["checks"] == ["drift"]
    md = (pytester.path / "reports" / "summary.md").read_text()
    assert "| roles | **FAIL** |" in md and "tiny has no peering" in md and "b \\| c" in md
