"""Reachability: can role A reach role B, offline, from a describe_* snapshot.

The model follows AWS Reachability Analyzer for instance-to-instance paths
inside and across peered VPCs, and names the blocking component. Checks run
in path order and the first failure is the verdict:

1. both ends exist (instances tagged ``Role``, in the group its ``Group`` tag
   names or, untagged, the group whose state declares its VPC; terminated
   ones ignored) and are not stopped;
2. across VPCs: the source subnet's route table (explicit association, else
   the VPC's main table) has a longest-prefix route for the destination IP;
   it must target a VPC peering connection (``local`` capturing the address
   means the address space overlaps, ``igw``/``nat``/others lead elsewhere,
   ``blackhole`` is a dead route);
3. that peering exists, is ``active`` and joins the two VPCs;
4. the destination subnet's route table routes the source IP back through
   the same peering;
5. the peered VPCs' CIDRs do not overlap;
6. a security group of the source admits the traffic outbound and one of
   the destination's admits it inbound (rules by CIDR, or by security group
   membership of the peer instance; protocol ``-1`` is everything). Security
   groups are stateful: no return check;
7. network ACLs (stateless, rule-number order, first match wins, default
   deny): source subnet outbound, destination subnet inbound, then the reply
   (destination subnet outbound, source subnet inbound). Traffic inside one
   subnet does not cross an ACL.

Return-traffic semantics (shared with the oracle in
``tests/test_reachability_oracle.py``): the reply goes from the destination
port to the source's ephemeral port, which may be any of 1024-65535, so the
reply must be allowed for *every* port of that range; a rule that denies
part of the range, or a gap no rule allows (default deny), blocks the flow.

ICMP types and codes are not modelled (any ICMP rule admits an ICMP flow).
A ``-1`` flow needs all traffic admitted: a security group rule of protocol
``-1``; ACL rules evaluated over every protocol and port.

For a ``role@group`` with several instances a flow is reachable when every
source instance reaches every destination instance (the verdict names the
first failing pair). An ``isolation`` flow is breached (``reachable``) when
*any* pair reaches.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Iterable

from immutable_infra.findings import Finding
from immutable_infra.flows import Flow

CHECK = "reachability"

#: Explanation codes. AWS Reachability Analyzer codes where one exists;
#: the ones marked (ours) are invented for cases AWS reports differently.
CODES: dict[str, str] = {
    "NO_SOURCE_INSTANCE": "(ours) No instance carries the source role and group.",
    "NO_DESTINATION_INSTANCE": "(ours) No instance carries the destination role and group.",
    "BAD_STATE": "This component is not in a functional state.",
    "NO_ROUTE_TO_DESTINATION": "The route table does not have an applicable route to the destination resource.",
    "BAD_STATE_ROUTE": "This route is not in a functional state.",
    "PCX_REQUIRES_ADDRESS_IN_VPC_CIDR": (
        "Traffic can traverse this peering connection only if the destination or source address is "
        "within the CIDR block of the destination VPC."),
    "NO_RETURN_ROUTE": "(ours) The destination's route table does not route replies back through the peering.",
    "PCX_OVERLAPPING_CIDRS": "(ours) The peered VPCs have overlapping CIDR blocks.",
    "SG_HAS_NO_RULES": "This security group has no inbound or outbound rules.",
    "ENI_SG_RULES_MISMATCH": "This security group has no inbound or outbound rules that apply.",
    "SUBNET_ACL_RESTRICTION": "Inbound or outbound traffic for a subnet must be admitted by the network ACL for the subnet.",
}

EPHEMERAL = (1024, 65535)
_PROTO_NUMBERS = {"tcp": "6", "udp": "17", "icmp": "1", "-1": "-1", "all": "-1"}
_PROTO_NAMES = {"6": "tcp", "17": "udp", "1": "icmp", "-1": "all"}
_STOPPED = {"stopped", "stopping", "shutting-down"}


# ---------------------------------------------------------------- results

@dataclass(frozen=True)
class Component:
    """A blocking component: AWS id, type (``route-table``, ``security-group``...) and Terraform address."""

    aws_id: str
    type: str
    address: str = ""

    def __str__(self) -> str:
        return f"{self.address} ({self.aws_id})" if self.address else f"{self.type} {self.aws_id}"


@dataclass(frozen=True)
class Verdict:
    """What the analyzer concluded for one flow.

    ``reachable`` is whether traffic gets through (for an isolation flow:
    whether *some* pair gets through, i.e. isolation is breached). ``code``,
    ``explanation`` and ``component`` describe the blocking point of the
    first failing pair, and are empty when reachable.
    """

    flow: Flow
    reachable: bool
    code: str = ""
    explanation: str = ""
    component: Component | None = None
    source_instance: str = ""
    destination_instance: str = ""
    detail: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def ok(self) -> bool:
        """Whether the verdict is what the flow declares (reachable for flows, not for isolation)."""
        return self.reachable if self.flow.kind == "flow" else not self.reachable


# ---------------------------------------------------------------- snapshot index

def _net(cidr: str) -> tuple[int, int, int]:
    """(network int, mask int, prefix length) of an IPv4 CIDR."""
    n = ipaddress.IPv4Network(cidr, strict=False)
    return int(n.network_address), int(n.netmask), n.prefixlen


def _ip(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def _contains(net: tuple[int, int, int], ip: int) -> bool:
    return (ip & net[1]) == net[0]


def _overlap(a: tuple[int, int, int], b: tuple[int, int, int]) -> bool:
    mask = a[1] & b[1]
    return (a[0] & mask) == (b[0] & mask)


def _proto(value: Any) -> str:
    text = str(value).strip().lower()
    return _PROTO_NUMBERS.get(text, text)


@dataclass
class _Instance:
    id: str
    role: str
    group: str
    state: str
    ip: int
    ip_text: str
    subnet: str
    vpc: str
    sgs: tuple[str, ...]


@dataclass
class _Route:
    net: tuple[int, int, int]
    cidr: str
    kind: str  # local | pcx | igw | nat | blackhole | other
    target: str
    blackhole: bool


@dataclass
class _SgRule:
    proto: str
    lo: int
    hi: int
    nets: list[tuple[int, int, int]]
    groups: frozenset[str]


@dataclass
class _AclEntry:
    number: int
    proto: str
    lo: int
    hi: int
    net: tuple[int, int, int]
    allow: bool


class SnapshotIndex:
    """A snapshot indexed by id once, so many flows are cheap to analyze."""

    def __init__(self, snapshot: dict[str, Any], addresses: dict[str, str] | None = None) -> None:
        self.snapshot = snapshot
        self.addresses = dict(addresses or {})
        self.subnet_vpc = {s["SubnetId"]: s.get("VpcId", "") for s in snapshot.get("subnets", [])}
        #: VPC id -> the group whose state declares it: the group of an instance without a Group tag
        #: (a run tags every instance with its group; a team's deployed groups need not)
        self.vpc_groups: dict[str, str] = dict(snapshot.get("vpc_groups") or {})
        self.vpc_cidrs: dict[str, list[tuple[int, int, int]]] = {}
        self.vpc_cidr_text: dict[str, list[str]] = {}
        for vpc in snapshot.get("vpcs", []):
            cidrs = [a["CidrBlock"] for a in vpc.get("CidrBlockAssociationSet", [])
                     if a.get("CidrBlockState", {}).get("State", "associated") == "associated"]
            if vpc.get("CidrBlock") and vpc["CidrBlock"] not in cidrs:
                cidrs.insert(0, vpc["CidrBlock"])
            self.vpc_cidr_text[vpc["VpcId"]] = cidrs
            self.vpc_cidrs[vpc["VpcId"]] = [_net(c) for c in cidrs]

        self.route_tables: dict[str, list[_Route]] = {}
        self.subnet_rt: dict[str, str] = {}
        self.main_rt: dict[str, str] = {}
        for rt in snapshot.get("route_tables", []):
            rid = rt["RouteTableId"]
            for assoc in rt.get("Associations", []):
                if assoc.get("AssociationState", {}).get("State", "associated") != "associated":
                    continue
                if assoc.get("Main"):
                    self.main_rt[rt.get("VpcId", "")] = rid
                elif assoc.get("SubnetId"):
                    self.subnet_rt[assoc["SubnetId"]] = rid
            routes = []
            for r in rt.get("Routes", []):
                cidr = r.get("DestinationCidrBlock")
                if not cidr:
                    continue  # IPv6 and prefix-list routes are not modelled
                if r.get("VpcPeeringConnectionId"):
                    kind, target = "pcx", r["VpcPeeringConnectionId"]
                elif r.get("NatGatewayId"):
                    kind, target = "nat", r["NatGatewayId"]
                elif (r.get("GatewayId") or "") == "local":
                    kind, target = "local", "local"
                elif (r.get("GatewayId") or "").startswith("igw-"):
                    kind, target = "igw", r["GatewayId"]
                else:
                    target = (r.get("GatewayId") or r.get("TransitGatewayId") or r.get("NetworkInterfaceId")
                              or r.get("InstanceId") or r.get("EgressOnlyInternetGatewayId") or "")
                    kind = "other" if target else "blackhole"
                blackhole = kind == "blackhole" or r.get("State") == "blackhole"
                routes.append(_Route(_net(cidr), cidr, kind, target, blackhole))
            routes.sort(key=lambda x: -x.net[2])
            self.route_tables[rid] = routes

        self.peerings: dict[str, dict[str, Any]] = {}
        for p in snapshot.get("peering_connections", []):
            self.peerings[p["VpcPeeringConnectionId"]] = {
                "status": (p.get("Status") or {}).get("Code", ""),
                "vpcs": frozenset({(p.get("RequesterVpcInfo") or {}).get("VpcId", ""),
                                   (p.get("AccepterVpcInfo") or {}).get("VpcId", "")}),
                "raw": p,
            }

        self.sg_ingress: dict[str, list[_SgRule]] = {}
        self.sg_egress: dict[str, list[_SgRule]] = {}
        for sg in snapshot.get("security_groups", []):
            self.sg_ingress[sg["GroupId"]] = [_sg_rule(p) for p in sg.get("IpPermissions", [])]
            self.sg_egress[sg["GroupId"]] = [_sg_rule(p) for p in sg.get("IpPermissionsEgress", [])]

        self.subnet_acl: dict[str, str] = {}
        self.default_acl: dict[str, str] = {}
        self.acl_in: dict[str, list[_AclEntry]] = {}
        self.acl_out: dict[str, list[_AclEntry]] = {}
        for acl in snapshot.get("network_acls", []):
            aid = acl["NetworkAclId"]
            if acl.get("IsDefault"):
                self.default_acl[acl.get("VpcId", "")] = aid
            for assoc in acl.get("Associations", []):
                if assoc.get("SubnetId"):
                    self.subnet_acl[assoc["SubnetId"]] = aid
            ingress, egress = [], []
            for raw in acl.get("Entries", []):
                if raw.get("CidrBlock"):  # IPv6 entries are not modelled
                    (egress if raw.get("Egress") else ingress).append(_acl_entry(raw))
            self.acl_in[aid] = sorted(ingress, key=lambda e: e.number)
            self.acl_out[aid] = sorted(egress, key=lambda e: e.number)

        self.instances: dict[str, _Instance] = {}
        self.by_group: dict[str, list[_Instance]] = {}
        for inst in snapshot.get("instances", []):
            state = (inst.get("State") or {}).get("Name", "")
            if state == "terminated":
                continue
            tags = {t["Key"]: t["Value"] for t in inst.get("Tags") or []}
            enis = inst.get("NetworkInterfaces") or []
            ip_text = inst.get("PrivateIpAddress") or next(
                (e.get("PrivateIpAddress") for e in enis if e.get("PrivateIpAddress")), "")
            subnet = inst.get("SubnetId") or next((e.get("SubnetId") for e in enis if e.get("SubnetId")), "")
            sgs: list[str] = []
            for g in list(inst.get("SecurityGroups") or []) + [g for e in enis for g in e.get("Groups") or []]:
                if g.get("GroupId") and g["GroupId"] not in sgs:
                    sgs.append(g["GroupId"])
            if not ip_text:
                continue
            vpc = inst.get("VpcId") or self.subnet_vpc.get(subnet, "")
            record = _Instance(inst["InstanceId"], tags.get("Role", ""), tags.get("Group") or self.vpc_groups.get(vpc, ""),
                               state, _ip(ip_text), ip_text, subnet, vpc, tuple(sgs))
            self.instances[record.id] = record
            self.by_group.setdefault(record.group, []).append(record)
        for members in self.by_group.values():
            members.sort(key=lambda i: i.id)

    # -- lookups

    def component(self, aws_id: str, type_: str) -> Component:
        return Component(aws_id, type_, self.addresses.get(aws_id, ""))

    def endpoints(self, role: str, group: str) -> list[_Instance]:
        members = self.by_group.get(group, [])
        return list(members) if role == "*" else [i for i in members if i.role == role]

    def route_table_of(self, subnet: str) -> str:
        return self.subnet_rt.get(subnet) or self.main_rt.get(self.subnet_vpc.get(subnet, ""), "")

    def acl_of(self, subnet: str) -> str:
        return self.subnet_acl.get(subnet) or self.default_acl.get(self.subnet_vpc.get(subnet, ""), "")

    def lookup(self, rt: str, ip: int) -> _Route | None:
        for route in self.route_tables.get(rt, []):
            if _contains(route.net, ip):
                return route
        return None


def _sg_rule(perm: dict[str, Any]) -> _SgRule:
    proto = _proto(perm.get("IpProtocol", "-1"))
    lo, hi = perm.get("FromPort"), perm.get("ToPort")
    if proto not in ("6", "17") or lo is None or hi is None or lo == -1:
        lo, hi = 0, 65535
    nets = [_net(r["CidrIp"]) for r in perm.get("IpRanges", []) if r.get("CidrIp")]
    groups = frozenset(p["GroupId"] for p in perm.get("UserIdGroupPairs", []) if p.get("GroupId"))
    return _SgRule(proto, lo, hi, nets, groups)


def _acl_entry(entry: dict[str, Any]) -> _AclEntry:
    proto = _proto(entry.get("Protocol", "-1"))
    pr = entry.get("PortRange") or {}
    lo, hi = pr.get("From"), pr.get("To")
    if proto not in ("6", "17") or lo is None or hi is None:
        lo, hi = 0, 65535
    return _AclEntry(int(entry.get("RuleNumber", 32767)), proto, lo, hi, _net(entry["CidrBlock"]),
                     entry.get("RuleAction") == "allow")


# ---------------------------------------------------------------- traffic sets

def _traffic(protocol: str, lo: int, hi: int) -> dict[str, list[tuple[int, int]]]:
    """The traffic that must be admitted, as protocol number -> port intervals."""
    proto = _proto(protocol)
    if proto in ("6", "17"):
        return {proto: [(lo, hi)]}
    if proto == "1":
        return {"1": [(0, 0)]}
    return {"6": [(0, 65535)], "17": [(0, 65535)], "1": [(0, 0)], "other": [(0, 0)]}


def _cut(intervals: list[tuple[int, int]], lo: int, hi: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(intervals ∩ [lo, hi], intervals − [lo, hi])."""
    inside, outside = [], []
    for a, b in intervals:
        if b < lo or a > hi:
            outside.append((a, b))
            continue
        inside.append((max(a, lo), min(b, hi)))
        if a < lo:
            outside.append((a, lo - 1))
        if b > hi:
            outside.append((hi + 1, b))
    return inside, outside


