"""Peering reachability: declared flows reachable, isolation holds, peerings active, peered CIDRs disjoint."""

import pytest

from immutable_infra.checks.reachability import analyze_all, find_flow_violations, find_peering_problems, reachability_matrix
from immutable_infra.findings import format_findings
from immutable_infra.live import declared_flows


def _flows(infra, applied_group, kind):
    """Flows of this kind that touch the group, between groups applied in this run."""
    applied = {n for n, r in infra.run.groups.items() if r.status == "applied"}
    return declared_flows(infra.catalog, applied_group.name, applied, kind)


def test_declared_flows_are_reachable(applied_group, infra, run_snapshot, infra_report):
    flows, skipped = _flows(infra, applied_group, "flows")
    if not flows:
        pytest.skip(f"no declared flow of {applied_group.name} has both ends applied (not applied: {len(skipped)} flows)")
    addresses = run_snapshot["addresses"]
    infra_report.table(applied_group.name, "reachability", "matrix", reachability_matrix(analyze_all(flows, run_snapshot, addresses)))
    findings = find_flow_violations(flows, [], run_snapshot, addresses, applied_group.name)
    infra_report.findings(applied_group.name, "reachability", findings)
    assert not findings, f"{applied_group.name}: declared flows are blocked:\n" + format_findings(findings)


def test_isolated_pairs_cannot_reach(applied_group, infra, run_snapshot, infra_report):
    isolation, skipped = _flows(infra, applied_group, "isolation")
    if not isolation:
        pytest.skip(f"no isolation pair of {applied_group.name} has both ends applied")
    findings = find_flow_violations([], isolation, run_snapshot, run_snapshot["addresses"], applied_group.name)
    infra_report.findings(applied_group.name, "reachability", findings)
    assert not findings, f"{applied_group.name}: pairs that must be isolated can reach each other:\n" + format_findings(findings)


def test_peerings_active_and_cidrs_disjoint(applied_group, run_snapshot, infra_report):
    findings = find_peering_problems(run_snapshot, run_snapshot["addresses"], applied_group.name)
    infra_report.findings(applied_group.name, "reachability", findings)
    assert not findings, f"{applied_group.name}: peering problems:\n" + format_findings(findings)
