"""The host suite wired into the plugin (``infra_hosts``, ``suites/test_hosts.py``) and the four host faults.

- A session (subprocess, embedded sandbox) applies ``chaos-lab`` (two running
  ``microservice`` instances, tests/groups) and ``tiny`` (no instance) with a
  roles catalog whose ``microservice`` has the seed's host contract and the
  seed's playbook: chaos-lab's hosts are built, configured and pass; tiny is
  skipped with the reason; nothing of the hosts is left after the session.
- ``--no-hosts`` and a missing runtime skip the suite with the reason, shown in
  the summary, without building anything.
- SIGTERM while a group's hosts run: the session stops them before it destroys
  the run, and leaves nothing.
- The same session runs the host faults (``immutable_infra.host_faults``) on
  chaos-lab's two hosts (python3 pinned "baked" by the seed's contract: the
  image's version, so an upgrade in place breaks it): each of the four named
  with its instance id, no false alarm from the host check or the AWS-side
  checks, both hosts replaced from the image and green, the matrix written.
- Every seed role (fixtures/roles.toml) on its own host, configured by its seed
  playbook offline: no finding.

The four faults on one host of the seed's ``reverse-proxy`` role are in
``tests/test_host_faults.py``.

Needs root, systemd-nspawn, debootstrap (``tools/install-host-runtime``) for
the host parts; they skip with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from immutable_infra import group_hosts
from immutable_infra.checks.hosts import find_host_findings
from immutable_infra.embedded_hosts import build_rootfs, leftovers, runtime_available
from immutable_infra.hosts import read_host_facts
from immutable_infra.roles import load_roles
from immutable_infra.settings import Settings

TESTS = Path(__file__).parent
ROOT = TESTS.parent
SEED_ROLES = load_roles(ROOT / "fixtures" / "roles.toml")

#: The seed's microservice contract, given to the test catalog's microservice role (chaos-lab's instances).
MICROSERVICE_HOST = (ROOT / "fixtures" / "roles.toml").read_text().split("[roles.microservice.host]", 1)[1]
MICROSERVICE_HOST = "[roles.microservice.host]" + MICROSERVICE_HOST.split("\n[roles.marathon-node.host]", 1)[0]

#: Replaces runtime_available in a session: as on a machine without systemd-nspawn.
NO_RUNTIME_CONFTEST = '''
import immutable_infra.embedded_hosts as embedded_hosts

embedded_hosts.runtime_available = lambda: "embedded hosts need systemd-nspawn: run tools/install-host-runtime"
'''


def needs_runtime() -> None:
    reason = runtime_available()
    if reason:
        pytest.skip(reason)


# -- skip reasons, over plain data --------------------------------------------------------------


def test_no_hosts_outside_the_embedded_sandbox_says_why():
    # without a user and a key to reach them with (tests/test_transports.py: with them, through the bastion)
    reason = group_hosts.why_not_at_all(Settings(aws_endpoint="http://127.0.0.1:5000"), runtime=lambda: None)
    assert reason and "reached over ssh through the group's bastion" in reason and "http://127.0.0.1:5000" in reason
    reason = group_hosts.why_not_at_all(Settings(real_aws=True), runtime=lambda: None)
    assert reason and "real AWS" in reason and "--host-user and --host-key are not set" in reason


def test_no_hosts_and_a_missing_runtime_say_why_before_anything_is_built():
    assert group_hosts.why_not_at_all(Settings(no_hosts=True), runtime=lambda: None) == "hosts: not checked (--no-hosts)"
    reason = group_hosts.why_not_at_all(Settings(), runtime=lambda: "embedded hosts need root")
    assert reason == "hosts: embedded hosts need root"
    assert group_hosts.why_not_at_all(Settings(), runtime=lambda: None) is None


def test_only_running_instances_of_roles_with_a_contract_are_checked():
    def inst(iid, role, state="running"):
        return {"InstanceId": iid, "State": {"Name": state}, "Tags": [{"Key": "Role", "Value": role}]}

    roles = dict(SEED_ROLES)
    instances = [inst("i-1", "reverse-proxy"), inst("i-2", "microservice", "stopped"), inst("i-3", "unknown"),
                 {"InstanceId": "i-4", "State": {"Name": "running"}}]
    assert group_hosts.contracted(instances, roles) == {"i-1": "reverse-proxy"}
    without = {name: role for name, role in roles.items() if name != "reverse-proxy"}
    assert group_hosts.contracted(instances, without) == {}
    reason = group_hosts.no_contract_reason("g", instances, Path("roles.toml"))
    assert "no role of g's running instances (reverse-proxy, unknown) has a [roles.NAME.host] contract" in reason
    assert group_hosts.no_contract_reason("g", [], Path("roles.toml")) == "hosts: g has no running instance"


def test_the_seed_roles_of_prd_sg_slave_have_host_contracts():
    for role in ("reverse-proxy", "microservice", "marathon-node"):
        contract = SEED_ROLES[role].host
        assert contract is not None and contract.services and contract.ports, role
        assert any(f.path == "/etc/immutable-infra/role" and role in f.contains for f in contract.files), role


# -- sessions -----------------------------------------------------------------------------------


def make_project(root: Path, groups: list[str], conftest: str = "") -> Path:
    """A project with the test groups, the test catalog plus the seed's microservice host contract (python3 pinned
    "baked": the image's version, so the host faults can aim an upgrade in place), and the suites."""
    project = root
    for group in groups:
        shutil.copytree(TESTS / "groups" / group, project / "groups" / group)
    roles = (TESTS / "roles.toml").read_text()
    assert 'packages = { python3 = "baked" }' in MICROSERVICE_HOST, "the seed's microservice contract changed"
    (project / "roles.toml").write_text(roles.rstrip("\n") + "\n\n" + MICROSERVICE_HOST.strip() + "\n")
    shutil.copytree(TESTS / "playbooks", project / "playbooks")
    shutil.copy(ROOT / "fixtures" / "playbooks" / "microservice.yml", project / "playbooks" / "microservice.yml")
    shutil.copytree(ROOT / "suites", project / "suites")
    if conftest:
        (project / "conftest.py").write_text(conftest)
    return project


