"""Parity with dev images: every instance runs the current Packer run's AMI, and the dev box matches the AMI."""

import pytest

from immutable_infra.checks.parity import find_content_violations, parity_table
from immutable_infra.findings import format_findings


@pytest.fixture
def lineage(infra_verify):
    return infra_verify("parity")  # skipped for a group without instances or without image manifests


@pytest.mark.infra_check("parity")
def test_instances_run_the_current_packer_run(applied_group, lineage, infra_report):
    infra_report.findings(applied_group.name, "parity", lineage.findings)
    assert not lineage.findings, (
        f"{applied_group.name}: instances not on the current Packer run:\n" + format_findings(lineage.findings))


@pytest.mark.infra_check("parity")
def test_dev_box_matches_the_ami(applied_group, lineage, image_catalog, infra_report):
    # `lineage` gates this test too: no instances or no manifests, nothing to compare.
    catalog, allow = image_catalog
    templates = sorted({catalog.template_for_role(r) for r in applied_group.config.roles} - {None})
    assert templates, f"{applied_group.name}: no Packer template builds any of its roles {sorted(applied_group.config.roles)}"
    findings = []
    for template in templates:
        findings += find_content_violations(applied_group.name, template, catalog, allow)
    infra_report.findings(applied_group.name, "parity", findings)
    infra_report.table(applied_group.name, "parity", "parity", parity_table(catalog, allow, templates))
    assert not findings, f"{applied_group.name}: the dev box and the AMI differ:\n" + format_findings(findings)
