"""A chaos experiment on one applied group: baseline, inject, attribute, repair, prove the repair, settle.

For each batch of faults (disjoint resources, at most one flow blocker):

1. **baseline**: run the batch's proof checks (below) and keep their findings,
   in the same pass (one :class:`~immutable_infra.reading.Reading`) that
   planned the batch: nothing changed between the two. When the previous
   batch's repair was proven and had nothing to settle, nothing has changed
   since its proof either: that proof's pass plans this batch, and its
   results are this baseline for the checks it ran (only the others run);
2. **inject** each fault on its own: one that fails (an AWS or Terraform
   error, a refused target) is recorded in ``errors`` and the others go on;
3. **attribute**: run the batch's *watch* checks again, in a new pass: the
   checks that a fault of the batch can change (:func:`affected_checks`:
   each fault's expected and conditional checks); a fault is detected by a
   check only through *new* findings (not in the baseline) whose resource,
   AWS id or Terraform address, is one the fault touched or added
   (:func:`immutable_infra.chaos.touched`). A new finding no fault explains
   is a **false alarm**;
4. **repair**: undo what faults added outside Terraform (a rogue instance, a
   hand-made rule in a group whose rules Terraform manages as separate
   resources), then apply the group, without settling it;
5. **prove**, in a new pass: the watch checks plus drift and unmanaged
   (:data:`RESIDUE_CHECKS`); every new finding against the baseline is a
   **residue** (a fault not repaired), recorded once. Only a group proven
   clean is **settled**: the proof's saved refresh-only plan is applied, so the
   state takes what the proof read and nothing after it (:meth:`Harness.settle`);
   settling over an unrepaired out-of-band change would read it into the state
   and hide it from drift for good. A group whose proof's refresh-only plan had no
   drift entry at all (noise included) and no output change has nothing to
   settle: that apply would read nothing in, so it is not run.

A check no fault of the batch can change does not run for that batch: it could
only report a change the batch did not make. ``Experiment.watched`` records,
per batch, which checks each phase ran.

Misses, false alarms and residue are findings of the ``chaos`` check
(:meth:`Experiment.findings`), so every report agrees with the chaos tests.
Targets are chosen from the group by Terraform address and a seed
(:func:`immutable_infra.chaos.candidates`), never by AWS id order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from immutable_infra.chaos import (
    CATALOG, Chaos, Fault, FaultRefused, candidates, describe_extras, disjoint, finding_resources, sg_rules,
    touched, with_acl_deny, without_route, without_rule,
)
from immutable_infra.findings import Finding
from immutable_infra.progress import phase
from immutable_infra.reading import Reading

if TYPE_CHECKING:
    from immutable_infra.harness import Harness

#: Faults that change what a flow meets first (a blocked path, or an end that is gone or renamed): at most one
#: per batch, or the first blocking component the analyzer names could be another fault's.
FLOW_BLOCKERS = {"flow_rule_revoked", "route_deleted", "route_hijacked", "peering_deleted", "acl_deny_added", "nat_deleted",
                 "instance_terminated", "role_tag_flipped", "group_tag_flipped", "stale_ami_replacement"}
#: Faults that act on an instance: at most one per instance and batch (``resources`` covers that).
MAX_BATCH = 8
#: The check under which misses, false alarms and residue are reported.
CHECK = "chaos"
#: What the repair proof runs besides the batch's watch checks: the group is what its Terraform declares (drift)
#: and carries nothing Terraform does not manage (unmanaged), which is what ``verify.unclean`` asks of a clean group.
#: A residue a fault leaves is a change of what it touched, which its own checks see (they ran after injection);
#: these two also catch what the undo and the repair apply themselves might have left or changed.
RESIDUE_CHECKS = ("drift", "unmanaged")


@dataclass
class Outcome:
    """One fault in one batch: what was expected, what saw it, and the new findings that named it."""

    fault: Fault
    batch: int
    expected: list[str]
    detected: list[str] = field(default_factory=list)
    evidence: dict[str, list[str]] = field(default_factory=dict)
    touched: frozenset[str] = frozenset()
    error: str = ""  # the fault could not be injected (nothing is expected of the checks then)

    @property
    def missed(self) -> list[str]:
        return [] if self.error else [c for c in self.expected if c not in self.detected]


@dataclass
class Experiment:
    """The result of a whole experiment on one group."""

    group: str
    outcomes: list[Outcome] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # fault name -> why it did not run
    residue: list[Finding] = field(default_factory=list)  # new findings left after a repair, each once
    false_alarms: list[Finding] = field(default_factory=list)  # new findings no fault explains
    errors: dict[str, str] = field(default_factory=dict)  # fault name (or "repair of batch N") -> what failed
    plans: list[list[str]] = field(default_factory=list)
    unsettled: list[int] = field(default_factory=list)  # batches whose repair was not proven: never settled
    #: batch -> phase -> checks run; ``baseline_from_proof``: the baseline checks whose results are the previous
    #: batch's proof (nothing changed since it), so they did not run again
    watched: dict[int, dict[str, list[str]]] = field(default_factory=dict)

    def outcome(self, name: str) -> Outcome | None:
        return next((o for o in self.outcomes if o.fault.name == name), None)

    def findings(self) -> list[Finding]:
        """Misses, false alarms and residue, as findings of the ``chaos`` check."""
        out = []
        for o in self.outcomes:
            for check in o.missed:
                out.append(Finding(
                    CHECK, self.group, "", o.fault.target, f"{check} sees {o.fault.name}",
                    f"missed: no new {check} finding on what {o.fault!r} touched (batch {o.batch})",
                    {"kind": "miss", "fault": o.fault.name, "check": check, "batch": o.batch, "repr": repr(o.fault)}))
        for f in self.false_alarms:
            out.append(Finding(
                CHECK, self.group, f.address, f.aws_id, "every new finding explained by an injected fault",
                f"false alarm: {f}", {"kind": "false-alarm", "finding": f.to_dict()}))
        for f in self.residue:
            out.append(Finding(
                CHECK, self.group, f.address, f.aws_id, "green after repair (no new finding against the baseline)",
                f"not repaired: {f}", {"kind": "residue", "finding": f.to_dict()}))
        return out


# -- attribution (pure: recorded findings in, verdicts out)

def new_findings(baseline: Mapping[str, Sequence[Finding]], after: Mapping[str, Sequence[Finding]]) -> dict[str, list[Finding]]:
    """check -> findings of ``after`` that the baseline does not have (findings compare without ``detail``)."""
    return {check: [f for f in found if f not in set(baseline.get(check, ()))] for check, found in after.items()}


def attribute(baseline: Mapping[str, Sequence[Finding]], after: Mapping[str, Sequence[Finding]],
              scopes: Sequence[frozenset[str]]) -> tuple[list[dict[str, list[Finding]]], list[Finding]]:
    """Which check saw which fault, and the false alarms.

    ``scopes[i]`` is what fault ``i`` touched (AWS ids and Terraform
    addresses). Returns, per fault, check -> the new findings about what it
    touched; and the new findings about nothing any fault touched.
    """
    seen: list[dict[str, list[Finding]]] = [{} for _ in scopes]
    alarms: list[Finding] = []
    for check, found in new_findings(baseline, after).items():
        for finding in found:
            about = finding_resources(finding)
            owners = [i for i, scope in enumerate(scopes) if about & scope]
            for i in owners:
                seen[i].setdefault(check, []).append(finding)
            if not owners:
                alarms.append(finding)
    return seen, alarms


def rules_carrying_flows(flows: Sequence[Any], snapshot: Mapping[str, Any], addresses: Mapping[str, str],
                         security_groups: Iterable[str]) -> list[tuple[str, str, int, int, str]]:
    """The ingress rules of these security groups whose revocation blocks a declared flow reachable now."""
    from immutable_infra.checks.reachability import analyze_all

    if not flows:
        return []
    reachable = {v.flow.name for v in analyze_all(flows, dict(snapshot), dict(addresses)) if v.reachable}
    if not reachable:
        return []
    own = set(security_groups)
    carrying = []
    for rule in sg_rules(snapshot):
        if rule[0] in own and any(v.flow.name in reachable and not v.reachable
                                  for v in analyze_all(flows, without_rule(snapshot, rule), dict(addresses))):
            carrying.append(rule)
    return carrying


def acls_carrying_flows(flows: Sequence[Any], snapshot: Mapping[str, Any], addresses: Mapping[str, str],
                        acls: Iterable[str]) -> list[str]:
    """The network ACLs of the group where ``acl_deny_added``'s entry blocks a declared flow reachable now."""
    from immutable_infra.checks.reachability import analyze_all

    if not flows:
        return []
    reachable = {v.flow.name for v in analyze_all(flows, dict(snapshot), dict(addresses)) if v.reachable}
    if not reachable:
        return []
    return [acl for acl in acls
            if any(v.flow.name in reachable and not v.reachable
                   for v in analyze_all(flows, with_acl_deny(snapshot, acl), dict(addresses)))]


