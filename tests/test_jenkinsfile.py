"""The Jenkinsfile cannot rot: every `sh` step in it is extracted and run, as written, against the sandbox.

Each command runs through bash with the environment the Jenkinsfile gives it (its `environment` literals, then
what its `withEnv` sets, e.g. IMMUTABLE_INFRA_GROUP from `.ci/groups`), except what points it at this test instead
of production: IMMUTABLE_INFRA_AWS_ENDPOINT = the test's own moto server on 127.0.0.1 (and
IMMUTABLE_INFRA_REAL_AWS = false), IMMUTABLE_INFRA_GROUPS_DIR = a git repository holding a copy of the tiny test
group, IMMUTABLE_INFRA_REPORTS_DIR and IMMUTABLE_INFRA_HOME in tmp. A command this file does not know how to run
fails its test, and so does a runner whose command is no longer in the Jenkinsfile.

Cheap forms, said here as the brief asks:
- `.ci/setup` runs with CI_SETUP=check (the Jenkinsfile sets install): it proves the tools on PATH instead of
  creating a venv from the package registries.
- `pytest tests/` runs with PYTEST_ADDOPTS=--collect-only (pytest's own variable): the project's tests are
  collected, not run (about 25 minutes on two cores; they are what this file is part of).
- The merge gate and the weekly job run `pytest suites/` with PYTEST_ADDOPTS=-k selecting the suite the stage is
  about (the gate's test; the rebuild suite), and the audit of a drifted group only the drift test: the same
  command, options and settings, minutes fewer on a busy machine. The whole suites on a small group are run by
  tests/test_rebuild_suite.py, test_merge_gate.py and test_audit.py.
- The nightly audit command runs with IMMUTABLE_INFRA_RUN_ID naming a run brought up here with
  `immutable-infra up`: today `--audit` reads a kept run. Once the audit of deployed groups from their own
  backend is merged (issue 12, item 1), the Jenkinsfile's command (which sets no run id) audits production
  itself; this test should then audit a group applied with plain Terraform into an S3 backend in the sandbox.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import boto3
import pytest

ROOT = Path(__file__).parent.parent
JENKINSFILE = ROOT / "Jenkinsfile"
TEST_GROUPS = Path(__file__).parent / "groups"
GROUP = "tiny"
REGION = "ap-southeast-1"


# -- reading the Jenkinsfile -------------------------------------------------------------------------------------

def _code(text: str) -> str:
    """The Jenkinsfile without its // comments (it has no URLs, so // starts a comment wherever it is)."""
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


SH_STEP = re.compile(r"\bsh\s*(\(|'|\")")
SH_COMMAND = re.compile(r"\bsh\s*(?:\(\s*(?:\w+\s*:\s*[^,'\"()]+,\s*)*script\s*:\s*)?'([^'\\]*)'", re.S)


def sh_commands(text: str) -> list[str]:
    """Every `sh` step's command, in order; a step this reader cannot take literally fails (no interpolation)."""
    code = _code(text)
    steps = [m.start() for m in SH_STEP.finditer(code)]
    commands = {m.start(): m.group(1) for m in SH_COMMAND.finditer(code)}
    unread = [code.count("\n", 0, at) + 1 for at in steps if at not in commands]
    assert not unread, (f"Jenkinsfile lines {unread}: write each sh step as sh '...' or sh(..., script: '...') "
                        "with single quotes, so the test runs exactly what Jenkins runs")
    return [commands[at] for at in steps]


def environment_literals(text: str) -> dict[str, str]:
    """KEY = 'value' lines of the Jenkinsfile's environment blocks (Groovy expressions are left out)."""
    return dict(re.findall(r"^\s*([A-Z][A-Z0-9_]*)\s*=\s*'([^']*)'\s*$", _code(text), re.M))


def test_every_variable_a_command_reads_is_set_by_the_jenkinsfile():
    text = JENKINSFILE.read_text()
    for command in sh_commands(text):
        for name in re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", command):
            assert re.search(rf"\b{name}\s*=|\"{name}=", _code(text)), (
                f"`{command}` reads ${name}, which the Jenkinsfile never sets (environment or withEnv)")


