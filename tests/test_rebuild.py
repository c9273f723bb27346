"""Tests of rebuild.py: normalization of generated values, rebuild parity, and the time budget.

tests/data/rebuild/original.json is tests/data/plans/state.json (a real
``show -json`` state); rebuilt.json is the same group with every generated
value new (ids, ARNs, private IP and DNS, rule ids), as a rebuild gives it;
rebuilt_changed.json is a rebuild gone wrong: the proxy comes back as
``admin`` on a ``t3.small``, the HTTP rule is missing, an extra subnet exists.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from immutable_infra.findings import Finding
from immutable_infra.plan import state_resources
from immutable_infra.rebuild import (
    ACCOUNT,
    ARN,
    DNS,
    ID,
    IP,
    TIME,
    RebuildTiming,
    check_budget,
    compare_outputs,
    compare_rebuild,
    compare_verdicts,
    describe_shape,
    normalize_generated_name,
    normalize_state,
    normalize_value,
    slowest,
    value_shape,
)

DATA = Path(__file__).parent / "data" / "rebuild"


def load(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def original() -> dict:
    return load("original")


@pytest.fixture(scope="module")
def rebuilt() -> dict:
    return load("rebuilt")


def resource(state: dict, address: str) -> dict:
    return next(r for r in state["values"]["root_module"]["resources"] if r["address"] == address)


# ---------------------------------------------------------------- normalize


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("vpc-4fb5ac313766b1b39", ID),
        ("subnet-3d7f90464c484bda0", ID),
        ("sg-7b527789e11542604", ID),
        ("i-fe13ff274ecbe83b5", ID),
        ("i-0abc1234", ID),
        ("rtb-96d6b02e236846765", ID),
        ("rtbassoc-96fe9df040c44a0bb", ID),
        ("igw-c92c5ac54e5a6f386", ID),
        ("nat-0123456789abcdef0", ID),
        ("eipalloc-0123456789abcdef0", ID),
        ("eni-978dc5eebc47e6084", ID),
        ("pcx-0123456789abcdef0", ID),
        ("acl-4547884bfff9cd5c1", ID),
        ("vol-33fcf84a0c9b09e6c", ID),
        ("Z2FDTNDATAQYW2", ID),
        ("/hostedzone/Z08123451ABCDEFGHIJK", ID),
        ("arn:aws:ec2:ap-southeast-1:123456789012:vpc/vpc-4fb5ac313766b1b39", ARN),
        ("arn:aws-cn:s3:::prd-cn-assets", ARN),
        ("10.20.1.4", IP),
        ("54.169.1.20", IP),
        ("2406:da18::1", IP),
        ("2026-11-28T05:31:33.000Z", TIME),
        ("2026-05-01T10:00:00+00:00", TIME),
        ("prd-sg-web-1234567890.ap-southeast-1.elb.amazonaws.com", DNS),
        ("internal-ops-cn-elb-42.cn-north-1.elb.amazonaws.com.cn", DNS),
        ("ip-10-20-1-4.ap-southeast-1.compute.internal", DNS),
        # names Terraform generates: name_prefix + unique suffix, timestamps inside a name
        ("realworld-web-20261203140402957600000002", "realworld-web-<generated>"),
        ("terraform-20261203140529150300000001", "terraform-<generated>"),
        ("backup-2026-12-03T14:05:12Z", "backup-<time>"),
        ("nightly-20261203140512-dump", "nightly-<time>-dump"),
        # inputs and declared values stay
        ("ami-506c14c99c730376a", "ami-506c14c99c730376a"),
        ("10.20.1.0/24", "10.20.1.0/24"),
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("rec-group-proxy", "rec-group-proxy"),
        ("reverse-proxy", "reverse-proxy"),
        ("web.prd-sg.internal", "web.prd-sg.internal"),
        ("ap-southeast-1c", "ap-southeast-1c"),
        ("default", "default"),
        ("", ""),
        (None, None),
        (8, 8),
        (True, True),
    ],
)
def test_normalize_value(value, expected):
    assert normalize_value(value) == expected


def test_generated_attributes_are_replaced_by_name_but_empty_stays_empty():
    values = {
        "id": "sgrule-65966933",
        "owner_id": "123456789012",
        "private_ip": "10.0.0.5",
        "public_ip": "",
        "public_dns": None,
        "name_servers": ["ns-1.awsdns-01.org", "ns-2.awsdns-02.net"],
        "zone_id": "Z1ABCDEF",
        "unique_id": "AIDAEXAMPLE",
        "creation_date": "yesterday",
        "association_id": "eipassoc-1",
    }
    assert normalize_value(values) == {
        "id": ID,
        "owner_id": ACCOUNT,
        "private_ip": IP,
        "public_ip": "",
        "public_dns": None,
        "name_servers": [DNS, DNS],
        "zone_id": ID,
        "unique_id": ID,
        "creation_date": TIME,
        "association_id": ID,
    }


def test_normalize_keeps_the_shape_through_nested_lists_and_maps():
    value = {
        "vpc_security_group_ids": ["sg-7b527789e11542604", "sg-53db87f29188886cb"],
        "ingress": [{"cidr_blocks": ["10.0.0.0/8"], "security_groups": ["sg-53db87f29188886cb"], "from_port": 22}],
        "tags": {"Role": "vpn", "Run": "r1a2b3"},
        "root_block_device": [{"volume_id": "vol-33fcf84a0c9b09e6c", "tags": {}}],
    }
    assert normalize_value(value) == {
        "vpc_security_group_ids": [ID, ID],
        "ingress": [{"cidr_blocks": ["10.0.0.0/8"], "security_groups": [ID], "from_port": 22}],
        "tags": {"Role": "vpn", "Run": "r1a2b3"},
        "root_block_device": [{"volume_id": ID, "tags": {}}],
    }


def test_normalize_state_has_managed_resources_only(original):
    normalized = normalize_state(original)
    assert "data.aws_ami.base" not in normalized
    assert set(normalized) == {
        "aws_instance.proxy", "aws_internet_gateway.gw", "aws_route.default", "aws_route_table.public",
        "aws_route_table_association.public", "aws_security_group.web", "aws_security_group_rule.egress",
        "aws_security_group_rule.http", "aws_subnet.public", "aws_vpc.main",
    }
    proxy = normalized["aws_instance.proxy"]
    assert proxy["id"] == ID and proxy["arn"] == ARN and proxy["private_ip"] == IP and proxy["private_dns"] == DNS
    assert proxy["subnet_id"] == ID and proxy["vpc_security_group_ids"] == [ID]
    assert proxy["ami"] == "ami-506c14c99c730376a"
    assert proxy["tags"]["Role"] == "reverse-proxy"
    assert normalized["aws_vpc.main"]["owner_id"] == ACCOUNT
    assert normalized["aws_vpc.main"]["cidr_block"] == "10.20.0.0/16"


def test_normalize_state_of_nothing():
    assert normalize_state(None) == {}
    assert normalize_state({}) == {}


def test_normalize_state_does_not_change_its_input(original):
    before = copy.deepcopy(original)
    normalize_state(original)
    assert original == before


# ---------------------------------------------------------------- compare


def test_the_recorded_rebuild_differs_in_generated_values_only(original, rebuilt):
    assert resource(original, "aws_instance.proxy")["values"]["id"] != resource(rebuilt, "aws_instance.proxy")["values"]["id"]
    assert normalize_state(original) == normalize_state(rebuilt)
    assert compare_rebuild("rec-group", original, rebuilt) == []


def test_a_rebuild_gone_wrong_is_reported_per_address_and_attribute(original):
    findings = compare_rebuild("rec-group", original, load("rebuilt_changed"))
    assert all(isinstance(f, Finding) and f.check == "rebuild" and f.group == "rec-group" for f in findings)
    by_what = {(f.address, f.expected, f.found) for f in findings}
    assert ("aws_instance.proxy", "tags.Role = reverse-proxy", "tags.Role = admin") in by_what
    assert ("aws_instance.proxy", "instance_type = t2.micro", "instance_type = t3.small") in by_what
    missing = [f for f in findings if f.address == "aws_security_group_rule.http"]
    extra = [f for f in findings if f.address == "aws_subnet.admin"]
    assert len(missing) == 1 and "missing" in missing[0].found
    assert len(extra) == 1 and "extra" in extra[0].found
    # tags_all repeats tags: reported once, under tags
    assert not any(f.expected.startswith("tags_all.") for f in findings)
    assert len(findings) == 4
    assert "[rebuild] rec-group aws_instance.proxy: expected tags.Role = reverse-proxy, found tags.Role = admin" in {
        str(f) for f in findings
    }


def test_set_order_does_not_count_but_content_does(original, rebuilt):
    reordered = copy.deepcopy(rebuilt)
    rule = resource(reordered, "aws_security_group_rule.http")["values"]
    rule["cidr_blocks"] = ["10.0.0.0/8", "0.0.0.0/0"]
    base = copy.deepcopy(original)
    resource(base, "aws_security_group_rule.http")["values"]["cidr_blocks"] = ["0.0.0.0/0", "10.0.0.0/8"]
    assert compare_rebuild("g", base, reordered) == []
    rule["cidr_blocks"] = ["10.0.0.0/8", "192.168.0.0/16"]
    findings = compare_rebuild("g", base, reordered)
    assert [(f.address, f.expected, f.found) for f in findings] == [
        ("aws_security_group_rule.http", 'cidr_blocks = ["0.0.0.0/0", "10.0.0.0/8"]',
         'cidr_blocks = ["10.0.0.0/8", "192.168.0.0/16"]'),
    ]


def test_a_tag_only_in_tags_all_is_reported(original, rebuilt):
    changed = copy.deepcopy(rebuilt)
    resource(changed, "aws_vpc.main")["values"]["tags_all"]["Owner"] = "ops"
    findings = compare_rebuild("g", original, changed)
    assert [(f.address, f.expected, f.found) for f in findings] == [
        ("aws_vpc.main", "tags_all.Owner = absent", "tags_all.Owner = ops")
    ]


def test_a_public_ip_that_appears_is_a_difference(original, rebuilt):
    changed = copy.deepcopy(rebuilt)
    resource(changed, "aws_instance.proxy")["values"]["public_ip"] = "54.169.1.20"
    findings = compare_rebuild("g", original, changed)
    assert [(f.expected, f.found) for f in findings] == [("public_ip = ", f"public_ip = {IP}")]


def test_a_reference_to_a_resource_stays_a_reference(original, rebuilt):
    changed = copy.deepcopy(rebuilt)
    resource(changed, "aws_route.default")["values"]["gateway_id"] = ""
    findings = compare_rebuild("g", original, changed)
    assert [(f.address, f.expected, f.found) for f in findings] == [
        ("aws_route.default", f"gateway_id = {ID}", "gateway_id = ")
    ]


def test_rebuild_of_an_empty_state_misses_every_resource(original):
    findings = compare_rebuild("g", original, {"values": {"root_module": {}}})
    assert len(findings) == len(normalize_state(original))
    assert all("missing" in f.found for f in findings)


# ---------------------------------------------------------------- outputs and verdicts


def test_value_shape_and_its_description():
    assert value_shape({"ids": ["a", "b"], "n": 3, "ok": True, "x": None}) == {
        "ids": ["string", "string"], "n": "number", "ok": "bool", "x": "null"}
    assert describe_shape(["string", "string", "string"]) == "list of 3 string"
    assert describe_shape([]) == "empty list"
    assert describe_shape(["string", "number"]) == "list [string, number]"
    assert describe_shape({"b": "string", "a": "number"}) == "map {a: number, b: string}"


def test_outputs_keep_their_shape_while_their_values_change():
    before = {"vpc_id": "vpc-1", "subnet_ids": ["subnet-1", "subnet-2"], "peer": {"cidr": "10.0.0.0/16"}}
    after = {"vpc_id": "vpc-2", "subnet_ids": ["subnet-3", "subnet-4"], "peer": {"cidr": "10.0.0.0/16"}}
    assert compare_outputs("g", before, after) == []


def test_outputs_of_another_shape_are_findings():
    before = {"vpc_id": "vpc-1", "subnet_ids": ["subnet-1", "subnet-2"], "gone": 1}
    after = {"vpc_id": ["vpc-2"], "subnet_ids": ["subnet-3"], "new": 1}
    findings = compare_outputs("g", before, after)
    assert [(f.address, f.expected, f.found) for f in findings] == [
        ("output.gone", "output present", "output missing after the rebuild"),
        ("output.new", "no such output", "an extra output after the rebuild"),
        ("output.subnet_ids", "list of 2 string", "list of 1 string"),
        ("output.vpc_id", "string", "list of 1 string"),
    ]


def test_outputs_in_output_json_form_are_unwrapped():
    before = {"vpc_id": {"value": "vpc-1", "type": "string", "sensitive": False}}
    after = {"vpc_id": {"value": "vpc-2", "type": "string", "sensitive": False}}
    assert compare_outputs("g", before, after) == []
    assert compare_rebuild("g", None, None, before, {"vpc_id": {"value": 2, "type": "number"}})[0].found == "number"


def test_flow_verdicts_must_not_change():
    before = [{"flow": "ops-sg/vpn -> prd-sg-slave/reverse-proxy tcp/22", "verdict": "reachable"},
              {"flow": "world -> prd-sg-slave/microservice tcp/8080", "verdict": "blocked"}]
    after = [{"flow": "ops-sg/vpn -> prd-sg-slave/reverse-proxy tcp/22", "verdict": "blocked"},
             {"flow": "world -> prd-sg-slave/microservice tcp/8080", "verdict": "blocked"}]
    assert compare_verdicts("prd-sg-slave", before, before) == []
    findings = compare_verdicts("prd-sg-slave", before, after)
    assert [(f.address, f.expected, f.found) for f in findings] == [
        ("flow ops-sg/vpn -> prd-sg-slave/reverse-proxy tcp/22", "verdict reachable", "verdict blocked")
    ]
    assert compare_verdicts("g", before, after[:1])[-1].found == "verdict not analyzed"


def test_compare_rebuild_checks_outputs_and_verdicts_only_when_both_are_given(original, rebuilt):
    verdicts = [{"flow": "a -> b", "verdict": "reachable"}]
    assert compare_rebuild("g", original, rebuilt, {"x": "1"}, None, verdicts, None) == []
    findings = compare_rebuild("g", original, rebuilt, {"x": "1"}, {}, verdicts, [])
    assert [f.address for f in findings] == ["output.x", "flow a -> b"]


# ---------------------------------------------------------------- budget


SECONDS = {
    "aws_route53_zone.internal": 30.4,
    "aws_route53_record.web": 31.2,
    "aws_instance.proxy": 11.0,
    "aws_instance.ms": 11.0,
    "aws_vpc.main": 1.2,
    "aws_subnet.public": 0.8,
    "aws_lb.web": 61.0,
}


def test_slowest_first_ties_by_address():
    assert slowest(SECONDS, 4) == [
        ("aws_lb.web", 61.0), ("aws_route53_record.web", 31.2), ("aws_route53_zone.internal", 30.4),
        ("aws_instance.ms", 11.0),
    ]
    assert len(slowest(SECONDS)) == 5
    assert slowest({}) == []
    assert slowest(SECONDS, 0) == []


def test_within_budget_is_no_finding():
    timing = RebuildTiming(destroy_seconds=40, apply_seconds=200, total_seconds=240, resource_seconds=SECONDS)
    assert check_budget("prd-sg-slave", timing, 300) == []
    assert check_budget("prd-sg-slave", timing, 240) == []
    assert check_budget("prd-sg-slave", timing, None) == []


def test_over_budget_names_the_slowest_resources():
    timing = RebuildTiming(destroy_seconds=44.0, apply_seconds=268.0, total_seconds=312.0, resource_seconds=SECONDS)
    [finding] = check_budget("prd-sg-slave", timing, 300)
    assert finding.check == "rebuild" and finding.group == "prd-sg-slave"
    assert finding.expected == "rebuild within 300 s"
    assert finding.found == (
        "rebuild 312 s > budget 300 s; slowest: aws_lb.web 61 s, aws_route53_record.web 31 s, "
        "aws_route53_zone.internal 30 s, aws_instance.ms 11 s, aws_instance.proxy 11 s"
    )
    assert finding.detail["apply_seconds"] == 268.0


def test_over_budget_without_resource_times():
    [finding] = check_budget("g", RebuildTiming(10, 20, 30), 25)
    assert finding.found == "rebuild 30 s > budget 25 s"


# ---------------------------------------------------------------- generated names (recorded: tests/groups/realworld)


def test_recorded_realworld_rebuild_differs_only_in_names_terraform_generates():
    before, after = load("realworld-original"), load("realworld-rebuilt")
    # raw, the two security groups named from name_prefix differ (a new unique suffix at every create) ...
    raw = {r.address: r.values["name"] for r in state_resources(before)
           if r.type == "aws_security_group"}
    new = {r.address: r.values["name"] for r in state_resources(after)
           if r.type == "aws_security_group"}
    assert set(raw) == set(new) == {'aws_security_group.role["app"]', 'aws_security_group.role["web"]'}
    assert all(raw[a] != new[a] and raw[a].startswith(f"realworld-{a[-5:-2]}-") for a in raw)
    # ... and normalised, the rebuild equals the original
    assert compare_rebuild("realworld", before, after) == []


def test_a_changed_name_prefix_is_still_a_difference():
    before, after = load("realworld-original"), copy.deepcopy(load("realworld-rebuilt"))
    for module in [after["values"]["root_module"]]:
        for r in module["resources"]:
            if r["address"] == 'aws_security_group.role["web"]':
                r["values"]["name"] = r["values"]["name"].replace("realworld-web-", "realworld-www-")
                r["values"]["name_prefix"] = "realworld-www-"
    findings = compare_rebuild("realworld", before, after)
    assert sorted(f.expected for f in findings) == [
        "name = realworld-web-<generated>", "name_prefix = realworld-web-"]
    assert sorted(f.found for f in findings) == ["name = realworld-www-<generated>", "name_prefix = realworld-www-"]


def test_generated_name_needs_the_whole_suffix():
    # 26 characters: 18-digit UTC time to 0.1 ms and an 8-hex-digit counter; shorter numbers are kept
    assert normalize_generated_name("web-2026120314040295760000000") == "web-2026120314040295760000000"
    assert normalize_generated_name("build-12345678901234567890") == "build-12345678901234567890"
    assert normalize_generated_name("v2-20261301") == "v2-20261301"
