"""experiment.py and chaos.py on recorded data: a fault is detected only through new findings about what it
touched; a new finding no fault explains is a false alarm; targets follow Terraform addresses, not AWS ids."""

from __future__ import annotations

from immutable_infra import chaos, experiment
from immutable_infra.chaos import FlowRuleRevoked, RouteDeleted, SgOpenedToWorld, candidates, touched
from immutable_infra.experiment import Experiment, Outcome, attribute, new_findings, plan_batches
from immutable_infra.findings import Finding
from immutable_infra.plan import StateResource

REGION = "ap-southeast-1"
RUN = "r1"
GROUP = "g"


def finding(check, address, aws_id, found="changed", **detail):
    return Finding(check, GROUP, address, aws_id, "as declared", found, detail)


STATE = [
    StateResource("aws_security_group.app", "aws_security_group", {"id": "sg-app"}),
    StateResource("aws_security_group.db", "aws_security_group", {"id": "sg-db"}),
    StateResource("aws_security_group_rule.app_in", "aws_security_group_rule",
                  {"id": "sgrule-1", "security_group_id": "sg-app"}),
    StateResource("aws_route_table.main", "aws_route_table", {"id": "rtb-1"}),
    StateResource("aws_route.default", "aws_route", {"id": "r-rtb-1080289494", "route_table_id": "rtb-1"}),
    StateResource("aws_instance.app[0]", "aws_instance", {"id": "i-app0"}),
    StateResource("aws_instance.db[0]", "aws_instance", {"id": "i-db0"}),
    StateResource("aws_nat_gateway.this", "aws_nat_gateway", {"id": "nat-1", "allocation_id": "eipalloc-1"}),
    StateResource("aws_eip.nat", "aws_eip", {"id": "eipalloc-1"}),
]
SNAPSHOT = {"instances": [
    {"InstanceId": "i-app0", "SecurityGroups": [{"GroupId": "sg-app"}]},
    {"InstanceId": "i-db0", "SecurityGroups": [{"GroupId": "sg-db"}]},
]}


def test_touched_covers_children_members_and_named_parents():
    sg = touched(SgOpenedToWorld("sg-app", REGION, RUN), (), STATE, SNAPSHOT)
    # the group, its separate rule resource, and the instance that carries it (isolation findings name it)
    assert {"sg-app", "aws_security_group.app", "aws_security_group_rule.app_in", "sgrule-1", "i-app0",
            "aws_instance.app[0]"} <= sg
    assert not {"sg-db", "i-db0", "aws_instance.db[0]", "rtb-1"} & sg
    route = touched(RouteDeleted("rtb-1", REGION, RUN, "0.0.0.0/0", "gateway"), (), STATE, SNAPSHOT)
    assert {"rtb-1", "aws_route_table.main", "aws_route.default"} <= route
    nat = touched(chaos.NatDeleted("nat-1", REGION, RUN), (), STATE, SNAPSHOT)
    assert {"aws_nat_gateway.this", "aws_eip.nat"} <= nat
    rogue = touched(chaos.RogueInstance("subnet-1", REGION, RUN, "ami-1"), ["i-rogue"], STATE, SNAPSHOT)
    assert "i-rogue" in rogue and "i-app0" not in rogue


def test_detection_only_through_new_findings_about_what_the_fault_touched():
    sg_fault = touched(SgOpenedToWorld("sg-app", REGION, RUN), (), STATE, SNAPSHOT)
    route_fault = touched(RouteDeleted("rtb-1", REGION, RUN, "0.0.0.0/0", "gateway"), (), STATE, SNAPSHOT)
    old = finding("drift", "aws_security_group.app", "sg-app", "ingress: already drifted before the batch")
    baseline = {"drift": [old], "unmanaged": []}
    after = {
        "drift": [old, finding("drift", "aws_route.default", "r-rtb-1080289494", "deleted")],
        "unmanaged": [],
    }
    seen, alarms = attribute(baseline, after, [sg_fault, route_fault])
    # the SG finding existed before the injection: it is not the SG fault's detection
    assert seen[0] == {} and list(seen[1]) == ["drift"] and alarms == []
    # the route's finding does not count for the SG fault either (another fault of the same batch caused it)
    after["drift"].append(finding("drift", "aws_security_group.app", "sg-app", "ingress: tcp 22 from 0.0.0.0/0"))
    seen, alarms = attribute(baseline, after, [sg_fault, route_fault])
    assert [f.found for f in seen[0]["drift"]] == ["ingress: tcp 22 from 0.0.0.0/0"] and alarms == []


