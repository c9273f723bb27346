"""Every invariant check of a group in a run, read live: one function per check, all read-only.

Each function gathers the plain data its check needs (refresh-only plan,
state, describe_* snapshots) and calls the pure check. Suites, the disaster
drill and the chaos suite share them, so a check means the same everywhere.

Every check takes an optional :class:`~immutable_infra.reading.Reading`: the
pass it is part of. :func:`verify_group` makes one per call, so the checks of
a pass share one ``show -json`` per group, one describe snapshot per group and
one run snapshot; a check called alone makes its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable

from immutable_infra.findings import Finding

from immutable_infra.reading import Reading

if TYPE_CHECKING:
    from immutable_infra.harness import Harness


class NotApplicable(Exception):
    """The group lacks what a check needs: its test is skipped with this reason, never passed."""


class ClaimNotMet(Exception):
    """The group's config claims something its Terraform does not have: its test errors with this line."""


@dataclass
class Result:
    """Findings of one check, plus tables for the reports."""

    check: str
    findings: list[Finding] = field(default_factory=list)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: drift only: its refresh-only plan had no drift entry at all, noise included (a settle would read nothing in).
    quiet: bool = False


def applied_groups(h: "Harness") -> set[str]:
    return {n for n, r in h.run.groups.items() if r.status == "applied"}


def neighbour_resources(h: "Harness", name: str, reading: Reading | None = None) -> list[Any]:
    """Resources managed by the other groups of the run (a peering requester manages routes on both sides)."""
    return (reading or Reading(h)).neighbour_resources(name)


def client(h: "Harness", name: str, service: str) -> Any:
    """A boto3 client for the group's region with the group's credentials (a deployed group's profile)."""
    if getattr(h, "deployed", False):
        return h.client(name, service)
    return h.sandbox.client(service, h.run.groups[name].region)


def describe(h: "Harness", name: str, reading: Reading | None = None) -> dict[str, Any]:
    """The describe snapshot of the group's VPCs (one per pass: see :class:`Reading`)."""
    return (reading or Reading(h)).describe(name)


def vpc_ids(h: "Harness", name: str, reading: Reading | None = None) -> list[str]:
    """The group's VPCs: every aws_vpc of its state (modules, count, for_each), unless an output names them."""
    return (reading or Reading(h)).vpc_ids(name)


def drift(h: "Harness", name: str, reading: Reading | None = None) -> Result:
    from immutable_infra.checks import noise
    from immutable_infra.checks.drift import find_drift
    from immutable_infra.plan import Plan

    reading = reading or Reading(h)
    plan = Plan.from_json(h.deployer.terraform(name).refresh_plan())
    if not plan.drift:
        # Nothing drifted: no row to classify, so no state to classify it against (a plan from the stream has none).
        findings, table = find_drift(plan, name, rules=noise.DEFAULT_NOISE_RULES, state=[])
    else:
        # Routes and rules that other groups of the run manage in this group's tables are theirs, not drift.
        findings, table = find_drift(plan, name, rules=noise.DEFAULT_NOISE_RULES,
                                     state=plan.prior_resources() + reading.neighbour_resources(name))
    outputs_same = all(tuple(c.get("actions") or ()) in ((), ("no-op",))
                       for c in (plan.raw.get("output_changes") or {}).values())
    return Result("drift", findings, {"drift": table},
                  quiet=plan.from_stream or (not plan.drift and plan.is_noop() and outputs_same))


def unmanaged(h: "Harness", name: str, reading: Reading | None = None) -> Result:
    from immutable_infra.checks.unmanaged import find_unmanaged

    reading = reading or Reading(h)
    managed = reading.resources(name) + reading.neighbour_resources(name)
    return Result("unmanaged", find_unmanaged(name, managed, reading.describe(name)))


def write_imports(h: "Harness", name: str, findings: list[Finding]) -> tuple[Any, str]:
    """--audit only: import blocks (and generated configuration) for unmanaged findings in reports/imports/<group>/.

    Returns (the folder or None, a line for the failure message). Writing
    them never hides the findings: a problem becomes that line.
    """
    if not h.settings.audit or not findings:
        return None, ""
    from immutable_infra.errors import ToolError
    from immutable_infra.imports import folder, write_imports as write
    from immutable_infra.plan import state_resources

    out = folder(h.settings.reports_dir, name)
    try:
        tf = h.deployer.terraform(name)
        addresses = [r.address for r in state_resources(tf.state())]
        written = write(name, findings, out, tf.workdir, addresses, tf)
    except (ToolError, OSError) as exc:
        return None, f"import blocks could not be written to {out}: " + " ".join(str(exc).split())[:500]
    return written, f"import blocks for them (review {written}/README.md, then apply): {written}/"


