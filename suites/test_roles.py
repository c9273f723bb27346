"""Tag-to-role correctness: every instance claims one known role, allowed in the group, placed and guarded as the role says."""

import pytest

from immutable_infra.checks.roles import syntax_check_playbooks
from immutable_infra.findings import format_findings


@pytest.fixture
def roles(infra_verify):
    # Skipped for a group with no [roles] and no instance; an error when [roles] declares instances it lacks.
    return infra_verify("roles")


@pytest.mark.infra_check("roles")
def test_instances_match_the_roles_catalog(applied_group, roles, infra_report):
    infra_report.findings(applied_group.name, "roles", roles.findings)
    assert not roles.findings, f"{applied_group.name}: instances break the roles contract:\n" + format_findings(roles.findings)


@pytest.mark.infra_check("roles")
def test_role_playbooks_pass_ansible_syntax_check(applied_group, infra):
    findings = syntax_check_playbooks(infra.catalog.groups_dir.parent / "playbooks", applied_group.name)
    assert not findings, format_findings(findings)
