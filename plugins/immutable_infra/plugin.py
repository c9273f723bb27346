"""The pytest plugin: options, hooks and fixtures that wire the harness, the checks and the reporter.

Loaded through the ``pytest11`` entry point. Everything heavy (the moto
server, Terraform) starts only when a test asks for an applied group.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator

import pytest

from immutable_infra import distributed
from immutable_infra import settings as settings_mod
from immutable_infra.catalog import CatalogError
from immutable_infra.engine import signals
from immutable_infra.progress import console_line
from immutable_infra.errors import ToolError
from immutable_infra.harness import AppliedGroup, Harness
from immutable_infra.report import Reporter
from immutable_infra.sandbox import EndpointGone, check_endpoint

SETTINGS = pytest.StashKey[settings_mod.Settings]()
HARNESS = pytest.StashKey[Harness]()
REPORTER = pytest.StashKey[Reporter]()
TEARDOWN = pytest.StashKey[list]()
#: The embedded hosts running for the session's groups: stopped when their group's fixture ends, else before destroy.
HOSTS = pytest.StashKey[list]()

#: A broken tool, not a finding: these make a test error with one clear message (kept as a name for suites).
TOOL_ERRORS = (ToolError,)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("immutable-infra", "infrastructure groups (immutable-infra)")
    for name, (help_text, ini_type, default) in settings_mod.OPTIONS.items():
        flag = "--" + name.replace("_", "-")
        env = settings_mod.env_name(name)
        if ini_type == "bool":
            group.addoption(flag, action="store_true", default=None, dest=name, help=f"{help_text} [env {env}]")
        elif name in ("group", "backend_config"):
            group.addoption(flag, action="append", default=[], dest=name,
                            metavar="NAME" if name == "group" else "KEY=VALUE|FILE", help=f"{help_text} [env {env}]")
        else:
            metavar = {"dev_box": "URL", "bastion": "USER@HOST[:PORT]", "host_key": "FILE", "bastion_role": "ROLE"}.get(
                name, name.split("_")[-1].upper())
            group.addoption(flag, action="store", default=None, dest=name, metavar=metavar,
                            help=f"{help_text} [env {env}]")
        parser.addini(settings_mod.ini_name(name), help_text, type=ini_type if ini_type != "bool" else "bool",
                      default=default if ini_type != "string" else None)
    parser.addini("immutable_infra_home", "where runs and their states live (default: .immutable-infra)", default=None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "infra_destructive: the test destroys or changes infrastructure (skipped in audits)")
    config.addinivalue_line("markers", "infra_audit_only: the test runs only with --audit")
    config.addinivalue_line("markers", "infra_check(name, ...): the checks whose verdict this test gives in reports/")
    try:
        s = settings_mod.from_pytest_config(config)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    problems = settings_mod.usage_problems(s) + settings_mod.path_problems(s)
    if problems:
        raise pytest.UsageError("\n".join(problems))
    given = distributed.worker_input(config)
    if given is not None:  # an xdist worker: the controller's run, on the controller's endpoint
        s = distributed.worker_settings(s, given)
        config.option.loadgroup = True  # the worker parsed the user's args: keep each group's tests together
    elif s.groups and distributed.is_controller(config):
        if s.deployed_audit:  # its run lives in memory (never saved), so workers could not share it
            raise pytest.UsageError("-n/--numprocesses: an audit of the groups as deployed (--audit without --run-id) "
                                    "runs in one process; drop -n (the audit is read-only and quick)")
        problem = distributed.choose_dist(config)
        if problem:
            raise pytest.UsageError(problem)
    config.stash[SETTINGS] = s
    config.stash[TEARDOWN] = []
    config.stash[HOSTS] = []
    if s.groups:
        try:
            harness = Harness(s, say=_sayer(config))
            harness.catalog.validate()  # every group of the folder, roles.toml, parity.toml: before any apply
            harness.catalog.closure(s.groups)  # unknown group, cycle: fail now
            if s.aws_endpoint:
                check_endpoint(s.aws_endpoint)
        except ToolError as exc:
            raise pytest.UsageError(str(exc)) from None
        if given is not None:
            harness.never_apply = given.get("error") or "an xdist worker never applies (the controller does)"
        config.stash[HARNESS] = harness
        signals.install(harness.say)  # SIGTERM and SIGHUP end the session like Ctrl-C: stop, destroy, report
    config.stash[REPORTER] = Reporter(s.reports_dir)  # a worker's is merged by the controller


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under xdist, the controller applies every requested group (and its closure) once, before workers start."""
    config = session.config
    harness = config.stash.get(HARNESS, None)
    if harness is None or not distributed.is_controller(config):
        return
    s = config.stash[SETTINGS]
    try:
        if s.reap_expired and not s.embedded:
            _reap_expired(harness)
        distributed.share_run(harness.run)
        harness.up(s.groups)
    except ToolError as exc:
        config.stash[APPLY_ERROR] = f"cannot apply {', '.join(s.groups)} ({s.groups_dir}): {exc}"
        harness.say(config.stash[APPLY_ERROR])


