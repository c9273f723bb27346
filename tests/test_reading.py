"""Read once: a verification pass reads each group's state and describe snapshot once; a new pass sees every change;
a chaos batch runs only the checks its faults can change, and still flags a finding no fault explains.

Milliseconds: three groups in moto in-process (``mock_aws``), a stand-in Terraform that counts its ``show -json``
calls, the real checks and the real experiment.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from moto import mock_aws

from immutable_infra import experiment, live, verify
from immutable_infra.catalog import Group
from immutable_infra.chaos import CATALOG, InstanceTypeChanged, RogueInstance, SgOpenedToWorld
from immutable_infra.findings import Finding
from immutable_infra.reading import Reading

ROOT = Path(__file__).parent.parent
REGION = "ap-southeast-1"
RUN = "r1"
GROUPS = ("g1", "g2", "g3")
ALL = list(verify.CHECKS)


def _res(address: str, rtype: str, values: dict[str, Any]) -> dict[str, Any]:
    return {"address": address, "mode": "managed", "type": rtype, "name": address.split(".")[-1], "values": values}


class FakeTerraform:
    """What the checks use of a group's Terraform: ``state()`` (one ``show -json`` each) and a refresh-only plan."""

    def __init__(self, name: str, calls: Counter) -> None:
        self.name, self.calls, self.resources = name, calls, []

    def state(self) -> dict[str, Any]:
        self.calls[f"show:{self.name}"] += 1
        return {"format_version": "1.0", "values": {"root_module": {"resources": [dict(r) for r in self.resources]}}}

    def refresh_plan(self) -> dict[str, Any]:
        self.calls[f"refresh:{self.name}"] += 1
        return {"format_version": "1.2", "prior_state": self.state_json(), "resource_drift": []}

    def state_json(self) -> dict[str, Any]:
        return {"values": {"root_module": {"resources": [dict(r) for r in self.resources]}}}


