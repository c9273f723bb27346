"""The groups as deployed: read from each group's own Terraform backend, never written (``--audit`` without ``--run-id``).

A team applies its groups with its own scripts; their states live in the
backend each group's Terraform declares (S3 with a lockfile or a DynamoDB
table, or a local path). To audit them, each group of the closure is copied
into a private temporary working directory, initialised with its own backend
(plus what the team's wrapper passes, ``--backend-config``) and read:
outputs, state, live fingerprints. The result is an in-memory :class:`Run`
(never saved in the run store) that every read-only check reads like a run
this tool brought up.

What it never does: write a state or take a lock. Every Terraform command
runs with ``-lock=false``; apply, destroy and refresh-only apply are refused
by the read-only driver (:class:`engine.Terraform` ``read_only``); drift is
the refresh-only *plan*. A lock someone else holds is reported, and the
audit goes on without it.

Against an ``--aws-endpoint`` sandbox the same code runs: the group's S3
backend is pointed at the endpoint by a generated partial backend
configuration file (path style, no credential, region or account checks),
never by editing the group's backend block.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from immutable_infra.catalog import Catalog, Group, declared, resolve_inputs
from immutable_infra.engine import DEFAULT_PARALLELISM, Driver, Terraform, TerraformError
from immutable_infra.ephemeral import OVERRIDE_FILE, TFVARS_FILE, Deployer, Run, managed, provider_aliases
from immutable_infra.errors import ToolError
from immutable_infra.sandbox import Sandbox

Say = Callable[[str], None]

#: The partial backend configuration written for an --aws-endpoint sandbox (beside the group's files).
ENDPOINT_BACKEND_FILE = "immutable_infra_backend.tfbackend"
#: Credentials from the environment that would override a group's profile.
STATIC_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


class DeployedError(ToolError):
    """A deployed group cannot be read: the message names the group, the backend and the fix."""


class NoBackend(DeployedError):
    """The group's Terraform declares no backend block."""


class BackendUnreadable(DeployedError):
    """The backend cannot be read with the credential in use."""


class StateTooNew(DeployedError):
    """The state was written by a newer Terraform than the one auditing it."""


# -- the backend block ------------------------------------------------------------------------------

BACKEND = re.compile(r'^\s*backend\s+"([A-Za-z0-9_-]+)"\s*\{', re.MULTILINE)
ATTRIBUTE = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|(true|false|[0-9.]+))\s*$',
                       re.MULTILINE)


@dataclass
class Backend:
    """A group's backend: its type, the file that declares it and its plain attributes (with --backend-config)."""

    type: str
    file: Path
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def bucket(self) -> str:
        return str(self.settings.get("bucket", "?"))

    @property
    def key(self) -> str:
        return str(self.settings.get("key", "?"))

    def where(self) -> str:
        if self.type == "s3":
            return f"s3 bucket {self.bucket}, key {self.key}"
        if self.type == "local":
            return f"local state {self.settings.get('path', 'terraform.tfstate')}"
        return f"{self.type} backend"


def _attributes(text: str) -> dict[str, Any]:
    """``name = "string" | true | false | number`` lines of an HCL body (nested blocks are not read)."""
    out: dict[str, Any] = {}
    for m in ATTRIBUTE.finditer(text):
        name, string, literal = m.group(1), m.group(2), m.group(3)
        if string is not None:
            out[name] = string.replace('\\"', '"')
        elif literal in ("true", "false"):
            out[name] = literal == "true"
        else:
            out[name] = float(literal) if "." in literal else int(literal)
    return out


def _body(text: str, start: int) -> str:
    depth, i = 1, start
    while i < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[start: i - 1]