APPLY_ERROR = pytest.StashKey[str]()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist: tell each worker the run to reuse, its endpoint and runs folder (or why there is none)."""
    config = node.config
    harness = config.stash.get(HARNESS, None)
    if harness is None:
        return
    run = harness._run
    node.workerinput[distributed.KEY] = {
        "run_id": run.id if run is not None else None,
        "endpoint": harness._sandbox.endpoint if harness._sandbox is not None else None,
        "home": str(config.stash[SETTINGS].home),
        "error": config.stash.get(APPLY_ERROR, None),
    }


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist: each group's tests on one worker (see distributed.make_scheduler)."""
    if config.stash.get(HARNESS, None) is None or config.option.dist != "loadgroup":
        return None
    return distributed.make_scheduler(config, log, config.stash[SETTINGS].groups)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist: merge what the worker's reporter collected into the controller's."""
    config = node.config
    reporter = config.stash.get(REPORTER, None)
    if reporter is None or config.stash.get(HARNESS, None) is None:
        return
    data = getattr(node, "workeroutput", {}).get(distributed.KEY)
    name = getattr(node, "gateway", None) and node.gateway.id
    if data is None:
        config.stash[TEARDOWN].append(f"xdist worker {name} ended without its results ({error or 'no data'}); "
                                      "its tests are missing from the reports")
        return
    config.stash[TEARDOWN].extend(distributed.merge_reporter(reporter, data))


def pytest_unconfigure(config: pytest.Config) -> None:
    _stop_hosts(config)  # a session that never reached its teardown (an internal error) leaves no host running
    if config.stash.get(HARNESS, None) is not None:
        signals.uninstall()


def _sayer(config: pytest.Config):
    """Progress lines on the terminal; a terminal that went away (a closed pipe) never stops the session's work."""
    lock = threading.Lock()

    def write(line: str) -> None:
        tr = config.pluginmanager.get_plugin("terminalreporter")
        capman = config.pluginmanager.get_plugin("capturemanager")
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

    def say(line: str) -> None:
        with lock:
            console_line(write, line)

    return say


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "group_name" not in metafunc.fixturenames:
        return
    s = metafunc.config.stash[SETTINGS]
    if not s.groups:  # a usage error once collection is done (raised here it would be a collection traceback)
        metafunc.config.stash.setdefault(NO_GROUP, []).append(metafunc.definition.nodeid)
        return
    metafunc.parametrize("group_name", s.groups, scope="session")


NO_GROUP = pytest.StashKey[list]()


def pytest_collection_finish(session: pytest.Session) -> None:
    tests = session.config.stash.get(NO_GROUP, [])
    if tests:
        raise pytest.UsageError(
            f"{tests[0]} tests a group: name it, e.g. pytest suites/ --group prd-sg-slave "
            "(or IMMUTABLE_INFRA_GROUP, or the ini key immutable_infra_group)"
        )


#: Suites run in this order: read-only checks first, then what changes the group (chaos, rebuild, drill).
SUITE_ORDER = ("test_lifecycle", "test_mutation", "test_drift", "test_roles", "test_hosts", "test_peering", "test_image_parity",
               "test_chaos", "test_rebuild", "test_disaster")