def test_a_new_finding_no_fault_explains_is_a_false_alarm():
    scope = touched(SgOpenedToWorld("sg-app", REGION, RUN), (), STATE, SNAPSHOT)
    stray = finding("unmanaged", "", "sg-db", "an unmanaged rule")
    seen, alarms = attribute({"unmanaged": []}, {"unmanaged": [stray]}, [scope])
    assert seen == [{}] and alarms == [stray]


def test_flow_findings_are_about_the_instances_at_their_ends():
    scope = touched(SgOpenedToWorld("sg-app", REGION, RUN), (), STATE, SNAPSHOT)
    breach = finding("reachability", "", "", "reachable", source_instance="i-elsewhere", destination_instance="i-app0")
    seen, alarms = attribute({}, {"reachability": [breach]}, [scope])
    assert seen == [{"reachability": [breach]}] and alarms == []


def test_misses_false_alarms_and_residue_are_chaos_findings():
    fault = SgOpenedToWorld("sg-app", REGION, RUN)
    exp = Experiment(GROUP, outcomes=[Outcome(fault, 1, ["drift", "reachability"], detected=["drift"])])
    exp.false_alarms.append(finding("roles", "", "i-db0", "no role"))
    exp.residue.append(finding("drift", "aws_security_group.app", "sg-app", "ingress still open"))
    got = exp.findings()
    assert [(f.check, f.detail["kind"]) for f in got] == [("chaos", "miss"), ("chaos", "false-alarm"), ("chaos", "residue")]
    assert "missed: no new reachability finding" in got[0].found and "sg_opened_to_world" in got[0].expected
    # a fault that could not be injected is an error, not a miss
    exp.outcomes[0].error = "ClientError: InvalidGroup.NotFound"
    assert [f.detail["kind"] for f in exp.findings()] == ["false-alarm", "residue"]
    assert experiment.matrix_rows(exp) == []


def test_new_findings_compare_without_detail():
    a = finding("drift", "x", "id", "changed", plan={"a": 1})
    b = finding("drift", "x", "id", "changed", plan={"a": 2})
    assert new_findings({"drift": [a]}, {"drift": [b]}) == {"drift": []}


def _sg(group_id, source):
    return {"GroupId": group_id, "VpcId": "vpc-1", "Tags": [{"Key": "Run", "Value": RUN}],
            "IpPermissions": [{"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080,
                               "UserIdGroupPairs": [{"GroupId": source}]}]}


def _snapshot(ids):
    """Two groups, each admitting 8080 from the other; ``ids`` are the AWS ids of app and db on this run."""
    app, db = ids
    return {"region": REGION, "vpcs": [{"VpcId": "vpc-1", "CidrBlock": "10.0.0.0/16"}],
            "security_groups": [_sg(app, db), _sg(db, app)]}


def test_targets_follow_terraform_addresses_and_the_seed_not_aws_ids():
    picks = set()
    for ids in (("sg-0aaa", "sg-0fff"), ("sg-0fff", "sg-0aaa"), ("sg-5", "sg-1")):
        addresses = {ids[0]: "aws_security_group.app", ids[1]: "aws_security_group.db"}
        cands = candidates("flow_rule_revoked", _snapshot(ids), RUN, GROUP, addresses, seed=0)
        assert len(cands) == 2
        picks.add(addresses[cands[0].target])
        batches, skipped = plan_batches(_snapshot(ids), RUN, GROUP, ["flow_rule_revoked"], addresses, seed=0)
        assert addresses[batches[0][0].target] == addresses[cands[0].target] and not skipped
    assert len(picks) == 1, "the same group gave different targets on runs whose AWS ids sort differently"
    # another seed may pick another target, and always the same one for that seed
    addresses = {"sg-0aaa": "aws_security_group.app", "sg-0fff": "aws_security_group.db"}
    orders = {tuple(repr(f) for f in candidates("flow_rule_revoked", _snapshot(("sg-0aaa", "sg-0fff")), RUN, GROUP,
                                                  addresses, seed=s)) for s in range(8)}
    assert len(orders) == 2


