"""Chaos: the fault catalog, its safety rules, dry runs and the detection matrix.

A *fault* is one out-of-band change to a running group, the kind a person
with console access makes: an instance resized in place, a security group
opened to the world, a route deleted, a rogue server launched. Each fault
is a frozen dataclass whose ``repr`` is valid Python, so a Hypothesis state
machine that injects faults prints a program that replays them::

    SgOpenedToWorld(target='sg-123', region='ap-southeast-1', run_id='r1')

Life of a fault:

- ``select(snapshot, run_id, group, rng_or_index)`` picks a target from a
  describe snapshot (``immutable_infra.live.describe_group``, plus
  ``hosted_zones``/``buckets``/``images`` from :func:`describe_extras` for
  the faults that need them), only among resources tagged ``Run=<run_id>``;
- ``plan()`` says which calls ``inject`` would make (``--chaos-dry-run``);
- ``inject(clients)`` first describes every resource it will write to and
  refuses (:class:`FaultRefused`) unless each carries the run's ``Run`` tag,
  as AWS Fault Injection Service refuses targets outside its tag filter;
- repair is a Terraform apply for every fault (``REPAIR``); faults that add
  something an apply may not remove (a rogue instance, an out-of-band
  replacement, a rule added by hand to a security group or network ACL whose
  rules Terraform manages as separate resources) also have ``undo(clients)``,
  which removes exactly what they added.

``expected_checks`` says which of our checks see the fault whatever group it
hits; ``conditional_checks`` names the checks that see it only in some
groups or on some targets, and why; ``Fault.expected()`` is the tuple for
this very target, decided from the group (``FlowRuleRevoked`` expects
reachability only on a rule that carries a declared flow).
:func:`candidates` orders a fault's targets by Terraform address and a seed;
:func:`touched` and :func:`finding_resources` are what the experiment
attributes new findings with. :class:`Chaos` is the orchestrator that enforces audit
mode and dry runs; :func:`detection_matrix` turns (fault, expected, detected)
results into the fault x check matrix written to ``reports/``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from immutable_infra.errors import ToolError

#: The public names of our checks, in report order.
CHECKS: tuple[str, ...] = ("mutation", "drift", "unmanaged", "roles", "reachability", "parity")

#: How every fault is repaired: a Terraform apply restores the declared state.
REPAIR = "by apply"

#: The tag that marks a resource as part of one ephemeral run.
RUN_TAG = "Run"

#: ``(service, region) -> boto3 client``, e.g. ``Sandbox.client``.
Clients = Callable[[str, str], Any]

#: Cells of the detection matrix.
DETECTED, MISSED, NOT_EXPECTED, UNEXPECTED = "detected", "missed", "not-expected", "unexpected"


class FaultRefused(ToolError):
    """Chaos would touch something it must not. ``code`` says why, for tests and reports:

    ``audit`` (audit mode never writes), ``not-in-run`` (the target lacks the
    run's Run tag), ``gone`` (the target does not exist), ``other-run`` (the
    fault was made for another run), ``not-disjoint`` (a batch shares
    resources), ``unknown-resource`` (chaos cannot verify that kind of id).
    """

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def _tags(item: Mapping[str, Any] | None) -> dict[str, str]:
    return {t["Key"]: t.get("Value", "") for t in (item or {}).get("Tags") or () if "Key" in t}


def _has_run(item: Mapping[str, Any], run_id: str) -> bool:
    return _tags(item).get(RUN_TAG) == run_id


def _pick(candidates: Sequence[Any], rng_or_index: int | random.Random) -> Any:
    if not candidates:
        return None
    if isinstance(rng_or_index, random.Random):
        return rng_or_index.choice(list(candidates))
    return candidates[int(rng_or_index) % len(candidates)]


def _ignore_not_found(call: Callable[[], Any]) -> None:
    """Run an undo call; what it would remove being gone already is fine."""
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - botocore ClientError, without importing botocore here
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        if not (code.endswith("NotFound") or code.endswith(".NotFound")):
            raise


def _alive(instance: Mapping[str, Any]) -> bool:
    return (instance.get("State") or {}).get("Name") not in ("terminated", "shutting-down")


def _instances(snapshot: Mapping[str, Any], run_id: str, state: str | None = "running") -> list[dict[str, Any]]:
    out = [i for i in snapshot.get("instances", []) if _alive(i) and _has_run(i, run_id)]
    if state:
        out = [i for i in out if (i.get("State") or {}).get("Name") == state]
    return sorted(out, key=lambda i: i["InstanceId"])


def _instance_sgs(instance: Mapping[str, Any]) -> list[str]:
    ids = [g["GroupId"] for g in instance.get("SecurityGroups") or () if g.get("GroupId")]
    for eni in instance.get("NetworkInterfaces") or ():
        ids += [g["GroupId"] for g in eni.get("Groups") or () if g.get("GroupId") and g["GroupId"] not in ids]
    return ids


def _route_via(route: Mapping[str, Any]) -> tuple[str, str] | None:
    """(kind, target id) of a non-local, active route, or None."""
    if route.get("State") == "blackhole" or not route.get("DestinationCidrBlock"):
        return None
    if route.get("VpcPeeringConnectionId"):
        return "peering", route["VpcPeeringConnectionId"]
    if route.get("NatGatewayId"):
        return "nat", route["NatGatewayId"]
    gateway = route.get("GatewayId") or ""
    if gateway.startswith("igw-"):
        return "gateway", gateway
    return None


def _own_peerings(snapshot: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Peerings with one side in the group's VPCs (moto 5.2.5 ignores the describe filter: it lists all)."""
    own = {v["VpcId"] for v in snapshot.get("vpcs", [])}
    return [p for p in snapshot.get("peering_connections", [])
            if own & {(p.get(side) or {}).get("VpcId") for side in ("RequesterVpcInfo", "AccepterVpcInfo")}]


def _peer_cidrs(snapshot: Mapping[str, Any]) -> set[str]:
    """CIDRs of the VPCs on the other side of the group's peerings."""
    own = {v["VpcId"] for v in snapshot.get("vpcs", [])}
    out = set()
    for pcx in _own_peerings(snapshot):
        for side in ("RequesterVpcInfo", "AccepterVpcInfo"):
            info = pcx.get(side) or {}
            if info.get("VpcId") not in own and info.get("CidrBlock"):
                out.add(info["CidrBlock"])
    return out


# -- verifying targets right before acting

def _describe_tags(clients: Clients, region: str, resource: str) -> dict[str, str] | None:
    """The live tags of one resource, or None when it does not exist (or is gone)."""
    try:
        return _describe_tags_or_raise(clients, region, resource)
    except Exception as exc:  # noqa: BLE001 - botocore ClientError, without importing botocore here
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        if code.endswith("NotFound") or code.endswith(".Malformed"):
            return None
        raise


def _describe_tags_or_raise(clients: Clients, region: str, resource: str) -> dict[str, str] | None:
    ec2 = clients("ec2", region)
    kind = resource.split("-", 1)[0]
    if kind == "i":
        res = ec2.describe_instances(InstanceIds=[resource])["Reservations"]
        items = [i for r in res for i in r["Instances"] if _alive(i)]
    elif kind == "sg":
        items = ec2.describe_security_groups(GroupIds=[resource])["SecurityGroups"]
    elif kind == "rtb":
        items = ec2.describe_route_tables(RouteTableIds=[resource])["RouteTables"]
    elif kind == "acl":
        items = ec2.describe_network_acls(NetworkAclIds=[resource])["NetworkAcls"]
    elif kind == "nat":
        items = [n for n in ec2.describe_nat_gateways(NatGatewayIds=[resource])["NatGateways"]
                 if n.get("State") not in ("deleted", "deleting")]
    elif kind == "pcx":
        items = [p for p in ec2.describe_vpc_peering_connections(VpcPeeringConnectionIds=[resource])[
            "VpcPeeringConnections"] if (p.get("Status") or {}).get("Code") != "deleted"]
    elif kind == "subnet":
        items = ec2.describe_subnets(SubnetIds=[resource])["Subnets"]
    elif kind == "igw":
        items = ec2.describe_internet_gateways(InternetGatewayIds=[resource])["InternetGateways"]
    elif kind == "vpc":
        items = ec2.describe_vpcs(VpcIds=[resource])["Vpcs"]
    else:
        raise FaultRefused(f"chaos does not know how to verify the tags of {resource}", "unknown-resource")
    return _tags(items[0]) if items else None


def _zone_tags(clients: Clients, zone_id: str) -> dict[str, str]:
    r53 = clients("route53", "us-east-1")
    bare = zone_id.split("/")[-1]
    got = r53.list_tags_for_resource(ResourceType="hostedzone", ResourceId=bare)
    return {t["Key"]: t.get("Value", "") for t in got.get("ResourceTagSet", {}).get("Tags", [])}