@pytest.hookimpl(tryfirst=True)  # before xdist's worker reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if distributed.is_worker(config):
        for item in items:
            group = _group_of(item)
            if group:
                item.add_marker(pytest.mark.xdist_group(group))

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
    group = _group_of(item)
    if reporter is not None and group:
        if report.when == "call" or not report.passed:
            outcome = report.outcome if report.when == "call" else ("skipped" if report.skipped else "error")
            reporter.outcome(group, outcome, nodeid=_nodeid(item), reason=_reason(report),
                             checks=[str(a) for m in item.iter_markers("infra_check") for a in m.args])
    if reporter is not None and report.when == "teardown":
        reporter.current_test = None
    return report


def _group_of(item: pytest.Item) -> str | None:
    """The group a suite test is parametrized with (None for other tests)."""
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("group_name") if callspec is not None else None


def _nodeid(item: pytest.Item) -> str:
    """The test's node id as a serial session names it (without the ``@group`` suffix xdist's loadgroup adds)."""
    group = _group_of(item)
    if group and item.nodeid.endswith(f"@{group}") and item.get_closest_marker("xdist_group"):
        return item.nodeid[: -len(group) - 1]
    return item.nodeid


def _reason(report: pytest.TestReport) -> str:
    """Why a test was skipped, or the first line of why it failed (for the reports)."""
    if report.passed:
        return ""
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    lines = [line for line in report.longreprtext.splitlines() if line.strip()]
    first = next((line for line in lines if line.startswith("E ")), lines[0] if lines else "")
    return first.removeprefix("E ").strip()[:500]


