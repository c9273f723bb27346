"""Peering reachability: declared flows reachable, isolation holds, peerings active, peered CIDRs disjoint."""

import pytest

from immutable_infra import verify
from immutable_infra.checks.reachability import analyze_all, find_flow_violations, find_peering_problems, reachability_matrix
from immutable_infra.findings import format_findings
from immutable_infra.live import declared_flows


@pytest.fixture
def run_snapshot(infra, applied_group):
    return verify.run_snapshot(infra)


def _flows(infra, applied_group, kind):
    flows, skipped = declared_flows(infra.catalog, applied_group.name, verify.applied_groups(infra), kind)
    if not flows:
        pytest.skip(f"no {kind} entry touching {applied_group.name} has both ends applied ({len(skipped)} need other groups)")
    return flows


def test_declared_flows_are_reachable(applied_group, infra, run_snapshot, infra_report):
    flows = _flows(infra, applied_group, "flows")
    addresses = run_snapshot["addresses"]
    infra_report.table(applied_group.name, "reachability", "matrix", reachability_matrix(analyze_all(flows, run_snapshot, addresses)))
    findings = find_flow_violations(flows, [], run_snapshot, addresses, applied_group.name)
    infra_report.findings(applied_group.name, "reachability", findings)
    assert not findings, f"{applied_group.name}: declared flows are blocked:\n" + format_findings(findings)


def test_isolated_pairs_cannot_reach(applied_group, infra, run_snapshot, infra_report):
    isolation = _flows(infra, applied_group, "isolation")
    findings = find_flow_violations([], isolation, run_snapshot, run_snapshot["addresses"], applied_group.name)
    infra_report.findings(applied_group.name, "reachability", findings)
    assert not findings, f"{applied_group.name}: pairs that must be isolated can reach each other:\n" + format_findings(findings)


def test_peerings_active_and_cidrs_disjoint(applied_group, run_snapshot, infra_report):
    findings = find_peering_problems(run_snapshot, run_snapshot["addresses"], applied_group.name)
    infra_report.findings(applied_group.name, "reachability", findings)
    assert not findings, f"{applied_group.name}: peering problems:\n" + format_findings(findings)