def _acl_verdict(entries: list[_AclEntry], remote: int, traffic: dict[str, list[tuple[int, int]]]
                 ) -> tuple[bool, int | None]:
    """Evaluate stateless ACL rules for a traffic set: (admitted, deciding rule number; None = default '*')."""
    remaining = {k: list(v) for k, v in traffic.items()}
    for e in entries:
        if not _contains(e.net, remote):
            continue
        if e.proto == "-1":
            keys = list(remaining)
            lo, hi, partial = 0, 65535, False
        elif e.proto in remaining:
            keys, partial = [e.proto], False
            lo, hi = (e.lo, e.hi) if e.proto in ("6", "17") else (0, 65535)
        elif "other" in remaining and e.proto not in ("6", "17", "1"):
            keys, lo, hi, partial = ["other"], 0, 65535, True  # one protocol of many
        else:
            continue
        hit = False
        for k in keys:
            inside, outside = _cut(remaining[k], lo, hi)
            if inside:
                hit = True
                if e.allow and not partial:
                    remaining[k] = outside
        if not hit:
            continue
        if not e.allow:
            return False, e.number
        remaining = {k: v for k, v in remaining.items() if v}
        if not remaining:
            return True, e.number
    return False, None


def _sg_admits(index: SnapshotIndex, sgs: tuple[str, ...], rules: dict[str, list[_SgRule]],
               peer: _Instance, protocol: str, port: int | None) -> bool:
    proto = _proto(protocol)
    for sg in sgs:
        for r in rules.get(sg, []):
            if r.proto != "-1" and (proto == "-1" or r.proto != proto):
                continue
            if proto in ("6", "17") and not r.lo <= port <= r.hi:  # type: ignore[operator]
                continue
            if any(_contains(n, peer.ip) for n in r.nets) or (r.groups and not r.groups.isdisjoint(peer.sgs)):
                return True
    return False


