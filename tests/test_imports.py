"""imports.py and genconfig.py on recorded data: import blocks, names and ids; cleaning of generated configuration.

Recorded in tests/data/imports/ from a real run (Terraform 1.15, hashicorp/aws 3.39.0, moto): the unmanaged
findings of import-lab after resources were made by hand (findings.json), the configuration Terraform generated
for them (generated_raw.tf) and the error diagnostics a plan gave on it (diagnostics.json).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from immutable_infra import genconfig, verify
from immutable_infra.findings import Finding
from immutable_infra.imports import (
    ImportBlock, NotImportable, declared_addresses, plan_imports, readme, render, rule_import_id, safe_name, target,
    write_imports,
)

DATA = Path(__file__).parent / "data" / "imports"
FINDINGS = [Finding(**d) for d in json.loads((DATA / "findings.json").read_text())]


def by_type(blocks: list[ImportBlock]) -> dict[str, list[ImportBlock]]:
    out: dict[str, list[ImportBlock]] = {}
    for b in blocks:
        out.setdefault(b.type, []).append(b)
    return out


def rule(direction="ingress", protocol="6", low=22, high=22, source="cidr:0.0.0.0/0", sg="sg-1", address="aws_security_group.web"):
    return Finding("unmanaged", "g", address, sg, "", f"unmanaged security group rule on {sg}",
                   {"type": "security_group_rules", "id": sg, "direction": direction, "protocol": protocol,
                    "from_port": low, "to_port": high, "source": source})


def resource(kind, aws_id, name="", **detail):
    return Finding("unmanaged", "g", "", aws_id, "", f"unmanaged {kind} {aws_id}",
                   {"type": kind, "id": aws_id, "name": name, **detail})


# -- blocks, ids, names --------------------------------------------------------------------------------


def test_recorded_findings_give_one_block_each_with_the_provider_import_ids():
    blocks, skipped = plan_imports(FINDINGS, taken={"aws_security_group.app", "aws_vpc.this", "aws_subnet.a"})
    assert skipped == []
    assert len(blocks) == len(FINDINGS) == 9
    ids = {b.address: b.id for b in blocks}
    assert ids == {
        "aws_instance.rogue": "i-00cafe5a7df910876",
        "aws_security_group_rule.app_ingress_tcp_22": "sg-7a852e161b9af4fe2_ingress_tcp_22_22_0.0.0.0/0",
        "aws_security_group_rule.app_ingress_all": "sg-7a852e161b9af4fe2_ingress_all_0_65536_self",
        "aws_security_group.hand_made": "sg-c535e4395c0366fb6",
        "aws_subnet.subnet-fdc625fd7b8af5eea": "subnet-fdc625fd7b8af5eea",
        "aws_route_table.rtb-243992a6e0c6af854": "rtb-243992a6e0c6af854",
        "aws_network_interface.eni-7fc56ca343b9c8cd0": "eni-7fc56ca343b9c8cd0",
        "aws_internet_gateway.igw-acf17103e47e2ba2e": "igw-acf17103e47e2ba2e",
        "aws_network_acl.acl-b914c968cf754a419": "acl-b914c968cf754a419",
    }


def test_block_text_is_an_import_block_under_the_finding():
    text = ImportBlock("aws_security_group", "hand_made", "sg-1", "unmanaged security group sg-1 in VPC vpc-1").render()
    assert text == ('# unmanaged security group sg-1 in VPC vpc-1\n'
                    'import {\n  to = aws_security_group.hand_made\n  id = "sg-1"\n}\n')


def test_every_kind_the_unmanaged_check_reports_has_its_resource_type():
    kinds = {
        "instances": "aws_instance", "security_groups": "aws_security_group", "subnets": "aws_subnet",
        "route_tables": "aws_route_table", "network_interfaces": "aws_network_interface",
        "internet_gateways": "aws_internet_gateway", "nat_gateways": "aws_nat_gateway",
        "vpc_peering_connections": "aws_vpc_peering_connection", "network_acls": "aws_network_acl",
        "vpc_endpoints": "aws_vpc_endpoint", "flow_logs": "aws_flow_log",
    }
    for kind, rtype in kinds.items():
        assert target(resource(kind, "x-1"))[:2] == (rtype, "x-1"), kind


@pytest.mark.parametrize("finding, wanted", [
    (rule(), "sg-1_ingress_tcp_22_22_0.0.0.0/0"),
    (rule(direction="egress", protocol="17", low=53, high=53, source="cidr:10.0.0.0/8"), "sg-1_egress_udp_53_53_10.0.0.0/8"),
    (rule(protocol="-1", low=None, high=None, source="sg:sg-1"), "sg-1_ingress_all_0_65536_self"),
    (rule(protocol="6", low=80, high=443, source="sg:sg-2"), "sg-1_ingress_tcp_80_443_sg-2"),
    (rule(protocol="6", low=443, high=443, source="prefix:pl-9"), "sg-1_ingress_tcp_443_443_pl-9"),
    (rule(protocol="6", low=22, high=22, source="ipv6:2001:db8::/48"), "sg-1_ingress_tcp_22_22_2001:db8::/48"),
    (rule(protocol="1", low=-1, high=-1, source="cidr:10.0.0.0/8"), "sg-1_ingress_icmp_-1_-1_10.0.0.0/8"),
    (rule(protocol="50", low=None, high=None, source="cidr:10.0.0.0/8"), "sg-1_ingress_50_0_0_10.0.0.0/8"),
])
def test_security_group_rule_import_id(finding, wanted):
    assert rule_import_id(finding) == wanted
    # The provider's own parse (validateSecurityGroupRuleImportString): six or more "_" parts, ports ordered.
    parts = wanted.split("_")
    assert len(parts) >= 6 and parts[1] in ("ingress", "egress") and int(parts[4]) >= int(parts[3])


def test_route_and_association_ids():
    route = Finding("unmanaged", "g", "", "rtb-1:0.0.0.0/0", "", "unmanaged route",
                    {"type": "routes", "id": "rtb-1:0.0.0.0/0", "route_table_id": "rtb-1", "destination": "0.0.0.0/0"})
    prefix = Finding("unmanaged", "g", "", "rtb-1:pl-7", "", "unmanaged route",
                     {"type": "routes", "id": "rtb-1:pl-7", "route_table_id": "rtb-1", "destination": "pl-7"})
    subnet = Finding("unmanaged", "g", "", "rtbassoc-1", "", "unmanaged route table association",
                     {"type": "route_table_associations", "id": "rtbassoc-1", "route_table_id": "rtb-1", "target": "subnet-2"})
    gateway = Finding("unmanaged", "g", "", "rtbassoc-2", "", "unmanaged route table association",
                      {"type": "route_table_associations", "id": "rtbassoc-2", "route_table_id": "rtb-1", "target": "igw-3"})
    assert target(route)[:2] == ("aws_route", "rtb-1_0.0.0.0/0")
    assert target(prefix)[:2] == ("aws_route", "rtb-1_pl-7")
    assert target(subnet)[:2] == ("aws_route_table_association", "subnet-2/rtb-1")
    assert target(gateway)[:2] == ("aws_route_table_association", "igw-3/rtb-1")


@pytest.mark.parametrize("text, wanted", [
    ("hand made", "hand_made"), ("Web.Server (2)", "web_server_2"), ("sg-0abc", "sg-0abc"),
    ("9lives", "r_9lives"), ("---", "resource"), ("ÄÖ-x", "x"),
])
def test_names_are_terraform_identifiers(text, wanted):
    assert safe_name(text) == wanted
    assert re.match(r"^[A-Za-z_][A-Za-z0-9_-]*$", safe_name(text))


def test_names_are_unique_and_never_an_address_the_group_declares():
    findings = [resource("security_groups", "sg-1", "web"), resource("security_groups", "sg-2", "web"),
                resource("security_groups", "sg-3", "Web"), resource("subnets", "subnet-1", "web")]
    blocks, _ = plan_imports(findings, taken={"aws_security_group.web"})
    assert [b.address for b in blocks] == ["aws_security_group.web_2", "aws_security_group.web_3",
                                           "aws_security_group.web_4", "aws_subnet.web"]


def test_a_finding_repeated_gives_one_block():
    blocks, _ = plan_imports([resource("subnets", "subnet-1"), resource("subnets", "subnet-1")])
    assert len(blocks) == 1


def test_what_cannot_be_imported_is_a_comment_saying_why_never_a_block():
    odd = Finding("unmanaged", "g", "", "tgw-1", "", "unmanaged transit gateway tgw-1", {"type": "transit_gateways"})
    no_destination = Finding("unmanaged", "g", "", "rtb-1:?", "", "unmanaged route rtb-1:?",
                             {"type": "routes", "route_table_id": "rtb-1", "destination": "?"})
    no_target = Finding("unmanaged", "g", "", "rtbassoc-1", "", "unmanaged association",
                        {"type": "route_table_associations", "route_table_id": "rtb-1", "target": "?"})
    blocks, skipped = plan_imports([odd, no_destination, no_target, rule(source="")])
    assert blocks == [] and len(skipped) == 4
    assert all(isinstance(s, NotImportable) for s in skipped)
    text = render("g", blocks, skipped)
    assert "import {" not in text
    assert "# NOT IMPORTED: unmanaged transit gateway tgw-1" in text
    assert "no Terraform resource type is known for a finding of kind 'transit_gateways'" in text


def test_other_checks_findings_are_ignored():
    drift = Finding("drift", "g", "aws_vpc.this", "vpc-1", "", "", {"type": "subnets", "id": "vpc-1"})
    assert plan_imports([drift]) == ([], [])


def test_ids_are_hcl_strings_never_templates():
    text = ImportBlock("aws_subnet", "x", 'a"${b}%{c}', "f").render()
    assert 'id = "a\\"$${b}%%{c}"' in text


def test_declared_addresses_come_from_the_config_and_the_state(tmp_path):
    (tmp_path / "main.tf").write_text('resource "aws_vpc" "this" {}\nresource  "aws_subnet"  "a" {\n}\n')
    found = declared_addresses(tmp_path, ["aws_instance.web[0]", "module.net.aws_vpc.x", "data.aws_ami.a", "aws_eip.ip"])
    assert found == {"aws_vpc.this", "aws_subnet.a", "aws_instance.web", "aws_eip.ip"}


# -- cleaning generated configuration ----------------------------------------------------------------


#: What `terraform providers schema -json` of hashicorp/aws 3.39.0 says is computed, for the arguments below.
COMPUTED = {
    ("aws_security_group_rule", "source_security_group_id"): True, ("aws_security_group_rule", "cidr_blocks"): False,
    ("aws_security_group_rule", "self"): False, ("aws_subnet", "availability_zone"): True,
    ("aws_subnet", "availability_zone_id"): True,
}


def computed(rtype, name):
    return COMPUTED.get((rtype, name))


def resource_block(text: str, address: str) -> str:
    rtype, name = address.split(".")
    m = re.search(rf'^resource "{rtype}" "{name}" {{\n(.*?)^}}', text, re.MULTILINE | re.DOTALL)
    assert m, address
    return m.group(1)


def test_preclean_drops_nulls_tags_all_and_blocks_left_empty():
    text, removed = genconfig.preclean((DATA / "generated_raw.tf").read_text())
    assert "= null" not in text and "tags_all" not in text
    assert "timeouts" not in text  # every timeout was null
    assert "credit_specification {" in text and 'cpu_credits = "standard"' in text  # a block with values stays
    assert ("aws_instance.rogue", "tags_all", "derived by the provider (tags plus default_tags)") in removed
    assert ("aws_route.r", "nat_gateway_id", genconfig.NULL_ARGUMENT) in removed
    # Nested values inside lists of objects are not arguments of the resource: untouched.
    assert 'description      = ""' in resource_block(text, "aws_security_group.hand_made")


def test_fix_drops_the_conflicting_arguments_the_provider_fills_in():
    text, _ = genconfig.preclean((DATA / "generated_raw.tf").read_text())
    diagnostics = json.loads((DATA / "diagnostics.json").read_text())
    fixed, removed = genconfig.fix(text, diagnostics, computed)
    dropped = {(a, arg) for a, arg, _ in removed}
    assert dropped == {
        ("aws_security_group_rule.app_ssh", "self"), ("aws_security_group_rule.app_ssh", "ipv6_cidr_blocks"),
        ("aws_network_interface.eni", "ipv6_addresses"), ("aws_network_interface.eni", "ipv6_address_count"),
        ("aws_security_group_rule.app_self", "source_security_group_id"),
        ("aws_security_group_rule.app_self", "cidr_blocks"), ("aws_security_group_rule.app_self", "ipv6_cidr_blocks"),
        ("aws_subnet.sub", "availability_zone_id"), ("aws_subnet.sub", "map_customer_owned_ip_on_launch"),
    }
    ssh = resource_block(fixed, "aws_security_group_rule.app_ssh")
    assert 'cidr_blocks       = ["0.0.0.0/0"]' in ssh and "self" not in ssh
    own = resource_block(fixed, "aws_security_group_rule.app_self")
    assert "self                     = true" in own and "source_security_group_id" not in own
    subnet = resource_block(fixed, "aws_subnet.sub")
    assert 'availability_zone               = "ap-southeast-1b"' in subnet and "availability_zone_id" not in subnet
    # Everything else is left as generated.
    assert resource_block(fixed, "aws_instance.rogue") == resource_block(text, "aws_instance.rogue")


def test_fix_leaves_what_it_cannot_judge():
    text = 'resource "aws_x" "a" {\n  one = "1"\n  two = "2"\n}\n'
    diag = {"summary": "ConflictsWith", "detail": '"one": conflicts with two', "address": "aws_x.a",
            "range": {"filename": "generated.tf", "start": {"line": 2}}}
    assert genconfig.fix(text, [diag], lambda t, a: None) == (text, [])
    elsewhere = {**diag, "range": {"filename": "main.tf", "start": {"line": 2}}}
    assert genconfig.fix(text, [elsewhere], lambda t, a: True) == (text, [])


def test_attribute_span_covers_multi_line_values_strings_and_heredocs():
    lines = ['  a = [{', '    x = "}"', '  }]', '  b = <<EOT', 'text {', 'EOT', '  c = "{"', '  d = 1']
    assert genconfig.attribute_span(lines, 0) == 3
    assert genconfig.attribute_span(lines, 3) == 6
    assert genconfig.attribute_span(lines, 6) == 7


def test_private_copy_keeps_local_modules_reachable_and_leaves_the_original(tmp_path):
    run = tmp_path / "run"
    ws = run / "groups" / "g"
    (run / "modules" / "net").mkdir(parents=True)
    (run / "modules" / "net" / "main.tf").write_text("# module\n")
    (ws / ".terraform" / "modules").mkdir(parents=True)
    (ws / ".terraform" / "modules" / "modules.json").write_text(json.dumps(
        {"Modules": [{"Key": "", "Source": "", "Dir": "."}, {"Key": "net", "Source": "../../modules/net", "Dir": "../../modules/net"}]}))
    (ws / "main.tf").write_text('module "net" { source = "../../modules/net" }\n')
    (ws / "terraform.tfstate").write_text("{}")
    (ws / "logs").mkdir()
    copy = genconfig.private_copy(ws, tmp_path / "private")
    assert copy != ws and (copy / "main.tf").is_file() and (copy / "terraform.tfstate").is_file()
    assert not (copy / "logs").exists()
    assert (copy / "../../modules/net/main.tf").resolve().read_text() == "# module\n"
    (copy / "imports.tf").write_text("x")
    assert not (ws / "imports.tf").exists()


def test_without_blocks_drops_the_failed_imports_only():
    text = '# a\nimport {\n  to = aws_subnet.a\n  id = "s-1"\n}\n\n# b\nimport {\n  to = aws_subnet.b\n  id = "s-2"\n}\n'
    kept = genconfig._without_blocks(text, {"aws_subnet.a"})
    assert "aws_subnet.a" not in kept and "aws_subnet.b" in kept


# -- the folder ----------------------------------------------------------------------------------------


def test_without_terraform_the_folder_holds_the_blocks_and_says_nothing_was_generated(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "main.tf").write_text('resource "aws_security_group" "hand_made" {}\n')
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "generated.tf").write_text("stale")
    out = write_imports("g", FINDINGS, tmp_path / "out", ws)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "imports.tf"]  # the stale file is gone
    text = (out / "imports.tf").read_text()
    assert "to = aws_security_group.hand_made_2" in text  # the name the group declares is not reused
    assert "Not generated: no Terraform working directory" in (out / "README.md").read_text()


def test_readme_names_failures_and_what_was_dropped():
    blocks, skipped = plan_imports(FINDINGS[:2] + [resource("transit_gateways", "tgw-1")])
    gen = genconfig.Generation(generated=True, valid=False, failed={blocks[0].address: "Cannot import non-existent remote object"},
                               removed=[("aws_subnet.a", "availability_zone_id", "computed by the provider"),
                                        ("aws_subnet.a", "outpost_arn", genconfig.NULL_ARGUMENT)],
                               errors=["aws_x.y: ConflictsWith: ..."])
    text = readme("g", blocks, skipped, gen)
    assert f"`{blocks[0].address}`: Cannot import non-existent remote object" in text
    assert "Generated for 1 of 2 block(s)" in text
    assert "It does NOT plan as it is" in text and "aws_x.y: ConflictsWith" in text
    assert "1 null argument(s) were dropped" in text and "`aws_subnet.a` `availability_zone_id`" in text
    assert "## Not importable" in text and "unmanaged transit_gateways tgw-1" in text


def test_imports_are_written_only_in_audit_mode(tmp_path):
    h = SimpleNamespace(settings=SimpleNamespace(audit=False, reports_dir=tmp_path))
    assert verify.write_imports(h, "g", FINDINGS) == (None, "")
    h.settings.audit = True
    assert verify.write_imports(h, "g", []) == (None, "")
    assert not (tmp_path / "imports").exists()


def test_readme_when_terraform_could_import_nothing_names_each_failure():
    blocks, skipped = plan_imports(FINDINGS[:1])
    gen = genconfig.Generation(failed={blocks[0].address: "Cannot import non-existent remote object"},
                               errors=["terraform wrote no generated.tf (exit 0)"])
    text = readme("g", blocks, skipped, gen)
    assert "Terraform could not generate it" in text
    assert f"- `{blocks[0].address}`: Cannot import non-existent remote object" in text


def test_failed_imports_are_found_by_address_or_by_name_in_the_detail():
    diags = [
        {"summary": "Cannot import non-existent remote object",
         "detail": 'While attempting to import an existing object to "aws_subnet.gone", the provider detected ...'},
        {"summary": "Configuration for import target does not exist",
         "detail": "The configuration for the given import target aws_subnet.other does not exist."},
        {"summary": "ConflictsWith", "detail": '"self": conflicts with cidr_blocks', "address": "aws_subnet.fine",
         "range": {"filename": "generated.tf"}},
    ]
    found = genconfig.failed_imports(diags, ["aws_subnet.gone", "aws_subnet.other", "aws_subnet.fine", "aws_subnet.go"], {})
    assert sorted(found) == ["aws_subnet.gone", "aws_subnet.other"]
    assert found["aws_subnet.gone"].startswith("Cannot import non-existent remote object")