@pytest.fixture(scope="session")
def infra(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """The session's harness: sandbox, run, deployer. Tears down what the session applied."""
    config = request.config
    harness = config.stash.get(HARNESS, None)
    if harness is None:
        pytest.fail("no group selected: pass --group NAME", pytrace=False)
    if harness.settings.reap_expired and not harness.settings.embedded:
        _reap_expired(harness)
    try:
        yield harness
    finally:
        _teardown(config, harness)


def _teardown(config: pytest.Config, harness: Harness) -> None:
    """Stop the embedded hosts still running; destroy what this process applied (an xdist worker applied nothing),
    unless kept; stop the sandbox."""
    _stop_hosts(config)
    keep = config.stash[SETTINGS].keep
    sandbox = harness._sandbox
    if sandbox is not None and sandbox.gone is not None and harness._run is not None:
        # Nothing can be destroyed through a dead endpoint; say so instead of retrying for minutes.
        run = harness._run
        config.stash[TEARDOWN].append(
            f"run {run.id} was not destroyed: its AWS endpoint {sandbox.endpoint} went away ({sandbox.gone}); "
            + ("the embedded sandbox took its resources with it" if sandbox.server is not None else
               f"restart the endpoint and run: immutable-infra down --run-id {run.id} --aws-endpoint {sandbox.endpoint}"))
        sandbox.stop()
    else:
        config.stash[TEARDOWN].extend(harness.teardown(keep=keep))


def _reap_expired(harness: Harness) -> None:
    """--reap-expired: delete the expired runs on the session's endpoint before applying anything."""
    from immutable_infra.reaper import AWS_RETRY_DELAYS, ENDPOINT_RETRY_DELAYS, reap_runs

    regions = []
    for name in harness.catalog.names():
        with contextlib.suppress(ToolError):
            regions.append(harness.catalog.get(name).region)
    sandbox = harness.sandbox
    delays = ENDPOINT_RETRY_DELAYS if sandbox.endpoint else AWS_RETRY_DELAYS
    chosen, found, outcome = reap_runs(sandbox.client, list(dict.fromkeys(regions)), retry_delays=delays)
    for run_id, why in chosen.items():
        harness.say(f"reaped run {run_id} ({why})")
    for line in outcome.problems() + [f"could not list {e}" for e in found.errors]:
        harness.say(f"reap-expired: {line}")


@pytest.fixture(scope="session")
def applied_group(request: pytest.FixtureRequest, infra: Harness, group_name: str) -> AppliedGroup:
    """The group applied in the ephemeral run (with the groups it depends on)."""
    __tracebackhide__ = True
    given = distributed.worker_input(request.config)
    if given is not None and not given.get("run_id"):  # the controller has no run: never create one here
        pytest.fail(given.get("error") or "the xdist controller created no run", pytrace=False)
    if given is None and len(infra.settings.groups) > 1 and not infra.settings.audit:
        # Every requested group before the first group's tests, as the xdist controller applies them before the
        # workers start: a group's peering, chaos and rebuild then see the same neighbours in either mode (a peer
        # applied only for its own later tests was absent from the first group's). A group that fails to apply
        # here says so on its own tests; the others go on.
        with contextlib.suppress(*TOOL_ERRORS):
            infra.up(list(infra.settings.groups))
    try:
        return distributed.watch(infra.applied(group_name))
    except TOOL_ERRORS as exc:
        where = infra.settings.groups_dir / group_name
        if infra.settings.deployed_audit:
            pytest.fail(f"cannot audit group {group_name} as deployed: {exc}", pytrace=False)
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
    #: drift and unmanaged findings before the rebuild: the original was not clean, so it is not compared
    before_findings: list[Any] = field(default_factory=list)


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
    from immutable_infra import verify

    with cannot_check(infra, f"rebuild of {name}"):
        unclean = verify.unclean(infra, name)  # the "before" must be proven clean (no chaos residue, no drift)
        before = (applied_group.refreshed_state(), dict(applied_group.outputs), _verdicts(infra, name))
    with cannot_check(infra, f"rebuild of {name}"):
        timing = infra.rebuild(name)
    with cannot_check(infra, f"rebuild of {name}"):
        # both sides as a refresh reads them: the dependents re-applied after the group changed its tables again
        after = (applied_group.refreshed_state(), dict(applied_group.outputs), _verdicts(infra, name))
    budget = applied_group.config.rebuild_budget_seconds
    infra_report.fact(name, "rebuild", **{k: v for k, v in timing.items() if k not in ("destroy_resource_seconds", "group")},
                      budget_seconds=budget)
    return RebuiltGroup(name, budget, timing, before[0], after[0], before[1], after[1], before[2], after[2], unclean)


@pytest.fixture(scope="session")
def infra_report(request: pytest.FixtureRequest) -> Reporter:
    """Where suites record findings and tables for reports/."""
    reporter = request.config.stash.get(REPORTER, None)
    return reporter if reporter is not None else Reporter(request.config.stash[SETTINGS].reports_dir)


@pytest.fixture
def ec2(applied_group: AppliedGroup) -> Any:
    """A boto3 EC2 client for the group's region and endpoint (also named ``infra_ec2``)."""
    return applied_group.client("ec2")


# -- the users' API: prefixed fixtures for tests people write against a group (see README) ------------


@pytest.fixture(scope="session")
def infra_group(applied_group: AppliedGroup) -> AppliedGroup:
    """The group under test, applied in the session's run (``--group``); also named ``applied_group``."""
    return applied_group


@pytest.fixture
def infra_clients(applied_group: AppliedGroup) -> Any:
    """``infra_clients("s3")``: a boto3 client for the group's region, bound to the run's endpoint."""
    return applied_group.client


@pytest.fixture
def infra_ec2(applied_group: AppliedGroup) -> Any:
    """A boto3 EC2 client for the group's region and endpoint."""
    return applied_group.client("ec2")


@pytest.fixture
def infra_state(applied_group: AppliedGroup) -> dict[str, Any]:
    """The group's Terraform state as ``terraform show -json`` prints it, read fresh for the test."""
    return applied_group.state(fresh=True)


@pytest.fixture
def infra_outputs(applied_group: AppliedGroup) -> dict[str, Any]:
    """The group's Terraform outputs (name -> value)."""
    return dict(applied_group.outputs)


@pytest.fixture
def infra_verify(infra: Harness, applied_group: AppliedGroup) -> Any:
    """``infra_verify("drift")``: run a named check on the group; returns its ``verify.Result``.

    Skips with the reason when the group lacks what the check needs, and
    fails with one line (an *error* when called from a fixture) when the
    check cannot run: the endpoint is gone, Terraform failed.
    """
    from immutable_infra import verify
    from immutable_infra.reading import Reading

    def run(check: str) -> verify.Result:
        __tracebackhide__ = True
        if check not in verify.CHECKS:
            pytest.fail(f"unknown check {check!r}; checks are {', '.join(verify.CHECKS)}", pytrace=False)
        with cannot_check(infra, f"{check} on {applied_group.name}"):
            claim, reading = None, Reading(infra)  # one pass: what needs reads, the check reuses
            try:
                verify.needs(infra, applied_group.name, check, reading)
            except verify.NotApplicable as exc:
                pytest.skip(str(exc))
            except verify.ClaimNotMet as exc:
                claim = str(exc)
            if claim is not None:
                raise pytest.fail.Exception(claim, pytrace=False) from None
            return verify.CHECKS[check](infra, applied_group.name, reading)

    return run


@contextlib.contextmanager
def cannot_check(infra: Harness, what: str) -> Iterator[None]:
    """Turn a broken tool into a test error without a traceback: ``what: why``.

    An endpoint that went away is one line (and latches: later tests error at
    once); a Terraform error keeps its command, exit code and diagnostics.
    """
    __tracebackhide__ = True
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError, *TOOL_ERRORS) as exc:
        problem = str(exc).strip() or type(exc).__name__  # a TerraformError keeps its command and diagnostics
    else:
        return
    sandbox = infra._sandbox
    if sandbox is not None:
        try:
            sandbox.ensure_reachable()
        except EndpointGone:
            pass
        if sandbox.gone is not None:
            raise pytest.fail.Exception(f"{what}: {sandbox.gone_message()}", pytrace=False) from None
    raise pytest.fail.Exception(f"{what} cannot run: {problem}", pytrace=False) from None