# ---------------------------------------------------------------- analysis

@dataclass
class _Block:
    code: str
    explanation: str
    component: Component | None
    detail: dict[str, Any] = field(default_factory=dict)


def _who(i: _Instance) -> str:
    return f"{i.role or '?'} {i.id} ({i.ip_text})"


def _describe(flow: Flow) -> str:
    return flow.name.rsplit(":", 1)[1]


def _pair(idx: SnapshotIndex, flow: Flow, src: _Instance, dst: _Instance) -> _Block | None:
    """The first blocking point for one source and one destination instance, or None."""
    if src.id == dst.id:
        return None
    for end in (src, dst):
        if end.state in _STOPPED:
            return _Block("BAD_STATE", f"instance {_who(end)} is {end.state}", idx.component(end.id, "instance"))
    what = _describe(flow)
    if src.vpc != dst.vpc:
        block = _route_path(idx, src, dst)
        if block:
            return block
    # security groups (stateful)
    for end, peer, rules, direction in ((src, dst, idx.sg_egress, "outbound"), (dst, src, idx.sg_ingress, "inbound")):
        if _sg_admits(idx, end.sgs, rules, peer, flow.protocol, flow.port):
            continue
        first = end.sgs[0] if end.sgs else ""
        comp = idx.component(first, "security-group") if first else idx.component(end.id, "instance")
        empty = bool(end.sgs) and all(not rules.get(sg) for sg in end.sgs)
        to_from = "to" if direction == "outbound" else "from"
        groups = ", ".join(end.sgs) or "no security group"
        return _Block("SG_HAS_NO_RULES" if empty else "ENI_SG_RULES_MISMATCH",
                      f"no {direction} rule of {groups} on {_who(end)} admits {what} {to_from} {_who(peer)}",
                      comp, {"direction": direction, "security_groups": list(end.sgs)})
    # network ACLs (stateless); traffic inside one subnet crosses none
    if src.subnet == dst.subnet:
        return None
    forward = _traffic(flow.protocol, flow.port or 0, flow.port or 0)
    reply = _traffic(flow.protocol, *EPHEMERAL)
    reply_what = what if flow.protocol not in ("tcp", "udp") else f"{flow.protocol} replies from port {flow.port} to ports 1024-65535"
    checks = (
        (src, "outbound", idx.acl_out, dst, forward, f"{what} to {_who(dst)}", "outbound"),
        (dst, "inbound", idx.acl_in, src, forward, f"{what} from {_who(src)}", "inbound"),
        (dst, "outbound", idx.acl_out, src, reply, f"{reply_what} of {_who(src)}", "return outbound"),
        (src, "inbound", idx.acl_in, dst, reply, f"{reply_what} from {_who(dst)}", "return inbound"),
    )
    for end, direction, table, peer, traffic, text, label in checks:
        acl = idx.acl_of(end.subnet)
        if not acl:
            continue  # no ACL data for the subnet: not modelled
        admitted, rule = _acl_verdict(table.get(acl, []), peer.ip, traffic)
        if admitted:
            continue
        by = f"rule {rule} denies" if rule is not None else "no rule allows (default rule * denies)"
        return _Block("SUBNET_ACL_RESTRICTION",
                      f"network ACL {acl} of subnet {end.subnet}: {by} {direction} {text}",
                      idx.component(acl, "network-acl"),
                      {"direction": label, "rule_number": rule if rule is not None else "*"})
    return None