def _bucket_tags(clients: Clients, region: str, bucket: str) -> dict[str, str]:
    s3 = clients("s3", region)
    try:
        got = s3.get_bucket_tagging(Bucket=bucket)
    except Exception as exc:  # noqa: BLE001 - NoSuchTagSet: a bucket without tags
        if "NoSuchTagSet" in str(exc) or "NoSuchTagSetError" in str(exc):
            return {}
        raise
    return {t["Key"]: t.get("Value", "") for t in got.get("TagSet", [])}


def _refuse_unless_run(what: str, tags: dict[str, str] | None, run_id: str, fault: str) -> None:
    if tags is None:
        raise FaultRefused(f"{fault}: target {what} does not exist (any more); nothing injected", "gone")
    if tags.get(RUN_TAG) != run_id:
        found = f"Run={tags[RUN_TAG]!r}" if RUN_TAG in tags else "no Run tag"
        raise FaultRefused(
            f"{fault}: refusing to touch {what}: it lacks the tag {RUN_TAG}={run_id} of the current run "
            f"(found {found}); chaos only acts on resources of its own ephemeral run", "not-in-run")


# -- the fault base

@dataclass(frozen=True)
class Fault:
    """One out-of-band change, aimed at ``target`` in ``region`` for the run ``run_id``.

    Subclasses set ``name`` (the public word used in code, reports and test
    ids), ``expected_checks`` and ``conditional_checks``, and implement
    ``select``, ``plan`` and ``_inject``. ``resources`` are the AWS ids it
    writes to; the ones that are EC2 ids are tag-verified before acting.
    """

    target: str
    region: str
    run_id: str

    name: ClassVar[str] = ""
    expected_checks: ClassVar[tuple[str, ...]] = ()
    #: check -> when it also sees the fault (not every group, not every target)
    conditional_checks: ClassVar[Mapping[str, str]] = {}
    #: what the fault does, in one line (for the catalog listing and reports)
    summary: ClassVar[str] = ""
    repair: ClassVar[str] = REPAIR
    #: True when the fault adds something Terraform will not delete (``undo`` removes it)
    adds_unmanaged: ClassVar[bool] = False
    #: what a target must be, said when a group has none (the chaos test's skip reason)
    needs: ClassVar[str] = ""

    def __repr__(self) -> str:
        args = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))
        return f"{type(self).__name__}({args})"

    @property
    def resources(self) -> tuple[str, ...]:
        """The AWS ids this fault writes to (faults on disjoint resources can be batched)."""
        return (self.target,)

    def expected(self) -> tuple[str, ...]:
        """The checks that should see this fault on this target (``expected_checks`` plus what applies)."""
        return self.expected_checks

    @classmethod
    def select(cls, snapshot: Mapping[str, Any], run_id: str, group: str,
               rng_or_index: int | random.Random = 0) -> "Fault | None":
        raise NotImplementedError

    def plan(self, ec2: Any = None) -> list[str]:
        """The calls ``inject`` would make, as text; touches nothing."""
        raise NotImplementedError

    def verify_targets(self, clients: Clients) -> None:
        """Describe every resource this fault writes to; refuse unless each carries ``Run=<run_id>``."""
        for resource in self.resources:
            _refuse_unless_run(resource, _describe_tags(clients, self.region, resource), self.run_id, self.name)

    def inject(self, clients: Clients) -> None:
        """Verify the targets, then make the change."""
        self.verify_targets(clients)
        self._inject(clients)

    def _inject(self, clients: Clients) -> None:
        raise NotImplementedError

    def undo(self, clients: Clients) -> None:
        """Remove what the fault added outside Terraform; nothing for faults an apply repairs alone."""
        return None


# -- instances