def find_backend(group: Group) -> Backend:
    """The ``backend`` block of the group's Terraform; NoBackend (naming --run-id) when there is none."""
    for tf in sorted(group.path.glob("*.tf")):
        if tf.name == OVERRIDE_FILE:
            continue
        text = tf.read_text(encoding="utf-8", errors="replace")
        m = BACKEND.search(text)
        if m:
            return Backend(m.group(1), tf, _attributes(_body(text, m.end())))
    for tf in sorted(group.path.glob("*.tf.json")):
        try:
            blocks = json.loads(tf.read_text(encoding="utf-8")).get("terraform") or {}
        except (ValueError, AttributeError):
            continue
        for block in blocks if isinstance(blocks, list) else [blocks]:
            for kind, body in (block.get("backend") or {}).items():
                return Backend(kind, tf, dict(body[0] if isinstance(body, list) else body))
    raise NoBackend(
        f"group {group.name}: {group.path}/*.tf declares no backend block, so there is no deployed state to audit; "
        f"declare the backend the team applies with (terraform {{ backend \"s3\" {{ ... }} }}), or audit a run this "
        f"tool brought up with --audit --run-id ID"
    )


def backend_config_args(items: list[str], base: Path) -> tuple[list[str], dict[str, Any]]:
    """``--backend-config`` items as ``terraform init`` arguments, and the settings they give (for messages)."""
    args: list[str] = []
    given: dict[str, Any] = {}
    for item in items:
        if "=" in item and not Path(item).exists():
            key, _, value = item.partition("=")
            args.append(f"-backend-config={key.strip()}={value}")
            given[key.strip()] = value
            continue
        path = Path(item) if Path(item).is_absolute() else base / item
        if not path.is_file():
            raise DeployedError(
                f"--backend-config {item}: neither KEY=VALUE nor a file ({path} does not exist); "
                "pass what your wrapper passes to terraform init -backend-config")
        args.append(f"-backend-config={path.resolve()}")
        given.update(_attributes(path.read_text(encoding="utf-8", errors="replace")))
    return args, given


def endpoint_backend(endpoint: str) -> str:
    """A partial S3 backend configuration that points the group's S3 backend at an AWS-compatible endpoint."""
    lines = [
        "# Written by immutable-infra: the group's S3 backend read from the sandbox at " + endpoint,
        f"endpoints = {{ s3 = {json.dumps(endpoint)}, dynamodb = {json.dumps(endpoint)}, "
        f"sts = {json.dumps(endpoint)}, iam = {json.dumps(endpoint)} }}",
        "use_path_style              = true",
        "skip_credentials_validation = true",
        "skip_region_validation      = true",
        "skip_requesting_account_id  = true",
        "skip_metadata_api_check     = true",
        "skip_s3_checksum            = true",
    ]
    return "\n".join(lines) + "\n"


def endpoint_override(settings: dict[str, Any], aliases: list[str | None]) -> str:
    """Provider override for a deployed group: only the sandbox's endpoints, never the run's default_tags."""
    from immutable_infra.ephemeral import _hcl

    blocks = ["# Written by immutable-infra for an audit of the deployed group; the group's own files stay untouched."]
    for alias in aliases:
        lines = ['provider "aws" {']
        if alias:
            lines.append(f"  alias = {_hcl(alias)}")
        for key, value in settings.items():
            if key == "endpoints":
                lines += ["  endpoints {"] + [f"    {svc} = {_hcl(url)}" for svc, url in value.items()] + ["  }"]
            else:
                lines.append(f"  {key} = {_hcl(value)}")
        lines.append("}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def credential_in_use(profile: str | None, env: dict[str, str]) -> str:
    """Which credential Terraform and the clients use, for messages: the profile or the access key id, never a secret."""
    if profile:
        return f"profile {profile}"
    if env.get("AWS_ACCESS_KEY_ID"):
        return f"access key id {env['AWS_ACCESS_KEY_ID']}"
    if env.get("AWS_PROFILE"):
        return f"profile {env['AWS_PROFILE']}"
    return "the default AWS credential chain (no AWS_PROFILE, no AWS_ACCESS_KEY_ID)"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text.split("-")[0])[:3])


