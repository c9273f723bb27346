"""Flows: parsing the [[flows]] / [[isolation]] tables of a group config."""

from __future__ import annotations

import tomllib

import pytest

from immutable_infra.flows import Flow, FlowError, parse_flows

SOURCE = "fixtures/groups/prd-sg-slave/group.toml"

CONFIG = """
[[flows]]
from = "ci@ops-sg"
to = "microservice@prd-sg-slave"
protocol = "tcp"
port = 22

[[flows]]
from = "*@prd-sg-slave"
to = "vpn@ops-sg"
protocol = "UDP"
port = 1194

[[flows]]
from = "ci@ops-sg"
to = "*@prd-sg-slave"
protocol = "icmp"

[[isolation]]
from = "microservice@prd-sg-slave"
to = "*@prd-cn"
protocol = -1
"""


def parse(text: str, kind: str = "flows") -> list[Flow]:
    return parse_flows(tomllib.loads(text).get(kind), kind, "prd-sg-slave", SOURCE)


def test_parses_flows_and_isolation_from_toml():
    flows = parse(CONFIG)
    assert flows == [
        Flow("ci@ops-sg", "microservice@prd-sg-slave", "tcp", 22, "flow", "prd-sg-slave"),
        Flow("*@prd-sg-slave", "vpn@ops-sg", "udp", 1194, "flow", "prd-sg-slave"),
        Flow("ci@ops-sg", "*@prd-sg-slave", "icmp", None, "flow", "prd-sg-slave"),
    ]
    [iso] = parse(CONFIG, "isolation")
    assert iso.kind == "isolation" and iso.protocol == "-1" and iso.port is None


def test_names_are_stable():
    flows = parse(CONFIG) + parse(CONFIG, "isolation")
    assert [f.name for f in flows] == [
        "ci@ops-sg->microservice@prd-sg-slave:tcp/22",
        "*@prd-sg-slave->vpn@ops-sg:udp/1194",
        "ci@ops-sg->*@prd-sg-slave:icmp",
        "microservice@prd-sg-slave->*@prd-cn:all",
    ]
    assert str(flows[0]) == flows[0].name


def test_flow_is_frozen_hashable_and_repr_is_valid_python():
    flow = parse(CONFIG)[0]
    assert eval(repr(flow), {"Flow": Flow}) == flow
    assert len({flow, eval(repr(flow), {"Flow": Flow})}) == 1
    with pytest.raises(AttributeError):
        flow.port = 23  # type: ignore[misc]
    assert (flow.source_role, flow.source_group) == ("ci", "ops-sg")
    assert (flow.destination_role, flow.destination_group) == ("microservice", "prd-sg-slave")


def test_absent_table_gives_no_flows():
    assert parse_flows(None, "flows", "g", SOURCE) == []


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"to": "a@b", "protocol": "tcp", "port": 1}, ["missing 'from'", 'from = "role@group"']),
        ({"from": "ci-ops-sg", "to": "a@b", "protocol": "tcp", "port": 1}, ["ci-ops-sg", "role@group"]),
        ({"from": "ci@", "to": "a@b", "protocol": "tcp", "port": 1}, ["ci@"]),
        ({"from": "ci@*", "to": "a@b", "protocol": "tcp", "port": 1}, ["cannot be '*'"]),
        ({"from": "a@b", "to": "c@d", "protocol": "sctp", "port": 1}, ["sctp", 'protocol = "tcp"']),
        ({"from": "a@b", "to": "c@d", "protocol": "tcp"}, ["needs a port", "port = 22"]),
        ({"from": "a@b", "to": "c@d", "protocol": "tcp", "port": "22"}, ["'22'", "bare integer"]),
        ({"from": "a@b", "to": "c@d", "protocol": "tcp", "port": 70000}, ["70000"]),
        ({"from": "a@b", "to": "c@d", "protocol": "icmp", "port": 8}, ["takes no port", "remove the port"]),
        ({"from": "a@b", "to": "c@d", "protocol": "tcp", "port": 1, "ports": 2}, ["unknown key", "ports"]),
        ("a@b", ["expected a table"]),
    ],
)
def test_malformed_entry_names_file_group_entry_and_fix(entry, words):
    with pytest.raises(FlowError) as info:
        parse_flows([{"from": "x@y", "to": "z@w", "protocol": "tcp", "port": 1}, entry], "flows", "prd-sg-slave", SOURCE)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    for word in [SOURCE, "'prd-sg-slave'", "[[flows]] entry 2", "Fix:", *words]:
        assert word in message, message


def test_not_an_array_of_tables():
    with pytest.raises(FlowError, match=r"\[\[isolation\]\] table"):
        parse_flows({"from": "a@b"}, "isolation", "g", SOURCE)  # type: ignore[arg-type]


def test_flow_validates_itself():
    with pytest.raises(ValueError):
        Flow("a@b", "c@d", "tcp")
    with pytest.raises(ValueError):
        Flow("a@b", "c@d", "-1", 5)
    with pytest.raises(ValueError):
        Flow("ab", "c@d", "icmp")