def routes_carrying_flows(flows: Sequence[Any], snapshot: Mapping[str, Any], addresses: Mapping[str, str],
                          routes: Iterable[Sequence[str]]) -> list[tuple[str, str]]:
    """The routes (route table, destination) whose removal blocks a declared flow reachable now."""
    from immutable_infra.checks.reachability import analyze_all

    if not flows:
        return []
    reachable = {v.flow.name for v in analyze_all(flows, dict(snapshot), dict(addresses)) if v.reachable}
    if not reachable:
        return []
    return [(table, dest) for table, dest in routes
            if any(v.flow.name in reachable and not v.reachable
                   for v in analyze_all(flows, without_route(snapshot, table, dest), dict(addresses)))]


def managed_routes(own: Iterable[Any], everyone: Iterable[Any]) -> list[tuple[str, str]]:
    """The routes (route table, destination) a group's own Terraform manages.

    Its ``aws_route`` resources, and the routes its ``aws_route_table``
    resources list that no ``aws_route`` of any applied group manages (inline
    ``route`` blocks). A route a neighbour's ``aws_route`` put in this group's
    table is not the group's: its drift cannot see it go, its repair cannot
    put it back.
    """
    own, everyone = list(own), list(everyone)
    separate = {(str(r.values.get("route_table_id")), str(r.values.get("destination_cidr_block")))
                for r in everyone if r.type == "aws_route"}
    found = {(str(r.values.get("route_table_id")), str(r.values.get("destination_cidr_block")))
             for r in own if r.type == "aws_route"}
    for table in own:
        if table.type != "aws_route_table" or not table.aws_id:
            continue
        for route in table.values.get("route") or ():
            key = (table.aws_id, str(route.get("cidr_block") or ""))
            if key[1] and key not in separate:
                found.add(key)
    return sorted(found)