def _wait_state(ec2: Any, instance_id: str, state: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        res = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        now = res[0]["Instances"][0]["State"]["Name"] if res else "gone"
        if now == state:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{instance_id} still {now}, waited {timeout:.0f} s for {state}")
        time.sleep(0.5 if now in ("pending", "stopping") else 0.1)


#: Instance types to switch to, in order of preference.
_OTHER_TYPES = ("t3.small", "t3.medium", "t3.micro")


@dataclass(frozen=True, repr=False)
class InstanceTypeChanged(Fault):
    """The instance is stopped, resized in place and started again (a mutation, not a replacement)."""

    instance_type: str = "t3.small"

    name: ClassVar[str] = "instance_type_changed"
    expected_checks: ClassVar[tuple[str, ...]] = ("mutation", "drift")
    summary: ClassVar[str] = "stop the instance, change its type in place, start it"

    @classmethod
    def select(cls, snapshot, run_id, group, rng_or_index=0):
        inst = _pick(_instances(snapshot, run_id), rng_or_index)
        if inst is None:
            return None
        new = next(t for t in _OTHER_TYPES if t != inst.get("InstanceType"))
        return cls(inst["InstanceId"], snapshot.get("region", ""), run_id, new)

    def plan(self, ec2=None):
        return [
            f"ec2.stop_instances(InstanceIds=[{self.target!r}]) and wait until stopped",
            f"ec2.modify_instance_attribute(InstanceId={self.target!r}, InstanceType={{'Value': {self.instance_type!r}}})",
            f"ec2.start_instances(InstanceIds=[{self.target!r}])",
        ]

    def _inject(self, clients):
        ec2 = clients("ec2", self.region)
        ec2.stop_instances(InstanceIds=[self.target])
        _wait_state(ec2, self.target, "stopped")
        ec2.modify_instance_attribute(InstanceId=self.target, InstanceType={"Value": self.instance_type})
        ec2.start_instances(InstanceIds=[self.target])


@dataclass(frozen=True, repr=False)
class ExtraSgAttached(Fault):
    """One more security group of the VPC attached to a running instance."""

    security_group: str = ""

    name: ClassVar[str] = "extra_sg_attached"
    expected_checks: ClassVar[tuple[str, ...]] = ("mutation", "drift")
    conditional_checks: ClassVar[Mapping[str, str]] = {
        "reachability": "when the extra group opens an isolated pair (an [[isolation]] entry) to the instance",
    }
    summary: ClassVar[str] = "attach another security group of the VPC to the instance"

    @property
    def resources(self):
        return (self.target, self.security_group)

    @classmethod
    def select(cls, snapshot, run_id, group, rng_or_index=0):
        sgs = sorted(
            (g for g in snapshot.get("security_groups", []) if _has_run(g, run_id)),
            key=lambda g: g["GroupId"])
        pairs = []
        for inst in _instances(snapshot, run_id):
            have = set(_instance_sgs(inst))
            pairs += [(inst, g) for g in sgs if g["GroupId"] not in have and g.get("VpcId") == inst.get("VpcId")]
        pair = _pick(pairs, rng_or_index)
        if pair is None:
            return None
        return cls(pair[0]["InstanceId"], snapshot.get("region", ""), run_id, pair[1]["GroupId"])

    def plan(self, ec2=None):
        return [
            f"ec2.describe_instances(InstanceIds=[{self.target!r}]) for its security groups",
            f"ec2.modify_instance_attribute(InstanceId={self.target!r}, Groups=<its groups> + [{self.security_group!r}])",
        ]

    def _inject(self, clients):
        ec2 = clients("ec2", self.region)
        inst = ec2.describe_instances(InstanceIds=[self.target])["Reservations"][0]["Instances"][0]
        groups = _instance_sgs(inst)
        ec2.modify_instance_attribute(InstanceId=self.target, Groups=groups + [self.security_group])


@dataclass(frozen=True, repr=False)
class SourceDestCheckDisabled(Fault):
    """The instance may now forward traffic that is not its own (a NAT-box trick)."""

    name: ClassVar[str] = "source_dest_check_disabled"
    expected_checks: ClassVar[tuple[str, ...]] = ("drift",)
    summary: ClassVar[str] = "disable the source/destination check of the instance"

    @classmethod
    def select(cls, snapshot, run_id, group, rng_or_index=0):
        inst = _pick(_instances(snapshot, run_id), rng_or_index)
        return None if inst is None else cls(inst["InstanceId"], snapshot.get("region", ""), run_id)

    def plan(self, ec2=None):
        return [f"ec2.modify_instance_attribute(InstanceId={self.target!r}, SourceDestCheck={{'Value': False}})"]

    def _inject(self, clients):
        clients("ec2", self.region).modify_instance_attribute(InstanceId=self.target, SourceDestCheck={"Value": False})


@dataclass(frozen=True, repr=False)
class _TagFlipped(Fault):
    tag: ClassVar[str] = ""
    value: str = ""

    @classmethod
    def _new_value(cls, current: str, snapshot: Mapping[str, Any], run_id: str) -> str:
        raise NotImplementedError

    @classmethod
    def select(cls, snapshot, run_id, group, rng_or_index=0):
        candidates = [i for i in _instances(snapshot, run_id) if cls.tag in _tags(i)]
        inst = _pick(candidates, rng_or_index)
        if inst is None:
            return None
        return cls(inst["InstanceId"], snapshot.get("region", ""), run_id,
                   cls._new_value(_tags(inst)[cls.tag], snapshot, run_id))

    def plan(self, ec2=None):
        return [f"ec2.create_tags(Resources=[{self.target!r}], Tags=[{{'Key': {self.tag!r}, 'Value': {self.value!r}}}])"]

    def _inject(self, clients):
        clients("ec2", self.region).create_tags(Resources=[self.target], Tags=[{"Key": self.tag, "Value": self.value}])


@dataclass(frozen=True, repr=False)
class RoleTagFlipped(_TagFlipped):
    """The Role tag names another role: the next Ansible run configures the server as something else."""

    tag: ClassVar[str] = "Role"
    name: ClassVar[str] = "role_tag_flipped"
    # the live fingerprint keeps every tag, Role included (never metadata)
    expected_checks: ClassVar[tuple[str, ...]] = ("mutation", "drift", "roles")
    conditional_checks: ClassVar[Mapping[str, str]] = {
        "reachability": "when the instance was the only one of its role in a declared flow (the flow loses an end)",
    }
    summary: ClassVar[str] = "change the instance's Role tag to another role"

    @classmethod
    def _new_value(cls, current, snapshot, run_id):
        others = sorted({_tags(i).get("Role", "") for i in _instances(snapshot, run_id, None)} - {current, ""})
        return others[0] if others else f"not-{current}"


@dataclass(frozen=True, repr=False)
class GroupTagFlipped(_TagFlipped):
    """The Group tag names another group: the server leaves its group's books."""

    tag: ClassVar[str] = "Group"
    name: ClassVar[str] = "group_tag_flipped"
    expected_checks: ClassVar[tuple[str, ...]] = ("mutation", "drift", "roles")
    conditional_checks: ClassVar[Mapping[str, str]] = {
        "reachability": "when the instance was the only one of its role in a declared flow (flows match role@group)",
    }
    summary: ClassVar[str] = "change the instance's Group tag to another group"

    @classmethod
    def _new_value(cls, current, snapshot, run_id):
        return f"{current}-elsewhere"


# -- security groups

def _world_ssh(sg: Mapping[str, Any]) -> bool:
    for perm in sg.get("IpPermissions") or ():
        ok_port = str(perm.get("IpProtocol")) == "-1" or (
            perm.get("FromPort") is not None and perm["FromPort"] <= 22 <= perm.get("ToPort", perm["FromPort"]))
        if ok_port and any(r.get("CidrIp") == "0.0.0.0/0" for r in perm.get("IpRanges") or ()):
            return True
    return False


@dataclass(frozen=True, repr=False)
class SgOpenedToWorld(Fault):
    """SSH (tcp 22) opened to 0.0.0.0/0 on one of the group's security groups."""

    name: ClassVar[str] = "sg_opened_to_world"
    expected_checks: ClassVar[tuple[str, ...]] = ("drift",)
    conditional_checks: ClassVar[Mapping[str, str]] = {
        "reachability": "when a routed peer holds an isolated source on port 22 of a member (isolation broken)",
        "unmanaged": "when the group's rules are aws_security_group_rule resources (a live rule none declares)",
    }
    summary: ClassVar[str] = "authorize tcp 22 from 0.0.0.0/0 on a security group"
    adds_unmanaged: ClassVar[bool] = True

    @classmethod
    def select(cls, snapshot, run_id, group, rng_or_index=0):
        sgs = sorted((g for g in snapshot.get("security_groups", [])
                      if _has_run(g, run_id) and not _world_ssh(g)), key=lambda g: g["GroupId"])
        sg = _pick(sgs, rng_or_index)
        return None if sg is None else cls(sg["GroupId"], snapshot.get("region", ""), run_id)

    def plan(self, ec2=None):
        return [f"ec2.authorize_security_group_ingress(GroupId={self.target!r}, IpPermissions=[tcp 22 from 0.0.0.0/0])"]

    def _inject(self, clients):
        clients("ec2", self.region).authorize_security_group_ingress(GroupId=self.target, IpPermissions=[{
            "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
            "IpRanges": [{"CidrIp": "0.0.0.0/0", "Description": "chaos: sg_opened_to_world"}],
        }])

    def undo(self, clients):
        """Revoke the rule it added: an apply does not, when the group's rules are aws_security_group_rule
        resources (Terraform never deletes a rule it does not manage)."""
        _ignore_not_found(lambda: clients("ec2", self.region).revoke_security_group_ingress(
            GroupId=self.target, IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                                                 "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]))


def sg_rules(snapshot: Mapping[str, Any], run_id: str | None = None) -> list[tuple[str, str, int, int, str]]:
    """Ingress rules of the snapshot's security groups, one per source: (group, protocol, from, to, source).

    ``source`` is a CIDR or the id of the source security group. Only groups
    tagged ``Run=<run_id>`` when a run id is given.
    """
    out = []
    for sg in snapshot.get("security_groups", []):
        if run_id is not None and not _has_run(sg, run_id):
            continue
        for perm in sg.get("IpPermissions") or ():
            proto = str(perm.get("IpProtocol"))
            lo, hi = int(perm.get("FromPort", -1)), int(perm.get("ToPort", -1))
            for rng in perm.get("IpRanges") or ():
                if rng.get("CidrIp"):
                    out.append((sg["GroupId"], proto, lo, hi, rng["CidrIp"]))
            for pair in perm.get("UserIdGroupPairs") or ():
                if pair.get("GroupId"):
                    out.append((sg["GroupId"], proto, lo, hi, pair["GroupId"]))
    return out


#: Protocol numbers Terraform accepts where EC2's describe answers with a name.
_PROTOCOL_NAMES = {"6": "tcp", "17": "udp", "1": "icmp", "all": "-1"}


def rule_key(rule: Sequence[Any]) -> tuple[str, str, int, int, str]:
    """An ingress rule (group, protocol, from, to, source) compared the same way from a describe and a state:
    protocols by name, and no ports for all traffic (EC2 answers -1, Terraform stores 0)."""
    sg_id, proto, lo, hi, source = rule
    proto = _PROTOCOL_NAMES.get(str(proto).lower(), str(proto).lower())
    return (str(sg_id), proto, *((-1, -1) if proto == "-1" else (int(lo), int(hi))), str(source))


def without_rule(snapshot: Mapping[str, Any], rule: tuple[str, str, int, int, str]) -> dict[str, Any]:
    """A copy of the snapshot in which one ingress rule (one source of it) is revoked."""
    import copy

    sg_id, proto, lo, hi, source = rule
    out = dict(snapshot)
    groups = []
    for sg in snapshot.get("security_groups", []):
        if sg.get("GroupId") == sg_id:
            sg = copy.deepcopy(sg)
            for perm in sg.get("IpPermissions") or ():
                if (str(perm.get("IpProtocol")), int(perm.get("FromPort", -1)), int(perm.get("ToPort", -1))) == (proto, lo, hi):
                    perm["IpRanges"] = [r for r in perm.get("IpRanges") or () if r.get("CidrIp") != source]
                    perm["UserIdGroupPairs"] = [p for p in perm.get("UserIdGroupPairs") or () if p.get("GroupId") != source]
        groups.append(sg)
    out["security_groups"] = groups
    return out


@dataclass(frozen=True, repr=False)
class FlowRuleRevoked(Fault):
    """An ingress rule revoked: one source (another group's or the VPC's CIDR, or a security group) of a port.

    Only a rule the group's own Terraform manages: a rule a neighbour's
    ``aws_security_group_rule`` put in this group's security group
    (``foreign_rules``, set by the experiment from the neighbours' states) is
    the neighbour's; this group's drift cannot see it go and its repair
    cannot put it back.

    Which checks must see it depends on the group: drift always; reachability
    only when the rule carries a declared flow (``carries_flow``). ``select``
    learns that from ``snapshot["flow_rules"]``: the rules whose revocation
    blocks a declared flow, found by the experiment with the reachability
    analyzer itself (:func:`without_rule`). Rules that carry a flow are
    preferred, so index 0 exercises reachability whenever the group can.
    """

    protocol: str = "tcp"
    from_port: int = 0
    to_port: int = 0
    cidr: str = ""
    source_group: str = ""
    carries_flow: bool = False

    name: ClassVar[str] = "flow_rule_revoked"
    expected_checks: ClassVar[tuple[str, ...]] = ("drift",)
    conditional_checks: ClassVar[Mapping[str, str]] = {
        "reachability": "when the revoked rule carries a declared flow ([[flows]]): the analyzer says so per rule",
        "roles": "when the rule was the only one opening a port its instances' role needs (the port closes)",
    }
    summary: ClassVar[str] = "revoke an ingress rule from another group's or the VPC's CIDR, or from a security group"

    def expected(self):
        return self.expected_checks + (("reachability",) if self.carries_flow else ())

    @property
    def rule(self) -> tuple[str, str, int, int, str]:
        return (self.target, self.protocol, self.from_port, self.to_port, self.cidr or self.source_group)

    @classmethod
    def select(cls, snapshot, run_id, group, rng_or_index=0):
        peers = _peer_cidrs(snapshot)
        own = {v.get("CidrBlock") for v in snapshot.get("vpcs", [])}
        sgs = {g["GroupId"] for g in snapshot.get("security_groups", [])}
        flow_rules = {tuple(r) for r in snapshot.get("flow_rules") or ()}
        foreign = {rule_key(r) for r in snapshot.get("foreign_rules") or ()}
        # Preference: rules that carry a declared flow, then another group's CIDR, a security group, the VPC's CIDR.
        tiers: list[list[tuple[str, str, int, int, str]]] = [[], [], [], []]
        for r in sorted(sg_rules(snapshot, run_id)):
            if rule_key(r) in foreign:
                continue
            if r in flow_rules:
                tiers[0].append(r)
            elif r[4] in peers:
                tiers[1].append(r)
            elif r[4] in sgs:
                tiers[2].append(r)
            elif r[4] in own:
                tiers[3].append(r)
        chosen = _pick(next((t for t in tiers if t), []), rng_or_index)
        if chosen is None:
            return None
        sg_id, proto, lo, hi, source = chosen
        by_sg = source in sgs
        return cls(sg_id, snapshot.get("region", ""), run_id, proto, lo, hi,
                   "" if by_sg else source, source if by_sg else "", chosen in flow_rules)

    def _permission(self) -> dict[str, Any]:
        perm: dict[str, Any] = {"IpProtocol": self.protocol}
        if self.source_group:
            perm["UserIdGroupPairs"] = [{"GroupId": self.source_group}]
        else:
            perm["IpRanges"] = [{"CidrIp": self.cidr}]
        if self.protocol != "-1":
            perm.update(FromPort=self.from_port, ToPort=self.to_port)
        return perm

    def plan(self, ec2=None):
        if self.source_group:
            return [f"ec2.describe_security_group_rules(group-id={self.target!r}) for the rule from "
                    f"{self.source_group!r}, then ec2.revoke_security_group_ingress(GroupId={self.target!r}, "
                    f"SecurityGroupRuleIds=<its id>) (or IpPermissions=[{self._permission()!r}])"]
        return [f"ec2.revoke_security_group_ingress(GroupId={self.target!r}, IpPermissions=[{self._permission()!r}])"]

    def _rule_ids(self, ec2: Any) -> list[str]:
        """Ids of the live rules this fault revokes (a source group's rule is revoked by id: how the rule
        was written, with or without owner and description, then does not matter)."""
        rules = ec2.describe_security_group_rules(
            Filters=[{"Name": "group-id", "Values": [self.target]}]).get("SecurityGroupRules", [])
        return [r["SecurityGroupRuleId"] for r in rules
                if not r.get("IsEgress") and str(r.get("IpProtocol")) == self.protocol
                and (self.protocol == "-1" or (r.get("FromPort"), r.get("ToPort")) == (self.from_port, self.to_port))
                and (r.get("ReferencedGroupInfo") or {}).get("GroupId") == self.source_group]

    def _inject(self, clients):
        ec2 = clients("ec2", self.region)
        if self.source_group:
            ids = self._rule_ids(ec2)
            if ids:
                ec2.revoke_security_group_ingress(GroupId=self.target, SecurityGroupRuleIds=ids)
                return
        ec2.revoke_security_group_ingress(GroupId=self.target, IpPermissions=[self._permission()])


# -- routes, peering, ACLs, NAT

def without_route(snapshot: Mapping[str, Any], table_id: str, destination: str) -> dict[str, Any]:
    """A copy of the snapshot in which one route of one route table is gone."""
    out = dict(snapshot)
    tables = []
    for table in snapshot.get("route_tables", []):
        if table.get("RouteTableId") == table_id:
            table = dict(table)
            table["Routes"] = [r for r in table.get("Routes") or () if r.get("DestinationCidrBlock") != destination]
        tables.append(table)
    out["route_tables"] = tables
    return out


def _route_candidates(snapshot: Mapping[str, Any], run_id: str, kinds: Iterable[str]) -> list[tuple[str, str, str]]:
    """(route table, destination, via) of the group's active non-local routes, by preference of ``kinds``.

    Only routes the group's own Terraform manages when the snapshot says which
    (``managed_routes``, set by the experiment from the state): a route a
    neighbour's peering module put in this group's table is the neighbour's;
    this group's drift cannot see it go and its repair cannot put it back.
    """
    managed = snapshot.get("managed_routes")
    managed = None if managed is None else {tuple(r) for r in managed}
    found: dict[str, list[tuple[str, str, str]]] = {k: [] for k in kinds}
    for table in sorted(snapshot.get("route_tables", []), key=lambda t: t["RouteTableId"]):
        if not _has_run(table, run_id):
            continue
        for route in table.get("Routes") or ():
            via = _route_via(route)
            if not via or via[0] not in found:
                continue
            if managed is not None and (table["RouteTableId"], route["DestinationCidrBlock"]) not in managed:
                continue
            found[via[0]].append((table["RouteTableId"], route["DestinationCidrBlock"], via[0]))
    return [c for k in found for c in found[k]]


def _preferred_routes(snapshot: Mapping[str, Any], cands: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """The routes that carry a declared flow (``flow_routes``) when there are any, else those of the first kind."""
    flow_routes = {tuple(r) for r in snapshot.get("flow_routes") or ()}
    carrying = [c for c in cands if c[:2] in flow_routes]
    if carrying:
        return carrying
    return [c for c in cands if c[2] == cands[0][2]] if cands else []


@dataclass(frozen=True, repr=False)
class RouteDeleted(Fault):
    """A non-local route of the group deleted from a route table (routes carrying a declared flow first).

    Reachability must see it only when the route carries a declared flow
    (``carries_flow``): ``select`` learns that from ``snapshot["flow_routes"]``,
    the routes whose removal blocks a declared flow, found by the experiment
    with the reachability analyzer itself (:func:`without_route`). A peering
    route toward a group no declared flow comes from blocks nothing.
    """

    destination: str = ""
    via: str = ""
    carries_flow: bool = False

    name: ClassVar[str] = "route_deleted"
    expected_checks: ClassVar[tuple[str, ...]] = ("drift",)
    conditional_checks: ClassVar[Mapping[str, str]] = {
        "reachability": "when the route carries a declared flow ([[flows]]): the analyzer says so per route",
    }
    summary: ClassVar[str] = "delete a non-local route (peering, NAT or Internet gateway)"

    def expected(self):
        return self.expected_checks + (("reachability",) if self.carries_flow else ())

    @classmethod
    def select(cls, snapshot, run_id, group, rng_or_index=0):
        # index 0 is always a flow-carrying route when there is one
        cands = _preferred_routes(snapshot, _route_candidates(snapshot, run_id, ("peering", "nat", "gateway")))
        chosen = _pick(cands, rng_or_index)
        if chosen is None:
            return None
        flow_routes = {tuple(r) for r in snapshot.get("flow_routes") or ()}
        return cls(chosen[0], snapshot.get("region", ""), run_id, chosen[1], chosen[2], chosen[:2] in flow_routes)

    def plan(self, ec2=None):
        return [f"ec2.delete_route(RouteTableId={self.target!r}, DestinationCidrBlock={self.destination!r})"]

    def _inject(self, clients):
        clients("ec2", self.region).delete_route(RouteTableId=self.target, DestinationCidrBlock=self.destination)


@dataclass(frozen=True, repr=False)
class RouteHijacked(Fault):
    """A peering or NAT route of the group now points at the Internet gateway.

    Reachability must see it only when the route carries a declared flow
    (``carries_flow``, as for :class:`RouteDeleted`).
    """

    destination: str = ""
    via: str = ""
    gateway: str = ""
    carries_flow: bool = False

    name: ClassVar[str] = "route_hijacked"
    expected_checks: ClassVar[tuple[str, ...]] = ("drift",)
    conditional_checks: ClassVar[Mapping[str, str]] = {
        "reachability": "when the hijacked route carried a declared flow ([[flows]]): the analyzer says so per route",
    }
    summary: ClassVar[str] = "replace a peering/NAT route's target with the Internet gateway"

    def expected(self):
        return self.expected_checks + (("reachability",) if self.carries_flow else ())

    @classmethod
    def select(cls, snapshot, run_id, group, rng_or_index=0):
        igw_of = {a.get("VpcId"): g["InternetGatewayId"]
                  for g in snapshot.get("internet_gateways", []) for a in g.get("Attachments") or ()}
        vpc_of = {t["RouteTableId"]: t.get("VpcId") for t in snapshot.get("route_tables", [])}
        cands = [c for c in _route_candidates(snapshot, run_id, ("peering", "nat")) if igw_of.get(vpc_of[c[0]])]
        chosen = _pick(_preferred_routes(snapshot, cands), rng_or_index)
        if chosen is None:
            return None
        flow_routes = {tuple(r) for r in snapshot.get("flow_routes") or ()}
        return cls(chosen[0], snapshot.get("region", ""), run_id, chosen[1], chosen[2], igw_of[vpc_of[chosen[0]]],
                   chosen[:2] in flow_routes)

    def plan(self, ec2=None):
        return [f"ec2.replace_route(RouteTableId={self.target!r}, DestinationCidrBlock={self.destination!r}, "
                f"GatewayId={self.gateway!r})"]

    def _inject(self, clients):
        clients("ec2", self.region).replace_route(
            RouteTableId=self.target, DestinationCidrBlock=self.destination, GatewayId=self.gateway)


@dataclass(frozen=True, repr=False)
class PeeringDeleted(Fault):
    """A VPC peering connection of the group deleted (its routes become blackholes).

    Only a peering the group's own Terraform requests, when the snapshot says
    which (``managed_peerings``, the ids of the state's
    ``aws_vpc_peering_connection`` resources): a peering a neighbour
    requested touches this group's VPC but is the neighbour's, even where
    this group accepts it (``aws_vpc_peering_connection_accepter``, same id):
    the group's apply cannot accept a connection that no longer exists.
    """

    name: ClassVar[str] = "peering_deleted"
    expected_checks: ClassVar[tuple[str, ...]] = ("drift", "reachability")
    summary: ClassVar[str] = "delete a VPC peering connection"

    @classmethod
    def select(cls, snapshot, run_id, group, rng_or_index=0):
        managed = snapshot.get("managed_peerings")
        pcxs = sorted((p for p in _own_peerings(snapshot)
                       if _has_run(p, run_id) and (p.get("Status") or {}).get("Code") == "active"
                       and (managed is None or p["VpcPeeringConnectionId"] in managed)),
                      key=lambda p: p["VpcPeeringConnectionId"])
        pcx = _pick(pcxs, rng_or_index)
        return None if pcx is None else cls(pcx["VpcPeeringConnectionId"], snapshot.get("region", ""), run_id)

    def plan(self, ec2=None):
        return [f"ec2.delete_vpc_peering_connection(VpcPeeringConnectionId={self.target!r})"]

    def _inject(self, clients):
        clients("ec2", self.region).delete_vpc_peering_connection(VpcPeeringConnectionId=self.target)


#: The entry ``acl_deny_added`` adds: rule 1, deny inbound SSH from anywhere.
ACL_DENY_ENTRY: Mapping[str, Any] = {"RuleNumber": 1, "Protocol": "6", "RuleAction": "deny", "Egress": False,
                                     "CidrBlock": "0.0.0.0/0", "PortRange": {"From": 22, "To": 22}}


def with_acl_deny(snapshot: Mapping[str, Any], acl_id: str) -> dict[str, Any]:
    """A copy of the snapshot in which network ACL ``acl_id`` carries :data:`ACL_DENY_ENTRY`."""
    out = dict(snapshot)
    out["network_acls"] = [
        {**acl, "Entries": [dict(ACL_DENY_ENTRY)] + list(acl.get("Entries") or ())}
        if acl.get("NetworkAclId") == acl_id else acl
        for acl in snapshot.get("network_acls", [])
    ]
    return out


@dataclass(frozen=True, repr=False)
class AclDenyAdded(Fault):
    """Rule number 1 of a network ACL denies inbound SSH: it wins over every allow.

    Drift always sees it; reachability only when the deny blocks a declared
    flow (``carries_flow``), which ``select`` learns from
    ``snapshot["flow_acls"]``: the ACLs where the analyzer itself finds a
    declared flow blocked by this entry (:func:`with_acl_deny`). Such ACLs
    are preferred, so index 0 exercises reachability whenever the group can.
    """

    carries_flow: bool = False

    name: ClassVar[str] = "acl_deny_added"
    expected_checks: ClassVar[tuple[str, ...]] = ("drift",)
    conditional_checks: ClassVar[Mapping[str, str]] = {
        "reachability": "when the deny blocks a declared flow ([[flows]] on tcp 22 through that ACL): the analyzer says so",
    }
    summary: ClassVar[str] = "add ACL rule 1: deny tcp 22 inbound from 0.0.0.0/0"
    adds_unmanaged: ClassVar[bool] = True

    def expected(self):
        return self.expected_checks + (("reachability",) if self.carries_flow else ())

    @classmethod
    def select(cls, snapshot, run_id, group, rng_or_index=0):
        flow_acls = set(snapshot.get("flow_acls") or ())
        acls = sorted((a for a in snapshot.get("network_acls", [])
                       if _has_run(a, run_id) and a.get("Associations")
                       and not any(e.get("RuleNumber") == 1 and not e.get("Egress") for e in a.get("Entries") or ())),
                      key=lambda a: (a["NetworkAclId"] not in flow_acls, a["NetworkAclId"]))
        if any(a["NetworkAclId"] in flow_acls for a in acls):  # the flow-carrying ones only, as flow_rule_revoked
            acls = [a for a in acls if a["NetworkAclId"] in flow_acls]
        acl = _pick(acls, rng_or_index)
        if acl is None:
            return None
        return cls(acl["NetworkAclId"], snapshot.get("region", ""), run_id, acl["NetworkAclId"] in flow_acls)

    def plan(self, ec2=None):
        return [f"ec2.create_network_acl_entry(NetworkAclId={self.target!r}, RuleNumber=1, Egress=False, "
                "Protocol='6', RuleAction='deny', CidrBlock='0.0.0.0/0', PortRange={'From': 22, 'To': 22})"]

    def _inject(self, clients):
        clients("ec2", self.region).create_network_acl_entry(
            NetworkAclId=self.target, RuleNumber=1, Egress=False, Protocol="6", RuleAction="deny",
            CidrBlock="0.0.0.0/0", PortRange={"From": 22, "To": 22})

    def undo(self, clients):
        """Delete the entry it added: an apply does not, when the ACL's entries are aws_network_acl_rule resources."""
        ec2 = clients("ec2", self.region)
        acls = ec2.describe_network_acls(NetworkAclIds=[self.target])["NetworkAcls"]
        ours = [e for a in acls for e in a.get("Entries") or ()
                if e.get("RuleNumber") == 1 and not e.get("Egress") and e.get("RuleAction") == "deny"]
        if ours:  # only the entry it added (moto answers 500 to deleting an entry that is not there)
            _ignore_not_found(lambda: ec2.delete_network_acl_entry(NetworkAclId=self.target, RuleNumber=1, Egress=False))


@dataclass(frozen=True, repr=False)
class NatDeleted(Fault):
    """The NAT gateway deleted: private subnets lose their way out (no declared flow uses it)."""

    name: ClassVar[str] = "nat_deleted"
    expected_checks: ClassVar[tuple[str, ...]] = ("drift",)
    summary: ClassVar[str] = "delete the NAT gateway"

    @classmethod
    def select(cls, snapshot, run_id, group, rng_or_index=0):
        nats = sorted((n for n in snapshot.get("nat_gateways", [])
                       if _has_run(n, run_id) and n.get("State") in ("available", "pending")),
                      key=lambda n: n["NatGatewayId"])
        nat = _pick(nats, rng_or_index)
        return None if nat is None else cls(nat["NatGatewayId"], snapshot.get("region", ""), run_id)

    def plan(self, ec2=None):
        return [f"ec2.delete_nat_gateway(NatGatewayId={self.target!r})"]

    def _inject(self, clients):
        clients("ec2", self.region).delete_nat_gateway(NatGatewayId=self.target)


# -- instances that go or come

@dataclass(frozen=True, repr=False)
class InstanceTerminated(Fault):
    """A managed instance terminated out of band."""

    name: ClassVar[str] = "instance_terminated"
    expected_checks: ClassVar[tuple[str, ...]] = ("drift", "roles")
    conditional_checks: ClassVar[Mapping[str, str]] = {
        "reachability": "when it was the only instance of its role in a declared flow",
    }
    summary: ClassVar[str] = "terminate an instance"

    @classmethod
    def select(cls, snapshot, run_id, group, rng_or_index=0):
        inst = _pick(_instances(snapshot, run_id), rng_or_index)
        return None if inst is None else cls(inst["InstanceId"], snapshot.get("region", ""), run_id)

    def plan(self, ec2=None):
        return [f"ec2.terminate_instances(InstanceIds=[{self.target!r}])"]

    def _inject(self, clients):
        clients("ec2", self.region).terminate_instances(InstanceIds=[self.target])


@dataclass(frozen=True, repr=False)
class RogueInstance(Fault):
    """An instance launched by hand into the group's subnet, without Role, Group or Name.

    It carries only the run's ``Run`` tag, so that ``undo`` and the run's
    reaper find it; none of our checks look at that tag.
    """

    image: str = ""
    instance_type: str = "t3.micro"

    name: ClassVar[str] = "rogue_instance"
    expected_checks: ClassVar[tuple[str, ...]] = ("unmanaged", "roles")
    summary: ClassVar[str] = "launch an instance without Role/Group tags into a subnet of the group"
    adds_unmanaged: ClassVar[bool] = True

    @classmethod
    def select(cls, snapshot, run_id, group, rng_or_index=0):
        subnets = sorted((s for s in snapshot.get("subnets", []) if _has_run(s, run_id)), key=lambda s: s["SubnetId"])
        subnet = _pick(subnets, rng_or_index)
        images = sorted({i["ImageId"] for i in _instances(snapshot, run_id, None) if i.get("ImageId")})
        if subnet is None or not images:
            return None
        return cls(subnet["SubnetId"], snapshot.get("region", ""), run_id, images[0])

    def plan(self, ec2=None):
        return [f"ec2.run_instances(ImageId={self.image!r}, InstanceType={self.instance_type!r}, "
                f"SubnetId={self.target!r}, MinCount=1, MaxCount=1, tags: only Run={self.run_id!r})"]

    def _inject(self, clients):
        clients("ec2", self.region).run_instances(
            ImageId=self.image, InstanceType=self.instance_type, SubnetId=self.target, MinCount=1, MaxCount=1,
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": RUN_TAG, "Value": self.run_id}]}])

    def added(self, clients: Clients) -> list[str]:
        """The rogue instances alive in the subnet: Run tag of this run, no Role, no Group."""
        ec2 = clients("ec2", self.region)
        res = ec2.describe_instances(Filters=[
            {"Name": "subnet-id", "Values": [self.target]},
            {"Name": f"tag:{RUN_TAG}", "Values": [self.run_id]},
        ])["Reservations"]
        return sorted(i["InstanceId"] for r in res for i in r["Instances"]
                      if _alive(i) and not {"Role", "Group"} & set(_tags(i)))

    def undo(self, clients):
        ids = self.added(clients)
        if ids:
            clients("ec2", self.region).terminate_instances(InstanceIds=ids)


@dataclass(frozen=True, repr=False)
class StaleAmiReplacement(Fault):
    """The instance replaced out of band by one from the previous Packer run's AMI, same tags.

    ``image`` is the stale AMI: given, or found by ``select`` as an AMI of the
    same ``Template`` whose ``PackerRunUUID`` differs from the current one's.
    """

    image: str = ""

    name: ClassVar[str] = "stale_ami_replacement"
    expected_checks: ClassVar[tuple[str, ...]] = ("parity", "unmanaged", "drift")
    summary: ClassVar[str] = "terminate the instance and launch its twin from a previous run's AMI"
    adds_unmanaged: ClassVar[bool] = True

    @classmethod
    def select(cls, snapshot, run_id, group, rng_or_index=0):
        images = {i["ImageId"]: i for i in snapshot.get("images", [])}
        pairs = []
        for inst in _instances(snapshot, run_id):
            current = _tags(images.get(inst.get("ImageId"), {}))
            if not current.get("PackerRunUUID"):
                continue
            for image in sorted(images.values(), key=lambda i: i["ImageId"]):
                t = _tags(image)
                if t.get("Template") == current.get("Template") and t.get("PackerRunUUID") not in (
                        None, current["PackerRunUUID"]):
                    pairs.append((inst, image))
        pair = _pick(pairs, rng_or_index)
        if pair is None:
            return None
        return cls(pair[0]["InstanceId"], snapshot.get("region", ""), run_id, pair[1]["ImageId"])

    def plan(self, ec2=None):
        return [
            f"ec2.describe_instances(InstanceIds=[{self.target!r}]) for its type, subnet, groups and tags",
            f"ec2.terminate_instances(InstanceIds=[{self.target!r}])",
            f"ec2.run_instances(ImageId={self.image!r}, same type, subnet, security groups and tags)",
        ]

    def _inject(self, clients):
        ec2 = clients("ec2", self.region)
        inst = ec2.describe_instances(InstanceIds=[self.target])["Reservations"][0]["Instances"][0]
        tags = [{"Key": k, "Value": v} for k, v in _tags(inst).items() if not k.startswith("aws:")]
        ec2.terminate_instances(InstanceIds=[self.target])
        kwargs: dict[str, Any] = {
            "ImageId": self.image, "InstanceType": inst.get("InstanceType", "t3.micro"),
            "MinCount": 1, "MaxCount": 1,
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags}],
        }
        if inst.get("SubnetId"):
            kwargs["SubnetId"] = inst["SubnetId"]
        if _instance_sgs(inst):
            kwargs["SecurityGroupIds"] = _instance_sgs(inst)
        ec2.run_instances(**kwargs)

    def added(self, clients: Clients) -> list[str]:
        """The out-of-band replacements alive: this run's instances on the stale AMI."""
        res = clients("ec2", self.region).describe_instances(Filters=[
            {"Name": "image-id", "Values": [self.image]},
            {"Name": f"tag:{RUN_TAG}", "Values": [self.run_id]},
        ])["Reservations"]
        return sorted(i["InstanceId"] for r in res for i in r["Instances"] if _alive(i))

    def undo(self, clients):
        ids = self.added(clients)
        if ids:
            clients("ec2", self.region).terminate_instances(InstanceIds=ids)


# -- DNS and storage (not in the EC2 snapshot: see describe_extras)

@dataclass(frozen=True, repr=False)
class Route53RecordChanged(Fault):
    """An A record of the group's private zone now points elsewhere.

    Only a record the group's own Terraform manages, when the snapshot says
    which (``managed_records``: zone id and name of the state's
    ``aws_route53_record`` resources): a zone associated with several groups'
    VPCs holds their records too, and a neighbour's record is the neighbour's.
    """

    record: str = ""
    value: str = "192.0.2.1"

    name: ClassVar[str] = "route53_record_changed"
    expected_checks: ClassVar[tuple[str, ...]] = ("drift",)
    summary: ClassVar[str] = "change the value of an A record in the group's private zone"

    @property
    def resources(self):
        return (f"{self.target}/{self.record}",)

    @classmethod
    def select(cls, snapshot, run_id, group, rng_or_index=0):
        managed = snapshot.get("managed_records")
        managed = None if managed is None else {(z, _record_name(n)) for z, n in managed}
        records = []
        for zone in sorted(snapshot.get("hosted_zones", []), key=lambda z: z["Id"]):
            if zone.get("Tags", {}).get(RUN_TAG) != run_id:
                continue
            for rr in zone.get("Records", []):
                if managed is not None and (zone["Id"].split("/")[-1], _record_name(rr["Name"])) not in managed:
                    continue
                if rr.get("Type") == "A" and rr.get("ResourceRecords"):
                    records.append((zone["Id"].split("/")[-1], rr))
        chosen = _pick(sorted(records, key=lambda r: (r[0], r[1]["Name"])), rng_or_index)
        if chosen is None:
            return None
        current = {r["Value"] for r in chosen[1]["ResourceRecords"]}
        value = next(f"192.0.2.{n}" for n in range(1, 255) if f"192.0.2.{n}" not in current)
        return cls(chosen[0], snapshot.get("region", ""), run_id, chosen[1]["Name"], value)

    def verify_targets(self, clients):
        _refuse_unless_run(f"hosted zone {self.target}", _zone_tags(clients, self.target), self.run_id, self.name)

    def _batch(self) -> dict[str, Any]:
        return {"Changes": [{"Action": "UPSERT", "ResourceRecordSet": {
            "Name": self.record, "Type": "A", "TTL": 60, "ResourceRecords": [{"Value": self.value}]}}]}

    def plan(self, ec2=None):
        return [f"route53.change_resource_record_sets(HostedZoneId={self.target!r}, "
                f"UPSERT A {self.record!r} -> {self.value!r})"]

    def _inject(self, clients):
        clients("route53", self.region or "us-east-1").change_resource_record_sets(
            HostedZoneId=self.target, ChangeBatch=self._batch())


def _record_name(name: str) -> str:
    return str(name).rstrip(".").lower()


_PUBLIC_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Sid": "ChaosPublicRead", "Effect": "Allow", "Principal": "*",
                   "Action": "s3:GetObject", "Resource": "arn:aws:s3:::{bucket}/*"}],
}


