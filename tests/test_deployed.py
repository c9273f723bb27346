"""Reading groups as deployed from their own backend (deployed.py): fast cases on tiny state-only groups.

The groups here hold one built-in ``terraform_data`` resource (no provider, no AWS), applied once with plain
Terraform into a local state; the S3 cases upload that state into the test's own sandbox bucket. The
acceptance test on the seed groups is tests/test_deployed_audit.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import boto3
import pytest

from immutable_infra.catalog import Catalog
from immutable_infra.deployed import (BackendUnreadable, DeployedDeployer, DeployedRun, NoBackend, StateTooNew,
                                      backend_config_args, find_backend, read_deployed)
from immutable_infra.engine import ReadOnlyError, Terraform
from immutable_infra.sandbox import Sandbox

REGION = "ap-southeast-1"

BASE_TF = """
terraform {
  backend "local" {
    path = "state/terraform.tfstate"
  }
}
variable "region" {
  type = string
}
resource "terraform_data" "x" {
  input = "base-${var.region}"
}
output "token" {
  value = terraform_data.x.output
}
"""

APP_TF = """
terraform {
  %BACKEND%
}
variable "base_token" {
  type = string
}
variable "colour" {
  type    = string
  default = "unset"
}
resource "terraform_data" "y" {
  input = "app"
}
output "seen" {
  value = "${var.base_token}/${var.colour}"
}
"""


def group(root: Path, name: str, tf: str, toml: str = "") -> Path:
    path = root / "groups" / name
    path.mkdir(parents=True)
    (path / "main.tf").write_text(tf)
    (path / "group.toml").write_text(f'kind = "application"\nregion = "{REGION}"\nvpc_cidr = "10.50.0.0/16"\n{toml}')
    return path


def files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sandbox(moto_server, tmp_path_factory):
    return Sandbox.remote(moto_server.url)


@pytest.fixture(scope="module")
def applied_state(sandbox, tmp_path_factory) -> bytes:
    """The base group's state, applied once with plain Terraform (local backend)."""
    root = tmp_path_factory.mktemp("plain")
    path = group(root, "base", BASE_TF)
    tf = Terraform(path, sandbox.terraform_env())
    tf.init()
    tf.run(["apply", "-auto-approve", "-input=false", "-no-color", f"-var=region={REGION}"])
    return (path / "state" / "terraform.tfstate").read_bytes()


@pytest.fixture
def catalog(tmp_path, applied_state) -> Catalog:
    """base (local backend, applied state in place) and app (no backend yet, its input from base.token)."""
    base = group(tmp_path, "base", BASE_TF)
    (base / "state").mkdir()
    (base / "state" / "terraform.tfstate").write_bytes(applied_state)
    group(tmp_path, "app", APP_TF.replace("%BACKEND%", ""),
          '[inputs]\nbase_token = "base.token"\n[deployed]\nvariables = { colour = "blue" }\n')
    return Catalog(tmp_path / "groups")


def test_no_backend_block_says_so_and_names_run_id(catalog, sandbox):
    with pytest.raises(NoBackend) as exc:
        read_deployed(catalog, ["app"], sandbox)
    text = str(exc.value)
    assert "\n" not in text and "group app" in text and "no backend block" in text and "--run-id" in text


