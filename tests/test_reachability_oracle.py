"""The analyzer against a deliberately simple oracle, on random topologies.

Hypothesis draws small networks (two or three VPCs, some with overlapping
CIDRs; subnets; main and custom route tables with local, peering, IGW, NAT
and blackhole routes, some to peerings that are missing, not active or join
other VPCs; security groups with CIDR and group-reference rules; network
ACLs with allow/deny rules over port ranges) and one flow between two
instances. The oracle below shares no code with the analyzer: it builds one
concrete packet, walks it hop by hop with the ``ipaddress`` module, then
sends concrete replies.

Return-traffic semantics, the same as the analyzer's (see the docstring of
``immutable_infra.checks.reachability``): the reply goes to the source's
ephemeral port, which may be any port of 1024-65535, so the reply must be
admitted for every one of them. The oracle checks that exactly, with
concrete packets: an ACL's decision for a port only changes at a rule's
boundary, so trying 1024, 65535 and every rule boundary (from, to, from-1,
to+1) inside the range tries one port of every stretch that is decided the
same way.
"""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from immutable_infra.checks.reachability import CODES, analyze
from immutable_infra.flows import Flow

VPC_CIDRS = ["10.0.0.0/16", "10.1.0.0/16", "10.2.0.0/16", "10.0.128.0/17"]
PORT_RANGES = [(22, 22), (80, 80), (0, 65535), (20, 25), (1000, 3000), (1024, 65535), (1024, 30000),
               (30001, 65535), (2000, 2600), (40000, 40000)]
EPHEMERAL_SLICES = [(1024, 30000), (30001, 65535), (2000, 2600), (40000, 40000), (1024, 65535), (1025, 65535)]
FLOW_PORTS = [22, 80, 2500, 1024, 40000]
STATUSES = ["active"] * 8 + ["pending-acceptance", "deleted", "rejected"]


# ---------------------------------------------------------------- topology strategy


def subnet_cidrs(vpc_cidr: str) -> list[str]:
    net = ipaddress.ip_network(vpc_cidr)
    base = int(net.network_address)
    return [str(ipaddress.ip_network((base + (k << 8), 24))) for k in (1, 2)]


