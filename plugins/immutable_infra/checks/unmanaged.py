"""Unmanaged: resources in a group's VPCs (or tagged with its group) that Terraform does not know.

Input is plain data: the managed resources of the group's state and the
lists of ``describe_*`` calls (boto3 shapes) under the keys ``instances``,
``security_groups``, ``subnets``, ``route_tables``, ``network_interfaces``,
``internet_gateways``, ``nat_gateways``, ``vpc_peering_connections`` (and
``network_acls``, ``vpc_endpoints``, ``flow_logs`` when given). AWS-created defaults are not findings: the
VPC's main route table and its association, the default security group and
network ACL, the local route, and network interfaces AWS creates for
instances, NAT gateways and load balancers.

Rules: a security group whose rules Terraform manages as separate
``aws_security_group_rule`` resources (any rule resource names it) must have
no live rule that none of those resources declares. The comparison is with
the rule resources, never with the group's own ``ingress``/``egress`` in the
state, so a rule added by hand stays a finding after a refresh-only apply
has read it into the state (and a plain plan never proposes to remove it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from immutable_infra.findings import Finding
from immutable_infra.plan import StateResource

CHECK = "unmanaged"

#: Interface types AWS creates and owns for a service.
SERVICE_INTERFACE_TYPES = frozenset({
    "nat_gateway", "network_load_balancer", "gateway_load_balancer", "gateway_load_balancer_endpoint",
    "vpc_endpoint", "load_balancer", "lambda", "transit_gateway", "efs", "api_gateway_managed",
})

#: State attributes that hold ids of objects a resource owns (ENIs, associations, defaults).
_OWNED_ID_ATTRIBUTES = (
    "primary_network_interface_id", "network_interface_id", "main_route_table_id",
    "default_security_group_id", "default_network_acl_id", "default_route_table_id",
)

_ROUTE_DESTINATIONS = (
    ("DestinationCidrBlock", "destination_cidr_block", "cidr_block"),
    ("DestinationIpv6CidrBlock", "destination_ipv6_cidr_block", "ipv6_cidr_block"),
    ("DestinationPrefixListId", "destination_prefix_list_id", "destination_prefix_list_id"),
)


def _tags(item: Mapping[str, Any]) -> dict[str, str]:
    return {t["Key"]: t.get("Value", "") for t in item.get("Tags") or () if "Key" in t}


def _vpcs_of(kind: str, item: Mapping[str, Any]) -> set[str]:
    if kind == "internet_gateways":
        return {a.get("VpcId") for a in item.get("Attachments") or () if a.get("VpcId")}
    if kind == "vpc_peering_connections":
        return {
            (item.get(side) or {}).get("VpcId")
            for side in ("RequesterVpcInfo", "AccepterVpcInfo")
            if (item.get(side) or {}).get("VpcId")
        }
    if kind == "flow_logs":
        return {item["ResourceId"]} if str(item.get("ResourceId", "")).startswith("vpc-") else set()
    return {item["VpcId"]} if item.get("VpcId") else set()


_ID_KEYS = {
    "instances": ("InstanceId", "instance"),
    "security_groups": ("GroupId", "security group"),
    "subnets": ("SubnetId", "subnet"),
    "route_tables": ("RouteTableId", "route table"),
    "network_interfaces": ("NetworkInterfaceId", "network interface"),
    "internet_gateways": ("InternetGatewayId", "internet gateway"),
    "nat_gateways": ("NatGatewayId", "NAT gateway"),
    "vpc_peering_connections": ("VpcPeeringConnectionId", "VPC peering connection"),
    "network_acls": ("NetworkAclId", "network ACL"),
    "vpc_endpoints": ("VpcEndpointId", "VPC endpoint"),
    "flow_logs": ("FlowLogId", "flow log"),
}


_LABELS = {"routes": "route", "route_table_associations": "route table association",
           "security_group_rules": "security group rule"}


def _gone(kind: str, item: Mapping[str, Any]) -> bool:
    if kind == "instances":
        return (item.get("State") or {}).get("Name") in ("terminated", "shutting-down")
    if kind == "nat_gateways":
        return item.get("State") in ("deleted", "deleting", "failed")
    if kind == "vpc_peering_connections":
        return (item.get("Status") or {}).get("Code") in ("deleted", "rejected", "failed", "expired")
    if kind == "vpc_endpoints":
        return str(item.get("State", "")).lower() in ("deleted", "deleting", "rejected", "failed", "expired")
    return False


def _aws_default(kind: str, item: Mapping[str, Any], instance_ids: set[str]) -> bool:
    if kind == "route_tables":
        return any(a.get("Main") for a in item.get("Associations") or ())
    if kind == "security_groups":
        return item.get("GroupName") == "default"
    if kind == "network_acls":
        return bool(item.get("IsDefault"))
    if kind == "network_interfaces":
        attachment = item.get("Attachment") or {}
        if item.get("RequesterManaged") or item.get("InterfaceType") in SERVICE_INTERFACE_TYPES:
            return True
        if attachment.get("InstanceOwnerId") in ("amazon-elb", "amazon-aws"):
            return True
        # An instance's primary interface comes and goes with the instance, which
        # is reported (or not) on its own.
        return attachment.get("DeviceIndex") == 0 and attachment.get("InstanceId") in instance_ids
    return False


def _finding(group: str, kind: str, aws_id: str, where: str, detail: dict[str, Any]) -> Finding:
    label = _ID_KEYS[kind][1] if kind in _ID_KEYS else _LABELS.get(kind, kind)
    return Finding(
        check=CHECK,
        group=group,
        address="",
        aws_id=aws_id,
        expected="every resource in the group's VPCs managed by its Terraform",
        found=f"unmanaged {label} {aws_id} in {where}",
        detail={"type": kind, "id": aws_id, "where": where, **detail},
    )


def _declared_routes(state: Sequence[StateResource], table_id: str) -> list[Mapping[str, Any]]:
    declared: list[Mapping[str, Any]] = []
    for res in state:
        if res.type == "aws_route" and res.values.get("route_table_id") == table_id:
            declared.append({name: res.values.get(name) or "" for _, name, _ in _ROUTE_DESTINATIONS})
        elif res.type in ("aws_route_table", "aws_default_route_table") and res.aws_id == table_id:
            for inline in res.values.get("route") or ():
                declared.append({name: inline.get(key) or "" for _, name, key in _ROUTE_DESTINATIONS})
    return declared


def _unmanaged_routes(group: str, table: Mapping[str, Any], state: Sequence[StateResource]) -> list[Finding]:
    table_id = table.get("RouteTableId", "")
    declared = _declared_routes(state, table_id)
    # A gateway VPC endpoint's route (its prefix list -> the endpoint) is made by AWS for each table
    # associated with a managed aws_vpc_endpoint: it belongs to the endpoint.
    endpoints = {r.aws_id for r in state if r.type == "aws_vpc_endpoint" and r.aws_id}
    findings = []
    for route in table.get("Routes") or ():
        if route.get("GatewayId") == "local" or route.get("Origin") == "CreateRouteTable":
            continue
        if route.get("DestinationPrefixListId") and route.get("GatewayId") in endpoints:
            continue
        wanted = {name: route.get(aws_key) or "" for aws_key, name, _ in _ROUTE_DESTINATIONS}
        if wanted in declared:
            continue
        destination = next((v for v in wanted.values() if v), "?")
        target = next(
            (route[k] for k in ("GatewayId", "NatGatewayId", "InstanceId", "NetworkInterfaceId",
                                "VpcPeeringConnectionId", "TransitGatewayId") if route.get(k)),
            "?",
        )
        findings.append(
            _finding(group, "routes", f"{table_id}:{destination}", f"route table {table_id}",
                     {"route_table_id": table_id, "destination": destination, "target": target})
        )
    return findings


def find_unmanaged(
    group: str,
    state_resources: Iterable[StateResource],
    described: Mapping[str, Sequence[Mapping[str, Any]]],
) -> list[Finding]:
    """Resources in the group's VPCs, or tagged ``Group=<group>``, whose id is not in the state.

    Also: routes of managed route tables declared by no ``aws_route`` and no
    inline route in the state (local routes skipped), and non-main subnet
    associations of managed route tables that no ``aws_route_table_association`` declares.
    """
    state = list(state_resources)
    managed_ids: set[str] = set()
    for res in state:
        if res.aws_id:
            managed_ids.add(res.aws_id)
        for attribute in _OWNED_ID_ATTRIBUTES:
            value = res.values.get(attribute)
            if isinstance(value, str) and value:
                managed_ids.add(value)
    vpcs = {r.aws_id for r in state if r.type == "aws_vpc" and r.aws_id}
    instance_ids = {i.get("InstanceId") for i in described.get("instances") or ()}

    findings: list[Finding] = []
    for kind, (id_key, _label) in _ID_KEYS.items():
        for item in described.get(kind) or ():
            aws_id = item.get(id_key, "")
            in_vpcs = _vpcs_of(kind, item) & vpcs
            tagged = _tags(item).get("Group") == group
            if not (in_vpcs or tagged) or _gone(kind, item):
                continue
            if aws_id in managed_ids:
                if kind == "route_tables":
                    findings += _unmanaged_routes(group, item, state)
                    findings += _unmanaged_associations(group, item, managed_ids)
                elif kind == "security_groups":
                    findings += unmanaged_security_group_rules(group, item, state)
                continue
            if _aws_default(kind, item, instance_ids):
                continue
            where = f"VPC {', '.join(sorted(in_vpcs))}" if in_vpcs else f"tagged Group={group}"
            extra = {"name": _tags(item).get("Name", "")}
            if kind == "instances":
                extra["role"] = _tags(item).get("Role", "")
            findings.append(_finding(group, kind, aws_id, where, extra))
    return findings


def _unmanaged_associations(group: str, table: Mapping[str, Any], managed_ids: set[str]) -> list[Finding]:
    findings = []
    for assoc in table.get("Associations") or ():
        if assoc.get("Main") or (assoc.get("AssociationState") or {}).get("State") == "disassociated":
            continue
        assoc_id = assoc.get("RouteTableAssociationId", "")
        if assoc_id and assoc_id not in managed_ids:
            target = assoc.get("SubnetId") or assoc.get("GatewayId") or "?"
            findings.append(
                _finding(group, "route_table_associations", assoc_id, f"route table {table.get('RouteTableId')}",
                         {"route_table_id": table.get("RouteTableId"), "target": target})
            )
    return findings


# -- security group rules managed as aws_security_group_rule -------------------

#: One atomic rule: (direction, protocol, from port, to port, source kind, source).
RuleKey = tuple[str, str, Any, Any, str, str]


def _protocol(value: Any) -> str:
    from immutable_infra.checks.noise import normalise_protocol

    return normalise_protocol(value)


def _ports(protocol: str, from_port: Any, to_port: Any) -> tuple[Any, Any]:
    # All traffic ("-1") has no ports: AWS omits them, Terraform writes 0/0.
    if protocol == "-1":
        return None, None
    return (int(from_port) if from_port is not None else None, int(to_port) if to_port is not None else None)


def live_rule_keys(security_group: Mapping[str, Any]) -> list[RuleKey]:
    """The live rules of one security group (``describe_security_groups`` shape), one key per source."""
    keys: list[RuleKey] = []
    for direction, field_name in (("ingress", "IpPermissions"), ("egress", "IpPermissionsEgress")):
        for perm in security_group.get(field_name) or ():
            protocol = _protocol(perm.get("IpProtocol"))
            low, high = _ports(protocol, perm.get("FromPort"), perm.get("ToPort"))
            sources = [("cidr", r.get("CidrIp", "")) for r in perm.get("IpRanges") or ()]
            sources += [("ipv6", r.get("CidrIpv6", "")) for r in perm.get("Ipv6Ranges") or ()]
            sources += [("prefix", r.get("PrefixListId", "")) for r in perm.get("PrefixListIds") or ()]
            sources += [("sg", r.get("GroupId", "")) for r in perm.get("UserIdGroupPairs") or ()]
            keys += [(direction, protocol, low, high, kind, value) for kind, value in sources]
    return keys


def declared_rule_keys(group_id: str, state: Sequence[StateResource]) -> set[RuleKey] | None:
    """The rules the state's ``aws_security_group_rule`` resources declare on ``group_id``.

    None when no rule resource names the group (its rules are inline, or it has none).
    """
    rules = [r.values for r in state if r.type == "aws_security_group_rule"
             and r.values.get("security_group_id") == group_id]
    if not rules:
        return None
    keys: set[RuleKey] = set()
    for rule in rules:
        direction = str(rule.get("type") or "")
        protocol = _protocol(rule.get("protocol"))
        low, high = _ports(protocol, rule.get("from_port"), rule.get("to_port"))
        sources = [("cidr", c) for c in rule.get("cidr_blocks") or ()]
        sources += [("ipv6", c) for c in rule.get("ipv6_cidr_blocks") or ()]
        sources += [("prefix", c) for c in rule.get("prefix_list_ids") or ()]
        if rule.get("source_security_group_id"):
            sources.append(("sg", str(rule["source_security_group_id"])))
        if rule.get("self"):
            sources.append(("sg", group_id))
        keys |= {(direction, protocol, low, high, kind, value) for kind, value in sources}
    return keys


def _describe_rule(key: RuleKey) -> str:
    direction, protocol, low, high, kind, value = key
    name = {"6": "tcp", "17": "udp", "1": "icmp", "-1": "all"}.get(protocol, protocol)
    ports = "" if low is None else (f" {low}" if low == high else f" {low}-{high}")
    other = "from" if direction == "ingress" else "to"
    return f"{direction} {name}{ports} {other} {value}"


def unmanaged_security_group_rules(group: str, security_group: Mapping[str, Any],
                                   state: Sequence[StateResource]) -> list[Finding]:
    """Live rules of a group managed by ``aws_security_group_rule`` resources that none of them declares."""
    sg_id = str(security_group.get("GroupId", ""))
    declared = declared_rule_keys(sg_id, state)
    if declared is None:
        return []
    address = next((r.address for r in state if r.type == "aws_security_group" and r.aws_id == sg_id), "")
    findings = []
    seen: set[RuleKey] = set()
    for key in live_rule_keys(security_group):
        if key in declared or key in seen:
            continue
        seen.add(key)
        rule = _describe_rule(key)
        findings.append(Finding(
            check=CHECK, group=group, address=address, aws_id=sg_id,
            expected="only the rules its aws_security_group_rule resources declare",
            found=f"unmanaged security group rule on {sg_id}: {rule}",
            detail={"type": "security_group_rules", "id": sg_id, "rule": rule, "direction": key[0],
                    "protocol": key[1], "from_port": key[2], "to_port": key[3], "source": f"{key[4]}:{key[5]}"},
        ))
    return findings
