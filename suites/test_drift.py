"""No drift: a refresh-only plan shows nothing changed outside Terraform, and nothing unmanaged lives in the group."""

import pytest

from immutable_infra import verify
from immutable_infra.findings import format_findings


@pytest.fixture
def drift(infra_verify):
    return infra_verify("drift")


@pytest.fixture
def unmanaged(infra_verify):
    return infra_verify("unmanaged")  # skipped (with the reason) for a group without a VPC of its own


@pytest.mark.infra_check("drift")
def test_no_drift(applied_group, drift, infra_report):
    infra_report.findings(applied_group.name, "drift", drift.findings)
    infra_report.table(applied_group.name, "drift", "drift", drift.tables["drift"])
    assert not drift.findings, (
        f"{applied_group.name} drifted from its state (changed outside Terraform):\n" + format_findings(drift.findings)
    )


@pytest.mark.infra_check("unmanaged")
def test_no_unmanaged_resources(infra, applied_group, unmanaged, infra_report):
    infra_report.findings(applied_group.name, "unmanaged", unmanaged.findings)
    imports, note = verify.write_imports(infra, applied_group.name, unmanaged.findings)  # --audit only
    if imports is not None:
        infra_report.fact(applied_group.name, "unmanaged", imports=str(imports))
    assert not unmanaged.findings, (
        f"{applied_group.name} holds resources Terraform does not manage (import them or remove them):\n"
        + format_findings(unmanaged.findings) + (f"\n{note}" if note else "")
    )