def test_the_reader_refuses_an_interpolated_step():
    with pytest.raises(AssertionError, match=r"lines \[2\]"):
        sh_commands("stage {\n  sh \"pytest ${x}\"\n}")
    assert sh_commands("sh 'a b'\nsh(returnStatus: true,\n   script: 'c \"$D\"')") == ["a b", 'c "$D"']


# -- the sandbox the commands run against ------------------------------------------------------------------------

def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "ci", "GIT_AUTHOR_EMAIL": "ci@example.invalid",
           "GIT_COMMITTER_NAME": "ci", "GIT_COMMITTER_EMAIL": "ci@example.invalid"}
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True, env=env).stdout


class CI:
    """A workspace for the commands: an origin with develop, a clone on a feature branch, the sandbox, folders."""

    def __init__(self, tmp: Path, server) -> None:
        self.tmp, self.server = tmp, server
        origin = tmp / "origin.git"
        seed = tmp / "seed"
        shutil.copytree(TEST_GROUPS / GROUP, seed / "groups" / GROUP)
        shutil.copy(TEST_GROUPS.parent / "roles.toml", seed / "roles.toml")
        git(tmp, "init", "-q", "--bare", str(origin))
        git(seed.parent, "init", "-q", "-b", "develop", str(seed))
        git(seed, "add", "-A")
        git(seed, "commit", "-qm", "develop")
        git(seed, "push", "-q", str(origin), "develop")
        self.clone = tmp / "workspace"
        git(tmp, "clone", "-q", "-b", "develop", str(origin), str(self.clone))
        git(self.clone, "checkout", "-q", "-b", "feature/owner-tag")
        tf = self.clone / "groups" / GROUP / "main.tf"
        text = tf.read_text()
        assert 'tags = { Purpose = "ssh" }' in text
        tf.write_text(text.replace('tags = { Purpose = "ssh" }', 'tags = { Purpose = "ssh", Owner = "ci" }'))
        git(self.clone, "commit", "-qam", "tag the ssh group with its owner (an in-place change a gate allows)")
        git(self.clone, "push", "-q", "origin", "feature/owner-tag")  # origin/feature/owner-tag: a base with no change
        self.reports = tmp / "reports"
        self.env = {
            **os.environ,
            **environment_literals(JENKINSFILE.read_text()),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            # what points the commands at this test instead of production:
            "IMMUTABLE_INFRA_AWS_ENDPOINT": server.url,
            "IMMUTABLE_INFRA_REAL_AWS": "false",
            "IMMUTABLE_INFRA_GROUPS_DIR": str(self.clone / "groups"),
            "IMMUTABLE_INFRA_REPORTS_DIR": str(self.reports),
            "IMMUTABLE_INFRA_HOME": str(tmp / "home"),
            "PYTEST_ADDOPTS": "-p no:cacheprovider",
        }
        for name in ("IMMUTABLE_INFRA_GROUP", "IMMUTABLE_INFRA_RUN_ID", "IMMUTABLE_INFRA_AUDIT"):
            self.env.pop(name, None)

    def sh(self, command: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess:
        result = subprocess.run(["bash", "-c", command], cwd=cwd, env={**self.env, **env}, capture_output=True,
                                text=True, timeout=900)
        print(f"$ {command}  ({', '.join(f'{k}={v}' for k, v in env.items())})\n{result.stdout[-4000:]}"
              f"\n{result.stderr[-3000:]}")
        return result

    def junit(self, name: str, folder: Path | None = None) -> dict[str, ET.Element]:
        root = ET.parse((folder or self.reports) / name).getroot()
        return {case.get("name"): case for case in root.iter("testcase")}

    def ec2(self):
        return boto3.client("ec2", region_name=REGION, endpoint_url=self.server.url,
                            aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture(scope="module")
def ci(tmp_path_factory, moto_server):
    return CI(tmp_path_factory.mktemp("jenkins"), moto_server)


def outcome(case: ET.Element) -> str:
    for tag in ("failure", "error", "skipped"):
        if case.find(tag) is not None:
            return tag
    return "passed"


def props(case: ET.Element) -> dict[str, str]:
    return {p.get("name"): p.get("value") for p in case.iter("property")}


# -- one runner per command of the Jenkinsfile --------------------------------------------------------------------

def run_setup(ci: CI, command: str) -> None:
    result = ci.sh(command, CI_SETUP="check")
    assert result.returncode == 0, result.stderr
    assert "setup: " in result.stdout


def run_fetch_base(ci: CI, command: str) -> None:
    git(ci.clone, "update-ref", "-d", "refs/remotes/origin/develop")  # as a PR checkout that lacks its base
    result = ci.sh(command, cwd=ci.clone, BASE_BRANCH="develop")
    assert result.returncode == 0, result.stderr
    assert git(ci.clone, "rev-parse", "origin/develop").strip() == git(ci.clone, "rev-parse", "develop").strip()


def run_changed_groups(ci: CI, command: str) -> None:
    result = ci.sh(command, BASE_BRANCH="develop")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == GROUP  # the feature branch changed the tiny group
    nothing = ci.sh(command, BASE_BRANCH="feature/owner-tag")  # against itself: no group changed
    assert nothing.returncode == 0 and nothing.stdout.strip() == ""


def run_all_groups(ci: CI, command: str) -> None:
    result = ci.sh(command)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == GROUP


def no_junit_family_warning(result: subprocess.CompletedProcess) -> None:
    assert "incompatible with junit_family" not in result.stdout


def run_merge_gate(ci: CI, command: str) -> None:
    result = ci.sh(command, BASE_BRANCH="develop", IMMUTABLE_INFRA_GROUP=GROUP, IMMUTABLE_INFRA_RUN_ID="jtest-gate",
                   PYTEST_ADDOPTS="-p no:cacheprovider -k merge_gate")  # cheap form: the gate's own test only
    assert result.returncode == 0, result.stdout[-3000:]
    cases = ci.junit("junit-gate.xml")
    gate = cases[f"test_merge_gate_changes_nothing_in_place[{GROUP}]"]
    assert outcome(gate) == "passed", "the gate did not compare with origin/develop"
    assert props(gate) == {"group": GROUP, "checks": "mutation"}
    no_junit_family_warning(result)


def run_project_tests(ci: CI, command: str) -> None:
    result = ci.sh(command, IMMUTABLE_INFRA_REAL_AWS="false", PYTEST_ADDOPTS="-p no:cacheprovider --collect-only -q")
    assert result.returncode == 0, result.stdout[-3000:]
    collected = int(re.search(r"(\d+) tests? collected", result.stdout).group(1))
    assert collected > 500, result.stdout[-2000:]
    assert (ci.reports / "junit-tests.xml").exists()


def run_nightly_audit(ci: CI, command: str) -> None:
    up = subprocess.run([str(Path(sys.executable).parent / "immutable-infra"), "up", GROUP, "--run-id", "jtest-audit"],
                        env=ci.env, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert up.returncode == 0, up.stderr
    try:
        env = {"IMMUTABLE_INFRA_GROUP": GROUP, "IMMUTABLE_INFRA_RUN_ID": "jtest-audit"}
        healthy = ci.sh(command, **env)
        assert healthy.returncode == 0, healthy.stdout[-3000:]
        assert outcome(ci.junit("junit-audit.xml")[f"test_no_drift[{GROUP}]"]) == "passed"
        # Out-of-band change: the audit exits 1 (findings), which the Jenkinsfile turns into UNSTABLE.
        ec2 = ci.ec2()
        [sg] = ec2.describe_security_groups(Filters=[{"Name": "tag:Run", "Values": ["jtest-audit"]},
                                                     {"Name": "group-name", "Values": ["tiny-ssh"]}])["SecurityGroups"]
        ec2.authorize_security_group_ingress(GroupId=sg["GroupId"], IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
        drifted = ci.sh(command, **env, PYTEST_ADDOPTS="-p no:cacheprovider -k test_no_drift")  # cheap form
        assert drifted.returncode == 1, drifted.stdout[-3000:]
        drift = ci.junit("junit-audit.xml")[f"test_no_drift[{GROUP}]"]
        assert outcome(drift) == "failure" and sg["GroupId"] in drift.find("failure").text
    finally:
        down = subprocess.run([str(Path(sys.executable).parent / "immutable-infra"), "down", "--run-id", "jtest-audit"],
                              env=ci.env, capture_output=True, text=True, cwd=ROOT, timeout=600)
        assert down.returncode == 0, down.stderr


def run_weekly_rebuild(ci: CI, command: str) -> None:
    # The regression gate compares with the history in the reports folder (kept in the workspace between builds):
    # give it earlier rebuilds, far slower, so it compares (and passes) whatever the machine's load.
    reports = ci.tmp / "reports-weekly"
    reports.mkdir()
    (reports / "history.jsonl").write_text("".join(json.dumps(
        {"time": f"2026-11-0{d}T02:00:00+00:00", "run_id": f"jold{d}", "commit": None,
         "groups": {GROUP: {"rebuild_seconds": 900.0, "drift_count": 0, "verdicts": {}, "budget_seconds": None}}}
    ) + "\n" for d in range(1, 4)))
    result = ci.sh(command, IMMUTABLE_INFRA_GROUP=GROUP, IMMUTABLE_INFRA_RUN_ID="jtest-r0",
                   JUNIT_FILE=f"junit-rebuild-{GROUP}.xml", IMMUTABLE_INFRA_REBUILD_REGRESSION="20",
                   IMMUTABLE_INFRA_REPORTS_DIR=str(reports),
                   PYTEST_ADDOPTS="-p no:cacheprovider -k test_rebuild_")  # cheap form: the rebuild suite only
    assert result.returncode == 0, result.stdout[-3000:]
    cases = ci.junit(f"junit-rebuild-{GROUP}.xml", reports)
    budget = props(cases[f"test_rebuild_within_budget[{GROUP}]"])
    assert float(budget["rebuild_seconds"]) > 0 and budget["group"] == GROUP and budget["checks"] == "rebuild"
    assert outcome(cases[f"test_rebuild_time_does_not_regress[{GROUP}]"]) == "passed"  # the gate looked
    no_junit_family_warning(result)
    history = [json.loads(line) for line in (reports / "history.jsonl").read_text().splitlines()]
    assert len(history) == 4 and history[-1]["groups"][GROUP]["rebuild_seconds"] > 0


def run_reaper(ci: CI, command: str) -> None:
    ec2 = ci.ec2()
    vpc = ec2.create_vpc(CidrBlock="10.77.0.0/16", TagSpecifications=[{"ResourceType": "vpc", "Tags": [
        {"Key": "Run", "Value": "jtest-lost"}, {"Key": "ExpiresAt", "Value": "2026-01-01T00:00:00+00:00"}]}])["Vpc"]
    result = ci.sh(command, REAP_RUN_ID="jtest-lost")  # what a SIGKILLed session would have left
    assert result.returncode == 0, result.stderr
    assert not ec2.describe_vpcs(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Vpcs"]
    again = ci.sh(command, REAP_RUN_ID="jtest-lost")  # a session that cleaned up after itself
    assert again.returncode == 0 and "nothing to reap" in again.stderr


RUNNERS = {
    ".ci/setup": run_setup,
    'git fetch --no-tags origin "+refs/heads/$BASE_BRANCH:refs/remotes/origin/$BASE_BRANCH"': run_fetch_base,
    '.ci/groups --changed-since "origin/$BASE_BRANCH"': run_changed_groups,
    ".ci/groups": run_all_groups,
    'pytest suites/ --base-ref "origin/$BASE_BRANCH" --junitxml="$IMMUTABLE_INFRA_REPORTS_DIR/junit-gate.xml"':
        run_merge_gate,
    'pytest tests/ -n auto --dist loadfile --junitxml="$IMMUTABLE_INFRA_REPORTS_DIR/junit-tests.xml"': run_project_tests,
    'pytest suites/ --audit --junitxml="$IMMUTABLE_INFRA_REPORTS_DIR/junit-audit.xml"': run_nightly_audit,
    'pytest suites/ --junitxml="$IMMUTABLE_INFRA_REPORTS_DIR/$JUNIT_FILE"': run_weekly_rebuild,
    'immutable-infra reap --run-id "$REAP_RUN_ID"': run_reaper,
}

COMMANDS = list(dict.fromkeys(sh_commands(JENKINSFILE.read_text())))


def test_every_runner_is_still_a_command_of_the_jenkinsfile():
    stale = sorted(set(RUNNERS) - set(COMMANDS))
    assert not stale, f"runners for commands the Jenkinsfile no longer has: {stale}"


@pytest.mark.parametrize("command", COMMANDS, ids=[getattr(RUNNERS.get(c), "__name__", f"unknown{i}").removeprefix("run_")
                                                   for i, c in enumerate(COMMANDS)])
def test_jenkinsfile_command_runs_against_the_sandbox(command, ci):
    runner = RUNNERS.get(command)
    if runner is None:
        pytest.fail(f"the Jenkinsfile runs `{command}`, which this test does not know how to run; add a runner "
                    "that runs it against the sandbox", pytrace=False)
    runner(ci, command)


# -- IMMUTABLE_INFRA_REAL_AWS for the immutable-infra command (the Jenkinsfile sets it once for every step) ----------

def immutable_infra(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IMMUTABLE_INFRA_")}
    return subprocess.run([sys.executable, "-m", "immutable_infra.cli", *args], env={**clean, **env},
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_reap_reads_real_aws_from_the_environment():
    result = immutable_infra("reap", "--run-id", "x", IMMUTABLE_INFRA_REAL_AWS="true",
                             IMMUTABLE_INFRA_AWS_ENDPOINT="http://127.0.0.1:9")
    assert result.returncode == 2
    assert result.stderr.strip() == ("immutable-infra reap: IMMUTABLE_INFRA_AWS_ENDPOINT and IMMUTABLE_INFRA_REAL_AWS "
                                     "exclude each other; drop one")


def test_a_real_aws_value_that_is_not_a_boolean_is_one_line():
    result = immutable_infra("reap", "--run-id", "x", IMMUTABLE_INFRA_REAL_AWS="prod")
    assert result.returncode == 2
    assert result.stderr.startswith("immutable-infra reap: IMMUTABLE_INFRA_REAL_AWS = 'prod' is neither true nor false")
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_changed_groups_follow_inputs_and_shared_files(tmp_path):
    """.ci/groups --changed-since: a group's dependents are touched with it, a shared file touches every group,
    a file outside the groups' folder touches none."""
    repo = tmp_path / "repo"
    for name in ("tiny", "tiny-app", "slow"):
        shutil.copytree(TEST_GROUPS / name, repo / "groups" / name)
    shutil.copy(TEST_GROUPS.parent / "roles.toml", repo / "roles.toml")
    (repo / "README.md").write_text("docs\n")
    git(tmp_path, "init", "-q", "-b", "develop", str(repo))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    env = {**os.environ, "IMMUTABLE_INFRA_GROUPS_DIR": str(repo / "groups")}

    def changed() -> str:
        result = subprocess.run([str(ROOT / ".ci" / "groups"), "--changed-since", "develop"], env=env, cwd=ROOT,
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        git(repo, "checkout", "-q", "--", ".")
        return result.stdout.strip()

    (repo / "README.md").write_text("more docs\n")
    assert changed() == ""
    (repo / "groups" / "tiny" / "main.tf").write_text((repo / "groups" / "tiny" / "main.tf").read_text() + "\n# edit\n")
    assert changed() == "tiny,tiny-app"  # tiny-app takes tiny.vpc_id
    (repo / "groups" / "tiny-app" / "main.tf").write_text("# edit\n")
    assert changed() == "tiny-app"
    (repo / "roles.toml").write_text((repo / "roles.toml").read_text() + "\n# edit\n")
    assert changed() == "slow,tiny,tiny-app"
    unknown = subprocess.run([str(ROOT / ".ci" / "groups"), "--changed-since", "origin/nope"], env=env, cwd=ROOT,
                             capture_output=True, text=True)
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert unknown.stderr.startswith(".ci/groups: git merge-base origin/nope HEAD failed") and "git fetch" in unknown.stderr
