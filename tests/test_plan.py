"""plan.py: the typed view of plan and state JSON, on real recordings (tests/data/plans)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from immutable_infra.plan import Plan, ResourceDrift, leaf_diff, path_str, state_resources, unknown_paths

DATA = Path(__file__).parent / "data" / "plans"


def load(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


def test_update_plan_has_one_in_place_update():
    plan = Plan.from_json(load("plan_update_instance_type"))
    updates = [c for c in plan.changes if not c.is_noop]
    assert [(c.address, c.actions) for c in updates] == [("aws_instance.proxy", ("update",))]
    change = updates[0]
    assert (change.type, change.name, change.mode) == ("aws_instance", "proxy", "managed")
    assert change.before["instance_type"] == "t2.micro" and change.after["instance_type"] == "t3.small"
    assert change.aws_id.startswith("i-")
    assert not plan.is_noop()
    assert plan.drift == ()


def test_replace_plan_carries_reason_and_paths():
    plan = Plan.from_json(load("plan_replace_ami"))
    change = plan.change("aws_instance.proxy")
    assert change is not None and change.is_replace
    assert change.actions == ("delete", "create")
    assert change.action_reason == "replace_because_cannot_update"
    assert change.replace_paths == (("ami",),)


def test_noop_plan_is_noop():
    plan = Plan.from_json(load("plan_noop"))
    assert plan.changes and plan.is_noop()


def test_read_only_changes_are_noop():
    plan = Plan.from_json({"format_version": "1.2", "resource_changes": [
        {"address": "data.aws_ami.base", "mode": "data", "type": "aws_ami", "name": "base",
         "change": {"actions": ["read"], "before": None, "after": {}, "after_unknown": {}}},
    ]})
    assert plan.is_noop()


def test_refresh_only_plan_reads_drift():
    plan = Plan.from_json(load("plan_refresh_only_out_of_band"))
    assert plan.changes == ()
    assert all(isinstance(d, ResourceDrift) for d in plan.drift)
    by_address = {d.address: d for d in plan.drift}
    assert by_address["aws_route.default"].is_missing
    assert not by_address["aws_instance.proxy"].is_missing
    assert by_address["aws_instance.proxy"].after["instance_type"] == "m5.large"
    # a refresh-only plan carries no change but is not evidence of "no drift"
    assert plan.is_noop()


def test_terminated_instance_is_missing():
    plan = Plan.from_json(load("plan_refresh_only_terminated"))
    drift = plan.drift_of("aws_instance.proxy")
    assert drift is not None and drift.is_missing and drift.actions == ("delete",)
    assert drift.aws_id.startswith("i-")


def test_from_json_rejects_streamed_output():
    with pytest.raises(ValueError, match="show -json"):
        Plan.from_json({"type": "planned_change"})


def test_state_resources_walks_root_and_child_modules():
    state = load("state")
    found = state_resources(state)
    assert {r.address for r in found} >= {"aws_instance.proxy", "aws_vpc.main", "aws_security_group_rule.http"}
    assert all(r.mode == "managed" for r in found)
    assert "data.aws_ami.base" in {r.address for r in state_resources(state, include_data=True)}
    instance = next(r for r in found if r.type == "aws_instance")
    assert instance.values["tags"]["Role"] == "reverse-proxy" and instance.aws_id.startswith("i-")

    nested = {"values": {"root_module": {"resources": [], "child_modules": [{
        "address": "module.net", "resources": [
            {"address": "module.net.aws_vpc.this", "mode": "managed", "type": "aws_vpc", "name": "this",
             "values": {"id": "vpc-1"}}],
        "child_modules": [{"address": "module.net.module.sg", "resources": [
            {"address": "module.net.module.sg.aws_security_group.this", "mode": "managed",
             "type": "aws_security_group", "name": "this", "values": {"id": "sg-1"}}]}],
    }]}}}
    found = state_resources(nested)
    assert [(r.address, r.module_address, r.aws_id) for r in found] == [
        ("module.net.aws_vpc.this", "module.net", "vpc-1"),
        ("module.net.module.sg.aws_security_group.this", "module.net.module.sg", "sg-1"),
    ]
    assert state_resources(None) == [] and state_resources({}) == []


def test_prior_state_of_a_plan():
    plan = Plan.from_json(load("plan_refresh_only_out_of_band"))
    addresses = {r.address for r in plan.prior_resources()}
    assert "aws_security_group_rule.http" in addresses
    assert "aws_route.default" not in addresses  # deleted out of band, gone after refresh


def test_leaf_diff_paths():
    assert leaf_diff({"tags": {"Role": "a", "Owner": "x"}}, {"tags": {"Role": "b", "Owner": "x"}}) == [
        (("tags", "Role"), "a", "b")]
    assert leaf_diff({"ids": ["a", "b"]}, {"ids": ["a", "c"]}) == [(("ids", 1), "b", "c")]
    assert leaf_diff({"rules": [{"p": 1}]}, {"rules": [{"p": 2}]}) == [(("rules",), [{"p": 1}], [{"p": 2}])]
    assert leaf_diff({"tags": None}, {"tags": {}}) == [(("tags",), None, {})]
    assert path_str(("ingress", 0, "protocol")) == "ingress.0.protocol"
    assert unknown_paths({"id": True, "tags": {}, "ebs": [{"id": True}]}) == [("id",), ("ebs", 0, "id")]