def _route_path(idx: SnapshotIndex, src: _Instance, dst: _Instance) -> _Block | None:
    rt = idx.route_table_of(src.subnet)
    if not rt:
        return _Block("NO_ROUTE_TO_DESTINATION", f"subnet {src.subnet} of {_who(src)} has no route table",
                      idx.component(src.subnet, "subnet"))
    comp = idx.component(rt, "route-table")
    route = idx.lookup(rt, dst.ip)
    if route is None:
        return _Block("NO_ROUTE_TO_DESTINATION",
                      f"route table {rt} of subnet {src.subnet} has no route covering {dst.ip_text} ({_who(dst)})",
                      comp)
    if route.blackhole:
        return _Block("BAD_STATE_ROUTE",
                      f"route {route.cidr} in route table {rt} toward {dst.ip_text} is a blackhole"
                      + (f" (target {route.target} is gone)" if route.target else ""), comp,
                      {"route": route.cidr, "target": route.target})
    if route.kind == "local":
        return _Block("NO_ROUTE_TO_DESTINATION",
                      f"{dst.ip_text} ({_who(dst)}) lies inside the address space of the source VPC {src.vpc}, "
                      f"so the local route {route.cidr} in route table {rt} keeps it there (overlapping CIDRs)",
                      comp, {"route": route.cidr, "target": "local"})
    if route.kind != "pcx":
        return _Block("NO_ROUTE_TO_DESTINATION",
                      f"the best route for {dst.ip_text} in route table {rt} is {route.cidr} via {route.target}, "
                      f"not a peering connection to {dst.vpc}", comp, {"route": route.cidr, "target": route.target})
    pcx = route.target
    pcomp = idx.component(pcx, "vpc-peering-connection")
    peering = idx.peerings.get(pcx)
    if peering is None:
        return _Block("BAD_STATE", f"route table {rt} sends {dst.ip_text} to peering connection {pcx}, "
                      "which does not exist", pcomp, {"route_table": rt, "status": "missing"})
    if peering["status"] != "active":
        return _Block("BAD_STATE", f"peering connection {pcx} (used by route table {rt}) is "
                      f"{peering['status'] or 'in an unknown state'}, not active", pcomp,
                      {"route_table": rt, "status": peering["status"]})
    if peering["vpcs"] != frozenset({src.vpc, dst.vpc}):
        joined = " and ".join(sorted(peering["vpcs"]))
        return _Block("PCX_REQUIRES_ADDRESS_IN_VPC_CIDR",
                      f"route table {rt} sends {dst.ip_text} to peering connection {pcx}, which joins {joined}, "
                      f"not {src.vpc} and {dst.vpc}", pcomp, {"route_table": rt})
    back_rt = idx.route_table_of(dst.subnet)
    back = idx.lookup(back_rt, src.ip) if back_rt else None
    if back is None or back.blackhole or back.kind != "pcx" or back.target != pcx:
        how = "has no route" if back is None else (
            f"routes it via {back.cidr} -> {back.target or 'blackhole'}" + (" (blackhole)" if back.blackhole else ""))
        target = idx.component(back_rt, "route-table") if back_rt else idx.component(dst.subnet, "subnet")
        return _Block("NO_RETURN_ROUTE",
                      f"route table {back_rt or '(none)'} of subnet {dst.subnet} ({_who(dst)}) {how} back to "
                      f"{src.ip_text} through peering connection {pcx}", target, {"peering": pcx})
    for a in idx.vpc_cidrs.get(src.vpc, []):
        for b in idx.vpc_cidrs.get(dst.vpc, []):
            if _overlap(a, b):
                return _Block("PCX_OVERLAPPING_CIDRS",
                              f"peering connection {pcx} joins VPCs with overlapping CIDRs "
                              f"{', '.join(idx.vpc_cidr_text[src.vpc])} ({src.vpc}) and "
                              f"{', '.join(idx.vpc_cidr_text[dst.vpc])} ({dst.vpc})", pcomp)
    return None


