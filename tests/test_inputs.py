"""Bad inputs: each gives one line naming the problem and the fix, and a non-zero exit, before anything is applied.

The group contract (``group.toml``, ``roles.toml``, ``parity.toml``: schema in
``immutable_infra.config``), the settings (flags, ``IMMUTABLE_INFRA_*``
variables, ini keys) and the ``immutable-infra`` command. Nothing here applies
Terraform: every error comes at configure time (or before the command does
anything), which is also why no run folder may appear.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from immutable_infra.catalog import Catalog, CatalogError
from immutable_infra.config import ConfigError, GroupConfig, validate
from immutable_infra.images import ImageManifestError, load_allow_list
from immutable_infra.roles import RolesError, load_roles
from immutable_infra.settings import SettingsError, parse_bool

TESTS = Path(__file__).parent
ROOT = TESTS.parent
TEST_GROUPS = TESTS / "groups"

SUITE = '''
def test_group(group_name):
    assert group_name
'''


@pytest.fixture
def project(pytester, tmp_path, monkeypatch):
    """A pytester project: the test groups, the roles catalog beside them, a suite that needs a group, its own home."""
    shutil.copytree(TEST_GROUPS, pytester.path / "groups")
    shutil.copy(TESTS / "roles.toml", pytester.path / "roles.toml")
    pytester.makepyfile(test_suite=SUITE)
    monkeypatch.setenv("IMMUTABLE_INFRA_HOME", str(tmp_path / "home"))
    for name in ("AUDIT", "KEEP", "PARALLELISM", "GROUP", "TERRAFORM", "REPORTS_DIR", "AWS_ENDPOINT", "RUN_ID"):
        monkeypatch.delenv(f"IMMUTABLE_INFRA_{name}", raising=False)
    return pytester


def run(pytester, *args):
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", "--groups-dir", "groups", *args)


def one_line_usage_error(result, *words):
    """Exit 4 (pytest's usage error), one ERROR line holding every word, no traceback; returns the line."""
    err = result.stderr.str()
    lines = [line for line in err.splitlines() if line.startswith("ERROR: ")]
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + err
    assert len(lines) == 1, err
    assert "Traceback" not in result.stdout.str() + err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def nothing_applied(tmp_path):
    runs = tmp_path / "home" / "runs"
    assert not runs.exists() or not any(runs.iterdir()), "a run was created"


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


# -- a healthy project runs: every check below fails only because of its one bad input ---------------------------

def test_healthy_project_collects(project):
    result = project.runpytest_inprocess("-p", "no:cacheprovider", "--groups-dir", "groups", "--group", "tiny",
                                         "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["*test_group[[]tiny[]]*"])


# -- group.toml ---------------------------------------------------------------------------------------------------

GROUP_TOML = "groups/tiny-app/group.toml"


@pytest.mark.parametrize(("old", "new", "words"), [
    ('description =', 'peers = ["tiny", "nope"]\ndescription =', ["tiny-app/group.toml", "peers", "'nope'"]),
    ('description =', 'peers = "tiny"\ndescription =', ["tiny-app/group.toml", "peers", "list of group names"]),
    ('description =', 'peers = ["tiny"]\ndescription =', ["tiny-app/group.toml", "peers", "mutual", "tiny/group.toml"]),
    ('vpc_cidr = "10.90.0.0/16"', 'vpc_cidr = "10.300.0.0/99"', ["tiny-app/group.toml", "vpc_cidr", "10.300.0.0/99",
                                                                 "10.21.0.0/16"]),
    ('description =', 'rebuild_budget_second = 300\ndescription =',
     ["tiny-app/group.toml", "'rebuild_budget_second'", "did you mean 'rebuild_budget_seconds'?"]),
    ('description =', 'rebuild_budget_seconds = "300"\ndescription =', ["rebuild_budget_seconds", "valid number"]),
    ('[inputs]', '[chaos]\nfaults = ["sg_opened_to_wrld"]\n[inputs]',
     ["tiny-app/group.toml", "[chaos] faults", "'sg_opened_to_wrld'", "did you mean 'sg_opened_to_world'?"]),
    ('[inputs]', '[chaos]\nchecks = ["drfit"]\n[inputs]', ["[chaos] checks", "'drfit'", "did you mean 'drift'?"]),
    ('[inputs]', '[mutaton]\n[inputs]', ["unknown key 'mutaton'", "did you mean 'mutation'?"]),
    ('[inputs]', '[disaster]\npartner = "tiny-ap"\n[inputs]', ["[disaster] partner", "'tiny-ap'"]),
    ('[inputs]', '[roles]\nmicroservise = 1\n[inputs]', ["[roles] microservise", "roles.toml",
                                                          "did you mean 'microservice'?"]),
    ('kind = "application"', 'kind = "app"', ["kind = 'app'", "ops-center, application"]),
    ('ops_vpc_id = "tiny.vpc_id"', 'ops_vpc_id = "tiny.vpc_idd"', ["input ops_vpc_id", "no output 'vpc_idd'"]),
    ('ops_vpc_id = "tiny.vpc_id"', 'ops_vpc_idd = "tiny.vpc_id"', ["input ops_vpc_idd names no variable",
                                                                  "ops_vpc_id"]),
])
def test_bad_group_config_is_one_line_before_anything(project, tmp_path, old, new, words):
    edit(project.path / GROUP_TOML, old, new)
    one_line_usage_error(run(project, "--group", "tiny-app"), "group tiny-app", *words)
    nothing_applied(tmp_path)


@pytest.mark.parametrize(("entry", "words"), [
    ('from = "tiny@tiny-app"\nto = "microservice@tiny-app"\nprotocol = "tcp"\nport = "22"\n',
     ["[[flows]] entry 1", "port = '22'", "bare integer"]),
    ('from = "microservice@tiny-app"\nto = "microservice@tiny-app"\nprotocol = "tcp"\nprot = 22\n',
     ["[[flows]] entry 1", "unknown key(s) prot"]),
    ('from = "microservice@tiny-app"\nto = "microservice@tiny-app"\nprotocol = "sctp"\nport = 22\n',
     ["[[flows]] entry 1", "'sctp'"]),
    ('from = "micro@tiny-app"\nto = "microservice@tiny-app"\nprotocol = "tcp"\nport = 22\n',
     ["[[flows]] entry 1", "role 'micro'", "roles.toml"]),
    ('from = "microservice@tiny-ap"\nto = "microservice@tiny-app"\nprotocol = "tcp"\nport = 22\n',
     ["[[flows]] entry 1", "unknown group 'tiny-ap'", "did you mean 'tiny-app'?"]),
    ('from = "microservice@slow"\nto = "microservice@tiny-app"\nprotocol = "tcp"\nport = 22\n',
     ["[[flows]] entry 1", "slow and tiny-app are not peers", "add \"tiny-app\" to peers"]),
])
def test_bad_flow_is_one_line_before_any_apply(project, tmp_path, entry, words):
    with open(project.path / GROUP_TOML, "a") as f:
        f.write("\n[[flows]]\n" + entry)
    one_line_usage_error(run(project, "--group", "tiny-app"), "tiny-app/group.toml", *words)
    nothing_applied(tmp_path)


def test_another_group_with_broken_toml_is_named(project, tmp_path):
    (project.path / "groups" / "chaos-lab" / "group.toml").write_text('kind = "application"\nregion = [\n')
    one_line_usage_error(run(project, "--group", "tiny"), "group chaos-lab", "chaos-lab/group.toml", "not valid TOML")
    nothing_applied(tmp_path)


def test_groups_dir_without_roles_catalog_beside_it(project, tmp_path):
    (project.path / "roles.toml").unlink()
    one_line_usage_error(run(project, "--group", "tiny"), "no roles catalog beside the groups folder", "roles.toml",
                         "--groups-dir")
    nothing_applied(tmp_path)


def test_bad_roles_catalog_names_file_and_key(project):
    with open(project.path / "roles.toml", "a") as f:
        f.write('\n[roles.extra]\nkinds = ["application"]\nplaybook = "x.yml"\ntier = "private"\nport = [22]\n')
    one_line_usage_error(run(project, "--group", "tiny"), "roles.toml", "unknown key 'port' in [roles.extra]",
                         "did you mean 'ports'?")


def test_role_image_template_must_be_a_packer_template(project):
    shutil.copytree(ROOT / "fixtures" / "images", project.path / "images")
    with open(project.path / "roles.toml", "a") as f:
        f.write('\n[roles.extra]\nkinds = ["application"]\nplaybook = "x.yml"\ntier = "private"\n'
                'image_template = "debian12-base"\n')
    one_line_usage_error(run(project, "--group", "tiny"), "[roles.extra] image_template = 'debian12-base'",
                         "centos7-base, debian11-base")
    edit(project.path / "roles.toml", '"debian12-base"', '"debian11-base"')
    assert run(project, "--group", "tiny", "--collect-only").ret == pytest.ExitCode.OK


def test_bad_parity_allow_list_names_file_and_key(project):
    (project.path / "images").mkdir()
    (project.path / "images" / "parity.toml").write_text(
        '[[package]]\nname = "cloud-init"\nonly_in = "amazon-ebs"\nreason = "metadata"\ntemplate = ["x"]\n')
    one_line_usage_error(run(project, "--group", "tiny"), "parity.toml", "unknown key 'template'",
                         "did you mean 'templates'?")


# -- settings -----------------------------------------------------------------------------------------------------

def test_suites_without_group_is_a_usage_error(project):
    one_line_usage_error(run(project), "test_suite.py::test_group tests a group", "--group")


def test_ini_boolean_that_is_not_true_or_false_names_the_ini_key(project):
    one_line_usage_error(run(project, "--group", "tiny", "-o", "immutable_infra_keep=maybe"),
                         "ini key immutable_infra_keep = 'maybe'", "true or false")


def test_env_boolean_that_is_not_true_or_false_names_the_variable(project, monkeypatch, tmp_path):
    monkeypatch.setenv("IMMUTABLE_INFRA_AUDIT", "enabled")
    line = one_line_usage_error(run(project, "--group", "tiny"), "IMMUTABLE_INFRA_AUDIT = 'enabled'",
                                "neither true nor false")
    assert "--audit" not in line
    nothing_applied(tmp_path)


def test_env_error_names_the_variable_not_the_flag(project, monkeypatch):
    monkeypatch.setenv("IMMUTABLE_INFRA_PARALLELISM", "lots")
    line = one_line_usage_error(run(project, "--group", "tiny"), "IMMUTABLE_INFRA_PARALLELISM", "'lots'")
    assert "--parallelism" not in line


def test_flag_error_names_the_flag(project):
    one_line_usage_error(run(project, "--group", "tiny", "--parallelism", "0"), "--parallelism must be at least 1")


@pytest.mark.parametrize("word", ["1", "true", "Yes", "on", "0", "false", "No", "off"])
def test_recognised_boolean_words(word):
    assert parse_bool(word, "X") is (word.lower() in ("1", "true", "yes", "on"))


@pytest.mark.parametrize("word", ["enabled", "maybe", "2", ""])
def test_unrecognised_boolean_words(word):
    with pytest.raises(SettingsError, match="IMMUTABLE_INFRA_KEEP = .* is neither true nor false"):
        parse_bool(word, "IMMUTABLE_INFRA_KEEP")


def test_reports_dir_that_is_a_file(project):
    (project.path / "afile").write_text("")
    one_line_usage_error(run(project, "--group", "tiny", "--reports-dir", "afile"), "--reports-dir", "afile",
                         "is a file")


def test_reports_dir_that_cannot_be_created(project):
    (project.path / "afile").write_text("")
    one_line_usage_error(run(project, "--group", "tiny", "--reports-dir", "afile/reports"), "--reports-dir",
                         "cannot be created", "afile is a file")


def test_home_that_is_a_file(project, monkeypatch, tmp_path):
    (tmp_path / "homefile").write_text("")
    monkeypatch.setenv("IMMUTABLE_INFRA_HOME", str(tmp_path / "homefile"))
    one_line_usage_error(run(project, "--group", "tiny"), "IMMUTABLE_INFRA_HOME", "homefile", "is a file")


def test_terraform_that_does_not_exist(project):
    one_line_usage_error(run(project, "--group", "tiny", "--terraform", "/nonexistent/terraform"),
                         "--terraform /nonexistent/terraform does not exist", "embedded Terraform")


def test_audit_of_an_unknown_run_writes_nothing(project, tmp_path):
    one_line_usage_error(run(project, "--group", "tiny", "--audit", "--run-id", "nosuchrun"),
                         "--audit --run-id nosuchrun", "no run 'nosuchrun'", "immutable-infra runs")
    assert not (tmp_path / "home").exists()
    assert not (project.path / "reports").exists()


# -- the immutable-infra command ------------------------------------------------------------------------------------

def cli(*args, cwd: Path, home: Path, timeout: float = 60):
    env = {**os.environ, "IMMUTABLE_INFRA_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "immutable_infra.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def one_line_cli_error(result, code, *words):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code, result.stdout + result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_up_refuses_parallelism_zero(tmp_path):
    result = cli("up", "tiny", "--groups-dir", str(TEST_GROUPS), "--aws-endpoint", "http://127.0.0.1:9",
                 "--parallelism", "0", cwd=ROOT, home=tmp_path / "home")
    one_line_cli_error(result, 2, "--parallelism must be at least 1")
    assert not (tmp_path / "home").exists()


def test_up_validates_every_group_before_applying(tmp_path):
    groups = tmp_path / "groups"
    shutil.copytree(TEST_GROUPS, groups)
    shutil.copy(TESTS / "roles.toml", tmp_path / "roles.toml")
    edit(groups / "slow" / "group.toml", 'vpc_cidr = "10.91.0.0/16"', 'vpc_cidr = "10.91.0.0/99"')
    result = cli("up", "tiny", "--groups-dir", str(groups), "--aws-endpoint", "http://127.0.0.1:9",
                 cwd=tmp_path, home=tmp_path / "home")
    one_line_cli_error(result, 2, "group slow", "slow/group.toml", "vpc_cidr")
    assert not (tmp_path / "home").exists()


def test_sandbox_on_a_port_in_use_is_one_line_not_a_hang(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("sandbox", "--port", str(port), cwd=tmp_path, home=tmp_path / "home", timeout=60)
    one_line_cli_error(result, 2, f"--port {port}", "in use", "leave --port out")


def test_runs_lists_a_damaged_run(tmp_path):
    home = tmp_path / "home"
    (home / "runs" / "broken1").mkdir(parents=True)
    (home / "runs" / "broken1" / "run.json").write_text("{not json")
    (home / "runs" / "odd1").mkdir(parents=True)
    (home / "runs" / "odd1" / "run.json").write_text(json.dumps({"id": "odd1", "surprise": 1}))
    result = cli("runs", cwd=tmp_path, home=home)
    assert result.returncode == 1, result.stdout + result.stderr
    damaged = [line for line in result.stdout.splitlines() if "DAMAGED" in line]
    assert len(damaged) == 2, result.stdout
    assert str(home / "runs" / "broken1" / "run.json") in damaged[0]
    assert str(home / "runs" / "odd1" / "run.json") in damaged[1]


def test_runs_with_no_damage_exits_zero(tmp_path):
    result = cli("runs", cwd=tmp_path, home=tmp_path / "home")
    assert result.returncode == 0 and "DAMAGED" not in result.stdout, result.stdout + result.stderr


# -- the seed groups and the test groups honour the contract ------------------------------------------------------

@pytest.mark.parametrize("groups_dir", [ROOT / "fixtures" / "groups", TEST_GROUPS], ids=["fixtures", "tests"])
def test_every_group_validates(groups_dir):
    catalog = Catalog(groups_dir)
    groups = catalog.validate()
    assert [g.name for g in groups] == catalog.names() and groups
    for g in groups:
        assert g.spec is not None and g.spec.kind == g.kind


def test_seed_groups_typed_contract():
    catalog = Catalog(ROOT / "fixtures" / "groups")
    slave = catalog.get("prd-sg-slave")
    assert slave.rebuild_budget_seconds == 300.0
    assert slave.peers == ["ops-sg", "prd-sg-master"]
    assert {f.name for f in slave.flows} >= {"reverse-proxy@prd-sg-slave->microservice@prd-sg-slave:tcp/8080"}
    assert catalog.get("prd-sg-master").disaster_partner == "prd-sg-slave"
    assert load_allow_list(ROOT / "fixtures" / "images" / "parity.toml").entries


def test_schema_errors_name_file_key_and_fix(tmp_path):
    with pytest.raises(ConfigError) as info:
        validate(GroupConfig, {"kind": "application", "region": "ap-southeast-1", "vpc_cidr": "10.0.0.0/16",
                               "rebuild_budget_second": 1}, tmp_path / "group.toml", group="g")
    assert str(info.value) == (f"{tmp_path / 'group.toml'}: unknown key 'rebuild_budget_second'; "
                               "did you mean 'rebuild_budget_seconds'?")
    roles = tmp_path / "roles.toml"
    roles.write_text('[roles.x]\nkinds = ["application"]\nplaybook = "x.yml"\n')
    with pytest.raises(RolesError, match=r"roles\.toml: \[roles\.x\] lacks tier; add it"):
        load_roles(roles)
    parity = tmp_path / "parity.toml"
    parity.write_text('[[config]]\npath = "/etc/x"\nonly_in = "docker"\nreason = "r"\n')
    with pytest.raises(ImageManifestError, match=r"\[\[config\]\] entry 1 only_in = 'docker'"):
        load_allow_list(parity)


def test_cross_group_problems_are_catalog_errors(groups_copy):
    edit(groups_copy / "tiny" / "group.toml", 'description =', 'peers = ["tiny-app"]\ndescription =')
    with pytest.raises(CatalogError, match=r"group tiny: .*tiny/group.toml: peers names 'tiny-app', but .* mutual"):
        Catalog(groups_copy).validate()
    edit(groups_copy / "tiny-app" / "group.toml", 'description =', 'peers = ["tiny"]\ndescription =')
    with pytest.raises(CatalogError, match=r"vpc_cidr 10.90.0.0/16 overlaps 10.90.0.0/16 of its peer tiny-app"):
        Catalog(groups_copy).validate()  # mutual now, but both VPCs are 10.90.0.0/16
    edit(groups_copy / "tiny-app" / "group.toml", 'vpc_cidr = "10.90.0.0/16"', 'vpc_cidr = "10.95.0.0/16"')
    Catalog(groups_copy).validate()  # mutual and disjoint: valid


def test_readme_documents_every_contract_key():
    """The README tables (key, type, default, meaning) name every key the schema accepts."""
    from pydantic import BaseModel

    from immutable_infra.config import GroupConfig, RoleConfig

    readme = (ROOT / "README.md").read_text()
    missing = []
    for name, field in GroupConfig.model_fields.items():
        sub = field.annotation
        sub = next((a for a in getattr(sub, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)), sub)
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            missing += [f"[{name}] {key}" for key in sub.model_fields if f"`[{name}] {key}`" not in readme]
        elif not any(f"| `{form}`" in readme for form in (name, f"[{name}]", f"[[{name}]]")):
            missing.append(name)
    missing += [f"roles.toml {key}" for key in RoleConfig.model_fields if f"`{key}`" not in readme]
    assert not missing, f"README lacks the contract keys {missing}"


def test_sandbox_port_out_of_range(tmp_path):
    result = cli("sandbox", "--port", "70000", cwd=tmp_path, home=tmp_path / "home")
    one_line_cli_error(result, 2, "--port 70000 is not a port number")


def test_an_audit_never_creates_a_run(tmp_path):
    """Behind the usage check: the harness itself refuses to create a run for an audit."""
    from immutable_infra.ephemeral import RunError
    from immutable_infra.harness import Harness
    from immutable_infra.settings import Settings

    harness = Harness(Settings(groups=["tiny"], groups_dir=TEST_GROUPS, audit=True, run_id="nosuch",
                               home=tmp_path / "home"))
    with pytest.raises(RunError, match="no run 'nosuch' .* to audit; `immutable-infra runs` lists them"):
        harness.run
    assert not (tmp_path / "home").exists()


def test_env_run_id_error_names_the_variable(project, monkeypatch):
    monkeypatch.setenv("IMMUTABLE_INFRA_RUN_ID", "Bad_Id")
    line = one_line_usage_error(run(project, "--group", "tiny"), "IMMUTABLE_INFRA_RUN_ID = 'Bad_Id'", "1-16 characters")
    assert "--run-id" not in line


def test_env_keep_without_endpoint_names_the_variable(project, monkeypatch):
    monkeypatch.setenv("IMMUTABLE_INFRA_KEEP", "yes")
    one_line_usage_error(run(project, "--group", "tiny"), "IMMUTABLE_INFRA_KEEP needs an endpoint that outlives")


def test_up_names_the_environment_variable_it_read(tmp_path):
    env_terraform = {"IMMUTABLE_INFRA_TERRAFORM": "/nonexistent/tofu"}
    result = subprocess.run(
        [sys.executable, "-m", "immutable_infra.cli", "up", "tiny", "--groups-dir", str(TEST_GROUPS),
         "--aws-endpoint", "http://127.0.0.1:9"],
        cwd=tmp_path, env={**os.environ, "IMMUTABLE_INFRA_HOME": str(tmp_path / "home"), **env_terraform},
        capture_output=True, text=True, timeout=60)
    one_line_cli_error(result, 2, "IMMUTABLE_INFRA_TERRAFORM /nonexistent/tofu does not exist")
