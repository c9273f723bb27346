"""The state file read in show -json's shape (statefile.py): the checks' state reads start no provider.

Recorded on tests/groups/realworld (a module, ``count``, ``for_each``, a data
source, outputs) by tests/data/statefile/make_recording.py: the file must give
exactly what ``terraform show -json`` printed of it, resource by resource, in
the same order. Anything the reader is not sure of makes it decline, so the
engine falls back to ``show -json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from immutable_infra.plan import state_resources
from immutable_infra.statefile import local_outputs, local_state_path, read_local_state, to_show_json

DATA = Path(__file__).parent / "data" / "statefile"


def _raw() -> dict:
    return json.loads((DATA / "terraform.tfstate").read_text())


def _without_sensitive_marks(module: dict) -> dict:
    return {
        **{k: v for k, v in module.items() if k not in ("resources", "child_modules")},
        "resources": [{k: v for k, v in r.items() if k != "sensitive_values"} for r in module.get("resources", [])],
        "child_modules": [_without_sensitive_marks(c) for c in module.get("child_modules", [])],
    }


def test_recorded_state_file_reads_as_show_json_printed_it():
    shown = json.loads((DATA / "show.json").read_text())
    mine = to_show_json(_raw())
    assert mine is not None
    assert {k: v for k, v in mine.items() if k != "values"} == {k: v for k, v in shown.items() if k != "values"}
    assert mine["values"]["outputs"] == shown["values"]["outputs"]
    # sensitive_values (which attributes are sensitive) is the one part the file cannot give; no check reads it
    assert _without_sensitive_marks(mine["values"]["root_module"]) == _without_sensitive_marks(
        shown["values"]["root_module"])
    assert [r.address for r in state_resources(mine, include_data=True)] == [
        r.address for r in state_resources(shown, include_data=True)]
    assert any(r.module_address == "module.vpc" for r in state_resources(mine))


def _resource(module: str, mode: str, rtype: str, name: str, *instances: dict) -> dict:
    return {"module": module, "mode": mode, "type": rtype, "name": name,
            "provider": 'provider["registry.terraform.io/hashicorp/aws"].peer', "instances": list(instances)}


def test_nested_module_instances_for_each_keys_deposed_and_tainted():
    raw = {"version": 4, "terraform_version": "1.15.5", "outputs": {"ids": {"value": ["a"], "type": ["list", "string"]}},
           "resources": [
               _resource('module.net["eu.west"].module.sub[1]', "managed", "aws_subnet", "this",
                         {"index_key": "a.b", "attributes": {"id": "subnet-1"}, "status": "tainted"},
                         {"index_key": "a.b", "attributes": {"id": "subnet-0"}, "deposed": "00aa"}),
               _resource("", "data", "aws_region", "current", {"attributes": {"name": "x"}}),
           ]}
    shown = to_show_json(raw)
    root = shown["values"]["root_module"]
    assert root["resources"][0]["address"] == "data.aws_region.current"
    assert root["resources"][0]["provider_name"] == "registry.terraform.io/hashicorp/aws"
    outer = root["child_modules"][0]
    assert outer["address"] == 'module.net["eu.west"]' and "resources" not in outer
    inner = outer["child_modules"][0]
    assert inner["address"] == 'module.net["eu.west"].module.sub[1]'
    assert [(r["address"], r.get("tainted"), r.get("deposed_key")) for r in inner["resources"]] == [
        ('module.net["eu.west"].module.sub[1].aws_subnet.this["a.b"]', True, None),
        ('module.net["eu.west"].module.sub[1].aws_subnet.this["a.b"]', None, "00aa"),
    ]
    assert shown["values"]["outputs"]["ids"] == {"sensitive": False, "value": ["a"], "type": ["list", "string"]}


@pytest.mark.parametrize("raw", [
    {"version": 3, "modules": []},
    {"version": 4, "resources": [_resource("", "managed", "aws_vpc", "v", {"attributes_flat": {"id": "vpc-1"}})]},
    {"version": 4, "resources": [_resource("module.a.b", "managed", "aws_vpc", "v", {"attributes": {}})]},
], ids=["format 3", "flat attributes", "unparsed module path"])
def test_anything_uncertain_declines(raw):
    assert to_show_json(raw) is None


def test_empty_state_is_what_show_prints_before_an_apply(tmp_path):
    assert read_local_state(tmp_path, {"TF_DATA_DIR": str(tmp_path / ".terraform")}) == {"format_version": "1.0"}
    (tmp_path / "terraform.tfstate").write_text(json.dumps({"version": 4, "resources": [], "outputs": {}}))
    assert read_local_state(tmp_path, {"TF_DATA_DIR": str(tmp_path / ".terraform")}) == {"format_version": "1.0"}


def _backend(tmp_path: Path, kind: str, **config: str) -> dict:
    data = tmp_path / ".terraform"
    data.mkdir(exist_ok=True)
    (data / "terraform.tfstate").write_text(json.dumps({"version": 3, "backend": {"type": kind, "config": config}}))
    return {"TF_DATA_DIR": str(data)}


def test_only_the_default_local_backend_is_read_from_the_file(tmp_path):
    (tmp_path / "terraform.tfstate").write_text((DATA / "terraform.tfstate").read_text())
    env = {"TF_DATA_DIR": str(tmp_path / ".terraform")}
    assert local_state_path(tmp_path, env) == tmp_path / "terraform.tfstate"
    assert local_outputs(tmp_path, env) == {
        k: v["value"] for k, v in json.loads((DATA / "show.json").read_text())["values"]["outputs"].items()}
    assert local_state_path(tmp_path, {**env, "TF_WORKSPACE": "blue"}) is None
    assert local_state_path(tmp_path, _backend(tmp_path, "s3", bucket="b", key="k")) is None
    assert local_state_path(tmp_path, _backend(tmp_path, "local", path="elsewhere.tfstate")) is None
    assert local_state_path(tmp_path, _backend(tmp_path, "local")) == tmp_path / "terraform.tfstate"
    (tmp_path / ".terraform" / "environment").write_text("green")
    assert read_local_state(tmp_path, _backend(tmp_path, "local")) is None


def test_a_half_written_file_declines(tmp_path):
    (tmp_path / "terraform.tfstate").write_text((DATA / "terraform.tfstate").read_text()[:500])
    assert read_local_state(tmp_path, {"TF_DATA_DIR": str(tmp_path / ".terraform")}) is None
