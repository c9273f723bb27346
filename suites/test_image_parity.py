"""Parity with dev images: every instance runs the current Packer run's AMI, and the dev box matches the AMI."""

import pytest

from immutable_infra.checks.parity import (
    find_content_violations,
    instances_on_current_run,
    manifest_sources,
    parity_table,
)
from immutable_infra.findings import format_findings
from immutable_infra.hosts import ImageHost, live_content_check
from immutable_infra.plugin import cannot_check
from immutable_infra.transports import dev_box_url


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


def group_images(infra, group):
    """The group's running instances and the describe_images of their AMIs (what the lineage check reads)."""
    from immutable_infra import group_hosts, verify

    instances, _ = group_hosts.group_instances(infra, group)
    ids = sorted({i["ImageId"] for i in instances if i.get("ImageId")})
    images = verify.client(infra, group, "ec2").describe_images(ImageIds=ids)["Images"] if ids else []
    return instances, images


def find_image_hosts(request, applied_group, catalog, infra):
    """(template, AMI build) -> ImageHost: one running instance of each build of the current run that the session
    reaches as a host (``infra_hosts``), and why there is none when the mapping is empty.

    ``infra_hosts`` skipping (``--no-hosts``, not the embedded sandbox, no runtime, no contract) is "no image
    host", never a skip of the parity test; a host that cannot be built is an error (its ``cannot_check``).
    """
    try:
        hosts = request.getfixturevalue("infra_hosts")
    except pytest.skip.Exception as exc:
        return {}, f"no image host ({exc.msg})"
    with cannot_check(infra, f"parity: the instances of {applied_group.name}"):
        instances, images = group_images(infra, applied_group.name)
    found = {}
    for key, instance_ids in instances_on_current_run(instances, images, catalog).items():
        for instance_id in instance_ids:
            try:
                found[key] = ImageHost(instance_id, hosts.handle(instance_id).url)
                break
            except KeyError:  # a running instance without a host
                continue
    if found:
        return found, ""
    return {}, f"no image host (no running instance of {applied_group.name} on a current-run AMI has a host)"


def read_dev_box(applied_group, image_catalog, infra, request=None):
    """With --dev-box: the content check against the live box, read once; without it None (the recorded manifests).

    The AMI side is read live too from a running instance of each build when the session has one as a host
    (only then: a live dev box is never compared with a live image when no --dev-box was given), else it is the
    build's recorded manifests; the result says which.
    """
    url = infra.settings.dev_box
    if not url:
        return None
    catalog, allow = image_catalog
    hosts, why_not = find_image_hosts(request, applied_group, catalog, infra) if request is not None else (
        {}, "no image host (none asked for)")
    with cannot_check(infra, f"parity: the dev box {infra.settings.given('dev_box', url)}"):
        return live_content_check(applied_group.name, _templates(applied_group, catalog), catalog, allow,
                                  dev_box_url(infra), image_hosts=hosts, no_image_host=why_not)


@pytest.fixture
def live_dev_box(applied_group, lineage, image_catalog, infra, request):
    # A fixture, so a dev box that cannot be reached makes the test an error, never a finding or a fallback.
    return read_dev_box(applied_group, image_catalog, infra, request)


@pytest.mark.infra_check("parity")
def test_dev_box_matches_the_ami(applied_group, lineage, image_catalog, live_dev_box, infra_report):
    # `lineage` gates this test too: no instances or no manifests, nothing to compare.
    catalog, allow = image_catalog
    templates = _templates(applied_group, catalog)
    assert templates, f"{applied_group.name}: no Packer template builds any of its roles {sorted(applied_group.config.roles)}"
    if live_dev_box is not None:  # --dev-box: the live box (and the live image where an instance is reachable)
        findings, rows = live_dev_box.findings, live_dev_box.rows
        source, ami_source, image_hosts = live_dev_box.source, live_dev_box.ami_source, live_dev_box.image_hosts
    else:
        findings = [f for t in templates for f in find_content_violations(applied_group.name, t, catalog, allow)]
        rows, source = parity_table(catalog, allow, templates), ", ".join(manifest_sources(catalog, templates))
        ami_source = ", ".join(dict.fromkeys(r["ami_source"] for r in rows))
        image_hosts = "the recorded manifests on both sides (no --dev-box)"
    infra_report.findings(applied_group.name, "parity", findings)
    infra_report.fact(applied_group.name, "parity", dev_box_source=source, ami_source=ami_source,
                      image_hosts=image_hosts)
    infra_report.table(applied_group.name, "parity", "parity", rows)
    assert not findings, (f"{applied_group.name}: the dev box ({source}) and the AMI ({ami_source}) differ:\n"
                          + format_findings(findings))
