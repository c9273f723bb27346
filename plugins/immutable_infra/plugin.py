"""The pytest plugin: options, hooks and fixtures that wire the harness, the checks and the reporter.

Loaded through the ``pytest11`` entry point. Everything heavy (the moto
server, Terraform) starts only when a test asks for an applied group.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator

import pytest

from immutable_infra import settings as settings_mod
from immutable_infra.catalog import CatalogError
from immutable_infra.engine import TerraformError
from immutable_infra.ephemeral import RunError
from immutable_infra.harness import AppliedGroup, Harness
from immutable_infra.report import Reporter
from immutable_infra.sandbox import SandboxError, check_endpoint

SETTINGS = pytest.StashKey[settings_mod.Settings]()
HARNESS = pytest.StashKey[Harness]()
REPORTER = pytest.StashKey[Reporter]()
TEARDOWN = pytest.StashKey[list]()

from immutable_infra.gitref import GitRefError
from immutable_infra.images import ImageManifestError, ImageRegistrationError

from immutable_infra.chaos import FaultRefused
from immutable_infra.roles import RolesError

#: A broken tool, not a finding: these make a test error with one clear message.
TOOL_ERRORS = (CatalogError, RunError, SandboxError, TerraformError, FileNotFoundError, GitRefError,
               ImageManifestError, ImageRegistrationError, FaultRefused, RolesError)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("immutable-infra", "infrastructure groups (immutable-infra)")
    for name, (help_text, ini_type, default) in settings_mod.OPTIONS.items():
        flag = "--" + name.replace("_", "-")
        env = settings_mod.env_name(name)
        if ini_type == "bool":
            group.addoption(flag, action="store_true", default=None, dest=name, help=f"{help_text} [env {env}]")
        elif name == "group":
            group.addoption(flag, action="append", default=[], dest=name, metavar="NAME", help=f"{help_text} [env {env}]")
        else:
            group.addoption(flag, action="store", default=None, dest=name, metavar=name.split("_")[-1].upper(),
                            help=f"{help_text} [env {env}]")
        parser.addini(settings_mod.ini_name(name), help_text, type=ini_type if ini_type != "bool" else "bool",
                      default=default if ini_type != "string" else None)
    parser.addini("immutable_infra_home", "where runs and their states live (default: .immutable-infra)", default=None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "infra_destructive: the test destroys or changes infrastructure (skipped in audits)")
    config.addinivalue_line("markers", "infra_audit_only: the test runs only with --audit")
    try:
        s = settings_mod.from_pytest_config(config)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    problems = settings_mod.usage_problems(s)
    if problems:
        raise pytest.UsageError("\n".join(problems))
    config.stash[SETTINGS] = s
    config.stash[TEARDOWN] = []
    if s.groups:
        try:
            harness = Harness(s, say=_sayer(config))
            harness.catalog.closure(s.groups)  # unknown group, cycle, malformed config: fail now
            if s.aws_endpoint:
                check_endpoint(s.aws_endpoint)
        except (CatalogError, SandboxError) as exc:
            raise pytest.UsageError(str(exc)) from None
        config.stash[HARNESS] = harness
    if not hasattr(config, "workerinput"):
        config.stash[REPORTER] = Reporter(s.reports_dir)


def _sayer(config: pytest.Config):
    lock = threading.Lock()

    def say(line: str) -> None:
        tr = config.pluginmanager.get_plugin("terminalreporter")
        capman = config.pluginmanager.get_plugin("capturemanager")
        with lock:
            if tr is None:
                print(line, flush=True)
                return
            if capman is not None:
                with capman.global_and_fixture_disabled():
                    tr.ensure_newline()
                    tr.write_line(line, cyan=True)
            else:
                tr.ensure_newline()
                tr.write_line(line, cyan=True)

    return say


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "group_name" not in metafunc.fixturenames:
        return
    s = metafunc.config.stash[SETTINGS]
    if not s.groups:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid} tests a group: name it, e.g. pytest suites/ --group prd-sg-slave"
        )
    metafunc.parametrize("group_name", s.groups, scope="session")


#: Suites run in this order: read-only checks first, then what changes the group (chaos, rebuild, drill).
SUITE_ORDER = ("test_lifecycle", "test_mutation", "test_drift", "test_roles", "test_peering", "test_image_parity",
               "test_chaos", "test_rebuild", "test_disaster")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> float:
        if "group_name" not in getattr(item, "fixturenames", ()):
            return -1  # not a suite test: left where it was
        module = item.module.__name__.rsplit(".", 1)[-1] if getattr(item, "module", None) else ""
        if module in SUITE_ORDER:
            return SUITE_ORDER.index(module)
        return len(SUITE_ORDER) if item.get_closest_marker("infra_destructive") else 5.5

    items.sort(key=rank)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    report = yield
    reporter = item.config.stash.get(REPORTER, None)
    group = getattr(item, "callspec", None) and item.callspec.params.get("group_name")
    if reporter is not None and group:
        if report.when == "call" or (report.when == "setup" and not report.passed):
            outcome = report.outcome if report.when == "call" else ("skipped" if report.skipped else "error")
            reporter.outcome(group, outcome)
    return report


@pytest.fixture(scope="session")
def infra(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """The session's harness: sandbox, run, deployer. Tears down what the session applied."""
    config = request.config
    harness = config.stash.get(HARNESS, None)
    if harness is None:
        pytest.fail("no group selected: pass --group NAME", pytrace=False)
    try:
        yield harness
    finally:
        keep = config.stash[SETTINGS].keep
        config.stash[TEARDOWN].extend(harness.teardown(keep=keep))