def run_session(project: Path, groups: list[str], files: list[str], *extra: str):
    """pytest in a subprocess on the project; (process, {test id: (outcome, message)}, seconds)."""
    env = {**os.environ, "IMMUTABLE_INFRA_HOME": str(project / "home")}
    junit = project / "junit.xml"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "--groups-dir", "groups",
         *[a for g in groups for a in ("--group", g)], "--reports-dir", str(project / "reports"),
         f"--junitxml={junit}", *extra, *files],
        cwd=project, env=env, capture_output=True, text=True, timeout=900,
    )
    seconds = time.monotonic() - started
    outcomes = {}
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            name = f"{(case.get('classname') or '').rsplit('.', 1)[-1]}::{case.get('name')}"
            kind, message = "passed", ""
            for child in case:
                if child.tag in ("skipped", "failure", "error"):
                    kind, message = child.tag, child.get("message") or (child.text or "").strip()
            outcomes[name] = (kind, message)
    print(proc.stdout[-4000:], proc.stderr[-2000:])
    return proc, outcomes, seconds


HOST_TEST = "test_hosts::test_hosts_match_their_role_contract"


@pytest.fixture(scope="module")
def hosts_session(tmp_path_factory):
    needs_runtime()
    build_rootfs("debian12-base")  # cached: not part of the session's time
    project = make_project(tmp_path_factory.mktemp("group-hosts"), ["chaos-lab", "tiny"])
    proc, outcomes, seconds = run_session(project, ["chaos-lab", "tiny"], ["suites/test_hosts.py"])
    host_dirs = sorted(p.name for p in (project / "home" / "runs").glob("*/hosts/*/iih-*"))
    return proc, outcomes, seconds, host_dirs, project