class FakeHarness:
    """Catalog, run records, deployer and sandbox as verify and experiment read them; groups built in moto."""

    def __init__(self) -> None:
        self.calls: Counter = Counter()
        self.groups = {n: Group(name=n, path=ROOT / "tests" / "groups" / n, kind="application", region=REGION,
                                vpc_cidr=f"10.{i}.0.0/16", roles={"web": 1}) for i, n in enumerate(GROUPS, 1)}
        self.catalog = SimpleNamespace(get=self.groups.__getitem__, names=lambda: list(GROUPS),
                                       groups_dir=ROOT / "tests" / "groups")
        self.images_dir = ROOT / "fixtures" / "images"
        self.tf = {n: FakeTerraform(n, self.calls) for n in GROUPS}
        self.deployer = SimpleNamespace(terraform=self.tf.__getitem__)
        self.run = SimpleNamespace(id=RUN, order=list(GROUPS), groups={
            n: SimpleNamespace(outputs={}, region=REGION, status="applied", fingerprints={}) for n in GROUPS})
        self._clients: dict[tuple[str, str], Any] = {}
        self.sandbox = SimpleNamespace(client=self.client)
        self.repairs: list[str] = []
        self.said: list[str] = []
        self.say = self.said.append  # the chaos experiment's progress lines
        for i, name in enumerate(GROUPS, 1):
            self._build(name, i)

    def client(self, service: str, region: str) -> Any:
        if (service, region) not in self._clients:
            c = boto3.client(service, region_name=region)
            c.meta.events.register("before-call.*.*", self._count)
            self._clients[(service, region)] = c
        return self._clients[(service, region)]

    def _count(self, model, **_: Any) -> None:
        self.calls[f"aws:{model.name}"] += 1

    def ami(self) -> str:
        ec2 = self.client("ec2", REGION)
        found = ec2.describe_images(Owners=["self"])["Images"]
        return found[0]["ImageId"] if found else ec2.register_image(Name="base", RootDeviceName="/dev/sda1")["ImageId"]

    def _build(self, name: str, i: int) -> None:
        ec2 = self.client("ec2", REGION)
        tags = [{"Key": "Run", "Value": RUN}, {"Key": "Group", "Value": name}]
        spec = lambda kind, extra=(): [{"ResourceType": kind, "Tags": tags + list(extra)}]  # noqa: E731
        vpc = ec2.create_vpc(CidrBlock=f"10.{i}.0.0/16", TagSpecifications=spec("vpc"))["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.{i}.1.0/24", TagSpecifications=spec(
            "subnet", [{"Key": "Tier", "Value": "public"}]))["Subnet"]["SubnetId"]
        sg = ec2.create_security_group(GroupName=f"{name}-web", Description="web", VpcId=vpc,
                                       TagSpecifications=spec("security-group"))["GroupId"]
        ami = self.ami()
        inst = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, SubnetId=subnet, SecurityGroupIds=[sg],
                                 TagSpecifications=spec("instance", [{"Key": "Role", "Value": "web"}]))["Instances"][0]
        default_sg = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]},
                                                           {"Name": "group-name", "Values": ["default"]}])
        rt = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"][0]
        acl = ec2.describe_network_acls(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["NetworkAcls"][0]
        self.tf[name].resources = [
            _res("aws_vpc.this", "aws_vpc", {"id": vpc, "cidr_block": f"10.{i}.0.0/16"}),
            _res("aws_subnet.a", "aws_subnet", {"id": subnet, "vpc_id": vpc}),
            _res("aws_security_group.web", "aws_security_group", {"id": sg, "vpc_id": vpc}),
            _res("aws_default_security_group.d", "aws_default_security_group",
                 {"id": default_sg["SecurityGroups"][0]["GroupId"]}),
            _res("aws_default_route_table.d", "aws_default_route_table", {"id": rt["RouteTableId"]}),
            _res("aws_default_network_acl.d", "aws_default_network_acl", {"id": acl["NetworkAclId"]}),
            _res("aws_instance.web", "aws_instance", {"id": inst["InstanceId"], "ami": ami,
                                                      "tags": {"Role": "web", "Group": name}}),
        ]

    # what the experiment calls after a batch
    def repair(self, name: str, settle: bool = True) -> float:
        self.repairs.append(f"repair:{name}")
        return 0.0

    def settle(self, name: str, proven_plan: bool = False) -> None:
        self.repairs.append(f"settle:{name}")


@pytest.fixture
def h(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")  # thousands of AMIs: seconds per describe_images
    with mock_aws():
        yield FakeHarness()


def shows(h: FakeHarness) -> dict[str, int]:
    return {k: v for k, v in h.calls.items() if k.startswith("show:")}


def counting(monkeypatch, module: Any, attr: str, calls: Counter) -> None:
    real = getattr(module, attr)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls[attr] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(module, attr, wrapper)


def test_a_pass_reads_each_state_and_each_snapshot_once(h, monkeypatch):
    snaps: Counter = Counter()
    counting(monkeypatch, live, "describe_group", snaps)
    counting(monkeypatch, live, "run_snapshot", snaps)
    h.calls.clear()
    results = verify.verify_group(h, "g1", ALL)
    assert set(results) == set(ALL)
    # one show -json per group (g1's own, the neighbours' for drift, unmanaged and reachability), one refresh plan
    assert shows(h) == {"show:g1": 1, "show:g2": 1, "show:g3": 1}
    assert h.calls["refresh:g1"] == 1
    # one describe snapshot (unmanaged, roles and parity share it), one run snapshot (reachability)
    assert snaps == {"describe_group": 1, "run_snapshot": 1}
    assert h.calls["aws:DescribeVpcs"] == 1 + 3, "describe_group once, and the run snapshot once per group"
    assert h.calls["aws:DescribeNetworkInterfaces"] == 1


def test_applicable_reads_the_state_once_for_every_check(h):
    h.calls.clear()
    ok, not_here = verify.applicable(h, "g1", ALL)
    assert ok == ALL and not not_here
    assert shows(h) == {"show:g1": 1}


def test_a_check_called_alone_is_a_pass_of_its_own(h):
    h.calls.clear()
    verify.unmanaged(h, "g1")
    verify.unmanaged(h, "g1")
    assert shows(h) == {"show:g1": 2, "show:g2": 2, "show:g3": 2}


def test_a_new_pass_sees_what_changed_since_the_last(h):
    """No stale cache: an out-of-band change and a state change after one pass are both seen by the next."""
    assert verify.verify_group(h, "g1", ["unmanaged"])["unmanaged"].findings == []
    ec2 = h.client("ec2", REGION)
    vpc = h.tf["g1"].resources[0]["values"]["id"]
    rogue = ec2.create_security_group(GroupName="rogue", Description="by hand", VpcId=vpc)["GroupId"]
    found = verify.verify_group(h, "g1", ["unmanaged"])["unmanaged"].findings
    assert [f.aws_id for f in found] == [rogue]
    # the state now manages it (as an apply would): the next pass reads the new state
    h.tf["g1"].resources.append(_res("aws_security_group.rogue", "aws_security_group", {"id": rogue, "vpc_id": vpc}))
    assert verify.verify_group(h, "g1", ["unmanaged"])["unmanaged"].findings == []


def test_a_reading_hands_out_copies_so_one_check_cannot_change_anothers_snapshot(h):
    reading = Reading(h)
    snap = reading.describe("g1")
    snap["hosted_zones"] = ["added by a caller"]
    snap["instances"] = []
    again = reading.describe("g1")
    assert "hosted_zones" not in again and len(again["instances"]) == 1
    assert reading.reads == ["describe:g1", "state:g1"]  # the describe entry is logged as it starts


# -- chaos: which checks each phase of a batch runs


def test_affected_checks_are_each_faults_expected_and_conditional_checks():
    sg = SgOpenedToWorld("sg-1", REGION, RUN)
    assert experiment.affected_checks([sg], ALL) == ["drift", "unmanaged", "reachability"]
    assert experiment.proof_checks([sg], ALL) == ["drift", "unmanaged", "reachability"]
    batch = [InstanceTypeChanged("i-1", REGION, RUN), RogueInstance("subnet-1", REGION, RUN, "ami-1")]
    assert experiment.affected_checks(batch, ALL) == ["mutation", "drift", "unmanaged", "roles"]
    assert experiment.affected_checks(batch, ["drift", "parity"]) == ["drift"]
    assert experiment.proof_checks([sg], ["mutation", "parity"]) == []
    for name, cls in CATALOG.items():  # every check a fault may be expected to be seen by is watched
        assert set(cls.expected_checks) | set(cls.conditional_checks) <= set(ALL), name


def fake_checks(monkeypatch, stray: dict[str, Finding] | None = None, real: tuple[str, ...] = ("unmanaged",)
                ) -> list[tuple[str, str]]:
    """Checks that log their calls; the ``real`` ones run, the others pass. From the injection on (a check's
    second call) ``stray`` adds one finding."""
    log: list[tuple[str, str]] = []
    stray = stray or {}

    def make(check: str):
        real_check = verify.CHECKS[check]

        def run(h, name, reading=None):
            log.append((check, name))
            result = real_check(h, name, reading) if check in real else verify.Result(check)
            if check in stray and sum(1 for c, _ in log if c == check) >= 2:
                result.findings.append(stray[check])
            return result
        return run

    for check in ALL:
        monkeypatch.setitem(verify.CHECKS, check, make(check))
    return log


def test_a_batch_runs_only_the_checks_its_faults_can_change(h, monkeypatch):
    log = fake_checks(monkeypatch)
    h.calls.clear()
    exp = experiment.run(h, "g1", ["sg_opened_to_world"], ALL)
    assert exp.watched == {1: {"baseline": ["drift", "unmanaged", "reachability"],
                               "after": ["drift", "unmanaged", "reachability"],
                               "proof": ["drift", "unmanaged", "reachability"]}}
    ran = Counter(c for c, _ in log)
    assert ran == {"drift": 3, "unmanaged": 3, "reachability": 3}, "mutation, roles and parity never ran"
    assert h.repairs == ["repair:g1", "settle:g1"] and not exp.false_alarms and not exp.residue
    # the planner, the attribution's state and the baseline share one reading (one show -json of each group); after
    # the injection and in the proof, a new pass each (the real unmanaged check reads); the faked ones read nothing
    assert shows(h) == {"show:g1": 3, "show:g2": 3, "show:g3": 3}
    assert "unmanaged" not in exp.outcome("sg_opened_to_world").detected, "inline rules: unmanaged has no say"


def test_a_new_finding_in_a_check_that_ran_is_still_a_false_alarm(h, monkeypatch):
    stray = Finding("reachability", "g1", "aws_subnet.a", "subnet-stray", "as declared", "made up by the test")
    fake_checks(monkeypatch, {"reachability": stray})
    exp = experiment.run(h, "g1", ["sg_opened_to_world"], ALL)
    assert exp.false_alarms == [stray]
    # still there in the proof: residue, never settled
    assert exp.residue == [stray] and exp.unsettled == [1] and h.repairs == ["repair:g1"]


def test_what_the_fault_left_is_seen_by_the_proof(h, monkeypatch):
    """The real unmanaged check in the proof: a rogue instance its undo failed to remove is residue."""
    fake_checks(monkeypatch)
    monkeypatch.setattr(RogueInstance, "undo", lambda self, clients: None)
    exp = experiment.run(h, "g1", ["rogue_instance"], ALL)
    outcome = exp.outcome("rogue_instance")
    assert outcome is not None and "unmanaged" in outcome.detected
    assert exp.watched[1]["after"] == ["unmanaged", "roles"]
    assert [f.check for f in exp.residue] == ["unmanaged"] and exp.unsettled == [1]


def test_a_check_a_fault_can_change_though_not_expected_to_still_watches(h, monkeypatch):
    """Revoking the only rule that opens the web role's port 80 closes it: roles (conditional for the fault, not
    expected) runs after the injection and sees it, attributed to the fault, never dropped by the narrowing."""
    ec2 = h.client("ec2", REGION)
    sg = h.tf["g1"].resources[2]["values"]["id"]
    ec2.create_tags(Resources=[sg], Tags=[{"Key": "Purpose", "Value": "web"}])
    ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": "10.1.0.0/16"}]}])
    assert verify.roles(h, "g1").findings == [], "the web instance meets its role before the fault"
    log = fake_checks(monkeypatch, real=("roles",))
    exp = experiment.run(h, "g1", ["flow_rule_revoked"], ALL)
    outcome = exp.outcome("flow_rule_revoked")
    assert outcome is not None and outcome.fault.target == sg and not outcome.error
    assert exp.watched[1]["after"] == ["drift", "roles", "reachability"]
    assert "roles" in outcome.detected and not exp.false_alarms
    assert ("roles", "g1") in log


def test_a_rule_opened_by_hand_beside_rule_resources_is_seen_by_unmanaged_after_injection(h, monkeypatch):
    """A group whose rules are aws_security_group_rule resources: the opened rule is unmanaged (a conditional check
    of the fault), so unmanaged watches the batch and sees it."""
    sg = h.tf["g1"].resources[2]["values"]["id"]
    h.tf["g1"].resources.append(_res("aws_security_group_rule.web_80", "aws_security_group_rule", {
        "id": "sgrule-1", "security_group_id": sg, "type": "ingress", "protocol": "tcp", "from_port": 80,
        "to_port": 80, "cidr_blocks": ["10.1.0.0/16"]}))
    h.client("ec2", REGION).authorize_security_group_ingress(GroupId=sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": "10.1.0.0/16"}]}])
    fake_checks(monkeypatch)
    exp = experiment.run(h, "g1", ["sg_opened_to_world"], ALL)
    outcome = exp.outcome("sg_opened_to_world")
    assert outcome is not None and outcome.fault.target == sg and not outcome.error
    assert "unmanaged" in outcome.detected and not exp.false_alarms and not exp.residue


def test_a_repair_whose_proof_saw_no_drift_at_all_is_not_settled(h, monkeypatch):
    """The proof's refresh-only plan (the real drift check) has no drift entry and no output change: a refresh-only
    apply would read nothing into the state, so the batch ends without one (and still counts as settled)."""
    fake_checks(monkeypatch, real=("unmanaged", "drift"))
    exp = experiment.run(h, "g1", ["sg_opened_to_world"], ALL)
    assert h.repairs == ["repair:g1"] and exp.unsettled == [] and not exp.residue
    assert any("nothing to settle" in line for line in h.said)


@pytest.mark.parametrize("extra", [
    {"resource_drift": [{"address": "aws_vpc.this", "mode": "managed", "type": "aws_vpc", "name": "this",
                         "change": {"actions": ["update"], "before": {"id": "vpc-1", "tags": None},
                                    "after": {"id": "vpc-1", "tags": {}}}}]},   # noise only: still read in
    {"output_changes": {"vpc_id": {"actions": ["update"]}}},                   # an output the settle would update
])
def test_a_repair_whose_proof_saw_any_drift_or_output_change_is_settled(h, monkeypatch, extra):
    fake_checks(monkeypatch, real=("unmanaged", "drift"))
    tf = h.tf["g1"]
    monkeypatch.setattr(tf, "refresh_plan", lambda: {"format_version": "1.2", "prior_state": tf.state_json(),
                                                     "resource_drift": [], **extra})
    exp = experiment.run(h, "g1", ["sg_opened_to_world"], ALL)
    assert h.repairs == ["repair:g1", "settle:g1"] and exp.unsettled == []


def test_a_batch_after_a_proof_with_nothing_to_settle_takes_that_proof_as_its_baseline(h, monkeypatch):
    """Nothing changes between a proof that had nothing to settle and the next planning: that proof's pass plans the
    next batch and its results are the baseline; only the baseline checks the proof did not run, run."""
    log = fake_checks(monkeypatch, real=("unmanaged", "drift"))
    h.calls.clear()
    exp = experiment.run(h, "g1", ["role_tag_flipped", "group_tag_flipped"], ALL)
    assert sorted(exp.watched) == [1, 2], "the two faults share an instance: two batches"
    assert "baseline_from_proof" not in exp.watched[1]
    reused = exp.watched[2]["baseline_from_proof"]
    assert "drift" in reused and reused == [c for c in exp.watched[2]["baseline"] if c in exp.watched[1]["proof"]]
    assert Counter(c for c, _ in log)["drift"] == 5, "baseline, after, proof; then after, proof"
    assert h.calls["refresh:g1"] == 5
    assert h.repairs == ["repair:g1", "repair:g1"] and not exp.false_alarms and not exp.residue
    assert sorted((o.fault.name, o.error) for o in exp.outcomes) == [("group_tag_flipped", ""), ("role_tag_flipped", "")]
    assert sorted(o.batch for o in exp.outcomes) == [1, 2]
    assert any("from the proof of batch 1" in line for line in h.said)


def test_after_a_settle_the_next_batch_takes_a_baseline_of_its_own(h, monkeypatch):
    """A settle writes the state after the proof: the next batch reads anew and runs its whole baseline."""
    log = fake_checks(monkeypatch, real=("unmanaged", "drift"))
    tf = h.tf["g1"]
    monkeypatch.setattr(tf, "refresh_plan", lambda: {"format_version": "1.2", "prior_state": tf.state_json(),
                                                     "resource_drift": [], "output_changes": {"x": {"actions": ["update"]}}})
    exp = experiment.run(h, "g1", ["role_tag_flipped", "group_tag_flipped"], ALL)
    assert sorted(exp.watched) == [1, 2] and all("baseline_from_proof" not in w for w in exp.watched.values())
    assert Counter(c for c, _ in log)["drift"] == 6
    assert h.repairs == ["repair:g1", "settle:g1", "repair:g1", "settle:g1"]