def test_local_backend_reads_state_outputs_and_inputs_and_writes_nothing(catalog, sandbox):
    app = catalog.groups_dir / "app" / "main.tf"
    app.write_text(APP_TF.replace("%BACKEND%", 'backend "local" {\n    path = "app.tfstate"\n  }'))
    # app's state: applied by hand into its own local backend, with the input the wrapper passed
    tf = Terraform(app.parent, sandbox.terraform_env())
    tf.init()
    tf.run(["apply", "-auto-approve", "-input=false", "-no-color", "-var=base_token=x"])
    before = {g: files(catalog.groups_dir / g) for g in ("base", "app")}
    lines = []
    run = read_deployed(catalog, ["app"], sandbox, say=lines.append)
    try:
        assert run.order == ["base", "app"]
        assert run.groups["base"].status == "applied" and run.groups["base"].resources == ["terraform_data.x"]
        assert run.groups["base"].outputs == {"token": f"base-{REGION}"}  # region from group.toml
        # inputs come from the deployed base's outputs, [deployed] variables beside them
        tfvars = json.loads((run.workspace("app") / "immutable_infra.auto.tfvars.json").read_text())
        assert tfvars == {"base_token": f"base-{REGION}", "colour": "blue"}
        assert run.path.is_relative_to(run.home) and ".immutable-infra" not in str(run.path)
        deployer = DeployedDeployer(run, catalog, sandbox)
        tf_app = deployer.terraform("app")
        plan = tf_app.refresh_plan()  # drift is the refresh-only plan: allowed, no lock
        assert plan.get("format_version")
        with pytest.raises(ReadOnlyError):
            tf_app.apply(refresh_only=True)
        with pytest.raises(ReadOnlyError):
            tf_app.destroy()
        assert any("read as deployed" in line and "app.tfstate" in line for line in lines)
    finally:
        run.forget()
    assert not run.home.exists(), "the private copies are removed"
    after = {g: files(catalog.groups_dir / g) for g in ("base", "app")}
    assert after == before, "reading a deployed group must not change its folder or its state"


def test_state_written_by_a_newer_terraform_is_one_line(catalog, sandbox):
    state = catalog.groups_dir / "base" / "state" / "terraform.tfstate"
    data = json.loads(state.read_text())
    data["terraform_version"] = "9.9.9"
    state.write_text(json.dumps(data))
    with pytest.raises(StateTooNew) as exc:
        read_deployed(catalog, ["base"], sandbox)
    text = str(exc.value)
    assert "\n" not in text and "group base" in text and "v9.9.9" in text and "--terraform" in text


def test_local_lock_held_by_someone_else_is_said_and_the_audit_goes_on(catalog, sandbox):
    info = catalog.groups_dir / "base" / "state" / ".terraform.tfstate.lock.info"
    info.write_text(json.dumps({"ID": "1", "Who": "alice@ci", "Operation": "OperationTypeApply"}))
    lines = []
    run = read_deployed(catalog, ["base"], sandbox, say=lines.append)
    run.forget()
    assert run.groups["base"].status == "applied"
    assert run.notes and "lock is held" in run.notes[0] and "alice@ci" in run.notes[0]
    assert run.notes[0] in lines
    assert info.exists()