@dataclass(frozen=True, repr=False)
class S3MadePublic(Fault):
    """The group's bucket made world-readable, by a public bucket policy or the public-read ACL.

    Seen by drift only where the group's Terraform declares the bucket
    policy (the seed groups do, with ``aws_s3_bucket_policy``): provider
    3.39.0 reads a bucket policy back only when its state holds one and never
    reads the ACL back. ``select`` therefore takes only buckets that have a
    policy (``policy_managed``): on a bucket without one no check would see
    the fault and no apply would remove it, so a group without such a bucket
    has no target, and its chaos test is skipped saying why.
    """

    method: str = "policy"
    policy_managed: bool = False

    name: ClassVar[str] = "s3_made_public"
    expected_checks: ClassVar[tuple[str, ...]] = ()
    conditional_checks: ClassVar[Mapping[str, str]] = {
        "drift": "only when the group's Terraform declares the bucket policy and method='policy' "
                 "(provider 3.39.0 never reads the ACL back); the seed groups declare neither",
    }
    summary: ClassVar[str] = "make the group's bucket public (public-read policy or ACL)"
    needs: ClassVar[str] = ("a bucket whose policy the group's Terraform manages (aws_s3_bucket_policy): "
                            "a public policy on any other bucket is seen by no check and removed by no apply")

    def expected(self):
        return ("drift",) if self.policy_managed and self.method == "policy" else ()

    @classmethod
    def select(cls, snapshot, run_id, group, rng_or_index=0):
        buckets = sorted((b for b in snapshot.get("buckets", []) if b.get("Tags", {}).get(RUN_TAG) == run_id
                          and b.get("Tags", {}).get("Group", group) == group and b.get("Policy")),
                         key=lambda b: b["Name"])
        bucket = _pick(buckets, rng_or_index)
        if bucket is None:
            return None
        # A bucket that has a policy has it from its Terraform (the run's buckets are made by nothing else).
        return cls(bucket["Name"], snapshot.get("region", ""), run_id, policy_managed=bool(bucket.get("Policy")))

    def verify_targets(self, clients):
        _refuse_unless_run(f"bucket {self.target}", _bucket_tags(clients, self.region, self.target),
                           self.run_id, self.name)

    def _policy(self) -> str:
        partition = "aws-cn" if self.region.startswith("cn-") else "aws"
        return json.dumps(_PUBLIC_POLICY).replace("{bucket}", self.target).replace("arn:aws:", f"arn:{partition}:")

    def plan(self, ec2=None):
        if self.method == "acl":
            return [f"s3.put_bucket_acl(Bucket={self.target!r}, ACL='public-read')"]
        return [f"s3.put_bucket_policy(Bucket={self.target!r}, Policy=<s3:GetObject for Principal '*'>)"]

    def _inject(self, clients):
        s3 = clients("s3", self.region)
        if self.method == "acl":
            s3.put_bucket_acl(Bucket=self.target, ACL="public-read")
        else:
            s3.put_bucket_policy(Bucket=self.target, Policy=self._policy())