@pytest.fixture(scope="session")
def applied_group(infra: Harness, group_name: str) -> AppliedGroup:
    """The group applied in the ephemeral run (with the groups it depends on)."""
    __tracebackhide__ = True
    try:
        return infra.applied(group_name)
    except TOOL_ERRORS as exc:
        where = infra.settings.groups_dir / group_name
        pytest.fail(f"cannot apply group {group_name} ({where}): {exc}", pytrace=False)


@dataclass
class RebuiltGroup:
    """A group before and after one destroy-and-recreate."""

    name: str
    budget: float | None
    timing: dict[str, Any]
    before_state: dict[str, Any]
    after_state: dict[str, Any]
    before_outputs: dict[str, Any]
    after_outputs: dict[str, Any]
    before_verdicts: list[dict[str, Any]] = field(default_factory=list)
    after_verdicts: list[dict[str, Any]] = field(default_factory=list)


def _verdicts(infra: Harness, name: str) -> list[dict[str, Any]]:
    """Flow verdicts of the group's declared flows whose ends are applied."""
    from immutable_infra import verify

    matrix = verify.reachability(infra, name).tables["matrix"]
    return [{"flow": row["flow"], "verdict": row["verdict"]} for row in matrix]


@pytest.fixture(scope="session")
def rebuilt_group(applied_group: AppliedGroup, infra: Harness, infra_report: Reporter) -> RebuiltGroup:
    """Destroy the applied group (and the applied groups that depend on it) and recreate it, timed."""
    __tracebackhide__ = True
    name = applied_group.name
    before = (applied_group.state(fresh=True), dict(applied_group.outputs), _verdicts(infra, name))
    try:
        timing = infra.rebuild(name)
    except TOOL_ERRORS as exc:
        pytest.fail(f"cannot rebuild group {name}: {exc}", pytrace=False)
    after = (applied_group.state(fresh=True), dict(applied_group.outputs), _verdicts(infra, name))
    budget = applied_group.config.rebuild_budget_seconds
    infra_report.fact(name, "rebuild", **{k: v for k, v in timing.items() if k not in ("destroy_resource_seconds", "group")},
                      budget_seconds=budget)
    return RebuiltGroup(name, budget, timing, before[0], after[0], before[1], after[1], before[2], after[2])


