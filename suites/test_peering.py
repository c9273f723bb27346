"""Peering reachability: declared flows reachable, isolation holds, peerings active, peered CIDRs disjoint."""

import pytest

from immutable_infra import verify
from immutable_infra.checks.reachability import analyze_all, find_flow_violations, find_peering_problems, reachability_matrix
from immutable_infra.findings import format_findings
from immutable_infra.live import declared_flows
from immutable_infra.plugin import cannot_check
from immutable_infra.reading import Reading

pytestmark = pytest.mark.infra_check("reachability")


@pytest.fixture
def run_snapshot(infra, applied_group):
    """One describe snapshot of every applied group; skipped for a group without a VPC of its own."""
    name = applied_group.name
    with cannot_check(infra, f"reachability of {name}"):
        reading, reason = Reading(infra), None  # one pass: the group's state is read once for both
        try:
            vpcs = verify.needs_vpc(infra, name, "reachability", reading)
        except verify.NotApplicable as exc:
            reason = str(exc)
        if reason is not None:
            applied = verify.applied_groups(infra)
            declared = [f for kind in ("flows", "isolation") for f in declared_flows(infra.catalog, name, applied, kind)[0]]
            if declared:  # the group claims flows it has no network for
                raise pytest.fail.Exception(
                    f"{reason}, yet {len(declared)} [[flows]]/[[isolation]] entries touching {name} have both ends "
                    "applied; give the group its VPC or fix those entries", pytrace=False) from None
            pytest.skip(reason)
        snapshot = verify.run_snapshot(infra, reading)
    snapshot["group_vpcs"] = vpcs
    return snapshot


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


def test_peerings_active_and_cidrs_disjoint(applied_group, infra, run_snapshot, infra_report):
    name = applied_group.name
    peerings = verify.group_peerings(run_snapshot, run_snapshot["group_vpcs"])
    if not peerings:
        applied_peers = sorted(set(applied_group.config.peers) & verify.applied_groups(infra))
        assert not applied_peers, (
            f"{name}: its group.toml names peers {', '.join(applied_peers)}, applied in this run, "
            f"but no peering connection touches its VPCs {', '.join(run_snapshot['group_vpcs'])}")
        pytest.skip(f"no VPC peering connection touches {name}'s VPCs (peers applied in this run: none)")
    findings = find_peering_problems(run_snapshot, run_snapshot["addresses"], name)
    infra_report.findings(name, "reachability", findings)
    assert not findings, f"{name}: peering problems ({len(peerings)} checked):\n" + format_findings(findings)