def test_the_host_suite_builds_checks_and_stops_the_groups_hosts(hosts_session, record_property):
    proc, outcomes, seconds, host_dirs, project = hosts_session
    record_property("session_seconds", round(seconds, 1))
    assert outcomes.get(f"{HOST_TEST}[chaos-lab]", ("missing",))[0] == "passed", proc.stdout[-3000:]
    # one host per running instance of chaos-lab, and one more for each replaced after its host faults
    assert len(host_dirs) == 4, host_dirs
    assert "chaos-lab checks: chaos pass, hosts pass" in proc.stdout, proc.stdout[-3000:]
    assert leftovers(only=host_dirs) == []
    checks = json.loads((project / "reports" / "summary.json").read_text())["groups"]["chaos-lab"]["checks"]
    hosts = checks["hosts"]
    assert hosts["verdict"] == "pass" and hosts["findings"] == []
    assert hosts["facts"]["hosts"] == 2 and len(hosts["facts"]["checked"]) == 2
    assert set(hosts["facts"]["playbook_seconds"]) == {"microservice"}


def test_the_host_faults_are_each_named_and_the_hosts_replaced(hosts_session, record_property):
    proc, outcomes, _, _, project = hosts_session
    for fault in ("host_package_changed", "host_service_stopped", "host_config_edited", "host_port_opened"):
        test = f"test_hosts::test_host_fault_is_named_with_the_instance_id[chaos-lab-{fault}]"
        assert outcomes.get(test, ("missing",))[0] == "passed", (test, outcomes.get(test))
    for test in ("test_host_faults_raise_no_false_alarm", "test_hosts_green_after_replacement"):
        assert outcomes[f"test_hosts::{test}[chaos-lab]"][0] == "passed", outcomes[f"test_hosts::{test}[chaos-lab]"]
    chaos = json.loads((project / "reports" / "summary.json").read_text())["groups"]["chaos-lab"]["checks"]["chaos"]
    facts = chaos["facts"]
    record_property("host_faults_seconds", facts["host_faults_seconds"])
    assert chaos["verdict"] == "pass" and chaos["findings"] == []
    # two hosts, four faults: spread over both, two on each, none colliding
    instances = sorted({f.split("instance_id='", 1)[1].split("'", 1)[0] for f in facts["host_faults"]})
    assert len(facts["host_faults"]) == 4 and len(instances) == 2 and facts["host_faults_not_aimed"] == {}
    assert facts["hosts_replaced"] == instances and facts["host_detection_ratio"] == 1.0
    assert facts["host_missed"] == [] and facts["host_false_alarms"] == [] and facts["host_errors"] == {}
    assert facts["host_aws_checks_watching"], "no AWS-side check watched"
    matrix = json.loads((project / "reports" / "chaos" / "chaos-lab" / "hosts" / "chaos-matrix.json").read_text())
    assert matrix["checks"][0] == "hosts" and len(matrix["rows"]) == 4
    for row in matrix["rows"]:
        assert row["cells"]["hosts"] == "detected" and row["detected"] == ["hosts"], row
        assert {row["cells"][c] for c in matrix["checks"][1:]} == {"not-expected"}, row
    assert (project / "reports" / "chaos" / "chaos-lab" / "hosts" / "chaos-matrix.md").is_file()


def test_a_group_without_contracted_instances_is_skipped_with_the_reason(hosts_session):
    proc, outcomes, _, _, _ = hosts_session
    kind, message = outcomes[f"{HOST_TEST}[tiny]"]
    assert kind == "skipped" and "hosts: tiny has no running instance" in message, (kind, message)
    assert "not checked: test_hosts_match_their_role_contract[tiny]: hosts: tiny has no running instance" in proc.stdout


