"""One verification pass's reading of the run: each group's state, outputs and describe snapshot read once.

A :class:`Reading` is made at the start of a pass (``verify.verify_group``,
``verify.applicable``, one phase of a chaos batch) and dropped at its end.
It has no ``invalidate``: whatever changes the run (an apply, a repair, a
fault injection, a settle) happens between passes, and the next pass makes a
new reading, so a check can never see what was read before a change.

Every getter returns a fresh container (a shallow copy) over the cached
data, so a check that adds keys to its snapshot (the chaos planner adds
``describe_extras``) cannot change what the next check of the pass sees.

A pass may read ahead (:meth:`Reading.read_ahead`): one background thread
reads what the pass's checks will ask for while the drift check's
refresh-only plan runs. Each read is made under its own lock, so a check
that asks for something the thread is reading waits for it instead of
reading it twice; a read that fails in the thread is left to the check,
which reads it again and reports the failure as its own. The pass waits for
the thread before it ends, so nothing is read after the pass.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:
    from immutable_infra.harness import Harness


class Reading:
    """What one pass reads of the run, each thing once: ``show -json`` per group, describe per group, one run snapshot."""

    def __init__(self, h: "Harness") -> None:
        self.h = h
        self._got: dict[str, Any] = {}
        self._gates: dict[str, threading.Lock] = {}
        self._gates_lock = threading.Lock()
        #: what this pass read, for tests and the benchmark: "state:<group>", "describe:<group>", "run_snapshot"
        self.reads: list[str] = []

    def _once(self, key: str, read: Callable[[], Any], logged: bool = True) -> Any:
        """``read()`` once per pass (under the key's own lock: a second caller waits for the first)."""
        with self._gates_lock:
            gate = self._gates.setdefault(key, threading.Lock())
        with gate:
            if key not in self._got:
                if logged:
                    self.reads.append(key)
                self._got[key] = read()
            return self._got[key]

    def read_ahead(self, group: str, checks: Iterable[str]) -> threading.Thread | None:
        """Start reading, in one background thread, what these checks of ``group`` will ask for; None if nothing.

        The caller joins the thread before its pass ends. A read that fails
        here is not kept: the check that needs it reads it again.
        """
        wanted = set(checks)
        steps: list[Callable[[], Any]] = []
        if wanted & {"unmanaged", "roles", "mutation", "parity", "reachability"}:
            steps.append(lambda: self.resources(group))
        if "unmanaged" in wanted:
            steps.append(lambda: self.neighbour_resources(group))
        if wanted & {"unmanaged", "roles", "parity"}:
            steps.append(lambda: self.describe(group))
        if "reachability" in wanted:
            steps.append(self.run_snapshot)
        if not steps:
            return None

        def run() -> None:
            for step in steps:
                try:
                    step()
                except Exception:  # noqa: BLE001 - the check that needs it reads it again and says what failed
                    return

        thread = threading.Thread(target=run, name=f"read-ahead-{group}", daemon=True)
        thread.start()
        return thread

    # -- Terraform

    def applied(self) -> list[str]:
        """The run's applied groups, in apply order."""
        return [n for n in self.h.run.order if self.h.run.groups[n].status == "applied"]

    def state(self, group: str) -> dict[str, Any]:
        """The group's state as ``terraform show -json`` prints it (read once per group and pass: the state file)."""
        return self._once(f"state:{group}", lambda: self.h.deployer.terraform(group).state())

    def resources(self, group: str) -> list[Any]:
        """The group's state resources (modules, count and for_each included)."""
        from immutable_infra.plan import state_resources

        return list(self._once(f"resources:{group}", lambda: state_resources(self.state(group)), logged=False))

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

        def read() -> dict[str, Any]:
            # Instances tagged with the group outside its VPCs count when this run made them (a deployed group: no run)
            run_id = "" if getattr(self.h, "deployed", False) else self.h.run.id
            return describe_group(self._ec2(group), self.vpc_ids(group), group, run_id)

        return dict(self._once(f"describe:{group}", read))

    def run_snapshot(self) -> dict[str, Any]:
        """One snapshot over every applied group (all regions), with ``addresses``: AWS id -> address."""
        from immutable_infra.live import run_snapshot as take

        def read() -> dict[str, Any]:
            pairs, addresses, vpc_groups = [], {}, {}
            for other in self.applied():
                pairs.append((self._ec2(other), self.vpc_ids(other)))
                addresses.update(self.addresses(other))
                vpc_groups.update({vpc: other for vpc in self.vpc_ids(other)})
            snapshot = take(pairs)
            snapshot["addresses"] = addresses
            snapshot["vpc_groups"] = vpc_groups  # an instance without a Group tag belongs to its VPC's group
            return snapshot

        return dict(self._once("run_snapshot", read))