def roles(h: "Harness", name: str, reading: Reading | None = None) -> Result:
    from immutable_infra.checks.roles import find_role_violations
    from immutable_infra.live import live_instances
    from immutable_infra.roles import load_roles

    reading = reading or Reading(h)
    config = h.catalog.get(name)
    live = reading.describe(name)
    root = h.catalog.groups_dir.parent
    instances = live_instances(live)
    subnets, groups = _placement(h, name, instances, live)
    findings = find_role_violations(
        name, config.kind, config.roles, instances, subnets, groups,
        load_roles(root / "roles.toml"), root / "playbooks",
        require_group_tag=not getattr(h, "deployed", False),  # Group is a run's tag; a team's groups need not carry it
    )
    declared = [(r.address, str(r.aws_id), (r.values.get("tags") or {}).get("Role")) for r in reading.instances(name)]
    return Result("roles", name_count_findings(findings, declared, instances))


def name_count_findings(findings: list[Finding], declared: list[tuple[str, str, str | None]],
                        instances: list[dict[str, Any]]) -> list[Finding]:
    """Name the instances behind a role count that is off, so the finding is about a resource.

    ``declared`` holds (address, instance id, Role tag) from the state. A
    shortfall names the declared instances of the role that are gone or now
    carry another Role tag; a surplus names the live instances carrying the
    role that the state declares with another role, or does not declare.
    """
    live_role = {i["InstanceId"]: {t["Key"]: t["Value"] for t in i.get("Tags") or []}.get("Role") for i in instances}
    by_id = {iid: (address, role) for address, iid, role in declared}
    out = []
    for f in findings:
        role, want, have = f.detail.get("role"), f.detail.get("expected"), f.detail.get("found")
        if not role or want is None or have is None or want == have:
            out.append(f)
            continue
        if have < want:
            gone = [(a, iid) for a, iid, r in declared if r == role and iid not in live_role]
            moved = [(a, iid) for a, iid, r in declared if r == role and iid in live_role and live_role[iid] != role]
            named = [("gone", gone), ("now another role", moved)]
        else:
            moved = [(by_id[iid][0], iid) for iid, r in sorted(live_role.items())
                     if r == role and iid in by_id and by_id[iid][1] != role]
            extra = [("", iid) for iid, r in sorted(live_role.items()) if r == role and iid not in by_id]
            named = [("declared as another role", moved), ("not in the state", extra)]
        first = next((items[0] for _, items in named if items), None)
        if first is None:
            out.append(f)
            continue
        text = "; ".join(f"{label}: " + ", ".join(f"{a} ({iid})" if a else iid for a, iid in items)
                         for label, items in named if items)
        out.append(replace(f, address=first[0], aws_id=first[1], found=f"{f.found}; {text}"))
    return out