def check_version(group: str, backend: Backend, tf: Terraform, state: dict[str, Any]) -> None:
    """StateTooNew when the state was written by a newer Terraform (minor version) than the one reading it.

    Terraform 1.x reads a newer 1.x state without complaint, but what that
    Terraform wrote (new resource fields, new schemas) is not what this one
    would compare: the audit refuses rather than give a verdict it cannot stand by.
    """
    written = str(state.get("terraform_version") or "")  # `show -json` keeps the writer's; `state pull` would not
    ours = str(json.loads(tf.run(["version", "-json"]).stdout or "{}").get("terraform_version") or "")
    if written and ours and _version(written)[:2] > _version(ours)[:2]:
        raise StateTooNew(
            f"group {group}: its state ({backend.where()}) was written by Terraform v{written}, newer than this "
            f"tool's Terraform v{ours}; audit it with a Terraform at least that new (--terraform PATH)"
        )


NEWER = re.compile(r"created by Terraform v(\S+?),? which is newer than current v(\S+?)[;,.]?\s")


def explain(group: str, backend: Backend, credential: str, exc: TerraformError) -> DeployedError:
    """One line for a Terraform failure reading a deployed group's state."""
    text = " ".join([*exc.diagnostics, exc.stderr])
    newer = NEWER.search(text + " ")
    if newer:
        return StateTooNew(
            f"group {group}: its state ({backend.where()}) was written by Terraform v{newer.group(1)}, newer than this "
            f"tool's Terraform v{newer.group(2)}; audit it with a Terraform at least that new (--terraform PATH)"
        )
    first = next((d for d in exc.diagnostics if d.strip()), "") or (exc.stderr.strip().splitlines() or ["?"])[-1]
    first = " ".join(first.strip().splitlines()[0].split())
    return BackendUnreadable(
        f"group {group}: cannot read its state from the {backend.type} backend ({backend.where()}) with "
        f"{credential}: {first[:300]}; check the backend settings (--backend-config) and the group's "
        "credentials ([deployed] profile in group.toml)"
    )


# -- the in-memory run ------------------------------------------------------------------------------


@dataclass
class DeployedRun(Run):
    """A run built from the deployed groups: lives in a temporary folder, never in the run store, never saved."""

    backends: dict[str, Backend] = field(default_factory=dict)
    profiles: dict[str, str | None] = field(default_factory=dict)
    init_args: dict[str, list[str]] = field(default_factory=dict)
    #: What the audit wants said in the terminal and the summary (a lock held by someone else).
    notes: list[str] = field(default_factory=list)

    @classmethod
    def temporary(cls, groups_dir: Path, endpoint: str | None) -> "DeployedRun":
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
        home = Path(tempfile.mkdtemp(prefix="immutable-infra-deployed-"))
        run = cls(id="deployed", home=home, groups_dir=str(groups_dir), endpoint=endpoint, created=now, expires_at="")
        run.path.mkdir(parents=True, exist_ok=True)
        return run

    def save(self) -> None:  # an audit writes nothing outside reports/
        return None

    def forget(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)


class DeployedDeployer(Deployer):
    """Read-only Terraform for the deployed groups: their own backend, their own credentials, no lock."""

    run: DeployedRun

    def terraform(self, name: str) -> Terraform:
        profile = self.run.profiles.get(name)
        tf = Terraform(self.run.workspace(name), self.sandbox.terraform_env(), self.driver, self.parallelism,
                       log_dir=self.run.workspace(name) / "logs", read_only=True,
                       init_args=self.run.init_args.get(name, []))
        if profile and not self.sandbox.is_local:
            tf.env = {k: v for k, v in tf.env.items() if k not in STATIC_CREDENTIALS}
            tf.env["AWS_PROFILE"] = profile
        return tf

    def client(self, name: str, service: str, region: str | None = None) -> Any:
        return group_client(self.sandbox, self.run.profiles.get(name), service,
                            region or self.run.groups[name].region)

    def up(self, groups: list[Group], destroy_on_failure: bool = True) -> None:
        raise DeployedError("an audit of the deployed groups never applies")

    def down(self, names: list[str] | None = None) -> list[str]:
        raise DeployedError("an audit of the deployed groups never destroys")


