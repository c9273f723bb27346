"""The infrastructure of one session: sandbox, catalog, run and deployer, created on first use.

Shared by the pytest plugin and the ``immutable-infra`` command, so both
apply, reuse and destroy runs the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from immutable_infra.catalog import Catalog, Group
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

    def client(self, service: str) -> Any:
        """A boto3 client for the group's region, bound to the run's endpoint."""
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
            if s.run_id and Run.exists(s.home, s.run_id):
                run = Run.load(s.home, s.run_id)
                if run.endpoint != self.sandbox.endpoint:
                    where = run.endpoint or "real AWS"
                    raise RunError(
                        f"run {run.id} was deployed to {where}; pass "
                        + (f"--aws-endpoint {run.endpoint}" if run.endpoint else "--real-aws")
                        + " to use it"
                    )
                self._run = run
            else:
                self._run = Run.create(s.home, s.run_id, s.groups_dir, self.sandbox.endpoint)
        return self._run

    @cached_property
    def deployer(self) -> Deployer:
        return Deployer(self.run, self.catalog, self.sandbox, self.driver, self.settings.parallelism, self.say)

    def up(self, names: list[str]) -> list[Group]:
        """Apply the named groups and what they depend on; reuse what the run already has."""
        groups = self.catalog.closure(names)
        todo = []
        for g in groups:
            rec = self.run.groups.get(g.name)
            if rec is not None and rec.status == "applied":
                if g.name not in self.applied_here and g.name not in self.reused:
                    self.reused.append(g.name)
                    self.say(f"[{g.name}] reusing run {self.run.id} ({len(rec.resources)} resources)")
            else:
                todo.append(g)
        self.applied_here += [g.name for g in todo]
        if todo:
            self.deployer.up(todo)
        return groups

    def applied(self, name: str) -> AppliedGroup:
        self.up([name])
        return AppliedGroup(self.catalog.get(name), self.run, self.sandbox, self.deployer.terraform(name))

    def teardown(self, keep: bool = False) -> list[str]:
        """Destroy what this session applied (unless kept); stop the sandbox. Returns problems."""
        problems: list[str] = []
        try:
            if self._run is not None and self.applied_here:
                if keep:
                    self._run.keep = True
                    self._run.save()
                else:
                    problems = self.deployer.down(list(reversed(self.applied_here)))
        finally:
            if self._sandbox is not None:
                self._sandbox.stop()
        return problems


__all__ = ["AppliedGroup", "Harness", "RunError", "SandboxError"]
