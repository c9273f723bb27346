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


def _templates(applied_group, catalog):
    return sorted({catalog.template_for_role(r) for r in applied_group.config.roles} - {None})


def read_dev_box(applied_group, image_catalog, infra):
    """With --dev-box: the content check against the live box, read once; without it None (the recorded manifests)."""
    url = infra.settings.dev_box
    if not url:
        return None
    catalog, allow = image_catalog
    with cannot_check(infra, f"parity: the dev box {infra.settings.given('dev_box', url)}"):
        return live_content_check(applied_group.name, _templates(applied_group, catalog), catalog, allow, url)


@pytest.fixture
def live_dev_box(applied_group, lineage, image_catalog, infra):
    # A fixture, so a dev box that cannot be reached makes the test an error, never a finding or a fallback.
    return read_dev_box(applied_group, image_catalog, infra)


@pytest.mark.infra_check("parity")
def test_dev_box_matches_the_ami(applied_group, lineage, image_catalog, live_dev_box, infra_report):
    # `lineage` gates this test too: no instances or no manifests, nothing to compare.
    catalog, allow = image_catalog
    templates = _templates(applied_group, catalog)
    assert templates, f"{applied_group.name}: no Packer template builds any of its roles {sorted(applied_group.config.roles)}"
    if live_dev_box is not None:  # --dev-box: the live box
        findings, rows, source = live_dev_box.findings, live_dev_box.rows, live_dev_box.source
    else:
        findings = [f for t in templates for f in find_content_violations(applied_group.name, t, catalog, allow)]
        rows, source = parity_table(catalog, allow, templates), ", ".join(manifest_sources(catalog, templates))
    infra_report.findings(applied_group.name, "parity", findings)
    infra_report.fact(applied_group.name, "parity", dev_box_source=source)
    infra_report.table(applied_group.name, "parity", "parity", rows)
    assert not findings, (f"{applied_group.name}: the dev box ({source}) and the AMI differ:\n"
                          + format_findings(findings))