def _stop_hosts(config: pytest.Config) -> None:
    """Stop every embedded host the session still runs (SIGTERM and Ctrl-C get here through the teardown)."""
    running = config.stash.get(HOSTS, [])
    while running:
        hosts = running.pop()
        try:
            hosts.stop()
        except ToolError as exc:
            config.stash[TEARDOWN].append(f"embedded hosts of {hosts.group} were not all stopped: {exc}")


@pytest.fixture(scope="session")
def infra_hosts(request: pytest.FixtureRequest, infra: Harness, group_name: str) -> Iterator[Any]:
    """The group's hosts (``group_hosts.HostsOfGroup``): one per running instance; only the instances whose role has a
    ``[roles.NAME.host]`` contract are checked. In the embedded sandbox each is an embedded host configured by its
    role's playbook; elsewhere each is reached over ssh through the group's bastion (``transports``), its role's
    playbook applied through the Role-tag inventory unless this is an audit. Skips with the reason (``--no-hosts``,
    no runtime, no user/key or bastion off the sandbox, no contract) before building or reaching anything; stopped
    when the group's tests end."""
    __tracebackhide__ = True
    from immutable_infra import group_hosts

    s = infra.settings
    # an xdist worker of an embedded session: its endpoint is the controller's moto, not one the user named; its
    # hosts are embedded hosts on this machine, like the controller's
    embedded = s.embedded or (distributed.worker_input(request.config) is not None and not s.real_aws
                              and "aws_endpoint" not in s.sources)
    reason = group_hosts.why_not_at_all(s, embedded=embedded)
    if reason:
        pytest.skip(reason)
    applied = request.getfixturevalue("applied_group")
    with cannot_check(infra, f"hosts of {group_name}"):
        roles = infra.catalog.roles
        instances, addresses = group_hosts.group_instances(infra, applied.name)
    if not group_hosts.contracted(instances, roles):
        pytest.skip(group_hosts.no_contract_reason(group_name, instances, infra.catalog.roles_file))
    if embedded:
        infra.say(f"{group_name}: starting an embedded host per running instance")
    else:
        with cannot_check(infra, f"hosts of {group_name}"):
            reason = group_hosts.why_not_reached(infra.settings, group_name, instances)
        if reason:
            pytest.skip(reason)
        infra.say(f"{group_name}: reaching its hosts over ssh through the bastion"
                  + ("" if infra.settings.audit else ", applying their roles' playbooks"))
    with cannot_check(infra, f"hosts of {group_name}"):
        if embedded:
            hosts = group_hosts.start_group_hosts(infra, group_name, instances, addresses, roles)
        else:
            hosts = group_hosts.reach_group_hosts(infra, group_name, instances, addresses, roles)
    running = request.config.stash[HOSTS]
    running.append(hosts)
    try:
        yield hosts
    finally:
        if hosts in running:
            running.remove(hosts)
            try:
                hosts.stop()
                if embedded:
                    infra.say(f"{group_name}: its {len(hosts.hosts.hosts)} embedded host(s) stopped")
            except ToolError as exc:
                request.config.stash[TEARDOWN].append(f"embedded hosts of {group_name} were not all stopped: {exc}")


