"""Chaos as a Hypothesis state machine: inject faults into a running group, repair, rebuild, and after every
step the checks agree with a model of what was injected.

System under test: a Harness that applied the purpose-made group ``chaos-lab`` (tests/groups/chaos-lab)
into the session's moto server, one run per example. Model: the faults injected and not yet repaired.

Invariants after every step, over the checks ``drift``, ``unmanaged`` and ``mutation`` (the group has
no roles catalog, flows or images, so roles/reachability/parity do not apply):

1. no miss: each injected fault is seen by each of its expected checks
   (``fault.expected()`` restricted to these three);
2. no false alarm: each finding belongs to an injected fault;
3. after a repair or a rebuild every check is green (and a plain plan has nothing left to do).

"Belongs to" / "seen" is the chaos experiment's own attribution: the finding's resource (its AWS id or
Terraform address, or a flow's end instances: ``chaos.finding_resources``) is one the fault touched or
added (``chaos.touched``: the fault's resources, what it added out of band, e.g. the instance
``rogue_instance`` launched, read right after the injection; the state resources with those ids and
their children, e.g. the ``aws_route`` of a touched table; for a security group, its member instances).
The group is green whenever the model is empty, so every finding is new against that baseline.

Profiles (``IMMUTABLE_INFRA_CHAOS_MACHINE``):

- ``smoke`` (default, CI): a fixed seed, a few examples, no shrinking: the same program every time;
- ``nightly`` (opt in: ``IMMUTABLE_INFRA_CHAOS_MACHINE=nightly pytest tests/test_chaos_machine.py``):
  randomised (a new seed each run, printed by Hypothesis on failure), more examples and steps, and
  shrinking on, so a failure comes back as a short program. Expect tens of minutes.

Every fault of ``FAULTS`` is reachable by the machine: the rules draw the fault name from all of
``FAULTS`` and ``test_every_machine_fault_finds_a_target`` proves on an applied chaos-lab that each one
has a target and at least one of the machine's checks is expected to see it.

The group is applied when the machine is made; ``first_fault`` (an initialize rule) makes every example
inject at least one fault; then ``inject``, ``repair`` and (once two faults are in) ``rebuild``. Rules draw a
fault name and an index; the target is picked among that fault's candidates that are disjoint from what is
injected (its additions included), ordered by Terraform address, so a printed failing program replays on a
fresh run, where the AWS ids differ. Each injection notes the fault's ``repr`` as a comment, e.g.::

    state = ChaosMachine()
    state.checks_agree_with_the_model()
    # the next step injects RoleTagFlipped(target='i-b893bdbbbc0f4fbef', ...)  (on aws_instance.app[0])
    state.first_fault(name='role_tag_flipped', index=0)
    state.checks_agree_with_the_model()
    state.teardown()

To replay it, bind the class first: ``ChaosMachine = chaos_machine(moto_server.url, tmp_path / "home")``.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, note, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test,
)

from immutable_infra import chaos, verify
from immutable_infra.findings import Finding, format_findings
from immutable_infra.harness import Harness
from immutable_infra.live import addresses_from_state, describe_group, group_vpc_ids
from immutable_infra.plan import Plan, state_resources
from immutable_infra.sandbox import check_endpoint
from immutable_infra.settings import Settings

GROUP = "chaos-lab"
GROUPS_DIR = (Path(__file__).parent / "groups").resolve()

#: The checks this machine runs: the ones that apply to a group without roles, flows or images.
CHECKS = ("drift", "unmanaged", "mutation")

#: Faults that find a target in chaos-lab and that at least one of CHECKS is expected to see: all of them
#: (``test_every_machine_fault_finds_a_target`` checks it against the catalog).
FAULTS = (
    "role_tag_flipped", "rogue_instance", "route_deleted",
    "sg_opened_to_world", "instance_terminated", "instance_type_changed",
    "group_tag_flipped", "source_dest_check_disabled", "flow_rule_revoked",
)

#: Slow infrastructure: each step costs seconds, so few examples, few steps, no deadline, no shrinking.
CHAOS_SETTINGS = settings(
    max_examples=2, stateful_step_count=4, deadline=None, derandomize=True, database=None,
    suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate],
)
#: The nightly search: random seed, more and longer examples, shrinking on (each step still costs seconds).
NIGHTLY_SETTINGS = settings(
    max_examples=12, stateful_step_count=8, deadline=None, derandomize=False, database=None,
    suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate, Phase.shrink],
)
PROFILE_ENV = "IMMUTABLE_INFRA_CHAOS_MACHINE"

#: A fixed seed for the smoke profile (it overrides derandomize, which seeds from the machine's source text,
#: so that any edit of this file would pick other faults). The program it draws depends on FAULTS: the smoke
#: run covers a few faults, repair and rebuild in a few minutes; the nightly profile searches all of FAULTS.
CHAOS_SEED = 140


@dataclass(frozen=True)
class Injected:
    """One fault of the model: what it is, the AWS ids and addresses findings about it mention, what must see it."""

    fault: chaos.Fault
    ids: frozenset[str]
    addresses: frozenset[str]
    expected: tuple[str, ...]

    touched: frozenset[str] = frozenset()

    def owns(self, finding: Finding) -> bool:
        return bool(chaos.finding_resources(finding) & self.touched)


def chaos_machine(endpoint: str, home: Path) -> type[RuleBasedStateMachine]:
    """The machine class, bound to a running AWS endpoint and a run home (one run per example)."""

    class ChaosMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.run_id = "chaos-" + uuid.uuid4().hex[:10]
            self.harness = Harness(Settings(
                groups=[GROUP], groups_dir=GROUPS_DIR, aws_endpoint=endpoint, run_id=self.run_id, home=home,
            ))
            self.chaos = chaos.Chaos(self.clients, self.run_id)
            self.injected: list[Injected] = []
            self.after = "up"  # the last step that must leave every check green, or ""
            self.snapshot: dict[str, Any] = {}
            # Up here, not in an @initialize rule: every example then starts with a fault (first_fault), and
            # Hypothesis calls teardown() only for a machine it got, so a failed up cleans up itself.
            try:
                self.harness.up([GROUP])
            except BaseException:
                self.harness.teardown()
                raise

        def clients(self, service: str, region: str) -> Any:
            return self.harness.sandbox.client(service, region)

        # -- reading the system

        def describe(self) -> dict[str, Any]:
            rec = self.harness.run.groups[GROUP]
            return describe_group(self.clients("ec2", rec.region), group_vpc_ids(rec.outputs), GROUP)

        def addresses(self) -> dict[str, str]:
            return addresses_from_state(self.harness.deployer.terraform(GROUP).state())

        def used(self) -> set[str]:
            return {i for inj in self.injected for i in (*inj.fault.resources, *inj.ids)}

        def candidates(self, name: str, snapshot: dict[str, Any]) -> list[chaos.Fault]:
            """Distinct faults of this kind whose resources are free (not written by an injected fault)."""
            used, found = self.used(), {}
            for index in range(16):
                fault = chaos.CATALOG[name].select(snapshot, self.run_id, GROUP, index)
                if fault is None:
                    break
                if not set(fault.resources) & used:
                    found[repr(fault)] = fault
            return list(found.values())

        # -- rules

        @initialize(name=st.sampled_from(FAULTS), index=st.integers(min_value=0, max_value=7))
        def first_fault(self, name: str, index: int) -> None:
            """Every example injects at least one fault (Hypothesis may stop an example after any step)."""
            self.inject(name, index)

        @precondition(lambda self: any(self.candidates(n, self.snapshot) for n in FAULTS))
        @rule(name=st.sampled_from(FAULTS), index=st.integers(min_value=0, max_value=7))
        def inject(self, name: str, index: int) -> None:
            """Inject ``name`` (or, when it has no free target, the next fault of FAULTS that has one)."""
            snapshot = self.describe()
            start = FAULTS.index(name)
            for other in FAULTS[start:] + FAULTS[:start]:
                cands = self.candidates(other, snapshot)
                if cands:
                    break
            else:
                note(f"# no fault has a free target in run {self.run_id}: nothing injected")
                return
            addresses = self.addresses()
            fault = sorted(cands, key=lambda f: (addresses.get(f.target, f.target), repr(f)))[index % len(cands)]
            before = set(fault.added(self.clients)) if hasattr(fault, "added") else set()
            self.chaos.inject(fault)
            added = (set(fault.added(self.clients)) - before) if hasattr(fault, "added") else set()
            ids = frozenset(set(fault.resources) | added)
            state = state_resources(self.harness.deployer.terraform(GROUP).state())
            self.injected.append(Injected(
                fault, ids, frozenset(addresses[i] for i in ids if i in addresses),
                tuple(c for c in fault.expected() if c in CHECKS),
                chaos.touched(fault, added, state, snapshot),
            ))
            self.after = ""
            where = ", ".join(sorted(addresses.get(i, i) for i in ids))
            # Hypothesis prints a step after it ran, so this comment comes right before the step's line.
            note(f"# the next step injects {fault!r}  (on {where})")

        @precondition(lambda self: bool(self.injected))
        @rule()
        def repair(self) -> None:
            """Remove what faults added outside Terraform, then apply the group again."""
            self.undo_additions()
            self.harness.repair(GROUP)
            self.injected.clear()
            self.after = "repair"
            self.assert_nothing_to_do()

        @precondition(lambda self: len(self.injected) >= 2)
        @rule()
        def rebuild(self) -> None:
            """Destroy and recreate the group (rarely: only once two faults are in)."""
            self.undo_additions()
            self.harness.rebuild(GROUP)
            self.injected.clear()
            self.after = "rebuild"
            self.assert_nothing_to_do()

        def undo_additions(self) -> None:
            for inj in self.injected:
                if inj.fault.adds_unmanaged:
                    self.chaos.undo(inj.fault)

        def assert_nothing_to_do(self) -> None:
            """A repaired group is what its Terraform declares: a plain plan changes nothing."""
            plan = Plan.from_json(self.harness.deployer.terraform(GROUP).plan(out="chaos-machine.tfplan"))
            left = [f"{c.address}: {'/'.join(c.actions)}" for c in plan.changes if not c.is_noop]
            assert not left, f"after {self.after}, Terraform still plans changes: {left}"

        # -- invariants

        @invariant(check_during_init=True)
        def checks_agree_with_the_model(self) -> None:
            results = verify.verify_group(self.harness, GROUP, list(CHECKS))
            problems = []
            if self.after:
                for check, result in results.items():
                    if result.findings:
                        problems.append(
                            f"after {self.after}, {check} is not green:\n{format_findings(result.findings)}")
            for inj in self.injected:
                for check in inj.expected:
                    if not any(inj.owns(f) for f in results[check].findings):
                        problems.append(f"missed: {check} does not see {inj.fault!r} (ids {sorted(inj.ids)})")
            for check, result in results.items():
                for finding in result.findings:
                    if not any(inj.owns(finding) for inj in self.injected):
                        problems.append(f"false alarm: {finding}")
            assert not problems, "\n".join(dict.fromkeys(problems))
            self.snapshot = self.describe()

        # -- end of an example

        def teardown(self) -> None:
            """Undo out-of-band additions, destroy the run; the shared moto server stays up."""
            try:
                self.undo_additions()
            finally:
                problems = self.harness.teardown()
            assert self.harness.sandbox.server is None, "the harness owns no server with --aws-endpoint"
            check_endpoint(endpoint)
            assert not problems, "\n".join(problems)
            assert not leftovers(self.clients("ec2", "ap-southeast-1"), self.run_id)

    return ChaosMachine


def leftovers(ec2: Any, run_id: str) -> list[str]:
    """Instances not terminated and VPCs still tagged with the run."""
    flt = [{"Name": "tag:Run", "Values": [run_id]}]
    found = [i["InstanceId"] for r in ec2.describe_instances(Filters=flt)["Reservations"] for i in r["Instances"]
             if i["State"]["Name"] != "terminated"]
    return found + [v["VpcId"] for v in ec2.describe_vpcs(Filters=flt)["Vpcs"]]


def machine_profile() -> str:
    profile = os.environ.get(PROFILE_ENV, "smoke").strip().lower() or "smoke"
    if profile not in ("smoke", "nightly"):
        pytest.fail(f"{PROFILE_ENV}={profile!r}: use smoke (fixed seed, CI) or nightly (randomised, shrinking)",
                    pytrace=False)
    return profile


def test_chaos_machine(moto_server, tmp_path):
    machine = chaos_machine(moto_server.url, tmp_path / "home")
    if machine_profile() == "nightly":
        run_state_machine_as_test(machine, settings=NIGHTLY_SETTINGS)
    else:
        run_state_machine_as_test(seed(CHAOS_SEED)(machine), settings=CHAOS_SETTINGS)


def test_every_machine_fault_finds_a_target(moto_server, tmp_path):
    """Every fault of FAULTS can be drawn and injected on chaos-lab, and one of CHECKS must see it; the
    faults of the catalog left out find no target there or no check of the machine would see them."""
    run_id = "reach-" + uuid.uuid4().hex[:8]
    harness = Harness(Settings(groups=[GROUP], groups_dir=GROUPS_DIR, aws_endpoint=moto_server.url, run_id=run_id,
                               home=tmp_path / "home"))
    try:
        harness.up([GROUP])
        rec = harness.run.groups[GROUP]
        snap = describe_group(harness.sandbox.client("ec2", rec.region), group_vpc_ids(rec.outputs), GROUP)
        snap["region"] = rec.region
        usable = set()
        for name in chaos.CATALOG:
            cands = chaos.candidates(name, snap, run_id, GROUP)
            if any(set(f.expected()) & set(CHECKS) for f in cands):
                usable.add(name)
        assert usable == set(FAULTS), f"faults the machine could inject: {sorted(usable)}; FAULTS: {sorted(FAULTS)}"
    finally:
        assert not harness.teardown()