def group_client(sandbox: Sandbox, profile: str | None, service: str, region: str) -> Any:
    """A boto3 client with the group's credentials: its profile on AWS, the sandbox's credentials on an endpoint."""
    return sandbox.client(service, region, profile if not sandbox.is_local else None)  # one cached session per profile


def prepare(run: DeployedRun, group: Group, catalog: Catalog, sandbox: Sandbox, variables: dict[str, Any],
            backend: Backend, extra_args: list[str]) -> Path:
    """The private working copy of a deployed group: its files, the endpoint override, its variables."""
    ws = run.workspace(group.name)
    ws.mkdir(parents=True, exist_ok=True)
    for src in group.path.iterdir():
        if src.is_file() and (src.suffix in (".tf", ".tpl", ".sh", ".json", ".toml", ".tftpl", ".tfbackend")
                              or src.name.endswith(".tf.json")):
            if src.name in (TFVARS_FILE, OVERRIDE_FILE) or src.name.startswith("terraform.tfstate"):
                continue
            shutil.copy2(src, ws / src.name)
    if catalog.modules_dir.is_dir() and not (run.path / "modules").exists():
        shutil.copytree(catalog.modules_dir, run.path / "modules")
    settings = sandbox.provider_settings()
    if settings:
        (ws / OVERRIDE_FILE).write_text(endpoint_override(settings, provider_aliases(group.path)))
    (ws / TFVARS_FILE).write_text(json.dumps(variables, indent=2, sort_keys=True, default=str))
    args = list(extra_args)
    if backend.type == "s3" and sandbox.is_local:
        (ws / ENDPOINT_BACKEND_FILE).write_text(endpoint_backend(sandbox.endpoint or ""))
        args.insert(0, f"-backend-config={ws / ENDPOINT_BACKEND_FILE}")
    if backend.type == "local":
        # A relative path is relative to the group's folder, not to the private copy.
        path = Path(str(backend.settings.get("path", "terraform.tfstate")))
        path = path if path.is_absolute() else (group.path / path).resolve()
        backend.settings["path"] = str(path)
        args.append(f"-backend-config=path={path}")
    run.init_args[group.name] = args
    return ws


