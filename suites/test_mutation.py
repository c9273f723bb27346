"""No in-place mutation: the merge gate (plan of the working tree against the base) and the live fingerprint."""

import pytest

from immutable_infra.checks.mutation import DEFAULT_IMMUTABLE_TYPES, find_mutations, find_replacements
from immutable_infra.findings import format_findings
from immutable_infra.plan import Plan
from immutable_infra.plugin import cannot_check


def _settings(applied_group):
    cfg = applied_group.config.raw.get("mutation", {})
    types = tuple(DEFAULT_IMMUTABLE_TYPES) + tuple(cfg.get("immutable_types", ()))
    return types, tuple(cfg.get("metadata_attributes", ()))


@pytest.fixture
def merge_gate_plan(applied_group, infra):
    if not infra.settings.base_ref:
        pytest.skip("the merge gate needs --base-ref REF (the revision to compare the working tree with)")
    with cannot_check(infra, f"merge gate of {applied_group.name}"):
        return Plan.from_json(infra.plan_working_tree(applied_group.name))


@pytest.fixture
def fingerprint(infra_verify):
    return infra_verify("mutation")  # skipped for a group without instances


@pytest.mark.infra_destructive
@pytest.mark.infra_check("mutation")
def test_merge_gate_changes_nothing_in_place(applied_group, infra, merge_gate_plan, infra_report):
    plan = merge_gate_plan
    types, metadata = _settings(applied_group)
    findings = find_mutations(plan, applied_group.name, types, metadata)
    replacements = find_replacements(plan)
    infra_report.findings(applied_group.name, "mutation", findings)
    infra_report.table(applied_group.name, "mutation", "replacements", replacements)
    for r in replacements:
        print(f"replacement: {r['address']} ({r['action_reason'] or 'replace'}; {r['replace_paths']})")
    assert not findings, (
        f"{applied_group.name}: the change against {infra.settings.base_ref} would modify immutable resources in place "
        "(rebuild them instead: change what forces replacement, e.g. the AMI):\n" + format_findings(findings)
    )


@pytest.mark.infra_check("mutation")
def test_live_instances_match_their_fingerprint(applied_group, fingerprint, infra_report):
    assert applied_group.record.fingerprints, f"{applied_group.name}: no instance fingerprint was recorded at apply"
    infra_report.findings(applied_group.name, "mutation", fingerprint.findings)
    assert not fingerprint.findings, (
        f"{applied_group.name}: instances changed in place since apply:\n" + format_findings(fingerprint.findings))