#: The fault catalog: public name -> fault type.
CATALOG: dict[str, type[Fault]] = {
    cls.name: cls
    for cls in (
        InstanceTypeChanged, ExtraSgAttached, SourceDestCheckDisabled, RoleTagFlipped, GroupTagFlipped,
        SgOpenedToWorld, FlowRuleRevoked, RouteDeleted, RouteHijacked, PeeringDeleted, AclDenyAdded,
        NatDeleted, InstanceTerminated, RogueInstance, Route53RecordChanged, S3MadePublic, StaleAmiReplacement,
    )
}


def catalog_table() -> list[dict[str, Any]]:
    """The catalog as rows (name, summary, expected and conditional checks, repair), for reports and docs."""
    return [{
        "fault": name, "summary": cls.summary, "expected_checks": list(cls.expected_checks),
        "conditional_checks": dict(cls.conditional_checks), "repair": cls.repair,
        "undo": cls.adds_unmanaged,
    } for name, cls in CATALOG.items()]


def _bucket_policy(s3: Any, bucket: str) -> str | None:
    try:
        return s3.get_bucket_policy(Bucket=bucket).get("Policy")
    except Exception:  # noqa: BLE001 - NoSuchBucketPolicy (or a bucket gone meanwhile): no policy
        return None


def describe_extras(clients: Clients, region: str, vpc_ids: Sequence[str]) -> dict[str, Any]:
    """What the DNS, storage and image faults select from (read-only, like ``describe_group``).

    ``hosted_zones``: private zones associated with the VPCs, with ``Tags``
    (dict) and their ``Records``; ``buckets``: every bucket with its ``Tags``
    (dict) (select keeps the run's); ``images``: this account's AMIs.
    """
    r53 = clients("route53", region)
    zones = []
    for vpc in vpc_ids:
        for summary in r53.list_hosted_zones_by_vpc(VPCId=vpc, VPCRegion=region).get("HostedZoneSummaries", []):
            zone_id = summary["HostedZoneId"].split("/")[-1]
            if any(z["Id"] == zone_id for z in zones):
                continue
            records = r53.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
            zones.append({"Id": zone_id, "Name": summary.get("Name", ""), "Tags": _zone_tags(clients, zone_id),
                          "Records": records})
    s3 = clients("s3", region)
    buckets = [{"Name": b["Name"], "Tags": _bucket_tags(clients, region, b["Name"]),
                "Policy": _bucket_policy(s3, b["Name"])} for b in s3.list_buckets().get("Buckets", [])]
    images = clients("ec2", region).describe_images(Owners=["self"]).get("Images", [])
    return {"hosted_zones": zones, "buckets": buckets, "images": images}