def test_flow_rule_revoked_covers_security_group_sources_and_expects_reachability_only_on_a_flow():
    snap = _snapshot(("sg-app", "sg-db"))
    fault = FlowRuleRevoked.select(snap, RUN, GROUP, 0)
    assert fault.source_group in ("sg-app", "sg-db") and not fault.cidr
    assert fault.expected() == ("drift",), "a rule that carries no declared flow is not expected by reachability"
    assert fault._permission()["UserIdGroupPairs"] == [{"GroupId": fault.source_group}]
    snap["flow_rules"] = [("sg-db", "tcp", 8080, 8080, "sg-app")]
    fault = FlowRuleRevoked.select(snap, RUN, GROUP, 0)
    assert (fault.target, fault.source_group, fault.carries_flow) == ("sg-db", "sg-app", True)
    assert fault.expected() == ("drift", "reachability")
    assert eval(repr(fault), vars(chaos)) == fault


def test_the_analyzer_says_which_rules_carry_a_declared_flow():
    """On the recorded peered VPCs: the rules admitting SSH from ops and 8080 from the proxies carry flows;
    with no flow declared through them (METRICS is unreachable already), no rule does."""
    import json
    from pathlib import Path

    from immutable_infra.flows import Flow

    data = Path(__file__).parent / "data" / "reachability"
    snap = json.loads((data / "peered_vpcs.json").read_text())
    addresses = json.loads((data / "peered_vpcs.addresses.json").read_text())
    ssh = Flow("ci@ops-sg", "microservice@prd-sg-slave", "tcp", 22)
    app = Flow("reverse-proxy@prd-sg-slave", "microservice@prd-sg-slave", "tcp", 8080)
    slave_sgs = [g["GroupId"] for g in snap["security_groups"]
                 if {t["Key"]: t["Value"] for t in g.get("Tags") or []}.get("Group") == "prd-sg-slave"]
    every = [r for r in chaos.sg_rules(snap) if r[0] in slave_sgs]
    carrying = experiment.rules_carrying_flows([ssh, app], snap, addresses, slave_sgs)
    assert carrying and set(carrying) < set(every), "only some rules of the group carry a declared flow"
    assert {r[2] for r in carrying} == {22, 8080}
    assert experiment.rules_carrying_flows([], snap, addresses, slave_sgs) == []
    only_ssh = experiment.rules_carrying_flows([ssh], snap, addresses, slave_sgs)
    assert {r[2] for r in only_ssh} == {22}
    # each one really blocks its flow once revoked, by the analyzer's own verdict
    from immutable_infra.checks.reachability import analyze

    for rule in carrying:
        blocked = [f for f in (ssh, app) if not analyze(f, chaos.without_rule(snap, rule), addresses).reachable]
        assert blocked, rule


def test_the_analyzer_says_which_acls_carry_a_declared_ssh_flow():
    """acl_deny_added denies tcp 22: reachability is expected only where that blocks a declared flow
    (on a group whose only flow is 8080, as the realworld test group's, it is drift's alone)."""
    import json
    from pathlib import Path

    from immutable_infra.checks.reachability import analyze
    from immutable_infra.flows import Flow

    data = Path(__file__).parent / "data" / "reachability"
    snap = json.loads((data / "peered_vpcs.json").read_text())
    addresses = json.loads((data / "peered_vpcs.addresses.json").read_text())
    ssh = Flow("ci@ops-sg", "microservice@prd-sg-slave", "tcp", 22)
    app = Flow("reverse-proxy@prd-sg-slave", "microservice@prd-sg-slave", "tcp", 8080)
    acls = [a["NetworkAclId"] for a in snap["network_acls"]]
    carrying = experiment.acls_carrying_flows([ssh, app], snap, addresses, acls)
    assert carrying and set(carrying) < set(acls), "only the ACL in the SSH flow's path carries it"
    for acl in carrying:  # each one really blocks the flow, by the analyzer's own verdict
        assert not analyze(ssh, chaos.with_acl_deny(snap, acl), addresses).reachable
    assert experiment.acls_carrying_flows([app], snap, addresses, acls) == [], "a deny of port 22 blocks no 8080 flow"
    assert experiment.acls_carrying_flows([], snap, addresses, acls) == []


def test_acl_deny_expects_reachability_only_on_a_flow_and_prefers_such_acls():
    def acl(aid):
        return {"NetworkAclId": aid, "Tags": [{"Key": "Run", "Value": RUN}], "Associations": [{"SubnetId": "subnet-1"}],
                "Entries": []}

    snap = {"region": "ap-southeast-1", "network_acls": [acl("acl-1"), acl("acl-2")]}
    fault = chaos.AclDenyAdded.select(snap, RUN, GROUP, 0)
    assert fault.expected() == ("drift",), "a deny that blocks no declared flow is not expected by reachability"
    snap["flow_acls"] = ["acl-2"]
    for index in range(4):
        fault = chaos.AclDenyAdded.select(snap, RUN, GROUP, index)
        assert (fault.target, fault.carries_flow) == ("acl-2", True)
    assert fault.expected() == ("drift", "reachability")
    assert eval(repr(fault), vars(chaos)) == fault


