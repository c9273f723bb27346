"""Snapshot: the describe_* results a network check needs, as plain JSON-able data.

``take_snapshot`` reads one region with a boto3 EC2 client (moto or real
AWS alike); ``merge_snapshots`` joins several regions. The result is a dict
of lists, in the shapes the EC2 API returns them (``VpcId``, ``Routes``,
``IpPermissions``, ``Entries``...), with datetimes as ISO strings, so it can
be dumped, recorded and fed to the pure checks in ``checks/``.
"""

from __future__ import annotations

import datetime
from typing import Any

#: snapshot key -> (describe call, response key, id field)
SECTIONS: dict[str, tuple[str, str, str]] = {
    "vpcs": ("describe_vpcs", "Vpcs", "VpcId"),
    "subnets": ("describe_subnets", "Subnets", "SubnetId"),
    "route_tables": ("describe_route_tables", "RouteTables", "RouteTableId"),
    "peering_connections": ("describe_vpc_peering_connections", "VpcPeeringConnections", "VpcPeeringConnectionId"),
    "security_groups": ("describe_security_groups", "SecurityGroups", "GroupId"),
    "network_acls": ("describe_network_acls", "NetworkAcls", "NetworkAclId"),
    "instances": ("describe_instances", "Reservations", "InstanceId"),
    "internet_gateways": ("describe_internet_gateways", "InternetGateways", "InternetGatewayId"),
    "nat_gateways": ("describe_nat_gateways", "NatGateways", "NatGatewayId"),
}


def _plain(value: Any) -> Any:
    """boto3 output made JSON-able: datetimes as ISO strings, no ResponseMetadata."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k != "ResponseMetadata"}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return value


def _all(client: Any, call: str, key: str, **kwargs: Any) -> list[dict[str, Any]]:
    if client.can_paginate(call):
        items: list[dict[str, Any]] = []
        for page in client.get_paginator(call).paginate(**kwargs):
            items.extend(page.get(key, []))
        return items
    return list(getattr(client, call)(**kwargs).get(key, []))


def _dedupe(items: list[dict[str, Any]], id_field: str) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out = []
    for item in items:
        ident = item.get(id_field)
        if ident in seen:
            continue
        seen.add(ident)
        out.append(item)
    return out


def _peering_sides(peering: dict[str, Any]) -> set[str]:
    return {(peering.get(side) or {}).get("VpcId", "") for side in ("RequesterVpcInfo", "AccepterVpcInfo")}


def take_snapshot(ec2_client: Any, vpc_ids: list[str] | None = None) -> dict[str, Any]:
    """Describe everything reachability needs in the client's region.

    With ``vpc_ids`` only those VPCs and what lives in them are read (plus
    every peering connection that touches them). Instances are flattened
    out of their reservations.
    """
    ids = sorted(vpc_ids) if vpc_ids else None

    def by_vpc(name: str = "vpc-id") -> dict[str, Any]:
        return {"Filters": [{"Name": name, "Values": ids}]} if ids else {}

    snap: dict[str, Any] = {"region": ec2_client.meta.region_name}
    snap["vpcs"] = _all(ec2_client, "describe_vpcs", "Vpcs", **({"VpcIds": ids} if ids else {}))
    snap["subnets"] = _all(ec2_client, "describe_subnets", "Subnets", **by_vpc())
    snap["route_tables"] = _all(ec2_client, "describe_route_tables", "RouteTables", **by_vpc())
    if ids:
        peerings = []
        for side in ("requester-vpc-info.vpc-id", "accepter-vpc-info.vpc-id"):
            peerings += _all(ec2_client, "describe_vpc_peering_connections", "VpcPeeringConnections", **by_vpc(side))
        # Kept only when one side is ours, whatever the endpoint did with the
        # filters (moto ignores them and returns every connection of the region).
        peerings = [p for p in peerings if _peering_sides(p) & set(ids)]
    else:
        peerings = _all(ec2_client, "describe_vpc_peering_connections", "VpcPeeringConnections")
    snap["peering_connections"] = _dedupe(peerings, "VpcPeeringConnectionId")
    snap["security_groups"] = _all(ec2_client, "describe_security_groups", "SecurityGroups", **by_vpc())
    snap["network_acls"] = _all(ec2_client, "describe_network_acls", "NetworkAcls", **by_vpc())
    reservations = _all(ec2_client, "describe_instances", "Reservations", **by_vpc())
    snap["instances"] = [inst for res in reservations for inst in res.get("Instances", [])]
    snap["internet_gateways"] = _all(
        ec2_client, "describe_internet_gateways", "InternetGateways", **by_vpc("attachment.vpc-id"))
    nat_kwargs = {"Filter": [{"Name": "vpc-id", "Values": ids}]} if ids else {}
    snap["nat_gateways"] = _all(ec2_client, "describe_nat_gateways", "NatGateways", **nat_kwargs)
    return _plain(snap)


def merge_snapshots(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """One snapshot from several (one per region); the first copy of each id wins.

    ``region`` is the common region, or ``""`` when they differ; ``regions``
    lists them all.
    """
    merged: dict[str, Any] = {key: [] for key in SECTIONS}
    for key, (_call, _resp, id_field) in SECTIONS.items():
        merged[key] = _dedupe([item for snap in snapshots for item in snap.get(key, [])], id_field)
    regions = sorted({snap.get("region", "") for snap in snapshots if snap.get("region")})
    merged["region"] = regions[0] if len(regions) == 1 else ""
    merged["regions"] = regions
    return merged


def empty_snapshot(region: str = "") -> dict[str, Any]:
    """A snapshot with every section present and empty (for tests and synthetic data)."""
    snap: dict[str, Any] = {key: [] for key in SECTIONS}
    snap["region"] = region
    return snap