def selectable(snapshot: Mapping[str, Any], run_id: str, group: str,
               names: Iterable[str] | None = None, rng_or_index: int | random.Random = 0) -> list[Fault]:
    """One fault per catalog entry that finds a target in the snapshot."""
    out = []
    for name in names or CATALOG:
        fault = CATALOG[name].select(snapshot, run_id, group, rng_or_index)
        if fault is not None:
            out.append(fault)
    return out


def fault_strategy(snapshot: Mapping[str, Any], run_id: str, group: str, names: Iterable[str] | None = None) -> Any:
    """A Hypothesis strategy of faults with targets in the snapshot (for state machines)."""
    from hypothesis import strategies as st

    usable = [n for n in (names or CATALOG) if CATALOG[n].select(snapshot, run_id, group, 0) is not None]
    if not usable:
        return st.nothing()
    return st.builds(
        lambda name, index: CATALOG[name].select(snapshot, run_id, group, index),
        st.sampled_from(usable), st.integers(min_value=0, max_value=63))


def candidates(name: str, snapshot: Mapping[str, Any], run_id: str, group: str,
               addresses: Mapping[str, str] | None = None, seed: int | str = 0) -> list[Fault]:
    """Every distinct target of one fault in the snapshot, in an order that depends only on the group.

    The candidates are sorted by what they touch named by Terraform address
    (AWS ids differ from run to run, addresses do not), then shuffled by a
    ``random.Random`` seeded with ``seed``, the group and the fault name: the
    same group and seed give the same targets on every run.
    """
    cls = CATALOG[name]
    found: dict[str, Fault] = {}
    for index in range(256):
        fault = cls.select(snapshot, run_id, group, index)
        if fault is None or repr(fault) in found:
            break
        found[repr(fault)] = fault
    addresses = addresses or {}
    ordered = sorted(found.values(), key=lambda f: stable_key(f, addresses))
    random.Random(f"{seed}:{group}:{name}").shuffle(ordered)
    return ordered