@st.composite
def topologies(draw):
    n = draw(st.integers(2, 3))
    cidrs = draw(st.lists(st.sampled_from(VPC_CIDRS), min_size=n, max_size=n, unique=True))
    snap = {"vpcs": [], "subnets": [], "route_tables": [], "peering_connections": [], "security_groups": [],
            "network_acls": [], "instances": [], "internet_gateways": [], "nat_gateways": [], "region": "test"}
    vpcs = [f"vpc-{i}" for i in range(n)]
    subnets: dict[str, list[tuple[str, str]]] = {}
    for vpc, cidr in zip(vpcs, cidrs):
        snap["vpcs"].append({"VpcId": vpc, "CidrBlock": cidr, "CidrBlockAssociationSet": [
            {"CidrBlock": cidr, "CidrBlockState": {"State": "associated"}}]})
        count = draw(st.integers(1, 2))
        subnets[vpc] = [(f"subnet-{vpc[4:]}{k}", c) for k, c in enumerate(subnet_cidrs(cidr)[:count])]
        for sid, c in subnets[vpc]:
            snap["subnets"].append({"SubnetId": sid, "VpcId": vpc, "CidrBlock": c})

    pairs = [(a, b) for i, a in enumerate(vpcs) for b in vpcs[i + 1:]]
    pcx_ids = []
    for a, b in pairs:
        if draw(st.integers(0, 9)) < 9:
            pid = f"pcx-{a[4:]}{b[4:]}"
            pcx_ids.append((pid, a, b))
            snap["peering_connections"].append({
                "VpcPeeringConnectionId": pid, "Status": {"Code": draw(st.sampled_from(STATUSES))},
                "RequesterVpcInfo": {"VpcId": a}, "AccepterVpcInfo": {"VpcId": b}})

    # instances first, so security group rules can name their /32s
    instances = []
    for vpc in vpcs:
        for sid, c in subnets[vpc]:
            ip = str(ipaddress.ip_network(c).network_address + 10)
            instances.append((f"i-{sid[7:]}", sid, vpc, ip))
    sg_ids = [f"sg-{vpc[4:]}{k}" for vpc in vpcs for k in range(2)]
    remotes = ["0.0.0.0/0", "192.168.0.0/16", *cidrs] + [f"{ip}/32" for *_, ip in instances]

    def sg_rules():
        rules = []
        if draw(st.integers(0, 9)) < 6:
            rules.append({"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}], "UserIdGroupPairs": []})
        for _ in range(draw(st.integers(0, 3))):
            proto = draw(st.sampled_from(["tcp", "udp", "icmp", "-1", "6"]))
            rule = {"IpProtocol": proto, "IpRanges": [], "UserIdGroupPairs": []}
            if proto in ("tcp", "udp", "6"):
                rule["FromPort"], rule["ToPort"] = draw(st.sampled_from(PORT_RANGES))
            elif proto == "icmp":
                rule["FromPort"], rule["ToPort"] = -1, -1
            if draw(st.booleans()):
                rule["IpRanges"] = [{"CidrIp": draw(st.sampled_from(remotes))}]
            else:
                rule["UserIdGroupPairs"] = [{"GroupId": draw(st.sampled_from(sg_ids))}]
            rules.append(rule)
        return rules

    for sg in sg_ids:
        snap["security_groups"].append({"GroupId": sg, "VpcId": f"vpc-{sg[3:-1]}", "IpPermissions": sg_rules(),
                                        "IpPermissionsEgress": sg_rules()})

    for vpc, cidr in zip(vpcs, cidrs):
        idx = vpcs.index(vpc)
        # route tables: main + maybe a custom one that some subnets use
        tables = [f"rtb-{idx}m"] + ([f"rtb-{idx}c"] if draw(st.booleans()) else [])
        for table in tables:
            routes = [{"DestinationCidrBlock": cidr, "GatewayId": "local", "State": "active"}]
            seen = {cidr}
            for pid, a, b in pcx_ids:  # the usual route to each peer, most of the time
                if vpc in (a, b) and draw(st.integers(0, 9)) < 9:
                    other = cidrs[vpcs.index(b if vpc == a else a)]
                    if other not in seen:
                        seen.add(other)
                        routes.append({"DestinationCidrBlock": other, "VpcPeeringConnectionId": pid, "State": "active"})
            dests = ["0.0.0.0/0", "10.0.0.0/8", *cidrs] + [c for v in vpcs if v != vpc for _, c in subnets[v]]
            targets = [("pcx", p[0]) for p in pcx_ids] + [("pcx", "pcx-gone"), ("igw", f"igw-{idx}"),
                                                           ("nat", f"nat-{idx}"), ("blackhole", "")]
            for _ in range(draw(st.integers(0, 2))):
                dest = draw(st.sampled_from(dests))
                if dest in seen:
                    continue
                seen.add(dest)
                kind, target = draw(st.sampled_from(targets))
                route = {"DestinationCidrBlock": dest, "State": "active"}
                if kind == "pcx":
                    route["VpcPeeringConnectionId"] = target
                    if draw(st.integers(0, 19)) == 0:
                        route["State"] = "blackhole"
                elif kind == "igw":
                    route["GatewayId"] = target
                elif kind == "nat":
                    route["NatGatewayId"] = target
                else:
                    route["State"] = "blackhole"
                routes.append(route)
            assoc = []
            if table.endswith("m"):
                assoc.append({"Main": True, "AssociationState": {"State": "associated"}})
            snap["route_tables"].append({"RouteTableId": table, "VpcId": vpc, "Routes": routes, "Associations": assoc})
        custom = [t for t in snap["route_tables"] if t["RouteTableId"] == f"rtb-{idx}c"]
        for sid, _ in subnets[vpc]:
            if custom and draw(st.booleans()):
                custom[0]["Associations"].append({"SubnetId": sid, "Main": False,
                                                  "AssociationState": {"State": "associated"}})

        # network ACLs: the default one, maybe a custom one for some subnets
        acl_cidrs = ["0.0.0.0/0", *cidrs] + [c for v in vpcs for _, c in subnets[v]]
        acls = [(f"acl-{idx}d", True)] + ([(f"acl-{idx}c", False)] if draw(st.booleans()) else [])
        for aid, default in acls:
            entries = []
            for egress in (False, True):
                used = set()
                if draw(st.integers(0, 9)) < 8:
                    used.add(100)
                    entries.append({"RuleNumber": 100, "Egress": egress, "Protocol": "-1", "RuleAction": "allow",
                                    "CidrBlock": "0.0.0.0/0"})
                if draw(st.integers(0, 9)) < 3:  # a rule about (part of) the ephemeral range, before the catch-all
                    used.add(50)
                    lo, hi = draw(st.sampled_from(EPHEMERAL_SLICES))
                    entries.append({"RuleNumber": 50, "Egress": egress, "Protocol": draw(st.sampled_from(["6", "17"])),
                                    "RuleAction": draw(st.sampled_from(["allow", "deny"])), "CidrBlock": "0.0.0.0/0",
                                    "PortRange": {"From": lo, "To": hi}})
                for _ in range(draw(st.integers(0, 3))):
                    number = draw(st.sampled_from([10, 50, 90, 100, 110, 200, 300]))
                    if number in used:
                        continue
                    used.add(number)
                    proto = draw(st.sampled_from(["6", "6", "6", "17", "1", "-1"]))
                    entry = {"RuleNumber": number, "Egress": egress, "Protocol": proto,
                             "RuleAction": draw(st.sampled_from(["allow", "deny"])),
                             "CidrBlock": draw(st.sampled_from(["0.0.0.0/0", "0.0.0.0/0", *acl_cidrs]))}
                    if proto in ("6", "17"):
                        lo, hi = draw(st.sampled_from(PORT_RANGES))
                        entry["PortRange"] = {"From": lo, "To": hi}
                    entries.append(entry)
                entries.append({"RuleNumber": 32767, "Egress": egress, "Protocol": "-1", "RuleAction": "deny",
                                "CidrBlock": "0.0.0.0/0"})
            snap["network_acls"].append({"NetworkAclId": aid, "VpcId": vpc, "IsDefault": default,
                                         "Entries": entries, "Associations": []})
        acl_list = [a for a in snap["network_acls"] if a["VpcId"] == vpc]
        for sid, _ in subnets[vpc]:
            chosen = acl_list[-1] if len(acl_list) > 1 and draw(st.booleans()) else acl_list[0]
            chosen["Associations"].append({"SubnetId": sid, "NetworkAclId": chosen["NetworkAclId"]})

    for number, (iid, sid, vpc, ip) in enumerate(instances):
        own = [s for s in sg_ids if s[3:-1] == vpc[4:]]
        groups = draw(st.lists(st.sampled_from(own), min_size=1, max_size=2, unique=True))
        snap["instances"].append({
            "InstanceId": iid, "SubnetId": sid, "VpcId": vpc, "PrivateIpAddress": ip,
            "State": {"Name": "running"}, "Tags": [{"Key": "Role", "Value": f"r{number}"},
                                                   {"Key": "Group", "Value": "g"}],
            "SecurityGroups": [{"GroupId": g} for g in groups],
            "NetworkInterfaces": [{"SubnetId": sid, "PrivateIpAddress": ip, "Groups": [{"GroupId": g} for g in groups]}],
        })
    src, dst = draw(st.lists(st.integers(0, len(instances) - 1), min_size=2, max_size=2, unique=True))
    protocol = draw(st.sampled_from(["tcp", "tcp", "tcp", "udp", "icmp"]))
    port = draw(st.sampled_from(FLOW_PORTS)) if protocol != "icmp" else None
    return snap, Flow(f"r{src}@g", f"r{dst}@g", protocol, port)


# ---------------------------------------------------------------- the oracle


def oracle(snap, flow) -> bool:
    """Walk one concrete packet and its concrete replies through the configuration."""
    def instance(role):
        return next(i for i in snap["instances"] if {"Key": "Role", "Value": role} in i["Tags"])

    src, dst = instance(flow.source_role), instance(flow.destination_role)
    src_ip, dst_ip = ipaddress.ip_address(src["PrivateIpAddress"]), ipaddress.ip_address(dst["PrivateIpAddress"])
    vpc_of = {s["SubnetId"]: s["VpcId"] for s in snap["subnets"]}

    def table_for(subnet):
        for t in snap["route_tables"]:
            if any(a.get("SubnetId") == subnet for a in t["Associations"]):
                return t
        return next(t for t in snap["route_tables"]
                    if t["VpcId"] == vpc_of[subnet] and any(a.get("Main") for a in t["Associations"]))

    def next_hop(subnet, ip):
        best = None
        for r in table_for(subnet)["Routes"]:
            net = ipaddress.ip_network(r["DestinationCidrBlock"])
            if ip in net and (best is None or net.prefixlen > ipaddress.ip_network(best["DestinationCidrBlock"]).prefixlen):
                best = r
        if best is None or best["State"] == "blackhole":
            return None
        return best.get("VpcPeeringConnectionId") or best.get("GatewayId") or best.get("NatGatewayId")

    a, b = vpc_of[src["SubnetId"]], vpc_of[dst["SubnetId"]]
    if a != b:
        hop = next_hop(src["SubnetId"], dst_ip)
        if hop is None or not hop.startswith("pcx-"):
            return False
        pcx = [p for p in snap["peering_connections"] if p["VpcPeeringConnectionId"] == hop]
        if not pcx or pcx[0]["Status"]["Code"] != "active":
            return False
        if {pcx[0]["RequesterVpcInfo"]["VpcId"], pcx[0]["AccepterVpcInfo"]["VpcId"]} != {a, b}:
            return False
        if next_hop(dst["SubnetId"], src_ip) != hop:
            return False
        cidr = {v["VpcId"]: ipaddress.ip_network(v["CidrBlock"]) for v in snap["vpcs"]}
        if cidr[a].overlaps(cidr[b]):
            return False

    names = {"6": "tcp", "17": "udp", "1": "icmp"}
    sgs = {g["GroupId"]: g for g in snap["security_groups"]}

    def sg_allows(instance_, key, peer, peer_ip):
        peer_groups = {g["GroupId"] for g in peer["SecurityGroups"]}
        for gid in {g["GroupId"] for g in instance_["SecurityGroups"]}:
            for rule in sgs[gid][key]:
                proto = names.get(rule["IpProtocol"], rule["IpProtocol"])
                if proto != "-1" and proto != flow.protocol:
                    continue
                if proto in ("tcp", "udp") and not rule["FromPort"] <= flow.port <= rule["ToPort"]:
                    continue
                if any(peer_ip in ipaddress.ip_network(r["CidrIp"]) for r in rule["IpRanges"]):
                    return True
                if any(p["GroupId"] in peer_groups for p in rule["UserIdGroupPairs"]):
                    return True
        return False

    if not sg_allows(src, "IpPermissionsEgress", dst, dst_ip) or not sg_allows(dst, "IpPermissions", src, src_ip):
        return False
    if src["SubnetId"] == dst["SubnetId"]:
        return True

    def acl_for(subnet):
        return next(x for x in snap["network_acls"] if any(s["SubnetId"] == subnet for s in x["Associations"]))

    def acl_allows(acl, egress, remote_ip, port):
        for e in sorted((e for e in acl["Entries"] if e["Egress"] == egress), key=lambda e: e["RuleNumber"]):
            if remote_ip not in ipaddress.ip_network(e["CidrBlock"]):
                continue
            if e["Protocol"] != "-1":
                if names[e["Protocol"]] != flow.protocol:
                    continue
                if flow.protocol != "icmp" and not e["PortRange"]["From"] <= port <= e["PortRange"]["To"]:
                    continue
            return e["RuleAction"] == "allow"
        return False

    src_acl, dst_acl = acl_for(src["SubnetId"]), acl_for(dst["SubnetId"])
    if not acl_allows(src_acl, True, dst_ip, flow.port) or not acl_allows(dst_acl, False, src_ip, flow.port):
        return False
    replies = {1024, 65535}
    for e in src_acl["Entries"] + dst_acl["Entries"]:
        if "PortRange" in e:
            lo, hi = e["PortRange"]["From"], e["PortRange"]["To"]
            replies |= {p for p in (lo - 1, lo, hi, hi + 1) if 1024 <= p <= 65535}
    if flow.protocol == "icmp":
        replies = {None}
    return all(acl_allows(dst_acl, True, src_ip, port) and acl_allows(src_acl, False, dst_ip, port)
               for port in replies)


@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(topologies())
def test_analyzer_agrees_with_the_oracle(case):
    snap, flow = case
    verdict = analyze(flow, snap)
    expected = oracle(snap, flow)
    assert verdict.reachable == expected, (flow.name, verdict)
    if not verdict.reachable:
        assert verdict.code in CODES and verdict.component is not None


def test_the_strategy_reaches_both_verdicts():
    """Guard against a generator that only ever produces blocked (or open) paths."""
    seen = {True: 0, False: 0}
    codes = set()

    @settings(max_examples=300, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(topologies())
    def collect(case):
        verdict = analyze(case[1], case[0])
        seen[verdict.reachable] += 1
        codes.add(verdict.code)

    collect()
    assert seen[True] >= 20 and seen[False] >= 100, seen
    assert {"NO_ROUTE_TO_DESTINATION", "BAD_STATE", "ENI_SG_RULES_MISMATCH", "SUBNET_ACL_RESTRICTION",
            "NO_RETURN_ROUTE"} <= codes, codes