def test_s3_made_public_takes_only_a_bucket_whose_policy_terraform_manages():
    """On a bucket without a managed policy no check sees a public policy and no apply removes it: no target,
    and the experiment says what the fault needs."""
    def bucket(name, policy):
        return {"Name": name, "Tags": {"Run": RUN, "Group": GROUP}, "Policy": policy}

    snap = {"region": "ap-southeast-1", "buckets": [bucket("b-logs", None)]}
    assert chaos.S3MadePublic.select(snap, RUN, GROUP, 0) is None
    batches, skipped = plan_batches(snap, RUN, GROUP, ["s3_made_public"])
    assert not batches and "aws_s3_bucket_policy" in skipped["s3_made_public"]
    snap["buckets"].append(bucket("b-artifacts", '{"Statement": []}'))
    fault = chaos.S3MadePublic.select(snap, RUN, GROUP, 0)
    assert (fault.target, fault.expected()) == ("b-artifacts", ("drift",))


def _peered():
    import json
    from pathlib import Path

    data = Path(__file__).parent / "data" / "reachability"
    snap = json.loads((data / "peered_vpcs.json").read_text())
    addresses = json.loads((data / "peered_vpcs.addresses.json").read_text())
    return snap, addresses


def _table_of(snap, group):
    return next(t["RouteTableId"] for t in snap["route_tables"]
                if {x["Key"]: x["Value"] for x in t.get("Tags") or []}.get("Group") == group)


def test_the_analyzer_says_which_routes_carry_a_declared_flow():
    """The slave's table routes to ops (the SSH flow from ci@ops-sg comes back that way) and to master (no flow of
    the slave's comes from master): only the first carries a declared flow, so only its loss is reachability's."""
    from immutable_infra.checks.reachability import analyze
    from immutable_infra.flows import Flow

    snap, addresses = _peered()
    ssh = Flow("ci@ops-sg", "microservice@prd-sg-slave", "tcp", 22)
    app = Flow("reverse-proxy@prd-sg-slave", "microservice@prd-sg-slave", "tcp", 8080)
    slave = _table_of(snap, "prd-sg-slave")
    routes = [(slave, "10.10.0.0/16"), (slave, "10.20.0.0/16"), (slave, "0.0.0.0/0")]
    assert experiment.routes_carrying_flows([ssh, app], snap, addresses, routes) == [(slave, "10.10.0.0/16")]
    assert not analyze(ssh, chaos.without_route(snap, slave, "10.10.0.0/16"), addresses).reachable
    assert analyze(ssh, chaos.without_route(snap, slave, "10.20.0.0/16"), addresses).reachable
    assert experiment.routes_carrying_flows([app], snap, addresses, routes) == [], "8080 stays inside the VPC"
    assert experiment.routes_carrying_flows([], snap, addresses, routes) == []


def test_route_faults_take_the_groups_own_routes_and_expect_reachability_only_where_a_flow_is_carried():
    snap, _ = _peered()
    slave = _table_of(snap, "prd-sg-slave")
    run = "run-1"
    for table in snap["route_tables"]:
        table["Tags"] = list(table.get("Tags") or []) + [{"Key": "Run", "Value": run}]
    # a peering route toward a group no declared flow comes from: drift's alone
    snap["managed_routes"] = [(slave, "10.20.0.0/16"), (slave, "0.0.0.0/0")]
    snap["flow_routes"] = []
    fault = RouteDeleted.select(snap, run, "prd-sg-slave", 0)
    assert (fault.target, fault.destination, fault.via, fault.carries_flow) == (slave, "10.20.0.0/16", "peering", False)
    assert fault.expected() == ("drift",)
    # the route carrying the SSH flow comes first, and reachability must see it
    snap["managed_routes"].append((slave, "10.10.0.0/16"))
    snap["flow_routes"] = [(slave, "10.10.0.0/16")]
    for cls in (RouteDeleted, chaos.RouteHijacked):
        fault = cls.select(snap, run, "prd-sg-slave", 0)
        assert (fault.destination, fault.carries_flow) == ("10.10.0.0/16", True), cls
        assert fault.expected() == ("drift", "reachability")
        assert eval(repr(fault), vars(chaos)) == fault
    # a route of the group's table that a neighbour's aws_route manages is never a target
    snap["managed_routes"] = [(slave, "0.0.0.0/0")]
    snap["flow_routes"] = []
    targets = {(f.target, f.destination) for f in candidates("route_deleted", snap, run, "prd-sg-slave")}
    assert (slave, "10.10.0.0/16") not in targets and (slave, "10.20.0.0/16") not in targets
    assert chaos.RouteHijacked.select(snap, run, "prd-sg-slave", 0) is None