def stable_key(fault: Fault, addresses: Mapping[str, str]) -> str:
    """The fault's repr with every AWS id the state knows replaced by its Terraform address."""
    text = repr(fault)
    for aws_id in sorted((i for i in addresses if i and i in text), key=len, reverse=True):
        text = text.replace(aws_id, addresses[aws_id])
    return text


#: Attributes by which a Terraform resource belongs to what a fault touched (a route of a touched table,
#: a rule of a touched security group, an EIP of a touched instance, ...).
CHILD_ATTRIBUTES = ("route_table_id", "security_group_id", "network_acl_id", "vpc_peering_connection_id",
                    "nat_gateway_id", "instance", "instance_id")
#: Attributes by which a touched resource names another that goes with it (a NAT gateway's EIP).
PARENT_ATTRIBUTES = ("allocation_id",)


def touched(fault: Fault, added: Iterable[str] = (), state: Iterable[Any] = (),
            snapshot: Mapping[str, Any] | None = None) -> frozenset[str]:
    """The AWS ids and Terraform addresses of what the fault touched or added.

    ``state`` holds ``plan.StateResource``-like objects (``address``,
    ``aws_id``, ``values``). Included: the fault's resources (a Route53
    record ``zone/name`` as its zone's record of that name), what it
    added, the state resources with one of those ids, their children by
    :data:`CHILD_ATTRIBUTES` and the resources they name by
    :data:`PARENT_ATTRIBUTES`; for a security group, the instances that
    carry it (an isolation finding names the instance it exposes).
    """
    ids: set[str] = set()
    records: set[tuple[str, str]] = set()
    for resource in (*fault.resources, *added):
        if "/" in resource:
            zone, _, record = resource.partition("/")
            records.add((zone, record.rstrip(".")))
        else:
            ids.add(resource)
    if snapshot:
        sgs = {i for i in ids if i.startswith("sg-")}
        for inst in snapshot.get("instances", []):
            if sgs & set(_instance_sgs(inst)):
                ids.add(inst["InstanceId"])
    state = list(state)
    names: set[str] = set()
    for r in state:
        values = r.values or {}
        zone_record = (str(values.get("zone_id", "")), str(values.get("name", "")).rstrip("."))
        if str(r.aws_id) in ids or zone_record in records or any(
                str(values.get(a, "")) in ids for a in CHILD_ATTRIBUTES if values.get(a)):
            names.add(r.address)
            if r.aws_id:
                ids.add(str(r.aws_id))
            ids.update(str(values[a]) for a in PARENT_ATTRIBUTES if values.get(a))
    names |= {r.address for r in state if str(r.aws_id) in ids}
    return frozenset(ids | names)


