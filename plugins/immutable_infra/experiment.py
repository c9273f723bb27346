"""A chaos experiment on one applied group: plan fault batches, inject, detect, repair, prove green again.

Faults on disjoint resources go in one batch and are repaired by one apply.
Faults that block the same flows (a deleted peering hides a revoked rule
behind it) go in separate batches, so each one's blocking component shows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from immutable_infra.chaos import CATALOG, Chaos, Fault, describe_extras, disjoint
from immutable_infra.findings import Finding

if TYPE_CHECKING:
    from immutable_infra.harness import Harness

#: Faults that change what a flow meets first (a blocked path, or an end that is gone or renamed): at most one
#: per batch, or the first blocking component the analyzer names could be another fault's.
FLOW_BLOCKERS = {"flow_rule_revoked", "route_deleted", "route_hijacked", "peering_deleted", "acl_deny_added", "nat_deleted",
                 "instance_terminated", "role_tag_flipped", "group_tag_flipped", "stale_ami_replacement"}
#: Faults that act on an instance: at most one per instance and batch (``resources`` covers that).
MAX_BATCH = 8


@dataclass
class Outcome:
    """One fault in one batch: what was expected, what saw it, and the findings that named it."""

    fault: Fault
    batch: int
    expected: list[str]
    detected: list[str] = field(default_factory=list)
    evidence: dict[str, list[str]] = field(default_factory=dict)

    @property
    def missed(self) -> list[str]:
        return [c for c in self.expected if c not in self.detected]


@dataclass
class Experiment:
    """The result of a whole experiment on one group."""

    group: str
    outcomes: list[Outcome] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # fault name -> why it did not run
    residue: list[Finding] = field(default_factory=list)  # findings left after the repairs
    plans: list[list[str]] = field(default_factory=list)

    def outcome(self, name: str) -> Outcome | None:
        return next((o for o in self.outcomes if o.fault.name == name), None)


def snapshot(h: "Harness", name: str) -> dict[str, Any]:
    from immutable_infra.live import group_vpc_ids
    from immutable_infra.verify import describe

    rec = h.run.groups[name]
    snap = describe(h, name)
    snap.update(describe_extras(h.sandbox.client, rec.region, group_vpc_ids(rec.outputs, h.deployer.terraform(name).state())))
    return snap


def plan_batches(snap: dict[str, Any], run_id: str, group: str, names: Iterable[str]) -> tuple[list[list[Fault]], dict[str, str]]:
    """Assign each named fault a target and a batch: disjoint resources, one flow blocker per batch."""
    batches: list[list[Fault]] = []
    skipped: dict[str, str] = {}
    for name in names:
        candidates: list[Fault] = []
        for index in range(8):
            fault = CATALOG[name].select(snap, run_id, group, index)
            if fault is not None and all(fault.resources != c.resources for c in candidates):
                candidates.append(fault)
        if not candidates:
            skipped[name] = f"no target for {name} in {group}"
            continue
        placed = False
        for batch in batches:
            if len(batch) >= MAX_BATCH or (name in FLOW_BLOCKERS and any(f.name in FLOW_BLOCKERS for f in batch)):
                continue
            fault = next((c for c in candidates if disjoint(batch + [c])), None)
            if fault is not None:
                batch.append(fault)
                placed = True
                break
        if not placed:
            batches.append([candidates[0]])
    return batches, skipped


def mentions(finding: Finding, needles: set[str]) -> bool:
    text = str(finding) + " " + json.dumps(finding.detail, default=str)
    return any(n and n in text for n in needles)


def run(h: "Harness", name: str, faults: Iterable[str], checks: list[str], dry_run: bool = False, audit: bool = False) -> Experiment:
    """Inject every named fault (in batches), run the checks, repair, and check everything is green again."""

    exp = Experiment(name)
    chaos = Chaos(h.sandbox.client, h.run.id, audit=audit, dry_run=dry_run)
    remaining = list(faults)
    number = 0
    while remaining:
        # Plan from a fresh snapshot each time: a repair replaces instances, so earlier targets may be gone.
        batches, skipped = plan_batches(snapshot(h, name), h.run.id, name, remaining)
        exp.skipped.update(skipped)
        if not batches:
            break
        todo = batches if dry_run else batches[:1]
        for batch in todo:
            number += 1
            exp.plans.append([line for calls in chaos.inject_all(batch) for line in calls])
            if not dry_run:
                _observe_and_repair(h, name, batch, number, checks, chaos, exp)
        done = {f.name for batch in todo for f in batch}
        remaining = [f for f in remaining if f not in done and f not in skipped]
    return exp


def _observe_and_repair(h: "Harness", name: str, batch: list[Fault], number: int, checks: list[str],
                        chaos: Chaos, exp: Experiment) -> None:
    """Run the checks on the injected batch, note what saw each fault, undo and repair, check green again."""
    from immutable_infra.live import addresses_from_state
    from immutable_infra.verify import verify_group

    try:
        addresses = addresses_from_state(h.deployer.terraform(name).state())
        results = verify_group(h, name, checks)
        for fault in batch:
            # a resource may be a path (a Route53 record is "<zone id>/<name>"): each part names it
            needles = set(fault.resources) | {p for r in fault.resources for p in r.split("/") if p}
            if hasattr(fault, "added"):
                needles |= set(fault.added(h.sandbox.client))
            needles |= {addresses[i] for i in list(needles) if i in addresses}
            outcome = Outcome(fault, number, [c for c in fault.expected() if c in checks])
            for check, result in results.items():
                hits = [str(f) for f in result.findings if mentions(f, needles)]
                if hits:
                    outcome.detected.append(check)
                    outcome.evidence[check] = hits[:3]
            exp.outcomes.append(outcome)
    finally:
        for fault in batch:
            chaos.undo(fault)
        h.repair(name)
    after = verify_group(h, name, checks)
    exp.residue += [f for r in after.values() for f in r.findings]


def matrix_rows(exp: Experiment) -> list[tuple[str, list[str], list[str]]]:
    return [(o.fault.name, o.expected, o.detected) for o in exp.outcomes]
