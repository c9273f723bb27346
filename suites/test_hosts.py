"""Hosts: every running instance whose role has a ``[roles.NAME.host]`` contract has on its host what it names.

In the embedded sandbox each instance gets a real host (systemd-nspawn, Debian 12), configured by its role's
playbook; the host is read with testinfra and judged by ``checks.hosts.find_host_findings``. A host that cannot
be reached is an error, never a finding and never a pass.
"""

import pytest

from immutable_infra.checks.hosts import find_host_findings
from immutable_infra.findings import format_findings
from immutable_infra.hosts import read_host_facts
from immutable_infra.plugin import cannot_check


@pytest.fixture(scope="session")
def host_facts(infra, infra_hosts):
    """Instance id -> HostFacts, read once per group on each checked host (an unreachable host: an error)."""
    facts = {}
    for instance_id, contract in sorted(infra_hosts.contracts.items()):
        with cannot_check(infra, f"host {instance_id} (role {infra_hosts.roles[instance_id]}) of {infra_hosts.group}"):
            facts[instance_id] = read_host_facts(infra_hosts.handle(instance_id).url, contract)
    return facts


@pytest.mark.infra_check("hosts")
def test_hosts_match_their_role_contract(applied_group, infra, infra_hosts, host_facts, infra_report):
    findings = []
    for instance_id, facts in sorted(host_facts.items()):
        role = infra_hosts.roles[instance_id]
        with cannot_check(infra, f"host {instance_id} (role {role}) of {applied_group.name}"):
            findings += find_host_findings(applied_group.name, instance_id, role, infra_hosts.contracts[instance_id],
                                           facts, address=infra_hosts.addresses.get(instance_id, ""))
    infra_report.findings(applied_group.name, "hosts", findings)
    group_hosts = infra_hosts.hosts
    infra_report.fact(applied_group.name, "hosts", hosts=len(group_hosts.hosts), checked=sorted(host_facts),
                      boot_seconds=round(max((h.boot_seconds for h in group_hosts.hosts.values()), default=0.0), 1),
                      playbook_seconds={r: round(run.elapsed, 1) for r, run in sorted(group_hosts.playbooks.items())},
                      unconfigured=dict(group_hosts.unconfigured))
    checked = ", ".join(f"{i} ({infra_hosts.roles[i]})" for i in sorted(host_facts))
    assert not findings, (f"{applied_group.name}: hosts break their role's host contract (checked {checked}):\n"
                          + format_findings(findings))