def finding_resources(finding: Any) -> set[str]:
    """What a finding is about: its AWS id and Terraform address, and the instances at the ends of a flow."""
    found = {finding.aws_id, finding.address}
    detail = finding.detail or {}
    found |= {str(detail[k]) for k in ("source_instance", "destination_instance") if detail.get(k)}
    found |= {str(i) for i in detail.get("declared_instances") or ()}  # the instances a flow lost at an end
    return {f for f in found if f}


def disjoint(faults: Iterable[Fault]) -> bool:
    """True when no two faults write to the same resource (so they can be injected in one batch)."""
    seen: set[str] = set()
    for fault in faults:
        mine = set(fault.resources)
        if mine & seen:
            return False
        seen |= mine
    return True


# -- the orchestrator

@dataclass
class Injection:
    """What happened to one fault: planned (dry run) or injected, with the planned calls."""

    fault: Fault
    calls: list[str]
    injected: bool


class Chaos:
    """Injects faults for one run, under the run's safety rules.

    Audit mode refuses every fault before anything is read or written; a dry
    run records the planned calls and touches nothing. A fault made for
    another run is refused too.
    """

    def __init__(self, clients: Clients, run_id: str, audit: bool = False, dry_run: bool = False) -> None:
        self.clients = clients
        self.run_id = run_id
        self.audit = audit
        self.dry_run = dry_run
        self.history: list[Injection] = []

    def __repr__(self) -> str:
        return f"Chaos(run_id={self.run_id!r}, audit={self.audit!r}, dry_run={self.dry_run!r})"

    def _allowed(self, fault: Fault) -> None:
        if self.audit:
            raise FaultRefused(
                f"chaos is refused in --audit mode (audits never write): {fault.name} on {fault.target} "
                "was not injected; run without --audit on an ephemeral run to inject faults", "audit")
        if fault.run_id != self.run_id:
            raise FaultRefused(f"{fault.name} on {fault.target} was made for run {fault.run_id!r}, "
                               f"not for this run {self.run_id!r}", "other-run")

    def inject(self, fault: Fault) -> list[str]:
        """Inject the fault (or only plan it on a dry run); return the planned calls."""
        self._allowed(fault)
        calls = fault.plan()
        if not self.dry_run:
            fault.inject(self.clients)
        self.history.append(Injection(fault, calls, injected=not self.dry_run))
        return calls

    def inject_all(self, faults: Sequence[Fault]) -> list[list[str]]:
        """A batch of faults on disjoint resources."""
        if not disjoint(faults):
            raise FaultRefused("faults of one batch must act on disjoint resources: "
                               + ", ".join(f"{f.name}:{'/'.join(f.resources)}" for f in faults), "not-disjoint")
        return [self.inject(f) for f in faults]

    def undo(self, fault: Fault) -> None:
        """Remove what the fault added outside Terraform (never in audit mode, nothing on a dry run)."""
        self._allowed(fault)
        if not self.dry_run:
            fault.undo(self.clients)

    @property
    def injected(self) -> list[Fault]:
        return [i.fault for i in self.history if i.injected]


# -- the detection matrix

def detection_matrix(results: Iterable[tuple[str, Sequence[str], Sequence[str]]],
                     checks: Sequence[str] = CHECKS) -> dict[str, Any]:
    """Fault x check, from (fault name, expected checks, detected checks) per injection.

    ``checks`` are the matrix's columns, in order (the host faults' matrix adds ``hosts``).

    A cell is ``detected`` (expected and seen every time), ``missed``
    (expected, not seen at least once), ``not-expected`` or ``unexpected``
    (seen without being expected). ``ratio`` is expected detections made over
    expected detections (1.0 when nothing was expected).
    """
    rows: dict[str, dict[str, Any]] = {}
    expected_total = detected_total = 0
    for fault, expected, detected in results:
        row = rows.setdefault(fault, {"fault": fault, "runs": 0, "expected": {}, "detected": {}})
        row["runs"] += 1
        exp, det = set(expected), set(detected)
        for check in exp | det:
            if check not in checks:
                raise ValueError(f"unknown check {check!r} for fault {fault}; checks are {', '.join(checks)}")
        for check in exp:
            row["expected"][check] = row["expected"].get(check, 0) + 1
            expected_total += 1
            if check in det:
                row["detected"][check] = row["detected"].get(check, 0) + 1
                detected_total += 1
        for check in det - exp:
            row.setdefault("unexpected", {})
            row["unexpected"][check] = row["unexpected"].get(check, 0) + 1
    out_rows = []
    for fault, row in rows.items():
        cells = {}
        for check in checks:
            want = row["expected"].get(check, 0)
            got = row["detected"].get(check, 0)
            if want:
                cells[check] = DETECTED if got == want else MISSED
            elif row.get("unexpected", {}).get(check):
                cells[check] = UNEXPECTED
            else:
                cells[check] = NOT_EXPECTED
        out_rows.append({"fault": fault, "runs": row["runs"], "cells": cells,
                         "expected": sorted(row["expected"], key=list(checks).index),
                         "detected": sorted(set(row["detected"]) | set(row.get("unexpected", {})),
                                            key=list(checks).index)})
    return {
        "checks": list(checks),
        "rows": out_rows,
        "expected": expected_total,
        "detected": detected_total,
        "ratio": (detected_total / expected_total) if expected_total else 1.0,
    }


def missed(matrix: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(fault, check) pairs where an expected check did not see the fault."""
    return [(row["fault"], check) for row in matrix["rows"] for check in matrix["checks"]
            if row["cells"][check] == MISSED]


_MD_CELL = {DETECTED: "detected", MISSED: "**MISSED**", NOT_EXPECTED: "·", UNEXPECTED: "also seen"}


def matrix_markdown(matrix: Mapping[str, Any]) -> str:
    checks = matrix["checks"]
    lines = [
        "# Chaos detection matrix",
        "",
        f"Detection ratio: {matrix['detected']}/{matrix['expected']} expected detections "
        f"({matrix['ratio']:.0%}).",
        "",
        "| fault | runs | " + " | ".join(checks) + " |",
        "| --- | ---: | " + " | ".join("---" for _ in checks) + " |",
    ]
    for row in matrix["rows"]:
        lines.append(f"| {row['fault']} | {row['runs']} | "
                     + " | ".join(_MD_CELL[row["cells"][c]] for c in checks) + " |")
    gaps = missed(matrix)
    lines += ["", "Missed: " + (", ".join(f"{f} by {c}" for f, c in gaps) if gaps else "none") + "."]
    return "\n".join(lines) + "\n"


def write_matrix(matrix: Mapping[str, Any], reports_dir: str | Path) -> list[Path]:
    """Write reports/chaos-matrix.json and reports/chaos-matrix.md; return their paths."""
    root = Path(reports_dir)
    root.mkdir(parents=True, exist_ok=True)
    data = dict(matrix, missed=[list(m) for m in missed(matrix)])
    json_path = root / "chaos-matrix.json"
    md_path = root / "chaos-matrix.md"
    json_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    md_path.write_text(matrix_markdown(matrix))
    return [json_path, md_path]


__all__ = [
    "CATALOG", "CHECKS", "REPAIR", "RUN_TAG", "Chaos", "Fault", "FaultRefused", "Injection",
    "candidates", "catalog_table", "describe_extras", "detection_matrix", "disjoint", "fault_strategy",
    "finding_resources", "matrix_markdown", "missed", "selectable", "sg_rules", "stable_key", "touched",
    "without_route", "without_rule", "write_matrix",
    *(cls.__name__ for cls in CATALOG.values()),
]
