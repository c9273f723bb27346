"""Tag-to-role correctness: every instance claims one known role, allowed in the group, placed and guarded as the role says."""

from immutable_infra import verify
from immutable_infra.checks.roles import syntax_check_playbooks
from immutable_infra.findings import format_findings


def test_instances_match_the_roles_catalog(applied_group, infra, infra_report):
    result = verify.roles(infra, applied_group.name)
    infra_report.findings(applied_group.name, "roles", result.findings)
    assert not result.findings, f"{applied_group.name}: instances break the roles contract:\n" + format_findings(result.findings)


def test_role_playbooks_pass_ansible_syntax_check(applied_group, infra):
    findings = syntax_check_playbooks(infra.catalog.groups_dir.parent / "playbooks", applied_group.name)
    assert not findings, format_findings(findings)
