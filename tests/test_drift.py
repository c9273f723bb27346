"""checks/drift.py: findings and the drift table from recorded refresh-only plans."""

from __future__ import annotations

import json
from pathlib import Path

from immutable_infra.checks.drift import drift_table, find_drift
from immutable_infra.plan import Plan

DATA = Path(__file__).parent / "data" / "plans"


def plan(name: str) -> Plan:
    return Plan.from_json(json.loads((DATA / f"{name}.json").read_text()))


def test_clean_apply_has_noise_only():
    findings, table = find_drift(plan("plan_clean_refresh_only"), "rec-group")
    assert findings == []
    assert table and all(row["classification"].startswith("noise:") for row in table)
    assert all(row["reason"] for row in table)
    assert {row["address"] for row in table} == {
        "aws_route_table.public", "aws_security_group.web",
        "aws_security_group_rule.egress", "aws_security_group_rule.http",
    }


def test_out_of_band_changes_are_drift():
    findings, table = find_drift(plan("plan_refresh_only_out_of_band"), "rec-group")
    got = {(f.address, f.detail["attribute"], f.detail["classification"]) for f in findings}
    assert got == {
        ("aws_instance.proxy", "instance_type", "drift"),
        ("aws_instance.proxy", "tags.Role", "drift"),
        ("aws_instance.proxy", "tags_all.Role", "drift"),
        ("aws_route.default", "", "missing"),
        ("aws_route_table.public", "route", "drift"),
        ("aws_security_group.web", "ingress", "drift"),
    }
    assert all(f.check == "drift" and f.group == "rec-group" for f in findings)
    itype = next(f for f in findings if f.detail["attribute"] == "instance_type")
    assert (itype.detail["state"], itype.detail["live"]) == ("t2.micro", "m5.large")
    assert itype.aws_id.startswith("i-") and "m5.large" in itype.found and "t2.micro" in itype.expected
    ssh = next(f for f in findings if f.address == "aws_security_group.web")
    assert any(e["from_port"] == 22 and e["cidr_blocks"] == ["0.0.0.0/0"] for e in ssh.detail["live"])
    assert len(table) == len(findings)


def test_terminated_instance_is_missing():
    findings, table = find_drift(plan("plan_refresh_only_terminated"), "rec-group")
    missing = {f.address: f for f in findings if f.detail["classification"] == "missing"}
    assert set(missing) == {"aws_instance.proxy", "aws_route.default"}
    instance = missing["aws_instance.proxy"]
    assert instance.aws_id.startswith("i-") and "missing" in instance.found
    assert instance.detail["live"] is None
    # the route added out of band to the managed table shows as drift of its list
    table_rows = [r for r in table if r["address"] == "aws_route_table.public"]
    assert table_rows[0]["classification"] == "drift"
    assert table_rows[0]["live"][0]["cidr_block"] == "192.168.0.0/16"


def test_table_rows_have_the_report_columns():
    table = drift_table(plan("plan_refresh_only_out_of_band"))
    assert all(set(row) == {"address", "aws_id", "attribute", "state", "live", "classification", "reason"}
               for row in table)
    assert all(row["aws_id"] for row in table)


def test_no_rules_means_everything_is_drift():
    findings, table = find_drift(plan("plan_clean_refresh_only"), "g", rules=())
    assert len(findings) == len(table) > 0


def test_state_is_what_the_list_rules_look_into():
    p = plan("plan_clean_refresh_only")
    without_rules = [r for r in p.prior_resources() if r.type != "aws_security_group_rule"]
    findings, _ = find_drift(p, "g", state=without_rules)
    assert {(f.address, f.detail["attribute"]) for f in findings} == {
        ("aws_security_group.web", "ingress"), ("aws_security_group.web", "egress")}


def test_plan_without_drift():
    findings, table = find_drift(plan("plan_noop"), "g")
    assert findings == [] and table == []


def test_default_network_acl_retagging_stays_a_finding():
    """A default network ACL whose tags change under Terraform (the community VPC module's upstream
    re-tagging) is real drift: no noise rule and no sandbox fix may hide it, unlike the DHCP options
    tags moto dropped (fixed in the sandbox, compat.dhcp_options_tags_at_creation)."""
    tags = {"Name": "realworld-default", "Project": "realworld"}
    entry = {
        "address": "module.vpc.aws_default_network_acl.this[0]", "module_address": "module.vpc",
        "mode": "managed", "type": "aws_default_network_acl", "name": "this", "index": 0,
        "change": {"actions": ["update"],
                   "before": {"id": "acl-0123456789abcdef0", "tags": tags, "tags_all": tags},
                   "after": {"id": "acl-0123456789abcdef0", "tags": {"Name": "realworld-default"},
                             "tags_all": {"Name": "realworld-default"}}},
    }
    drifted = Plan.from_json({"format_version": "1.2", "resource_drift": [entry]})
    findings, _ = find_drift(drifted, "realworld")
    assert [(f.address, f.detail["attribute"], f.detail["classification"]) for f in findings] == [
        ("module.vpc.aws_default_network_acl.this[0]", "tags.Project", "drift"),
        ("module.vpc.aws_default_network_acl.this[0]", "tags_all.Project", "drift"),
    ]


def test_refresh_only_apply_hides_a_hand_made_rule_from_drift():
    """Recorded on tests/groups/realworld: drift sees a rule added by hand to a group whose rules are
    aws_security_group_rule resources only until a refresh-only apply reads it into the state. The
    unmanaged check covers what comes after (tests/test_unmanaged.py, same recording)."""
    here = Path(__file__).parent / "data" / "realworld"
    before = Plan.from_json(json.loads((here / "plan_refresh_only_rule_added.json").read_text()))
    findings, _ = find_drift(before, "realworld")
    assert [(f.address, f.detail["attribute"]) for f in findings] == [('aws_security_group.role["web"]', "ingress")]
    assert "0.0.0.0/0" in str(findings[0].detail["live"]) and "22" in str(findings[0].detail["live"])
    after = Plan.from_json(json.loads((here / "plan_refresh_only_refreshed.json").read_text()))
    assert find_drift(after, "realworld") == ([], [])