def foreign_rules(neighbours: Iterable[Any]) -> list[tuple[str, str, int, int, str]]:
    """The ingress rules the neighbours' ``aws_security_group_rule`` resources manage, one per source.

    A group's security group may carry rules another group's Terraform adds
    (a peer admitting its own CIDR or security group): they are the
    neighbour's, so a fault on this group must not revoke them.
    """
    out = []
    for r in neighbours:
        v = r.values or {}
        if r.type != "aws_security_group_rule" or v.get("type") != "ingress" or not v.get("security_group_id"):
            continue
        head = (str(v["security_group_id"]), str(v.get("protocol")), int(v.get("from_port") or 0), int(v.get("to_port") or 0))
        sources = list(v.get("cidr_blocks") or ()) + [v["source_security_group_id"]] * bool(v.get("source_security_group_id"))
        sources += [v["security_group_id"]] * bool(v.get("self"))
        out += [(*head, str(source)) for source in sources]
    return sorted(out)


def managed_records(own: Iterable[Any]) -> list[tuple[str, str]]:
    """(zone id, name) of the group's ``aws_route53_record`` resources (the full name where the state has it)."""
    return sorted((str(r.values.get("zone_id")), str(r.values.get("fqdn") or r.values.get("name") or ""))
                  for r in own if r.type == "aws_route53_record")


def ownership(own: Sequence[Any], neighbours: Sequence[Any]) -> dict[str, list[Any]]:
    """What the group's own Terraform manages among what faults could target, for the snapshot faults select from.

    ``managed_peerings`` (the peerings it requests), ``managed_routes``,
    ``foreign_rules`` (rules the neighbours put in its security groups) and
    ``managed_records``: a fault on what a neighbour manages could be seen by
    no check of this group and repaired by no apply of it.
    """
    own, neighbours = list(own), list(neighbours)
    return {
        "managed_peerings": sorted(str(r.aws_id) for r in own if r.type == "aws_vpc_peering_connection" and r.aws_id),
        "managed_routes": managed_routes(own, own + neighbours),
        "foreign_rules": foreign_rules(neighbours),
        "managed_records": managed_records(own),
    }


#: The describe lists faults take their targets from, and the id of each item.
TARGET_LISTS = {"instances": "InstanceId", "security_groups": "GroupId", "nat_gateways": "NatGatewayId",
                "network_acls": "NetworkAclId"}


