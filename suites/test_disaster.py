"""Disaster-tolerance drill: destroy the group, prove its partner still passes its checks, rebuild, time the recovery.

A group takes part when its group.toml names its partner::

    [disaster]
    partner = "prd-sg-slave"
"""

import time

import pytest

from immutable_infra import verify
from immutable_infra.findings import format_findings
from immutable_infra.plugin import cannot_check

pytestmark = [pytest.mark.infra_destructive, pytest.mark.infra_check("disaster")]

PARTNER_CHECKS = ["drift", "unmanaged", "roles", "reachability"]


def test_partner_serves_while_the_group_is_gone_and_the_group_recovers(applied_group, infra, infra_report, record_property):
    name = applied_group.name
    partner = applied_group.config.raw.get("disaster", {}).get("partner")
    if not partner:
        pytest.skip(f"{name} names no [disaster] partner in its group.toml")
    if partner not in verify.applied_groups(infra):
        pytest.skip(f"{name}'s partner {partner} is not applied in this run: add --group {partner}")
    if partner in infra.dependents(name):
        pytest.fail(f"{partner} takes inputs from {name}, so it cannot serve without it; "
                    "make the drill's group the one that depends on its partner", pytrace=False)
    partner_checks, not_here = verify.applicable(infra, partner, PARTNER_CHECKS)
    own_checks, own_not_here = verify.applicable(infra, name, PARTNER_CHECKS + ["mutation", "parity"])
    for reason in list(not_here.values()) + list(own_not_here.values()):
        print(f"not checked in the drill: {reason}")
    started = time.monotonic()
    gone = [name] + infra.dependents(name)
    with cannot_check(infra, f"disaster drill of {name}"):
        infra.destroy(list(reversed(gone)))
        while_gone = verify.verify_group(infra, partner, partner_checks)
        infra.recreate(gone)
        after = verify.verify_group(infra, name, own_checks)
    partner_findings = [f for r in while_gone.values() for f in r.findings]
    recovery = time.monotonic() - started
    findings = [f for r in after.values() for f in r.findings]
    record_property("recovery_seconds", round(recovery, 1))
    infra_report.fact(name, "disaster", partner=partner, groups=gone, recovery_seconds=round(recovery, 1),
                      partner_findings_while_gone=len(partner_findings))
    infra_report.findings(name, "disaster", partner_findings + findings)
    print(f"{name}: recovered in {recovery:.0f} s (destroy start until its checks pass again); {partner} kept serving")
    assert not partner_findings, f"{partner} failed its checks while {name} was gone:\n" + format_findings(partner_findings)
    assert not findings, f"{name} did not come back healthy after the drill:\n" + format_findings(findings)
