"""Rebuild: destroy and recreate the group, time it, and prove the rebuilt group equals the original."""

import pytest

from immutable_infra.findings import format_findings
from immutable_infra.history import check_regression, explain_regression, read_history
from immutable_infra.rebuild import RebuildTiming, check_budget, compare_rebuild, slowest

pytestmark = [pytest.mark.infra_destructive, pytest.mark.infra_check("rebuild")]


def test_rebuilt_group_equals_the_original(rebuilt_group, infra_report):
    r = rebuilt_group
    assert not r.before_findings, (
        f"{r.name}: not compared: the group was not clean before the rebuild (each finding below would show again "
        "as a difference; fix or repair it first):\n" + format_findings(r.before_findings))
    findings = compare_rebuild(
        r.name, r.before_state, r.after_state, r.before_outputs, r.after_outputs, r.before_verdicts, r.after_verdicts
    )
    infra_report.findings(r.name, "rebuild", findings)
    assert not findings, f"{r.name}: the rebuilt group differs from the original:\n" + format_findings(findings)


def test_rebuild_within_budget(rebuilt_group, infra_report, record_property):
    r = rebuilt_group
    timing = RebuildTiming(r.timing["destroy_seconds"], r.timing["apply_seconds"], r.timing["total_seconds"],
                           r.timing["resource_seconds"])
    top = slowest(timing.resource_seconds, 1)
    record_property("rebuild_seconds", timing.total_seconds)
    record_property("budget_seconds", r.budget)
    record_property("slowest_resource", f"{top[0][0]} {top[0][1]:.0f} s" if top else "")
    if r.budget is None:
        pytest.skip(f"{r.name} has no rebuild_budget_seconds in its group.toml")
    findings = check_budget(r.name, timing, r.budget)
    infra_report.findings(r.name, "rebuild", findings)
    assert not findings, f"{r.name}: rebuild over budget:\n" + format_findings(findings)


def test_rebuild_time_does_not_regress(rebuilt_group, infra, infra_report):
    pct = infra.settings.rebuild_regression
    if pct is None:
        pytest.skip("the regression gate needs --rebuild-regression PCT")
    history = read_history(infra.settings.reports_dir / "history.jsonl")
    measured = rebuilt_group.timing["total_seconds"]
    findings = check_regression(rebuilt_group.name, measured, history, pct)
    infra_report.findings(rebuilt_group.name, "rebuild", findings)
    print(explain_regression(rebuilt_group.name, measured, history, pct))
    assert not findings, format_findings(findings)
