"""Tag-to-role correctness: every instance claims one known role, allowed in the group, placed and guarded as the role says."""

from immutable_infra.checks.roles import find_role_violations, syntax_check_playbooks
from immutable_infra.findings import format_findings
from immutable_infra.live import live_instances


def test_instances_match_the_roles_catalog(applied_group, live_group, roles_catalog, infra, infra_report):
    findings = find_role_violations(
        applied_group.name,
        applied_group.config.kind,
        applied_group.config.roles,
        live_instances(live_group),
        live_group.get("subnets", []),
        live_group.get("security_groups", []),
        roles_catalog,
        infra.catalog.groups_dir.parent / "playbooks",
    )
    infra_report.findings(applied_group.name, "roles", findings)
    assert not findings, f"{applied_group.name}: instances break the roles contract:\n" + format_findings(findings)


def test_role_playbooks_pass_ansible_syntax_check(applied_group, infra):
    findings = syntax_check_playbooks(infra.catalog.groups_dir.parent / "playbooks", applied_group.name)
    assert not findings, format_findings(findings)