def variables_for(group: Group, outputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the team's wrapper passes: region (when declared), [deployed] variables, inputs from deployed outputs."""
    values: dict[str, Any] = {}
    if "region" in declared(group.path, "variable"):
        values["region"] = group.region
    if group.spec is not None:
        values.update(group.spec.deployed.variables)
    values.update(resolve_inputs(group, outputs))
    return values


def lock_holder(backend: Backend, client: Callable[[str], Any]) -> str | None:
    """Who holds the group's state lock now (one phrase), or None. Reads only."""
    from botocore.exceptions import ClientError

    s = backend.settings
    try:
        if backend.type == "s3" and s.get("use_lockfile"):
            key = f"{backend.key}.tflock"
            try:
                body = client("s3").get_object(Bucket=backend.bucket, Key=key)["Body"].read()
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                    return None
                raise
            return f"s3://{backend.bucket}/{key}" + _who(body)
        if backend.type == "s3" and s.get("dynamodb_table"):
            lock_id = f"{backend.bucket}/{backend.key}"
            item = client("dynamodb").get_item(TableName=s["dynamodb_table"], Key={"LockID": {"S": lock_id}},
                                               ConsistentRead=True).get("Item")
            if not item:
                return None
            return f"DynamoDB {s['dynamodb_table']} item {lock_id}" + _who((item.get("Info") or {}).get("S", ""))
        if backend.type == "local":
            info = Path(str(s.get("path", "terraform.tfstate")))
            info = info.parent / f".{info.name}.lock.info"
            return f"{info}" + _who(info.read_bytes()) if info.is_file() else None
    except ClientError as exc:
        return f"unknown: the lock could not be read ({exc.response.get('Error', {}).get('Code', exc)})"
    return None


def _who(raw: bytes | str) -> str:
    try:
        info = json.loads(raw or "{}")
    except ValueError:
        return ""
    parts = [f"{k.lower()} {info[k]}" for k in ("Who", "Operation", "Created") if info.get(k)]
    return f" ({', '.join(parts)})" if parts else ""


def read_group(deployer: DeployedDeployer, group: Group, catalog: Catalog, extra_args: list[str],
               given: dict[str, Any], say: Say) -> None:
    """Initialise the group's private copy with its own backend and read its outputs, state and fingerprints."""
    from immutable_infra.live import fingerprints

    run = deployer.run
    backend = find_backend(group)
    backend.settings.update(given)
    run.backends[group.name] = backend
    run.profiles[group.name] = group.spec.deployed.profile if group.spec is not None else None
    outputs = {n: r.outputs for n, r in run.groups.items() if r.status == "applied"}
    prepare(run, group, catalog, deployer.sandbox, variables_for(group, outputs), backend, extra_args)
    rec = run.record(group.name)
    rec.region = group.region
    holder = lock_holder(backend, lambda service: deployer.client(group.name, service, group.region))
    if holder:
        note = (f"[{group.name}] the state lock is held by someone else: {holder}; auditing without the lock "
                "(an audit never takes it), so a change in progress may show as drift")
        run.notes.append(note)
        say(note)
    tf = deployer.terraform(group.name)
    credential = credential_in_use(run.profiles[group.name], tf.env)
    try:
        tf.init()
        state = tf.state()
        check_version(group.name, backend, tf, state)
        rec.outputs = tf.output()
        rec.resources = managed(tf.state_list())
    except TerraformError as exc:
        raise explain(group.name, backend, credential, exc) from None
    if not rec.resources and not (state.get("values") or {}).get("root_module"):
        raise BackendUnreadable(
            f"group {group.name}: its {backend.type} backend ({backend.where()}) holds no state: nothing is deployed "
            f"there as far as Terraform knows (credential: {credential}); check the bucket/key (--backend-config) "
            "or apply the group first"
        )
    rec.fingerprints = fingerprints(deployer.client(group.name, "ec2"), state)
    rec.status = "applied"
    say(f"[{group.name}] read as deployed from its {backend.where()}: {len(rec.resources)} resources")


def read_deployed(catalog: Catalog, names: list[str], sandbox: Sandbox, driver: Driver | None = None,
                  backend_config: list[str] | None = None, parallelism: int = DEFAULT_PARALLELISM,
                  say: Say | None = None, base: Path | None = None) -> DeployedRun:
    """The named groups and the groups they take inputs from, read as deployed, in dependency order."""
    say = say or (lambda line: None)
    groups = catalog.closure(names)
    for g in groups:  # every group must have a backend before anything is initialised
        find_backend(g)
    extra_args, given = backend_config_args(backend_config or [], base or Path.cwd())
    run = DeployedRun.temporary(catalog.groups_dir, sandbox.endpoint)
    deployer = DeployedDeployer(run, catalog, sandbox, driver, parallelism, say)
    try:
        for g in groups:
            read_group(deployer, g, catalog, extra_args, given, say)
    except BaseException:
        run.forget()
        raise
    return run


__all__ = ["Backend", "BackendUnreadable", "DeployedDeployer", "DeployedError", "DeployedRun", "NoBackend",
           "StateTooNew", "find_backend", "read_deployed"]