def test_managed_routes_are_the_groups_aws_route_and_its_inline_routes_no_neighbour_manages():
    own = [
        StateResource("module.net.aws_route_table.private", "aws_route_table", {"id": "rtb-own", "route": [
            {"cidr_block": "0.0.0.0/0", "nat_gateway_id": "nat-1"},          # inline: the group's
            {"cidr_block": "10.20.0.0/16", "vpc_peering_connection_id": "pcx-n"},  # the neighbour's aws_route
            {"cidr_block": "10.10.0.0/16", "vpc_peering_connection_id": "pcx-o"},  # the group's own aws_route
        ]}),
        StateResource("module.peer.aws_route.to_peer[0]", "aws_route",
                      {"id": "r-1", "route_table_id": "rtb-own", "destination_cidr_block": "10.10.0.0/16"}),
        StateResource("module.peer.aws_route.from_peer[0]", "aws_route",
                      {"id": "r-2", "route_table_id": "rtb-ops", "destination_cidr_block": "10.21.0.0/16"}),
    ]
    neighbour = [StateResource("module.peering_slave.aws_route.from_peer[0]", "aws_route",
                               {"id": "r-3", "route_table_id": "rtb-own", "destination_cidr_block": "10.20.0.0/16"})]
    assert experiment.managed_routes(own, own + neighbour) == [
        ("rtb-ops", "10.21.0.0/16"), ("rtb-own", "0.0.0.0/0"), ("rtb-own", "10.10.0.0/16")]


def test_peering_deleted_takes_only_a_peering_the_groups_state_manages():
    snap, _ = _peered()
    run = "run-1"
    for pcx in snap["peering_connections"]:
        pcx["Tags"] = list(pcx.get("Tags") or []) + [{"Key": "Run", "Value": run}]
        pcx["Status"] = {"Code": "active"}
    slave_vpc = next(v for v in snap["vpcs"] if v["CidrBlock"] == "10.30.0.0/16")
    snap["vpcs"] = [slave_vpc]  # the slave's describe: its own VPC only
    touching = sorted(p["VpcPeeringConnectionId"] for p in chaos._own_peerings(snap))
    assert len(touching) == 2, "the slave's VPC has two peerings: with ops and with master"
    snap["managed_peerings"] = [touching[1]]  # the other one a neighbour requested
    assert [f.target for f in candidates("peering_deleted", snap, run, "prd-sg-slave")] == [touching[1]]
    snap["managed_peerings"] = []
    assert chaos.PeeringDeleted.select(snap, run, "prd-sg-slave", 0) is None


def test_a_peering_the_group_only_accepts_is_not_its_to_delete():
    own = [StateResource("aws_vpc_peering_connection.to_ops", "aws_vpc_peering_connection", {"id": "pcx-req"}),
           StateResource("aws_vpc_peering_connection_accepter.from_cn", "aws_vpc_peering_connection_accepter",
                         {"id": "pcx-acc", "vpc_peering_connection_id": "pcx-acc"})]
    assert experiment.ownership(own, [])["managed_peerings"] == ["pcx-req"]


