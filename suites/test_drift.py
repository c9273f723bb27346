"""No drift: a refresh-only plan shows nothing changed outside Terraform, and nothing unmanaged lives in the group."""

from immutable_infra.checks.drift import find_drift
from immutable_infra.checks.unmanaged import find_unmanaged
from immutable_infra.findings import format_findings
from immutable_infra.plan import Plan, state_resources


def test_no_drift(applied_group, neighbour_resources, infra_report):
    plan = Plan.from_json(applied_group.terraform.refresh_plan())
    # Routes and rules that other groups of the run manage in this group's tables are theirs, not drift.
    findings, table = find_drift(plan, applied_group.name, state=plan.prior_resources() + neighbour_resources)
    infra_report.findings(applied_group.name, "drift", findings)
    infra_report.table(applied_group.name, "drift", "drift", table)
    assert not findings, f"{applied_group.name} drifted from its state (changed outside Terraform):\n" + format_findings(findings)


def test_no_unmanaged_resources(applied_group, live_group, neighbour_resources, infra_report):
    managed = state_resources(applied_group.state()) + neighbour_resources
    findings = find_unmanaged(applied_group.name, managed, live_group)
    infra_report.findings(applied_group.name, "unmanaged", findings)
    assert not findings, (
        f"{applied_group.name} holds resources Terraform does not manage (import them or remove them):\n"
        + format_findings(findings)
    )