def _placement(h: "Harness", name: str, instances: list[dict[str, Any]],
               live: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Subnets and security groups of the instances, read by id where the group's VPC snapshot lacks them.

    An instance outside the VPCs the group was seen to own is still judged on
    its real subnet and groups, never reported as "subnet not found" / "closed".
    """
    from immutable_infra.checks.mutation import instance_security_group_ids

    subnets = list(live.get("subnets", []))
    groups = list(live.get("security_groups", []))
    want_subnets = sorted({i["SubnetId"] for i in instances if i.get("SubnetId")} - {s["SubnetId"] for s in subnets})
    want_groups = sorted({g for i in instances for g in instance_security_group_ids(i)} - {g["GroupId"] for g in groups})
    if want_subnets or want_groups:
        ec2 = client(h, name, "ec2")
        if want_subnets:
            subnets += ec2.describe_subnets(Filters=[{"Name": "subnet-id", "Values": want_subnets}])["Subnets"]
        if want_groups:
            groups += ec2.describe_security_groups(Filters=[{"Name": "group-id", "Values": want_groups}])["SecurityGroups"]
    return subnets, groups


def mutation(h: "Harness", name: str, reading: Reading | None = None) -> Result:
    """Live fingerprint: each instance still defined as it was at apply."""
    from immutable_infra.checks.mutation import find_fingerprint_changes
    from immutable_infra.live import fingerprints

    reading = reading or Reading(h)
    rec = h.run.groups[name]
    live = fingerprints(client(h, name, "ec2"), reading.state(name))
    return Result("mutation", find_fingerprint_changes(name, rec.fingerprints, live))


def run_snapshot(h: "Harness", reading: Reading | None = None) -> dict[str, Any]:
    """One snapshot over every applied group of the run (all regions), with AWS id -> address."""
    return (reading or Reading(h)).run_snapshot()


def reachability(h: "Harness", name: str, reading: Reading | None = None,
                 snapshot: dict[str, Any] | None = None) -> Result:
    """Declared flows reachable, isolation pairs not, peerings active with disjoint CIDRs."""
    from immutable_infra.checks.reachability import analyze_all, find_flow_violations, find_peering_problems, reachability_matrix
    from immutable_infra.live import declared_flows

    reading = reading or Reading(h)
    snapshot = snapshot or reading.run_snapshot()
    addresses = snapshot["addresses"]
    flows, _ = declared_flows(h.catalog, name, applied_groups(h), "flows")
    isolation, _ = declared_flows(h.catalog, name, applied_groups(h), "isolation")
    findings = find_flow_violations(flows, isolation, snapshot, addresses, name)
    if any(f.detail.get("code") in LOST_END for f in findings):
        findings = name_lost_ends(findings, flows, declared_roles(h, reading))
    findings += find_peering_problems(snapshot, addresses, name)
    matrix = reachability_matrix(analyze_all(flows + isolation, snapshot, addresses))
    return Result("reachability", findings, {"matrix": matrix})


#: Verdict codes of a flow that lost an end (no live instance carries the end's role and group).
LOST_END = {"NO_SOURCE_INSTANCE": "source", "NO_DESTINATION_INSTANCE": "destination"}


def declared_roles(h: "Harness", reading: Reading | None = None) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(group, Role tag) -> [(address, instance id)] of the instances the applied groups' states declare."""
    reading = reading or Reading(h)
    out: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for group in sorted(reading.applied()):
        for r in reading.instances(group):
            role = (r.values.get("tags") or {}).get("Role")
            if role and r.aws_id:
                out.setdefault((group, role), []).append((r.address, str(r.aws_id)))
    return out


def name_lost_ends(findings: list[Finding], flows: list[Any],
                   declared: dict[tuple[str, str], list[tuple[str, str]]]) -> list[Finding]:
    """A flow that lost an end is about the instances the state declares at that end (gone or re-tagged)."""
    by_name = {flow.name: flow for flow in flows}
    out = []
    for f in findings:
        end = LOST_END.get(f.detail.get("code", ""))
        flow = by_name.get(f.detail.get("flow", ""))
        if not end or flow is None or f.aws_id:
            out.append(f)
            continue
        role, group = ((flow.source_role, flow.source_group) if end == "source"
                       else (flow.destination_role, flow.destination_group))
        lost = declared.get((group, role), [])
        out.append(replace(f, address=lost[0][0], aws_id=lost[0][1],
                           detail={**f.detail, "declared_instances": [iid for _, iid in lost]}) if lost else f)
    return out


def parity(h: "Harness", name: str, reading: Reading | None = None) -> Result:
    """Lineage: every instance on an AMI of its template's current Packer run."""
    from immutable_infra.checks.parity import find_lineage_violations
    from immutable_infra.images import load_catalog
    from immutable_infra.live import live_instances

    rec = h.run.groups[name]
    ec2 = client(h, name, "ec2")
    instances = live_instances((reading or Reading(h)).describe(name))
    ids = sorted({i["ImageId"] for i in instances})
    images = ec2.describe_images(ImageIds=ids)["Images"] if ids else []
    return Result("parity", find_lineage_violations(name, instances, images, load_catalog(h.images_dir)))


#: check name -> ``check(h, group, reading=None)``; a wrapper must pass ``reading`` on.
CHECKS: dict[str, Callable[..., Result]] = {
    "mutation": mutation,
    "drift": drift,
    "unmanaged": unmanaged,
    "roles": roles,
    "reachability": reachability,
    "parity": parity,
}


def unclean(h: "Harness", name: str) -> list[Finding]:
    """Drift and unmanaged findings of the group now: a group with any is no clean "before" for a comparison."""
    reading = Reading(h)
    checks, _ = applicable(h, name, ["drift", "unmanaged"], reading)
    return [f for check in checks for f in CHECKS[check](h, name, reading).findings]


def verify_group(h: "Harness", name: str, checks: list[str] | None = None,
                 reading: Reading | None = None) -> dict[str, Result]:
    """Run the named checks (all when ``None``; none when empty) on one applied group: one pass, one :class:`Reading`.

    Pass ``reading`` only to share it with reads made just before, with
    nothing changed in between (the chaos baseline shares the planner's).
    """
    reading = reading or Reading(h)
    return {c: CHECKS[c](h, name, reading) for c in (list(CHECKS) if checks is None else checks)}


# -- what each check needs -------------------------------------------------------------------------


def state_instances(h: "Harness", name: str, reading: Reading | None = None) -> list[Any]:
    """The aws_instance resources of the group's state (modules, count and for_each included)."""
    return (reading or Reading(h)).instances(name)


def group_peerings(snapshot: dict[str, Any], vpcs: list[str]) -> list[str]:
    """Ids of the peering connections (not deleted) that touch any of these VPCs."""
    mine = set(vpcs)
    found = []
    for p in snapshot.get("peering_connections", []):
        ends = {(p.get(side) or {}).get("VpcId") for side in ("RequesterVpcInfo", "AccepterVpcInfo")}
        if ends & mine and (p.get("Status") or {}).get("Code") != "deleted":
            found.append(p["VpcPeeringConnectionId"])
    return sorted(found)


def needs_vpc(h: "Harness", name: str, check: str, reading: Reading | None = None) -> list[str]:
    vpcs = (reading or Reading(h)).vpc_ids(name)
    if not vpcs:
        raise NotApplicable(f"{check}: {name} has no VPC (no aws_vpc in its state, no vpc_id/vpc_ids output): "
                            "nothing to look at")
    return vpcs


def needs(h: "Harness", name: str, check: str, reading: Reading | None = None) -> None:
    """Raise NotApplicable (skip with the reason) or ClaimNotMet (error) when the group cannot give ``check`` a verdict.

    drift: always applicable. unmanaged, reachability: a VPC of the group.
    roles: [roles] in group.toml or instances (and [roles] that declares
    instances needs them in the state). mutation: instances, and a run this tool applied (a group
    audited as deployed has no apply-time fingerprint). tags (the lifecycle tag test): instances. parity:
    instances and image manifests.
    """
    config = h.catalog.get(name)
    reading = reading or Reading(h)
    if check == "drift":
        return
    if check in ("unmanaged", "reachability"):
        needs_vpc(h, name, check, reading)
        return
    instances = reading.instances(name) if check in ("roles", "mutation", "parity", "tags") else []
    declared = {role: n for role, n in config.roles.items() if n}
    if check == "roles":
        if declared and not instances:
            raise ClaimNotMet(
                f"roles: {config.config_file} [roles] declares "
                + ", ".join(f"{n} {role}" for role, n in sorted(declared.items()))
                + f" but {name}'s state has no aws_instance; fix [roles] or the group's Terraform")
        if not declared and not instances:
            raise NotApplicable(f"roles: {name} declares no [roles] in its group.toml and has no aws_instance")
        return
    if check in ("mutation", "parity", "tags") and not instances:
        if declared:
            raise ClaimNotMet(f"{check}: {config.config_file} [roles] declares instances but {name}'s state "
                              "has no aws_instance; fix [roles] or the group's Terraform")
        raise NotApplicable(f"{check}: {name} has no aws_instance to check")
    if check == "mutation" and getattr(h, "deployed", False):
        raise NotApplicable(
            f"mutation: {name} is audited as deployed, not applied by this tool: there is no fingerprint taken at "
            "its apply to compare with; the drift check compares its live instances with its state")
    if check == "parity":
        from immutable_infra.images import load_catalog

        if not h.images_dir.is_dir() or not any(h.images_dir.iterdir()):
            raise NotApplicable(f"parity: no image manifests in {h.images_dir} (Packer manifests of the images)")
        load_catalog(h.images_dir)  # a broken manifest is a tool error, raised here
        return


def applicable(h: "Harness", name: str, checks: list[str],
               reading: Reading | None = None) -> tuple[list[str], dict[str, str]]:
    """Split checks into those the group can be given a verdict by, and the others with the reason."""
    reading = reading or Reading(h)
    ok, not_here = [], {}
    for check in checks:
        try:
            needs(h, name, check, reading)
        except (NotApplicable, ClaimNotMet) as exc:
            not_here[check] = str(exc)
        else:
            ok.append(check)
    return ok, not_here