@pytest.fixture(scope="session")
def image_catalog(infra: Harness) -> Any:
    """Packer manifests and package manifests (fixtures/images beside the groups folder)."""
    from immutable_infra.images import ImageManifestError, load_allow_list, load_catalog

    __tracebackhide__ = True
    if not infra.images_dir.is_dir() or not any(infra.images_dir.iterdir()):
        pytest.skip(f"parity: no image manifests in {infra.images_dir} (Packer manifests of the images)")
    try:
        catalog = load_catalog(infra.images_dir)
        allow_path = infra.images_dir / "parity.toml"
        return catalog, (load_allow_list(allow_path) if allow_path.exists() else None)
    except ImageManifestError as exc:
        pytest.fail(str(exc), pytrace=False)


#: JUnit families whose schema has <properties> in a <testcase> (pytest's ``junit_family`` ini key).
JUNIT_FAMILIES_WITH_TESTCASE_PROPERTIES = ("xunit1", "legacy")


def _junit_properties(item: pytest.Item) -> None:
    """Give a suite test its group and checks as JUnit properties, so Jenkins can tell them apart by more than name.

    Only under a family whose schema allows test case properties (the project's pytest.ini sets
    ``junit_family = xunit1``); under xunit2 they would make the XML invalid, so nothing is added.
    """
    group = getattr(item, "callspec", None) and item.callspec.params.get("group_name")
    if not group or item.config.getini("junit_family") not in JUNIT_FAMILIES_WITH_TESTCASE_PROPERTIES:
        return
    if any(name == "group" for name, _ in item.user_properties):
        return
    item.user_properties.append(("group", group))
    checks = [str(a) for m in item.iter_markers("infra_check") for a in m.args]
    if checks:
        item.user_properties.append(("checks", ",".join(dict.fromkeys(checks))))


