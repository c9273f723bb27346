"""live.py: a group's VPCs are discovered from its Terraform state, not assumed from an output name."""

from __future__ import annotations

from immutable_infra.live import group_vpc_ids


def _res(address: str, rtype: str, rid: str, mode: str = "managed") -> dict:
    return {"address": address, "mode": mode, "type": rtype, "name": address.split(".")[-1].split("[")[0],
            "values": {"id": rid}}


#: The shape of ``show -json`` for a group whose VPCs sit in modules, under count and for_each.
STATE = {
    "format_version": "1.0",
    "values": {"root_module": {
        "resources": [
            _res("aws_instance.web[0]", "aws_instance", "i-0123456789abcdef0"),
            _res('aws_vpc.extra["blue"]', "aws_vpc", "vpc-0000000000000000b"),
            _res("data.aws_vpc.peer", "aws_vpc", "vpc-0000000000000000f", mode="data"),
        ],
        "child_modules": [{
            "address": "module.vpc",
            "resources": [_res("module.vpc.aws_vpc.this[0]", "aws_vpc", "vpc-0000000000000000a"),
                          _res("module.vpc.aws_subnet.public[0]", "aws_subnet", "subnet-0000000000000000a")],
            "child_modules": [{
                "address": "module.vpc.module.inner",
                "resources": [_res("module.vpc.module.inner.aws_vpc.this", "aws_vpc", "vpc-0000000000000000c")],
            }],
        }],
    }},
}


def test_every_managed_vpc_of_the_state_in_modules_count_and_for_each():
    # a data source names a VPC the group does not own: left out
    assert group_vpc_ids({}, STATE) == ["vpc-0000000000000000a", "vpc-0000000000000000b", "vpc-0000000000000000c"]
    assert group_vpc_ids({"subnet_ids": ["subnet-0000000000000000a"]}, STATE) == group_vpc_ids({}, STATE)


def test_an_output_still_overrides():
    assert group_vpc_ids({"vpc_id": "vpc-0000000000000000d"}, STATE) == ["vpc-0000000000000000d"]
    assert group_vpc_ids({"vpc_ids": ["vpc-2", "vpc-1", "vpc-2"]}, STATE) == ["vpc-1", "vpc-2"]
    assert group_vpc_ids({"vpc_id": "vpc-0000000000000000d"}) == ["vpc-0000000000000000d"]


def test_nothing_to_find():
    assert group_vpc_ids({}, None) == []
    assert group_vpc_ids({"vpc_id": ""}, {"values": {"root_module": {}}}) == []


def test_recorded_realworld_state_names_the_module_vpc():
    """tests/groups/realworld exports no vpc_id: its one VPC is module.vpc.aws_vpc.this[0]."""
    import json
    from pathlib import Path

    from immutable_infra.plan import state_resources

    state = json.loads((Path(__file__).parent / "data" / "rebuild" / "realworld-original.json").read_text())
    [vpc] = [r for r in state_resources(state) if r.type == "aws_vpc"]
    assert vpc.address == "module.vpc.aws_vpc.this[0]"
    assert group_vpc_ids({"public_subnets": ["subnet-x"]}, state) == [vpc.aws_id]