def _as_index(snapshot: dict[str, Any] | SnapshotIndex, addresses: dict[str, str] | None) -> SnapshotIndex:
    if isinstance(snapshot, SnapshotIndex):
        if addresses and addresses != snapshot.addresses:
            return SnapshotIndex(snapshot.snapshot, addresses)
        return snapshot
    return SnapshotIndex(snapshot, addresses)


def analyze(flow: Flow, snapshot: dict[str, Any] | SnapshotIndex,
            addresses: dict[str, str] | None = None) -> Verdict:
    """The verdict for one flow over a snapshot (or a prebuilt :class:`SnapshotIndex`)."""
    idx = _as_index(snapshot, addresses)
    sources = idx.endpoints(flow.source_role, flow.source_group)
    destinations = idx.endpoints(flow.destination_role, flow.destination_group)
    if not sources:
        return Verdict(flow, False, "NO_SOURCE_INSTANCE",
                       f"no instance with Role={flow.source_role} in group {flow.source_group} (its Group tag, or in its VPCs)"
                       " (terminated instances are ignored)")
    if not destinations:
        return Verdict(flow, False, "NO_DESTINATION_INSTANCE",
                       f"no instance with Role={flow.destination_role} in group {flow.destination_group} (its Group tag, or in its VPCs)"
                       " (terminated instances are ignored)")
    first_block: Verdict | None = None
    for src in sources:
        for dst in destinations:
            block = _pair(idx, flow, src, dst)
            if flow.kind == "isolation":
                if block is None and src.id != dst.id:
                    return Verdict(flow, True, "", f"{_who(src)} reaches {_who(dst)} ({_describe(flow)})",
                                   None, src.id, dst.id)
                if block is not None and first_block is None:
                    first_block = Verdict(flow, False, block.code, block.explanation, block.component,
                                          src.id, dst.id, block.detail)
            elif block is not None:
                return Verdict(flow, False, block.code, block.explanation, block.component, src.id, dst.id,
                               block.detail)
    if flow.kind == "isolation":
        return first_block or Verdict(flow, False, "", "no distinct source and destination instances")
    return Verdict(flow, True, source_instance=sources[0].id, destination_instance=destinations[0].id)