@pytest.fixture(scope="session")
def infra_report(request: pytest.FixtureRequest) -> Reporter:
    """Where suites record findings and tables for reports/."""
    reporter = request.config.stash.get(REPORTER, None)
    return reporter if reporter is not None else Reporter(request.config.stash[SETTINGS].reports_dir)


@pytest.fixture
def ec2(applied_group: AppliedGroup) -> Any:
    """A boto3 EC2 client for the group's region and endpoint."""
    return applied_group.client("ec2")


@pytest.fixture(scope="session")
def image_catalog(infra: Harness) -> Any:
    """Packer manifests and package manifests (fixtures/images beside the groups folder)."""
    from immutable_infra.images import ImageManifestError, load_allow_list, load_catalog

    __tracebackhide__ = True
    try:
        catalog = load_catalog(infra.images_dir)
        allow_path = infra.images_dir / "parity.toml"
        return catalog, (load_allow_list(allow_path) if allow_path.exists() else None)
    except ImageManifestError as exc:
        pytest.fail(str(exc), pytrace=False)


def pytest_runtest_setup(item: pytest.Item) -> None:
    s = item.config.stash.get(SETTINGS, None)
    if s is not None and s.audit and item.get_closest_marker("infra_destructive"):
        pytest.skip("--audit is read-only: this test changes infrastructure")
    if s is not None and not s.audit and item.get_closest_marker("infra_audit_only"):
        pytest.skip("runs only with --audit")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    reporter = config.stash.get(REPORTER, None)
    harness = config.stash.get(HARNESS, None)
    if reporter is None or harness is None or harness._run is None:
        return
    s = config.stash[SETTINGS]
    kind = "embedded" if s.embedded else "aws" if s.real_aws else s.aws_endpoint
    summary = reporter.summary(harness._run, int(exitstatus), config.stash[TEARDOWN], endpoint=kind)
    budgets = {}
    for name in summary["groups"]:
        try:
            budgets[name] = harness.catalog.get(name).rebuild_budget_seconds
        except CatalogError:
            budgets[name] = None
    reporter.write(summary, audit_trail=not s.audit, commit_of=s.groups_dir, budgets=budgets)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    harness = config.stash.get(HARNESS, None)
    reporter = config.stash.get(REPORTER, None)
    if harness is None or harness._run is None:
        return
    tr = terminalreporter
    run = harness._run
    tr.section("immutable-infra")
    tr.write_line(f"run {run.id}  endpoint {run.endpoint or 'real AWS'}")
    tr.write_line(f"{'group':<16} {'status':<12} {'resources':>9} {'apply s':>8} {'destroy s':>9} {'rebuild s':>9}  findings")
    for name in run.order:
        rec = run.groups[name]
        nfind, rebuild = 0, None
        if reporter is not None:
            nfind = sum(len(c.findings) for c in reporter.checks.get(name, {}).values())
            facts = reporter.checks.get(name, {}).get("rebuild")
            rebuild = facts.facts.get("total_seconds") if facts else None
        t = rec.timings
        tr.write_line(
            f"{name:<16} {rec.status:<12} {len(rec.resources):>9} {_s(t.get('apply')):>8} {_s(t.get('destroy')):>9}"
            f" {_s(rebuild):>9}  {nfind}"
        )
    for problem in config.stash[TEARDOWN]:
        tr.write_line(problem, red=True)
    if run.keep:
        endpoint = f" --aws-endpoint {run.endpoint}" if run.endpoint else ""
        tr.write_line(f"run {run.id} is kept; destroy it with: immutable-infra down --run-id {run.id}{endpoint}", yellow=True)
    if reporter is not None and reporter.written:
        tr.write_line("reports: " + ", ".join(os.path.relpath(p) for p in reporter.written))


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"
