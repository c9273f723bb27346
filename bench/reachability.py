"""Benchmark: the reachability analyzer over five seed-like groups.

    /work/venv/bin/python bench/reachability.py [runs]

Builds a synthetic but realistic snapshot (the five seed groups: 5 VPCs with
4 subnets each, main and private route tables with routes to the peers of
DESIGN.md, 5 security groups per group with CIDR and group-reference rules,
default and custom network ACLs, 3-5 instances per group) and about 40
flows, then times full runs of ``analyze_all`` (index + every flow) and
runs over a prebuilt index. Goal: well under 1 s per full run.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

from immutable_infra.checks.reachability import SnapshotIndex, analyze_all  # noqa: E402
from immutable_infra.flows import Flow  # noqa: E402
from immutable_infra.snapshot import empty_snapshot  # noqa: E402

GROUPS = {  # group -> (kind, roles with instance counts)
    "ops-cn": ("ops", {"mesos-master": 1, "registry": 1, "ci": 1, "vpn": 1}),
    "prd-cn": ("app", {"microservice": 2, "reverse-proxy": 1, "marathon": 1}),
    "ops-sg": ("ops", {"mesos-master": 1, "registry": 1, "ci": 1, "vpn": 1, "admin": 1}),
    "prd-sg-master": ("app", {"microservice": 2, "reverse-proxy": 1}),
    "prd-sg-slave": ("app", {"microservice": 2, "reverse-proxy": 1, "marathon": 1}),
}
PEERS = [("ops-cn", "prd-cn"), ("ops-sg", "prd-sg-master"), ("ops-sg", "prd-sg-slave"),
         ("prd-sg-master", "prd-sg-slave")]
PORTS = {"mesos-master": 5050, "registry": 5000, "ci": 8080, "vpn": 1194, "admin": 443,
         "microservice": 8080, "reverse-proxy": 443, "marathon": 8080}


def build() -> dict:
    snap = empty_snapshot("ap-southeast-1")
    cidr = {g: f"10.{10 * (i + 1)}.0.0/16" for i, g in enumerate(GROUPS)}
    pcx = {}
    for a, b in PEERS:
        pid = f"pcx-{a}-{b}"
        pcx[(a, b)] = pcx[(b, a)] = pid
        snap["peering_connections"].append({"VpcPeeringConnectionId": pid, "Status": {"Code": "active"},
                                            "RequesterVpcInfo": {"VpcId": f"vpc-{a}"},
                                            "AccepterVpcInfo": {"VpcId": f"vpc-{b}"}})
    for gi, (group, (kind, roles)) in enumerate(GROUPS.items()):
        vpc, base = f"vpc-{group}", 10 * (gi + 1)
        tags = [{"Key": "Group", "Value": group}]
        snap["vpcs"].append({"VpcId": vpc, "CidrBlock": cidr[group], "Tags": tags,
                             "CidrBlockAssociationSet": [{"CidrBlock": cidr[group],
                                                          "CidrBlockState": {"State": "associated"}}]})
        subnets = [f"subnet-{group}-{k}" for k in range(4)]
        for k, sid in enumerate(subnets):
            snap["subnets"].append({"SubnetId": sid, "VpcId": vpc, "CidrBlock": f"10.{base}.{k + 1}.0/24"})
        snap["internet_gateways"].append({"InternetGatewayId": f"igw-{group}", "Attachments": [{"VpcId": vpc}]})
        snap["nat_gateways"].append({"NatGatewayId": f"nat-{group}", "VpcId": vpc, "SubnetId": subnets[0]})
        local = {"DestinationCidrBlock": cidr[group], "GatewayId": "local", "State": "active"}
        peers = [b for a, b in PEERS if a == group] + [a for a, b in PEERS if b == group]
        private = [local, {"DestinationCidrBlock": "0.0.0.0/0", "NatGatewayId": f"nat-{group}", "State": "active"}]
        private += [{"DestinationCidrBlock": cidr[p], "VpcPeeringConnectionId": pcx[(group, p)], "State": "active"}
                    for p in peers]
        public = [local, {"DestinationCidrBlock": "0.0.0.0/0", "GatewayId": f"igw-{group}", "State": "active"}]
        public += private[2:]  # the same peering routes
        snap["route_tables"] += [
            {"RouteTableId": f"rtb-{group}-main", "VpcId": vpc, "Routes": public,
             "Associations": [{"Main": True, "AssociationState": {"State": "associated"}}]},
            {"RouteTableId": f"rtb-{group}-private", "VpcId": vpc, "Routes": private,
             "Associations": [{"SubnetId": s, "AssociationState": {"State": "associated"}} for s in subnets[1:]]},
        ]
        sgs = {}
        for role in list(roles)[:5]:
            sg = f"sg-{group}-{role}"
            sgs[role] = sg
        ops = [cidr[p] for p in peers if GROUPS[p][0] == "ops"] + ([cidr[group]] if kind == "ops" else [])
        for role, sg in sgs.items():
            ingress = [{"IpProtocol": "tcp", "FromPort": PORTS[role], "ToPort": PORTS[role],
                        "IpRanges": [{"CidrIp": c} for c in [cidr[group], *(cidr[p] for p in peers)]]},
                       {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": c} for c in ops]},
                       {"IpProtocol": "icmp", "FromPort": -1, "ToPort": -1, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}]
            if role == "microservice":
                ingress.append({"IpProtocol": "tcp", "FromPort": 9100, "ToPort": 9100,
                                "UserIdGroupPairs": [{"GroupId": s} for s in sgs.values()]})
            snap["security_groups"].append({"GroupId": sg, "VpcId": vpc, "IpPermissions": ingress,
                                            "IpPermissionsEgress": [{"IpProtocol": "-1",
                                                                     "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]})
        allow_all = [{"RuleNumber": 100, "Egress": e, "Protocol": "-1", "RuleAction": "allow", "CidrBlock": "0.0.0.0/0"}
                     for e in (False, True)]
        deny = [{"RuleNumber": 32767, "Egress": e, "Protocol": "-1", "RuleAction": "deny", "CidrBlock": "0.0.0.0/0"}
                for e in (False, True)]
        custom = [{"RuleNumber": 10 * (k + 1), "Egress": False, "Protocol": "6", "RuleAction": "allow",
                   "CidrBlock": "10.0.0.0/8", "PortRange": {"From": p, "To": p}}
                  for k, p in enumerate(sorted(set(PORTS.values()) | {22, 9100}))]
        custom += [{"RuleNumber": 200, "Egress": False, "Protocol": "6", "RuleAction": "allow",
                    "CidrBlock": "0.0.0.0/0", "PortRange": {"From": 1024, "To": 65535}},
                   {"RuleNumber": 210, "Egress": False, "Protocol": "1", "RuleAction": "allow", "CidrBlock": "10.0.0.0/8"},
                   {"RuleNumber": 90, "Egress": True, "Protocol": "6", "RuleAction": "deny",
                    "CidrBlock": "0.0.0.0/0", "PortRange": {"From": 25, "To": 25}},
                   {"RuleNumber": 100, "Egress": True, "Protocol": "-1", "RuleAction": "allow", "CidrBlock": "0.0.0.0/0"}]
        snap["network_acls"] += [
            {"NetworkAclId": f"acl-{group}-default", "VpcId": vpc, "IsDefault": True, "Entries": allow_all + deny,
             "Associations": [{"SubnetId": subnets[0]}]},
            {"NetworkAclId": f"acl-{group}-private", "VpcId": vpc, "IsDefault": False, "Entries": custom + deny,
             "Associations": [{"SubnetId": s} for s in subnets[1:]]},
        ]
        n = 0
        for role, count in roles.items():
            for _ in range(count):
                subnet = subnets[0] if role in ("vpn", "reverse-proxy") else subnets[1 + n % 3]
                ip = f"10.{base}.{subnets.index(subnet) + 1}.{10 + n}"
                n += 1
                snap["instances"].append({
                    "InstanceId": f"i-{group}-{n}", "SubnetId": subnet, "VpcId": vpc, "PrivateIpAddress": ip,
                    "State": {"Name": "running"}, "Tags": [{"Key": "Role", "Value": role}, *tags],
                    "SecurityGroups": [{"GroupId": sgs[role]}],
                    "NetworkInterfaces": [{"SubnetId": subnet, "PrivateIpAddress": ip,
                                           "Groups": [{"GroupId": sgs[role]}]}]})
    return snap


def flows() -> list[Flow]:
    out = []
    for a, b in PEERS:
        if GROUPS[a][0] == GROUPS[b][0] == "app":  # the disaster-tolerance pair talks app to app
            out.append(Flow(f"microservice@{a}", f"microservice@{b}", "tcp", 8080))
            out.append(Flow(f"microservice@{b}", f"microservice@{a}", "tcp", 8080))
            out.append(Flow(f"reverse-proxy@{a}", f"microservice@{b}", "tcp", 8080))
            out.append(Flow(f"*@{a}", f"*@{b}", "tcp", 5432, "isolation"))
            continue
        ops, app = (a, b) if GROUPS[a][0] == "ops" else (b, a)
        out.append(Flow(f"*@{app}", f"registry@{ops}", "tcp", 5000))
        out.append(Flow(f"*@{app}", f"mesos-master@{ops}", "tcp", 5050))
        for role in GROUPS[app][1]:
            out.append(Flow(f"ci@{ops}", f"{role}@{app}", "tcp", 22))
            out.append(Flow(f"mesos-master@{ops}", f"{role}@{app}", "icmp"))
            out.append(Flow(f"vpn@{ops}", f"{role}@{app}", "tcp", 22))
        out.append(Flow(f"*@{app}", f"admin@{ops}", "tcp", 25, "isolation"))
    out.append(Flow("microservice@prd-sg-master", "microservice@prd-cn", "tcp", 8080, "isolation"))
    return out


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    snap, fl = build(), flows()
    verdicts = analyze_all(fl, snap)
    pairs = sum(1 for _ in snap["instances"])
    print(f"snapshot: {len(snap['vpcs'])} VPCs, {len(snap['subnets'])} subnets, {len(snap['route_tables'])} route "
          f"tables, {len(snap['peering_connections'])} peerings, {len(snap['security_groups'])} SGs, "
          f"{len(snap['network_acls'])} ACLs, {pairs} instances; {len(fl)} flows "
          f"({sum(v.ok for v in verdicts)} as declared)")
    full = []
    for _ in range(runs):
        start = time.perf_counter()
        analyze_all(fl, snap)
        full.append(time.perf_counter() - start)
    index = SnapshotIndex(snap)
    warm = []
    for _ in range(runs):
        start = time.perf_counter()
        analyze_all(fl, index)
        warm.append(time.perf_counter() - start)
    ms = 1000
    print(f"full run (index + {len(fl)} flows): median {statistics.median(full) * ms:.2f} ms, "
          f"max {max(full) * ms:.2f} ms over {runs} runs (goal < 1000 ms)")
    print(f"prebuilt index, {len(fl)} flows: median {statistics.median(warm) * ms:.2f} ms")


if __name__ == "__main__":
    main()