def analyze_all(flows: Iterable[Flow], snapshot: dict[str, Any] | SnapshotIndex,
                addresses: dict[str, str] | None = None) -> list[Verdict]:
    """Verdicts for many flows; the snapshot is indexed once."""
    idx = _as_index(snapshot, addresses)
    return [analyze(flow, idx) for flow in flows]


# ---------------------------------------------------------------- checks

def reachability_matrix(verdicts: Iterable[Verdict]) -> list[dict[str, Any]]:
    """One row per verdict, for reports."""
    rows = []
    for v in verdicts:
        rows.append({
            "flow": v.flow.name,
            "kind": v.flow.kind,
            "declared_by": v.flow.declared_by,
            "expected": "reachable" if v.flow.kind == "flow" else "unreachable",
            "verdict": "reachable" if v.reachable else "unreachable",
            "ok": v.ok,
            "code": v.code,
            "blocking_component": str(v.component) if v.component else "",
            "component_type": v.component.type if v.component else "",
            "aws_id": v.component.aws_id if v.component else "",
            "address": v.component.address if v.component else "",
            "source_instance": v.source_instance,
            "destination_instance": v.destination_instance,
            "explanation": v.explanation,
        })
    return rows


def find_flow_violations(flows: Iterable[Flow], isolation: Iterable[Flow], snapshot: dict[str, Any] | SnapshotIndex,
                         addresses: dict[str, str] | None, group: str) -> list[Finding]:
    """Declared flows that are not reachable and isolation pairs that are."""
    idx = _as_index(snapshot, addresses)
    findings = []
    for flow in flows:
        v = analyze(flow if flow.kind == "flow" else _as_kind(flow, "flow"), idx)
        if v.reachable:
            continue
        where = str(v.component) if v.component else f"{flow.source} / {flow.destination}"
        findings.append(Finding(
            CHECK, group, v.component.address if v.component else "", v.component.aws_id if v.component else "",
            "reachable", f"{v.code}: {v.explanation} at {where}",
            {"flow": flow.name, "code": v.code, "component_type": v.component.type if v.component else "",
             "source_instance": v.source_instance, "destination_instance": v.destination_instance, **v.detail}))
    for flow in isolation:
        v = analyze(flow if flow.kind == "isolation" else _as_kind(flow, "isolation"), idx)
        if not v.reachable:
            continue
        dst = idx.instances[v.destination_instance]
        findings.append(Finding(
            CHECK, group, idx.addresses.get(dst.id, ""), dst.id, f"{flow.name} isolated (unreachable)",
            f"reachable: {v.explanation}",
            {"flow": flow.name, "source_instance": v.source_instance,
             "destination_instance": v.destination_instance}))
    return findings


