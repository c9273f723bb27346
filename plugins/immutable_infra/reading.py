"""One verification pass's reading of the run: each group's state, outputs and describe snapshot read once.

A :class:`Reading` is made at the start of a pass (``verify.verify_group``,
``verify.applicable``, one phase of a chaos batch) and dropped at its end.
It has no ``invalidate``: whatever changes the run (an apply, a repair, a
fault injection, a settle) happens between passes, and the next pass makes a
new reading, so a check can never see what was read before a change.

Every getter returns a fresh container (a shallow copy) over the cached
data, so a check that adds keys to its snapshot (the chaos planner adds
``describe_extras``) cannot change what the next check of the pass sees.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from immutable_infra.harness import Harness


class Reading:
    """What one pass reads of the run, each thing once: ``show -json`` per group, describe per group, one run snapshot."""

    def __init__(self, h: "Harness") -> None:
        self.h = h
        self._states: dict[str, dict[str, Any]] = {}
        self._resources: dict[str, list[Any]] = {}
        self._describes: dict[str, dict[str, Any]] = {}
        self._run_snapshot: dict[str, Any] | None = None
        #: what this pass read, for tests and the benchmark: "state:<group>", "describe:<group>", "run_snapshot"
        self.reads: list[str] = []

    # -- Terraform

    def applied(self) -> list[str]:
        """The run's applied groups, in apply order."""
        return [n for n in self.h.run.order if self.h.run.groups[n].status == "applied"]

    def state(self, group: str) -> dict[str, Any]:
        """The group's state as ``terraform show -json`` prints it (read once per group and pass: the state file)."""
        if group not in self._states:
            self.reads.append(f"state:{group}")
            self._states[group] = self.h.deployer.terraform(group).state()
        return self._states[group]

    def resources(self, group: str) -> list[Any]:
        """The group's state resources (modules, count and for_each included)."""
        from immutable_infra.plan import state_resources

        if group not in self._resources:
            self._resources[group] = state_resources(self.state(group))
        return list(self._resources[group])

    def instances(self, group: str) -> list[Any]:
        """The aws_instance resources of the group's state."""
        return [r for r in self.resources(group) if r.type == "aws_instance"]

    def outputs(self, group: str) -> dict[str, Any]:
        """The group's outputs as the run recorded them at its last apply, repair or settle."""
        return dict(self.h.run.groups[group].outputs or {})

    def neighbour_resources(self, group: str) -> list[Any]:
        """Resources managed by the other applied groups (a peering requester manages routes on both sides)."""
        return [r for other in self.applied() if other != group for r in self.resources(other)]

    def vpc_ids(self, group: str) -> list[str]:
        """The group's VPCs: every aws_vpc of its state, unless an output names them (no state read then)."""
        from immutable_infra.live import group_vpc_ids

        return group_vpc_ids(self.outputs(group)) or group_vpc_ids({}, self.state(group))

    def addresses(self, group: str) -> dict[str, str]:
        """AWS id -> Terraform address of the group's state."""
        return {str(r.aws_id): r.address for r in self.resources(group) if r.aws_id}

    # -- AWS

    def _ec2(self, group: str) -> Any:
        """An EC2 client for the group's region, with the group's credentials (``verify.client``)."""
        from immutable_infra.verify import client

        return client(self.h, group, "ec2")

    def describe(self, group: str) -> dict[str, Any]:
        """The describe snapshot of the group's VPCs (``live.describe_group``), taken once per pass."""
        from immutable_infra.live import describe_group

        if group not in self._describes:
            self.reads.append(f"describe:{group}")
            # Instances tagged with the group outside its VPCs count when this run made them (a deployed group: no run)
            run_id = "" if getattr(self.h, "deployed", False) else self.h.run.id
            self._describes[group] = describe_group(self._ec2(group), self.vpc_ids(group), group, run_id)
        return dict(self._describes[group])

    def run_snapshot(self) -> dict[str, Any]:
        """One snapshot over every applied group (all regions), with ``addresses``: AWS id -> address."""
        from immutable_infra.live import run_snapshot as take

        if self._run_snapshot is None:
            self.reads.append("run_snapshot")
            pairs, addresses, vpc_groups = [], {}, {}
            for other in self.applied():
                pairs.append((self._ec2(other), self.vpc_ids(other)))
                addresses.update(self.addresses(other))
                vpc_groups.update({vpc: other for vpc in self.vpc_ids(other)})
            snapshot = take(pairs)
            snapshot["addresses"] = addresses
            snapshot["vpc_groups"] = vpc_groups  # an instance without a Group tag belongs to its VPC's group
            self._run_snapshot = snapshot
        return dict(self._run_snapshot)