def pytest_runtest_setup(item: pytest.Item) -> None:
    reporter = item.config.stash.get(REPORTER, None)
    if reporter is not None:
        reporter.current_test = _nodeid(item)  # what the test (and its fixtures) record belongs to it
    _junit_properties(item)
    harness = item.config.stash.get(HARNESS, None)
    sandbox = harness._sandbox if harness is not None else None
    if sandbox is not None and "group_name" in getattr(item, "fixturenames", ()):
        try:
            sandbox.ensure_reachable()  # once the endpoint is gone, every later check errors at once
        except EndpointGone:
            pass
        if sandbox.gone is not None:
            pytest.fail(sandbox.gone_message(), pytrace=False)
    s = item.config.stash.get(SETTINGS, None)
    if s is not None and s.audit and item.get_closest_marker("infra_destructive"):
        pytest.skip("--audit is read-only: this test changes infrastructure")
    if s is not None and not s.audit and item.get_closest_marker("infra_audit_only"):
        pytest.skip("runs only with --audit")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    """xdist worker: hold the group locks for the test's whole protocol (setup builds session fixtures too)."""
    given = distributed.worker_input(item.config)
    harness = item.config.stash.get(HARNESS, None)
    group = _group_of(item)
    if given is None or harness is None or not group or not given.get("run_id"):
        return (yield)
    try:
        run = distributed.share_run(harness.run)
        groups = distributed.related(harness.catalog, group)
    except ToolError:
        return (yield)  # the test's own fixtures say what is wrong
    exclusive = bool(item.get_closest_marker("infra_destructive")) and not harness.settings.audit
    with distributed.group_locks(run.path, groups, exclusive=exclusive):
        distributed.refresh(run)  # what other workers changed while this one waited
        return (yield)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    reporter = config.stash.get(REPORTER, None)
    harness = config.stash.get(HARNESS, None)
    if distributed.is_worker(config):  # the controller writes the reports, from every worker's data
        if reporter is not None and harness is not None:
            config.workeroutput[distributed.KEY] = distributed.reporter_data(reporter, config.stash[TEARDOWN])
        return
    if harness is not None and harness._run is not None and distributed.is_controller(config):
        distributed.refresh(harness._run)  # the workers' changes (rebuilds, repairs) before teardown and reports
        _teardown(config, harness)
    if reporter is None or harness is None or harness._run is None:
        return
    s = config.stash[SETTINGS]
    kind = "embedded" if s.embedded else "aws" if s.real_aws else s.aws_endpoint
    summary = reporter.summary(harness._run, int(exitstatus), config.stash[TEARDOWN], endpoint=kind)
    if harness.notes:
        summary["notes"] = harness.notes
    budgets = {}
    for name in summary["groups"]:
        try:
            budgets[name] = harness.catalog.get(name).rebuild_budget_seconds
        except CatalogError:
            budgets[name] = None
    from immutable_infra.audit_history import target_of

    reporter.write(summary, audit_trail=not s.audit, commit_of=s.groups_dir, budgets=budgets,
                   audit=target_of(s.run_id) if s.audit else None)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    harness = config.stash.get(HARNESS, None)
    reporter = config.stash.get(REPORTER, None)
    if harness is None or harness._run is None:
        return
    tr = terminalreporter
    run = harness._run
    tr.section("immutable-infra")
    tr.write_line(f"run {run.id}  endpoint {run.endpoint or 'real AWS'}"
                  + ("  (the groups as deployed, read from their own backends; nothing written)"
                     if harness.deployed else ""))
    for note in harness.notes:
        tr.write_line(note, yellow=True)
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
    if reporter is not None:
        _write_coverage(tr, reporter, run.order)
        _write_audit_changes(tr, reporter)
    for problem in config.stash[TEARDOWN]:
        tr.write_line(problem, red=True)
    if run.keep:
        endpoint = f" --aws-endpoint {run.endpoint}" if run.endpoint else ""
        tr.write_line(f"run {run.id} is kept; destroy it with: immutable-infra down --run-id {run.id}{endpoint}", yellow=True)
    if reporter is not None and reporter.written:
        tr.write_line("reports: " + ", ".join(os.path.relpath(p) for p in reporter.written))


def _write_coverage(tr: Any, reporter: Reporter, groups: list[str]) -> None:
    """Per group: each check's verdict, then every test that did not look, with its reason."""
    for name in groups:
        verdicts = reporter.verdicts(name)
        if verdicts:
            tr.write_line(f"{name} checks: " + ", ".join(f"{c} {v['verdict']}" for c, v in sorted(verdicts.items())))
        for test in reporter.test_outcomes.get(name, []):
            if test.outcome == "skipped":
                short = test.nodeid.split("::", 1)[-1]
                tr.write_line(f"  not checked: {short}: {test.reason}", yellow=True)


#: At most this many new and fixed finding ids per group in the terminal (summary.md lists them all).
AUDIT_LINES = 20


def _write_audit_changes(tr: Any, reporter: Reporter) -> None:
    """After an audit: per group, first audit, or what is new and what was fixed since the previous one."""
    for changes in reporter.audit_changes.values():
        tr.write_line(changes.sentence(), yellow=bool(changes.new), green=not changes.new and not changes.first)
        rows = [("new", fid) for fid in changes.new] + [("fixed", fid) for fid in changes.fixed]
        for what, fid in rows[:AUDIT_LINES]:
            tr.write_line(f"  {what}: {fid}", red=what == "new")
        if len(rows) > AUDIT_LINES:
            tr.write_line(f"  ... and {len(rows) - AUDIT_LINES} more (summary.md)")


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"