def test_flow_rule_revoked_leaves_a_rule_a_neighbours_terraform_manages():
    snap = _snapshot(("sg-app", "sg-db"))
    # The neighbour's aws_security_group_rule admits sg-app into sg-db: the group's drift cannot see it go.
    neighbour = [
        StateResource("module.peer.aws_security_group_rule.in[0]", "aws_security_group_rule", {
            "id": "sgrule-1", "type": "ingress", "security_group_id": "sg-db", "protocol": "6",
            "from_port": 8080, "to_port": 8080, "source_security_group_id": "sg-app", "cidr_blocks": []}),
        StateResource("module.peer.aws_security_group_rule.out", "aws_security_group_rule", {
            "id": "sgrule-2", "type": "egress", "security_group_id": "sg-app", "protocol": "-1",
            "from_port": 0, "to_port": 0, "cidr_blocks": ["0.0.0.0/0"]}),
    ]
    snap["foreign_rules"] = experiment.foreign_rules(neighbour)
    assert snap["foreign_rules"] == [("sg-db", "6", 8080, 8080, "sg-app")]
    assert [(f.target, f.source_group) for f in candidates("flow_rule_revoked", snap, RUN, GROUP)] == [("sg-app", "sg-db")]
    snap["flow_rules"] = [("sg-db", "tcp", 8080, 8080, "sg-app")]  # even when it carries a flow
    assert FlowRuleRevoked.select(snap, RUN, GROUP, 0).target == "sg-app"
    # all traffic: EC2 answers -1 for the ports, Terraform stores 0
    assert chaos.rule_key(("sg-1", "-1", -1, -1, "10.0.0.0/8")) == chaos.rule_key(("sg-1", "all", 0, 0, "10.0.0.0/8"))


def test_route53_record_changed_takes_only_a_record_the_groups_state_manages():
    zone = {"Id": "Z1", "Name": "corp.internal.", "Tags": {"Run": RUN}, "Records": [
        {"Name": "db.corp.internal.", "Type": "A", "ResourceRecords": [{"Value": "10.0.1.5"}]},
        {"Name": "web.corp.internal.", "Type": "A", "ResourceRecords": [{"Value": "10.9.1.5"}]},
    ]}
    snap = {"region": REGION, "hosted_zones": [zone]}
    assert len(candidates("route53_record_changed", snap, RUN, GROUP)) == 2
    own = [StateResource("aws_route53_record.db", "aws_route53_record",
                         {"id": "Z1_db_A", "zone_id": "Z1", "name": "db", "fqdn": "DB.corp.internal"})]
    snap["managed_records"] = experiment.managed_records(own)
    assert [f.record for f in candidates("route53_record_changed", snap, RUN, GROUP)] == ["db.corp.internal."]
    snap["managed_records"] = []  # the zone is shared and every record in it is a neighbour's
    assert chaos.Route53RecordChanged.select(snap, RUN, GROUP, 0) is None


def test_a_security_group_or_instance_a_neighbour_created_in_the_groups_vpc_is_no_target():
    # The ops group's Terraform put a monitoring security group and an agent instance into this group's VPC: opening
    # or terminating them is no fault of this group (its drift cannot see it, its apply cannot repair it).
    snap = _snapshot(("sg-app", "sg-mon"))
    tagged = [{"Key": "Run", "Value": RUN}]
    snap["instances"] = [
        {"InstanceId": iid, "State": {"Name": "running"}, "VpcId": "vpc-1", "Tags": tagged,
         "SecurityGroups": [{"GroupId": sg}]} for iid, sg in (("i-app", "sg-app"), ("i-agent", "sg-mon"))]
    snap["instances"].append({"InstanceId": "i-asg", "State": {"Name": "running"}, "VpcId": "vpc-1", "Tags": tagged,
                              "SecurityGroups": [{"GroupId": "sg-app"}]})  # an autoscaling group's: no state has it
    own = [StateResource("module.app.aws_security_group.this[0]", "aws_security_group", {"id": "sg-app"}),
           StateResource("module.app.aws_instance.this[\"a\"]", "aws_instance", {"id": "i-app"})]
    neighbour = [StateResource("aws_security_group.monitoring", "aws_security_group", {"id": "sg-mon"}),
                 StateResource("aws_instance.agent", "aws_instance", {"id": "i-agent"}),
                 StateResource("data.aws_instance.app", "aws_instance", {"id": "i-app"}, mode="data")]
    # before: the neighbour's are candidates
    assert {f.target for f in candidates("sg_opened_to_world", snap, RUN, GROUP)} == {"sg-app", "sg-mon"}
    assert {f.target for f in candidates("instance_terminated", snap, RUN, GROUP)} == {"i-app", "i-agent", "i-asg"}
    mine = experiment.without_foreign(snap, own, neighbour)
    assert [f.target for f in candidates("sg_opened_to_world", mine, RUN, GROUP)] == ["sg-app"]
    assert {f.target for f in candidates("instance_terminated", mine, RUN, GROUP)} == {"i-app", "i-asg"}
    assert len(snap["instances"]) == 3, "the describe snapshot it came from is left as it was"