def _as_kind(flow: Flow, kind: str) -> Flow:
    return Flow(flow.source, flow.destination, flow.protocol, flow.port, kind, flow.declared_by)


def find_peering_problems(snapshot: dict[str, Any] | SnapshotIndex, addresses: dict[str, str] | None,
                          group: str) -> list[Finding]:
    """Peering connections that are not active, and peerings between VPCs with overlapping CIDRs.

    When VPCs carry a ``Group`` tag equal to ``group`` only peerings touching
    them are reported. A ``deleted`` peering is reported only when a route or
    the Terraform state still refers to it.
    """
    idx = _as_index(snapshot, addresses)
    mine = {v["VpcId"] for v in idx.snapshot.get("vpcs", [])
            if any(t.get("Key") == "Group" and t.get("Value") == group for t in v.get("Tags") or [])}
    routed = {r.target for routes in idx.route_tables.values() for r in routes if r.kind == "pcx"}
    findings = []
    for pcx, p in sorted(idx.peerings.items()):
        if mine and mine.isdisjoint(p["vpcs"]):
            continue
        comp = idx.component(pcx, "vpc-peering-connection")
        status = p["status"]
        joined = " and ".join(sorted(p["vpcs"]))
        if status != "active":
            if status == "deleted" and pcx not in routed and not comp.address:
                continue
            message = ((p["raw"].get("Status") or {}).get("Message") or "").strip()
            findings.append(Finding(CHECK, group, comp.address, pcx, "peering connection active",
                                    f"BAD_STATE: peering connection {pcx} between {joined} is {status or 'unknown'}"
                                    + (f" ({message})" if message else ""), {"code": "BAD_STATE", "status": status}))
        raw = p["raw"]
        sides = []
        for info_key in ("RequesterVpcInfo", "AccepterVpcInfo"):
            info = raw.get(info_key) or {}
            cidrs = idx.vpc_cidr_text.get(info.get("VpcId", "")) or [
                c["CidrBlock"] for c in info.get("CidrBlockSet", []) if c.get("CidrBlock")] or (
                [info["CidrBlock"]] if info.get("CidrBlock") else [])
            sides.append(cidrs)
        clash = [(a, b) for a in sides[0] for b in sides[1] if _overlap(_net(a), _net(b))]
        if clash and status != "deleted":
            findings.append(Finding(CHECK, group, comp.address, pcx, "peered VPCs with disjoint CIDRs",
                                    f"PCX_OVERLAPPING_CIDRS: {', '.join(f'{a} overlaps {b}' for a, b in clash)} "
                                    f"across peering connection {pcx} ({joined})",
                                    {"code": "PCX_OVERLAPPING_CIDRS", "overlaps": clash}))
    return findings
