"""Parity with dev images: every instance runs the current Packer run's AMI, and the dev box matches the AMI."""

import pytest

from immutable_infra.checks.parity import find_content_violations, manifest_sources, parity_table
from immutable_infra.findings import format_findings
from immutable_infra.hosts import live_content_check
from immutable_infra.plugin import cannot_check


@pytest.fixture
def lineage(infra_verify):
    return infra_verify("parity")  # skipped for a group without instances or without image manifests


@pytest.mark.infra_check("parity")
def test_instances_run_the_current_packer_run(applied_group, lineage, infra_report):
    infra_report.findings(applied_group.name, "parity", lineage.findings)
    assert not lineage.findings, (
        f"{applied_group.name}: instances not on the current Packer run:\n" + format_findings(lineage.findings))


@pytest.mark.infra_check("parity")
def test_dev_box_matches_the_ami(applied_group, lineage, image_catalog, infra, infra_report):
    # `lineage` gates this test too: no instances or no manifests, nothing to compare.
    catalog, allow = image_catalog
    templates = sorted({catalog.template_for_role(r) for r in applied_group.config.roles} - {None})
    assert templates, f"{applied_group.name}: no Packer template builds any of its roles {sorted(applied_group.config.roles)}"
    url = infra.settings.dev_box
    if url:  # --dev-box: the live box, never the recorded manifest (an unreachable box is an error)
        with cannot_check(infra, f"parity: the dev box {infra.settings.given('dev_box', url)}"):
            live = live_content_check(applied_group.name, templates, catalog, allow, url)
        findings, rows, source = live.findings, live.rows, live.source
    else:
        findings = [f for t in templates for f in find_content_violations(applied_group.name, t, catalog, allow)]
        rows, source = parity_table(catalog, allow, templates), ", ".join(manifest_sources(catalog, templates))
    infra_report.findings(applied_group.name, "parity", findings)
    infra_report.fact(applied_group.name, "parity", dev_box_source=source)
    infra_report.table(applied_group.name, "parity", "parity", rows)
    assert not findings, (f"{applied_group.name}: the dev box ({source}) and the AMI differ:\n"
                          + format_findings(findings))
