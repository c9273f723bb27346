"""Lifecycle: the group applies, is idempotent, tags its instances, and gives its dependents their inputs."""

import pytest

from immutable_infra import verify
from immutable_infra.checks.lifecycle import find_missing_consumed_outputs, find_pending_changes, find_untagged_instances
from immutable_infra.findings import format_findings
from immutable_infra.plugin import cannot_check


@pytest.fixture
def plan_after_apply(applied_group, infra):
    with cannot_check(infra, f"plan after apply of {applied_group.name}"):
        return applied_group.terraform.plan()


@pytest.fixture
def tagged_instances(applied_group, infra, infra_ec2):
    """The group's live instances tagged with this run; skipped for a group with no instance and no [roles]."""
    name = applied_group.name
    with cannot_check(infra, f"instance tags of {name}"):
        claim = None
        try:
            verify.needs(infra, name, "tags")  # instances in the state (or none and none declared)
        except verify.NotApplicable:
            pytest.skip(f"tags: {name} has no aws_instance and declares no [roles]")
        except verify.ClaimNotMet as exc:
            claim = str(exc)
        if claim is not None:
            raise pytest.fail.Exception(claim, pytrace=False) from None
        if infra.deployed:
            # A group audited as deployed carries neither run tag nor (necessarily) a Group tag: its instances are
            # those in its VPCs (from its state) and any tagged with the group elsewhere.
            from immutable_infra.live import live_instances

            return [i for i in live_instances(verify.describe(infra, name)) if i["State"]["Name"] != "terminated"]
        reservations = infra_ec2.describe_instances(
            Filters=[{"Name": "tag:Run", "Values": [applied_group.run.id]}, {"Name": "tag:Group", "Values": [name]}]
        )["Reservations"]
    return [i for r in reservations for i in r["Instances"] if i["State"]["Name"] != "terminated"]


@pytest.mark.infra_check("lifecycle")
def test_group_applied(applied_group):
    assert applied_group.record.status == "applied", applied_group.record.error
    assert applied_group.resources, f"{applied_group.name} applied no resources"


@pytest.mark.infra_check("idempotent")
def test_plan_after_apply_proposes_no_changes(applied_group, plan_after_apply, infra_report):
    findings = find_pending_changes(applied_group.name, plan_after_apply)
    infra_report.findings(applied_group.name, "idempotent", findings)
    assert not findings, f"{applied_group.name} is not idempotent; a plan right after apply proposes:\n" + format_findings(findings)


@pytest.mark.infra_check("tags")
def test_every_instance_has_role_and_group_tags(applied_group, tagged_instances, infra_report, infra):
    where = "in its VPCs" if infra.deployed else f"tagged Run={applied_group.run.id} and Group={applied_group.name}"
    assert tagged_instances, f"{applied_group.name}: no live instance {where}"
    findings = find_untagged_instances(applied_group.name, tagged_instances, require_group_tag=not infra.deployed)
    infra_report.findings(applied_group.name, "tags", findings)
    what = "a Role tag" if infra.deployed else "their Role and Group tags"
    assert not findings, f"instances without {what}:\n" + format_findings(findings)


@pytest.mark.infra_check("lifecycle")
def test_outputs_consumed_by_dependents_exist(applied_group, infra):
    consumers = [infra.catalog.get(n) for n in infra.catalog.names()]
    if not any(i.group == applied_group.name for c in consumers for i in c.inputs):
        pytest.skip(f"no group takes inputs from {applied_group.name}'s outputs")
    findings = find_missing_consumed_outputs(applied_group.name, applied_group.outputs, consumers)
    assert not findings, "outputs that other groups take as inputs are missing:\n" + format_findings(findings)