def without_foreign(snap: Mapping[str, Any], own: Sequence[Any], neighbours: Sequence[Any]) -> dict[str, Any]:
    """The snapshot without what a neighbour's Terraform manages in the group's VPCs (a security group, an instance,
    a NAT gateway or a network ACL another group created there): a fault on it could be seen by no check of this
    group and repaired by no apply of it. What no state manages (a default ACL, an instance an autoscaling group
    launched) stays."""
    own_ids = {r.aws_id for r in own if r.aws_id}
    foreign = {r.aws_id for r in neighbours if r.aws_id and getattr(r, "mode", "managed") == "managed"} - own_ids
    out = dict(snap)
    for key, id_key in TARGET_LISTS.items():
        if key in out:
            out[key] = [item for item in out[key] if item.get(id_key) not in foreign]
    return out


def affected_checks(batch: Sequence[Fault], checks: Sequence[str]) -> list[str]:
    """The checks (of ``checks``, in their order) whose findings a fault of the batch can change.

    Each fault's ``expected_checks``, the checks it names in
    ``conditional_checks`` (whether or not this target meets the condition),
    and what ``expected()`` says for this very target.
    """
    can: set[str] = set()
    for fault in batch:
        can |= set(fault.expected_checks) | set(fault.conditional_checks) | set(fault.expected())
    return [c for c in checks if c in can]


def proof_checks(batch: Sequence[Fault], checks: Sequence[str]) -> list[str]:
    """The checks the baseline and the repair proof run: the batch's watch checks plus :data:`RESIDUE_CHECKS`."""
    watch = set(affected_checks(batch, checks))
    return [c for c in checks if c in watch or c in RESIDUE_CHECKS]


# -- against a running group

def snapshot(h: "Harness", name: str, checks: Iterable[str] = (), reading: Reading | None = None) -> dict[str, Any]:
    """What faults select from: the group's describe snapshot, extras, and (for reachability) the flow rules."""
    reading = reading or Reading(h)
    rec = h.run.groups[name]
    snap = reading.describe(name)
    snap.update(describe_extras(h.sandbox.client, rec.region, reading.vpc_ids(name)))
    # What the group's own Terraform manages: faults target only that (what a neighbour manages is the neighbour's)
    own, neighbours = reading.resources(name), reading.neighbour_resources(name)
    snap = without_foreign(snap, own, neighbours)
    snap.update(ownership(own, neighbours))
    if "reachability" in checks:
        from immutable_infra.live import declared_flows

        flows, _ = declared_flows(h.catalog, name, set(reading.applied()), "flows")
        if flows:
            run_snap = reading.run_snapshot()
            snap["flow_rules"] = rules_carrying_flows(
                flows, run_snap, run_snap["addresses"], [g["GroupId"] for g in snap.get("security_groups", [])])
            snap["flow_acls"] = acls_carrying_flows(
                flows, run_snap, run_snap["addresses"], [a["NetworkAclId"] for a in snap.get("network_acls", [])])
            snap["flow_routes"] = routes_carrying_flows(flows, run_snap, run_snap["addresses"], snap["managed_routes"])
    return snap


def state_of(h: "Harness", name: str, reading: Reading | None = None) -> list[Any]:
    """The group's state resources and its neighbours' (a peering requester manages routes on both sides)."""
    reading = reading or Reading(h)
    return reading.resources(name) + reading.neighbour_resources(name)


def plan_batches(snap: dict[str, Any], run_id: str, group: str, names: Iterable[str],
                 addresses: Mapping[str, str] | None = None,
                 seed: int | str = 0) -> tuple[list[list[Fault]], dict[str, str]]:
    """Assign each named fault a target and a batch: disjoint resources, one flow blocker per batch.

    Targets come in the seeded, address-ordered sequence of
    :func:`immutable_infra.chaos.candidates`; the first that fits a batch is taken.
    """
    batches: list[list[Fault]] = []
    skipped: dict[str, str] = {}
    for name in names:
        cands = candidates(name, snap, run_id, group, addresses, seed)
        if not cands:
            needs = CATALOG[name].needs
            skipped[name] = f"no target for {name} in {group}" + (f": it needs {needs}" if needs else "")
            continue
        placed = False
        for batch in batches:
            if len(batch) >= MAX_BATCH or (name in FLOW_BLOCKERS and any(f.name in FLOW_BLOCKERS for f in batch)):
                continue
            fault = next((c for c in cands if disjoint(batch + [c])), None)
            if fault is not None:
                batch.append(fault)
                placed = True
                break
        if not placed:
            batches.append([cands[0]])
    return batches, skipped


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:400]