@pytest.mark.parametrize("how, reason", [
    ("--no-hosts", "hosts: not checked (--no-hosts)"),
    ("no runtime", "hosts: embedded hosts need systemd-nspawn: run tools/install-host-runtime"),
])
def test_hosts_off_or_no_runtime_skips_with_the_reason_in_the_summary(tmp_path, how, reason):
    conftest = NO_RUNTIME_CONFTEST if how == "no runtime" else ""
    project = make_project(tmp_path, ["chaos-lab"], conftest)
    extra = ["--no-hosts"] if how == "--no-hosts" else []
    # lifecycle applies the group (so the summary has it); the host suite must not build a host
    proc, outcomes, _ = run_session(project, ["chaos-lab"],
                                       ["suites/test_hosts.py", "suites/test_lifecycle.py::test_group_applied"],
                                       *extra)
    kind, message = outcomes[f"{HOST_TEST}[chaos-lab]"]
    assert kind == "skipped" and message.endswith(reason), (kind, message)
    assert f"not checked: test_hosts_match_their_role_contract[chaos-lab]: {reason}" in proc.stdout
    assert not list((project / "home" / "runs").glob("*/hosts")), "a host was built"


#: A user's test that asks for the group's hosts, then gets SIGTERM (a Jenkins abort) while they run.
SIGTERM_TEST = '''
import os
import signal


def test_aborted_while_hosts_run(infra_hosts):
    assert len(infra_hosts.hosts.hosts) == 2
    os.kill(os.getpid(), signal.SIGTERM)
'''


def test_sigterm_while_hosts_run_stops_them_before_the_run_is_destroyed(tmp_path):
    needs_runtime()
    build_rootfs("debian12-base")
    project = make_project(tmp_path, ["chaos-lab"])
    (project / "test_abort.py").write_text(SIGTERM_TEST)
    proc, outcomes, _ = run_session(project, ["chaos-lab"], ["test_abort.py"])
    host_dirs = sorted(p.name for p in (project / "home" / "runs").glob("*/hosts/*/iih-*"))
    assert proc.returncode == 2, proc.stdout[-3000:]  # interrupted
    assert "SIGTERM: stopping Terraform gracefully" in proc.stdout + proc.stderr
    assert len(host_dirs) == 2, host_dirs
    assert leftovers(only=host_dirs) == []
    out = proc.stdout
    assert "[chaos-lab] destroyed" in out, out[-3000:]
    assert "chaos-lab: its 2 embedded host(s) stopped" in out, out[-3000:]
    assert out.index("chaos-lab: its 2 embedded host(s) stopped") < out.index("[chaos-lab] destroying")


def test_every_seed_role_playbook_satisfies_its_host_contract(tmp_path, record_property):
    """One embedded host per seed role, configured by the seed playbook offline: no finding (the seed stays honest)."""
    from immutable_infra.embedded_hosts import embedded_hosts_for_group

    from immutable_infra.embedded_hosts import image_packages

    needs_runtime()
    baked = image_packages(build_rootfs("debian12-base"))  # the seed pins its packages "baked"
    described = [{"InstanceId": f"i-seed{k:02d}", "PrivateIpAddress": f"10.99.0.{k + 10}", "State": {"Name": "running"},
                  "Tags": [{"Key": "Role", "Value": name}]} for k, name in enumerate(sorted(SEED_ROLES))]
    started = time.monotonic()
    found = {}
    with embedded_hosts_for_group(described, SEED_ROLES, ROOT / "fixtures" / "playbooks", tmp_path) as hosts:
        names = [h.netns for h in hosts.hosts.values()]
        assert sorted(hosts.roles.values()) == sorted(SEED_ROLES) and not hosts.unconfigured
        for instance_id, handle in hosts.hosts.items():
            role = SEED_ROLES[hosts.roles[instance_id]]
            facts = read_host_facts(handle.url, role.host)
            found[role.name] = [f.found for f in find_host_findings("seed", instance_id, role.name, role.host, facts,
                                                                    baked=baked)]
    record_property("seconds", round(time.monotonic() - started, 1))
    assert found == {name: [] for name in SEED_ROLES}, found
    assert leftovers(only=names) == []
