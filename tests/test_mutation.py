"""checks/mutation.py: in-place updates of immutable types, replacements, live fingerprints."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from pathlib import Path

from immutable_infra.checks.mutation import (
    DEFAULT_IMMUTABLE_TYPES,
    UNKNOWN,
    find_fingerprint_changes,
    find_mutations,
    find_replacements,
    fingerprint_instance,
)
from immutable_infra.plan import Plan

DATA = Path(__file__).parent / "data" / "plans"


def load(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


def plan_with_instance_change(before_tags: dict, after_tags: dict, **after_values) -> Plan:
    """The recorded update plan, with tags (and more) changed on the instance."""
    data = load("plan_update_instance_type")
    change = next(rc for rc in data["resource_changes"] if rc["address"] == "aws_instance.proxy")["change"]
    change["after"]["instance_type"] = change["before"]["instance_type"]
    for key in ("tags", "tags_all"):
        change["before"][key] = dict(before_tags)
        change["after"][key] = dict(after_tags)
    change["after"].update(after_values)
    return Plan.from_json(data)


def test_instance_type_update_is_a_mutation():
    findings = find_mutations(Plan.from_json(load("plan_update_instance_type")), "rec-group")
    assert len(findings) == 1
    f = findings[0]
    assert (f.check, f.group, f.address) == ("mutation", "rec-group", "aws_instance.proxy")
    assert f.aws_id.startswith("i-")
    assert "instance_type" in f.found
    assert f.detail["attributes"] == [{"path": "instance_type", "before": "t2.micro", "after": "t3.small"}]


def test_replacement_passes_and_is_reported():
    plan = Plan.from_json(load("plan_replace_ami"))
    assert find_mutations(plan, "rec-group") == []
    [replacement] = find_replacements(plan)
    assert replacement["address"] == "aws_instance.proxy"
    assert replacement["actions"] == ["delete", "create"]
    assert replacement["replace_paths"] == ["ami"]
    assert replacement["action_reason"] == "replace_because_cannot_update"


def test_create_then_delete_replacement_passes():
    data = load("plan_replace_ami")
    rc = next(rc for rc in data["resource_changes"] if rc["address"] == "aws_instance.proxy")
    rc["change"]["actions"] = ["create", "delete"]
    plan = Plan.from_json(data)
    assert find_mutations(plan, "g") == [] and len(find_replacements(plan)) == 1


def test_noop_plan_has_no_mutation():
    assert find_mutations(Plan.from_json(load("plan_noop")), "g") == []


def test_types_outside_the_immutable_set_may_update():
    plan = Plan.from_json(load("plan_update_instance_type"))
    assert find_mutations(plan, "g", immutable_types={"aws_launch_template"}) == []
    assert "aws_instance" in DEFAULT_IMMUTABLE_TYPES


def test_group_can_add_immutable_types():
    data = load("plan_update_instance_type")
    rc = next(rc for rc in data["resource_changes"] if rc["address"] == "aws_security_group.web")
    rc["change"]["actions"] = ["update"]
    rc["change"]["after"] = copy.deepcopy(rc["change"]["before"])
    rc["change"]["after"]["description"] = "changed"
    plan = Plan.from_json(data)
    addresses = {f.address for f in find_mutations(plan, "g", DEFAULT_IMMUTABLE_TYPES | {"aws_security_group"})}
    assert addresses == {"aws_instance.proxy", "aws_security_group.web"}


def test_metadata_tag_update_passes_when_allow_listed():
    plan = plan_with_instance_change({"Role": "reverse-proxy", "Owner": "a"}, {"Role": "reverse-proxy", "Owner": "b"})
    [finding] = find_mutations(plan, "g")
    assert [a["path"] for a in finding.detail["attributes"]] == ["tags.Owner", "tags_all.Owner"]
    assert find_mutations(plan, "g", metadata_attributes=("tags.Owner", "tags_all.Owner")) == []
    assert find_mutations(plan, "g", metadata_attributes=("tags*.Owner",)) == []


def test_role_tag_is_never_metadata():
    plan = plan_with_instance_change({"Role": "reverse-proxy"}, {"Role": "bastion"})
    for allowed in ((), ("tags.Role", "tags_all.Role"), ("tags.*", "tags_all.*")):
        [finding] = find_mutations(plan, "g", metadata_attributes=allowed)
        assert [a["path"] for a in finding.detail["attributes"]] == ["tags.Role", "tags_all.Role"]
        assert {"path": "tags.Role", "before": "reverse-proxy", "after": "bastion"} in finding.detail["attributes"]


def test_metadata_does_not_hide_a_real_change_alongside():
    plan = plan_with_instance_change({"Owner": "a"}, {"Owner": "b"}, instance_type="m5.large")
    [finding] = find_mutations(plan, "g", metadata_attributes=("tags.Owner", "tags_all.Owner"))
    assert [a["path"] for a in finding.detail["attributes"]] == ["instance_type"]


def test_unknown_after_apply_is_a_change():
    data = load("plan_update_instance_type")
    change = next(rc for rc in data["resource_changes"] if rc["address"] == "aws_instance.proxy")["change"]
    change["after"]["instance_type"] = change["before"]["instance_type"]
    del change["after"]["user_data"]
    change["after_unknown"]["user_data"] = True
    [finding] = find_mutations(Plan.from_json(data), "g")
    assert finding.detail["attributes"][0]["path"] == "user_data"
    assert finding.detail["attributes"][0]["after"] == UNKNOWN


# -- live fingerprints ------------------------------------------------------

def recorded_instance(name: str = "describe_after_apply") -> dict:
    [instance] = [i for i in load(name)["instances"] if {"Key": "Group", "Value": "rec-group"} in i.get("Tags", [])]
    return instance


def test_fingerprint_of_a_recorded_instance():
    instance = recorded_instance()
    fp = fingerprint_instance(instance)
    assert fp["image_id"] == instance["ImageId"]
    assert fp["instance_type"] == "t2.micro"
    assert fp["subnet_id"] == instance["SubnetId"]
    assert fp["security_group_ids"] == sorted(g["GroupId"] for g in instance["SecurityGroups"])
    assert fp["tags"]["Role"] == "reverse-proxy"
    assert fp["user_data_sha256"] is None
    assert fp["iam_instance_profile_arn"] is None and fp["key_name"] is None


def test_fingerprint_user_data_and_security_groups_from_primary_interface():
    instance = copy.deepcopy(recorded_instance())
    groups = instance.pop("SecurityGroups")
    b64 = base64.b64encode(b"#!/bin/sh\necho hi\n").decode()
    instance["UserData"] = {"Value": b64}
    fp = fingerprint_instance(instance, ignore_tags=("Name",))
    assert fp["user_data_sha256"] == hashlib.sha256(b64.encode()).hexdigest()
    assert fp["security_group_ids"] == sorted(g["GroupId"] for g in groups)
    assert "Name" not in fp["tags"] and "Role" in fp["tags"]


def test_fingerprint_changes_between_recordings():
    before, after = recorded_instance(), recorded_instance("describe_out_of_band")
    recorded = {"aws_instance.proxy": {"id": before["InstanceId"], **fingerprint_instance(before)}}
    live = {"aws_instance.proxy": fingerprint_instance(after)}
    findings = find_fingerprint_changes("rec-group", recorded, live)
    changes = {f.detail["attribute"]: (f.detail["recorded"], f.detail["live"]) for f in findings}
    assert changes == {"instance_type": ("t2.micro", "m5.large"), "tags.Role": ("reverse-proxy", "bastion")}
    assert all(f.check == "mutation" and f.aws_id == before["InstanceId"] for f in findings)
    assert all(f.address == "aws_instance.proxy" for f in findings)


def test_missing_or_replaced_instance_is_not_a_mutation():
    before = recorded_instance()
    recorded = {"aws_instance.proxy": {"id": before["InstanceId"], **fingerprint_instance(before)}}
    assert find_fingerprint_changes("g", recorded, {}) == []
    other = {"id": "i-0other", **fingerprint_instance(before), "instance_type": "m5.large"}
    assert find_fingerprint_changes("g", recorded, {"aws_instance.proxy": other}) == []
    same = {"id": before["InstanceId"], **fingerprint_instance(before)}
    assert find_fingerprint_changes("g", recorded, {"aws_instance.proxy": same}) == []