def run(h: "Harness", name: str, faults: Iterable[str], checks: list[str], dry_run: bool = False,
        audit: bool = False, seed: int | str = 0) -> Experiment:
    """Inject every named fault (in batches), attribute what the checks see, repair, prove, settle."""
    exp = Experiment(name)
    chaos = Chaos(h.sandbox.client, h.run.id, audit=audit, dry_run=dry_run)
    remaining = [f for f in faults if f in CATALOG]
    number = 0
    # The last batch's proof when nothing changed after it (proven clean, nothing to settle): its pass and results.
    proven: tuple[Reading, dict[str, Any]] | None = None
    while remaining:
        # Plan from a reading taken after the last repair: a repair replaces instances, so earlier targets may be
        # gone. The batch's baseline shares this reading (nothing changes between planning and the baseline).
        with phase(h.say, f"[{name}] chaos: planning {len(remaining)} fault(s)") as planning:
            reading = proven[0] if proven else Reading(h)
            snap = snapshot(h, name, checks, reading)
            addresses = reading.addresses(name)
            batches, skipped = plan_batches(snap, h.run.id, name, remaining, addresses, seed)
        h.say(f"[{name}] chaos: {len(remaining) - len(skipped)} fault(s) in {len(batches)} batch(es) "
              f"({len(skipped)} without a target), planned in {planning.seconds:.0f} s")
        exp.skipped.update(skipped)
        if not batches:
            break
        todo = batches if dry_run else batches[:1]
        for batch in todo:
            number += 1
            if dry_run:
                exp.plans.append([line for calls in chaos.inject_all(batch) for line in calls])
                continue
            repaired, proven = _observe_and_repair(h, name, batch, number, checks, chaos, exp, snap, reading,
                                                   proven[1] if proven else {})
            if not repaired:
                done = {f.name for b in todo for f in b}
                for other in remaining:
                    if other not in done and other not in skipped:
                        exp.skipped[other] = f"not run: the repair of batch {number} failed ({exp.errors[f'repair of batch {number}']})"
                return exp
        done = {f.name for batch in todo for f in batch}
        remaining = [f for f in remaining if f not in done and f not in skipped]
    return exp


