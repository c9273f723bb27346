"""Findings about resources: a role count that is off and a flow that lost an end name the instances behind them.

Chaos attributes a finding to a fault through the resources it names; a
finding about nothing cannot be attributed and would count as a false alarm
(role_tag_flipped did exactly that). Plain data, milliseconds.
"""

from __future__ import annotations

from immutable_infra import chaos, verify
from immutable_infra.checks.reachability import find_flow_violations
from immutable_infra.checks.roles import CHECK
from immutable_infra.findings import Finding
from immutable_infra.flows import Flow

DECLARED = [("module.app.aws_instance.web[0]", "i-web0", "web"), ("module.app.aws_instance.web[1]", "i-web1", "web"),
            ("aws_instance.db", "i-db", "db")]


def instance(iid: str, role: str) -> dict:
    return {"InstanceId": iid, "Tags": [{"Key": "Role", "Value": role}]}


def count(role: str, want: int, have: int) -> Finding:
    return Finding(CHECK, "g", "", "", f"{want} instance(s) of role {role}", f"{have}",
                   {"role": role, "expected": want, "found": have})


def test_a_re_tagged_instance_is_named_on_both_counts():
    live = [instance("i-web0", "web"), instance("i-web1", "db"), instance("i-db", "db")]
    short, extra = verify.name_count_findings([count("web", 2, 1), count("db", 1, 2)], DECLARED, live)
    assert (short.address, short.aws_id) == ("module.app.aws_instance.web[1]", "i-web1")
    assert "now another role: module.app.aws_instance.web[1] (i-web1)" in short.found
    assert (extra.address, extra.aws_id) == ("module.app.aws_instance.web[1]", "i-web1")
    assert "declared as another role" in extra.found
    assert chaos.finding_resources(short) & {"i-web1"}


def test_a_gone_and_a_rogue_instance_are_named():
    live = [instance("i-web0", "web"), instance("i-db", "db"), instance("i-rogue", "db")]
    short, extra = verify.name_count_findings([count("web", 2, 1), count("db", 1, 2)], DECLARED, live)
    assert short.aws_id == "i-web1" and "gone: module.app.aws_instance.web[1] (i-web1)" in short.found
    assert (extra.address, extra.aws_id) == ("", "i-rogue") and "not in the state: i-rogue" in extra.found


def test_other_findings_and_unexplained_counts_stay_as_they_were():
    other = Finding(CHECK, "g", "", "i-web0", "subnet tier app", "tier public", {"role": "web"})
    odd = count("cache", 1, 0)  # nothing the state declares explains it: left without a resource
    assert verify.name_count_findings([other, odd], DECLARED, [instance("i-web0", "web")]) == [other, odd]


def test_a_flow_that_lost_its_destination_names_the_declared_instances():
    flow = Flow("proxy@g", "web@g", "tcp", 8080)
    snap = {"instances": [{"InstanceId": "i-proxy", "PrivateIpAddress": "10.0.1.5", "SubnetId": "subnet-1",
                           "State": {"Name": "running"},
                           "Tags": [{"Key": "Role", "Value": "proxy"}, {"Key": "Group", "Value": "g"}]}]}
    [lost] = find_flow_violations([flow], [], snap, {}, "g")
    assert lost.detail["code"] == "NO_DESTINATION_INSTANCE" and not chaos.finding_resources(lost)
    declared = {("g", "web"): [("module.app.aws_instance.web[0]", "i-web0"), ("module.app.aws_instance.web[1]", "i-web1")]}
    [named] = verify.name_lost_ends([lost], [flow], declared)
    assert (named.address, named.aws_id) == ("module.app.aws_instance.web[0]", "i-web0")
    assert chaos.finding_resources(named) >= {"i-web0", "i-web1"}
    assert verify.name_lost_ends([lost], [flow], {}) == [lost], "nothing declared at that end: left as it was"
