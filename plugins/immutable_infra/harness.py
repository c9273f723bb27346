"""The infrastructure of one session: sandbox, catalog, run and deployer, created on first use.

Shared by the pytest plugin and the ``immutable-infra`` command, so both
apply, reuse and destroy runs the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from immutable_infra.catalog import Catalog, Group
from immutable_infra.errors import ToolError
from immutable_infra.engine import Driver, EmbeddedDriver, ExternalDriver, Terraform
from immutable_infra.ephemeral import Deployer, Run, RunError
from immutable_infra.sandbox import Sandbox, SandboxError
from immutable_infra.settings import Settings


@dataclass
class AppliedGroup:
    """A group applied in the current run: what suites test."""

    config: Group
    run: Run
    sandbox: Sandbox
    terraform: Terraform
    _state: dict[str, Any] | None = field(default=None, repr=False)
    #: client(service) with the group's credentials (a deployed group's profile); default: the sandbox's
    clients: Callable[[str], Any] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def region(self) -> str:
        return self.config.region

    @property
    def record(self):
        return self.run.groups[self.name]

    @property
    def outputs(self) -> dict[str, Any]:
        return self.record.outputs

    @property
    def resources(self) -> list[str]:
        return self.record.resources

    @property
    def workspace(self) -> Path:
        return self.run.workspace(self.name)

    def state(self, fresh: bool = False) -> dict[str, Any]:
        """The group's state as ``terraform show -json`` prints it."""
        if self._state is None or fresh:
            self._state = self.terraform.state()
        return self._state

    def refreshed_state(self) -> dict[str, Any]:
        """The group's state as a refresh reads it now (a refresh-only plan's ``prior_state``); nothing is written.

        What the rebuild compares: the state file holds what the last apply or
        settle read, so attributes another group changes later (a neighbour's
        ``aws_route`` in this group's route table shows in the table's ``route``)
        would differ between two state files for no difference in AWS.
        """
        plan = self.terraform.plan(out="refreshed.tfplan", refresh_only=True)
        return plan.get("prior_state") or self.terraform.state()

    def client(self, service: str) -> Any:
        """A boto3 client for the group's region, bound to the run's endpoint."""
        if self.clients is not None:
            return self.clients(service)
        return self.sandbox.client(service, self.region)


