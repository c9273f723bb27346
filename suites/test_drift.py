"""No drift: a refresh-only plan shows nothing changed outside Terraform, and nothing unmanaged lives in the group."""

from immutable_infra import verify
from immutable_infra.findings import format_findings


def test_no_drift(applied_group, infra, infra_report):
    result = verify.drift(infra, applied_group.name)
    infra_report.findings(applied_group.name, "drift", result.findings)
    infra_report.table(applied_group.name, "drift", "drift", result.tables["drift"])
    assert not result.findings, (
        f"{applied_group.name} drifted from its state (changed outside Terraform):\n" + format_findings(result.findings)
    )


def test_no_unmanaged_resources(applied_group, infra, infra_report):
    result = verify.unmanaged(infra, applied_group.name)
    infra_report.findings(applied_group.name, "unmanaged", result.findings)
    assert not result.findings, (
        f"{applied_group.name} holds resources Terraform does not manage (import them or remove them):\n"
        + format_findings(result.findings)
    )