def s3(sandbox):
    return boto3.client("s3", region_name=REGION, endpoint_url=sandbox.endpoint,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def test_s3_backend_in_the_sandbox_with_a_held_lockfile_and_backend_config(catalog, sandbox, applied_state):
    """A backend block written for AWS (key, region, use_lockfile; bucket from --backend-config) read from the
    sandbox; the lockfile someone holds is said, and neither the state nor the lock object changes."""
    client = s3(sandbox)
    client.create_bucket(Bucket="team-states", CreateBucketConfiguration={"LocationConstraint": REGION})
    client.put_object(Bucket="team-states", Key="sg/base.tfstate", Body=applied_state)
    lock = json.dumps({"ID": "9", "Who": "bob@laptop", "Created": "2026-12-03T10:00:00Z"}).encode()
    client.put_object(Bucket="team-states", Key="sg/base.tfstate.tflock", Body=lock)
    main = catalog.groups_dir / "base" / "main.tf"
    main.write_text(BASE_TF.replace('backend "local" {\n    path = "state/terraform.tfstate"\n  }',
                                    f'backend "s3" {{\n    key = "sg/base.tfstate"\n    region = "{REGION}"\n'
                                    '    use_lockfile = true\n  }'))
    shutil.rmtree(catalog.groups_dir / "base" / "state")
    before = files(catalog.groups_dir)
    run = read_deployed(catalog, ["base"], sandbox, backend_config=["bucket=team-states"])
    try:
        assert run.groups["base"].outputs == {"token": f"base-{REGION}"}
        assert run.groups["base"].resources == ["terraform_data.x"]
        assert run.notes and "s3://team-states/sg/base.tfstate.tflock" in run.notes[0] and "bob@laptop" in run.notes[0]
        DeployedDeployer(run, catalog, sandbox).terraform("base").refresh_plan()  # -lock=false: the held lock is no error
    finally:
        run.forget()
    assert client.get_object(Bucket="team-states", Key="sg/base.tfstate")["Body"].read() == applied_state
    assert client.get_object(Bucket="team-states", Key="sg/base.tfstate.tflock")["Body"].read() == lock
    assert files(catalog.groups_dir) == before

    # a bucket that does not exist: one line naming bucket, key and the credential in use (never the secret)
    with pytest.raises(BackendUnreadable) as exc:
        read_deployed(catalog, ["base"], sandbox, backend_config=["bucket=no-such-bucket"])
    text = str(exc.value)
    assert "\n" not in text
    assert "no-such-bucket" in text and "sg/base.tfstate" in text and "access key id testing" in text
    assert "SECRET" not in text.upper().replace("SECRET_ACCESS", "")

    # a key with no state: nothing deployed there, never a vacuous pass
    with pytest.raises(BackendUnreadable) as exc:
        read_deployed(catalog, ["base"], sandbox, backend_config=["bucket=team-states", "key=sg/none.tfstate"])
    assert "holds no state" in str(exc.value) and "\n" not in str(exc.value)


def test_backend_config_file_and_bad_item(tmp_path):
    cfg = tmp_path / "prod.s3.tfbackend"
    cfg.write_text('bucket = "b1"\nregion = "cn-north-1"\n')
    args, given = backend_config_args(["prod.s3.tfbackend", "key=a/b.tfstate"], tmp_path)
    assert args == [f"-backend-config={cfg.resolve()}", "-backend-config=key=a/b.tfstate"]
    assert given == {"bucket": "b1", "region": "cn-north-1", "key": "a/b.tfstate"}
    with pytest.raises(Exception) as exc:
        backend_config_args(["missing.tfbackend"], tmp_path)
    assert "--backend-config missing.tfbackend" in str(exc.value)


def test_profile_is_the_groups_credential_on_aws(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENV")
    run = DeployedRun.temporary(tmp_path, None)
    try:
        run.profiles["ops-cn"] = "china"
        aws = Sandbox(endpoint=None, cache_dir=tmp_path / "cache", offline=False)
        tf = DeployedDeployer(run, None, aws).terraform("ops-cn")  # type: ignore[arg-type]
        assert tf.env["AWS_PROFILE"] == "china" and "AWS_ACCESS_KEY_ID" not in tf.env
        assert tf.read_only
        plan_args = []
        tf.run = lambda args, **kw: plan_args.append(args)  # type: ignore[method-assign]
        tf.init()
        assert "-lock=false" in plan_args[0]
    finally:
        run.forget()


def test_find_backend_reads_the_block(tmp_path):
    path = group(tmp_path, "g", 'terraform {\n  backend "s3" {\n    bucket = "b"\n    key = "k"\n'
                                  '    dynamodb_table = "locks"\n    encrypt = true\n  }\n}\n')
    from immutable_infra.catalog import load_group

    backend = find_backend(load_group(path))
    assert backend.type == "s3" and backend.settings == {"bucket": "b", "key": "k", "dynamodb_table": "locks",
                                                         "encrypt": True}


# -- through pytest: options and the one-line errors -------------------------------------------------------------

SUITE = """
def test_group(applied_group):
    assert applied_group.record.status == "applied"
"""


@pytest.fixture
def project(pytester, tmp_path, monkeypatch):
    from conftest import TEST_GROUPS, TESTS

    shutil.copytree(TEST_GROUPS / "tiny", pytester.path / "groups" / "tiny")
    shutil.copy(TESTS / "roles.toml", pytester.path / "roles.toml")
    pytester.makepyfile(test_suite=SUITE)
    monkeypatch.setenv("IMMUTABLE_INFRA_HOME", str(tmp_path / "home"))
    for name in ("AUDIT", "GROUP", "AWS_ENDPOINT", "RUN_ID", "BACKEND_CONFIG"):
        monkeypatch.delenv(f"IMMUTABLE_INFRA_{name}", raising=False)
    return pytester


def test_backend_config_without_audit_is_a_usage_error(project):
    result = project.runpytest_inprocess("-p", "no:cacheprovider", "--groups-dir", "groups", "--group", "tiny",
                                         "--backend-config", "bucket=b")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    lines = [line for line in result.stderr.str().splitlines() if line.startswith("ERROR: ")]
    assert len(lines) == 1 and "--backend-config" in lines[0] and "--audit" in lines[0], result.stderr.str()


def test_audit_of_a_group_without_backend_errors_in_one_line_and_writes_nothing(project, moto_server, tmp_path):
    result = project.runpytest_inprocess("-p", "no:cacheprovider", "--groups-dir", "groups", "--group", "tiny",
                                         "--audit", "--aws-endpoint", moto_server.url, "--reports-dir", "reports")
    out = result.stdout.str()
    result.assert_outcomes(errors=1)
    assert "cannot audit group tiny as deployed: group tiny:" in out and "no backend block" in out, out
    assert "--run-id" in out and "Traceback" not in out
    assert not (tmp_path / "home").exists() and not (project.path / "reports").exists()


def test_dynamodb_lock_item_is_read_not_taken(sandbox):
    from immutable_infra.deployed import Backend, lock_holder

    ddb = boto3.client("dynamodb", region_name=REGION, endpoint_url=sandbox.endpoint,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    ddb.create_table(TableName="tf-locks", KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}],
                     BillingMode="PAY_PER_REQUEST")
    backend = Backend("s3", Path("backend.tf"), {"bucket": "b", "key": "cn/prd-cn.tfstate", "dynamodb_table": "tf-locks"})
    clients = lambda service: sandbox.client(service, REGION)  # noqa: E731
    assert lock_holder(backend, clients) is None
    # Terraform's own digest item is not a lock
    ddb.put_item(TableName="tf-locks", Item={"LockID": {"S": "b/cn/prd-cn.tfstate-md5"}, "Digest": {"S": "x"}})
    assert lock_holder(backend, clients) is None
    info = json.dumps({"ID": "7", "Who": "carol@jenkins", "Operation": "OperationTypePlan"})
    ddb.put_item(TableName="tf-locks", Item={"LockID": {"S": "b/cn/prd-cn.tfstate"}, "Info": {"S": info}})
    held = lock_holder(backend, clients)
    assert held and "tf-locks" in held and "carol@jenkins" in held
    assert ddb.scan(TableName="tf-locks")["Count"] == 2, "reading the lock adds nothing"


def test_a_group_s_clients_use_its_profile_on_aws_and_the_sandbox_s_credentials_on_an_endpoint(tmp_path, monkeypatch):
    from immutable_infra.deployed import group_client

    asked = []
    aws = Sandbox(endpoint=None, cache_dir=tmp_path / "cache", offline=False)
    monkeypatch.setattr(aws, "client", lambda service, region, profile=None: asked.append((service, region, profile)))
    group_client(aws, "china", "ec2", "cn-north-1")
    local = Sandbox(endpoint="http://127.0.0.1:9", cache_dir=tmp_path / "cache", offline=True)
    monkeypatch.setattr(local, "client", lambda service, region, profile=None: asked.append((service, region, profile)))
    group_client(local, "china", "ec2", "cn-north-1")
    assert asked == [("ec2", "cn-north-1", "china"), ("ec2", "cn-north-1", None)]