class Harness:
    """Sandbox, run and deployer for a session; nothing starts until first asked for."""

    def __init__(self, settings: Settings, say: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.say = say or (lambda line: None)
        self.catalog = Catalog(settings.groups_dir)
        self.applied_here: list[str] = []
        self.reused: list[str] = []
        self._sandbox: Sandbox | None = None
        self._run: Run | None = None
        self._images_registered = False
        self._run_error: Exception | None = None
        #: set on an xdist worker: why this process must not apply (the controller applies the run's groups)
        self.never_apply: str | None = None

    @cached_property
    def driver(self) -> Driver:
        return ExternalDriver(self.settings.terraform) if self.settings.terraform else EmbeddedDriver()

    @property
    def sandbox(self) -> Sandbox:
        if self._sandbox is None:
            s = self.settings
            if s.embedded:
                self.say("starting the embedded AWS sandbox (moto on 127.0.0.1)")
                self._sandbox = Sandbox.embedded()
            else:
                self._sandbox = Sandbox.remote(s.aws_endpoint, offline=bool(s.aws_endpoint) and not s.terraform)
        return self._sandbox

    @property
    def run(self) -> Run:
        if self._run is None:
            s = self.settings
            if s.deployed_audit:  # the groups as deployed, each read from its own backend (deployed.py)
                from immutable_infra.deployed import read_deployed

                if self._run_error is not None:  # said once; every later test gets the same line at once
                    raise self._run_error
                try:
                    self._run = read_deployed(self.catalog, s.groups, self.sandbox, self.driver, s.backend_config,
                                              s.parallelism, self.say)
                except ToolError as exc:
                    self._run_error = exc
                    raise
            elif s.run_id and Run.exists(s.home, s.run_id):
                run = Run.load(s.home, s.run_id)
                if run.endpoint != self.sandbox.endpoint:
                    where = run.endpoint or "real AWS"
                    raise RunError(
                        f"run {run.id} was deployed to {where}; pass "
                        + (f"--aws-endpoint {run.endpoint}" if run.endpoint else "--real-aws")
                        + " to use it"
                    )
                self._run = run
            elif s.audit:  # an audit writes nothing outside reports/: never create a run for it
                raise RunError(f"no run {s.run_id!r} in {s.home / 'runs'} to audit; `immutable-infra runs` lists them")
            else:
                self._run = Run.create(s.home, s.run_id, s.groups_dir, self.sandbox.endpoint, ttl_hours=s.ttl_hours)
        return self._run

    @cached_property
    def base_catalog(self) -> Catalog:
        """The catalog that gets applied: the working tree, or with --base-ref the groups as they were at REF."""
        if not self.settings.base_ref:
            return self.catalog
        from immutable_infra.gitref import export_groups

        groups_dir = export_groups(self.settings.groups_dir, self.settings.base_ref, self.run.path / "base")
        return Catalog(groups_dir)

    @property
    def deployed(self) -> bool:
        """The run is the groups as deployed (an audit without --run-id), not a run of this tool."""
        from immutable_infra.deployed import DeployedRun

        return isinstance(self.run, DeployedRun)

    @cached_property
    def deployer(self) -> Deployer:
        if self.deployed:
            from immutable_infra.deployed import DeployedDeployer

            return DeployedDeployer(self.run, self.base_catalog, self.sandbox, self.driver, self.settings.parallelism,
                                    self.say)
        return Deployer(self.run, self.base_catalog, self.sandbox, self.driver, self.settings.parallelism, self.say)

    def client(self, name: str, service: str) -> Any:
        """A boto3 client for group ``name``'s region, with the group's credentials ([deployed] profile on AWS)."""
        region = self.run.groups[name].region if name in self.run.groups else self.catalog.get(name).region
        if self.deployed:
            return self.deployer.client(name, service, region)  # type: ignore[attr-defined]
        return self.sandbox.client(service, region)

    @property
    def notes(self) -> list[str]:
        """What the session wants said in the terminal and the summary (a state lock held by someone else)."""
        return list(getattr(self._run, "notes", []) or [])

    def plan_working_tree(self, name: str) -> dict[str, Any]:
        """Merge gate: plan the working tree's version of a group against what the base version applied."""
        from immutable_infra.catalog import resolve_inputs

        group = self.catalog.get(name)
        outputs = {n: r.outputs for n, r in self.run.groups.items() if r.status == "applied"}
        self.run.prepare(group, self.catalog, self.sandbox, resolve_inputs(group, outputs))
        tf = self.deployer.terraform(name)
        tf.init()
        return tf.plan(out="gate.tfplan")

    def up(self, names: list[str]) -> list[Group]:
        """Apply the named groups and what they depend on; reuse what the run already has."""
        groups = self.base_catalog.closure(names)
        todo = []
        for g in groups:
            rec = self.run.groups.get(g.name)
            if rec is not None and rec.status == "applied":
                if self.deployed:
                    continue  # read from its backend (said so then)
                if g.name not in self.applied_here and g.name not in self.reused:
                    self.reused.append(g.name)
                    self.say(f"[{g.name}] reusing run {self.run.id} ({len(rec.resources)} resources)")
            else:
                todo.append(g)
        if todo and self.never_apply:
            raise RunError(f"{self.never_apply}; not applied in run {self.run.id}: " + ", ".join(g.name for g in todo))
        if todo and self.settings.audit:
            if self.deployed:
                raise RunError("--audit never applies, and these groups were not read as deployed: "
                               + ", ".join(g.name for g in todo) + "; name them with --group")
            raise RunError(
                f"--audit never applies, but run {self.run.id} has no applied "
                + ", ".join(g.name for g in todo)
                + f"; bring it up first: immutable-infra up {' '.join(g.name for g in todo)} --run-id {self.run.id}"
            )
        self.applied_here += [g.name for g in todo]
        if todo:
            self.register_images()
            self.deployer.up(todo)
        return groups

    @property
    def images_dir(self) -> Path:
        return self.catalog.groups_dir.parent / "images"

    def register_images(self) -> None:
        """Register the Packer-built AMIs of fixtures/images in a sandbox (real AWS already has them)."""
        if self._images_registered or not self.sandbox.is_local or not self.images_dir.is_dir():
            return
        from immutable_infra.images import load_catalog, register_images

        catalog = load_catalog(self.images_dir)
        mapping = register_images(lambda region: self.sandbox.client("ec2", region), catalog)
        self._images_registered = True
        self.say(f"registered {len(mapping)} Packer-built AMIs from {self.images_dir} in the sandbox")

    def applied(self, name: str) -> AppliedGroup:
        self.up([name])
        return AppliedGroup(self.catalog.get(name), self.run, self.sandbox, self.deployer.terraform(name),
                            clients=(lambda service: self.client(name, service)) if self.deployed else None)

    def dependents(self, name: str) -> list[str]:
        """Groups applied in this run that take inputs from ``name``, directly or not, in apply order."""
        applied = [n for n in self.run.order if self.run.groups[n].status == "applied"]
        found: list[str] = []
        for n in applied:
            deps = set(self.base_catalog.get(n).depends_on)
            if name in deps or deps & set(found):
                found.append(n)
        return found

    def destroy(self, names: list[str]) -> float:
        """Destroy these groups (dependents first); return the seconds it took. Raises on failure."""
        t0 = time.monotonic()
        problems = self.deployer.down(names)
        if problems:
            raise RunError("\n".join(problems))
        for n in names:
            self.run.groups[n].status = "pending"
            self.run.groups[n].teardown = ""
        self.run.save()
        return time.monotonic() - t0

    def recreate(self, names: list[str]) -> float:
        """Apply these groups again from their folders; return the seconds it took."""
        t0 = time.monotonic()
        self.deployer.up([self.base_catalog.get(n) for n in names], phase="reapply")
        return time.monotonic() - t0

    def repair(self, name: str, settle: bool = True) -> float:
        """Apply the group again over what is deployed (what a chaos repair is); return the seconds it took.

        ``settle=False`` runs the apply only: instances Terraform replaced get
        their fingerprint, nothing else is read into the state. Call
        :meth:`settle` once the repair is proven (chaos does): a refresh-only
        apply over an out-of-band change the apply did not remove (a rule added
        to a group whose rules are separate resources) would read it into the
        state and hide it from drift.
        """
        t0 = time.monotonic()
        if settle:
            self.run.groups[name].status = "pending"
            self.deployer.up([self.base_catalog.get(name)], destroy_on_failure=False, phase="repair")
            return time.monotonic() - t0
        from immutable_infra.ephemeral import record_apply
        from immutable_infra.live import fingerprints, instance_addresses

        rec = self.run.groups[name]
        tf = self.deployer.terraform(name)
        before = instance_addresses(tf.state())
        self.say(f"[{name}] repair apply")
        result = tf.apply(progress=self.deployer.progress(name, "repair apply"))
        record_apply(rec, "repair", result.seconds)
        state = tf.state()
        replaced = {a for a, i in instance_addresses(state).items() if before.get(a) != i}
        if replaced:
            live = fingerprints(self.sandbox.client("ec2", rec.region), state)
            rec.fingerprints.update({a: fp for a, fp in live.items() if a in replaced})
        rec.outputs = tf.output()
        self.run.save()
        return time.monotonic() - t0

    def settle(self, name: str, proven_plan: bool = False) -> None:
        """After a proven repair: the refresh-only apply that reads what the endpoint filled in (DESIGN.md).

        ``proven_plan``: the proof's refresh-only plan is the last one saved in the group's workspace; apply it,
        so the state takes exactly what the proof read and found clean, without reading AWS again. Terraform
        refuses it if the state changed since the plan; then a refresh-only apply reads AWS anew.
        """
        from immutable_infra.engine import TerraformError
        from immutable_infra.ephemeral import record_apply

        rec = self.run.groups[name]
        tf = self.deployer.terraform(name)
        result = None
        if proven_plan:
            self.say(f"[{name}] settling: applying the proof's refresh-only plan")
            try:
                result = tf.apply_refresh_plan(progress=self.deployer.progress(name))
            except TerraformError as exc:
                if not exc.stale_plan:
                    raise
                self.say(f"[{name}] the proof's plan is stale (the state changed since): refresh-only apply")
        if result is None:
            if not proven_plan:
                self.say(f"[{name}] settling: refresh-only apply")
            result = tf.apply(progress=self.deployer.progress(name), refresh_only=True)
        record_apply(rec, "settle", result.seconds)
        rec.outputs = tf.output()
        self.run.save()

    def rebuild(self, name: str) -> dict[str, Any]:
        """Destroy and recreate a group (and the applied groups that depend on it); time each phase.

        ``destroy_seconds``, ``apply_seconds`` and ``total_seconds`` are the
        group's own (what its budget and its history are about): a run that
        applied its dependents and one that did not measure the same thing.
        The dependents' destroy and re-apply are timed apart
        (``dependents_seconds``).
        """
        dependents = self.dependents(name)
        deps_s = self.destroy(list(reversed(dependents))) if dependents else 0.0
        destroy_s = self.destroy([name])
        apply_s = self.recreate([name])
        deps_s += self.recreate(dependents) if dependents else 0.0
        rec = self.run.groups[name]
        return {
            "group": name,
            "groups": [name] + dependents,
            "destroy_seconds": round(destroy_s, 2),
            "apply_seconds": round(apply_s, 2),
            "total_seconds": round(destroy_s + apply_s, 2),
            "dependents": dependents,
            "dependents_seconds": round(deps_s, 2),
            "resource_seconds": dict(rec.resource_seconds),
            "destroy_resource_seconds": dict(rec.destroy_resource_seconds),
        }

    def teardown(self, keep: bool = False) -> list[str]:
        """Destroy what this session applied (unless kept); stop the sandbox. Returns problems."""
        problems: list[str] = []
        try:
            if self._run is not None and self.applied_here:
                if keep:
                    self._run.keep = True
                    self._run.save()
                else:
                    problems = self.deployer.teardown(list(reversed(self.applied_here)))
        finally:
            from immutable_infra.deployed import DeployedRun

            if isinstance(self._run, DeployedRun):
                self._run.forget()  # the private copies: nothing of an audit stays outside reports/
            if self._sandbox is not None:
                self._sandbox.stop()
        return problems


__all__ = ["AppliedGroup", "Harness", "RunError", "SandboxError"]
