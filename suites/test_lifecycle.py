"""Lifecycle: the group applies, is idempotent, tags its instances, and gives its dependents their inputs."""

from immutable_infra.findings import format_findings
from immutable_infra.checks.lifecycle import find_missing_consumed_outputs, find_pending_changes, find_untagged_instances


def test_group_applied(applied_group):
    assert applied_group.record.status == "applied", applied_group.record.error
    assert applied_group.resources, f"{applied_group.name} applied no resources"


def test_plan_after_apply_proposes_no_changes(applied_group, infra_report):
    plan = applied_group.terraform.plan()
    findings = find_pending_changes(applied_group.name, plan)
    infra_report.findings(applied_group.name, "idempotent", findings)
    assert not findings, f"{applied_group.name} is not idempotent; a plan right after apply proposes:\n" + format_findings(findings)


def test_every_instance_has_role_and_group_tags(applied_group, ec2, infra_report):
    reservations = ec2.describe_instances(
        Filters=[{"Name": "tag:Run", "Values": [applied_group.run.id]}, {"Name": "tag:Group", "Values": [applied_group.name]}]
    )["Reservations"]
    instances = [i for r in reservations for i in r["Instances"] if i["State"]["Name"] != "terminated"]
    expected = sum(applied_group.config.roles.values())
    assert instances or not expected, f"{applied_group.name}: no instance tagged Run={applied_group.run.id}, expected {expected}"
    findings = find_untagged_instances(applied_group.name, instances)
    infra_report.findings(applied_group.name, "tags", findings)
    assert not findings, "instances without their Role and Group tags:\n" + format_findings(findings)


def test_outputs_consumed_by_dependents_exist(applied_group, infra):
    consumers = [infra.catalog.get(n) for n in infra.catalog.names()]
    findings = find_missing_consumed_outputs(applied_group.name, applied_group.outputs, consumers)
    assert not findings, "outputs that other groups take as inputs are missing:\n" + format_findings(findings)