def _observe_and_repair(h: "Harness", name: str, batch: list[Fault], number: int, checks: list[str],
                        chaos: Chaos, exp: Experiment, snap: dict[str, Any], reading: Reading,
                        proven: Mapping[str, Any]) -> tuple[bool, tuple[Reading, dict[str, Any]] | None]:
    """One batch: baseline, inject, attribute, undo, repair, prove, settle.

    Returns whether the repair ran, and the proof's pass and results when
    nothing changed after the proof (proven clean, nothing to settle): the
    next batch plans from that pass and takes those results as its baseline.
    ``reading`` is the pass that planned the batch; the baseline shares it,
    and ``proven`` (check -> result of the previous batch's proof, made in
    that same pass) stands for the checks it holds. After the injection and
    after the repair, each verification is a new pass (a new
    :class:`Reading`), so neither can see what was read before.
    """
    from immutable_infra.verify import verify_group

    if chaos.audit:
        chaos.inject_all(batch)  # refuses, before anything is read or written
    if not disjoint(batch):
        chaos.inject_all(batch)  # refuses: a batch shares resources
    # Only checks a fault of the batch can change watch it: a check no fault can change could only report a change
    # the batch did not make. Every new finding of a check that runs is still attributed to a fault or a false alarm.
    watch, proof_set = affected_checks(batch, checks), proof_checks(batch, checks)
    exp.watched[number] = {"baseline": proof_set, "after": watch, "proof": proof_set}
    say = h.say
    where = f"[{name}] chaos batch {number}"
    started = time.monotonic()
    say(f"{where}: faults {', '.join(f.name for f in batch)}; checks {', '.join(watch)}")
    state = state_of(h, name, reading)
    reused = [c for c in proof_set if c in proven]
    with phase(say, f"{where}: baseline checks"):
        results = {c: proven[c] for c in reused}
        results.update(verify_group(h, name, [c for c in proof_set if c not in proven], reading))
        baseline = {c: results[c].findings for c in proof_set}
    if reused:
        exp.watched[number]["baseline_from_proof"] = reused
    say(f"{where}: baseline taken ({sum(map(len, baseline.values()))} finding(s)"
        + (f"; {', '.join(reused)} from the proof of batch {number - 1}, nothing changed since" if reused else "")
        + f"), {time.monotonic() - started:.0f} s")
    outcomes: list[Outcome] = []
    calls: list[str] = []
    try:
        for fault in batch:
            outcome = Outcome(fault, number, [c for c in fault.expected() if c in checks])
            before = set(fault.added(h.sandbox.client)) if hasattr(fault, "added") else set()
            try:
                calls += chaos.inject(fault)
            except FaultRefused as exc:
                if exc.code in ("audit", "other-run"):
                    raise
                outcome.error = str(exc)
            except Exception as exc:  # noqa: BLE001 - one fault's AWS error must not abort the others
                outcome.error = _one_line(exc)
            if outcome.error:
                exp.errors[fault.name] = outcome.error
            added = (set(fault.added(h.sandbox.client)) - before) if hasattr(fault, "added") else set()
            outcome.touched = touched(fault, added, state, snap)
            outcomes.append(outcome)
        exp.plans.append(calls)
        failed = sum(1 for o in outcomes if o.error)
        say(f"{where}: injected {len(outcomes) - failed} fault(s)" + (f" ({failed} could not be)" if failed else "")
            + f"; checks again, {time.monotonic() - started:.0f} s")
        with phase(say, f"{where}: checks after injection"):
            after = {c: r.findings for c, r in verify_group(h, name, watch, Reading(h)).items()}
        seen, alarms = attribute(baseline, after, [o.touched for o in outcomes])
        for outcome, by_check in zip(outcomes, seen):
            for check in watch:
                if by_check.get(check):
                    outcome.detected.append(check)
                    outcome.evidence[check] = [str(f) for f in by_check[check][:3]]
        exp.false_alarms += [f for f in alarms if f not in exp.false_alarms]
        exp.outcomes += outcomes
        missed = sum(1 for o in outcomes if o.missed)
        say(f"{where}: {missed} fault(s) missed by an expected check, {len(alarms)} false alarm(s); "
            f"undoing and repairing, {time.monotonic() - started:.0f} s")
    finally:
        for fault in batch:
            try:
                chaos.undo(fault)
            except Exception as exc:  # noqa: BLE001 - the proof below shows what the undo left
                exp.errors.setdefault(f"undo of {fault.name}", _one_line(exc))
        try:
            h.repair(name, settle=False)
        except Exception as exc:  # noqa: BLE001 - a Terraform error: reported, the experiment stops here
            exp.errors[f"repair of batch {number}"] = _one_line(exc)
            exp.unsettled.append(number)
            return False, None
    # The proof of the repair, before anything settles: the watch checks (they saw the faults, so they see what a
    # fault left) plus drift and unmanaged (the group is as declared and carries nothing unmanaged), in a new pass.
    with phase(say, f"{where}: checks after the repair"):
        proof_reading = Reading(h)
        proved = verify_group(h, name, proof_set, proof_reading)
        proof = {c: r.findings for c, r in proved.items()}
    left = [f for found in new_findings(baseline, proof).values() for f in found]
    exp.residue += [f for f in left if f not in exp.residue]
    if left or exp.unsettled:
        # Never settle over an unrepaired change (this batch's or an earlier one's): drift must keep seeing it.
        exp.unsettled.append(number)
        say(f"{where}: not settled ({len(left)} finding(s) left after the repair), {time.monotonic() - started:.0f} s")
    elif "drift" in proved and proved["drift"].quiet:
        # Nothing to settle: the proof's refresh-only plan, made after the repair apply, had no drift entry at all
        # (noise included) and no output change, so a refresh-only apply now would read nothing into the state.
        say(f"{where}: repaired; nothing to settle (no drift at all after the repair), "
            f"{time.monotonic() - started:.0f} s")
        return True, (proof_reading, proved)
    else:
        # The state takes what the proof read: its drift check's refresh-only plan, the last one saved in the group's
        # workspace (a plan always writes its planfile). Nothing read after the proof slips in unproven.
        h.settle(name, proven_plan="drift" in proved)
        say(f"{where}: repaired and settled, {time.monotonic() - started:.0f} s")
    return True, None


def matrix_rows(exp: Experiment) -> list[tuple[str, list[str], list[str]]]:
    """(fault, expected, detected) of every fault that was injected (faults that failed to inject are errors)."""
    return [(o.fault.name, o.expected, o.detected) for o in exp.outcomes if not o.error]
